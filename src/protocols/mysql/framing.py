"""Packet framing, sequence ids, 16 MiB continuation, renumbering, and the hot-path scanner.

A physical packet is ``length(3, LE) | seq(1) | payload`` (page_protocol_basic_packets).
A physical length of ``0xFFFFFF`` means "the logical payload continues in the next
packet"; a logical payload of exactly k x 0xFFFFFF bytes therefore ends with an
empty packet. Every physical packet carries its own sequence id.

Rules enforced here:

* sequence ids: when ``expected_seq`` is set, every physical packet must carry it
  (then it increments mod 256); a mismatch is ``PeerViolation`` with errno 1156
  (ER_NET_PACKETS_OUT_OF_ORDER). The caller resets it per command (0 for the
  command packet, "one past the last packet we sent" for the reply) because ids run
  across both directions;
* size: the *logical* payload may not exceed ``max_payload``; this is checked from
  each physical header as soon as the header is visible, before the body is
  buffered (``MessageTooLarge``, errno 1153 ER_NET_PACKET_TOO_LARGE);
* after a violation the scanner is terminal: every later call raises the same error.

Unlike PostgreSQL, a MySQL packet carries no type byte, so whether a packet is a
result row depends on the response state. The scanner is therefore pulled:
``next_packet()`` hands out one logical packet, ``next_row_run()`` collapses a run
of consecutive row packets (anything that is not an ERR or a 0xFE terminator) into
one ``(start, stop, count)`` entry, so a run of rows is forwarded as one slice of
the received ``bytes`` at the cost of one 4-byte header read per row. Only a packet
that straddles two reads is copied; a partial tail is accumulated in a
``bytearray`` (no quadratic re-joining for 16 MiB payloads) and converted to
``bytes`` once it is complete, so slices handed out are never mutated later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from ..errors import MessageTooLarge, PeerViolation, UsageError
from .constants import EOF_HEADER, ERR_HEADER, HEADER_SIZE, MAX_PACKET_PAYLOAD, ErrorCode

_OUT_OF_ORDER = int(ErrorCode.ER_NET_PACKETS_OUT_OF_ORDER)
_TOO_LARGE = int(ErrorCode.ER_NET_PACKET_TOO_LARGE)
_MAX = MAX_PACKET_PAYLOAD


class Packet(NamedTuple):
    """One logical packet: the sequence id of its first physical packet and the joined payload."""

    seq: int
    payload: bytes


def build_packet_header(length: int, seq: int) -> bytes:
    """The 4-byte header of one physical packet (``length`` < 2**24)."""
    if not 0 <= length <= _MAX:
        raise UsageError(f"physical packet length {length} out of range")
    return bytes((length & 0xFF, (length >> 8) & 0xFF, length >> 16, seq & 0xFF))


def build_packets(payload: bytes | bytearray | memoryview, seq: int) -> tuple[bytes, int]:
    """Frame a logical payload, splitting at 0xFFFFFF; returns (framed bytes, next seq id).

    A payload of exactly k x 0xFFFFFF bytes is followed by an empty packet, as the
    protocol requires (otherwise the peer waits for a continuation).
    """
    view = memoryview(payload)
    n = len(view)
    seq &= 0xFF
    if n < _MAX:
        return bytes((n & 0xFF, (n >> 8) & 0xFF, n >> 16, seq)) + view, (seq + 1) & 0xFF
    parts: list[bytes | memoryview] = []
    pos = 0
    while True:
        chunk = min(n - pos, _MAX)
        parts.append(bytes((chunk & 0xFF, (chunk >> 8) & 0xFF, chunk >> 16, seq)))
        parts.append(view[pos : pos + chunk])
        seq = (seq + 1) & 0xFF
        pos += chunk
        if chunk < _MAX:
            break
    return b"".join(parts), seq


def renumber_packets_in_place(
    buf: bytearray, seq: int, start: int = 0, stop: int | None = None
) -> int:
    """Rewrite the sequence ids of the framed packets in ``buf[start:stop]`` to ``seq``,
    ``seq + 1``, ...; returns the next sequence id.

    Needed whenever the gateway injects, drops or converts packets inside an
    exchange (sysown/proxysql#3698: a skipped id makes the client think the stream
    is corrupted). The range must hold whole physical packets.
    """
    end = len(buf) if stop is None else stop
    pos = start
    seq &= 0xFF
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise UsageError("renumber: range does not end on a packet boundary")
        length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        buf[pos + 3] = seq
        seq = (seq + 1) & 0xFF
        pos += HEADER_SIZE + length
    if pos != end:
        raise UsageError("renumber: range does not end on a packet boundary")
    return seq


def renumber_packets(data: bytes | bytearray | memoryview, seq: int) -> tuple[bytes, int]:
    """Copy of the framed packets in ``data`` renumbered from ``seq``; returns (bytes, next seq)."""
    buf = bytearray(data)
    nxt = renumber_packets_in_place(buf, seq)
    return bytes(buf), nxt


def count_physical_packets(data: bytes | bytearray | memoryview) -> int:
    """Number of physical packets (= sequence ids consumed) in a run of framed packets."""
    pos = 0
    n = len(data)
    count = 0
    while pos + HEADER_SIZE <= n:
        pos += HEADER_SIZE + (data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16))
        count += 1
    if pos != n:
        raise UsageError("data does not end on a packet boundary")
    return count


def join_payload(buf: bytes | bytearray | memoryview, start: int, stop: int) -> bytes:
    """The logical payload of the framed logical packet at ``buf[start:stop]``."""
    length = buf[start] | (buf[start + 1] << 8) | (buf[start + 2] << 16)
    if length < _MAX:
        return bytes(buf[start + HEADER_SIZE : stop])
    parts: list[bytes] = []
    pos = start
    while pos < stop:
        length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        parts.append(bytes(buf[pos + HEADER_SIZE : pos + HEADER_SIZE + length]))
        pos += HEADER_SIZE + length
    return b"".join(parts)


class _ScannerState:
    """The scanner's state as plain slots: the base of the pure-Python scanner. The
    compiled ``_wire.ScannerCore`` has the same attributes (in C) and is the base of
    ``PacketScanner`` where the extension was built."""

    __slots__ = ("_acc", "_broken", "_buf", "_need", "_pos", "expected_seq", "max_payload")


class _ScannerMethods:
    """Pull-style splitter of one direction of a MySQL stream (see module docstring).

    Usage::

        scanner.feed(data)
        while True:
            if in_rows:
                start, stop, count = scanner.next_row_run()
                if count:
                    forward(memoryview(scanner.buffer)[start:stop]); continue
            entry = scanner.next_packet()
            if entry is None:
                break
            start, stop = entry
            payload = scanner.payload(start, stop)

    Offsets refer to ``scanner.buffer`` as it is right after ``feed``; it changes
    only on the next ``feed``.

    The methods ending in ``_py`` are the reference implementation. The compiled base
    (``_wire.ScannerCore``) provides ``feed``, ``next_packet`` and ``next_row_run`` for
    the common cases and calls the ``_py`` methods, on the same state, for the rest
    (continued packets, errors, partial tails); without it they are used directly.
    """

    if not TYPE_CHECKING:  # a mixin: the state is the other base's (its types below)
        __slots__ = ()

    _buf: bytes
    _pos: int
    _acc: bytearray | None
    _need: int
    _broken: PeerViolation | None
    expected_seq: int | None
    max_payload: int

    def __init__(self, max_payload: int, *, expected_seq: int | None = None) -> None:
        if max_payload < 1:
            raise UsageError("max_payload must be positive")
        self.max_payload = max_payload
        # Sequence id the next physical packet must carry; None disables the check.
        self.expected_seq = expected_seq
        self._buf: bytes = b""
        self._pos = 0
        self._acc: bytearray | None = None  # partial tail being assembled
        self._need = 0  # len(_acc) needed before the head packet can be complete
        self._broken: PeerViolation | None = None

    @property
    def buffer(self) -> bytes:
        return self._buf

    @property
    def pending(self) -> int:
        """Bytes received but not yet handed out as complete packets."""
        acc = len(self._acc) if self._acc is not None else 0
        return acc + len(self._buf) - self._pos

    def take_pending(self) -> bytes:
        """Hand over every unconsumed byte (complete or not) and empty the scanner.

        Used at a protocol phase switch, e.g. to check that nothing was pipelined
        behind an SSLRequest before the TLS handshake starts.
        """
        out = self._buf[self._pos :]
        if self._acc is not None:
            out += bytes(self._acc)
        self._buf, self._pos, self._acc, self._need = b"", 0, None, 0
        return out

    def unread(self, data: bytes | bytearray | memoryview) -> None:
        """Put bytes handed out by the last ``next_packet``/``next_row_run`` calls back
        in front of the unconsumed ones (whole packets, in order): the caller stopped in
        the middle of a read (a result paused for approval, a command held for review)
        and will pull them again later. ``expected_seq``, when checked, is rewound by
        the number of physical packets put back. Offsets handed out before are invalid
        afterwards (``buffer`` is rebuilt)."""
        if self._broken is not None:
            raise self._broken
        if not data:
            return
        if self.expected_seq is not None:
            self.expected_seq = (self.expected_seq - count_physical_packets(data)) & 0xFF
        rest = self._buf[self._pos :]
        if self._acc is not None:
            rest += bytes(self._acc)
        self._buf, self._pos, self._acc, self._need = bytes(data) + rest, 0, None, 0

    def feed_py(self, data: bytes | bytearray | memoryview) -> None:
        if self._broken is not None:
            raise self._broken
        if self._acc is not None:
            self._acc += data
            if len(self._acc) < self._need:
                return
            end, need = self._logical_end(self._acc, 0)
            if end < 0:
                self._need = need
                return
            self._buf, self._pos, self._acc = bytes(self._acc), 0, None
            return
        rest = len(self._buf) - self._pos
        if rest:
            self._buf = self._buf[self._pos :] + bytes(data)
        else:
            self._buf = data if isinstance(data, bytes) else bytes(data)
        self._pos = 0

    def payload(self, start: int, stop: int) -> bytes:
        """Logical payload of a packet handed out by ``next_packet``."""
        return join_payload(self._buf, start, stop)

    def next_packet_py(self) -> tuple[int, int] | None:
        """Bounds ``(start, stop)`` in ``buffer`` of the next complete logical packet."""
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            if pos < len(buf):
                self._stash(pos)
            return None
        length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        if length < _MAX:
            if length > self.max_payload:
                self._fail(MessageTooLarge(length, self.max_payload, _TOO_LARGE))
            stop = pos + HEADER_SIZE + length
            if stop > len(buf):
                self._stash(pos)
                return None
            self._check_seq(buf[pos + 3])
            self._pos = stop
            return pos, stop
        end, _ = self._logical_end(buf, pos)
        if end < 0:
            self._stash(pos)
            return None
        self._check_seqs(buf, pos, end)
        self._pos = end
        return pos, end

    def next_row_run_py(self) -> tuple[int, int, int]:
        """Collapse complete row packets at the head into ``(start, stop, count)``.

        A row is any logical packet that is not an ERR (0xFF) and not a terminator
        (0xFE with a logical length below 0xFFFFFF: a text row may start with 0xFE
        only as the 8-byte length prefix of a value >= 16 MiB, page
        ``page_protocol_basic_eof_packet``). ``count`` is 0 when the next complete
        packet is not a row or no packet is complete.
        """
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        n = len(buf)
        start = pos = self._pos
        count = 0
        limit = self.max_payload
        seq = self.expected_seq
        while n - pos >= HEADER_SIZE:
            length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            if length < _MAX:
                if length > limit:
                    self._fail(MessageTooLarge(length, limit, _TOO_LARGE))
                stop = pos + HEADER_SIZE + length
                if stop > n:
                    break
                # Empty packets, ERR and terminators are left for next_packet().
                if length == 0:
                    break
                first = buf[pos + HEADER_SIZE]
                if first in (ERR_HEADER, EOF_HEADER):
                    break
                if seq is not None:
                    if buf[pos + 3] != seq:
                        self.expected_seq = seq
                        self._bad_seq(buf[pos + 3], seq)
                    seq = (seq + 1) & 0xFF
            else:
                # >= 16 MiB: never an ERR or a terminator, always a row.
                stop, _ = self._logical_end(buf, pos)
                if stop < 0:
                    break
                if seq is not None:
                    self.expected_seq = seq
                    self._check_seqs(buf, pos, stop)
                    seq = self.expected_seq
            count += 1
            pos = stop
        self.expected_seq = seq
        self._pos = pos
        if count == 0 and pos < n and self._logical_end(buf, pos)[0] < 0:
            self._stash(pos)
        return start, pos, count

    # -- internals ---------------------------------------------------------------------------

    def _logical_end(self, buf: bytes | bytearray, pos: int) -> tuple[int, int]:
        """End offset of the logical packet at ``pos`` or ``(-1, bytes needed)``.

        Enforces the logical size limit from every visible header.
        """
        total = 0
        n = len(buf)
        limit = self.max_payload
        while True:
            if n - pos < HEADER_SIZE:
                return -1, pos + HEADER_SIZE
            length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            total += length
            if total > limit:
                self._fail(MessageTooLarge(total, limit, _TOO_LARGE))
            pos += HEADER_SIZE + length
            if length < _MAX:
                return (pos, pos) if pos <= n else (-1, pos)

    def _stash(self, pos: int) -> None:
        """Move an incomplete tail into the accumulator."""
        tail = self._buf[pos:]
        _, need = self._logical_end(tail, 0)
        self._acc = bytearray(tail)
        self._need = need
        self._buf, self._pos = b"", 0

    def _check_seq(self, got: int) -> None:
        expected = self.expected_seq
        if expected is None:
            return
        if got != expected:
            self._bad_seq(got, expected)
        self.expected_seq = (expected + 1) & 0xFF

    def _check_seqs(self, buf: bytes, pos: int, end: int) -> None:
        while pos < end:
            self._check_seq(buf[pos + 3])
            pos += HEADER_SIZE + (buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16))

    def _bad_seq(self, got: int, expected: int) -> None:
        self._fail(PeerViolation(f"packet sequence id {got}, expected {expected}", _OUT_OF_ORDER))

    def _fail(self, error: PeerViolation) -> None:
        self._broken = error
        self._buf, self._pos, self._acc = b"", 0, None
        raise error


class PacketScannerPy(_ScannerMethods, _ScannerState):
    """The pure-Python scanner: the reference the compiled one is tested against."""

    __slots__ = ()
    feed = _ScannerMethods.feed_py
    next_packet = _ScannerMethods.next_packet_py
    next_row_run = _ScannerMethods.next_row_run_py


if TYPE_CHECKING:  # one interface either way: type checkers see the reference
    PacketScanner = PacketScannerPy
else:
    try:  # the compiled fast path, built by setuptools where a C compiler is present
        from ._wire import ScannerCore
    except ImportError:  # pragma: no cover - exercised where no compiler is available
        PacketScanner = PacketScannerPy
    else:

        class PacketScanner(_ScannerMethods, ScannerCore):
            __doc__ = _ScannerMethods.__doc__
            __slots__ = ()


COMPILED = PacketScanner is not PacketScannerPy


class PacketReader:
    """Complete logical packets with their sequence ids, for the handshake and command parsing.

    ``feed(data)`` returns every logical packet completed by ``data``. Built on
    ``PacketScanner`` so both paths share one framing implementation.
    """

    __slots__ = ("_scanner",)

    def __init__(self, max_payload: int = 1 << 24, *, expected_seq: int | None = 0) -> None:
        self._scanner = PacketScanner(max_payload, expected_seq=expected_seq)

    @property
    def expected_seq(self) -> int | None:
        return self._scanner.expected_seq

    @expected_seq.setter
    def expected_seq(self, value: int | None) -> None:
        self._scanner.expected_seq = None if value is None else value & 0xFF

    def reset_sequence(self, seq: int = 0) -> None:
        """Start a new exchange (a new command resets sequence ids to 0)."""
        self._scanner.expected_seq = seq & 0xFF

    @property
    def pending(self) -> int:
        return self._scanner.pending

    def take_pending(self) -> bytes:
        return self._scanner.take_pending()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        scanner = self._scanner
        scanner.feed(data)
        out: list[Packet] = []
        while (entry := scanner.next_packet()) is not None:
            start, stop = entry
            buf = scanner.buffer
            out.append(Packet(buf[start + 3], join_payload(buf, start, stop)))
        return out
