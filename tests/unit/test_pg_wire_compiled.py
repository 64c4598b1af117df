"""The compiled message scanner and Bind parser (_wire.c) against their pure-Python
references (framing.scan_py, framing.MessageScannerPy, messages.parse_bind_py): same
results and same errors on valid and malformed input, lying lengths included."""

from __future__ import annotations

import functools
import itertools
import shutil
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import MessageTooLarge, PeerViolation
from protocols.postgres import framing, messages
from protocols.postgres.constants import SqlState
from protocols.postgres.framing import MessageScanner, MessageScannerPy, build_message, scan_py
from protocols.postgres.messages import Bind, parse_bind, parse_bind_py

from .test_pg_messages import _bind_body

# The comparisons need the extension; whether it must exist is the next test's question.
compiled_only = pytest.mark.skipif(not framing.COMPILED, reason="extension not built")


def test_the_compiled_scanner_and_bind_parser_are_built_and_used() -> None:
    # CI builds with a C compiler: a silent fallback to Python would hide a broken build.
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine: the pure-Python implementation runs")
    from protocols.postgres import _wire

    assert framing._scan is _wire.scan
    assert framing.SCANNER_COMPILED and issubclass(MessageScanner, _wire.ScannerCore)
    assert isinstance(messages.parse_bind, functools.partial)
    assert messages.parse_bind.func is _wire.parse_bind


def _compiled_scan(buf: bytes, limit: int, collapse: bool) -> Any:
    from protocols.postgres import _wire

    return _wire.scan(buf, limit, collapse)


def _outcome(fn: Callable[[bytes], Any], body: bytes) -> tuple[str, Any]:
    try:
        return ("ok", fn(body))
    except PeerViolation as exc:
        return (type(exc).__name__, (exc.message, exc.code))


messages_strategy = st.lists(
    st.tuples(st.sampled_from(b"DCZTE2BSn"), st.binary(max_size=40)), max_size=12
)


@compiled_only
@settings(max_examples=300)
@given(messages_strategy, st.integers(0, 600), st.booleans(), st.integers(5, 64))
def test_scan_matches_the_reference(
    msgs: list[tuple[int, bytes]], cut: int, collapse: bool, limit: int
) -> None:
    stream = b"".join(build_message(t, body) for t, body in msgs)
    for buf in (stream, stream[:cut]):  # whole, and cut anywhere (an incomplete tail)
        assert _compiled_scan(buf, limit, collapse) == scan_py(buf, limit, collapse)


@compiled_only
@settings(max_examples=300)
@given(st.binary(max_size=80), st.integers(4, 1 << 31), st.booleans())
def test_scan_matches_the_reference_on_garbage(buf: bytes, limit: int, collapse: bool) -> None:
    # Random bytes: lengths below 4, above the limit, above 2^31 (negative Int32s).
    assert _compiled_scan(buf, limit, collapse) == scan_py(buf, limit, collapse)


@compiled_only
@pytest.mark.parametrize(
    ("header", "error"),
    [
        (b"Q\x00\x00\x00\x03", PeerViolation),
        (b"Q\xff\xff\xff\xff", MessageTooLarge),
        (b"Q\x00\x01\x00\x00", MessageTooLarge),
    ],
)
def test_feed_raises_and_stays_broken(header: bytes, error: type[Exception]) -> None:
    scanner = MessageScanner(1024)
    with pytest.raises(error):
        scanner.feed(build_message(ord("S")) + header)
    with pytest.raises(error):
        scanner.feed(build_message(ord("S")))
    assert scanner.pending == 0


def _drive(scanner: Any, reads: list[bytes], unread_at: int, limit_after: int | None) -> Any:
    """Every outcome of feeding ``reads``: results (``buf`` as bytes), errors, held bytes;
    the messages of read ``unread_at`` are put back once and fed again (a paused result)."""
    out: list[Any] = []
    for i, data in enumerate(reads):
        try:
            buf, end, entries = scanner.feed(data)
            out.append(("ok", bytes(buf), end, entries, scanner.pending))
            if i == unread_at and end:
                scanner.unread(memoryview(buf)[:end])
                buf, end, entries = scanner.feed(b"")
                out.append(("again", bytes(buf), end, entries, scanner.pending))
        except PeerViolation as exc:
            out.append((type(exc).__name__, exc.message, exc.code, scanner.pending))
        if limit_after == i:
            scanner.max_message_size = 16
    out.append(("held", scanner.take_pending(), scanner.pending))
    return out


