"""RowDescription / DataRow codecs: byte transcripts, round trips, lying lengths."""

from __future__ import annotations

import contextlib
import shutil
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import PeerViolation
from protocols.postgres import rows as rows_module
from protocols.postgres.rows import (
    ConstantValue,
    FieldDescription,
    ScreenedValue,
    build_data_row,
    build_row_description,
    iter_copy_data,
    iter_data_rows,
    parse_data_row,
    parse_row_description,
    rewrite_data_rows_py,
)

# What PostgreSQL sends for `SELECT id, name FROM customers LIMIT 1`
# (customers: table OID 16385, id int4 attnum 1, name text attnum 2).
ROW_DESCRIPTION = (
    b"T\x00\x00\x00\x32\x00\x02"
    b"id\x00\x00\x00\x40\x01\x00\x01\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00"
    b"name\x00\x00\x00\x40\x01\x00\x02\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00"
)
DATA_ROW = b"D\x00\x00\x00\x14\x00\x02\x00\x00\x00\x011\x00\x00\x00\x05alice"
NULL_ROW = b"D\x00\x00\x00\x0f\x00\x02\x00\x00\x00\x012\xff\xff\xff\xff"


def body(message: bytes) -> bytes:
    (length,) = struct.unpack_from("!I", message, 1)
    assert len(message) == 1 + length
    return message[5:]


def test_row_description_transcript() -> None:
    fields = parse_row_description(body(ROW_DESCRIPTION))
    assert fields == [
        FieldDescription("id", 16385, 1, 23, 4, -1, 0),
        FieldDescription("name", 16385, 2, 25, -1, -1, 0),
    ]
    assert build_row_description(fields) == ROW_DESCRIPTION


def test_row_description_accepts_memoryview() -> None:
    assert parse_row_description(memoryview(body(ROW_DESCRIPTION)))[0].name == "id"


def test_data_row_transcript() -> None:
    assert parse_data_row(body(DATA_ROW)) == [b"1", b"alice"]
    assert parse_data_row(body(NULL_ROW)) == [b"2", None]
    assert build_data_row([b"1", b"alice"]) == DATA_ROW
    assert build_data_row([b"2", None]) == NULL_ROW


def test_empty_values() -> None:
    assert parse_data_row(body(build_data_row([]))) == []
    assert parse_data_row(body(build_data_row([b""]))) == [b""]
    assert parse_row_description(body(build_row_description([]))) == []


def test_iter_data_rows_over_a_run() -> None:
    run = DATA_ROW + NULL_ROW + DATA_ROW
    assert list(iter_data_rows(run)) == [[b"1", b"alice"], [b"2", None], [b"1", b"alice"]]
    assert list(iter_data_rows(memoryview(run))) == list(iter_data_rows(run))
    assert list(iter_data_rows(b"")) == []


@pytest.mark.parametrize(
    "bad",
    [
        b"\x00",  # no count
        b"\xff\xff",  # negative count
        b"\x00\x01",  # one column promised, none present
        b"\x00\x01\x00\x00\x00",  # truncated length
        b"\x00\x01\x00\x00\x00\x05ab",  # length lies: 5 declared, 2 present
        b"\x00\x01\xff\xff\xff\xfe",  # length -2
        b"\x00\x01\x7f\xff\xff\xff",  # huge length
        b"\x00\x01\x00\x00\x00\x01ab",  # trailing byte
    ],
)
def test_data_row_lying_lengths(bad: bytes) -> None:
    with pytest.raises(PeerViolation) as info:
        parse_data_row(bad)
    assert info.value.code == "08P01"


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\xff\xff",
        b"\x00\x01",  # field promised, none present
        b"\x00\x01id",  # unterminated name
        b"\x00\x01id\x00\x00\x00",  # truncated field tail
        body(ROW_DESCRIPTION)[:-1],
        body(ROW_DESCRIPTION) + b"\x00",
        b"\x00\x00junk",
    ],
)
def test_row_description_malformed(bad: bytes) -> None:
    with pytest.raises(PeerViolation):
        parse_row_description(bad)


