"""Opening the gateway's own connection to a PostgreSQL target.

The client's credentials never travel upstream: the gateway logs in with the
target's stored user and password. Authentication is always split; the
client's exchange cannot be relayed (the gateway does not know a password the
client could have proven).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field

from protocols.errors import PeerViolation
from protocols.postgres.auth import SaltedPasswordCache, UpstreamAuthenticator
from protocols.postgres.constants import Backend
from protocols.postgres.framing import build_message
from protocols.postgres.messages import (
    build_cancel_request,
    build_ssl_request,
    build_startup_message,
    parse_backend_key_data,
    parse_error_fields,
)

from ..net.leg import Leg
from ..net.tls import upstream_context
from .target import UpstreamTarget

log = logging.getLogger("gateway.upstream")

# Reused across connections so reconnecting does not redo PBKDF2 (4096 rounds).
_SCRAM_CACHE = SaltedPasswordCache()


class UpstreamError(Exception):
    """The target refused or failed the login. ``detail`` is for logs only."""

    def __init__(
        self, detail: str, sqlstate: str | None = None, message: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.sqlstate = sqlstate
        self.message = message  # the server's own message (M), when it sent an error


@dataclass
class UpstreamConnection:
    leg: Leg
    process_id: int | None
    secret_key: bytes | None
    tls: bool
    # ParameterStatus / NoticeResponse messages received during startup, framed,
    # in order: replayed to the client after its AuthenticationOk.
    startup_messages: list[bytes] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    auth_method: str = ""


async def _open_socket(target: UpstreamTarget) -> Leg:
    loop = asyncio.get_running_loop()
    leg = Leg(f"upstream {target.name}")
    transport, _ = await asyncio.wait_for(
        loop.create_connection(lambda: leg, target.host, target.port),
        target.connect_timeout,
    )
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Latency matters more than packet count for request/response traffic.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return leg


async def _negotiate_tls(leg: Leg, target: UpstreamTarget) -> bool:
    ctx = upstream_context(target.tls_mode, target.tls_ca_file)
    if ctx is None:
        return False
    leg.write(build_ssl_request())
    answer = await leg.read_exactly(1)
    if answer == b"S":
        if leg.buffer:
            # Bytes after 'S' before the handshake: CVE-2021-23222 (libpq side).
            raise UpstreamError("server sent unencrypted data after accepting SSL")
        await leg.start_tls(
            ctx,
            server_side=False,
            server_hostname=target.tls_server_name or target.host,
            timeout=target.connect_timeout,
        )
        return True
    if answer == b"N":
        if target.tls_mode == "prefer":
            return False
        raise UpstreamError(f"target {target.name} does not support TLS (tls={target.tls_mode})")
    raise UpstreamError(f"unexpected answer {answer!r} to SSLRequest")


async def connect_upstream(
    target: UpstreamTarget, client_parameters: dict[str, str], max_message_size: int
) -> UpstreamConnection:
    """Connect, negotiate TLS, start up and authenticate; stop at ReadyForQuery."""
    try:
        leg = await _open_socket(target)
    except (TimeoutError, OSError) as exc:
        raise UpstreamError(f"cannot connect to {target.host}:{target.port}: {exc!r}") from None
    try:
        return await asyncio.wait_for(
            _login(leg, target, client_parameters, max_message_size), target.connect_timeout
        )
    except TimeoutError:
        leg.abort()
        raise UpstreamError(f"login to target {target.name} timed out") from None
    except (UpstreamError, PeerViolation, OSError, ConnectionError) as exc:
        leg.abort()
        if isinstance(exc, UpstreamError):
            raise
        raise UpstreamError(f"login to target {target.name} failed: {exc}") from None


async def _login(
    leg: Leg, target: UpstreamTarget, client_parameters: dict[str, str], max_message_size: int
) -> UpstreamConnection:
    tls = await _negotiate_tls(leg, target)
    params = dict(client_parameters)
    params["user"] = target.user
    params["database"] = target.database
    leg.write(build_startup_message(params))
    auth = UpstreamAuthenticator(
        target.user, target.password, tls_active=tls, scram_cache=_SCRAM_CACHE
    )
    conn = UpstreamConnection(leg, None, None, tls)
    while True:
        mtype, body = await leg.read_typed_message(max_message_size)
        if mtype == Backend.AUTHENTICATION:
            reply = auth.receive(body)
            if reply:
                leg.write(reply)
        elif mtype == Backend.ERROR_RESPONSE:
            fields = parse_error_fields(body)
            raise UpstreamError(
                f"target {target.name} refused login: {fields.get('C')} {fields.get('M')}",
                fields.get("C"),
                fields.get("M"),
            )
        elif mtype == Backend.BACKEND_KEY_DATA:
            conn.process_id, conn.secret_key = parse_backend_key_data(body)
        elif mtype == Backend.PARAMETER_STATUS:
            from protocols.postgres.messages import parse_parameter_status

            name, value = parse_parameter_status(body)
            conn.parameters[name] = value
            conn.startup_messages.append(build_message(mtype, body))
        elif mtype == Backend.NOTICE_RESPONSE:
            conn.startup_messages.append(build_message(mtype, body))
        elif mtype == Backend.NEGOTIATE_PROTOCOL_VERSION:
            # We only ever ask for 3.0 and strip _pq_ options; tolerate it anyway.
            continue
        elif mtype == Backend.READY_FOR_QUERY:
            if not auth.done:
                raise UpstreamError("target sent ReadyForQuery before authentication completed")
            conn.auth_method = auth.method
            return conn
        else:
            raise UpstreamError(f"unexpected message {chr(mtype)!r} during login")


async def send_cancel(
    target: UpstreamTarget, process_id: int, secret_key: bytes, tls: bool
) -> None:
    """Out-of-band CancelRequest on a fresh connection; the server just closes."""
    try:
        leg = await _open_socket(target)
    except (TimeoutError, OSError) as exc:
        log.warning("cancel: cannot connect to target %s: %r", target.name, exc)
        return
    try:
        if tls:
            await _negotiate_tls(leg, target)
        leg.write(build_cancel_request(process_id, secret_key))
        # Wait (briefly) for the server to close, so the cancel is delivered
        # before we report back; never hang on it.
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(leg.read_exactly(1), 5.0)
    except (UpstreamError, OSError, ConnectionError) as exc:
        log.warning("cancel to target %s failed: %s", target.name, exc)
    finally:
        leg.close()
