"""Observability: the audit log, Prometheus metrics and alerts (docs/audit-log.md,
docs/alerts.md, docs/operations.md)."""

from .alerts import Alert, AlertEngine, WindowCounter
from .service import AuditService, SessionAudit

__all__ = ["Alert", "AlertEngine", "AuditService", "SessionAudit", "WindowCounter"]
