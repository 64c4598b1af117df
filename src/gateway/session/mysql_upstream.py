"""Opening the gateway's own connection to a MySQL / MariaDB target.

As for PostgreSQL, the client's credentials never travel upstream: the gateway
logs in with the target's stored user and password (mysql_native_password,
caching_sha2_password fast / full / RSA paths, mysql_clear_password over TLS,
one auth switch), so the client learns nothing of them.

The server speaks first, and the gateway must greet its own client before it
knows who the client is. The greeting mirrors the target (server version,
capabilities, charset: clients gate behaviour on them), so each target is probed
once (``probe_target``: read the greeting, close) and the answer cached; every
real login refreshes the cache.

TLS modes follow the PostgreSQL ones: disable | prefer | require | verify-full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

from protocols.errors import PeerViolation
from protocols.mysql.auth import (
    AuthenticationFailed,
    UpstreamAuthenticator,
    scramble_caching_sha2,
    scramble_native_password,
)
from protocols.mysql.commands import ChangeUser, build_com_change_user
from protocols.mysql.constants import (
    CACHING_SHA2_PASSWORD,
    ERR_HEADER,
    HEADER_SIZE,
    MAX_PACKET_PAYLOAD,
    MYSQL_NATIVE_PASSWORD,
    OK_HEADER,
    Capability,
    Command,
)
from protocols.mysql.framing import build_packets
from protocols.mysql.handshake import (
    HandshakeV10,
    SslRequest,
    build_ssl_request,
    parse_handshake_v10,
)
from protocols.mysql.packets import (
    is_terminator,
    parse_err_packet,
    read_lenenc_int,
    read_lenenc_string_or_null,
)

from ..net.leg import Leg
from ..net.tls import upstream_context
from .target import UpstreamTarget

log = logging.getLogger("gateway.upstream")

# Connection-phase packets are small; anything bigger is a broken or hostile server.
_MAX_LOGIN_PACKET = 1 << 20


class UpstreamError(Exception):
    """The target refused or failed the login. ``detail`` is for logs only.

    ``errno``/``sqlstate`` are the server's when it sent an ERR; the session
    decides whether any of it may reach the client.
    """

    def __init__(self, detail: str, errno: int | None = None, sqlstate: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errno = errno
        self.sqlstate = sqlstate


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What a target said in its greeting: mirrored in the gateway's own greeting."""

    server_version: bytes
    capabilities: int
    charset: int
    status_flags: int

    @property
    def is_mariadb(self) -> bool:
        return b"MariaDB" in self.server_version


@dataclass
class UpstreamConnection:
    leg: Leg
    thread_id: int  # the server's connection id (what CONNECTION_ID() returns)
    capabilities: int  # negotiated on this hop
    tls: bool
    auth_method: str
    handshake: HandshakeV10
    ok_payload: bytes  # the server's final OK of the login (status flags, session state)
    sql_mode: str = ""  # the session's sql_mode right after login (read by the gateway)


_PROBES: dict[tuple[str, int], ServerInfo] = {}
_PROBE_LOCKS: dict[tuple[str, int], asyncio.Lock] = {}


def _key(target: UpstreamTarget) -> tuple[str, int]:
    return target.host, target.port


def _remember(target: UpstreamTarget, hs: HandshakeV10) -> ServerInfo:
    info = ServerInfo(hs.server_version, hs.capabilities, hs.charset, hs.status_flags)
    _PROBES[_key(target)] = info
    return info


def cached_server_info(target: UpstreamTarget) -> ServerInfo | None:
    return _PROBES.get(_key(target))


async def probe_target(target: UpstreamTarget) -> ServerInfo:
    """The target's greeting, read once and cached (concurrent callers share one probe)."""
    info = _PROBES.get(_key(target))
    if info is not None:
        return info
    lock = _PROBE_LOCKS.setdefault(_key(target), asyncio.Lock())
    async with lock:
        info = _PROBES.get(_key(target))
        if info is not None:
            return info
        leg = await _open(target)
        try:
            hs = await asyncio.wait_for(_read_greeting(leg, target), target.connect_timeout)
        except TimeoutError:
            raise UpstreamError(f"target {target.name} sent no greeting") from None
        finally:
            # Closing before the handshake response: the server counts an aborted
            # connect, once per target and gateway start.
            leg.abort()
        return _remember(target, hs)


async def _open(target: UpstreamTarget) -> Leg:
    loop = asyncio.get_running_loop()
    leg = Leg(f"upstream {target.name}")
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: leg, target.host, target.port),
            target.connect_timeout,
        )
    except (TimeoutError, OSError) as exc:
        raise UpstreamError(f"cannot connect to {target.host}:{target.port}: {exc!r}") from None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return leg


