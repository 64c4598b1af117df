"""TLS on the client leg after a MySQL SSLRequest."""

from __future__ import annotations

import asyncio
import ssl
from typing import cast

from protocols.errors import PeerViolation

from ..net.leg import Leg, LegClosed


async def start_server_tls(leg: Leg, context: ssl.SSLContext, *, timeout: float) -> None:
    """Upgrade the client leg to TLS after an SSLRequest.

    A MySQL client does not wait for an answer to its SSLRequest: the TLS
    ClientHello follows at once and often arrives in the same read. Those bytes
    must reach the TLS layer as the start of the TLS stream (never be read as
    plaintext, the CVE-2021-23214 class), so they are handed to the new TLS
    protocol before any further socket data.
    """
    assert leg.transport is not None
    transport = leg.transport
    # Stop reading now: bytes arriving before start_tls swaps the protocol would land
    # in the leg's buffer, behind the ones taken here, and be lost to TLS.
    transport.pause_reading()
    pending = leg.buffer.take_all()
    loop = asyncio.get_running_loop()
    task = loop.create_task(
        loop.start_tls(transport, leg, context, server_side=True, ssl_handshake_timeout=timeout)
    )
    if pending:
        # One loop turn: start_tls has installed its protocol and scheduled its
        # connection_made and resume_reading; ours runs right after them, before
        # the socket is read again.
        await asyncio.sleep(0)
        protocol = transport.get_protocol()
        if protocol is leg or not hasattr(protocol, "buffer_updated"):
            task.cancel()
            raise PeerViolation("cannot hand pipelined bytes to the TLS layer")
        # asyncio's and uvloop's SSLProtocol are buffered protocols (uvloop's does
        # not subclass asyncio.BufferedProtocol).
        loop.call_soon(_feed_protocol, cast(asyncio.BufferedProtocol, protocol), pending)
    try:
        new = await task
    except (ssl.SSLError, OSError) as exc:
        raise LegClosed(f"client TLS handshake failed: {exc}") from None
    if new is None:
        raise LegClosed("client closed during the TLS handshake")
    leg.transport = new


def _feed_protocol(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    view = memoryview(data)
    while view:
        buf = memoryview(protocol.get_buffer(len(view)))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]
