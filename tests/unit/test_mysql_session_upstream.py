"""The gateway's upstream MySQL login against a scripted server (no MySQL 8 here).

The fake server speaks HandshakeV10 and then one of the authentication paths:
caching_sha2_password fast path (0x01 0x03), full authentication over TLS
(cleartext), full authentication without TLS (RSA public key request, OAEP),
MariaDB's switch to mysql_native_password, and a refusal (ERR 1045).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.embedded.certs import make_self_signed
from gateway.session.mysql_upstream import (
    LoginRequest,
    UpstreamError,
    change_user,
    connect_upstream,
    probe_target,
)
from gateway.session.target import UpstreamTarget
from protocols.mysql.auth import scramble_caching_sha2, scramble_native_password
from protocols.mysql.constants import Capability as C
from protocols.mysql.constants import ColumnType
from protocols.mysql.framing import build_packets
from protocols.mysql.handshake import (
    HandshakeResponse41,
    HandshakeV10,
    build_auth_switch_request,
    build_handshake_v10,
    is_ssl_request,
    parse_handshake_response41,
)
from protocols.mysql.packets import (
    OkPacket,
    build_eof_packet,
    build_err_packet,
    build_ok_packet,
    build_terminator,
)
from protocols.mysql.resultset import (
    ColumnDefinition41,
    build_column_count,
    build_column_definition41,
    build_text_row,
)

PASSWORD = b"s3cret-upstream"
SCRAMBLE = b"abcdefghijklmnopqrst"
SERVER_CAPS = int(
    C.CLIENT_LONG_PASSWORD
    | C.CLIENT_PROTOCOL_41
    | C.CLIENT_SECURE_CONNECTION
    | C.CLIENT_PLUGIN_AUTH
    | C.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | C.CLIENT_TRANSACTIONS
    | C.CLIENT_CONNECT_WITH_DB
    | C.CLIENT_CONNECT_ATTRS
    | C.CLIENT_SSL
    | C.CLIENT_DEPRECATE_EOF
)
REQUEST = LoginRequest(
    capabilities=int(
        C.CLIENT_PROTOCOL_41
        | C.CLIENT_SECURE_CONNECTION
        | C.CLIENT_PLUGIN_AUTH
        | C.CLIENT_TRANSACTIONS
        | C.CLIENT_DEPRECATE_EOF
    ),
    charset=45,
    max_packet_size=1 << 24,
    database=b"app",
    connect_attrs=((b"_client_name", b"test"),),
)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


class Conn:
    """One accepted connection of the scripted server (blocking socket, own thread):
    reads exactly what it needs, so a ClientHello sent right behind the SSLRequest
    stays in the socket for the TLS layer, as in a real server."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | ssl.SSLSocket = sock
        self.seq = 0

    def recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def read(self) -> bytes:
        header = self.recv_exactly(4)
        assert header[3] == self.seq, f"client seq {header[3]}, expected {self.seq}"
        self.seq = (header[3] + 1) & 0xFF
        return self.recv_exactly(int.from_bytes(header[:3], "little"))

    def write(self, payload: bytes) -> None:
        framed, self.seq = build_packets(payload, self.seq)
        self.sock.sendall(framed)

    def ok(self) -> None:
        self.write(build_ok_packet(OkPacket(status_flags=2), SERVER_CAPS))


