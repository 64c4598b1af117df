"""Prometheus metrics of one Runtime (prometheus_client is confined to this module).

Each Runtime has its own CollectorRegistry, so tests can run several gateways in one
process. Labels are low-cardinality by construction: target names and protocol (from the
configuration), decisions, statement classes (a small fixed vocabulary), reason
categories. Never a subject, a client address or a statement text.

Updated once per statement, never per row. The per-statement series (statements, rows,
bytes, errors, latency) are plain integers in a ``StatementTally`` per target, read at scrape
time by a collector: prometheus_client takes a lock for every ``inc`` and ``observe``, five
of them per statement, a measurable share of the gateway's CPU under pgbench, while the
event loop is the only writer. Gauges that mirror state owned elsewhere (approvals pending,
recording backlog) are read at scrape time through callbacks.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
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


class StatementTally:
    """The per-statement series of one target, as plain numbers (see the module docstring).
    Only the event loop updates them; a scrape reads them."""

    __slots__ = ("buckets", "bytes", "errors", "latency_sum", "rows", "statements")

    def __init__(self) -> None:
        self.statements: dict[tuple[str, str], int] = {}  # (decision, class) -> count
        self.rows = 0
        self.bytes = 0
        self.errors = 0
        # Non-cumulative counts per LATENCY_BUCKETS bound, the last one for +Inf.
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def statement(self, decision: str, cls: str) -> None:
        key = (decision, cls)
        statements = self.statements
        statements[key] = statements.get(key, 0) + 1

    def observe(self, seconds: float) -> None:
        # A value on a bound counts in that bound's bucket (Prometheus "le").
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds


class _StatementCollector:
    """Exposes every target's StatementTally under the series names the Counter and
    Histogram objects used before (``gateway_statements_total`` and so on)."""

    def __init__(self, tallies: dict[str, StatementTally]) -> None:
        self._tallies = tallies

    def collect(self) -> Iterator[Metric]:
        tallies = list(self._tallies.items())
        statements = CounterMetricFamily(
            "gateway_statements",
            "Statements by policy decision and statement class",
            labels=["target", "decision", "class"],
        )
        errors = CounterMetricFamily(
            "gateway_statement_errors",
            "Allowed statements that the database answered with an error",
            labels=["target"],
        )
        rows = CounterMetricFamily(
            "gateway_rows_to_clients", "Result rows forwarded to clients", labels=["target"]
        )
        nbytes = CounterMetricFamily(
            "gateway_bytes_to_clients",
            "Result bytes (row messages) forwarded to clients",
            labels=["target"],
        )
        latency = HistogramMetricFamily(
            "gateway_statement_duration_seconds",
            "Statement latency through the gateway, first message to completion",
            labels=["target"],
        )
        for target, t in tallies:
            for (decision, cls), n in list(t.statements.items()):
                statements.add_metric([target, decision, cls], n)
            errors.add_metric([target], t.errors)
            rows.add_metric([target], t.rows)
            nbytes.add_metric([target], t.bytes)
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), t.buckets, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([target], buckets, t.latency_sum)
        yield from (statements, errors, rows, nbytes, latency)


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._tallies: dict[str, StatementTally] = {}
        r.register(_StatementCollector(self._tallies))
        self.sessions_active = Gauge(
            "gateway_sessions_active", "Sessions open now", ["target"], registry=r
        )
        self.sessions = Counter(
            "gateway_sessions", "Sessions started (logged in)", ["target"], registry=r
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

    def tally(self, target: str) -> StatementTally:
        """The per-statement series of ``target`` (one object, shared by its sessions)."""
        tally = self._tallies.get(target)
        if tally is None:
            tally = self._tallies[target] = StatementTally()
        return tally

    def watch(self, gauge: Gauge, read: Callable[[], float]) -> None:
        gauge.set_function(read)

    def render(self) -> bytes:
        """The text exposition format, for ``GET /metrics``."""
        return generate_latest(self.registry)
