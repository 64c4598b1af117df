"""Command parsing, the statement registry, and ResponseTracker scenarios that the captured
transcripts do not cover (LOCAL INFILE, pipelining, progress reports, prepare layouts...)."""

from __future__ import annotations

import contextlib
import struct

import pytest

from protocols.errors import PeerViolation, UsageError
from protocols.mysql.commands import (
    ChangeUser,
    FieldList,
    InitDb,
    ProcessKill,
    Query,
    RawCommand,
    Refresh,
    SetOption,
    SimpleCommand,
    StatementRegistry,
    StmtClose,
    StmtExecuteHeader,
    StmtFetch,
    StmtPrepare,
    StmtReset,
    StmtSendLongData,
    build_com_change_user,
    parse_com_change_user,
    parse_command,
)
from protocols.mysql.constants import (
    REFUSED_COMMANDS,
    Capability,
    Command,
    ServerStatus,
)
from protocols.mysql.constants import ColumnType as T
from protocols.mysql.packets import (
    OkPacket,
    ProgressReport,
    build_eof_packet,
    build_err_packet,
    build_lenenc_string,
    build_local_infile_request,
    build_ok_packet,
    build_progress_report,
    build_terminator,
)
from protocols.mysql.resultset import (
    ColumnDefinition41,
    StmtExecute,
    StmtPrepareOk,
    build_column_count,
    build_column_definition41,
    build_com_stmt_execute,
    build_stmt_prepare_ok,
)
from protocols.mysql.tracker import (
    AuthExchange,
    ErrorReceived,
    LocalInfileRequested,
    OkReceived,
    ProgressReported,
    ResponseComplete,
    ResponseEvent,
    ResponseTracker,
    ResultSetEnded,
    ResultSetStarted,
    RowsReceived,
    StatementPrepared,
)

C = Capability
CLASSIC = C.CLIENT_PROTOCOL_41 | C.CLIENT_TRANSACTIONS | C.CLIENT_SECURE_CONNECTION
DEPRECATE = CLASSIC | C.CLIENT_DEPRECATE_EOF
MORE = ServerStatus.MORE_RESULTS_EXISTS | ServerStatus.AUTOCOMMIT
COL = ColumnDefinition41(b"db", b"t", b"t", b"c", b"c", 45, 10, T.MYSQL_TYPE_VAR_STRING)


def coldef(caps: int = 0) -> bytes:
    return build_column_definition41(COL, caps)


def ok(status: int = ServerStatus.AUTOCOMMIT, caps: int = CLASSIC, affected: int = 0) -> bytes:
    return build_ok_packet(OkPacket(affected, 0, status), caps)


def terminator(caps: int, status: int = ServerStatus.AUTOCOMMIT) -> bytes:
    return build_terminator(OkPacket(status_flags=status), caps)


def feed(tracker: ResponseTracker, *packets: bytes) -> list[ResponseEvent]:
    events: list[ResponseEvent] = []
    for p in packets:
        events += tracker.receive(p)
    return events