class Script:
    """A scripted server: greets, then runs ``auth`` on the connection."""

    def __init__(
        self,
        auth: Callable[[Script, Conn], None],
        *,
        plugin: bytes = b"caching_sha2_password",
        caps: int = SERVER_CAPS,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.auth = auth
        self.plugin = plugin
        self.caps = caps
        self.tls = tls
        self.events: list[str] = []
        self.response_caps = 0
        self.first_response: HandshakeResponse41 | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(sock,), daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _handle(self, sock: socket.socket) -> None:
        conn = Conn(sock)
        try:
            hs = HandshakeV10(b"8.4.0-fake", 77, SCRAMBLE, self.caps, 45, 2, self.plugin)
            conn.write(build_handshake_v10(hs))
            try:
                payload = conn.read()
            except (EOFError, ConnectionError):
                self.events.append("probe")
                return
            if is_ssl_request(payload):
                assert self.tls is not None
                conn.sock = self.tls.wrap_socket(sock, server_side=True)
                self.events.append("tls")
                payload = conn.read()
            response = parse_handshake_response41(payload)
            self.response_caps = response.capabilities
            assert response.username == b"gw"
            assert response.database == b"app"
            self.first_response = response
            self.auth(self, conn)
            # Command phase: answer COM_CHANGE_USER like MariaDB (switch to native).
            while True:
                conn.seq = 0
                try:
                    body = conn.read()
                except (EOFError, ConnectionError, ssl.SSLError):
                    return
                if body == b"\x03SELECT @@SESSION.sql_mode":
                    # The gateway reads the session's sql_mode after every login.
                    send_sql_mode(conn, self.response_caps & self.caps)
                    continue
                if body[:1] == b"\x11":
                    self.events.append("change_user")
                    conn.write(
                        build_auth_switch_request(b"mysql_native_password", SCRAMBLE + b"\x00")
                    )
                    assert conn.read() == scramble_native_password(PASSWORD, SCRAMBLE)
                    conn.ok()
        except AssertionError as exc:
            self.events.append(f"assertion failed: {exc}")
        finally:
            conn.sock.close()


def send_sql_mode(conn: Conn, caps: int) -> None:
    column = ColumnDefinition41(
        b"", b"", b"", b"@@SESSION.sql_mode", b"", 33, 1024, int(ColumnType.MYSQL_TYPE_VAR_STRING)
    )
    conn.write(build_column_count(1))
    conn.write(build_column_definition41(column))
    deprecate_eof = bool(caps & C.CLIENT_DEPRECATE_EOF)
    if not deprecate_eof:
        conn.write(build_eof_packet())
    conn.write(build_text_row([b"STRICT_TRANS_TABLES"]))
    conn.write(build_terminator(OkPacket(status_flags=2), caps))


def fast_path(s: Script, conn: Conn) -> None:
    assert s.first_response is not None
    assert s.first_response.auth_response == scramble_caching_sha2(PASSWORD, SCRAMBLE)
    conn.write(b"\x01\x03")
    conn.ok()
    s.events.append("fast")


def full_path(s: Script, conn: Conn) -> None:
    conn.write(b"\x01\x04")  # cache miss: perform full authentication
    answer = conn.read()
    if answer == b"\x02":  # no TLS: the client asks for our RSA key
        conn.write(b"\x01" + RSA_PEM)
        encrypted = conn.read()
        plain = RSA_KEY.decrypt(
            encrypted,
            padding.OAEP(
                mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None
            ),
        )
        answer = bytes(b ^ SCRAMBLE[i % len(SCRAMBLE)] for i, b in enumerate(plain))
        s.events.append("rsa")
    else:
        s.events.append("cleartext")
    assert answer == PASSWORD + b"\x00"
    conn.ok()


def native_switch(s: Script, conn: Conn) -> None:
    conn.write(build_auth_switch_request(b"mysql_native_password", SCRAMBLE + b"\x00"))
    assert conn.read() == scramble_native_password(PASSWORD, SCRAMBLE)
    conn.ok()
    s.events.append("native")


def refuse(s: Script, conn: Conn) -> None:
    conn.write(build_err_packet(1045, "28000", "Access denied for user 'gw'@'x'"))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Awaitable[UpstreamTarget]]]:
    servers: list[Script] = []

    async def start(script: Script) -> UpstreamTarget:
        servers.append(script)
        port = script.port
        return UpstreamTarget(
            name="fake",
            host="127.0.0.1",
            port=port,
            database="app",
            user="gw",
            password=PASSWORD.decode(),
            tls_mode="disable",
            connect_timeout=5,
        )

    yield start
    for server in servers:
        server.close()