@pytest.mark.parametrize(
    "bad",
    [
        DATA_ROW[:-1],  # partial message at the end
        DATA_ROW + b"D\x00\x00",  # partial header
        DATA_ROW + b"C\x00\x00\x00\x04",  # not a DataRow
        b"D\x00\x00\x00\x03",  # length below 4
        b"D\x00\x00\x00\x05\x00",  # length 5, count truncated
        b"D\x00\x00\x01\x00" + DATA_ROW[5:],  # outer length lies (too long)
        b"D\x00\x00\x00\x0c\x00\x01\x00\x00\x00\x09ab",  # inner length beyond its message
    ],
)
def test_iter_data_rows_malformed(bad: bytes) -> None:
    with pytest.raises(PeerViolation):
        list(iter_data_rows(bad))


def copy_data(payload: bytes) -> bytes:
    return b"d" + struct.pack("!I", 4 + len(payload)) + payload


def test_iter_copy_data_over_a_run() -> None:
    run = copy_data(b"1\talice\n") + copy_data(b"") + copy_data(b"2\t\\N\n")
    assert list(iter_copy_data(run)) == [b"1\talice\n", b"", b"2\t\\N\n"]
    assert list(iter_copy_data(memoryview(run))) == list(iter_copy_data(run))
    assert list(iter_copy_data(b"")) == []


@pytest.mark.parametrize(
    "bad",
    [
        copy_data(b"abc")[:-1],  # partial message at the end
        copy_data(b"abc") + b"d\x00",  # partial header
        copy_data(b"abc") + DATA_ROW,  # not a CopyData
        b"d\x00\x00\x00\x03",  # length below 4
        b"d\x00\x00\x01\x00abc",  # length lies (too long)
    ],
)
def test_iter_copy_data_malformed(bad: bytes) -> None:
    with pytest.raises(PeerViolation):
        list(iter_copy_data(bad))


def test_inner_length_cannot_read_into_next_message() -> None:
    # The first row's column claims 9 bytes; the next message's bytes are right
    # there, but a column must stay inside its own message.
    lying = b"D\x00\x00\x00\x0c\x00\x01\x00\x00\x00\x09ab" + DATA_ROW
    with pytest.raises(PeerViolation):
        list(iter_data_rows(lying))


values_st = st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=12)
field_st = st.builds(
    FieldDescription,
    name=st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=20,
    ),
    table_oid=st.integers(0, 2**32 - 1),
    attnum=st.integers(-(2**15), 2**15 - 1),
    type_oid=st.integers(0, 2**32 - 1),
    type_size=st.integers(-(2**15), 2**15 - 1),
    type_modifier=st.integers(-(2**31), 2**31 - 1),
    format=st.sampled_from([0, 1]),
)


@given(values_st)
def test_data_row_round_trip(values: list[bytes | None]) -> None:
    assert parse_data_row(body(build_data_row(values))) == values


@given(st.lists(values_st, max_size=8))
def test_iter_data_rows_round_trip(rows: list[list[bytes | None]]) -> None:
    data = b"".join(build_data_row(r) for r in rows)
    assert list(iter_data_rows(data)) == rows


@given(st.lists(field_st, max_size=8))
def test_row_description_round_trip(fields: list[FieldDescription]) -> None:
    message = build_row_description(fields)
    assert parse_row_description(body(message)) == fields


@given(st.lists(values_st, min_size=1, max_size=4), st.data())
def test_truncated_runs_never_over_read(
    rows: list[list[bytes | None]], data: st.DataObject
) -> None:
    run = b"".join(build_data_row(r) for r in rows)
    cut = data.draw(st.integers(1, len(run) - 1))
    # Cutting a run anywhere but at a message boundary must raise.
    boundaries = set()
    pos = 0
    for r in rows:
        pos += len(build_data_row(r))
        boundaries.add(pos)
    if cut in boundaries:
        assert len(list(iter_data_rows(run[:cut]))) >= 1
    else:
        with pytest.raises(PeerViolation):
            list(iter_data_rows(run[:cut]))


@given(st.binary(max_size=64))
def test_garbage_raises_only_peer_violation(garbage: bytes) -> None:
    for parse in (parse_data_row, parse_row_description):
        with contextlib.suppress(PeerViolation):
            parse(garbage)
    with contextlib.suppress(PeerViolation):
        list(iter_data_rows(garbage))


# -- rewrite_data_rows (masking's splice) ----------------------------------------------------
#
# Every test runs against both implementations: the pure-Python reference and the compiled
# one (_rows.c), which the build produces wherever a C compiler exists (as here and in CI).

_values = st.one_of(st.none(), st.binary(max_size=40))
_rows = st.lists(st.lists(_values, min_size=4, max_size=4), min_size=1, max_size=20)

