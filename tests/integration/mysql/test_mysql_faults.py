"""Bad input and faults on the MySQL side: the gateway answers with the protocol's
own ERR where one exists and closes that one connection, and keeps serving
everyone else."""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from gateway.embedded.mariadb import MariaDBServer
from protocols.mysql.constants import Command
from protocols.mysql.framing import build_packets
from protocols.mysql.handshake import HandshakeResponse41, build_handshake_response41

from .conftest import MyGateway, StartMyGateway
from .mywire import CLIENT_CAPS, Wire

pytestmark = pytest.mark.integration


@pytest.fixture
def healthy(mysql_gateway: MyGateway) -> Iterator[None]:
    """After each fault, a normal client must still be served."""
    yield
    assert mysql_gateway.alive()
    with pymysql.connect(**mysql_gateway.pymysql_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 'still serving'")
        assert cur.fetchone() == ("still serving",)


def logged_in(gw: MyGateway, **kw: Any) -> Wire:
    w = Wire(gw.host, gw.port)
    w.login(gw.token(), **kw)
    return w


# -- login phase -------------------------------------------------------------------------


def test_greeting_mirrors_the_target(mysql_gateway: MyGateway, healthy: None) -> None:
    w = Wire(mysql_gateway.host, mysql_gateway.port)
    hs = w.read_greeting()
    w.close()
    assert b"MariaDB" in hs.server_version
    assert hs.auth_plugin_name == b"caching_sha2_password"
    assert hs.connection_id >= 1 << 30  # gateway-assigned
    from protocols.mysql.constants import Capability as C

    for flag in (C.CLIENT_SSL, C.CLIENT_PROTOCOL_41, C.CLIENT_PLUGIN_AUTH, C.CLIENT_DEPRECATE_EOF):
        assert hs.capabilities & flag
    for flag in (
        C.CLIENT_COMPRESS,
        C.CLIENT_QUERY_ATTRIBUTES,
        C.CLIENT_OPTIONAL_RESULTSET_METADATA,
        C.MARIADB_CLIENT_CACHE_METADATA,
        C.MARIADB_CLIENT_STMT_BULK_OPERATIONS,
    ):
        assert not hs.capabilities & flag


def test_clienthello_in_the_same_segment_as_sslrequest(
    mysql_gateway: MyGateway, healthy: None
) -> None:
    w = logged_in(mysql_gateway, pipelined=True)
    w.query("SELECT 42")
    packets = w.response_packets()
    assert packets[3][1] == b"\x0242"  # column count, column def, EOF, row
    w.close()


def test_garbage_instead_of_login(mysql_gateway: MyGateway, healthy: None) -> None:
    w = Wire(mysql_gateway.host, mysql_gateway.port)
    w.read_greeting()
    w.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # header: length 0x544547, seq 0x20
    _seq, err = w.error()
    assert err.errno in (1043, 1153, 1156)
    assert w.closed()
    w.close()


@pytest.mark.parametrize("seq", [0, 2, 200])
def test_wrong_sequence_id_at_login(mysql_gateway: MyGateway, healthy: None, seq: int) -> None:
    w = Wire(mysql_gateway.host, mysql_gateway.port)
    w.read_greeting()
    response = HandshakeResponse41(CLIENT_CAPS, 1 << 24, 45, b"alice", b"", b"app", b"x")
    w.send(build_packets(build_handshake_response41(response), seq)[0])
    _, err = w.error()
    assert err.errno == 1156  # ER_NET_PACKETS_OUT_OF_ORDER
    assert w.closed()
    w.close()


def test_oversized_login_packet(mysql_gateway: MyGateway, healthy: None) -> None:
    w = Wire(mysql_gateway.host, mysql_gateway.port)
    w.read_greeting()
    w.send(b"\xff\xff\xff\x01" + b"x" * 100)  # claims 16 MiB
    _, err = w.error()
    assert err.errno == 1153
    assert w.closed()
    w.close()


@pytest.mark.parametrize("cut", [3, 10, 40])
def test_truncated_login_then_disconnect(mysql_gateway: MyGateway, healthy: None, cut: int) -> None:
    w = Wire(mysql_gateway.host, mysql_gateway.port)
    w.read_greeting()
    response = HandshakeResponse41(CLIENT_CAPS, 1 << 24, 45, b"alice", b"", b"app", b"x")
    w.send(build_packets(build_handshake_response41(response), 1)[0][:cut])
    w.close()


def test_handshake_response_lies_about_fields(mysql_gateway: MyGateway, healthy: None) -> None:
    w = Wire(mysql_gateway.host, mysql_gateway.port)
    w.read_greeting()
    # A correct frame around a payload whose auth-response length points past the end.
    payload = (
        struct.pack("<IIB", CLIENT_CAPS, 1 << 24, 45) + b"\x00" * 23 + b"alice\x00\xfc\xff\xff"
    )
    w.send(build_packets(payload, 1)[0])
    _, err = w.error()
    assert err.errno == 1043
    assert w.closed()
    w.close()


def test_plaintext_login_is_refused(mysql_gateway: MyGateway, healthy: None) -> None:
    w = Wire(mysql_gateway.host, mysql_gateway.port)
    w.read_greeting()
    w.handshake_response(seq=1)
    seq, err = w.error()
    assert (seq, err.errno, err.sqlstate) == (2, 1045, "28000")
    assert "TLS" in err.text
    assert w.closed()
    w.close()


def test_rsa_key_request_is_refused(start_mysql_gateway: StartMyGateway) -> None:
    """Even with plaintext allowed, caching_sha2's RSA path cannot carry a JWT."""
    gw = start_mysql_gateway(extra="[tls]\nallow_plaintext = true\n")
    w = Wire(gw.host, gw.port)
    w.read_greeting()
    w.handshake_response(seq=1)
    seq, payload = w.packet()
    assert (seq, payload) == (2, b"\x01\x04")
    w.send(build_packets(b"\x02", 3)[0])  # request the server's public key
    _, err = w.error()
    assert err.errno == 1045 and "requires TLS" in err.text
    w.close()
    # mysql_clear_password works there (an operator's explicit choice).
    w = Wire(gw.host, gw.port)
    w.read_greeting()
    token = gw.token()
    response = HandshakeResponse41(
        CLIENT_CAPS,
        1 << 24,
        45,
        b"alice@example.com",
        token.encode() + b"\x00",
        b"app",
        b"mysql_clear_password",
    )
    w.send(build_packets(build_handshake_response41(response), 1)[0])
    seq, payload = w.packet()
    assert payload[:1] == b"\x00" and seq == 2
    w.close()


# -- command phase --------------------------------------------------------------------------


def test_wrong_sequence_id_on_a_command(mysql_gateway: MyGateway, healthy: None) -> None:
    w = logged_in(mysql_gateway)
    w.command(bytes((Command.COM_QUERY,)) + b"SELECT 1", seq=3)
    _, err = w.error()
    assert err.errno == 1156
    assert w.closed()
    w.close()


def test_oversized_command(mysql_gateway: MyGateway, healthy: None) -> None:
    w = logged_in(mysql_gateway)
    # A chain of 0xFFFFFF packets announcing more than max_message_size (64 MiB):
    # refused from the headers, before the body is buffered.
    w.send(b"\xff\xff\xff\x00" + b"\x03" + b"x" * 1000)
    w.sock.settimeout(20)
    chunk = b"y" * (1 << 20)
    try:
        for i in range(70):
            w.send(chunk)
            if i == 16:
                w.send(b"\xff\xff\xff\x01")  # the next physical header, continuing
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert w.closed(10)
    w.close()


def test_empty_and_unknown_commands(mysql_gateway: MyGateway, healthy: None) -> None:
    w = logged_in(mysql_gateway)
    w.command(b"\x60")  # not a command byte
    seq, err = w.error()
    assert (seq, err.errno) == (1, 1047)
    w.command(bytes((Command.COM_BINLOG_DUMP,)) + b"\x00" * 10)
    seq, err = w.error()
    assert (seq, err.errno) == (1, 1148)
    w.query("SELECT 'usable'")
    assert w.response_packets()[3][1] == b"\x06usable"
    w.command(b"")  # an empty packet is not a command: protocol error, closed
    _, err = w.error()
    assert err.errno == 1835
    assert w.closed()
    w.close()


def test_pipelined_commands_answered_in_order(mysql_gateway: MyGateway, healthy: None) -> None:
    w = logged_in(mysql_gateway)
    w.send(
        build_packets(bytes((Command.COM_QUERY,)) + b"SELECT SLEEP(0.3), 1", 0)[0]
        + build_packets(b"\x60", 0)[0]  # refused: its ERR must come after the first reply
        + build_packets(bytes((Command.COM_QUERY,)) + b"SELECT 2", 0)[0]
    )
    first = w.response_packets()
    assert first[-2][1] == b"\x010\x011"
    seq, err = w.error()
    assert (seq, err.errno) == (1, 1047)
    third = w.response_packets()
    assert third[3][1] == b"\x012"
    w.close()


def test_set_option_and_cursor_fetch(mysql_gateway: MyGateway, healthy: None) -> None:
    w = logged_in(mysql_gateway)
    w.command(bytes((Command.COM_SET_OPTION,)) + b"\x01\x00")  # multi-statements off
    seq, payload = w.packet()
    assert seq == 1 and payload[:1] == b"\xfe"  # COM_SET_OPTION answers with EOF
    w.command(bytes((Command.COM_STMT_PREPARE,)) + b"SELECT id FROM customers ORDER BY id")
    seq, ok = w.packet()
    assert ok[:1] == b"\x00"
    stmt_id = ok[1:5]
    w.packet()  # column definition
    w.packet()  # EOF
    # COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY: metadata now, rows by COM_STMT_FETCH.
    w.command(bytes((Command.COM_STMT_EXECUTE,)) + stmt_id + b"\x01" + b"\x01\x00\x00\x00")
    assert w.packet()[1] == b"\x01"
    w.packet()
    _, eof = w.packet()
    assert eof[:1] == b"\xfe" and struct.unpack("<H", eof[3:5])[0] & 0x40  # CURSOR_EXISTS
    fetched = []
    for _ in range(3):
        w.command(bytes((Command.COM_STMT_FETCH,)) + stmt_id + struct.pack("<I", 4))
        while True:
            _, row = w.packet()
            if row[:1] == b"\xfe":
                break
            fetched.append(struct.unpack("<i", row[2:6])[0])
    assert fetched == list(range(1, 13))
    w.command(bytes((Command.COM_STMT_CLOSE,)) + stmt_id)  # no reply
    w.query("SELECT 'after cursor'")
    assert w.response_packets()[3][1] == b"\x0cafter cursor"
    w.close()


def test_client_vanishes_mid_result(
    mysql_gateway: MyGateway, healthy: None, direct_kwargs: dict[str, Any]
) -> None:
    w = logged_in(mysql_gateway)
    w.query("SELECT e1.id FROM events e1, events e2 /* vanish-marker */")
    w.packet()
    w.sock.close()

    def running() -> int:
        with pymysql.connect(**direct_kwargs) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE INFO LIKE '%vanish-marker%' AND INFO NOT LIKE '%PROCESSLIST%'"
            )
            return int(cur.fetchone()[0])

    deadline = time.monotonic() + 15
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running() == 0  # the gateway killed the query and closed upstream


