"""One object the drivers feed per statement: audit line, metrics, alert windows.

``AuditService`` is process-wide (one per Runtime); ``SessionAudit`` is per session and
is what the drivers' recording observers call, once when a statement completes (or is
refused) -- the same places the recording learns a statement's outcome -- so both
protocols share every line of this. Per statement the cost is: one cached
fingerprint lookup, one msgspec encode into a list (the writer thread does the I/O), a
few cached metric children, and the alert windows' deque appends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from .alerts import Alert, AlertEngine
from .fingerprint import normalize
from .metrics import LATENCY_BUCKETS, GatewayMetrics
from .writer import AuditWriter

if TYPE_CHECKING:
    from ..config import Config
    from ..identity import Identity

log = logging.getLogger("gateway.audit")

AUDIT_FILE: Final = "audit.log"
# What the drivers answer when the target cannot be reached at login (PostgreSQL
# connection_failure, MySQL CR_CONN_HOST_ERROR's 08S01).
UPSTREAM_SQLSTATES: Final = frozenset({"08006", "08001", "08S01"})


class StatementLine(msgspec.Struct, omit_defaults=True, gc=False):
    """One statement in the audit log (field by field in docs/audit-log.md)."""

    time: str
    event: str  # "statement"
    session_id: str
    subject: str
    groups: list[str]
    target: str
    protocol: str
    client: str
    fingerprint: str
    text: str
    path: str
    decision: str
    rows: int
    bytes: int
    duration_ms: float
    rule: str | None = None
    class_: str | None = msgspec.field(default=None, name="class")
    masked: list[str] | None = None
    approval_id: str | None = None
    error: str | None = None


# How a reviewed statement's rule ends (the drivers' _review_decided): "<rule> <state>:<id>".
_REVIEW_OUTCOMES: Final = (" approved", " denied", " timed_out", " withdrawn")

_encode = msgspec.json.Encoder().encode
# Markers in an encoded statement line (SessionAudit._line). JSON escapes every quote
# inside a string, so each occurs once, where the field is.
_TIME_FIELD: Final = b'{"time":""'
_FINGERPRINT_FIELD: Final = b',"fingerprint":'
_ZERO_NUMBERS: Final = b',"rows":0,"bytes":0,"duration_ms":' + _encode(0.0)
# Encoded parts per statement shape, shared by the sessions: {(text, path, decision, rule,
# class, redact, dialect): (fingerprint .. decision, rule .. end of line)}. Bounded in
# entries (cleared when full) and in text length (long texts rarely repeat).
_PARTS: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
_PARTS_SIZE: Final = 4096
_PARTS_MAX_TEXT: Final = 1024
# A statement line from its time, the session's fields, the shape's two parts and the numbers.
_LINE: Final = b'{"time":"%s"%s%s%d,"bytes":%d,"duration_ms":%s%s'
# The same from the time, everything up to the rows (a shape's head: see ``_shape``), the
# numbers and the rest.
_SHAPE_LINE: Final = b'{"time":"%s"%s%d,"bytes":%d,"duration_ms":%s%s'
# A statement shape's metric key and line parts (``SessionAudit._shape``); at most this
# many per session, cleared when full.
_Shape = tuple[tuple[str, str], bytes, bytes]
# (text -- redacted for a simple query --, path, rule, classes)
_ShapeKey = tuple[str, str, "str | None", frozenset[str]]
_SHAPES_SIZE: Final = 128
# ``SessionAudit.statement``'s arguments: text, path, action, rule, classes, rows, bytes,
# duration, error, masked, finished_at.
StatementArgs = tuple[
    str, str, str, "str | None", frozenset[str], int, int, float, "str | None",
    "list[str] | None", "float | None",
]  # fmt: skip
_second = -1
_second_text = ""
_milli = -1
_milli_text = ""
_milli_bytes = b""


def timestamp(now: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds; the seconds part is formatted once per second and
    the whole text once per millisecond (a busy gateway logs many lines per millisecond)."""
    global _second, _second_text, _milli, _milli_text, _milli_bytes
    now = time.time() if now is None else now
    milli = int(now * 1000)
    if milli == _milli:
        return _milli_text
    sec = milli // 1000
    if sec != _second:
        _second, _second_text = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    _milli, _milli_text = milli, f"{_second_text}.{milli - sec * 1000:03d}Z"
    _milli_bytes = _milli_text.encode()
    return _milli_text