Rewrite = Callable[..., bytearray]


def _compiled(
    buf: bytes | bytearray, start: int, stop: int, columns: list[tuple[int, Any]]
) -> bytearray:
    return rows_module._compiled(  # type: ignore[misc]
        buf, start, stop, columns, ConstantValue, ScreenedValue, rows_module._violation
    )


IMPLEMENTATIONS = [
    pytest.param(rewrite_data_rows_py, id="python"),
    pytest.param(
        _compiled,
        id="compiled",
        marks=pytest.mark.skipif(not rows_module.COMPILED, reason="extension not built"),
    ),
]


def test_the_compiled_rewriter_is_built_and_used() -> None:
    # Wherever a C compiler exists (CI installs one) the build must produce the extension:
    # a silent fallback would leave masking several times slower. Without a compiler the
    # pure-Python implementation runs, and is tested above.
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine: masking runs the pure-Python rewriter")
    assert rows_module.COMPILED
    assert rows_module.rewrite_data_rows(b"", 0, 0, [(0, _mask)]) == bytearray()


def _mask(value: bytes) -> bytes | None:
    return None if value == b"" else b"<" + value[::-1] + b">"


@pytest.mark.parametrize("rewrite", IMPLEMENTATIONS)
@given(rows=_rows, cols=st.sets(st.integers(0, 3), min_size=1))
def test_rewrite_data_rows_matches_rebuilding(
    rewrite: Rewrite, rows: list[list[bytes | None]], cols: set[int]
) -> None:
    buf = b"junk" + b"".join(build_data_row(r) for r in rows) + b"tail"
    out = rewrite(buf, 4, len(buf) - 4, [(c, _mask) for c in sorted(cols)])
    expected = [
        [_mask(v) if i in cols and v is not None else v for i, v in enumerate(r)] for r in rows
    ]
    assert list(iter_data_rows(bytes(out))) == expected


@pytest.mark.parametrize("rewrite", IMPLEMENTATIONS)
@given(
    rows=_rows,
    cols=st.sets(st.integers(0, 3), min_size=1),
    constant=st.one_of(st.none(), st.binary(max_size=12)),
)
def test_constant_masks_write_their_value(
    rewrite: Rewrite, rows: list[list[bytes | None]], cols: set[int], constant: bytes | None
) -> None:
    buf = bytearray(b"".join(build_data_row(r) for r in rows))
    out = rewrite(buf, 0, len(buf), [(c, ConstantValue(constant)) for c in sorted(cols)])
    expected = [
        [constant if i in cols and v is not None else v for i, v in enumerate(r)] for r in rows
    ]
    assert list(iter_data_rows(bytes(out))) == expected


def _outcome(rewrite: Rewrite, buf: bytes, cols: list[int]) -> tuple[str, object]:
    try:
        return "ok", bytes(rewrite(buf, 0, len(buf), [(c, _mask) for c in cols]))
    except PeerViolation as exc:
        return "violation", exc.message


@pytest.mark.skipif(not rows_module.COMPILED, reason="extension not built")
@given(
    rows=_rows,
    cols=st.sets(st.integers(0, 5), min_size=1),
    at=st.integers(0, 10_000),
    junk=st.binary(min_size=1, max_size=6),
)
def test_both_implementations_agree_on_damaged_rows(
    rows: list[list[bytes | None]], cols: set[int], at: int, junk: bytes
) -> None:
    # Overwrite a few bytes somewhere (a column length, a row length, a count): both must
    # give the same rows or the same PeerViolation, never an over-read or another error.
    buf = bytearray(b"".join(build_data_row(r) for r in rows))
    at %= len(buf)
    buf[at : at + len(junk)] = junk
    data = bytes(buf)
    ordered = sorted(cols)
    assert _outcome(rewrite_data_rows_py, data, ordered) == _outcome(_compiled, data, ordered)


@pytest.mark.parametrize("rewrite", IMPLEMENTATIONS)
def test_rewrite_data_rows_refuses_short_rows(rewrite: Rewrite) -> None:
    buf = build_data_row([b"a", b"b"])
    with pytest.raises(PeerViolation, match="DataRow has 2 columns"):
        rewrite(buf, 0, len(buf), [(2, lambda v: v)])


