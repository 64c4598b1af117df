"""Bridges the PostgreSQL query tracker to the session recording.

Called per execution (Query / Execute / FunctionCall) and per forwarded run of
DataRows, never per row. Rows are recorded as the exact DataRow bytes the
client received, up to ``record_rows`` per execution; the rest is only counted.

Executions are recorded lazily: numbered when they arrive, and handed to the
recording once, when they complete (``SessionRecording.executed``), with what the
tracker knows by then (text, parameters, columns) and the first chunk of rows held
here. Only an execution that outgrows that (a second chunk of rows, a second result,
rows past ``record_rows``), or is still running when the recording opens the running
statements (a writer tick, a control event, the end), is registered as a
``Statement`` and recorded step by step. Measured (pgbench -S -M prepared -c 1, gateway
CPU per transaction with recording): 130.8 µs registering every execution as it started,
123.1 µs lazily; see docs/performance.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from struct import Struct
from typing import TYPE_CHECKING, cast

from protocols.postgres.messages import parse_command_complete
from protocols.postgres.rows import parse_row_description
from protocols.postgres.tracker import Execution

from ..masking.plan import ResultPlan
from ..recording import ColumnInfo
from ..recording.schema import PG_COPYDATA, PG_DATAROW
from ..recording.session import HOLD_BYTES, Statement
from .masking_common import masked_names
from .reporting import ReportBatch

if TYPE_CHECKING:
    from ..audit import SessionAudit
    from ..audit.service import StatementArgs
    from ..policy import Decision
    from ..recording import SessionRecording

_LEN = Struct("!I")
ROW_ENCODING = PG_DATAROW
COPY_ENCODING = PG_COPYDATA
_COLUMN_CACHE = 256
_TEXT_CACHE = 256
_STATEMENT_RULES = 4096
_NO_CLASSES: frozenset[str] = frozenset()
# A lazily recorded execution's ``context`` once it holds something: its number, the
# first result's columns, the first chunk of rows and their count.
_Lazy = tuple[int, list[ColumnInfo] | None, bytes | None, int]


def _columns(row_description: bytes, formats: tuple[int, ...]) -> list[ColumnInfo]:
    """ColumnInfo for a RowDescription; Bind result formats override its codes (a
    Describe-statement description always says text)."""
    columns = []
    for i, f in enumerate(parse_row_description(row_description)):
        fmt = f.format
        if formats:
            fmt = formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0
        columns.append(
            ColumnInfo(
                name=f.name,
                type_oid=f.type_oid,
                format="binary" if fmt == 1 else "text",
                table_oid=f.table_oid or None,
                attnum=f.attnum or None,
            )
        )
    return columns


def _param_value(value: bytes | None, fmt: int) -> str | bytes | None:
    if value is None or fmt == 1:
        return value
    return value.decode("utf-8", errors="replace")


class PgRecordingObserver:
    """ExecutionObserver; a no-op shell when the session is neither recorded nor audited.

    With an audit (``SessionAudit``), each completed or refused statement is also
    reported there once, with its rows, bytes and duration.

    Runs once per execution on the hot path, so what a prepared statement repeats
    (its decoded text and name, its parsed columns, its command tag) is decoded once
    and looked up afterwards.
    """

    __slots__ = (
        "_columns",
        "_labels",
        "_statement_rules",
        "_tags",
        "audit",
        "counting",
        "denied",
        "failed",
        "next_classes",
        "next_rule",
        "planner",
        "record_rows",
        "recording",
        "recording_rows",
        "reporting",
        "rows_total",
        "rule",
        "statements",
        "unfinished",
    )

    def __init__(
        self,
        recording: SessionRecording | None,
        record_rows: int,
        rule: str | None = None,
        audit: SessionAudit | None = None,
    ) -> None:
        self.recording = recording
        self.audit = audit
        # Whether the driver reports forwarded row runs (their bytes count for both).
        self.counting = recording is not None or audit is not None
        # Whether ``rows`` records anything; without it the tracker's ``backend_run`` counts
        # a row run's bytes itself and ``rows`` need not be called.
        self.recording_rows = recording is not None
        self.record_rows = record_rows
        self.rule = rule
        self.statements = 0
        self.denied = 0
        self.rows_total = 0  # rows of finished executions (the admin API's live sessions)
        # Told the text of an execution the server failed or skipped (the statement
        # policy forgets the SQL-level PREPAREs that may not have run).
        self.failed: Callable[[bytes], None] | None = None
        # Parsed column metadata per (RowDescription, result formats).
        self._columns: dict[tuple[bytes, tuple[int, ...]], list[ColumnInfo]] = {}
        # (text, statement name) as recorded, per (raw text, raw name).
        self._labels: dict[tuple[bytes | None, bytes | None], tuple[str, str | None]] = {}
        # Decoded command tags per CommandComplete body ("SELECT 1", "INSERT 0 1", ...).
        self._tags: dict[bytes, str] = {}
        # The policy rule that allowed the next simple Query / FunctionCall, and each
        # parsed statement's (by name): recorded with their executions.
        self.next_rule = rule
        self.next_classes = _NO_CLASSES
        self._statement_rules: dict[bytes, tuple[str | None, frozenset[str]]] = {}
        # Masking's planner (set by the driver when masks apply): result metadata is
        # recorded with the masked columns marked.
        self.planner: Callable[[Execution], ResultPlan | None] | None = None
        # The tracker's executions sent and not yet answered (set by the driver): those
        # recorded lazily are registered when the recording opens the running ones.
        self.unfinished: Callable[[], list[Execution]] | None = None
        # Finished executions, reported in batches (the driver sets its ``schedule`` and
        # ``fail``); flushed before anything else of the session is recorded or audited.
        self.reporting: ReportBatch[Execution] = ReportBatch(self._report)
        if recording is not None:
            recording.set_driver_hooks(self.reporting.flush, self._register_running)
        if audit is not None:
            audit.before_event = self.reporting.flush

    def allowed(
        self,
        mtype: int,
        name: bytes | None,
        rule: str | None,
        classes: frozenset[str] = _NO_CLASSES,
    ) -> None:
        """The policy allowed a Query / FunctionCall (``name`` None) or a Parse."""
        if not self.counting:
            return
        if name is None:
            self.next_rule = rule
            self.next_classes = classes
        else:
            rules = self._statement_rules
            if len(rules) >= _STATEMENT_RULES:
                rules.clear()  # bounded: an evicted name is recorded with the session rule
            rules[name] = (rule, classes)

    def refused(
        self, text: str, path: str, name: bytes | None, decision: Decision, sqlstate: str
    ) -> None:
        """A statement the policy refused: recorded whole (it never reaches the server)."""
        self.flush()
        self.statements += 1
        self.denied += 1
        if self.audit is not None:
            self.audit.statement(
                text, path, "deny", decision.rule, decision.classes, 0, 0, 0.0, sqlstate
            )
        rec = self.recording
        if rec is None:
            return
        label = name.decode(errors="replace") if name else None
        rec.refused(text, path, label, decision.rule, (sqlstate, decision.message))

    def execution_started(self, ex: Execution) -> None:
        self.statements += 1
        if not self.counting:
            return
        ex.started = time.monotonic()
        name = ex.statement_name
        if name is None:
            if ex.path != "cursor":
                decided = (self.next_rule, self.next_classes)
            else:
                decided = (self.rule, _NO_CLASSES)
        else:
            decided = self._statement_rules.get(name) or (self.rule, _NO_CLASSES)
        ex.decided = decided
        rec = self.recording
        if rec is not None:
            # Only numbered now; see the module's docstring. ``context`` holds the number
            # until the first result is described or rows arrive, then a _Lazy tuple.
            ex.context = rec.number()

    def _register(self, ex: Execution) -> Statement:
        """Turn a lazily recorded execution into a registered Statement, with the
        columns and rows held so far (it is recorded step by step from now on)."""
        rec = self.recording
        assert rec is not None
        number, columns, data, count = _held(ex.context)
        label = self._label(ex)
        decided: tuple[str | None, frozenset[str]] = ex.decided  # type: ignore[assignment]
        now = time.monotonic()
        st = rec.statement(
            label[0],
            ex.path,
            label[1],
            _params(ex),
            "allow",
            decided[0],
            stmt=number,
            at=time.time() - (now - ex.started),
            started=ex.started,
        )
        ex.context = st
        columns = self._held_columns(ex, columns)
        if columns is not None:
            rec.result_metadata(st, columns)
            st.described = True
        if data is not None:
            rec.rows(st, ROW_ENCODING, data, count)
            st.recorded = count
        return st

    def _held_columns(
        self, ex: Execution, held: list[ColumnInfo] | None
    ) -> list[ColumnInfo] | None:
        """The columns of a lazily recorded execution's (first) result: held since its
        RowDescription (a simple Query's), or known from its statement or portal
        Describe (the extended protocol: one result per Execute)."""
        if held is None and ex.path != "simple" and ex.row_description is not None:
            return self._result_columns(ex)
        return held

    def _register_running(self) -> None:
        """The recording's running hook: register the lazy executions still running
        (after reporting those that finished before)."""
        self.flush()
        unfinished = self.unfinished
        if unfinished is None:
            return
        for ex in unfinished():
            if type(ex.context) in (int, tuple):
                self._register(ex)

    def _label(self, ex: Execution) -> tuple[str, str | None]:
        if ex.text is None:
            # A SQL-level cursor's or a fast-path call's: labelled from other fields (the
            # portal, the path), so not cached by (text, name), which they all share.
            return _label(ex)
        key = (ex.text, ex.statement_name)
        label = self._labels.get(key)
        if label is None:
            label = _label(ex)
            if len(self._labels) >= _TEXT_CACHE:
                self._labels.clear()
            self._labels[key] = label
        return label

    def _result_columns(self, ex: Execution) -> list[ColumnInfo]:
        assert ex.row_description is not None
        columns = self._columns_of(ex.row_description, ex.result_formats)
        planner = self.planner
        if planner is None:
            return columns
        plan = ex.mask_plan
        if plan is None:
            plan = planner(ex)
        if not isinstance(plan, ResultPlan) or not plan.columns:
            return columns
        if plan.recorded is None:
            plan.recorded = _masked_columns(columns, plan)
        assert isinstance(plan.recorded, list)
        return plan.recorded

    def _columns_of(self, row_description: bytes, formats: tuple[int, ...]) -> list[ColumnInfo]:
        key = (row_description, formats)
        columns = self._columns.get(key)
        if columns is None:
            columns = _columns(row_description, formats)
            if len(self._columns) >= _COLUMN_CACHE:
                self._columns.clear()
            self._columns[key] = columns
        return columns

    def result_described(self, ex: Execution) -> None:
        """A RowDescription for a running execution (a simple Query's, or one statement's
        of several in it)."""
        rec = self.recording
        st = ex.context
        if rec is None or st is None or ex.row_description is None:
            return
        if type(st) is int and ex.tag_count == 0:
            # The first result: held with the execution, recorded when it completes.
            ex.context = (st, self._result_columns(ex), None, 0)
            return
        if type(st) is not Statement:
            # A second result: from now on recorded step by step (the first result's
            # columns and rows, held so far, first).
            st = self._register(ex)
        rec.result_metadata(st, self._result_columns(ex))
        st.described = True

    def rows(self, ex: Execution, buf: bytes, start: int, stop: int, count: int) -> None:
        ex.bytes += stop - start
        st = ex.context
        rec = self.recording
        if rec is None or st is None:
            return
        if type(st) is not Statement:
            # The first chunk of rows, if within the caps, is held (copied: the buffer is
            # the driver's); anything more registers the execution.
            if count <= self.record_rows and stop - start <= HOLD_BYTES:
                if type(st) is int:
                    ex.context = (st, None, buf[start:stop], count)
                    return
                assert type(st) is tuple
                if st[2] is None:
                    ex.context = (st[0], st[1], buf[start:stop], count)
                    return
            st = self._register(ex)
        if not st.described and ex.row_description is not None:
            rec.result_metadata(st, self._result_columns(ex))
            st.described = True
        self._record_rows(rec, st, ROW_ENCODING, buf, start, stop, count)

    def copy_data(self, ex: Execution, buf: bytes, start: int, stop: int, count: int) -> None:
        """``count`` CopyData messages of a ``COPY ... TO STDOUT``, as the client got them
        (``buf[start:stop]``): the execution's bytes, and recorded like rows (encoding
        ``pg.CopyData``) under the same cap. An export by COPY is in the recording as
        an export by SELECT is."""
        ex.bytes += stop - start
        rec = self.recording
        if rec is not None and ex.context is not None:
            # Never held lazily (a COPY's data is rarely one small chunk): registered now.
            st = ex.context if type(ex.context) is Statement else self._register(ex)
            self._record_rows(rec, st, COPY_ENCODING, buf, start, stop, count)

    def _record_rows(
        self,
        rec: SessionRecording,
        st: Statement,
        encoding: str,
        buf: bytes,
        start: int,
        stop: int,
        count: int,
    ) -> None:
        """Record ``count`` framed messages of ``buf[start:stop]`` within the per-statement
        cap (``record_rows``)."""
        room = self.record_rows - st.recorded
        if room <= 0:
            return
        if count > room:
            # Walk `room` headers to find where the recorded part ends (once per
            # execution, when the cap is crossed).
            pos = start
            for _ in range(room):
                pos += 1 + _LEN.unpack_from(buf, pos + 1)[0]
            stop, count = pos, room
        # A small run is sliced (one copy, kept until completion); a big one is passed
        # as a view and copied once, into the recording buffer.
        data = buf[start:stop] if stop - start <= HOLD_BYTES else memoryview(buf)[start:stop]
        rec.rows(st, encoding, data, count)
        st.recorded += count

    def execution_finished(self, ex: Execution) -> None:
        """Counted at once; reported (audit line, recording) in batches: see
        ``reporting.py``."""
        self.rows_total += ex.rows
        if (ex.error is not None or ex.skipped) and self.failed is not None and ex.text:
            self.failed(ex.text)
        if self.counting:
            ex.finished = time.monotonic()
            self.reporting.add(ex)

    def flush(self) -> None:
        """Report the finished executions held back, now."""
        self.reporting.flush()

    def _report(self, done: list[Execution]) -> None:
        audit = self.audit
        rec = self.recording
        # Arrival and completion times on the wall clock, from the monotonic ones.
        offset = time.time() - time.monotonic()
        if audit is not None:
            items: list[StatementArgs] = []
            append = items.append
            labels = self._labels
            for ex in done:
                decided = ex.decided
                if decided is None:
                    continue
                label = labels.get((ex.text, ex.statement_name)) or self._label(ex)
                if ex.error is not None or ex.skipped or ex.mask_plan is not None:
                    append(
                        self._audit_args(ex, None, ex.finished - ex.started, ex.finished + offset)
                    )
                    continue
                # _audit_args for the common case: no error, nothing masked.
                finished = ex.finished
                append(
                    (
                        label[0],
                        ex.path,
                        "allow",
                        decided[0],  # type: ignore[index]
                        decided[1],  # type: ignore[index]
                        ex.rows,
                        ex.bytes,
                        finished - ex.started,
                        None,
                        None,
                        finished + offset,
                    )
                )
            audit.statements(items)
        if rec is not None:
            for ex in done:
                if ex.context is not None:
                    self._record(rec, ex, offset)

    def _record(self, rec: SessionRecording, ex: Execution, offset: float) -> None:
        st = ex.context
        ex.context = None  # recorded once
        error = ex.error
        if ex.skipped and error is None:
            error = ("", "not executed: an earlier message in the pipeline failed")
        body = ex.last_tag_body
        tag = None
        if body is not None:
            tag = self._tags.get(body)
            if tag is None:
                tag = parse_command_complete(body)
                if len(self._tags) >= _TEXT_CACHE:
                    self._tags.clear()
                self._tags[body] = tag
        if type(st) is Statement:
            if not st.described and ex.row_description is not None and ex.rows:
                rec.result_metadata(st, self._result_columns(ex))
            rec.complete(st, tag, ex.rows, st.recorded, ex.bytes, ex.finished - st.started, error)
            return
        number, columns, data, count = _held(st)
        columns = self._held_columns(ex, columns)
        label = self._label(ex)
        decided: tuple[str | None, frozenset[str]] = ex.decided  # type: ignore[assignment]
        duration = ex.finished - ex.started
        rec.executed(
            number,
            ex.started + offset,
            label[0],
            ex.path,
            label[1],
            _params(ex),
            decided[0],
            columns,
            ROW_ENCODING if data is not None else None,
            data,
            count,
            tag,
            ex.rows,
            ex.bytes,
            duration,
            error,
        )

    def interrupted(self, executions: list[Execution]) -> None:
        """The session ended while these executions ran (killed, revoked, expired, client
        gone): each still gets its audit line, with what the client had received."""
        self.flush()
        audit = self.audit
        if audit is None:
            return
        now = time.monotonic()
        for ex in executions:
            if ex.decided is not None:
                audit.statement(*self._audit_args(ex, "interrupted", now - ex.started, None))
                ex.decided = None  # reported once

    def _audit_args(
        self, ex: Execution, code: str | None, duration: float, finished_at: float | None
    ) -> StatementArgs:
        """``SessionAudit.statement``'s arguments for an allowed execution that ended."""
        decided: tuple[str | None, frozenset[str]] = ex.decided  # type: ignore[assignment]
        rule, classes = decided
        error = ex.error
        if error is not None:
            code = error[0] or "error"
        elif ex.skipped:
            code = "skipped"
        plan = ex.mask_plan
        masked = masked_names(plan) if isinstance(plan, ResultPlan) and plan.columns else None
        return (
            self._label(ex)[0],
            ex.path,
            "allow",
            rule,
            classes,
            ex.rows,
            ex.bytes,
            duration,
            code,
            masked,
            finished_at,
        )

    def session_ended(self, reason: str) -> None:
        self.flush()
        if self.recording is not None:
            self.recording.end(reason)