def test_upstream_killed_ends_the_session(mysql_gateway: MyGateway, healthy: None) -> None:
    """The upstream connection dying (KILL CONNECTION from another session) ends the
    client session; the gateway goes on."""
    victim = pymysql.connect(**mysql_gateway.pymysql_kwargs())
    try:
        with victim.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            (upstream_id,) = cur.fetchone()
        with pymysql.connect(**mysql_gateway.pymysql_kwargs()) as killer, killer.cursor() as cur:
            cur.execute(f"KILL CONNECTION {upstream_id}")  # the upstream id is mapped too
        with pytest.raises(pymysql.err.MySQLError) as info, victim.cursor() as cur:
            cur.execute("SELECT 1")
        # The server's own goodbye for an idle session (1927) reaches the client.
        assert info.value.args[0] in (1927, 2013), info.value
    finally:
        with contextlib.suppress(pymysql.err.Error):
            victim.close()


def test_deprecate_eof_session_track_and_field_list(
    mysql_gateway: MyGateway, healthy: None
) -> None:
    from protocols.mysql.constants import Capability as C
    from protocols.mysql.packets import parse_ok_packet

    caps = int(C.CLIENT_DEPRECATE_EOF | C.CLIENT_SESSION_TRACK)
    w = Wire(mysql_gateway.host, mysql_gateway.port)
    w.login(mysql_gateway.token(), extra_caps=caps)
    w.query("USE information_schema")
    _, payload = w.packet()
    ok = parse_ok_packet(payload, w.caps)
    assert ok.tracked_schema() == b"information_schema"
    w.query("SELECT 7")
    _, _, row, end = (w.packet()[1] for _ in range(4))  # no EOF after the columns
    assert row == b"\x017" and end[:1] == b"\xfe"
    assert parse_ok_packet(end, w.caps).header == 0xFE
    w.command(bytes((Command.COM_INIT_DB,)) + b"app")
    assert w.packet()[1][:1] == b"\x00"
    w.command(bytes((Command.COM_FIELD_LIST,)) + b"customers\x00")
    names = []
    while True:
        _, payload = w.packet()
        if payload[:1] == b"\xfe":
            break
        names.append(payload)
    assert any(b"email" in n for n in names)
    w.query("SELECT 'after field list'")
    assert w.packet()[1] == b"\x01"
    w.close()