@compiled_only
@settings(max_examples=300)
@given(
    messages_strategy,
    st.lists(st.integers(0, 600), max_size=6),
    st.booleans(),
    st.integers(5, 64),
    st.binary(max_size=12),
    st.integers(0, 6),
    st.none() | st.integers(0, 6),
)
def test_the_compiled_scanner_feeds_as_the_reference_does(
    msgs: list[tuple[int, bytes]],
    cuts: list[int],
    collapse: bool,
    limit: int,
    tail: bytes,
    unread_at: int,
    limit_after: int | None,
) -> None:
    """The same reads (messages in random splits, then random bytes: lying lengths) give
    the same results, errors and held bytes, put back and fed again included."""
    stream = b"".join(build_message(t, body) for t, body in msgs) + tail
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    reads = [stream[a:b] for a, b in itertools.pairwise(bounds)] + [b""]
    compiled = MessageScanner(limit, collapse_data_rows=collapse)
    reference = MessageScannerPy(limit, collapse_data_rows=collapse)
    assert _drive(compiled, reads, unread_at, limit_after) == _drive(
        reference, reads, unread_at, limit_after
    )


@compiled_only
def test_a_read_that_completes_no_message_is_held_whole() -> None:
    scanner = MessageScanner(1024)
    read = build_message(ord("Z"), b"I")
    buf, end, entries = scanner.feed(read)
    assert buf is read and end == len(read)  # nothing is copied
    assert scanner.feed(read[:3]) == (read[:3], 0, []) and scanner.pending == 3
    buf, end, entries = scanner.feed(read[3:] + read[:1])
    assert (buf, end, entries) == (read + read[:1], 6, [(ord("Z"), 0, 6, 1)])
    assert scanner._pending == read[:1]


bind_strategy = st.builds(
    _bind_body,
    st.binary(max_size=10).filter(lambda b: b"\0" not in b),
    st.binary(max_size=10).filter(lambda b: b"\0" not in b),
    st.lists(st.sampled_from([0, 1]), max_size=3),
    st.lists(st.one_of(st.none(), st.binary(max_size=30)), max_size=6),
    st.lists(st.sampled_from([0, 1]), max_size=4),
)


@compiled_only
@settings(max_examples=300)
@given(bind_strategy, st.integers(0, 200), st.binary(max_size=6))
def test_parse_bind_matches_the_reference(body: bytes, cut: int, junk: bytes) -> None:
    for variant in (body, body[:cut], body + junk):
        compiled, reference = _outcome(parse_bind, variant), _outcome(parse_bind_py, variant)
        assert compiled == reference
        if compiled[0] == "ok":
            assert type(compiled[1]) is Bind


@compiled_only
@settings(max_examples=300)
@given(st.binary(max_size=60))
def test_parse_bind_matches_the_reference_on_garbage(body: bytes) -> None:
    assert _outcome(parse_bind, body) == _outcome(parse_bind_py, body)


@compiled_only
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"no-terminator", "unterminated string in message"),
        (_bind_body(b"", b"", [0, 1], [b"a"], []), "malformed Bind message"),
        (
            _bind_body(b"", b"", [], [b"a"], []).replace(b"\0\0\0\x01a", b"\xff\xff\xff\xf9a"),
            "malformed Bind parameter length",
        ),
        (
            _bind_body(b"", b"", [], [b"a"], []).replace(b"\0\0\0\x01a", b"\0\0\0\x63a"),
            "malformed Bind parameter length",
        ),
        (_bind_body(b"", b"", [], [], []) + b"junk", "trailing bytes in Bind message"),
    ],
)
def test_compiled_bind_errors_are_protocol_violations(body: bytes, message: str) -> None:
    with pytest.raises(PeerViolation) as caught:
        parse_bind(body)
    assert caught.value.message == message
    assert caught.value.code == SqlState.PROTOCOL_VIOLATION


@compiled_only
def test_compiled_bind_is_a_bind() -> None:
    body = _bind_body(b"p", b"s1", [1], [b"\x00\x01", None], [0, 1])
    bind = parse_bind(body)
    assert bind == Bind(b"p", b"s1", (1,), (b"\x00\x01", None), (0, 1))
    assert bind.parameter_format(1) == 1 and bind._replace(portal=b"q").portal == b"q"


class _Sneaky(bytearray):
    """A read whose ``__radd__`` drops the scanner's held bytes (their last reference),
    allocates bytes of the same size (which reuse the freed block) and declines: the
    scanner must still add the bytes it held. The compiled one once added freed memory."""

    scanner: Any = None
    keep: ClassVar[list[bytes]] = []

    def __radd__(self, other: object) -> object:
        del other
        self.scanner._pending = b""
        self.keep.append(bytes([0x41, 0x41, 0x41]))
        return NotImplemented


@pytest.mark.parametrize("cls", [framing.MessageScannerPy, framing.MessageScanner])
def test_a_read_that_replaces_the_held_bytes_while_added_is_safe(cls: Any) -> None:
    scanner = cls(1000)
    # A Sync, then three bytes of the next message, held (a slice: the scanner's only
    # reference to them).
    assert len(scanner.feed(b"S\x00\x00\x00\x04" + bytes([66, 0, 0]))[2]) == 1
    read = _Sneaky(b"\x00\x04")
    read.scanner = scanner
    buf, end, entries = scanner.feed(read)
    assert bytes(buf[:end]) == b"B\x00\x00\x00\x04"
    assert [tuple(e) for e in entries] == [(ord("B"), 0, 5, 1)]
