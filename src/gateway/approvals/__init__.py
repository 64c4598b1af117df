"""Just-in-time approvals (docs/approvals.md): the broker sessions open requests with, and
the notifier that tells approvers."""

from .broker import (
    SCOPES,
    ApprovalBroker,
    ApprovalError,
    ApprovalRequest,
)

__all__ = ["SCOPES", "ApprovalBroker", "ApprovalError", "ApprovalRequest"]