async def read_packet(leg: Leg, expected_seq: int | None, max_size: int) -> tuple[int, bytes]:
    """One logical packet in handshake mode: (sequence id of its first part, payload).

    The size is checked from each header before the body is read.
    """
    parts: list[bytes] = []
    total = 0
    first_seq = -1
    seq = expected_seq
    while True:
        header = await leg.read_exactly(HEADER_SIZE)
        length = header[0] | (header[1] << 8) | (header[2] << 16)
        if seq is not None and header[3] != seq:
            raise PeerViolation(f"packet sequence id {header[3]}, expected {seq}", 1156)
        if first_seq < 0:
            first_seq = header[3]
        seq = (header[3] + 1) & 0xFF
        total += length
        if total > max_size:
            raise PeerViolation(f"packet of {total} bytes exceeds the limit of {max_size}", 1153)
        parts.append(await leg.read_exactly(length))
        if length < MAX_PACKET_PAYLOAD:
            return first_seq, b"".join(parts)


async def _read_greeting(leg: Leg, target: UpstreamTarget) -> HandshakeV10:
    _, payload = await read_packet(leg, 0, _MAX_LOGIN_PACKET)
    if payload[:1] == bytes((ERR_HEADER,)):
        err = parse_err_packet(payload)
        raise UpstreamError(
            f"target {target.name} refused the connection: {err.errno} {err.text}",
            err.errno,
            err.sqlstate,
        )
    return parse_handshake_v10(payload)


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """What the client negotiated, to be mirrored upstream."""

    capabilities: int
    charset: int
    max_packet_size: int
    database: bytes | None
    connect_attrs: tuple[tuple[bytes, bytes], ...]


async def connect_upstream(target: UpstreamTarget, request: LoginRequest) -> UpstreamConnection:
    """Connect, negotiate TLS, authenticate; stop after the server's OK."""
    leg = await _open(target)
    try:
        return await asyncio.wait_for(_login(leg, target, request), target.connect_timeout)
    except TimeoutError:
        leg.abort()
        raise UpstreamError(f"login to target {target.name} timed out") from None
    except AuthenticationFailed as exc:
        leg.abort()
        raise UpstreamError(
            f"target {target.name} refused login: {exc.errno} {exc.message}",
            exc.errno,
            exc.sqlstate,
        ) from None
    except (UpstreamError, PeerViolation, OSError, ConnectionError) as exc:
        leg.abort()
        if isinstance(exc, UpstreamError):
            raise
        raise UpstreamError(f"login to target {target.name} failed: {exc}") from None
    except BaseException:
        leg.abort()
        raise


async def _login(leg: Leg, target: UpstreamTarget, request: LoginRequest) -> UpstreamConnection:
    hs = await _read_greeting(leg, target)
    _remember(target, hs)
    server_tls = bool(hs.capabilities & Capability.CLIENT_SSL)
    ctx = upstream_context(target.tls_mode, target.tls_ca_file)
    use_tls = ctx is not None and server_tls
    if ctx is not None and not server_tls and target.tls_mode != "prefer":
        raise UpstreamError(f"target {target.name} does not support TLS (tls={target.tls_mode})")
    password = (target.password or "").encode()
    auth = UpstreamAuthenticator(
        hs,
        username=target.user.encode(),
        password=password,
        # The gateway's own attributes (session id, subject) go up even when the
        # client sent none.
        capabilities=request.capabilities
        | (Capability.CLIENT_CONNECT_ATTRS if request.connect_attrs else 0),
        tls_active=use_tls,
        database=request.database,
        charset=request.charset,
        max_packet_size=request.max_packet_size,
        connect_attrs=request.connect_attrs,
    )
    seq = 1
    if use_tls:
        assert ctx is not None
        ssl_request = build_ssl_request(
            SslRequest(auth.capabilities, request.max_packet_size, request.charset)
        )
        framed, seq = build_packets(ssl_request, seq)
        leg.write(framed)
        if leg.buffer:
            raise UpstreamError("server sent data before the TLS handshake")
        await leg.start_tls(
            ctx,
            server_side=False,
            server_hostname=target.tls_server_name or target.host,
            timeout=target.connect_timeout,
        )
    framed, seq = build_packets(auth.handshake_response(), seq)
    leg.write(framed)
    ok_payload = await _auth_exchange(leg, auth, seq)
    return UpstreamConnection(
        leg=leg,
        thread_id=hs.connection_id,
        capabilities=auth.capabilities,
        tls=use_tls,
        auth_method=(auth.plugin or b"").decode("ascii", "replace"),
        handshake=hs,
        ok_payload=ok_payload,
        sql_mode=await _session_sql_mode(leg, auth.capabilities),
    )


# COM_QUERY (0x03). The answer is a one-column, one-row text result set.
_SQL_MODE_QUERY = b"\x03SELECT @@SESSION.sql_mode"