@pytest.mark.parametrize("rewrite", IMPLEMENTATIONS)
def test_rewrite_data_rows_refuses_lying_lengths(rewrite: Rewrite) -> None:
    body = struct.pack("!hi", 2, 100) + b"abc"
    buf = b"D" + struct.pack("!I", len(body) + 4) + body
    with pytest.raises(PeerViolation, match="column lengths exceed"):
        rewrite(buf, 0, len(buf), [(1, lambda v: v)])
    body = struct.pack("!hi", 2, 1) + b"a" + struct.pack("!i", 50) + b"bc"
    buf = b"D" + struct.pack("!I", len(body) + 4) + body
    with pytest.raises(PeerViolation, match="column length 50 exceeds"):
        rewrite(buf, 0, len(buf), [(1, lambda v: v)])


@pytest.mark.parametrize("rewrite", IMPLEMENTATIONS)
def test_rewrite_data_rows_refuses_a_truncated_row(rewrite: Rewrite) -> None:
    buf = build_data_row([b"abc", b"def"])
    with pytest.raises(PeerViolation, match="DataRow truncated"):
        rewrite(buf, 0, len(buf) - 1, [(1, lambda v: v)])
    with pytest.raises(PeerViolation, match="DataRow truncated"):
        rewrite(buf, 0, 3, [(1, lambda v: v)])


@pytest.mark.parametrize("rewrite", IMPLEMENTATIONS)
def test_a_failing_mask_propagates(rewrite: Rewrite) -> None:
    # A mask that raises must fail the result (the driver refuses it), not pass the value.
    def broken(_value: bytes) -> bytes:
        raise ValueError("cannot mask")

    buf = build_data_row([b"abc", b"def"])
    with pytest.raises(ValueError, match="cannot mask"):
        rewrite(buf, 0, len(buf), [(1, broken)])


# -- ScreenedValue: a byte screen run before the rewrite ------------------------------------

# Table 0: digits -> "9", everything else to itself; table 1: letters -> "a", else ".".
_DIGITS = bytes(57 if 48 <= b <= 57 else b for b in range(256))
_LETTERS = bytes(97 if chr(b).isascii() and chr(b).isalpha() else 46 for b in range(256))


def _one(value: bytes, hits: int) -> bytes | None:
    return None if hits == 0b100 else b"%d:" % hits + value


def _screened(needles: tuple[tuple[int, bytes, int, int, bool], ...], min_length: int = 3) -> Any:
    def rewrite(values: list[bytes], hits: list[int]) -> list[bytes | None]:
        assert values and len(values) == len(hits)
        return [_one(v, h) for v, h in zip(values, hits, strict=True)]

    def whole(value: bytes) -> bytes | None:
        raise AssertionError("the rows rewriter must use the screen, not whole()")

    return ScreenedValue(whole, rewrite, min_length, (_DIGITS, _LETTERS), needles)


def test_a_screen_ors_the_bits_of_the_needles_it_finds() -> None:
    screen = _screened(
        (
            (-1, b"@", 0b1, -1, False),  # the value itself
            (0, b"99", 0, -1, False),  # a guard only: two digits in a row
            (0, b"99-99", 0b10, 1, False),  # looked for only when "99" was found
            (1, b"aaaa", 0b100, -1, False),
            (1, b"a..", 0b1000, -1, True),  # must begin the copy
        )
    )
    assert screen.hits(b"ab") == 0  # shorter than min_length
    assert screen.hits(b"x@y") == 0b1
    assert screen.hits(b"12-34") == 0b10
    assert screen.hits(b"1-2-3") == 0
    assert screen.hits(b"word 12-34 a@b") == 0b111
    assert screen.hits(b"x 1") == 0b1000
    assert screen.hits(b"1 x 1") == 0
    with pytest.raises(ValueError, match="needle 1 is malformed"):
        _screened(((0, b"9", 1, -1, False), (0, b"99", 1, 1, False)))  # guarded by itself
    with pytest.raises(ValueError, match="needle 0 is malformed"):
        _screened(((2, b"9", 1, -1, False),))  # no table 2
    with pytest.raises(ValueError, match="needle 0 is malformed"):
        _screened(((0, b"9", -1, -1, False),))  # bits are a set: never negative
    with pytest.raises(ValueError, match="256 byte values"):
        ScreenedValue(_mask, lambda v, h: v, 1, (b"short",), ())  # type: ignore[arg-type,return-value]