def timestamp_bytes(now: float | None = None) -> bytes:
    """``timestamp`` as UTF-8, from the same per-millisecond cache."""
    timestamp(now)
    return _milli_bytes


def refusal_category(detail: str) -> str:
    """A low-cardinality reason for a refused login (metric label, alert key); the
    detail itself may name a subject or a key id, so only its category is exported."""
    d = detail.lower()
    if d.startswith("token rejected"):
        if "expired" in d:
            return "token_expired"
        if "signature" in d or "no signing key" in d:
            return "token_signature"
        return "token_invalid"
    if d.startswith("no policy allows") or "not allowed" in d:
        return "not_allowed"
    if "timeout" in d or "timed out" in d:
        return "timeout"
    if d.startswith("protocol violation") or "startup" in d:
        return "protocol"
    if d.startswith("recording unavailable"):
        return "recording_unavailable"
    if d.startswith("masking catalog"):
        return "catalog_unavailable"
    if "tls" in d or "ssl" in d or "plaintext" in d:
        return "tls_required"
    if "revoked" in d:
        return "revoked"
    return "other"


def client_host(peer: str) -> str:
    """The address part of ``host:port`` (``[v6]:port`` too)."""
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit():
        return peer
    return host.strip("[]")


class AuditService:
    def __init__(self, config: Config) -> None:
        self.metrics = GatewayMetrics()
        self.writer: AuditWriter | None = None
        self.redact = config.audit.redact_literals
        self._started = False
        if config.audit.enabled:
            path = config.audit.path or str(Path(config.gateway.state_dir) / AUDIT_FILE)
            self.writer = AuditWriter(
                path,
                flush_interval=config.audit.flush_interval,
                max_buffer=config.audit.max_buffer,
            )
            self.metrics.watch(self.metrics.audit_dropped, lambda: self.writer_dropped)
            writer = self.writer
            self.metrics.watch(self.metrics.audit_healthy, lambda: 1 if writer.healthy else 0)
        self.notify: Callable[[str, str, dict[str, Any]], None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self.alerts = AlertEngine(
            config,
            self._fire,
            state_dir=Path(config.gateway.state_dir),
            save=self._save_in_thread,
        )

    def watch_recorder(self, recorder: Any) -> None:
        """Export the recorder's lag and throughput (read at scrape time)."""
        m = self.metrics
        m.watch(m.recording_backlog, lambda: recorder.backlog)
        m.watch(m.recording_written, lambda: recorder.written_bytes)
        m.watch(m.recording_healthy, lambda: 1 if recorder.healthy else 0)
        m.watch(m.recording_pass, lambda: recorder.last_pass_seconds)

    @property
    def writer_dropped(self) -> int:
        return self.writer.dropped if self.writer is not None else 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.writer is not None:
            await self.writer.start()
        self._started = True

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.writer is not None:
            await self.writer.close()

    async def flush(self) -> None:
        if self.writer is not None:
            await self.writer.flush()

    def reopen(self) -> None:
        """Reopen the audit log file (SIGHUP after rotation)."""
        if self.writer is not None:
            self.writer.reopen()

    def reconfigure(self, config: Config) -> None:
        """Hot reload: new alert thresholds and redaction; the file path needs a restart."""
        self.redact = config.audit.redact_literals
        self.alerts.reconfigure(config)

    # -- writing --------------------------------------------------------------------------------

    def line(self, data: Any) -> None:
        writer = self.writer
        if writer is not None:
            writer.write(_encode(data) + b"\n")

    def event(self, kind: str, **fields: Any) -> None:
        """A non-statement line: session start/end, refused login, approvals, alerts."""
        if self.writer is not None:
            fields = {k: v for k, v in fields.items() if v is not None}
            self.line({"time": timestamp(), "event": kind, **fields})

    # -- sessions and logins ---------------------------------------------------------------------

    def session(
        self,
        session_id: str,
        identity: Identity,
        target: str,
        protocol: str,
        client: str,
        analyse: Callable[[str], Any] | None = None,
    ) -> SessionAudit:
        return SessionAudit(self, session_id, identity, target, protocol, client, analyse)

    def session_started(self, target: str) -> None:
        self.metrics.sessions.labels(target).inc()
        self.metrics.sessions_active.labels(target).inc()

    def session_ended(self, target: str) -> None:
        self.metrics.sessions_active.labels(target).dec()

    def login_refused(
        self, target: str, sqlstate: str, client: str | None, detail: str, subject: str | None
    ) -> None:
        if sqlstate in UPSTREAM_SQLSTATES:
            # "could not connect to target": the detail is the upstream's own error.
            reason = "upstream_unavailable"
            self.metrics.upstream_errors.labels(target).inc()
        else:
            reason = refusal_category(detail)
        self.metrics.auth_failures.labels(target, reason).inc()
        self.event(
            "login_refused",
            target=target,
            client=client,
            subject=subject,
            reason=reason,
            sqlstate=sqlstate,
        )
        # Refusals that say something about the caller (a bad or unwelcome token, a broken
        # handshake) count towards the address's failures; our own outages do not.
        if client is not None and reason.startswith(("token", "not_allowed", "protocol")):
            self.alerts.auth_failure(client_host(client), target, reason)

    def upstream_failed(self, target: str) -> None:
        self.metrics.upstream_errors.labels(target).inc()

    # -- alerts ------------------------------------------------------------------------------------

    def _fire(self, alert: Alert) -> None:
        payload = alert.to_json()
        self.metrics.alerts.labels(alert.rule).inc()
        self.event("alert", **payload)
        log.warning("alert", extra={"event": "alert", **payload})
        notify = self.notify
        if notify is not None:
            notify(
                "alert",
                f"alert-{alert.rule}-{int(alert.at * 1000)}",
                {
                    "event": "alert",
                    "sent_at": time.time(),
                    "alert": payload,
                },
            )

    def _save_in_thread(self, save: Callable[[], None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            save()
            return
        future = loop.run_in_executor(None, save)
        self._tasks.add(future)
        future.add_done_callback(self._saved)

    def _saved(self, future: asyncio.Future[Any]) -> None:
        self._tasks.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("alerts state not saved", extra={"error": str(future.exception())})


class SessionAudit:
    """What one session's drivers report; see the module docstring."""

    __slots__ = (
        "_classes",
        "_session_fields",
        "_shapes",
        "_shapes_redact",
        "_tally",
        "analyse",
        "approval_id",
        "before_event",
        "client",
        "dialect",
        "groups",
        "protocol",
        "service",
        "session_id",
        "subject",
        "target",
    )

    def __init__(
        self,
        service: AuditService,
        session_id: str,
        identity: Identity,
        target: str,
        protocol: str,
        client: str,
        analyse: Callable[[str], Any] | None,
    ) -> None:
        self.service = service
        self.session_id = session_id
        self.subject = identity.subject
        self.groups = list(identity.groups)
        self.target = target
        self.protocol = protocol
        self.dialect = "mysql" if protocol == "mysql" else "postgres"
        self.client = client
        self.analyse = analyse
        # Set by LimitControl when a result pauses for approval; written with the
        # statement's line and cleared (reviews: see ``statement``).
        self.approval_id: str | None = None
        # Set by a driver that reports statements in batches: reports them before an
        # event, so the log keeps the order of what happened.
        self.before_event: Callable[[], None] | None = None
        self._tally = service.metrics.tally(target)
        self._classes: dict[frozenset[str], str] = {}
        # This session's fields as encoded in its statement lines: see ``_line``.
        self._session_fields: bytes | None = None
        # {(text, path, rule, classes): shape} for ``statements``: see ``_shape``. Made on
        # the first batch (an idle session has none) and again when redaction changes.
        self._shapes: dict[_ShapeKey, _Shape] | None = None
        self._shapes_redact: bool | None = None

    def _class(self, classes: frozenset[str]) -> str:
        name = self._classes.get(classes)
        if name is None:
            name = self._classes[classes] = ",".join(sorted(classes)) or "unknown"
        return name

    def statement(
        self,
        text: str,
        path: str,
        action: str,
        rule: str | None,
        classes: frozenset[str],
        rows: int,
        nbytes: int,
        duration: float,
        error: str | None = None,
        masked: list[str] | None = None,
        finished_at: float | None = None,
    ) -> None:
        """One statement completed (or was refused: ``action`` deny); ``finished_at``
        (wall clock) when it is reported later than that (default: now)."""
        service = self.service
        cls = self._class(classes)
        tally = self._tally
        tally.statement(action, cls)
        if action == "allow":
            tally.rows += rows
            tally.bytes += nbytes
            tally.observe(duration)
            if error is not None:
                tally.errors += 1
        approval, self.approval_id = self.approval_id, None
        if approval is None and rule is not None and ":apr_" in rule:
            # A statement held for review: its rule names the request ("... approved:apr_...").
            head, _, tail = rule.rpartition(":")
            if head.endswith(_REVIEW_OUTCOMES):
                approval = tail
        writer = service.writer
        if writer is not None:
            if path == "simple" or masked or approval is not None or error is not None:
                # Simple queries carry their literals in the text, which rarely repeats.
                line = self._encoded(
                    timestamp(finished_at), text, path, action, rows, nbytes,
                    _milliseconds(duration), rule, cls, masked, approval, error,
                )  # fmt: skip
            else:
                line = self._line(
                    finished_at, text, path, action, rows, nbytes, duration, rule, cls
                )
            writer.write(line)
        alerts = service.alerts
        if alerts.enabled:
            if action != "allow":
                self._alert(text, action, rows)
            else:
                floor = alerts.allowed_rows_floor()
                if floor is not None and rows >= floor:
                    self._alert(text, action, rows)

    def _alert(self, text: str, action: str, rows: int) -> None:
        alerts = self.service.alerts
        analyse = self.analyse
        tables = None
        sensitive = alerts.sensitive
        if sensitive and analyse is not None and action == "allow":
            read = _sensitive_read(analyse(text), sensitive)
            if read:  # most statements read no sensitive table: nothing to look up
                tables = lambda: read  # noqa: E731
        alerts.statement(self.subject, self.target, action, rows, tables)

    def statements(self, items: Iterable[StatementArgs]) -> None:
        """Several completed statements, in order: ``statement``'s arguments per item (the
        observers' batches, see session/reporting.py). The same lines, metrics and alert
        inputs as one ``statement`` call per item; what differs is the cost. An allowed
        statement without masked columns, approval or error -- nearly every execution of a
        prepared statement, and a simple query's when literals are redacted -- is handled
        in this loop with everything looked up once per batch or statement shape; any other
        item goes through ``statement``."""
        service = self.service
        writer = service.writer
        alert_floor = service.alerts.allowed_rows_floor()
        tally = self._tally
        counts = tally.statements
        buckets = tally.buckets
        shapes = self._shapes
        redact = service.redact
        if shapes is None or self._shapes_redact is not redact:
            shapes = self._shapes = {}
            self._shapes_redact = redact
        dialect = self.dialect
        lines: list[bytes] = []
        total_rows = total_bytes = 0
        latency = 0.0
        last_milli = -1
        time_bytes = b""
        approval = self.approval_id is not None
        try:
            for item in items:
                text, path, action, rule, classes, rows, nbytes, duration, error, masked, at = item
                if (
                    action != "allow"
                    or error is not None
                    or masked
                    or at is None
                    or approval
                    or (path == "simple" and (not redact or len(text) > _PARTS_MAX_TEXT))
                ):
                    if lines:  # keep the log in order
                        writer.write_lines(lines)  # type: ignore[union-attr]
                        lines = []
                    self.statement(*item)
                    approval = self.approval_id is not None
                    continue
                # A simple query's text carries its literals: its line is the same as that of
                # every text redacted alike (the fingerprint is the redacted text's).
                shown = normalize(text, dialect)[1] if path == "simple" else text
                key = (shown, path, rule, classes)
                shape = shapes.get(key)
                if shape is None:
                    shape = self._shape(text, path, rule, classes, key)
                    if shape is None:  # a reviewed statement's rule, or an uncached text
                        if lines:
                            writer.write_lines(lines)  # type: ignore[union-attr]
                            lines = []
                        self.statement(*item)
                        continue
                series, head, tail = shape
                counts[series] = counts.get(series, 0) + 1
                total_rows += rows
                total_bytes += nbytes
                latency += duration
                buckets[bisect_left(LATENCY_BUCKETS, duration)] += 1
                if writer is not None:
                    milli = int(at * 1000)  # timestamp()'s cache key: once per millisecond
                    if milli != last_milli:
                        last_milli = milli
                        time_bytes = timestamp_bytes(at)
                    lines.append(
                        _SHAPE_LINE
                        % (
                            time_bytes,
                            head,
                            rows,
                            nbytes,
                            _encode(int(duration * 1_000_000 + 0.5) / 1000),  # _milliseconds
                            tail,
                        )
                    )
                if alert_floor is not None and rows >= alert_floor:
                    if lines:  # an alert is logged after the statement that raised it
                        writer.write_lines(lines)  # type: ignore[union-attr]
                        lines = []
                    self._alert(text, "allow", rows)
        finally:
            # Also when an item raises: what was counted and encoded before it is kept,
            # as one ``statement`` call per item would have kept it.
            tally.rows += total_rows
            tally.bytes += total_bytes
            tally.latency_sum += latency
            if lines:
                writer.write_lines(lines)  # type: ignore[union-attr]

    def _shape(
        self, text: str, path: str, rule: str | None, classes: frozenset[str], key: _ShapeKey
    ) -> _Shape | None:
        """What ``statements`` needs of an allowed statement of this shape, computed once
        per session and shape: its metric key and its line's bytes before and after the
        numbers (the session's fields and the statement's parts, as ``_line`` encodes
        them). None when lines of it must go through ``statement``: a reviewed
        statement's rule names its approval, and long texts are not kept."""
        if (rule is not None and ":apr_" in rule) or len(text) > _PARTS_MAX_TEXT:
            return None
        cls = self._class(classes)
        template = self._encoded("", text, path, "allow", 0, 0, 0.0, rule, cls, None, None, None)
        numbers = template.index(_ZERO_NUMBERS, template.index(_FINGERPRINT_FIELD))
        shape = (
            ("allow", cls),
            template[len(_TIME_FIELD) : numbers] + b',"rows":',
            template[numbers + len(_ZERO_NUMBERS) :],
        )
        shapes = self._shapes
        assert shapes is not None
        if len(shapes) >= _SHAPES_SIZE:
            shapes.clear()
        shapes[key] = shape
        return shape

    def _encoded(
        self,
        time_text: str,
        text: str,
        path: str,
        action: str,
        rows: int,
        nbytes: int,
        duration_ms: float,
        rule: str | None,
        cls: str,
        masked: list[str] | None,
        approval: str | None,
        error: str | None,
    ) -> bytes:
        """The whole line with its newline, encoded field by field (the reference for
        ``_line``)."""
        fingerprint, redacted = normalize(text, self.dialect)
        return (
            _encode(
                # Positional (the field order above): a keyword call with twenty arguments
                # costs ~0.6 µs more.
                StatementLine(
                    time_text,
                    "statement",
                    self.session_id,
                    self.subject,
                    self.groups,
                    self.target,
                    self.protocol,
                    self.client,
                    fingerprint,
                    redacted if self.service.redact else text,
                    path,
                    action,
                    rows,
                    nbytes,
                    duration_ms,
                    rule,
                    cls,
                    masked or None,
                    approval,
                    error,
                )
            )
            + b"\n"
        )

    def _line(
        self,
        finished_at: float | None,
        text: str,
        path: str,
        action: str,
        rows: int,
        nbytes: int,
        duration: float,
        rule: str | None,
        cls: str,
    ) -> bytes:
        """``_encoded``'s bytes for a line without masked columns, approval or error, from
        parts encoded once: the session's fields (once per session), and per statement
        shape everything from the fingerprint to the decision and after the duration
        (rule, class, the closing brace and newline). The executions of a prepared
        statement differ only in the time and the three numbers, which are all that is
        encoded per line."""
        redact = self.service.redact
        key = (text, path, action, rule, cls, redact, self.dialect)
        parts = _PARTS.get(key)
        session = self._session_fields
        if parts is None or session is None:
            template = self._encoded("", text, path, action, 0, 0, 0.0, rule, cls, None, None, None)
            at = template.index(_FINGERPRINT_FIELD)
            numbers = template.index(_ZERO_NUMBERS, at)
            session = self._session_fields = template[len(_TIME_FIELD) : at]
            parts = (
                template[at:numbers] + b',"rows":',
                template[numbers + len(_ZERO_NUMBERS) :],
            )
            if len(text) <= _PARTS_MAX_TEXT:
                if len(_PARTS) >= _PARTS_SIZE:
                    _PARTS.clear()
                _PARTS[key] = parts
        return _LINE % (
            timestamp_bytes(finished_at),
            session,
            parts[0],
            rows,
            nbytes,
            _encode(_milliseconds(duration)),
            parts[1],
        )

    def event(self, kind: str, **fields: Any) -> None:
        """A session-scoped event (approval steps, limits)."""
        if self.before_event is not None:
            self.before_event()
        service = self.service
        if kind == "approval_requested":
            service.alerts.approval_requested(self.subject, self.target)
        elif kind in ("approval_approved", "approval_denied", "approval_timed_out"):
            service.metrics.approvals_decided.labels(kind.removeprefix("approval_")).inc()
        service.event(
            kind, session_id=self.session_id, subject=self.subject, target=self.target, **fields
        )


# Table names per Analysis (the policy engine caches one per statement shape, so the same
# object comes back for every execution): {id: (analysis, names)}; the entry keeps the
# analysis alive, so its id is not reused while it is here.
_TABLES: dict[int, tuple[Any, tuple[str, ...]]] = {}
_TABLES_SIZE: Final = 4096


def _milliseconds(seconds: float) -> float:
    """``seconds`` in milliseconds, to the microsecond: ``round(x, 3)`` formats and parses
    a decimal string, several times slower than this on every statement's line."""
    return int(seconds * 1_000_000 + 0.5) / 1000


# The sensitive tables a statement reads, per Analysis and watched set (both kept alive by
# the entry, so neither id is reused while it is here): {id: (analysis, watched, names)}.
_SENSITIVE: dict[int, tuple[Any, frozenset[str], tuple[str, ...]]] = {}


def _sensitive_read(analysis: Any, watched: frozenset[str]) -> tuple[str, ...]:
    entry = _SENSITIVE.get(id(analysis))
    if entry is not None and entry[0] is analysis and entry[1] is watched:
        return entry[2]
    names = tuple(t for t in _tables_of(analysis) if t in watched)
    if len(_SENSITIVE) >= _TABLES_SIZE:
        _SENSITIVE.clear()
    _SENSITIVE[id(analysis)] = (analysis, watched, names)
    return names


def _tables_of(analysis: Any) -> tuple[str, ...]:
    entry = _TABLES.get(id(analysis))
    if entry is not None and entry[0] is analysis:
        return entry[1]
    names = tuple(tables_read(analysis))
    if len(_TABLES) >= _TABLES_SIZE:
        _TABLES.clear()
    _TABLES[id(analysis)] = (analysis, names)
    return names


def tables_read(analysis: Any) -> Iterable[str]:
    """Table names of a policy Analysis, lower-cased, as ``table`` and ``schema.table``."""
    for facts in analysis.statements:
        for schema, table in facts.tables:
            name = table[0].lower()
            yield name
            if schema is not None:
                yield f"{schema[0].lower()}.{name}"
