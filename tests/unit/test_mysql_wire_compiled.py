"""The compiled MySQL packet scanner (protocols/mysql/_wire.c) against the pure-Python
reference (framing.PacketScannerPy): driven with the same reads and the same calls, both
hand out the same packets and runs, keep the same state and raise the same errors, for
valid streams, streams cut anywhere, wrong sequence ids, oversized and continued packets."""

from __future__ import annotations

import functools
import gc
import itertools
import shutil
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import MessageTooLarge, PeerViolation
from protocols.mysql import framing
from protocols.mysql.framing import PacketScanner, PacketScannerPy, build_packets

# The comparisons need the extension; whether it must exist is the next test's question.
compiled_only = pytest.mark.skipif(not framing.COMPILED, reason="extension not built")

MAX = 0xFFFFFF


def test_the_compiled_scanner_is_built_and_used() -> None:
    # CI builds with a C compiler: a silent fallback to Python would hide a broken build.
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine: the pure-Python implementation runs")
    from protocols.mysql import _wire

    assert issubclass(PacketScanner, _wire.ScannerCore)
    assert PacketScanner.next_packet is _wire.ScannerCore.next_packet  # type: ignore[comparison-overlap]


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", call())
    except PeerViolation as exc:  # MessageTooLarge too
        return (type(exc).__name__, (exc.message, exc.code))


def _state(s: Any) -> tuple[Any, ...]:
    return (s.pending, s.expected_seq, s.buffer, s._pos, s._need, s._acc, repr(s._broken))


def _drive(s: Any, chunks: list[bytes], calls: list[int], unreads: list[bool]) -> list[Any]:
    """Feed ``chunks`` one by one; after each, pull until nothing is complete, choosing
    next_row_run or next_packet from ``calls``; sometimes put the last packet back."""
    log: list[Any] = []
    k = 0
    for chunk in chunks:
        out = _outcome(functools.partial(s.feed, chunk))
        log.append(("feed", out, _state(s)))
        if out[0] != "ok":
            continue
        for _ in range(64):
            use_rows = calls[k % len(calls)] if calls else 0
            k += 1
            if use_rows:
                out = _outcome(s.next_row_run)
                log.append(("rows", out, _state(s)))
                if out[0] != "ok" or out[1][2] == 0:
                    if out[0] != "ok":
                        break
                    continue
            else:
                out = _outcome(s.next_packet)
                log.append(("packet", out, _state(s)))
                if out[0] != "ok" or out[1] is None:
                    break
                start, stop = out[1]
                log.append(("payload", s.payload(start, stop)))
                if unreads and unreads[k % len(unreads)]:
                    back = bytes(s.buffer[start:stop])
                    log.append(("unread", _outcome(functools.partial(s.unread, back)), _state(s)))
                    out = _outcome(s.next_packet)  # and take it again
                    log.append(("again", out, _state(s)))
                    if out[0] != "ok" or out[1] is None:
                        break
    return log


# One logical packet: its payload's first byte decides what the row walk makes of it
# (0xFE terminator, 0xFF ERR, anything else a row; empty packets are never rows).
packet = st.tuples(
    st.one_of(st.sampled_from([b"", b"\xfe", b"\xff", b"\x00", b"\xfb"]), st.binary(max_size=3)),
    st.binary(max_size=24),
    st.sampled_from([0, 0, 0, 0, 1, 200]),  # added to the right sequence id (wrong if > 0)
)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)] or [b""]


def _stream(packets: list[tuple[bytes, bytes, int]], first_seq: int) -> bytes:
    out = bytearray()
    seq = first_seq
    for head, rest, skew in packets:
        framed, nxt = build_packets(head + rest, seq + skew)
        out += framed
        seq = nxt
    return bytes(out)


@compiled_only
@settings(max_examples=400, deadline=None)
@given(
    st.lists(packet, max_size=14),
    st.lists(st.integers(0, 400), max_size=5),
    st.lists(st.integers(0, 1), min_size=1, max_size=8),
    st.lists(st.booleans(), max_size=6),
    st.one_of(st.none(), st.integers(0, 255), st.integers(248, 255)),
    st.integers(1, 40),
)
def test_same_packets_state_and_errors_as_the_reference(
    packets: list[tuple[bytes, bytes, int]],
    cuts: list[int],
    calls: list[int],
    unreads: list[bool],
    first_seq: int | None,
    max_payload: int,
) -> None:
    data = _stream(packets, first_seq or 0)
    chunks = _chunks(data, cuts)
    compiled = PacketScanner(max_payload, expected_seq=first_seq)
    reference = PacketScannerPy(max_payload, expected_seq=first_seq)
    assert _drive(compiled, chunks, calls, unreads) == _drive(reference, chunks, calls, unreads)