def _held(context: object) -> _Lazy:
    """What a lazily recorded execution holds (its ``context``: a number or a _Lazy)."""
    if type(context) is int:
        return (context, None, None, 0)
    assert type(context) is tuple
    return cast(_Lazy, context)


def _params(ex: Execution) -> list[str | bytes | None] | None:
    """Bind parameters as recorded: text-format values decoded, binary ones as bytes."""
    bind = ex.bind
    if bind is None:
        return None
    formats = bind.parameter_formats
    if not formats or formats == (0,):  # all text: the common case
        return [None if v is None else v.decode("utf-8", "replace") for v in bind.parameters]
    return [_param_value(v, bind.parameter_format(i)) for i, v in enumerate(bind.parameters)]


def _masked_columns(columns: list[ColumnInfo], plan: ResultPlan) -> list[ColumnInfo]:
    """The columns with masking marked: the style, or "detectors", and the source column."""
    out = []
    for info, col in zip(columns, plan.columns, strict=False):
        masked = col.mask.style.name if col.mask is not None else None
        if masked is None and col.detectors:
            masked = "detectors"
        table = column = None
        if col.source is not None:
            schema_table, _, column = col.source.rpartition(".")
            table = schema_table
        out.append(
            ColumnInfo(
                name=info.name,
                type_oid=info.type_oid,
                type_name=info.type_name,
                format=info.format,
                table_oid=info.table_oid,
                attnum=info.attnum,
                table=table,
                column=column,
                masked=masked,
            )
        )
    return out


def _label(ex: Execution) -> tuple[str, str | None]:
    """The statement text and name to record for an execution."""
    raw = ex.text
    if raw is not None:
        text = raw.decode("utf-8", errors="replace")
    elif ex.path == "cursor":
        text = f"<execute portal {ex.portal!r}>"
    elif ex.path == "function":
        text = "<fast-path function call>"
    else:
        text = f"<prepared statement {ex.statement_name!r} not seen by the gateway>"
    name = ex.statement_name.decode(errors="replace") if ex.statement_name else None
    return text, name