def test_session_ends_when_the_token_expires(mysql_gateway: MyGateway) -> None:
    w = Wire(mysql_gateway.host, mysql_gateway.port)
    w.login(mysql_gateway.token(ttl=2))
    time.sleep(3)
    seq, err = w.error()  # sent when the token expired, read now
    assert (seq, err.errno) == (1, 1927)
    assert "expired" in err.text
    assert w.closed()
    w.close()


def test_slow_client_pauses_upstream_memory_stays_bounded(
    start_mysql_gateway: StartMyGateway,
) -> None:
    import psutil

    gw = start_mysql_gateway()
    proc = psutil.Process(gw.process.proc.pid)
    w = logged_in(gw)
    before = proc.memory_info().rss
    # About 1 GB of rows; the client reads one packet and then stops reading.
    w.query("SELECT seq, REPEAT('x', 2000) FROM seq_1_to_500000")
    w.packet()
    time.sleep(3)
    grown = proc.memory_info().rss - before
    w.sock.close()
    # Socket buffers aside, nothing piles up in the gateway: the upstream leg is paused
    # while the client leg's transport is above its high-water mark.
    assert grown < 48 * 1024 * 1024, f"gateway RSS grew by {grown / 1e6:.1f} MB"
    assert gw.alive()


def test_database_restart(mysql_gateway: MyGateway, mariadb_server: MariaDBServer) -> None:
    """Sessions open across a server restart end with an error; new ones work at once."""
    idle = pymysql.connect(**mysql_gateway.pymysql_kwargs())
    try:
        mariadb_server.restart()
        with pytest.raises(pymysql.err.MySQLError) as info, idle.cursor() as cur:
            cur.execute("SELECT 1")
        assert info.value.args[0] in (1053, 2006, 2013), info.value
    finally:
        with contextlib.suppress(pymysql.err.Error):
            idle.close()
    with pymysql.connect(**mysql_gateway.pymysql_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM customers")
        assert cur.fetchone()[0] > 0
    assert mysql_gateway.alive()


def test_send_long_data_and_stmt_reset(mysql_gateway: MyGateway, healthy: None) -> None:
    from protocols.mysql.constants import ColumnType
    from protocols.mysql.resultset import (
        StmtExecute,
        build_com_stmt_execute,
        parse_binary_row,
        parse_column_definition41,
    )

    w = logged_in(mysql_gateway)
    w.command(bytes((Command.COM_STMT_PREPARE,)) + b"SELECT LENGTH(?), ?")
    _, ok = w.packet()
    stmt_id = ok[1:5]
    assert struct.unpack("<HH", ok[5:9]) == (2, 2)  # columns, params
    for _ in range(6):  # 2 parameter defs + EOF, 2 column defs + EOF
        w.packet()
    for chunk in (b"a" * 100_000, b"b" * 50_000):  # no reply to COM_STMT_SEND_LONG_DATA
        w.command(bytes((Command.COM_STMT_SEND_LONG_DATA,)) + stmt_id + b"\x00\x00" + chunk)
    execute = StmtExecute(
        int.from_bytes(stmt_id, "little"),
        0,
        1,
        True,
        ((ColumnType.MYSQL_TYPE_BLOB, False), (ColumnType.MYSQL_TYPE_VAR_STRING, False)),
        (b"", b"x"),
        frozenset({0}),
    )
    w.command(build_com_stmt_execute(execute))
    packets = [w.packet()[1] for _ in range(5)]  # count, 2 defs, EOF, row
    types = [parse_column_definition41(p).type for p in packets[1:3]]
    length, value = parse_binary_row(packets[4], types)
    assert length is not None and int.from_bytes(length, "little") == 150_000
    assert value == b"x"
    assert w.packet()[1][:1] == b"\xfe"
    w.command(bytes((Command.COM_STMT_RESET,)) + stmt_id)
    assert w.packet()[1][:1] == b"\x00"
    w.command(bytes((Command.COM_QUIT,)))
    w.close()
    # The recording names the long-data parameter by its size.
    from gateway.recording.reader import RecordingFormatError, RecordingReader
    from gateway.recording.schema import Stmt

    deadline = time.monotonic() + 10
    found: list[object] = []
    while not found and time.monotonic() < deadline:
        for path in mysql_gateway.session_dir.glob("*.gwrec"):
            # A session's file just created has no header yet, or a frame being written:
            # look again on the next pass.
            with contextlib.suppress(RecordingFormatError), RecordingReader(path) as reader:
                found += [
                    f.params
                    for _, f in reader.logical_frames()
                    if isinstance(f, Stmt) and f.text == "SELECT LENGTH(?), ?"
                ]
        time.sleep(0.2)
    assert found == [["<long data: 150000 bytes>", "x"]]