def kinds(events: list[ResponseEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


# -- parse_command -------------------------------------------------------------------------------


def test_parse_commands() -> None:
    assert parse_command(b"\x03SELECT 1") == Query(b"SELECT 1")
    assert parse_command(b"\x02test") == InitDb(b"test")
    assert parse_command(b"\x04t\x00%") == FieldList(b"t", b"%")
    assert parse_command(b"\x0c" + struct.pack("<I", 77)) == ProcessKill(77)
    assert parse_command(b"\x1b\x01\x00") == SetOption(1)
    assert parse_command(b"\x07\x01") == Refresh(1)
    assert parse_command(b"\x16SELECT ?") == StmtPrepare(b"SELECT ?")
    assert parse_command(b"\x19\x05\x00\x00\x00") == StmtClose(5)
    assert parse_command(b"\x1a\x05\x00\x00\x00") == StmtReset(5)
    assert parse_command(b"\x1c\x05\x00\x00\x00\x0a\x00\x00\x00") == StmtFetch(5, 10)
    assert parse_command(b"\x18\x05\x00\x00\x00\x02\x00data") == StmtSendLongData(5, 2, b"data")
    head = parse_command(b"\x17\x05\x00\x00\x00\x01\x01\x00\x00\x00")
    assert head == StmtExecuteHeader(5, 1, 1) and isinstance(head, StmtExecuteHeader)
    assert head.opens_cursor
    for cmd in (
        Command.COM_QUIT,
        Command.COM_PING,
        Command.COM_STATISTICS,
        Command.COM_RESET_CONNECTION,
    ):
        assert parse_command(bytes((cmd,))) == SimpleCommand(cmd)
    dump = parse_command(b"\x12\x04\x00\x00\x00\x00\x00\x01\x00\x00\x00")
    assert isinstance(dump, RawCommand) and dump.command in REFUSED_COMMANDS
    assert parse_command(b"\x03SELECT 1").command == Command.COM_QUERY


@pytest.mark.parametrize("cmd", [0x21, 0x80, 0xF9, 0xFF])
def test_unknown_command_is_1047(cmd: int) -> None:
    with pytest.raises(PeerViolation) as exc:
        parse_command(bytes((cmd,)) + b"xx")
    assert exc.value.code == 1047


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x19\x05\x00\x00", b"\x0c\x01", b"\x1b\x00", b"\x1c\x01\x00\x00\x00", b"\x18\x01\x00"],
)
def test_malformed_commands(bad: bytes) -> None:
    with pytest.raises(PeerViolation):
        parse_command(bad)


def test_query_attributes_not_supported() -> None:
    with pytest.raises(UsageError):
        parse_command(b"\x03SELECT 1", C.CLIENT_QUERY_ATTRIBUTES)


def test_change_user_round_trip() -> None:
    caps = CLASSIC | C.CLIENT_PLUGIN_AUTH | C.CLIENT_CONNECT_ATTRS
    cmd = ChangeUser(b"bob", b"x" * 20, b"db", 45, b"mysql_native_password", ((b"_pid", b"9"),))
    data = build_com_change_user(cmd, caps)
    assert parse_command(data, caps) == cmd
    # captured from MariaDB Connector-style client (see transcripts)
    captured = bytes.fromhex(
        "11726f6f74000074657374002d006d7973716c5f6e61746976655f70617373776f726400"
    )
    got = parse_com_change_user(captured, CLASSIC | C.CLIENT_PLUGIN_AUTH)
    assert got == ChangeUser(b"root", b"", b"test", 45, b"mysql_native_password")
    # minimal form: no charset, no plugin
    assert parse_com_change_user(b"\x11u\x00\x00\x00", CLASSIC) == ChangeUser(b"u", b"", b"")
    for n in range(1, len(data)):  # truncations: PeerViolation or a shorter valid form only
        with contextlib.suppress(PeerViolation):
            parse_com_change_user(data[:n], caps)
    with pytest.raises(PeerViolation):
        parse_com_change_user(b"\x11u\x00\x10abc", CLASSIC)  # auth length lies


# -- statement registry --------------------------------------------------------------------------


def test_registry_remembers_types_and_long_data() -> None:
    reg = StatementRegistry()
    stmt = reg.add(b"SELECT ?, ?", StmtPrepareOk(7, 2, 2))
    types = ((T.MYSQL_TYPE_LONGLONG, False), (T.MYSQL_TYPE_BLOB, False))
    first = build_com_stmt_execute(
        StmtExecute(7, 0, 1, True, types, (b"\x01" + b"\x00" * 7, b"abc"))
    )
    parsed = reg.execute(first)
    assert parsed is not None and parsed[0] is stmt and stmt.param_types == types
    assert reg.execute(first, 7) == parsed  # the header already read by the caller
    # second execute: types not resent, param 1 sent as long data
    reg.send_long_data(StmtSendLongData(7, 1, b"chunk1"))
    reg.send_long_data(StmtSendLongData(7, 1, b"chunk2"))
    assert stmt.long_data == {1: 12}
    second = build_com_stmt_execute(StmtExecute(7, 0, 1, False, types, (None, b""), frozenset({1})))
    parsed = reg.execute(second)
    assert parsed is not None
    assert parsed[1].values == (None, b"") and parsed[1].long_data == {1}
    assert stmt.long_data == {}  # consumed by the execute
    reg.send_long_data(StmtSendLongData(7, 0, b"x"))
    reg.reset(7)
    assert stmt.long_data == {}
    # MariaDB "last prepared statement" id
    assert reg.get(0xFFFFFFFF) is stmt
    reg.close(7)
    assert reg.execute(first) is None and len(reg) == 0
    reg.add(None, StmtPrepareOk(8, 0, 0))
    reg.clear()
    assert reg.get(8) is None


# -- tracker: text protocol ----------------------------------------------------------------------


@pytest.mark.parametrize("caps", [CLASSIC, DEPRECATE], ids=["classic", "deprecate_eof"])
def test_result_set_then_ok_chain(caps: int) -> None:
    t = ResponseTracker(caps)
    assert t.start(Command.COM_QUERY)
    packets = [build_column_count(1), coldef()]
    if not caps & C.CLIENT_DEPRECATE_EOF:
        packets.append(build_eof_packet(0, ServerStatus.AUTOCOMMIT))
    events = feed(t, *packets)
    assert kinds(events) == ["ResultSetStarted"] and t.in_rows
    t.rows(1000)
    events = feed(t, build_lenenc_string(b"x"), terminator(caps, MORE))
    assert isinstance(events[0], RowsReceived)
    assert isinstance(events[1], ResultSetEnded) and events[1].rows == 1001
    assert not t.in_rows and t.busy
    events = feed(t, ok(MORE, caps, affected=3), ok(caps=caps, affected=2))
    assert kinds(events) == ["OkReceived", "OkReceived", "ResponseComplete"]
    assert isinstance(events[0], OkReceived) and events[0].ok.affected_rows == 3
    assert t.complete and t.last_status == ServerStatus.AUTOCOMMIT


def test_repeated_result_descriptions_give_each_result_its_own_columns() -> None:
    # Column definitions are parsed once per distinct packet and reused (a prepared
    # statement's result is described again on every execution): each result still gets
    # exactly the columns its packets describe, in order.
    t = ResponseTracker(DEPRECATE)
    other = ColumnDefinition41(b"db", b"u", b"u", b"d", b"d", 63, 8, T.MYSQL_TYPE_LONGLONG)
    for cols in ([COL], [COL, other], [other, COL], [COL]):
        assert t.start(Command.COM_QUERY)
        packets = [build_column_count(len(cols))]
        packets += [build_column_definition41(c, DEPRECATE) for c in cols]
        events = feed(t, *packets)
        assert kinds(events) == ["ResultSetStarted"]
        started = events[0]
        assert isinstance(started, ResultSetStarted) and list(started.columns) == cols
        feed(t, terminator(DEPRECATE))
        assert t.complete


def test_err_mid_result_ends_response() -> None:
    t = ResponseTracker(DEPRECATE)
    t.start(Command.COM_QUERY)
    feed(t, build_column_count(1), coldef())
    events = feed(t, build_lenenc_string(b"1"), build_err_packet(1317, "70100", "interrupted"))
    assert kinds(events) == ["RowsReceived", "ErrorReceived", "ResponseComplete"]
    err = events[1]
    assert isinstance(err, ErrorReceived) and (err.errno, err.sqlstate) == (1317, "70100")
    assert err.message == b"interrupted"
    assert t.complete


def test_text_row_of_16mib_starting_with_0xfe_is_a_row() -> None:
    t = ResponseTracker(DEPRECATE)
    t.start(Command.COM_QUERY)
    feed(t, build_column_count(1), coldef())
    big_row = build_lenenc_string(b"z" * (1 << 24))
    assert big_row[0] == 0xFE
    assert kinds(feed(t, big_row)) == ["RowsReceived"]
    assert kinds(feed(t, terminator(DEPRECATE))) == ["ResultSetEnded", "ResponseComplete"]


def test_local_infile_only_when_flagged() -> None:
    t = ResponseTracker(CLASSIC | C.CLIENT_LOCAL_FILES)
    t.start(Command.COM_QUERY, local_infile=True)
    (req,) = feed(t, build_local_infile_request(b"/tmp/data.csv"))
    assert isinstance(req, LocalInfileRequested) and req.filename == b"/tmp/data.csv"
    assert t.awaiting_client
    with pytest.raises(PeerViolation):  # the server must wait for the file
        ResponseTracker(CLASSIC).receive(b"\x00")
    t.client_packet(b"a,b\n")
    t.client_packet(b"")  # end of file
    assert not t.awaiting_client
    assert kinds(feed(t, ok(affected=1))) == ["OkReceived", "ResponseComplete"]

    other = ResponseTracker(CLASSIC | C.CLIENT_LOCAL_FILES)
    other.start(Command.COM_QUERY)  # not a LOAD DATA LOCAL statement
    with pytest.raises(PeerViolation) as exc:
        other.receive(build_local_infile_request(b"/etc/passwd"))
    assert exc.value.code == 1148
    with pytest.raises(UsageError):
        other.start(Command.COM_STMT_EXECUTE, local_infile=True)
    no_cap = ResponseTracker(CLASSIC)  # CLIENT_LOCAL_FILES not negotiated
    no_cap.start(Command.COM_QUERY, local_infile=True)
    with pytest.raises(PeerViolation):
        no_cap.receive(build_local_infile_request(b"f"))


def test_server_packet_during_infile_is_violation() -> None:
    t = ResponseTracker(CLASSIC | C.CLIENT_LOCAL_FILES)
    t.start(Command.COM_QUERY, local_infile=True)
    feed(t, build_local_infile_request(b"f"))
    with pytest.raises(PeerViolation):
        t.receive(ok())


# -- tracker: prepared statements ----------------------------------------------------------------


@pytest.mark.parametrize("caps", [CLASSIC, DEPRECATE], ids=["classic", "deprecate_eof"])
@pytest.mark.parametrize(("params", "columns"), [(0, 0), (2, 0), (0, 3), (2, 3)])
def test_prepare_response_layouts(caps: int, params: int, columns: int) -> None:
    t = ResponseTracker(caps)
    t.start(Command.COM_STMT_PREPARE)
    packets = [build_stmt_prepare_ok(StmtPrepareOk(9, columns, params))]
    classic = not caps & C.CLIENT_DEPRECATE_EOF
    for n in (params, columns):
        packets += [coldef()] * n
        if n and classic:
            packets.append(build_eof_packet())
    events = feed(t, *packets)
    assert kinds(events) == ["StatementPrepared", "ResponseComplete"]
    prepared = events[0]
    assert isinstance(prepared, StatementPrepared)
    assert (len(prepared.params), len(prepared.columns)) == (params, columns)
    assert t.complete


def test_prepare_error() -> None:
    t = ResponseTracker(CLASSIC)
    t.start(Command.COM_STMT_PREPARE)
    assert kinds(feed(t, build_err_packet(1064, "42000", "syntax"))) == [
        "ErrorReceived",
        "ResponseComplete",
    ]


def test_execute_binary_and_fetch() -> None:
    t = ResponseTracker(DEPRECATE)
    t.start_packet(StmtExecuteHeader(9, 0, 1))
    events = feed(t, build_column_count(1), coldef())
    assert isinstance(events[0], ResultSetStarted) and events[0].binary
    feed(t, b"\x00\x00\x01x")
    t.start(Command.COM_STMT_FETCH)  # queued behind the running execute
    events = feed(t, terminator(DEPRECATE))
    assert kinds(events) == ["ResultSetEnded", "ResponseComplete"]
    assert t.busy and t.command == Command.COM_STMT_FETCH and t.in_rows
    events = feed(t, b"\x00\x00\x01y", terminator(DEPRECATE, ServerStatus.LAST_ROW_SENT))
    assert kinds(events) == ["RowsReceived", "ResultSetEnded", "ResponseComplete"]


def test_no_response_commands() -> None:
    t = ResponseTracker(CLASSIC)
    for cmd in (Command.COM_STMT_CLOSE, Command.COM_STMT_SEND_LONG_DATA, Command.COM_QUIT):
        assert not t.start(cmd)
        assert t.complete
    with pytest.raises(PeerViolation):
        t.receive(ok())


def test_pipelined_commands_are_answered_in_order() -> None:
    t = ResponseTracker(CLASSIC)
    t.start(Command.COM_PING)
    t.start(Command.COM_QUERY)
    t.start(Command.COM_INIT_DB)
    events = feed(t, ok(), build_err_packet(1146, "42S02", "no"), ok())
    assert [e.command for e in events if isinstance(e, ResponseComplete)] == [0x0E, 0x03, 0x02]
    assert t.complete


# -- tracker: other commands ---------------------------------------------------------------------


@pytest.mark.parametrize("caps", [CLASSIC, DEPRECATE])
def test_set_option_and_field_list(caps: int) -> None:
    t = ResponseTracker(caps)
    t.start(Command.COM_SET_OPTION)
    assert kinds(feed(t, terminator(caps))) == ["ResponseComplete"]
    t.start(Command.COM_FIELD_LIST)
    assert kinds(feed(t, coldef(), coldef(), terminator(caps))) == ["ResponseComplete"]


def test_statistics_is_a_plain_string() -> None:
    t = ResponseTracker(CLASSIC)
    t.start(Command.COM_STATISTICS)
    events = feed(t, b"Uptime: 5  Threads: 1")
    assert kinds(events) == ["StatisticsReceived", "ResponseComplete"]


def test_simple_command_rejects_result_set() -> None:
    t = ResponseTracker(CLASSIC)
    t.start(Command.COM_PING)
    with pytest.raises(PeerViolation):
        t.receive(build_column_count(1))


def test_change_user_auth_exchange() -> None:
    t = ResponseTracker(CLASSIC)
    t.start(Command.COM_CHANGE_USER)
    (ev,) = feed(t, b"\xfecaching_sha2_password\x00" + b"n" * 20 + b"\x00")
    assert isinstance(ev, AuthExchange) and t.awaiting_client
    t.client_packet(b"s" * 32)
    (more,) = feed(t, b"\x01\x04")
    assert isinstance(more, AuthExchange)
    t.client_packet(b"secret\x00")
    assert kinds(feed(t, ok())) == ["OkReceived", "ResponseComplete"]


def test_progress_reports_only_with_capability() -> None:
    report = build_progress_report(ProgressReport(1, 1, 50000, b"stage"))
    t = ResponseTracker(CLASSIC | C.MARIADB_CLIENT_PROGRESS)
    t.start(Command.COM_QUERY)
    (ev,) = feed(t, report)
    assert isinstance(ev, ProgressReported) and ev.report.progress == 50000
    assert kinds(feed(t, ok())) == ["OkReceived", "ResponseComplete"]
    plain = ResponseTracker(CLASSIC)
    plain.start(Command.COM_QUERY)
    assert kinds(feed(plain, report)) == ["ErrorReceived", "ResponseComplete"]


def test_cache_metadata_omitted_columns() -> None:
    caps = DEPRECATE | C.MARIADB_CLIENT_CACHE_METADATA
    t = ResponseTracker(caps)
    t.start(Command.COM_STMT_EXECUTE)
    (ev,) = feed(t, build_column_count(2, caps, metadata_follows=False))
    assert isinstance(ev, ResultSetStarted) and ev.columns is None and t.in_rows
    classic = ResponseTracker(CLASSIC | C.MARIADB_CLIENT_CACHE_METADATA)
    classic.start(Command.COM_STMT_EXECUTE)
    assert feed(classic, build_column_count(2, caps, metadata_follows=False)) == []
    (ev2,) = feed(classic, build_eof_packet())
    assert isinstance(ev2, ResultSetStarted) and ev2.columns is None


def test_garbage_in_response_is_malformed() -> None:
    t = ResponseTracker(CLASSIC)
    t.start(Command.COM_QUERY)
    for bad in (b"", b"\xfe\x00\x00\x02\x00", b"\xfc\x01"):
        with pytest.raises(PeerViolation):
            t.receive(bad)
    with pytest.raises(PeerViolation):
        t.client_packet(b"x")  # not waiting for the client
