"""MySQL recording observer and the CLI's decoding of recorded MySQL rows, without sockets."""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any

from gateway.recording.render_mysql import (
    MYSQL_BINARY,
    MYSQL_TEXT,
    decode_rows,
    iter_packets,
    right_aligned,
)
from gateway.recording.session import Statement
from gateway.session.mysql_recording import (
    Exchange,
    MyRecordingObserver,
    column_info,
    parameter_text,
    type_label,
)
from protocols.mysql.constants import Charset, ColumnFlag, ColumnType, Command
from protocols.mysql.framing import build_packets
from protocols.mysql.packets import ErrPacket, OkPacket
from protocols.mysql.resultset import (
    ColumnDefinition41,
    StmtExecute,
    build_binary_row,
    build_text_row,
    encode_binary_value,
)

T = ColumnType


class FakeRecording:
    """Logs SessionRecording's calls; a lazily recorded result (``executed``) is logged as
    the calls a registered one makes (statement, meta, rows, complete), plus ``executed``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.stmt = 0
        self.running: Any = None

    # The same signatures as SessionRecording's (the observer calls them positionally).
    def number(self) -> int:
        self.stmt += 1
        return self.stmt

    def statement(
        self,
        text: str,
        path: str,
        statement_name: str | None = None,
        parameters: list[Any] | None = None,
        decision: str = "allow",
        rule: str | None = None,
        *,
        stmt: int = 0,
        at: float = 0.0,
        started: float = 0.0,
    ) -> Statement:
        if not stmt:
            stmt = self.number()
        kw = {"text": text, "path": path, "statement_name": statement_name}
        kw.update(parameters=parameters, decision=decision, rule=rule, stmt=stmt)
        self.calls.append(("statement", kw))
        return Statement(stmt, at, text, path, statement_name, parameters, decision, rule)

    def executed(
        self,
        stmt: int,
        at: float,
        text: str,
        path: str,
        name: str | None,
        params: list[Any] | None,
        rule: str | None,
        columns: Any,
        enc: str | None,
        data: bytes | None,
        count: int,
        tag: str | None,
        rows: int,
        bytes_to_client: int,
        duration: float,
        error: tuple[str, str] | None = None,
    ) -> None:
        self.calls.append(("executed", stmt))
        kw = {"text": text, "path": path, "statement_name": name}
        kw.update(parameters=params, decision="allow", rule=rule, stmt=stmt)
        self.calls.append(("statement", kw))
        if columns is not None:
            self.result_metadata(stmt, columns)
        if data is not None:
            assert enc is not None
            self.rows(stmt, enc, data, count)
        self.complete(stmt, tag, rows, count, bytes_to_client, duration, error)

    def result_metadata(self, stmt: int | Statement, columns: Any) -> None:
        self.calls.append(("meta", (_number(stmt), list(columns))))

    def rows(self, stmt: int | Statement, encoding: str, data: Any, count: int) -> None:
        self.calls.append(("rows", (_number(stmt), encoding, bytes(data), count)))

    def complete(
        self,
        stmt: int | Statement,
        tag: str | None,
        rows: int,
        rows_recorded: int,
        bytes_to_client: int,
        duration: float,
        error: tuple[str, str] | None = None,
    ) -> None:
        kw = {"tag": tag, "rows": rows, "rows_recorded": rows_recorded}
        kw.update(bytes_to_client=bytes_to_client, duration=duration, error=error)
        self.calls.append(("complete", (_number(stmt), kw)))

    def control(self, kind: str, detail: Any) -> None:
        self.calls.append(("control", (kind, detail)))

    def set_driver_hooks(self, flush: Any, running: Any) -> None:
        # The observer reports at once here (no loop to schedule a batch on); ``running``
        # is what a writer tick or a control event calls first.
        self.running = running

    def end(self, reason: str) -> None:
        self.calls.append(("end", reason))

    def of(self, kind: str) -> list[Any]:
        return [args for k, args in self.calls if k == kind]


def _number(stmt: int | Statement) -> int:
    return stmt.stmt if isinstance(stmt, Statement) else stmt


def col(name: str, col_type: int, *, flags: int = 0, charset: int = 45) -> ColumnDefinition41:
    return ColumnDefinition41(
        b"app", b"t", b"t_org", name.encode(), name.encode() + b"_org", charset, 20, col_type, flags
    )


def framed_rows(payloads: list[bytes], seq: int = 3) -> bytes:
    out = b""
    for p in payloads:
        framed, seq = build_packets(p, seq)
        out += framed
    return out


def observer() -> tuple[MyRecordingObserver, FakeRecording]:
    rec = FakeRecording()
    return MyRecordingObserver(rec, record_rows=3), rec  # type: ignore[arg-type]


def test_text_result_recorded_and_decoded() -> None:
    obs, rec = observer()
    ex = Exchange(Command.COM_QUERY)
    obs.query_started(ex, b"SELECT a, b, c FROM t")
    columns = (
        col("a", T.MYSQL_TYPE_LONG),
        col("b", T.MYSQL_TYPE_VAR_STRING),
        col("c", T.MYSQL_TYPE_BLOB, charset=Charset.BINARY),
    )
    obs.result_described(ex, columns, binary=False)
    rows = [build_text_row([b"1", "é".encode(), b"\x00\xff"]), build_text_row([b"2", None, b""])]
    data = framed_rows(rows)
    obs.rows(ex, data, 0, len(data), 2)
    ex.rows = 2
    obs.result_finished(ex, ok=OkPacket(header=0xFE))
    (stmt,) = rec.of("statement")
    assert stmt["text"] == "SELECT a, b, c FROM t" and stmt["path"] == "simple"
    ((_, infos),) = rec.of("meta")
    assert [c.table for c in infos] == ["t_org"] * 3
    assert [c.column for c in infos] == ["a_org", "b_org", "c_org"]
    assert infos[2].type_name == "BLOB BINARY"
    ((_, enc, recorded, count),) = rec.of("rows")
    assert (enc, count, recorded) == (MYSQL_TEXT, 2, data)
    assert decode_rows([recorded], enc, infos) == [["1", "é", "\\x00ff"], ["2", None, "\\x"]]
    ((_, done),) = rec.of("complete")
    assert done["rows"] == 2 and done["rows_recorded"] == 2 and done["tag"] is None


def test_record_rows_cap_cuts_on_a_row_boundary_even_for_huge_rows() -> None:
    obs, rec = observer()  # record_rows = 3
    ex = Exchange(Command.COM_QUERY)
    obs.query_started(ex, b"SELECT v FROM big")
    obs.result_described(ex, (col("v", T.MYSQL_TYPE_LONG_BLOB),), binary=False)
    huge = build_text_row([b"x" * (0xFFFFFF + 10)])  # spans two physical packets
    payloads = [build_text_row([b"a"]), huge, build_text_row([b"b"]), build_text_row([b"c"])]
    data = framed_rows(payloads)
    obs.rows(ex, data, 0, len(data), 4)
    ex.rows = 4
    obs.result_finished(ex, ok=OkPacket(header=0xFE))
    ((_, _, recorded, count),) = rec.of("rows")
    assert count == 3
    assert iter_packets(recorded) == payloads[:3]
    ((_, done),) = rec.of("complete")
    assert done["rows"] == 4 and done["rows_recorded"] == 3


def test_binary_rows_every_type_decode_like_the_cli() -> None:
    spec: list[tuple[ColumnDefinition41, Any, str]] = [
        (col("tiny", T.MYSQL_TYPE_TINY), -5, "-5"),
        (col("utiny", T.MYSQL_TYPE_TINY, flags=ColumnFlag.UNSIGNED), 250, "250"),
        (col("short", T.MYSQL_TYPE_SHORT), -300, "-300"),
        (col("year", T.MYSQL_TYPE_YEAR, flags=ColumnFlag.UNSIGNED), 2155, "2155"),
        (col("long", T.MYSQL_TYPE_LONG), -70000, "-70000"),
        (
            col("big", T.MYSQL_TYPE_LONGLONG, flags=ColumnFlag.UNSIGNED),
            2**64 - 1,
            "18446744073709551615",
        ),
        (col("float", T.MYSQL_TYPE_FLOAT), 1.1, "1.1"),
        (col("double", T.MYSQL_TYPE_DOUBLE), -2.5e-300, "-2.5e-300"),
        (col("dec", T.MYSQL_TYPE_NEWDECIMAL), b"-12.500", "-12.500"),
        (col("date", T.MYSQL_TYPE_DATE), dt.date(2024, 2, 29), "2024-02-29"),
        (
            col("dtm", T.MYSQL_TYPE_DATETIME),
            dt.datetime(2024, 2, 29, 1, 2, 3, 40),
            "2024-02-29 01:02:03.000040",
        ),
        (col("zero", T.MYSQL_TYPE_DATETIME), b"", "0000-00-00 00:00:00"),
        (
            col("time", T.MYSQL_TYPE_TIME),
            -dt.timedelta(hours=838, minutes=59, seconds=59),
            "-838:59:59",
        ),
        (col("text", T.MYSQL_TYPE_VAR_STRING), "日本".encode(), "日本"),
        (col("blob", T.MYSQL_TYPE_BLOB, charset=Charset.BINARY), b"\x01\x02", "\\x0102"),
        (col("json", T.MYSQL_TYPE_BLOB), b'{"a": 1}', '{"a": 1}'),
        (col("null", T.MYSQL_TYPE_LONG), None, None),
    ]
    columns = tuple(c for c, _, _ in spec)
    types = [c.type for c in columns]
    raw = [None if v is None else encode_binary_value(c.type, v, c.unsigned) for c, v, _ in spec]
    payload = build_binary_row(types, raw)
    infos = [column_info(c, True) for c in columns]
    assert decode_rows([framed_rows([payload])], MYSQL_BINARY, infos) == [[t for _, _, t in spec]]
    assert right_aligned(infos)[:3] == [True, True, True]
    assert not right_aligned(infos)[13]


def test_multi_statement_results_get_their_own_text() -> None:
    obs, rec = observer()
    ex = Exchange(Command.COM_QUERY)
    obs.query_started(ex, b"SELECT 1; UPDATE t SET a = 1; SELECT 'x;y'")
    obs.result_finished(ex, ok=OkPacket(header=0xFE), more=True)
    obs.result_finished(ex, ok=OkPacket(affected_rows=4, last_insert_id=9), more=True)
    obs.result_finished(ex, err=ErrPacket(1146, "42S02", b"Table 'app.t' doesn't exist"))
    texts = [s["text"] for s in rec.of("statement")]
    assert texts == ["SELECT 1", "UPDATE t SET a = 1", "SELECT 'x;y'"]
    done = [kw for _, kw in rec.of("complete")]
    assert done[1]["tag"] == "OK 4 rows affected, last insert id 9"
    assert done[2]["error"] == ("1146", "42S02: Table 'app.t' doesn't exist")


def test_call_results_beyond_the_text_are_numbered() -> None:
    obs, rec = observer()
    ex = Exchange(Command.COM_QUERY)
    obs.query_started(ex, b"CALL p()")
    obs.result_finished(ex, ok=OkPacket(header=0xFE), more=True)
    obs.result_finished(ex, ok=OkPacket(), more=False)
    assert [s["text"] for s in rec.of("statement")] == ["CALL p()", "CALL p() -- result 2"]


def test_prepared_execute_parameters() -> None:
    from protocols.mysql.commands import PreparedStatement

    obs, rec = observer()
    ex = Exchange(Command.COM_STMT_EXECUTE)
    stmt = PreparedStatement(5, b"SELECT ?, ?, ?, ?, ?", 5, 1)
    execute = StmtExecute(
        5,
        0,
        1,
        True,
        (
            (T.MYSQL_TYPE_LONGLONG, False),
            (T.MYSQL_TYPE_VAR_STRING, False),
            (T.MYSQL_TYPE_BLOB, False),
            (T.MYSQL_TYPE_DATETIME, False),
            (T.MYSQL_TYPE_DOUBLE, False),
        ),
        (
            struct.pack("<q", -7),
            "ü".encode(),
            b"\xff\xfe",
            encode_binary_value(T.MYSQL_TYPE_DATETIME, dt.datetime(2020, 1, 2, 3, 4, 5)),
            None,
        ),
    )
    obs.execute_started(ex, stmt, execute, {2: 1000})
    obs.result_finished(ex, ok=OkPacket())
    (s,) = rec.of("statement")
    assert s["path"] == "prepared" and s["statement_name"] == "5"
    assert s["parameters"] == ["-7", "ü", "<long data: 1000 bytes>", "2020-01-02 03:04:05", None]
    assert parameter_text(T.MYSQL_TYPE_BLOB, False, b"\xff") == b"\xff"
    assert parameter_text(T.MYSQL_TYPE_LONG, False, b"\x01") == b"\x01"  # wrong width: bytes


def test_unrecorded_sessions_only_count() -> None:
    obs = MyRecordingObserver(None, 1000)
    ex = Exchange(Command.COM_QUERY)
    obs.query_started(ex, b"SELECT 1")
    obs.rows(ex, b"\x01\x00\x00\x01\x00", 0, 5, 1)
    obs.result_finished(ex, ok=OkPacket())
    obs.session_ended("x")
    assert obs.statements == 1 and ex.stmt is None


def test_type_labels() -> None:
    assert type_label(T.MYSQL_TYPE_LONGLONG, ColumnFlag.UNSIGNED, 63) == "LONGLONG UNSIGNED"
    assert type_label(T.MYSQL_TYPE_STRING, 0, 63) == "STRING BINARY"
    assert type_label(T.MYSQL_TYPE_BLOB, 0, 45, b"json") == "BLOB(json)"
    assert type_label(0x99, 0, 45) == "TYPE_153"


def test_a_result_is_recorded_once_when_it_ends_unless_it_outgrows_one_run() -> None:
    obs, rec = observer()  # record_rows = 3
    ex = Exchange(Command.COM_QUERY)
    obs.query_started(ex, b"SELECT v FROM t")
    obs.result_described(ex, (col("v", T.MYSQL_TYPE_LONG),), binary=False)
    first = framed_rows([build_text_row([b"1"])])
    obs.rows(ex, first, 0, len(first), 1)
    assert rec.calls == []  # numbered, held: nothing recorded while it runs
    second = framed_rows([build_text_row([b"2"]), build_text_row([b"3"])], seq=4)
    obs.rows(ex, second, 0, len(second), 2)
    # A second run registers the result: statement, columns and the held run, then the run.
    assert [k for k, _ in rec.calls] == ["statement", "meta", "rows", "rows"]
    assert rec.of("statement")[0]["stmt"] == 1
    assert [(n, count) for n, _, _, count in rec.of("rows")] == [(1, 1), (1, 2)]
    ex.rows = 3
    obs.result_finished(ex, ok=OkPacket(header=0xFE))
    assert "executed" not in [k for k, _ in rec.calls]
    ((n, done),) = rec.of("complete")
    assert n == 1 and done["rows"] == 3 and done["rows_recorded"] == 3


def test_results_still_running_are_registered_by_the_running_hook() -> None:
    obs, rec = observer()
    running = Exchange(Command.COM_QUERY)
    obs.query_started(running, b"SELECT SLEEP(10)")
    obs.result_described(running, (col("s", T.MYSQL_TYPE_LONGLONG),), binary=False)
    done = Exchange(Command.COM_QUERY)
    obs.query_started(done, b"DO 1")
    obs.result_finished(done, ok=OkPacket())
    assert rec.of("executed") == [2]
    obs.unfinished = lambda: [running]
    rec.running()  # what a writer tick, a control event or the end calls first
    ((s, meta),) = [(s, m) for s, m in zip(rec.of("statement")[1:], rec.of("meta"), strict=True)]
    assert s["text"] == "SELECT SLEEP(10)" and s["stmt"] == 1 and meta[0] == 1
    rec.running()  # registered once
    assert len(rec.of("statement")) == 2
    obs.result_finished(running, ok=OkPacket(header=0xFE))
    assert rec.of("executed") == [2]  # completed as a registered statement
    assert [n for n, _ in rec.of("complete")] == [2, 1]