async def _session_sql_mode(leg: Leg, capabilities: int) -> str:
    """The session's sql_mode after login (global default, init_connect, ...): some
    modes change how the server reads statement text, which the policy must know
    before the client sends anything (mysql.py refuses those sessions)."""
    framed, _ = build_packets(_SQL_MODE_QUERY, 0)
    leg.write(framed)
    _, payload = await read_packet(leg, 1, _MAX_LOGIN_PACKET)
    if payload[:1] == bytes((ERR_HEADER,)):
        err = parse_err_packet(payload)
        raise UpstreamError(f"reading sql_mode failed: {err.errno} {err.text}", err.errno)
    count, _ = read_lenenc_int(payload, 0)
    if count != 1:
        raise UpstreamError(f"reading sql_mode: expected one column, got {count}")
    await read_packet(leg, None, _MAX_LOGIN_PACKET)  # the column definition
    if not capabilities & Capability.CLIENT_DEPRECATE_EOF:
        await read_packet(leg, None, _MAX_LOGIN_PACKET)  # EOF after the definitions
    _, row = await read_packet(leg, None, _MAX_LOGIN_PACKET)
    value, _ = read_lenenc_string_or_null(row, 0)
    _, end = await read_packet(leg, None, _MAX_LOGIN_PACKET)
    if not is_terminator(end):
        raise UpstreamError("reading sql_mode: more than one row")
    return (value or b"").decode("ascii", "replace")


async def _auth_exchange(leg: Leg, auth: UpstreamAuthenticator, seq: int) -> bytes:
    """Pump server packets through the authenticator until OK; returns the OK payload."""
    while True:
        got, payload = await read_packet(leg, seq, _MAX_LOGIN_PACKET)
        seq = (got + 1) & 0xFF
        reply = auth.receive(payload)  # raises AuthenticationFailed on ERR
        if auth.done:
            if payload[:1] != bytes((OK_HEADER,)):
                raise UpstreamError("authentication ended without an OK packet")
            return payload
        if reply is not None:
            framed, seq = build_packets(reply, seq)
            leg.write(framed)


async def change_user(
    conn: UpstreamConnection,
    target: UpstreamTarget,
    *,
    database: bytes,
    charset: int,
    connect_attrs: tuple[tuple[bytes, bytes], ...],
) -> bytes:
    """COM_CHANGE_USER upstream with the stored credentials (resets the server session:
    variables, temporary tables, prepared statements; selects ``database``).

    The upstream leg must be in handshake mode (no streaming callback) and idle.
    Returns the server's OK payload; raises UpstreamError on refusal.
    """
    leg = conn.leg
    password = (target.password or "").encode()
    auth = UpstreamAuthenticator(
        conn.handshake,
        username=target.user.encode(),
        password=password,
        capabilities=conn.capabilities,
        tls_active=conn.tls,
        database=database,
        charset=charset,
        connect_attrs=connect_attrs,
    )
    # The negotiated hop capabilities decide the packet layout (not a fresh negotiation).
    caps = conn.capabilities
    plugin = auth.plugin or MYSQL_NATIVE_PASSWORD
    nonce = conn.handshake.auth_plugin_data
    if plugin == CACHING_SHA2_PASSWORD:
        response = scramble_caching_sha2(password, nonce)
    else:
        plugin = MYSQL_NATIVE_PASSWORD
        response = scramble_native_password(password, nonce)
    attrs = connect_attrs if caps & Capability.CLIENT_CONNECT_ATTRS else ()
    packet = build_com_change_user(
        ChangeUser(target.user.encode(), response, database, charset, plugin, attrs), caps
    )
    framed, seq = build_packets(packet, 0)
    leg.write(framed)
    try:
        payload = await asyncio.wait_for(_auth_exchange(leg, auth, seq), target.connect_timeout)
    except AuthenticationFailed as exc:
        raise UpstreamError(
            f"target {target.name} refused COM_CHANGE_USER: {exc.errno} {exc.message}",
            exc.errno,
            exc.sqlstate,
        ) from None
    except TimeoutError:
        raise UpstreamError(f"COM_CHANGE_USER on target {target.name} timed out") from None
    except PeerViolation as exc:
        raise UpstreamError(f"COM_CHANGE_USER on target {target.name} failed: {exc}") from None
    return payload


async def kill_query(target: UpstreamTarget, thread_id: int) -> None:
    """``KILL QUERY <thread_id>`` on a fresh connection (a client vanished mid-query:
    without it the server would run the statement to completion)."""
    request = LoginRequest(
        capabilities=int(
            Capability.CLIENT_PROTOCOL_41
            | Capability.CLIENT_SECURE_CONNECTION
            | Capability.CLIENT_PLUGIN_AUTH
            | Capability.CLIENT_TRANSACTIONS
        ),
        charset=45,
        max_packet_size=1 << 24,
        database=None,
        connect_attrs=(),
    )
    try:
        conn = await connect_upstream(target, request)
    except UpstreamError as exc:
        log.warning("kill: cannot log in to target %s: %s", target.name, exc.detail)
        return
    leg = conn.leg
    try:
        framed, _ = build_packets(bytes((Command.COM_QUERY,)) + b"KILL QUERY %d" % thread_id, 0)
        leg.write(framed)
        with contextlib.suppress(TimeoutError, ConnectionError, PeerViolation):
            await asyncio.wait_for(read_packet(leg, 1, _MAX_LOGIN_PACKET), 5.0)
        leg.write(build_packets(bytes((Command.COM_QUIT,)), 0)[0])
    finally:
        leg.close()
