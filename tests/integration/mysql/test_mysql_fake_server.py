"""The gateway in front of a scripted, misbehaving MySQL server: behaviour no real
server shows on request.

* A server that asks for a client file the client's statement never named
  (PROTOCOLS.md 3.7): the gateway must not relay the request; it answers with an
  empty file itself and fails the client's command.
* A server that breaks the protocol mid-session: that session ends, others go on.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pymysql
import pytest

from protocols.mysql.auth import scramble_native_password
from protocols.mysql.constants import Capability as C
from protocols.mysql.constants import ColumnType
from protocols.mysql.framing import build_packets
from protocols.mysql.handshake import HandshakeV10, build_handshake_v10
from protocols.mysql.packets import OkPacket, build_eof_packet, build_ok_packet
from protocols.mysql.resultset import (
    ColumnDefinition41,
    build_column_count,
    build_column_definition41,
    build_text_row,
)

from .conftest import MyGateway, StartMyGateway

pytestmark = pytest.mark.integration

PASSWORD = "fake-upstream-password"
SCRAMBLE = b"0123456789abcdefghij"
CAPS = int(
    C.CLIENT_LONG_PASSWORD
    | C.CLIENT_LONG_FLAG
    | C.CLIENT_PROTOCOL_41
    | C.CLIENT_SECURE_CONNECTION
    | C.CLIENT_PLUGIN_AUTH
    | C.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | C.CLIENT_TRANSACTIONS
    | C.CLIENT_CONNECT_WITH_DB
    | C.CLIENT_CONNECT_ATTRS
    | C.CLIENT_LOCAL_FILES
    | C.CLIENT_MULTI_RESULTS
    | C.CLIENT_MULTI_STATEMENTS
)


class FakeServer:
    """Speaks just enough MySQL: greeting, native-password login, then answers
    every COM_QUERY according to its text."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.file_requests: list[bytes] = []  # what came back after our 0xFB
        self.seen: list[bytes] = []
        self.sql_mode = b"STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    @staticmethod
    def _read(sock: socket.socket) -> tuple[int, bytes]:
        def exactly(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = sock.recv(n - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return data

        header = exactly(4)
        return header[3], exactly(int.from_bytes(header[:3], "little"))

    @staticmethod
    def _send_sql_mode(sock: socket.socket, sql_mode: bytes) -> None:
        var_string = int(ColumnType.MYSQL_TYPE_VAR_STRING)
        column = ColumnDefinition41(b"", b"", b"", b"@@SESSION.sql_mode", b"", 33, 1024, var_string)
        packets = [
            build_column_count(1),
            build_column_definition41(column),
            build_eof_packet(),
            build_text_row([sql_mode]),
            build_eof_packet(),
        ]
        sock.sendall(b"".join(build_packets(p, i + 1)[0] for i, p in enumerate(packets)))

    def _serve(self, sock: socket.socket) -> None:
        ok = build_ok_packet(OkPacket(status_flags=2), CAPS)
        try:
            hs = HandshakeV10(
                b"5.5.5-10.11.0-MariaDB-fake", 42, SCRAMBLE, CAPS, 45, 2, b"mysql_native_password"
            )
            sock.sendall(build_packets(build_handshake_v10(hs), 0)[0])
            try:
                seq, _ = self._read(sock)
            except (EOFError, ConnectionError):
                return  # the gateway's probe
            sock.sendall(build_packets(ok, seq + 1)[0])
            while True:
                _, command = self._read(sock)
                self.seen.append(command)
                if command[:1] == b"\x01":
                    return
                text = command[1:]
                if text == b"SELECT @@SESSION.sql_mode":
                    # The gateway reads the session's sql_mode after every login.
                    self._send_sql_mode(sock, self.sql_mode)
                elif b"GIVE ME YOUR FILES" in text:
                    # Unsolicited LOCAL INFILE request.
                    sock.sendall(build_packets(b"\xfb/etc/passwd", 1)[0])
                    seq, data = self._read(sock)
                    self.file_requests.append(data)
                    while data:
                        seq, data = self._read(sock)
                        self.file_requests.append(data)
                    sock.sendall(build_packets(ok, seq + 1)[0])
                elif b"BREAK" in text:
                    sock.sendall(build_packets(b"\xfe\x00", 1)[0])  # EOF as a response
                else:
                    sock.sendall(build_packets(ok, 1)[0])
        except (EOFError, ConnectionError, OSError):
            return
        finally:
            sock.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gw(start_mysql_gateway: StartMyGateway, fake: FakeServer) -> MyGateway:
    return start_mysql_gateway(
        host="127.0.0.1", upstream_port=fake.port, upstream_tls="disable", password=PASSWORD
    )


def test_login_through_the_scripted_server(gw: MyGateway, fake: FakeServer) -> None:
    assert scramble_native_password(PASSWORD.encode(), SCRAMBLE)  # what the server expects
    with pymysql.connect(**gw.pymysql_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("DO 1")


def test_unsolicited_local_infile_request_is_not_relayed(gw: MyGateway, fake: FakeServer) -> None:
    with pymysql.connect(**gw.pymysql_kwargs(), local_infile=True) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("SELECT 'GIVE ME YOUR FILES'")
        assert info.value.args[0] == 1148
        # The gateway answered the server with an empty file; the client was never asked.
        assert fake.file_requests == [b""]
        cur.execute("DO 2")  # the session goes on
    assert "unsolicited LOCAL INFILE request refused" in gw.log_text()


def test_protocol_violation_by_the_server_ends_that_session(
    gw: MyGateway, fake: FakeServer
) -> None:
    conn = pymysql.connect(**gw.pymysql_kwargs())
    try:
        with pytest.raises(pymysql.err.MySQLError), conn.cursor() as cur:
            cur.execute("SELECT 'BREAK'")
    finally:
        with contextlib.suppress(pymysql.err.Error):
            conn.close()
    assert "upstream protocol violation" in gw.log_text()
    with pymysql.connect(**gw.pymysql_kwargs()) as other, other.cursor() as cur:
        cur.execute("DO 3")


@pytest.mark.parametrize("mode", [b"ANSI_QUOTES", b"STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES"])
def test_target_sql_mode_the_policy_cannot_read_refuses_logins(
    gw: MyGateway, fake: FakeServer, mode: bytes
) -> None:
    """A server whose default sql_mode changes how statement text is read (quotes as
    identifiers, backslashes as plain characters): sessions are refused, fail closed."""
    fake.sql_mode = mode
    try:
        with pytest.raises(pymysql.err.MySQLError) as info:
            pymysql.connect(**gw.pymysql_kwargs())
        assert info.value.args[0] == 1235
        assert "sql_mode" in info.value.args[1]
    finally:
        fake.sql_mode = b"STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION"
    with pymysql.connect(**gw.pymysql_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("DO 1")
