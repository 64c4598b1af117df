"""MessageScanner: the hot-path splitter. Same stream fed whole, byte by byte and
in random splits must give the same messages; lying lengths must raise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import MessageTooLarge, PeerViolation
from protocols.postgres.framing import MessageScanner, build_message

# A captured-style backend transcript: RowDescription, three DataRows,
# CommandComplete, ReadyForQuery (SELECT g FROM generate_series(1,3) g).
ROW_DESCRIPTION = bytes.fromhex("540000001a00016700000000000000000000170004ffffffff0000")
TRANSCRIPT = (
    ROW_DESCRIPTION
    + build_message(ord("D"), b"\x00\x01\x00\x00\x00\x011")
    + build_message(ord("D"), b"\x00\x01\x00\x00\x00\x012")
    + build_message(ord("D"), b"\x00\x01\x00\x00\x00\x013")
    + build_message(ord("C"), b"SELECT 3\x00")
    + build_message(ord("Z"), b"I")
)


def collect(
    chunks: list[bytes], max_size: int = 1 << 20
) -> tuple[list[tuple[int, bytes, int]], bytes]:
    """Feed chunks; return (type, message bytes, count) entries and all forwarded bytes."""
    scanner = MessageScanner(max_size)
    out: list[tuple[int, bytes, int]] = []
    forwarded = bytearray()
    for chunk in chunks:
        buf, end, entries = scanner.feed(chunk)
        forwarded += buf[:end]
        for mtype, start, stop, count in entries:
            out.append((mtype, bytes(buf[start:stop]), count))
    assert scanner.pending == 0
    return out, bytes(forwarded)


def normalise(entries: list[tuple[int, bytes, int]]) -> list[tuple[int, bytes]]:
    """Merge DataRow runs so differently split streams compare equal."""
    merged: list[tuple[int, bytes]] = []
    for mtype, data, _ in entries:
        if merged and mtype == ord("D") and merged[-1][0] == ord("D"):
            merged[-1] = (mtype, merged[-1][1] + data)
        else:
            merged.append((mtype, data))
    return merged


def test_whole_stream_collapses_data_row_run() -> None:
    entries, forwarded = collect([TRANSCRIPT])
    assert forwarded == TRANSCRIPT
    assert [(chr(t), c) for t, _, c in entries] == [("T", 1), ("D", 3), ("C", 1), ("Z", 1)]


def test_byte_by_byte_gives_same_messages() -> None:
    whole, _ = collect([TRANSCRIPT])
    entries, forwarded = collect([TRANSCRIPT[i : i + 1] for i in range(len(TRANSCRIPT))])
    assert forwarded == TRANSCRIPT
    assert normalise(entries) == normalise(whole)
    assert sum(c for t, _, c in entries if t == ord("D")) == 3


@given(st.lists(st.integers(min_value=0, max_value=len(TRANSCRIPT)), max_size=12))
def test_random_splits_give_same_messages(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks, prev = [], 0
    for p in points:
        chunks.append(TRANSCRIPT[prev:p])
        prev = p
    chunks.append(TRANSCRIPT[prev:])
    entries, forwarded = collect(chunks)
    assert forwarded == TRANSCRIPT
    assert normalise(entries) == normalise(collect([TRANSCRIPT])[0])


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(b"DTCZEN"), st.binary(max_size=40)), max_size=30))
def test_round_trip_arbitrary_messages(messages: list[tuple[int, bytes]]) -> None:
    stream = b"".join(build_message(t, body) for t, body in messages)
    entries, forwarded = collect([stream])
    assert forwarded == stream
    rebuilt = b"".join(data for _, data, _ in entries)
    assert rebuilt == stream
    assert sum(c for _, _, c in entries) == len(messages)


def test_incomplete_tail_is_held_back() -> None:
    scanner = MessageScanner(1024)
    _, end, entries = scanner.feed(TRANSCRIPT[:-3])
    assert end == len(TRANSCRIPT) - 6  # the Z message (6 bytes) is not complete
    assert scanner.pending == 3
    _buf, end, entries = scanner.feed(TRANSCRIPT[-3:])
    assert [chr(e[0]) for e in entries] == ["Z"]


@pytest.mark.parametrize("length", [0, 1, 3])
def test_length_below_four_is_a_violation(length: int) -> None:
    scanner = MessageScanner(1024)
    with pytest.raises(PeerViolation):
        scanner.feed(b"Q" + length.to_bytes(4, "big") + b"x" * 10)
    # Terminal: the stream is never resynchronised.
    with pytest.raises(PeerViolation):
        scanner.feed(build_message(ord("Q"), b"SELECT 1\x00"))


def test_oversized_message_refused_from_header_alone() -> None:
    scanner = MessageScanner(1024)
    # Only the header arrives: the body is never buffered.
    with pytest.raises(MessageTooLarge) as info:
        scanner.feed(b"Q" + (10_000_000).to_bytes(4, "big"))
    assert info.value.length == 10_000_000
    assert scanner.pending == 0


def test_negative_length_is_refused() -> None:
    scanner = MessageScanner(1 << 30)
    with pytest.raises(PeerViolation):
        scanner.feed(b"D\xff\xff\xff\xfe")


def test_many_messages_in_one_read_and_trailing_garbage_held() -> None:
    stream = build_message(ord("Z"), b"I") * 500 + b"Z\x00"
    scanner = MessageScanner(1024)
    _buf, end, entries = scanner.feed(stream)
    assert len(entries) == 500 and end == 500 * 6
    assert scanner.pending == 2


def test_splice_replaces_whole_messages_in_order() -> None:
    from protocols.postgres.framing import build_message, splice

    a, b, c = build_message(ord("Q"), b"A\0"), build_message(ord("Q"), b"BB\0"), b"tail"
    buf = a + b + c
    out = splice(buf, len(a) + len(b), [(0, len(a), b"X"), (len(a), len(a) + len(b), b"YY")])
    assert out == b"XYY"
    assert splice(buf, len(buf), [(len(a), len(a) + len(b), b"")]) == a + c


def test_unread_puts_messages_back_in_front_of_held_bytes() -> None:
    from protocols.postgres.framing import MessageScanner, build_message

    scanner = MessageScanner(1 << 20)
    a, b, c = (
        build_message(ord("C"), b"a\x00"),
        build_message(ord("Z"), b"I"),
        build_message(ord("C"), b"ccc\x00"),
    )
    buf, end, entries = scanner.feed(a + b + c[:3])
    assert end == len(a + b) and len(entries) == 2
    scanner.unread(buf[len(a) : end])  # stop after the first message
    buf, end, entries = scanner.feed(b"")
    assert buf[:end] == b and [e[0] for e in entries] == [ord("Z")]
    buf, end, entries = scanner.feed(c[3:])
    assert buf[:end] == c
