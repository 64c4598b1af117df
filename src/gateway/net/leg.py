"""One side of a proxied connection, as an asyncio Protocol.

A leg has two modes:

* handshake: bytes accumulate in a ``ReceiveBuffer`` and coroutines ``await``
  exact amounts (login is rare, so clarity wins);
* streaming: every read is handed to ``on_data`` directly, the hot path.

Reading is paused by a *set of reasons* (the peer is slow to drain, the
recorder is behind, an approval is pending) and resumes only when the set is
empty, so independent reasons never cancel each other out.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from protocols.buffer import ReceiveBuffer


class LegClosed(ConnectionError):
    pass


# What a leg buffers in handshake mode before it stops reading: login messages are small
# (the largest, a token, is bounded by auth.max_token_size), so anything beyond this is a
# client sending ahead of its login; TCP backpressure holds the rest until it is read.
HANDSHAKE_BUFFER = 256 * 1024
_BUFFER_FULL = "handshake-buffer"


def _ignore() -> None:
    pass


class Leg(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.buffer = ReceiveBuffer()
        self.closed = False
        self.close_exc: BaseException | None = None
        self.on_data: Callable[[bytes], object] | None = None
        self.on_lost: Callable[[BaseException | None], None] | None = None
        self.on_pause_writing: Callable[[], None] = _ignore
        self.on_resume_writing: Callable[[], None] = _ignore
        self._waiter: asyncio.Future[None] | None = None
        self._pause_reasons: set[str] = set()
        self.bytes_in = 0
        self.bytes_out = 0

    # -- asyncio callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        on_data = self.on_data
        if on_data is not None:
            on_data(data)
            return
        self.buffer.feed(data)
        if len(self.buffer) > HANDSHAKE_BUFFER:
            self.pause_reading(_BUFFER_FULL)
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport; the peer is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.close_exc = exc
        self._wake()
        if self.on_lost is not None:
            cb, self.on_lost = self.on_lost, None
            cb(exc)

    def pause_writing(self) -> None:
        self.on_pause_writing()

    def resume_writing(self) -> None:
        self.on_resume_writing()

    # -- handshake-mode reads ---------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        if self.closed:
            raise LegClosed(f"{self.name} connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if n > HANDSHAKE_BUFFER:
                self.resume_reading(_BUFFER_FULL)  # a message this big must arrive whole
            await self._wait()
        data = self.buffer.take(n)
        if len(self.buffer) <= HANDSHAKE_BUFFER:
            self.resume_reading(_BUFFER_FULL)
        return data

    async def read_typed_message(self, max_size: int) -> tuple[int, bytes]:
        """One typed message: (type byte, body). Size checked from the header."""
        from protocols.errors import MessageTooLarge, PeerViolation

        header = await self.read_exactly(5)
        length = int.from_bytes(header[1:5], "big")
        if length < 4:
            raise PeerViolation(f"invalid message length {length}")
        if length > max_size:
            raise MessageTooLarge(length, max_size)
        return header[0], await self.read_exactly(length - 4)

    # -- writes, flow control, lifecycle ----------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        t = self.transport
        if t is not None and not self.closed:
            self.bytes_out += len(data)
            t.write(data)

    def start_streaming(self, on_data: Callable[[bytes], object]) -> None:
        """Switch to streaming mode; bytes already buffered are delivered first."""
        self.on_data = on_data
        if self.buffer:
            on_data(self.buffer.take_all())
        self.resume_reading(_BUFFER_FULL)

    def pause_reading(self, reason: str) -> None:
        if not self._pause_reasons and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume_reading(self, reason: str) -> None:
        reasons = self._pause_reasons
        if reason in reasons:
            reasons.discard(reason)
            if not reasons and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def close(self) -> None:
        """Close after pending writes are flushed."""
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def detach(self) -> None:
        """Drop the callbacks into the session once it is over: they form reference
        cycles (session -> leg -> bound method -> session) that would otherwise keep
        every closed session's memory until the cycle collector happens to run."""
        self.on_data = None
        self.on_lost = None
        self.on_pause_writing = _ignore
        self.on_resume_writing = _ignore

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        """Upgrade to TLS in place. The caller checked that no plaintext is buffered
        (CVE-2021-23214/23222: bytes pipelined before the handshake must not be
        treated as if they had arrived over TLS)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        new = await loop.start_tls(
            self.transport,
            self,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            ssl_handshake_timeout=timeout,
        )
        if new is None:
            raise LegClosed(f"{self.name} closed during TLS handshake")
        self.transport = new

    def tls_info(self) -> dict[str, str]:
        t = self.transport
        obj = t.get_extra_info("ssl_object") if t is not None else None
        if obj is None:
            return {}
        info = {"version": str(obj.version()), "cipher": str((obj.cipher() or ("",))[0])}
        alpn = obj.selected_alpn_protocol()
        if alpn:
            info["alpn"] = alpn
        return info


def couple_flow_control(client: Leg, upstream: Leg) -> None:
    """Backpressure both ways: when one leg's transport cannot drain its writes,
    stop reading from the other leg until it can (asyncio high/low water marks).
    Used by every protocol driver, so a slow client never makes the gateway
    buffer a whole result, and a slow database never makes it buffer a COPY."""
    client.on_pause_writing = lambda: upstream.pause_reading("client-slow")
    client.on_resume_writing = lambda: upstream.resume_reading("client-slow")
    upstream.on_pause_writing = lambda: client.pause_reading("upstream-slow")
    upstream.on_resume_writing = lambda: client.resume_reading("upstream-slow")
