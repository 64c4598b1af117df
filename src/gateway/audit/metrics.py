"""Prometheus metrics of one Runtime (prometheus_client is confined to this module).

Each Runtime has its own CollectorRegistry, so tests can run several gateways in one
process. Labels are low-cardinality by construction: target names and protocol (from the
configuration), decisions, statement classes (a small fixed vocabulary), reason
categories. Never a subject, a client address or a statement text.

Updated once per statement, never per row. Gauges that mirror state owned elsewhere
(approvals pending, recording backlog) are read at scrape time through callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
# Statement latency as seen by the gateway (first message to completion), seconds.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.sessions_active = Gauge(
            "gateway_sessions_active", "Sessions open now", ["target"], registry=r
        )
        self.sessions = Counter(
            "gateway_sessions", "Sessions started (logged in)", ["target"], registry=r
        )
        self.statements = Counter(
            "gateway_statements",
            "Statements by policy decision and statement class",
            ["target", "decision", "class"],
            registry=r,
        )
        self.statement_errors = Counter(
            "gateway_statement_errors",
            "Allowed statements that the database answered with an error",
            ["target"],
            registry=r,
        )
        self.rows = Counter(
            "gateway_rows_to_clients", "Result rows forwarded to clients", ["target"], registry=r
        )
        self.bytes = Counter(
            "gateway_bytes_to_clients",
            "Result bytes (row messages) forwarded to clients",
            ["target"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_statement_duration_seconds",
            "Statement latency through the gateway, first message to completion",
            ["target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.auth_failures = Counter(
            "gateway_login_refusals",
            "Logins refused, by reason category",
            ["target", "reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Target database connection failures (at login)",
            ["target"],
            registry=r,
        )
        self.approvals_pending = Gauge(
            "gateway_approvals_pending", "Approval requests waiting for a decision", registry=r
        )
        self.approvals_decided = Counter(
            "gateway_approvals_decided",
            "Approval requests decided, by outcome",
            ["outcome"],
            registry=r,
        )
        self.alerts = Counter("gateway_alerts", "Alerts fired, by rule", ["rule"], registry=r)
        self.audit_dropped = Gauge(
            "gateway_audit_lines_dropped", "Audit log lines dropped (buffer full)", registry=r
        )
        self.audit_healthy = Gauge(
            "gateway_audit_healthy", "1 while the audit log file is written", registry=r
        )
        self.recording_backlog = Gauge(
            "gateway_recording_backlog_bytes",
            "Recorded bytes not yet on disk (the recording's lag)",
            registry=r,
        )
        self.recording_written = Gauge(
            "gateway_recording_written_bytes",
            "Bytes written to session recordings since start",
            registry=r,
        )
        self.recording_healthy = Gauge(
            "gateway_recording_healthy", "1 while session recording works", registry=r
        )
        self.recording_pass = Gauge(
            "gateway_recording_last_write_seconds",
            "Duration of the recording writer's last pass (disk latency)",
            registry=r,
        )

    def watch(self, gauge: Gauge, read: Callable[[], float]) -> None:
        gauge.set_function(read)

    def render(self) -> bytes:
        """The text exposition format, for ``GET /metrics``."""
        return generate_latest(self.registry)