@compiled_only
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80), st.lists(st.integers(0, 80), max_size=4), st.integers(1, 300))
def test_random_bytes_give_the_same_results(data: bytes, cuts: list[int], limit: int) -> None:
    chunks = _chunks(data, cuts)
    for seq in (None, 0):
        for calls in ([0], [1], [1, 0]):
            a = _drive(PacketScanner(limit, expected_seq=seq), chunks, calls, [])
            b = _drive(PacketScannerPy(limit, expected_seq=seq), chunks, calls, [])
            assert a == b


@compiled_only
@pytest.mark.parametrize("calls", [[0], [1], [1, 0]])
def test_continued_packets_of_16_mib_take_the_reference_path(calls: list[int]) -> None:
    # A logical payload of exactly 0xFFFFFF bytes is two physical packets (the second
    # empty); one of 0xFFFFFF + 10 is a full one and a 10-byte continuation.
    data = _stream([(b"\x01", b"r" * (MAX - 1), 0), (b"\x02", b"s" * (MAX + 9), 0)], 5)
    data += _stream([(b"\xfe", b"\x00\x00\x02\x00", 0)], 9)
    chunks = [data[:100], data[100 : MAX + 50], data[MAX + 50 :]]
    for limit in (1 << 25, MAX + 5):  # the second too small for the second packet
        a = _drive(PacketScanner(limit, expected_seq=5), chunks, calls, [])
        b = _drive(PacketScannerPy(limit, expected_seq=5), chunks, calls, [])
        assert a == b


@compiled_only
@pytest.mark.parametrize("calls", [[0], [1], [1, 0]])
def test_sequence_ids_wrap_after_255(calls: list[int]) -> None:
    rows = [(b"\x01", bytes([i]), 0) for i in range(6)]
    data = _stream([*rows, (b"\xfe", b"\x00\x00\x02\x00", 0)], 252)
    a = _drive(PacketScanner(64, expected_seq=252), [data], calls, [])
    assert a == _drive(PacketScannerPy(64, expected_seq=252), [data], calls, [])
    assert a[-1][2][1] in (2, 3)  # past 255: the six rows taken, and the EOF unless rows only


@compiled_only
def test_errors_leave_the_scanner_broken_like_the_reference() -> None:
    for make in (PacketScanner, PacketScannerPy):
        s = make(8, expected_seq=0)
        s.feed(b"\x09\x00\x00\x00" + b"x" * 9)
        with pytest.raises(MessageTooLarge):
            s.next_packet()
        with pytest.raises(MessageTooLarge):  # terminal: the same error every time after
            s.next_row_run()
        with pytest.raises(MessageTooLarge):
            s.feed(b"\x01\x00\x00\x00x")


@compiled_only
def test_expected_seq_is_none_or_a_sequence_id() -> None:
    s = PacketScanner(10)
    assert s.expected_seq is None
    s.expected_seq = 255
    assert s.expected_seq == 255
    s.expected_seq = None
    assert s.expected_seq is None
    for bad in (-1, 256):
        with pytest.raises(ValueError, match="out of range"):
            s.expected_seq = bad


@compiled_only
def test_the_failure_it_keeps_is_visible_to_the_cycle_collector() -> None:
    # The kept exception's traceback holds frames that hold the scanner: a cycle only
    # the collector can free, which it can only see through tp_traverse.
    s = PacketScanner(4, expected_seq=0)
    s.feed(b"\x05\x00\x00\x00hello")
    with pytest.raises(MessageTooLarge):
        s.next_packet()
    assert s._broken in gc.get_referents(s)


@pytest.mark.parametrize("pos", [-3, -100_000_000, 10**9])
def test_an_offset_outside_the_buffer_takes_the_reference_path(pos: int) -> None:
    """``_pos`` is writable: one outside ``_buf`` is the reference's to handle (the
    compiled fast path once read before the buffer)."""
    outcomes = []
    for cls in (PacketScannerPy, PacketScanner):
        scanner = cls(1 << 24)
        scanner.feed(b"\x01\x00\x00\x00A" * 4)
        scanner._pos = pos
        try:
            outcomes.append(("ok", scanner.next_row_run()))
        except Exception as exc:
            outcomes.append(("raised", type(exc).__name__))
    assert outcomes[0] == outcomes[1]
