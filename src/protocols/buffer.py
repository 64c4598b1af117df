"""Receive buffer for the handshake phases.

The hot path (pass-through) does not use this class: it scans the ``bytes``
object handed to ``data_received`` directly and only copies a message that
straddles two reads (see ``protocols.postgres.framing``). Handshakes are rare
and small, so clarity wins here.
"""

from __future__ import annotations

from .errors import UsageError


class ReceiveBuffer:
    __slots__ = ("_data", "_start")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._data += data

    def __len__(self) -> int:
        return len(self._data) - self._start

    def __bool__(self) -> bool:
        return len(self._data) > self._start

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes from the front, without consuming them."""
        return bytes(self._data[self._start : self._start + n])

    def take(self, n: int) -> bytes:
        """Consume exactly ``n`` bytes; the caller checked ``len(self) >= n``."""
        if n > len(self):
            raise UsageError(f"take({n}) with only {len(self)} bytes buffered")
        out = bytes(self._data[self._start : self._start + n])
        self._start += n
        # Compact once the consumed prefix dominates, so the buffer stays bounded.
        if self._start > 4096 and self._start * 2 > len(self._data):
            del self._data[: self._start]
            self._start = 0
        return out

    def take_all(self) -> bytes:
        out = bytes(self._data[self._start :])
        self._data.clear()
        self._start = 0
        return out
