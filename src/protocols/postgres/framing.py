"""Message framing and the hot-path run scanner.

A typed message is ``type(1) | length(int32, counts itself) | body``. The
scanner walks message headers inside the ``bytes`` object a read produced,
without copying, and reports:

* boundaries of every complete message that is *not* a DataRow, and
* runs of consecutive DataRows collapsed into one entry with a count,

so a result of thousands of rows costs one 5-byte header read and a counter
increment per row and is forwarded as one slice (the idea of asyncpg's
``redirect_messages``). Only a message that straddles two reads is copied.
The walk itself runs in C (``_wire.scan``) where the extension was built: it runs on
every read of both directions; ``scan_py`` is the reference it is tested against.

Rules enforced here:
* a declared length below 4 is a framing violation (the length counts itself);
* a declared length above ``max_message_size`` is refused from the header alone,
  before the body is buffered;
* after a violation the stream is terminal: ``feed`` keeps raising.
"""

from __future__ import annotations

from collections.abc import Callable
from struct import Struct
from typing import TYPE_CHECKING

from ..errors import MessageTooLarge, PeerViolation, UsageError
from .constants import HEADER_SIZE

_HEADER = Struct("!BI")
_unpack_header = _HEADER.unpack_from
_INT32 = Struct("!I")

DATA_ROW = ord("D")


def build_message(mtype: int, body: bytes | bytearray = b"") -> bytes:
    """Frame ``body`` as a typed message."""
    return _HEADER.pack(mtype, len(body) + 4) + body


def build_untyped(body: bytes) -> bytes:
    """Frame ``body`` as an untyped first packet (StartupMessage, SSLRequest, ...)."""
    return _INT32.pack(len(body) + 4) + body


def splice(buf: bytes, end: int, edits: list[tuple[int, int, bytes]]) -> bytes:
    """``buf[:end]`` with each ``(start, stop, replacement)`` span replaced (the spans are
    whole messages, in order, within ``end``)."""
    parts: list[bytes | memoryview] = []
    view = memoryview(buf)
    pos = 0
    for start, stop, replacement in edits:
        parts.append(view[pos:start])
        parts.append(replacement)
        pos = stop
    parts.append(view[pos:end])
    return b"".join(parts)


class _ScannerMethods:
    """Splits a stream into complete messages; one instance per direction.

    ``feed(data)`` returns ``(buf, end, entries)``: ``buf[:end]`` is the run of
    complete messages (``buf`` is ``data`` itself unless a straddling message had
    to be joined), and ``entries`` lists ``(type, start, stop, count)`` tuples in
    stream order; ``count`` is 1 except for a collapsed DataRow run. Bytes after
    ``end`` are kept for the next call.
    """

    if not TYPE_CHECKING:  # a mixin: the state is the other base's (its types below)
        __slots__ = ()

    _pending: bytes
    _broken: PeerViolation | None
    max_message_size: int
    collapse_data_rows: bool

    def __init__(self, max_message_size: int, *, collapse_data_rows: bool = True) -> None:
        if max_message_size < HEADER_SIZE:
            raise UsageError("max_message_size too small")
        self.max_message_size = max_message_size
        self.collapse_data_rows = collapse_data_rows
        self._pending = b""
        self._broken = None

    @property
    def pending(self) -> int:
        """Bytes held back because they do not yet form a complete message."""
        return len(self._pending)

    def take_pending(self) -> bytes:
        """Hand over the unconsumed bytes (used when switching protocol phase)."""
        out, self._pending = self._pending, b""
        return out

    def unread(self, data: bytes | memoryview) -> None:
        """Put complete messages already returned by ``feed`` back in front of the held
        bytes: the next ``feed`` (``feed(b"")`` to resume) returns them again. Used to stop
        in the middle of a read (a paused result) without buffering more than that read."""
        if data:
            self._pending = bytes(data) + self._pending

    def feed_py(self, data: bytes) -> tuple[bytes, int, list[tuple[int, int, int, int]]]:
        if self._broken is not None:
            raise self._broken
        buf = self._pending + data if self._pending else data
        entries, pos, bad = _scan(buf, self.max_message_size, self.collapse_data_rows)
        if bad >= 0:
            raise self._refuse(bad)
        self._pending = buf[pos:] if pos < len(buf) else b""
        return buf, pos, entries

    def _refuse(self, length: int) -> PeerViolation:
        """The error for a header declaring ``length``; the stream is terminal from now on
        (every later ``feed`` raises it again)."""
        self._broken = (
            PeerViolation(f"invalid message length {length}")
            if length < 4
            else MessageTooLarge(length, self.max_message_size)
        )
        self._pending = b""
        return self._broken


class _ScannerState:
    """The scanner's state as plain slots: the base of the pure-Python scanner. The
    compiled ``_wire.ScannerCore`` has the same attributes (in C) and is the base of
    ``MessageScanner`` where the extension was built."""

    __slots__ = ("_broken", "_pending", "collapse_data_rows", "max_message_size")


class MessageScannerPy(_ScannerMethods, _ScannerState):
    """The pure-Python scanner: the reference the compiled one is tested against."""

    __doc__ = _ScannerMethods.__doc__
    __slots__ = ()
    feed = _ScannerMethods.feed_py


def scan_py(
    buf: bytes, limit: int, collapse: bool
) -> tuple[list[tuple[int, int, int, int]], int, int]:
    """The header walk of ``MessageScanner.feed``: ``(entries, pos, bad)``, where ``pos``
    is where the incomplete tail starts and ``bad`` is -1, or the invalid declared length
    (below 4 or above ``limit``) of the header at ``pos``. The pure-Python reference the
    compiled one (``_wire.scan``) is tested against."""
    entries: list[tuple[int, int, int, int]] = []
    append = entries.append
    pos = 0
    n = len(buf)
    run_start = -1
    run_count = 0
    bad = -1
    while n - pos >= HEADER_SIZE:
        mtype, length = _unpack_header(buf, pos)
        if length < 4 or length > limit:
            bad = length
            break
        stop = pos + 1 + length
        if stop > n:
            break
        if mtype == DATA_ROW and collapse:
            if run_count == 0:
                run_start = pos
            run_count += 1
        else:
            if run_count:
                append((DATA_ROW, run_start, pos, run_count))
                run_count = 0
            append((mtype, pos, stop, 1))
        pos = stop
    if run_count:
        append((DATA_ROW, run_start, pos, run_count))
    return entries, pos, bad


_scan: Callable[[bytes, int, bool], tuple[list[tuple[int, int, int, int]], int, int]]
try:  # the compiled walk, built by setuptools where a C compiler is present
    from ._wire import scan as _scan
except ImportError:  # pragma: no cover - exercised where no compiler is available
    _scan = scan_py

COMPILED = _scan is not scan_py


if TYPE_CHECKING:  # one interface either way: type checkers see the reference
    MessageScanner = MessageScannerPy
else:
    try:  # the compiled state and feed, built by setuptools where a C compiler is present
        from ._wire import ScannerCore
    except ImportError:  # pragma: no cover - exercised where no compiler is available
        MessageScanner = MessageScannerPy
    else:

        class MessageScanner(_ScannerMethods, ScannerCore):
            __doc__ = _ScannerMethods.__doc__
            __slots__ = ()


SCANNER_COMPILED = MessageScanner is not MessageScannerPy
