"""Column definitions, text rows, binary rows (NULL bitmap, per-type widths), value
encoding, COM_STMT_PREPARE_OK and COM_STMT_EXECUTE."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import PeerViolation, UsageError
from protocols.mysql.constants import Capability, ColumnFlag
from protocols.mysql.constants import ColumnType as T
from protocols.mysql.resultset import (
    BinaryValue,
    ColumnDefinition41,
    StmtExecute,
    StmtPrepareOk,
    binary_row_spans,
    build_binary_row,
    build_column_count,
    build_column_definition41,
    build_com_stmt_execute,
    build_stmt_prepare_ok,
    build_text_row,
    decode_binary_value,
    encode_binary_value,
    null_bitmap_size,
    parse_binary_row,
    parse_column_count,
    parse_column_definition41,
    parse_com_stmt_execute,
    parse_stmt_prepare_ok,
    parse_text_row,
    text_row_spans,
)

EXT = Capability.MARIADB_CLIENT_EXTENDED_METADATA
CACHE = Capability.MARIADB_CLIENT_CACHE_METADATA

# -- column count and definitions --------------------------------------------------------------


def test_column_count() -> None:
    assert parse_column_count(b"\x03") == (3, True)
    assert parse_column_count(build_column_count(300)) == (300, True)
    assert parse_column_count(build_column_count(2, CACHE, metadata_follows=False), CACHE) == (
        2,
        False,
    )
    for bad in (b"\x00", b"", b"\x03\x01"):
        with pytest.raises(PeerViolation):
            parse_column_count(bad)


def test_captured_column_definition() -> None:
    # "SELECT help_category_id ... FROM mysql.help_category" (MariaDB 10.11, classic).
    data = bytes.fromhex(
        "03646566056d7973716c0d68656c705f63617465676f72790d68656c705f63617465676f7279"
        "1068656c705f63617465676f72795f69641068656c705f63617465676f72795f69640c3f0005"
        "000000022350000000"
    )
    col = parse_column_definition41(data)
    assert col.schema == b"mysql" and col.table == col.org_table == b"help_category"
    assert col.name == col.org_name == b"help_category_id"
    assert (col.charset, col.column_length, col.type, col.decimals) == (
        63,
        5,
        T.MYSQL_TYPE_SHORT,
        0,
    )
    assert col.unsigned and col.flags & ColumnFlag.PRI_KEY
    assert build_column_definition41(col) == data


names = st.binary(max_size=80)


@given(
    names,
    names,
    names,
    names,
    names,
    st.integers(0, 0xFFFF),
    st.integers(0, 2**32 - 1),
    st.sampled_from([int(t) for t in T]),
    st.integers(0, 0xFFFF),
    st.integers(0, 255),
    st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=20)), max_size=2),
    st.booleans(),
)
def test_column_definition_round_trip(
    schema: bytes,
    table: bytes,
    org_table: bytes,
    name: bytes,
    org_name: bytes,
    charset: int,
    length: int,
    col_type: int,
    flags: int,
    decimals: int,
    extended: list[tuple[int, bytes]],
    mariadb: bool,
) -> None:
    caps = EXT if mariadb else 0
    col = ColumnDefinition41(
        schema,
        table,
        org_table,
        name,
        org_name,
        charset,
        length,
        col_type,
        flags,
        decimals,
        b"def",
        tuple(extended) if mariadb else (),
    )
    assert parse_column_definition41(build_column_definition41(col, caps), caps) == col


def test_column_definition_lying_lengths() -> None:
    col = ColumnDefinition41(b"s", b"t", b"t", b"c", b"c", 45, 10, T.MYSQL_TYPE_VAR_STRING)
    data = build_column_definition41(col)
    for n in range(len(data)):
        with pytest.raises(PeerViolation):
            parse_column_definition41(data[:n])
    with pytest.raises(PeerViolation):
        parse_column_definition41(b"\x03def\x40" + data[5:])  # schema claims 64 bytes


# -- text rows -----------------------------------------------------------------------------------


@given(st.lists(st.none() | st.binary(max_size=300), max_size=20))
def test_text_row_round_trip(values: list[bytes | None]) -> None:
    data = build_text_row(values)
    assert parse_text_row(data, len(values)) == values
    spans = text_row_spans(data, len(values))
    for value, span in zip(values, spans, strict=True):
        if value is None:
            assert span is None
        else:
            assert span is not None and data[span[1] : span[2]] == value
            assert data[span[0] : span[2]] == build_text_row([value])


def test_text_row_errors() -> None:
    with pytest.raises(PeerViolation):
        parse_text_row(b"\x05abc", 1)  # lying length
    with pytest.raises(PeerViolation):
        parse_text_row(b"\x01a\x01b", 1)  # trailing value
    with pytest.raises(PeerViolation):
        parse_text_row(b"\x01a", 2)  # missing value
    assert text_row_spans(b"\x01a\xfb\x02bc", 3, upto=2) == [(0, 1, 2), None]


# -- binary values -------------------------------------------------------------------------------

INT_RANGES = {
    T.MYSQL_TYPE_TINY: 8,
    T.MYSQL_TYPE_SHORT: 16,
    T.MYSQL_TYPE_YEAR: 16,
    T.MYSQL_TYPE_LONG: 32,
    T.MYSQL_TYPE_INT24: 32,
    T.MYSQL_TYPE_LONGLONG: 64,
}
STRING_TYPES = [
    T.MYSQL_TYPE_DECIMAL,
    T.MYSQL_TYPE_NEWDECIMAL,
    T.MYSQL_TYPE_VARCHAR,
    T.MYSQL_TYPE_VAR_STRING,
    T.MYSQL_TYPE_STRING,
    T.MYSQL_TYPE_ENUM,
    T.MYSQL_TYPE_SET,
    T.MYSQL_TYPE_TINY_BLOB,
    T.MYSQL_TYPE_MEDIUM_BLOB,
    T.MYSQL_TYPE_LONG_BLOB,
    T.MYSQL_TYPE_BLOB,
    T.MYSQL_TYPE_JSON,
    T.MYSQL_TYPE_BIT,
    T.MYSQL_TYPE_GEOMETRY,
]


@st.composite
def typed_value(draw: st.DrawFn) -> tuple[int, bool, BinaryValue]:
    kind = draw(st.sampled_from(["int", "float", "double", "date", "datetime", "time", "string"]))
    if kind == "int":
        t = draw(st.sampled_from(list(INT_RANGES)))
        bits = INT_RANGES[t]
        unsigned = draw(st.booleans())
        lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        return t, unsigned, draw(st.integers(lo, hi))
    if kind == "float":
        f = draw(st.floats(width=32, allow_nan=False))
        return T.MYSQL_TYPE_FLOAT, False, f
    if kind == "double":
        return T.MYSQL_TYPE_DOUBLE, False, draw(st.floats(allow_nan=False))
    if kind == "date":
        return T.MYSQL_TYPE_DATE, False, draw(st.dates())
    if kind == "datetime":
        t = draw(st.sampled_from([T.MYSQL_TYPE_DATETIME, T.MYSQL_TYPE_TIMESTAMP]))
        return t, False, draw(st.datetimes())
    if kind == "time":
        delta = draw(
            st.timedeltas(min_value=dt.timedelta(days=-34), max_value=dt.timedelta(days=34))
        )
        return T.MYSQL_TYPE_TIME, False, delta
    return draw(st.sampled_from(STRING_TYPES)), False, draw(st.binary(max_size=300))


def same(a: BinaryValue, b: BinaryValue) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dt.datetime) and not isinstance(b, dt.datetime):
        return False
    return a == b


@given(typed_value())
def test_binary_value_round_trip(tv: tuple[int, bool, BinaryValue]) -> None:
    t, unsigned, value = tv
    raw = encode_binary_value(t, value, unsigned)
    back = decode_binary_value(t, raw, unsigned)
    if t == T.MYSQL_TYPE_DATE and isinstance(value, dt.date):
        assert back == value
    else:
        assert same(back, value), (t, value, back)


def test_binary_value_widths() -> None:
    assert len(encode_binary_value(T.MYSQL_TYPE_TINY, -1)) == 1
    assert len(encode_binary_value(T.MYSQL_TYPE_YEAR, 2024)) == 2
    assert len(encode_binary_value(T.MYSQL_TYPE_INT24, 5)) == 4
    assert len(encode_binary_value(T.MYSQL_TYPE_FLOAT, 1.5)) == 4
    assert len(encode_binary_value(T.MYSQL_TYPE_DOUBLE, 1.5)) == 8
    assert len(encode_binary_value(T.MYSQL_TYPE_DATE, dt.date(2024, 1, 2))) == 4
    assert len(encode_binary_value(T.MYSQL_TYPE_DATETIME, dt.datetime(2024, 1, 2))) == 4
    assert len(encode_binary_value(T.MYSQL_TYPE_DATETIME, dt.datetime(2024, 1, 2, 3))) == 7
    assert (
        len(encode_binary_value(T.MYSQL_TYPE_DATETIME, dt.datetime(2024, 1, 2, 0, 0, 0, 1))) == 11
    )
    assert encode_binary_value(T.MYSQL_TYPE_TIME, dt.timedelta(0)) == b""
    assert len(encode_binary_value(T.MYSQL_TYPE_TIME, dt.timedelta(hours=1))) == 8
    assert len(encode_binary_value(T.MYSQL_TYPE_TIME, dt.timedelta(microseconds=1))) == 12
    # zero dates cannot be Python dates: the raw bytes come back
    assert decode_binary_value(T.MYSQL_TYPE_DATE, b"") == b""
    assert decode_binary_value(T.MYSQL_TYPE_DATE, b"\x00\x00\x00\x00") == b"\x00\x00\x00\x00"
    with pytest.raises(UsageError):
        encode_binary_value(T.MYSQL_TYPE_LONG, None)
    with pytest.raises(UsageError):
        encode_binary_value(T.MYSQL_TYPE_LONG, "1")  # type: ignore[arg-type]


# -- binary rows ---------------------------------------------------------------------------------


@given(st.lists(st.tuples(typed_value(), st.booleans()), max_size=20))
def test_binary_row_round_trip(cols: list[tuple[tuple[int, bool, BinaryValue], bool]]) -> None:
    types = [t for (t, _, _), _ in cols]
    raws: list[bytes | None] = [
        None if is_null else encode_binary_value(t, v, u) for (t, u, v), is_null in cols
    ]
    data = build_binary_row(types, raws)
    assert data[0] == 0 and len(data) >= 1 + null_bitmap_size(len(types), 2)
    assert parse_binary_row(data, types) == raws
    spans = binary_row_spans(data, types)
    assert [s is None for s in spans] == [r is None for r in raws]


@pytest.mark.parametrize("ncols", [1, 5, 6, 7, 8, 13, 14, 15, 16, 17])
def test_null_bitmap_edges(ncols: int) -> None:
    """Offset 2 moves the bitmap boundary: 6 columns fit one byte, 7 need two."""
    assert null_bitmap_size(ncols, 2) == (ncols + 9) // 8
    types = [T.MYSQL_TYPE_LONG] * ncols
    for null_at in (0, ncols - 1):
        values: list[bytes | None] = [b"\x01\x00\x00\x00"] * ncols
        values[null_at] = None
        data = build_binary_row(types, values)
        assert parse_binary_row(data, types) == values
        bit = null_at + 2
        assert data[1 + bit // 8] & (1 << (bit % 8))
    all_null: list[bytes | None] = [None] * ncols
    data = build_binary_row(types, all_null)
    assert len(data) == 1 + null_bitmap_size(ncols, 2)
    assert parse_binary_row(data, types) == all_null


def test_binary_row_errors() -> None:
    types = [T.MYSQL_TYPE_LONGLONG, T.MYSQL_TYPE_VAR_STRING, T.MYSQL_TYPE_DATETIME]
    good = build_binary_row(types, [b"\x00" * 8, b"abc", b"\xe8\x07\x01\x02"])
    for n in range(len(good)):
        with pytest.raises(PeerViolation):
            parse_binary_row(good[:n], types)
    with pytest.raises(PeerViolation):
        parse_binary_row(good + b"\x00", types)
    with pytest.raises(PeerViolation):  # DATETIME with length 5 is not a valid encoding
        parse_binary_row(b"\x00\x00\x05\x01\x02\x03\x04\x05", [T.MYSQL_TYPE_DATETIME])
    with pytest.raises(PeerViolation):  # lenenc claims 16 MiB
        parse_binary_row(b"\x00\x00\xfd\xff\xff\xffab", [T.MYSQL_TYPE_BLOB])
    with pytest.raises(PeerViolation):
        parse_binary_row(b"\x01\x00", [T.MYSQL_TYPE_NULL])  # header must be 0x00


# -- COM_STMT_PREPARE_OK / COM_STMT_EXECUTE ------------------------------------------------------


def test_stmt_prepare_ok() -> None:
    captured = bytes.fromhex("000500000008000800000000")
    ok = parse_stmt_prepare_ok(captured)
    assert ok == StmtPrepareOk(5, 8, 8, 0)
    assert build_stmt_prepare_ok(ok) == captured
    with pytest.raises(PeerViolation):
        parse_stmt_prepare_ok(captured[:11])


# Captured COM_STMT_EXECUTE payloads (MariaDB 10.11 accepted them; see transcripts).
EXECUTE_BOUND = bytes.fromhex(
    "1705000000000100000008010800fd00050006000c000b00fc000180f9ffffffffffffff0668c3a96c6c6f"
    "00000000000004400be80705060708090a0000000801010000000203040200ffc8"
)
EXECUTE_UNBOUND = bytes.fromhex("17050000000001000000490000000000000000008004e80705060000")
EXECUTE_LONG = bytes.fromhex(
    "170500000000010000000800f9ffffffffffffff0668c3a96c6c6f00000000000004400be807050607"
    "08090a000000080101000000020304c8"
)


def test_parse_captured_execute_and_remembered_types() -> None:
    ex = parse_com_stmt_execute(EXECUTE_BOUND, 8)
    assert ex.new_params_bound and ex.statement_id == 5 and ex.iteration_count == 1
    assert [t for t, _ in ex.param_types] == [
        T.MYSQL_TYPE_LONGLONG,
        T.MYSQL_TYPE_VAR_STRING,
        T.MYSQL_TYPE_DOUBLE,
        T.MYSQL_TYPE_NULL,
        T.MYSQL_TYPE_DATETIME,
        T.MYSQL_TYPE_TIME,
        T.MYSQL_TYPE_BLOB,
        T.MYSQL_TYPE_TINY,
    ]
    assert ex.param_types[7] == (T.MYSQL_TYPE_TINY, True)
    assert ex.values[1] == "héllo".encode() and ex.values[3] is None
    assert build_com_stmt_execute(ex) == EXECUTE_BOUND
    # new_params_bound_flag = 0: only parseable with the remembered types
    with pytest.raises(PeerViolation):
        parse_com_stmt_execute(EXECUTE_UNBOUND, 8)
    again = parse_com_stmt_execute(EXECUTE_UNBOUND, 8, ex.param_types)
    assert not again.new_params_bound
    assert again.values == (
        None,
        b"",
        b"\x00" * 7 + b"\x80",
        None,
        b"\xe8\x07\x05\x06",
        b"",
        None,
        b"\x00",
    )
    assert build_com_stmt_execute(again) == EXECUTE_UNBOUND
    # long data for parameter 6: no value in the packet
    with_long = parse_com_stmt_execute(EXECUTE_LONG, 8, ex.param_types, frozenset({6}))
    assert with_long.long_data == {6} and with_long.values[6] == b""
    assert build_com_stmt_execute(with_long) == EXECUTE_LONG
    with pytest.raises(PeerViolation):  # without knowing about the long data it mis-parses
        parse_com_stmt_execute(EXECUTE_LONG, 8, ex.param_types)


@given(
    st.lists(st.tuples(typed_value(), st.booleans()), max_size=12),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_execute_round_trip(
    params: list[tuple[tuple[int, bool, BinaryValue], bool]], bound: bool, stmt_id: int
) -> None:
    types = tuple((t, u) for (t, u, _), _ in params)
    values = tuple(None if n else encode_binary_value(t, v, u) for (t, u, v), n in params)
    ex = StmtExecute(stmt_id, 0, 1, bound or not params, types, values)
    data = build_com_stmt_execute(ex)
    got = parse_com_stmt_execute(data, len(params), None if bound else types)
    assert got.values == values and got.param_types == types
    assert got.statement_id == stmt_id


def test_execute_param_length_uses_low_four_bytes_like_the_server() -> None:
    """An 8-byte parameter length with garbage in the high half (node mysql2)."""
    value = b"v" * 20
    data = (
        b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00"  # header
        + b"\x00\x01\xfc\x00"  # no NULLs, types bound: BLOB
        + b"\xfe"
        + (20).to_bytes(4, "little")
        + b"\xde\xad\xbe\xef"
        + value
    )
    ex = parse_com_stmt_execute(data, 1)
    assert ex.values == (value,)


def test_execute_errors() -> None:
    with pytest.raises(PeerViolation):
        parse_com_stmt_execute(b"\x17\x01\x00\x00\x00\x00", 0)
    with pytest.raises(PeerViolation):
        parse_com_stmt_execute(b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00extra", 0)
    with pytest.raises(PeerViolation):  # params announced, packet ends
        parse_com_stmt_execute(b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00", 1)
    for n in range(10, len(EXECUTE_BOUND)):
        with pytest.raises(PeerViolation):
            parse_com_stmt_execute(EXECUTE_BOUND[:n], 8)


# -- splitting a run of rows at a limit ----------------------------------------------------------


def _framed_rows(sizes: list[int]) -> bytes:
    from protocols.mysql.framing import build_packets

    return b"".join(build_packets(b"x" * n, i + 1)[0] for i, n in enumerate(sizes))


def test_split_row_packets_by_rows_and_bytes() -> None:
    from protocols.mysql.resultset import skip_row_packets, split_row_packets

    run = _framed_rows([10, 20, 30, 40])
    assert split_row_packets(run, 0, len(run), 2, 1 << 30) == (14 + 24, 2)
    assert split_row_packets(run, 0, len(run), 10, 14 + 24 + 33) == (14 + 24, 2)
    assert split_row_packets(run, 0, len(run), 10, 1 << 30) == (len(run), 4)
    assert split_row_packets(run, 0, len(run), 0, 1 << 30) == (0, 0)
    assert split_row_packets(run, 0, len(run), 5, 13) == (0, 0)
    prefix = b"junk"
    assert split_row_packets(prefix + run, 4, 4 + len(run), 1, 100) == (4 + 14, 1)
    assert skip_row_packets(run, 0, 3) == 14 + 24 + 34


def test_split_row_packets_counts_a_continued_row_once() -> None:
    from protocols.mysql.framing import build_packets
    from protocols.mysql.resultset import split_row_packets

    big, _ = build_packets(b"y" * 0xFFFFFF, 1)  # one row: a full packet + an empty one
    run = big + build_packets(b"z", 3)[0]
    assert split_row_packets(run, 0, len(run), 1, 1 << 30) == (len(big), 1)
    assert split_row_packets(run, 0, len(run), 5, len(big) - 1) == (0, 0)
    with pytest.raises(UsageError):
        split_row_packets(run, 0, len(run) - 1, 5, 1 << 30)