_needles = st.lists(
    st.tuples(
        st.integers(-1, 1),
        st.binary(min_size=1, max_size=3).map(lambda b: b.translate(_DIGITS)),
        st.integers(0, 7),
        st.integers(-1, 30),
        st.booleans(),
    ),
    max_size=8,
).map(lambda ns: tuple((t, x, b, g if g < i else -1, a) for i, (t, x, b, g, a) in enumerate(ns)))
_texty = st.one_of(
    st.none(), st.text(alphabet="ab9-@ 12", max_size=12).map(str.encode), st.binary(max_size=12)
)


@pytest.mark.parametrize("rewrite", IMPLEMENTATIONS)
@given(
    rows=st.lists(st.lists(_texty, min_size=3, max_size=3), min_size=1, max_size=12),
    needles=_needles,
    min_length=st.integers(0, 4),
)
def test_a_screened_rewrite_sees_only_the_values_its_screen_selects(
    rewrite: Rewrite,
    rows: list[list[bytes | None]],
    needles: tuple[tuple[int, bytes, int, int, bool], ...],
    min_length: int,
) -> None:
    screen = _screened(needles, min_length)
    buf = b"".join(build_data_row(r) for r in rows)
    out = rewrite(buf, 0, len(buf), [(0, _mask), (2, screen)])

    def expected(value: bytes) -> bytes | None:
        hits = screen.hits(value)
        return _one(value, hits) if hits else value

    assert list(iter_data_rows(bytes(out))) == [
        [None if a is None else _mask(a), b, None if c is None else expected(c)] for a, b, c in rows
    ]


@pytest.mark.skipif(not rows_module.COMPILED, reason="extension not built")
@given(rows=_rows, needles=_needles, at=st.integers(0, 10_000), junk=st.binary(max_size=6))
def test_both_implementations_screen_alike(
    rows: list[list[bytes | None]],
    needles: tuple[tuple[int, bytes, int, int, bool], ...],
    at: int,
    junk: bytes,
) -> None:
    buf = bytearray(b"".join(build_data_row(r) for r in rows))
    at %= len(buf)
    buf[at : at + len(junk)] = junk
    data = bytes(buf)
    columns = [(1, _screened(needles)), (3, _screened(needles[:1], min_length=0))]

    def outcome(rewrite: Rewrite) -> tuple[str, object]:
        try:
            return "ok", bytes(rewrite(data, 0, len(data), columns))
        except PeerViolation as exc:
            return "violation", exc.message

    assert outcome(rewrite_data_rows_py) == outcome(_compiled)


@pytest.mark.skipif(not rows_module.COMPILED, reason="extension not built")
def test_the_compiled_rewriter_calls_a_screened_rewrite_once_per_column() -> None:
    calls: list[list[bytes]] = []

    def rewrite(values: list[bytes], hits: list[int]) -> list[bytes | None]:
        calls.append(list(values))
        return [b"<" + v + b">" for v in values]

    screen = ScreenedValue(_mask, rewrite, 1, (), ((-1, b"x", 1, -1, False),))
    rows: list[list[bytes | None]] = [[b"x1", b"a"], [b"b", b"x2"], [None, b"x3"]]
    buf = b"".join(build_data_row(r) for r in rows)
    out = _compiled(buf, 0, len(buf), [(0, screen), (1, screen)])
    assert calls == [[b"x1"], [b"x2", b"x3"]]  # in row order, unselected values left out
    assert list(iter_data_rows(bytes(out))) == [
        [b"<x1>", b"a"],
        [b"b", b"<x2>"],
        [None, b"<x3>"],
    ]
    short = ScreenedValue(_mask, lambda values, hits: [], 1, (), ((-1, b"x", 1, -1, False),))
    with pytest.raises(TypeError, match="one result per value"):
        _compiled(buf, 0, len(buf), [(0, short)])


@pytest.mark.skipif(not rows_module.COMPILED, reason="extension not built")
@pytest.mark.parametrize(
    ("needles", "error"),
    [
        (((0, b"9", -1, -1, False),), "malformed"),  # negative bits
        (((3, b"9", 1, -1, False),), "malformed"),  # no such table
        (((0, b"9", 1, 0, False),), "malformed"),  # guarded by itself
        (((0, b"", 1, -1, False),), "needle is"),  # empty text
        (((0, b"9", 1, -1),), "needle is"),  # four fields
    ],
)
def test_the_compiled_rewriter_checks_the_screen_itself(
    needles: tuple[object, ...], error: str
) -> None:
    # The constructor checks a screen, but its attributes can be changed afterwards: the
    # C code must not trust them either.
    screen = _screened(((0, b"9", 1, -1, False),))
    screen.needles = needles
    buf = build_data_row([b"99"])
    with pytest.raises((ValueError, TypeError), match=error):
        _compiled(buf, 0, len(buf), [(0, screen)])


