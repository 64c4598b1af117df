"""MySQL framing: 3-byte length + seq, 16 MiB continuation, sequence checks, size limits,
renumbering, and the hot-path row-run scanner."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import MessageTooLarge, PeerViolation, UsageError
from protocols.mysql.constants import MAX_PACKET_PAYLOAD, ErrorCode
from protocols.mysql.framing import (
    Packet,
    PacketReader,
    PacketScanner,
    build_packet_header,
    build_packets,
    count_physical_packets,
    join_payload,
    renumber_packets,
    renumber_packets_in_place,
)
from protocols.mysql.packets import build_eof_packet, build_err_packet, build_lenenc_string

MAX = MAX_PACKET_PAYLOAD
BIG = 1 << 26  # limit used when 16 MiB payloads are expected


def chunks_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


def read_all(data_chunks: list[bytes], limit: int = BIG, seq: int | None = 0) -> list[Packet]:
    reader = PacketReader(limit, expected_seq=seq)
    out: list[Packet] = []
    for chunk in data_chunks:
        out += reader.feed(chunk)
    assert reader.pending == 0
    return out


# -- build_packets and the 16 MiB boundary ----------------------------------------------------


def test_small_packet_header() -> None:
    framed, nxt = build_packets(b"\x03SELECT 1", 0)
    assert framed == b"\x09\x00\x00\x00\x03SELECT 1"
    assert nxt == 1
    assert build_packets(b"", 255) == (b"\x00\x00\x00\xff", 0)


@pytest.mark.parametrize(
    ("size", "physical"),
    [
        (MAX - 1, [MAX - 1]),
        (MAX, [MAX, 0]),
        (MAX + 1, [MAX, 1]),
        (2 * MAX, [MAX, MAX, 0]),
        (2 * MAX + 5, [MAX, MAX, 5]),
    ],
    ids=["0xFFFFFE", "0xFFFFFF", "0xFFFFFF+1", "2x0xFFFFFF", "2x0xFFFFFF+5"],
)
def test_16mib_boundaries(size: int, physical: list[int]) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    framed, nxt = build_packets(payload, 254)
    # physical packet lengths and sequence ids
    pos, lengths, seqs = 0, [], []
    while pos < len(framed):
        n = int.from_bytes(framed[pos : pos + 3], "little")
        lengths.append(n)
        seqs.append(framed[pos + 3])
        pos += 4 + n
    assert lengths == physical
    assert seqs == [(254 + i) & 0xFF for i in range(len(physical))]
    assert nxt == (254 + len(physical)) & 0xFF
    assert count_physical_packets(framed) == len(physical)
    # reassembly, whole and in a few large pieces
    (pkt,) = read_all([framed], seq=254)
    assert pkt.seq == 254 and pkt.payload == payload
    third = len(framed) // 3
    (pkt2,) = read_all(chunks_of(framed, [3, MAX + 2, third, 2 * third, len(framed) - 1]), seq=254)
    assert pkt2.payload == payload
    assert join_payload(framed, 0, len(framed)) == payload


def test_reader_expected_seq_continues_after_continuation() -> None:
    payload = b"x" * MAX
    framed, nxt = build_packets(payload, 0)
    more, _ = build_packets(b"next", nxt)
    reader = PacketReader(BIG, expected_seq=0)
    pkts = reader.feed(framed + more)
    assert [p.seq for p in pkts] == [0, 2]
    assert reader.expected_seq == 3


# -- sequence ids --------------------------------------------------------------------------------


def test_wrong_sequence_id_is_1156_and_terminal() -> None:
    reader = PacketReader(1024, expected_seq=0)
    assert reader.feed(build_packets(b"a", 0)[0]) == [Packet(0, b"a")]
    with pytest.raises(PeerViolation) as exc:
        reader.feed(build_packets(b"b", 5)[0])
    assert exc.value.code == ErrorCode.ER_NET_PACKETS_OUT_OF_ORDER == 1156
    with pytest.raises(PeerViolation):  # terminal: never resynchronise
        reader.feed(build_packets(b"c", 1)[0])


def test_wrong_seq_inside_continuation() -> None:
    framed, _ = build_packets(b"y" * (MAX + 3), 0)
    bad = bytearray(framed)
    bad[4 + MAX + 3] = 7  # second physical packet should carry seq 1
    with pytest.raises(PeerViolation) as exc:
        PacketReader(BIG, expected_seq=0).feed(bytes(bad))
    assert exc.value.code == 1156


def test_sequence_wraps_at_256() -> None:
    data = b"".join(build_packets(bytes([i & 0xFF]), i & 0xFF)[0] for i in range(300))
    pkts = read_all([data], seq=0)
    assert [p.seq for p in pkts] == [i & 0xFF for i in range(300)]


def test_sequence_unchecked_when_none_and_reset() -> None:
    reader = PacketReader(1024, expected_seq=None)
    assert reader.feed(build_packets(b"a", 9)[0])[0].seq == 9
    reader.reset_sequence(0)
    with pytest.raises(PeerViolation):
        reader.feed(build_packets(b"a", 1)[0])


# -- size limits ---------------------------------------------------------------------------------


def test_oversized_packet_refused_from_header_alone() -> None:
    reader = PacketReader(100, expected_seq=0)
    with pytest.raises(MessageTooLarge) as exc:
        reader.feed(build_packet_header(101, 0))  # no body sent at all
    assert exc.value.code == ErrorCode.ER_NET_PACKET_TOO_LARGE == 1153
    assert exc.value.length == 101 and exc.value.limit == 100
    with pytest.raises(MessageTooLarge):
        reader.feed(b"more")


def test_oversized_logical_payload_refused_at_continuation_header() -> None:
    reader = PacketReader(MAX + 10, expected_seq=0)
    assert reader.feed(build_packet_header(MAX, 0) + b"z" * MAX) == []
    with pytest.raises(MessageTooLarge) as exc:
        reader.feed(build_packet_header(11, 1))
    assert exc.value.length == MAX + 11


def test_exact_limit_accepted() -> None:
    pkts = read_all([build_packets(b"q" * 100, 0)[0]], limit=100)
    assert pkts[0].payload == b"q" * 100


# -- splits ----------------------------------------------------------------------------------

STREAM = b"".join(
    build_packets(p, i)[0]
    for i, p in enumerate([b"\x03SELECT 1", b"", b"\xfe\x00\x00\x02\x00", b"x" * 300, b"\xff\x01"])
)


def test_byte_by_byte_matches_whole() -> None:
    whole = read_all([STREAM])
    assert read_all([STREAM[i : i + 1] for i in range(len(STREAM))]) == whole
    assert [p.payload for p in whole][1] == b""


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_random_splits_match_whole(cuts: list[int]) -> None:
    assert read_all(chunks_of(STREAM, cuts)) == read_all([STREAM])


@settings(max_examples=50)
@given(
    st.lists(st.binary(max_size=600), min_size=1, max_size=12),
    st.integers(0, 255),
    st.lists(st.integers(min_value=0, max_value=8000), max_size=10),
)
def test_build_then_read_round_trip(payloads: list[bytes], seq: int, cuts: list[int]) -> None:
    data = b""
    nxt = seq
    for p in payloads:
        framed, nxt = build_packets(p, nxt)
        data += framed
    pkts = read_all(chunks_of(data, cuts), limit=1024, seq=seq)
    assert [p.payload for p in pkts] == payloads


def test_trailing_partial_packet_stays_pending() -> None:
    reader = PacketReader(1024)
    assert reader.feed(STREAM + b"\x05\x00") == read_all([STREAM])
    assert reader.pending == 2
    assert reader.take_pending() == b"\x05\x00"
    assert reader.pending == 0


# -- renumbering -----------------------------------------------------------------------------


def test_renumber_run_of_packets() -> None:
    data = b"".join(build_packets(p, 9)[0] for p in (b"a", b"bb", b"", b"c" * 70000))
    out, nxt = renumber_packets(data, 3)
    assert nxt == 7
    assert read_all([out], seq=3)[3].payload == b"c" * 70000
    buf = bytearray(data)
    assert renumber_packets_in_place(buf, 255) == 3
    assert [p.seq for p in read_all([bytes(buf)], seq=None)] == [255, 0, 1, 2]


def test_renumber_continuation_counts_every_physical_packet() -> None:
    framed, _ = build_packets(b"r" * (2 * MAX), 40)
    out, nxt = renumber_packets(framed, 0)
    assert nxt == 3
    assert read_all([out], seq=0)[0].payload == b"r" * (2 * MAX)


def test_renumber_rejects_partial_packets() -> None:
    with pytest.raises(UsageError):
        renumber_packets(build_packets(b"abc", 0)[0][:-1], 0)
    with pytest.raises(UsageError):
        renumber_packets(b"\x01\x00", 0)


# -- the hot-path scanner --------------------------------------------------------------------


def text_row(*values: bytes) -> bytes:
    return b"".join(build_lenenc_string(v) for v in values)


def rows_stream(n: int, seq: int = 3) -> tuple[bytes, int]:
    data = b""
    for i in range(n):
        framed, seq = build_packets(text_row(str(i).encode(), b"v" * (i % 7)), seq)
        data += framed
    term, seq = build_packets(build_eof_packet(0, 2), seq)
    return data + term, seq


def scan(scanner: PacketScanner, chunks: list[bytes]) -> tuple[int, list[bytes], bytes]:
    """Feed chunks with the scanner in rows mode; return rows, other payloads, forwarded bytes."""
    rows = 0
    others: list[bytes] = []
    forwarded = bytearray()
    in_rows = True
    for chunk in chunks:
        scanner.feed(chunk)
        while True:
            if in_rows:
                start, stop, count = scanner.next_row_run()
                if count:
                    rows += count
                    forwarded += memoryview(scanner.buffer)[start:stop]
                    continue
            entry = scanner.next_packet()
            if entry is None:
                break
            forwarded += scanner.buffer[entry[0] : entry[1]]
            others.append(scanner.payload(*entry))
            in_rows = False
    return rows, others, bytes(forwarded)


def test_row_run_collapses_and_stops_at_terminator() -> None:
    data, _ = rows_stream(50)
    scanner = PacketScanner(1024, expected_seq=3)
    scanner.feed(data)
    start, stop, count = scanner.next_row_run()
    assert (start, count) == (0, 50)
    assert scanner.next_row_run()[2] == 0  # the EOF is not a row
    entry = scanner.next_packet()
    assert entry is not None and entry[0] == stop
    assert scanner.payload(*entry) == build_eof_packet(0, 2)
    assert scanner.expected_seq == 54


@given(st.lists(st.integers(min_value=0, max_value=2000), max_size=25))
def test_row_runs_in_random_splits(cuts: list[int]) -> None:
    data, _ = rows_stream(60)
    rows, others, forwarded = scan(PacketScanner(1024, expected_seq=3), chunks_of(data, cuts))
    assert rows == 60
    assert others == [build_eof_packet(0, 2)]
    assert forwarded == data


def test_row_run_stops_at_err() -> None:
    err = build_err_packet(1317, "70100")
    data = build_packets(text_row(b"1"), 1)[0] + build_packets(err, 2)[0]
    rows, others, _ = scan(PacketScanner(1024, expected_seq=1), [data])
    assert rows == 1 and others[0][0] == 0xFF


def test_row_starting_with_0xfe_of_16mib_is_a_row() -> None:
    """A text value of >= 2**24 bytes makes the row start with 0xFE: it is not a terminator."""
    value = b"m" * (1 << 24)
    row = text_row(value)
    assert row[0] == 0xFE and len(row) > MAX
    framed, seq = build_packets(row, 1)
    term, _ = build_packets(build_eof_packet(0, 2), seq)
    data = framed + term
    for chunks in ([data], chunks_of(data, [1000, MAX, MAX + 3, MAX + 10, len(data) - 3])):
        rows, others, forwarded = scan(PacketScanner(BIG, expected_seq=1), chunks)
        assert rows == 1 and others == [build_eof_packet(0, 2)]
        assert forwarded == data


def test_scanner_rows_wrong_seq() -> None:
    data, _ = rows_stream(3, seq=3)
    scanner = PacketScanner(1024, expected_seq=4)
    scanner.feed(data)
    with pytest.raises(PeerViolation) as exc:
        scanner.next_row_run()
    assert exc.value.code == 1156


def test_scanner_rows_oversized() -> None:
    scanner = PacketScanner(10, expected_seq=None)
    scanner.feed(build_packet_header(11, 0))
    with pytest.raises(MessageTooLarge):
        scanner.next_row_run()


def test_buffers_handed_out_are_never_mutated() -> None:
    """A straddling packet is accumulated separately; earlier buffers stay intact."""
    data, _ = rows_stream(10)
    scanner = PacketScanner(1024, expected_seq=3)
    cut = len(data) // 2 + 1
    scanner.feed(data[:cut])
    start, stop, count = scanner.next_row_run()
    assert count > 0
    view = memoryview(scanner.buffer)[start:stop]
    snapshot = bytes(view)
    assert scanner.next_row_run()[2] == 0
    scanner.feed(data[cut:])
    assert bytes(view) == snapshot
    assert isinstance(scanner.buffer, bytes)


def test_large_payload_arriving_in_small_reads_is_accumulated_linearly() -> None:
    payload = b"L" * (3 * MAX // 2)
    framed, _ = build_packets(payload, 0)
    reader = PacketReader(BIG, expected_seq=0)
    step = 1 << 16
    got: list[Packet] = []
    for i in range(0, len(framed), step):
        got += reader.feed(framed[i : i + step])
    assert got == [Packet(0, payload)]


# -- unread (a read stopped in the middle: approval pause, review hold) ------------------------


def _rows(n: int, seq: int = 1) -> bytes:
    out = b""
    for i in range(n):
        out += build_packets(build_lenenc_string(b"r%d" % i), seq + i)[0]
    return out


def test_unread_puts_rows_back_in_front_of_the_rest() -> None:
    rows = _rows(5)
    eof = build_packets(build_eof_packet(), 6)[0]
    scanner = PacketScanner(1024)
    scanner.feed(rows + eof)
    start, stop, count = scanner.next_row_run()
    assert count == 5
    cut = start + len(_rows(2))
    scanner.unread(memoryview(scanner.buffer)[cut:stop])
    assert scanner.buffer == rows[cut:] + eof
    start, stop, count = scanner.next_row_run()
    assert count == 3
    entry = scanner.next_packet()
    assert entry is not None and scanner.buffer[entry[0] : entry[1]] == eof


def test_unread_merges_a_partial_tail_and_rewinds_sequence_ids() -> None:
    rows = _rows(3)
    eof = build_packets(build_eof_packet(), 4)[0]
    scanner = PacketScanner(1024, expected_seq=1)
    scanner.feed(rows + eof[:3])
    count = scanner.next_row_run()[2]
    assert count == 3 and scanner.expected_seq == 4
    assert scanner.next_packet() is None  # the partial EOF is stashed
    scanner.unread(rows[len(_rows(1)) :])
    assert scanner.expected_seq == 2
    scanner.feed(eof[3:])
    assert scanner.next_row_run()[2] == 2
    entry = scanner.next_packet()
    assert entry is not None and scanner.buffer[entry[0] : entry[1]] == eof
    assert scanner.next_packet() is None


def test_unread_nothing_is_a_no_op() -> None:
    scanner = PacketScanner(1024)
    scanner.feed(_rows(1))
    scanner.unread(b"")
    assert scanner.next_row_run()[2] == 1
