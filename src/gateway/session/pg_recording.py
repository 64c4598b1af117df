"""Bridges the PostgreSQL query tracker to the session recording.

Called per execution (Query / Execute / FunctionCall) and per forwarded run of
DataRows, never per row. Rows are recorded as the exact DataRow bytes the
client received, up to ``record_rows`` per execution; the rest is only counted.
"""

from __future__ import annotations

import time
from struct import Struct
from typing import TYPE_CHECKING

from protocols.postgres.rows import parse_row_description
from protocols.postgres.tracker import Execution

from ..recording import ColumnInfo

if TYPE_CHECKING:
    from ..recording import SessionRecording

_LEN = Struct("!I")
ROW_ENCODING = "pg.DataRow"
_COLUMN_CACHE = 256
_TEXT_CACHE = 256


class _ExecState:
    __slots__ = ("bytes", "described", "recorded", "seq", "started")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.started = time.monotonic()
        self.recorded = 0
        self.bytes = 0
        self.described = False


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
    """ExecutionObserver; a no-op shell when the session is not recorded."""

    __slots__ = ("_columns", "_texts", "denied", "record_rows", "recording", "rule", "statements")

    def __init__(
        self, recording: SessionRecording | None, record_rows: int, rule: str | None = None
    ) -> None:
        self.recording = recording
        self.record_rows = record_rows
        self.rule = rule
        self.statements = 0
        self.denied = 0
        # Parsed column metadata per (RowDescription, result formats): a prepared
        # statement executed many times is described once, not once per execution.
        self._columns: dict[tuple[bytes, tuple[int, ...]], list[ColumnInfo]] = {}
        # Decoded statement texts: a prepared statement's text is decoded once.
        self._texts: dict[bytes, str] = {}

    def execution_started(self, ex: Execution) -> None:
        self.statements += 1
        rec = self.recording
        if rec is None:
            return
        params = None
        if ex.bind is not None:
            bind = ex.bind
            params = [
                _param_value(v, bind.parameter_format(i)) for i, v in enumerate(bind.parameters)
            ]
        raw = ex.text
        if raw is not None:
            text = self._texts.get(raw)
            if text is None:
                text = raw.decode("utf-8", errors="replace")
                if len(self._texts) >= _TEXT_CACHE:
                    self._texts.clear()
                self._texts[raw] = text
        elif ex.path == "cursor":
            text = f"<execute portal {ex.portal!r}>"
        elif ex.path == "function":
            text = "<fast-path function call>"
        else:
            text = f"<prepared statement {ex.statement_name!r} not seen by the gateway>"
        seq = rec.statement(
            text=text,
            path=ex.path,
            statement_name=ex.statement_name.decode(errors="replace")
            if ex.statement_name
            else None,
            parameters=params,
            rule=self.rule,
        )
        ex.context = _ExecState(seq)
        if ex.row_description is not None:
            self.result_described(ex)

    def result_described(self, ex: Execution) -> None:
        rec = self.recording
        state = ex.context
        if rec is None or not isinstance(state, _ExecState) or ex.row_description is None:
            return
        key = (ex.row_description, ex.result_formats)
        columns = self._columns.get(key)
        if columns is None:
            columns = _columns(ex.row_description, ex.result_formats)
            if len(self._columns) >= _COLUMN_CACHE:
                self._columns.clear()
            self._columns[key] = columns
        rec.result_metadata(state.seq, columns)
        state.described = True

    def rows(self, ex: Execution, buf: bytes, start: int, stop: int, count: int) -> None:
        state = ex.context
        rec = self.recording
        if rec is None or not isinstance(state, _ExecState):
            return
        state.bytes += stop - start
        if not state.described and ex.row_description is not None:
            self.result_described(ex)
        room = self.record_rows - state.recorded
        if room <= 0:
            return
        if count > room:
            # Walk `room` headers to find where the recorded part ends (once per
            # execution, when the cap is crossed).
            pos = start
            for _ in range(room):
                pos += 1 + _LEN.unpack_from(buf, pos + 1)[0]
            stop, count = pos, room
        rec.rows(state.seq, ROW_ENCODING, memoryview(buf)[start:stop], count)
        state.recorded += count

    def add_bytes(self, ex: Execution, n: int) -> None:
        state = ex.context
        if isinstance(state, _ExecState):
            state.bytes += n

    def execution_finished(self, ex: Execution) -> None:
        rec = self.recording
        state = ex.context
        if rec is None or not isinstance(state, _ExecState):
            return
        if not state.described and ex.row_description is not None and ex.rows:
            self.result_described(ex)
        error = ex.error
        if ex.skipped and error is None:
            error = ("", "not executed: an earlier message in the pipeline failed")
        rec.complete(
            state.seq,
            tag=ex.last_tag,
            rows=ex.rows,
            rows_recorded=state.recorded,
            bytes_to_client=state.bytes,
            duration=time.monotonic() - state.started,
            error=error,
        )

    def session_ended(self, reason: str) -> None:
        if self.recording is not None:
            self.recording.end(reason)