@pytest.mark.parametrize("rewrite", IMPLEMENTATIONS)
def test_a_failing_screened_rewrite_propagates(rewrite: Rewrite) -> None:
    def broken(_values: list[bytes], _hits: list[int]) -> list[bytes | None]:
        raise ValueError("cannot mask")

    screen = ScreenedValue(_mask, broken, 1, (), ((-1, b"e", 1, -1, False),))
    buf = build_data_row([b"abc", b"def"])
    assert rewrite(buf, 0, len(buf), [(0, screen)]) == buf  # "abc": nothing selected
    with pytest.raises(ValueError, match="cannot mask"):
        rewrite(buf, 0, len(buf), [(1, screen)])


def test_split_and_skip_data_rows() -> None:
    from protocols.postgres.rows import build_data_row, skip_data_rows, split_data_rows

    rows = [build_data_row([str(i).encode() * i]) for i in range(1, 6)]
    buf = b"xx" + b"".join(rows)
    start, stop = 2, len(buf)
    assert split_data_rows(buf, start, stop, 3, 1 << 30) == (start + sum(map(len, rows[:3])), 3)
    # Bytes bind first: only whole rows go before the cut.
    assert split_data_rows(buf, start, stop, 10, len(rows[0]) + len(rows[1]) + 1) == (
        start + len(rows[0]) + len(rows[1]),
        2,
    )
    assert split_data_rows(buf, start, stop, 0, 1000) == (start, 0)
    assert split_data_rows(buf, start, stop, 10, 10**6) == (stop, 5)
    assert skip_data_rows(buf, start, 2) == start + len(rows[0]) + len(rows[1])


@pytest.mark.parametrize("rewrite", IMPLEMENTATIONS)
def test_a_rewrite_that_empties_the_columns_list_masks_every_column(rewrite: Any) -> None:
    """The rewriter works on the columns it was given, even if a rewrite empties the
    caller's list (the compiled one once called freed rewrites; the reference stopped
    masking: failing open)."""
    columns: list[Any] = []

    def first(value: bytes) -> bytes:
        columns.clear()
        return b"X"

    columns += [(0, first), (1, lambda value: b"MASKED")]
    buf = b"".join(build_data_row([b"a%d" % i, b"b%d" % i]) for i in range(5))
    out = bytes(rewrite(buf, 0, len(buf), columns))
    assert out == build_data_row([b"X", b"MASKED"]) * 5


def test_a_screened_rewrite_that_changes_its_results_later_is_not_read_again() -> None:
    """The compiled rewriter keeps a screened column's batch results as its own: a later
    column's rewrite emptying the list the batch returned changes nothing."""
    if not rows_module.COMPILED:
        pytest.skip("extension not built")
    kept: list[list[bytes]] = []

    def batch(values: list[bytes], hits: list[int]) -> list[bytes]:
        kept.append([b"MASKED"] * len(values))
        return kept[-1]

    screened = ScreenedValue(lambda v: b"MASKED", batch, 0, (), ((-1, b"@", 1, -1, False),))

    def other(value: bytes) -> bytes:
        for results in kept:
            results.clear()
        return value

    buf = b"".join(build_data_row([b"a%d@x" % i, b"b"]) for i in range(3))
    out = bytes(_compiled(buf, 0, len(buf), ((0, screened), (1, other))))
    assert out == build_data_row([b"MASKED", b"b"]) * 3


def test_screen_needles_out_of_range_are_refused_not_narrowed() -> None:
    if not rows_module.COMPILED:
        pytest.skip("extension not built")
    buf = build_data_row([b"a@b"])
    for needle in ((2**32, b"@", 1, -1, False), (-1, b"@", 1, 2**32 - 1, False)):
        screened = ScreenedValue(lambda v: b"M", lambda vs, hs: [b"M"] * len(vs), 0, (), ())
        screened.needles = (needle,)
        with pytest.raises((ValueError, IndexError)):
            _compiled(buf, 0, len(buf), ((0, screened),))