def _server_tls(tmp_path: Path) -> ssl.SSLContext:
    cert, key = make_self_signed(tmp_path / "s.crt", tmp_path / "s.key", ["127.0.0.1"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


async def _close(conn: object) -> None:
    leg = conn.leg  # type: ignore[attr-defined]
    leg.close()
    for _ in range(100):
        if leg.closed:
            return
        await asyncio.sleep(0.01)


async def test_caching_sha2_fast_path(serve: Callable[[Script], Awaitable[UpstreamTarget]]) -> None:
    script = Script(fast_path)
    target = await serve(script)
    conn = await connect_upstream(target, REQUEST)
    assert conn.thread_id == 77 and conn.auth_method == "caching_sha2_password"
    assert not conn.tls
    await asyncio.sleep(0.05)
    assert script.events == ["fast"]
    assert script.response_caps & C.CLIENT_DEPRECATE_EOF  # end-to-end flags mirrored
    assert script.response_caps & C.CLIENT_CONNECT_ATTRS
    await _close(conn)


async def test_caching_sha2_full_path_over_tls(
    serve: Callable[[Script], Awaitable[UpstreamTarget]], tmp_path: Path
) -> None:
    script = Script(full_path, tls=_server_tls(tmp_path))
    target = await serve(script)
    target.tls_mode = "require"
    conn = await connect_upstream(target, REQUEST)
    assert conn.tls
    assert script.events == ["tls", "cleartext"]
    await _close(conn)


async def test_caching_sha2_full_path_rsa_without_tls(
    serve: Callable[[Script], Awaitable[UpstreamTarget]],
) -> None:
    script = Script(full_path, caps=SERVER_CAPS & ~C.CLIENT_SSL)
    target = await serve(script)
    target.tls_mode = "prefer"  # the server has no TLS: go on without
    conn = await connect_upstream(target, REQUEST)
    assert not conn.tls
    assert script.events == ["rsa"]
    await _close(conn)


async def test_require_tls_refuses_a_server_without_it(
    serve: Callable[[Script], Awaitable[UpstreamTarget]],
) -> None:
    target = await serve(Script(fast_path, caps=SERVER_CAPS & ~C.CLIENT_SSL))
    target.tls_mode = "require"
    with pytest.raises(UpstreamError, match="does not support TLS"):
        await connect_upstream(target, REQUEST)


async def test_switch_to_native_and_change_user(
    serve: Callable[[Script], Awaitable[UpstreamTarget]],
) -> None:
    script = Script(native_switch, plugin=b"mysql_native_password")
    target = await serve(script)
    conn = await connect_upstream(target, REQUEST)
    assert conn.auth_method == "mysql_native_password"
    ok = await change_user(conn, target, database=b"app", charset=45, connect_attrs=())
    assert ok[:1] == b"\x00"
    assert script.events == ["native", "change_user"]
    await _close(conn)


async def test_refusal_carries_the_server_error(
    serve: Callable[[Script], Awaitable[UpstreamTarget]],
) -> None:
    target = await serve(Script(refuse))
    with pytest.raises(UpstreamError) as info:
        await connect_upstream(target, REQUEST)
    assert info.value.errno == 1045
    assert "Access denied" in info.value.detail


async def test_probe_reads_the_greeting_once(
    serve: Callable[[Script], Awaitable[UpstreamTarget]],
) -> None:
    script = Script(fast_path)
    target = await serve(script)
    target.port = target.port  # a fresh (host, port): not cached yet
    first, second = await asyncio.gather(probe_target(target), probe_target(target))
    assert first is second
    assert first.server_version == b"8.4.0-fake"
    assert not first.is_mariadb
    for _ in range(100):
        if script.events:
            break
        await asyncio.sleep(0.01)
    assert script.events == ["probe"]


def test_rsa_exchange_matches_what_servers_decrypt() -> None:
    """The RSA step on its own: OAEP(SHA-1) of (password + NUL) XOR scramble."""
    from protocols.mysql.auth import encrypt_password_rsa

    encrypted = encrypt_password_rsa(PASSWORD, SCRAMBLE, RSA_PEM)
    plain = RSA_KEY.decrypt(
        encrypted,
        padding.OAEP(
            mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None
        ),
    )
    assert bytes(b ^ SCRAMBLE[i % 20] for i, b in enumerate(plain)) == PASSWORD + b"\x00"
    assert hashlib.sha1(PASSWORD).digest()  # (the native scramble's first stage)
