"""Bridges the MySQL response tracking to the session recording.

Called per command, per result set and per forwarded run of row packets, never
per row. Rows are recorded as the exact row packets the client received (4-byte
headers included; encodings ``mysql.text`` and ``mysql.binary``), up to
``record_rows`` per statement; the rest is only counted.

What becomes a recorded statement:
* COM_QUERY: one entry per result (a multi-statement packet or a CALL yields
  several results; each gets the text of its statement when the packet splits
  into as many statements, else the whole text with a "result N" note), path
  ``simple``;
* COM_STMT_EXECUTE: the text remembered at COM_STMT_PREPARE, path ``prepared``,
  the statement id as name and the decoded parameters;
* COM_STMT_FETCH: the cursor's statement text again, path ``fetch``.
Results are recorded lazily, as PostgreSQL executions are (``pg_recording``): numbered
when they start, and handed to the recording once, when they end
(``SessionRecording.executed``), with their columns and the first run of rows held on
the exchange. Only a result that outgrows that (a second run of rows, more than
``HOLD_BYTES``), or is still running when the recording opens the running statements (a
writer tick, a control event, the end), is registered as a ``Statement`` and recorded step
by step.

Column metadata: ``type_oid`` carries the MySQL column type byte
(enum_field_types), ``type_name`` its name plus ``UNSIGNED`` / ``BINARY``
(binary collation on a string type), ``table``/``column`` are org_table/org_name.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from protocols.mysql.constants import MAX_PACKET_PAYLOAD, Charset, ColumnFlag, ColumnType
from protocols.mysql.resultset import ColumnDefinition41, StmtExecute, decode_binary_value

from ..masking.plan import ResultPlan
from ..recording import ColumnInfo
from ..recording.session import HOLD_BYTES, Statement
from .masking_common import masked_names
from .mysql_sql import statement_texts
from .reporting import ReportBatch

if TYPE_CHECKING:
    from collections.abc import Iterable

    from protocols.mysql.commands import PreparedStatement
    from protocols.mysql.packets import ErrPacket, OkPacket

    from ..audit import SessionAudit
    from ..policy import Decision
    from ..recording import SessionRecording

TEXT_ROWS = "mysql.text"
BINARY_ROWS = "mysql.binary"
_COLUMN_CACHE = 256
_UNSIGNED = int(ColumnFlag.UNSIGNED)  # a plain int: `int & IntFlag` runs enum code
_STATEMENT_RULES = 4096
_NO_CLASSES: frozenset[str] = frozenset()
# SessionAudit.statement's arguments up to ``masked``; SessionRecording.complete's (a
# registered result) or SessionRecording.executed's with the monotonic start for ``at`` (a
# lazily recorded one); and a finished result as reported later: (audit line, recorded
# completion, monotonic end).
_AuditLine = tuple[
    str, str, str, str | None, frozenset[str], int, int, float, str | None, list[str] | None
]
_Done = tuple[Statement, str | None, int, int, int, float, tuple[str, str] | None]
_Executed = tuple[
    int,
    float,
    str,
    str,
    str | None,
    list[str | bytes | None] | None,
    str | None,
    list[ColumnInfo] | None,
    str | None,
    bytes | None,
    int,
    str | None,
    int,
    int,
    float,
    tuple[str, str] | None,
]
_Finished = tuple[_AuditLine | None, _Done | _Executed | None, float]

_STRING_TYPES = frozenset(
    {
        ColumnType.MYSQL_TYPE_VARCHAR,
        ColumnType.MYSQL_TYPE_VAR_STRING,
        ColumnType.MYSQL_TYPE_STRING,
        ColumnType.MYSQL_TYPE_TINY_BLOB,
        ColumnType.MYSQL_TYPE_MEDIUM_BLOB,
        ColumnType.MYSQL_TYPE_LONG_BLOB,
        ColumnType.MYSQL_TYPE_BLOB,
        ColumnType.MYSQL_TYPE_BIT,
        ColumnType.MYSQL_TYPE_GEOMETRY,
    }
)


def type_label(col_type: int, flags: int, charset: int, extended: bytes | None = None) -> str:
    try:
        name = ColumnType(col_type).name.removeprefix("MYSQL_TYPE_")
    except ValueError:
        name = f"TYPE_{col_type}"
    if extended:
        name += f"({extended.decode('ascii', 'replace')})"
    if flags & _UNSIGNED:
        name += " UNSIGNED"
    if charset == Charset.BINARY and col_type in _STRING_TYPES:
        name += " BINARY"
    return name


def column_info(col: ColumnDefinition41, binary: bool) -> ColumnInfo:
    return ColumnInfo(
        name=col.name.decode("utf-8", "replace"),
        type_oid=col.type,
        type_name=type_label(col.type, col.flags, col.charset, col.extended_type_name),
        format="binary" if binary else "text",
        table=col.org_table.decode("utf-8", "replace") or None,
        column=col.org_name.decode("utf-8", "replace") or None,
    )


def parameter_text(col_type: int, unsigned: bool, raw: bytes | None) -> str | bytes | None:
    """A bound parameter as recorded: text where it has one, bytes otherwise."""
    if raw is None:
        return None
    try:
        value = decode_binary_value(col_type, raw, unsigned)
    except Exception:  # a value that does not fit its declared type: keep the bytes
        return raw
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


class Exchange:
    """One client command that expects a response, from send to completion."""

    __slots__ = (
        "audited",
        "binary",
        "bytes",
        "classes",
        "columns",
        "command",
        "described",
        "first_seq",
        "held",
        "internal",
        "local_reply",
        "mask_plan",
        "mask_results",
        "mask_sql",
        "name",
        "params",
        "path",
        "recorded",
        "result_index",
        "rows",
        "rule",
        "sent_seq",
        "started",
        "stmt",
        "swallow",
        "text",
        "texts",
    )

    def __init__(self, command: int) -> None:
        self.command = command
        # The current result's recording: its number while recorded lazily (columns in
        # ``columns``, the first run of rows in ``held``), its handle once registered.
        self.stmt: int | Statement | None = None
        self.held: bytes | None = None
        self.text: bytes | None = None
        self.texts: list[bytes] | None = None  # per-statement texts of a multi-statement packet
        self.path = "simple"
        self.name: str | None = None
        self.params: list[str | bytes | None] | None = None
        self.result_index = 0
        # Masking (owned by the driver): the statement text, results completed so far (the
        # index of the statement a result belongs to), and the current result's row plan.
        self.mask_sql: bytes | None = None
        self.mask_results = 0
        self.mask_plan: object = None
        self.started = time.monotonic()
        self.rows = 0  # rows of the current result
        self.recorded = 0
        self.bytes = 0
        self.columns: list[ColumnInfo] | None = None
        self.binary = False
        self.described = False
        # Gateway-made reply (refused command): sent when the commands before it finished.
        self.local_reply: bytes | None = None
        # Server packets of this response are dropped (an unsolicited LOCAL INFILE
        # request was refused); a gateway ERR replaces them.
        # True, or the refusal message sent once the response completes (masking).
        self.swallow: bool | str = False
        # A command the gateway sent on its own (re-raising net_write_timeout after
        # COM_RESET_CONNECTION): its response is dropped and nothing replaces it.
        self.internal = False
        self.first_seq = 1  # sequence id of the first response packet
        self.sent_seq = 0
        # The policy rule that allowed the statement (recorded with each result), and the
        # statement's classes (audit log).
        self.rule: str | None = None
        self.classes: frozenset[str] = _NO_CLASSES
        self.audited = False  # a result is open that the audit log will report


class MyRecordingObserver:
    """Records MySQL commands and reports each result to the audit; a no-op shell when the
    session is neither recorded nor audited."""

    __slots__ = (
        "_columns",
        "_last_columns",
        "_statement_rules",
        "audit",
        "denied",
        "record_rows",
        "recording",
        "reporting",
        "rows_total",
        "statements",
        "unfinished",
    )

    def __init__(
        self,
        recording: SessionRecording | None,
        record_rows: int,
        audit: SessionAudit | None = None,
    ) -> None:
        self.recording = recording
        self.audit = audit
        self.record_rows = record_rows
        self.statements = 0
        self.rows_total = 0  # rows of finished results (the admin API's live sessions)
        self.denied = 0
        self._columns: dict[tuple[tuple[ColumnDefinition41, ...], bool], list[ColumnInfo]] = {}
        # The last lookup's (columns, binary, infos): a prepared statement's executions
        # bring the same (cached) column definitions each time, and comparing a tuple of
        # the same objects is a C loop, where hashing calls each definition's __hash__.
        self._last_columns: tuple[tuple[ColumnDefinition41, ...], bool, list[ColumnInfo]] = (
            (),
            False,
            [],
        )
        # The policy rule that allowed each prepared statement (by statement id),
        # recorded with its executions.
        self._statement_rules: dict[int, tuple[str | None, frozenset[str]]] = {}
        # Finished results, reported in batches (the driver sets its ``schedule`` and
        # ``fail``): what their audit line and their recorded completion need.
        self.reporting: ReportBatch[_Finished] = ReportBatch(self._report)
        # The exchanges sent and not yet answered (set by the driver): the results
        # recorded lazily among them are registered when the recording opens the
        # running statements.
        self.unfinished: Callable[[], Iterable[Exchange]] | None = None
        if recording is not None:
            recording.set_driver_hooks(self.reporting.flush, self._register_running)
        if audit is not None:
            audit.before_event = self.reporting.flush

    def set_audit(self, audit: SessionAudit | None) -> None:
        """A new identity (COM_CHANGE_USER): what finished before is reported to the
        previous one's audit first."""
        self.reporting.flush()
        self.audit = audit
        if audit is not None:
            audit.before_event = self.reporting.flush

    # -- policy -----------------------------------------------------------------------------

    def refused(self, text: str, path: str, decision: Decision) -> None:
        """A statement the policy refused: recorded whole (it never reaches the server)."""
        self.reporting.flush()
        self.statements += 1
        self.denied += 1
        if self.audit is not None:
            self.audit.statement(
                text, path, "deny", decision.rule, decision.classes, 0, 0, 0.0, "1142/42000"
            )
        rec = self.recording
        if rec is None:
            return
        rec.refused(text, path, None, decision.rule, ("1142", "42000: " + decision.message))

    def prepared(
        self, statement_id: int, rule: str | None, classes: frozenset[str] = _NO_CLASSES
    ) -> None:
        """The server created a statement the policy allowed with ``rule``."""
        if self.recording is None and self.audit is None:
            return
        rules = self._statement_rules
        if len(rules) >= _STATEMENT_RULES:
            rules.clear()  # bounded: an evicted id is recorded without a rule
        rules[statement_id] = (rule, classes)

    def statements_closed(self, statement_id: int | None = None) -> None:
        """COM_STMT_CLOSE of one statement, or every statement (reset, change user)."""
        if statement_id is None:
            self._statement_rules.clear()
        else:
            self._statement_rules.pop(statement_id, None)

    # -- statements ----------------------------------------------------------------------

    def query_started(self, ex: Exchange, sql: bytes) -> None:
        ex.text = sql
        self._open(ex)

    def execute_started(
        self,
        ex: Exchange,
        stmt: PreparedStatement | None,
        execute: StmtExecute | None,
        long_data: dict[int, int] | None = None,
    ) -> None:
        """``long_data``: bytes received per parameter through COM_STMT_SEND_LONG_DATA
        (recorded by size; the data itself went straight upstream)."""
        ex.path = "prepared"
        ex.text = stmt.sql if stmt is not None else None
        if stmt is not None:
            ex.name = str(stmt.statement_id)
            ex.rule, ex.classes = self._statement_rules.get(stmt.statement_id, (None, _NO_CLASSES))
        if execute is not None:
            params = [
                parameter_text(t, unsigned, v)
                for (t, unsigned), v in zip(execute.param_types, execute.values, strict=True)
            ]
            for index, size in (long_data or {}).items():
                if index < len(params):
                    params[index] = f"<long data: {size} bytes>"
            ex.params = params
        self._open(ex)

    def fetch_started(self, ex: Exchange, stmt: PreparedStatement | None) -> None:
        ex.path = "fetch"
        ex.text = stmt.sql if stmt is not None else None
        ex.name = str(stmt.statement_id) if stmt is not None else None
        if stmt is not None:
            ex.rule, ex.classes = self._statement_rules.get(stmt.statement_id, (None, _NO_CLASSES))
        if stmt is not None and stmt.columns:
            ex.columns = self._column_infos(stmt.columns, True)
            ex.binary = True
        self._open(ex)

    def _open(self, ex: Exchange) -> None:
        self.statements += 1
        ex.started = time.monotonic()
        ex.audited = self.audit is not None
        rec = self.recording
        if rec is not None:
            # Only numbered now; see the module's docstring.
            ex.stmt = rec.number()

    def _register(self, ex: Exchange) -> Statement:
        """Turn a lazily recorded result into a registered Statement, with the columns
        and rows held so far (it is recorded step by step from now on)."""
        rec = self.recording
        number = ex.stmt
        assert rec is not None and type(number) is int
        now = time.monotonic()
        # Positional: the parameters up to ``rule`` (keywords cost more per call).
        st = rec.statement(
            self._text(ex),
            ex.path,
            ex.name,
            ex.params,
            "allow",
            ex.rule,
            stmt=number,
            at=time.time() - (now - ex.started),
            started=ex.started,
        )
        ex.stmt = st
        if ex.columns is not None:
            rec.result_metadata(st, ex.columns)
            ex.described = True
        held = ex.held
        if held is not None:
            rec.rows(st, BINARY_ROWS if ex.binary else TEXT_ROWS, held, ex.recorded)
            ex.held = None
        return st

    def _register_running(self) -> None:
        """The recording's running hook: register the lazily recorded results still
        running (after reporting those that finished before)."""
        self.reporting.flush()
        unfinished = self.unfinished
        if unfinished is None:
            return
        for ex in unfinished():
            if type(ex.stmt) is int:
                self._register(ex)

    def _text(self, ex: Exchange) -> str:
        text = ex.text
        if text is None:
            return f"<prepared statement {ex.name} not seen by the gateway>"
        index = ex.result_index
        if ex.path == "simple" and (index or b";" in text):
            if ex.texts is None:
                ex.texts = statement_texts(text)
            if len(ex.texts) > 1 and index < len(ex.texts):
                return ex.texts[index].decode("utf-8", "replace")
        if index:
            return f"{text.decode('utf-8', 'replace')} -- result {index + 1}"
        return text.decode("utf-8", "replace")

    # -- results --------------------------------------------------------------------------

    def _column_infos(
        self, columns: tuple[ColumnDefinition41, ...], binary: bool
    ) -> list[ColumnInfo]:
        last = self._last_columns
        if binary is last[1] and columns == last[0] and columns:
            return last[2]
        key = (columns, binary)
        infos = self._columns.get(key)
        if infos is None:
            infos = [column_info(c, binary) for c in columns]
            if len(self._columns) >= _COLUMN_CACHE:
                self._columns.clear()
            self._columns[key] = infos
        self._last_columns = (columns, binary, infos)
        return infos

    def result_described(
        self, ex: Exchange, columns: tuple[ColumnDefinition41, ...] | None, binary: bool
    ) -> None:
        ex.binary = binary
        rec = self.recording
        st = ex.stmt
        if rec is None or st is None or columns is None:
            return
        ex.columns = self._column_infos(columns, binary)
        if type(st) is Statement:
            rec.result_metadata(st, ex.columns)
            ex.described = True

    def rows(self, ex: Exchange, buf: bytes, start: int, stop: int, count: int) -> None:
        """Record forwarded rows (the caller counts rows and bytes)."""
        rec = self.recording
        st = ex.stmt
        if rec is None or st is None:
            return
        room = self.record_rows - ex.recorded
        if room <= 0:
            return
        if count > room:
            # Walk `room` rows to find where the recorded part ends (once per
            # statement, when the cap is crossed); a row >= 16 MiB spans packets.
            pos = start
            for _ in range(room):
                while True:
                    length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
                    pos += 4 + length
                    if length < MAX_PACKET_PAYLOAD:
                        break
            stop, count = pos, room
        if type(st) is not Statement:
            if ex.held is None and stop - start <= HOLD_BYTES:
                # The first run of rows is held (copied: the buffer is the driver's); a
                # second one registers the result.
                ex.held = bytes(buf[start:stop])
                ex.recorded = count
                return
            st = self._register(ex)
        rec.rows(st, BINARY_ROWS if ex.binary else TEXT_ROWS, memoryview(buf)[start:stop], count)
        ex.recorded += count

    def result_finished(
        self,
        ex: Exchange,
        *,
        ok: OkPacket | None = None,
        err: ErrPacket | None = None,
        more: bool = False,
    ) -> None:
        """One result of the exchange ended (OK, terminator or ERR); with ``more`` the
        next result of the same command opens a new recorded statement."""
        if not ex.swallow:  # a stopped result's swallowed tail was never sent
            self.rows_total += ex.rows
        finished = time.monotonic()
        rec = self.recording
        st = ex.stmt
        # The text, for the audit line and a lazily recorded result (a registered one
        # has it already).
        text = self._text(ex) if ex.audited or (rec is not None and type(st) is int) else ""
        line: _AuditLine | None = None
        if ex.audited and self.audit is not None:
            line = self._audit_line(
                ex, text, f"{err.errno}/{err.sqlstate}" if err is not None else None, finished
            )
        done: _Done | _Executed | None = None
        if rec is not None and st is not None:
            tag: str | None = None
            error: tuple[str, str] | None = None
            if err is not None:
                error = (f"{err.errno}", f"{err.sqlstate}: {err.text}")
            elif ok is not None and ex.columns is None:
                tag = f"OK {ok.affected_rows} row{'' if ok.affected_rows == 1 else 's'} affected"
                if ok.last_insert_id:
                    tag += f", last insert id {ok.last_insert_id}"
            duration = finished - ex.started
            if type(st) is Statement:
                done = (st, tag, ex.rows, ex.recorded, ex.bytes, duration, error)
            else:
                assert type(st) is int
                held = ex.held
                done = (
                    st,
                    ex.started,
                    text,
                    ex.path,
                    ex.name,
                    ex.params,
                    ex.rule,
                    ex.columns,
                    (BINARY_ROWS if ex.binary else TEXT_ROWS) if held is not None else None,
                    held,
                    ex.recorded,
                    tag,
                    ex.rows,
                    ex.bytes,
                    duration,
                    error,
                )
                ex.held = None
            ex.stmt = None
        if line is not None or done is not None:
            self.reporting.add((line, done, finished))
        if more:
            ex.result_index += 1
            ex.rows = ex.recorded = ex.bytes = 0
            ex.described = False
            ex.columns = None
            if ex.text is not None or ex.path != "simple":
                self._open(ex)

    def interrupted(self, exchanges: Iterable[Exchange]) -> None:
        """The session ended while these exchanges ran (killed, revoked, expired, client
        gone): each open result still gets its audit line, with what the client had
        received."""
        self.reporting.flush()
        audit = self.audit
        if audit is None:
            return
        now = time.monotonic()
        for ex in exchanges:
            if ex.audited:
                audit.statement(*self._audit_line(ex, self._text(ex), "interrupted", now))

    def _audit_line(
        self, ex: Exchange, text: str, error: str | None, finished: float
    ) -> _AuditLine:
        """The audit line of an allowed result that ended (once per result), as
        ``SessionAudit.statement``'s arguments up to ``masked``."""
        ex.audited = False
        plan = ex.mask_plan
        return (
            text,
            ex.path,
            "allow",
            ex.rule,
            ex.classes,
            ex.rows,
            ex.bytes,
            finished - ex.started,
            error,
            masked_names(plan) if isinstance(plan, ResultPlan) and plan.columns else None,
        )

    def _report(self, items: list[_Finished]) -> None:
        audit = self.audit
        rec = self.recording
        offset = time.time() - time.monotonic()  # completion times on the wall clock
        if audit is not None:
            audit.statements(
                [(*line, finished + offset) for line, _, finished in items if line is not None]
            )
        if rec is None:
            return
        for _, done, _ in items:
            if done is not None:
                if type(done[0]) is int:
                    rec.executed(done[0], done[1] + offset, *done[2:])
                else:
                    rec.complete(*done)

    def control(self, kind: str, detail: dict[str, str]) -> None:
        if self.recording is not None:
            self.recording.control(kind, detail)

    def session_ended(self, reason: str) -> None:
        self.reporting.flush()
        if self.recording is not None:
            self.recording.end(reason)
