"""Type-correct masked values: every PostgreSQL type handled, in both formats and under every
style, decodes with psycopg's own loaders (its C and its pure-Python implementation,
offline); every MySQL type decodes in both protocols; odd original bytes never raise."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import re
import struct
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg.adapt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.pq import Format

from gateway.masking.my_values import (
    MyColumnMask,
    charset_codec,
    my_binary_mask,
    my_text_mask,
)
from gateway.masking.pg_values import (
    Oid,
    PgColumnMask,
    build_numeric_integer,
    pg_column_mask,
    python_codec,
)
from gateway.masking.styles import REDACTED, STYLES, Style, hash_int
from protocols.mysql.constants import ColumnFlag
from protocols.mysql.constants import ColumnType as T
from protocols.mysql.resultset import (
    FIXED_WIDTH,
    TEMPORAL_LENGTHS,
    build_binary_row,
    decode_binary_value,
    parse_binary_row,
)

KEY = b"masking-test-key-0123456789abcdef"


def all_styles() -> list[Style]:
    return [Style(name, keep_last=2, value='fixed <&> "value" é', hash_key=KEY) for name in STYLES]


STYLE_IDS = list(STYLES)

# -- PostgreSQL --------------------------------------------------------------------------------

# Valid original values per OID: (text format, binary format).
PG_SAMPLES: dict[int, list[tuple[bytes, bytes]]] = {
    Oid.BOOL: [(b"t", b"\x01"), (b"f", b"\x00")],
    Oid.BYTEA: [(b"\\x41424344", b"ABCD"), (b"ab\\\\c\\001", b"ab\\c\x01"), (b"\\x", b"")],
    Oid.CHAR: [(b"a", b"a")],
    Oid.NAME: [(b"pg_class", b"pg_class")],
    Oid.INT8: [
        (b"-9223372036854775808", struct.pack(">q", -(2**63))),
        (b"7", struct.pack(">q", 7)),
    ],
    Oid.INT2: [(b"-32768", struct.pack(">h", -32768)), (b"12", struct.pack(">h", 12))],
    Oid.INT4: [(b"5", struct.pack(">i", 5)), (b"-1", struct.pack(">i", -1))],
    Oid.TEXT: [
        (b"4111-1111-1111-1234", b"4111-1111-1111-1234"),
        ("jürgen@exämple.de".encode(), "jürgen@exämple.de".encode()),
        (b"", b""),
    ],
    Oid.OID: [(b"4294967295", struct.pack(">I", 2**32 - 1))],
    Oid.JSON: [(b'"bob@x.com"', b'"bob@x.com"'), (b'{"a": [1, 2]}', b'{"a": [1, 2]}')],
    Oid.XML: [(b"<a href='x'>t &amp; u</a>", b"<a href='x'>t &amp; u</a>")],
    Oid.CIDR: [(b"10.0.0.0/8", bytes((2, 8, 1, 4, 10, 0, 0, 0)))],
    Oid.FLOAT4: [(b"1.1", struct.pack(">f", 1.1)), (b"NaN", struct.pack(">f", float("nan")))],
    Oid.FLOAT8: [
        (b"1.5", struct.pack(">d", 1.5)),
        (b"-Infinity", struct.pack(">d", -float("inf"))),
    ],
    Oid.UNKNOWN: [(b"literal", b"literal")],
    Oid.MONEY: [(b"$1,234.56", struct.pack(">q", 123456))],
    Oid.INET: [(b"192.168.0.1/24", bytes((2, 24, 0, 4, 192, 168, 0, 1)))],
    Oid.BPCHAR: [(b"abc  ", b"abc  ")],
    Oid.VARCHAR: [(b"alice@example.com", b"alice@example.com")],
    Oid.DATE: [(b"2024-02-29", struct.pack(">i", 8825))],
    Oid.TIME: [(b"12:34:56.789", struct.pack(">q", 45296789000))],
    Oid.TIMESTAMP: [(b"2024-02-29 12:00:00", struct.pack(">q", 762436800000000))],
    Oid.TIMESTAMPTZ: [(b"2024-02-29 12:00:00+01", struct.pack(">q", 762433200000000))],
    Oid.INTERVAL: [(b"1 year 2 mons 3 days 04:05:06", struct.pack(">qii", 14706000000, 3, 14))],
    Oid.TIMETZ: [(b"12:00:00+02", struct.pack(">qi", 43200000000, -7200))],
    Oid.NUMERIC: [
        # 123.4500: ndigits 2, weight 0, sign +, dscale 4, digits 123, 4500
        (b"123.4500", struct.pack(">hhHhHH", 2, 0, 0, 4, 123, 4500)),
        (b"NaN", struct.pack(">hhHh", 0, 0, 0xC000, 0)),
        (b"-0.0001", struct.pack(">hhHhH", 1, -1, 0x4000, 4, 1)),
    ],
    Oid.UUID: [
        (
            b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            bytes.fromhex("a0eebc999c0b4ef8bb6d6bb9bd380a11"),
        )
    ],
    Oid.JSONB: [(b'{"a": 1}', b'\x01{"a": 1}'), (b'"x@y.org"', b'\x01"x@y.org"')],
}
PG_OIDS = sorted(PG_SAMPLES)
TEXTUAL = {Oid.TEXT, Oid.VARCHAR, Oid.BPCHAR, Oid.NAME, Oid.UNKNOWN, Oid.CHAR, Oid.XML}

_TX = psycopg.adapt.Transformer()
_PY_MODULES = [
    importlib.import_module(f"psycopg.types.{name}")
    for name in ("string", "numeric", "datetime", "uuid", "bool", "net", "json")
]


def psycopg_loaders(oid: int, fmt: int) -> list[Callable[[bytes], Any]]:
    """psycopg's loader for (oid, format), in its C implementation and in pure Python."""
    c_loader = _TX.get_loader(oid, Format(fmt))
    loaders: list[Callable[[bytes], Any]] = [c_loader.load]
    name = type(c_loader).__name__
    for module in _PY_MODULES:
        cls = getattr(module, name, None)
        if cls is not None:
            loader = cls(oid)
            if name == "IntervalLoader":
                # Offline there is no IntervalStyle to read; the C loader assumes the
                # default ("postgres"), make the Python one do the same.
                loader._load_method = cls._load_postgres
            loaders.append(loader.load)
            break
    else:
        raise AssertionError(f"no pure-Python psycopg loader {name}")
    return loaders


def check_pg_value(oid: int, fmt: int, out: bytes) -> None:
    """``out`` is a valid value of type ``oid`` in format ``fmt``."""
    for load in psycopg_loaders(oid, fmt):
        load(out)
    # Types psycopg reads as plain text/bytes: check the syntax PostgreSQL would accept.
    if oid == Oid.MONEY:
        if fmt == 0:
            assert re.fullmatch(rb"-?\$[0-9,]+\.[0-9]{2}", out)
        else:
            assert len(out) == 8
    elif oid == Oid.XML:
        ET.fromstring(b"<r>" + out + b"</r>")  # well-formed XML content
    elif oid == Oid.CHAR:
        assert len(out) == 1
    elif oid == Oid.JSONB and fmt == 1:
        assert out[:1] == b"\x01"
        json.loads(out[1:])
    elif oid in (Oid.JSON, Oid.JSONB):
        json.loads(out)


@pytest.mark.parametrize("oid", PG_OIDS, ids=[Oid(o).name for o in PG_OIDS])
@pytest.mark.parametrize("fmt", [0, 1], ids=["text", "binary"])
@pytest.mark.parametrize("style", all_styles(), ids=STYLE_IDS)
def test_every_pg_type_decodes_in_both_formats_under_every_style(
    oid: int, fmt: int, style: Style
) -> None:
    mask = pg_column_mask(oid, fmt, style)
    assert mask.exact
    for sample in PG_SAMPLES[oid]:
        original = sample[fmt]
        for load in psycopg_loaders(oid, fmt):
            load(original)  # the sample itself is valid
        out = mask.apply(original)
        if style.name == "null":
            assert out is None
            continue
        assert out is not None
        check_pg_value(oid, fmt, out)


@pytest.mark.parametrize("oid", PG_OIDS, ids=[Oid(o).name for o in PG_OIDS])
@pytest.mark.parametrize("fmt", [0, 1], ids=["text", "binary"])
def test_pg_masks_accept_memoryview_values(oid: int, fmt: int) -> None:
    for style in all_styles():
        mask = pg_column_mask(oid, fmt, style)
        for sample in PG_SAMPLES[oid]:
            assert mask.apply(memoryview(sample[fmt])) == mask.apply(sample[fmt])  # type: ignore[arg-type]


# Exact binary layouts (the send/recv functions; asyncpg decodes these with no slack).
SENTINEL_LAYOUTS: dict[int, tuple[bytes, bytes]] = {
    Oid.BOOL: (b"f", b"\x00"),
    Oid.INT2: (b"0", b"\x00\x00"),
    Oid.INT4: (b"0", b"\x00" * 4),
    Oid.INT8: (b"0", b"\x00" * 8),
    Oid.OID: (b"0", b"\x00" * 4),
    Oid.FLOAT4: (b"0", b"\x00" * 4),
    Oid.FLOAT8: (b"0", b"\x00" * 8),
    Oid.NUMERIC: (b"0", struct.pack(">hhHh", 0, 0, 0, 0)),
    Oid.MONEY: (b"$0.00", b"\x00" * 8),
    Oid.DATE: (b"2000-01-01", struct.pack(">i", 0)),
    Oid.TIMESTAMP: (b"2000-01-01 00:00:00", struct.pack(">q", 0)),
    Oid.TIMESTAMPTZ: (b"2000-01-01 00:00:00+00", struct.pack(">q", 0)),
    Oid.TIME: (b"00:00:00", struct.pack(">q", 0)),
    Oid.TIMETZ: (b"00:00:00+00", struct.pack(">qi", 0, 0)),
    Oid.INTERVAL: (b"00:00:00", struct.pack(">qii", 0, 0, 0)),
    Oid.UUID: (b"00000000-0000-0000-0000-000000000000", bytes(16)),
    Oid.INET: (b"0.0.0.0", bytes((2, 32, 0, 4, 0, 0, 0, 0))),
    Oid.CIDR: (b"0.0.0.0/32", bytes((2, 32, 1, 4, 0, 0, 0, 0))),
}


@pytest.mark.parametrize("oid", sorted(SENTINEL_LAYOUTS), ids=lambda o: Oid(o).name)
@pytest.mark.parametrize("name", ["redact", "last4", "keep_last", "fixed", "email"])
def test_pg_sentinels_have_the_exact_layout(oid: int, name: str) -> None:
    style = Style(name, value="x")
    for fmt in (0, 1):
        assert pg_column_mask(oid, fmt, style).apply(b"ignored") == SENTINEL_LAYOUTS[oid][fmt]


def test_pg_text_types_carry_the_style_in_both_formats() -> None:
    for fmt in (0, 1):
        last4 = pg_column_mask(Oid.VARCHAR, fmt, Style("last4"))
        assert last4.apply(b"4111-1111-1111-1234") == b"****-****-****-1234"
        email = pg_column_mask(Oid.TEXT, fmt, Style("email"))
        assert email.apply(b"alice@example.com") == b"****@example.com"
        assert pg_column_mask(Oid.BPCHAR, fmt, Style("redact")).apply(b"x") == REDACTED.encode()


def test_pg_json_masks_a_string_document_by_its_content() -> None:
    email = Style("email")
    assert pg_column_mask(Oid.JSON, 0, email).apply(b'"bob@x.com"') == b'"****@x.com"'
    assert pg_column_mask(Oid.JSONB, 1, email).apply(b'\x01"bob@x.com"') == b'\x01"****@x.com"'
    assert pg_column_mask(Oid.JSONB, 0, Style("redact")).apply(b"[1]") == b'"****"'
    assert pg_column_mask(Oid.JSONB, 1, Style("redact")).apply(b"\x01[1]") == b'\x01"****"'


def test_pg_bytea_masks_the_bytes_and_writes_hex_in_text_format() -> None:
    last4 = Style("last4")
    assert pg_column_mask(Oid.BYTEA, 1, last4).apply(b"secret1234") == b"******1234"
    assert pg_column_mask(Oid.BYTEA, 0, last4).apply(b"\\x" + b"secret1234".hex().encode()) == (
        b"\\x" + b"******1234".hex().encode()
    )
    # escape-format input (bytea_output = escape) is read too
    assert pg_column_mask(Oid.BYTEA, 0, Style("keep_last", keep_last=1)).apply(b"ab\\134c") == (
        b"\\x" + b"***c".hex().encode()
    )


def test_pg_xml_writes_character_data() -> None:
    out = pg_column_mask(Oid.XML, 0, Style("fixed", value="<b>&\x01")).apply(b"<a/>")
    assert out == b"&lt;b&gt;&amp;?"


def test_pg_hash_agrees_across_formats_and_integer_widths() -> None:
    style = Style("hash", hash_key=KEY)

    def both(oid: int, text: bytes, binary: bytes) -> tuple[Any, Any]:
        t_out = pg_column_mask(oid, 0, style).apply(text)
        b_out = pg_column_mask(oid, 1, style).apply(binary)
        assert t_out is not None and b_out is not None
        return (
            psycopg_loaders(oid, 0)[0](t_out),
            psycopg_loaders(oid, 1)[0](b_out),
        )

    int4 = both(Oid.INT4, b"42", struct.pack(">i", 42))
    int8 = both(Oid.INT8, b"42", struct.pack(">q", 42))
    numeric = both(Oid.NUMERIC, b"42.00", struct.pack(">hhHhH", 1, 0, 0, 2, 42))
    float8 = both(Oid.FLOAT8, b"42", struct.pack(">d", 42.0))
    assert int4[0] == int4[1] == int8[0] == int8[1] == numeric[0] == numeric[1] == float8[0]
    assert int4[0] == hash_int(KEY, "42", 31)
    float4 = both(Oid.FLOAT4, b"1.1", struct.pack(">f", 1.1))
    assert float4[0] == float4[1]
    u = both(Oid.UUID, b"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", PG_SAMPLES[Oid.UUID][0][1])
    assert u[0] == u[1]
    assert u[0].version == 8 and u[0].variant == uuid.RFC_4122
    # distinct values, distinct masks; another key, another mask
    other = pg_column_mask(Oid.INT4, 0, style).apply(b"43")
    assert other != pg_column_mask(Oid.INT4, 0, style).apply(b"42")
    assert pg_column_mask(Oid.INT4, 0, Style("hash", hash_key=b"other")).apply(b"42") != (
        pg_column_mask(Oid.INT4, 0, style).apply(b"42")
    )


@given(st.integers(0, 10**40))
def test_numeric_integer_layout_round_trips_through_psycopg(number: int) -> None:
    for load in psycopg_loaders(Oid.NUMERIC, 1):
        assert load(build_numeric_integer(number)) == Decimal(number)


UNMASKABLE = [
    1009,  # text[]
    1015,  # varchar[]
    1007,  # int4[]
    2249,  # record
    600,  # point
    3904,  # int4range
    1560,  # bit
    16_385,  # an extension type (citext, hstore...) with a per-database OID
]


@pytest.mark.parametrize("oid", UNMASKABLE)
@pytest.mark.parametrize("fmt", [0, 1], ids=["text", "binary"])
def test_pg_types_without_a_type_correct_mask_become_null_inexact(oid: int, fmt: int) -> None:
    for style in all_styles():
        mask = pg_column_mask(oid, fmt, style)
        assert mask.apply(b"{a,b}") is None
        assert mask.exact is (style.name == "null")


def test_pg_null_style_is_exact_for_every_type_and_an_unknown_format_is_inexact() -> None:
    assert pg_column_mask(Oid.INT4, 0, Style("null")) == PgColumnMask(
        pg_column_mask(Oid.INT4, 0, Style("null")).apply, True
    )
    mask = pg_column_mask(Oid.TEXT, 2, Style("redact"))
    assert not mask.exact and mask.apply(b"x") is None


def test_pg_constant_masks_do_no_per_value_work() -> None:
    mask = pg_column_mask(Oid.INT4, 1, Style("redact"))
    first = mask.apply(b"\x00\x00\x00\x01")
    assert first is mask.apply(b"\x00\x00\x00\x02")  # the same precomputed bytes


def test_pg_client_encodings() -> None:
    assert python_codec("UTF8") == "utf-8"
    assert python_codec("WIN1252") == "cp1252"
    assert python_codec("LATIN1") == "iso8859-1"
    assert python_codec("SQL_ASCII") == "utf-8"
    assert python_codec("no-such-encoding") == "utf-8"
    keep2 = Style("keep_last", keep_last=2)
    assert pg_column_mask(Oid.TEXT, 0, keep2, "LATIN1").apply(b"12\xe9\xe9") == b"**\xe9\xe9"
    assert pg_column_mask(Oid.TEXT, 0, Style("fixed", value="é"), "LATIN1").apply(b"x") == b"\xe9"
    # a character the client encoding cannot carry becomes "?", never an exception
    assert pg_column_mask(Oid.TEXT, 0, Style("fixed", value="中"), "LATIN1").apply(b"x") == b"?"
    # bytes invalid in the client encoding survive a kept character unchanged
    assert pg_column_mask(Oid.TEXT, 1, keep2).apply(b"abc\xff\xfe") == b"***\xff\xfe"


styles_st = st.sampled_from(all_styles()) | st.builds(
    Style,
    name=st.sampled_from(STYLES),
    keep_last=st.integers(0, 8),
    value=st.text(max_size=20),
    hash_key=st.binary(min_size=1, max_size=16),
)


@given(
    st.sampled_from(PG_OIDS + UNMASKABLE),
    st.sampled_from([0, 1]),
    styles_st,
    st.binary(max_size=40),
    st.sampled_from(["utf-8", "LATIN1", "SJIS", "WIN1251"]),
)
def test_pg_random_original_bytes_never_raise(
    oid: int, fmt: int, style: Style, raw: bytes, encoding: str
) -> None:
    mask = pg_column_mask(oid, fmt, style, encoding)
    out = mask.apply(raw)
    typed = oid in PG_SAMPLES and oid not in TEXTUAL | {Oid.BYTEA}
    json_in_utf8 = oid not in (Oid.JSON, Oid.JSONB) or encoding == "utf-8"
    if out is not None and typed and json_in_utf8:
        # whatever came in, what goes out of a typed column is valid for the type
        check_pg_value(oid, fmt, out)


# -- MySQL -------------------------------------------------------------------------------------

UTF8MB4 = 255
LATIN1 = 8
BINARY = 63
UCS2 = 35

STRING_TYPES = [
    T.MYSQL_TYPE_VARCHAR,
    T.MYSQL_TYPE_VAR_STRING,
    T.MYSQL_TYPE_STRING,
    T.MYSQL_TYPE_TINY_BLOB,
    T.MYSQL_TYPE_MEDIUM_BLOB,
    T.MYSQL_TYPE_LONG_BLOB,
    T.MYSQL_TYPE_BLOB,
    T.MYSQL_TYPE_ENUM,
    T.MYSQL_TYPE_SET,
]
INT_TYPES = [
    T.MYSQL_TYPE_TINY,
    T.MYSQL_TYPE_SHORT,
    T.MYSQL_TYPE_INT24,
    T.MYSQL_TYPE_LONG,
    T.MYSQL_TYPE_LONGLONG,
]
TEMPORAL_TEXT: dict[int, str] = {
    T.MYSQL_TYPE_DATE: "%Y-%m-%d",
    T.MYSQL_TYPE_NEWDATE: "%Y-%m-%d",
    T.MYSQL_TYPE_DATETIME: "%Y-%m-%d %H:%M:%S",
    T.MYSQL_TYPE_TIMESTAMP: "%Y-%m-%d %H:%M:%S",
    T.MYSQL_TYPE_TIME: "%H:%M:%S",
}
UNMASKABLE_MY = [
    T.MYSQL_TYPE_GEOMETRY,
    T.MYSQL_TYPE_VECTOR,
    T.MYSQL_TYPE_TIMESTAMP2,
    T.MYSQL_TYPE_TYPED_ARRAY,
    0x77,
]

# (type, flags, charset, column_length, text original, binary original)
MY_COLUMNS: list[tuple[int, int, int, int, bytes, bytes]] = [
    *[(t, 0, UTF8MB4, 80, b"4111-1111-1111-1234", b"4111-1111-1111-1234") for t in STRING_TYPES],
    (T.MYSQL_TYPE_VAR_STRING, 0, LATIN1, 20, b"caf\xe9@example.com", b"caf\xe9@example.com"),
    (T.MYSQL_TYPE_BLOB, ColumnFlag.BINARY, BINARY, 65535, b"\x00\xffbin@x", b"\x00\xffbin@x"),
    (T.MYSQL_TYPE_VAR_STRING, 0, UCS2, 20, "ab@c".encode("utf-16-be"), "ab@c".encode("utf-16-be")),
    (T.MYSQL_TYPE_JSON, ColumnFlag.BINARY, BINARY, 2**32 - 1, b'{"a": 1}', b'{"a": 1}'),
    (T.MYSQL_TYPE_JSON, 0, 46, 2**32 - 1, b'"bob@x.com"', b'"bob@x.com"'),
    (T.MYSQL_TYPE_TINY, 0, BINARY, 4, b"-12", struct.pack("<b", -12)),
    (T.MYSQL_TYPE_TINY, ColumnFlag.UNSIGNED, BINARY, 3, b"255", b"\xff"),
    (T.MYSQL_TYPE_SHORT, 0, BINARY, 6, b"-300", struct.pack("<h", -300)),
    (T.MYSQL_TYPE_INT24, ColumnFlag.UNSIGNED, BINARY, 8, b"16777215", struct.pack("<I", 2**24 - 1)),
    (T.MYSQL_TYPE_LONG, 0, BINARY, 11, b"42", struct.pack("<i", 42)),
    (
        T.MYSQL_TYPE_LONGLONG,
        ColumnFlag.UNSIGNED,
        BINARY,
        20,
        b"18446744073709551615",
        struct.pack("<Q", 2**64 - 1),
    ),
    (
        T.MYSQL_TYPE_YEAR,
        ColumnFlag.UNSIGNED | ColumnFlag.ZEROFILL,
        BINARY,
        4,
        b"2024",
        struct.pack("<H", 2024),
    ),
    (T.MYSQL_TYPE_FLOAT, 0, BINARY, 12, b"1.1", struct.pack("<f", 1.1)),
    (T.MYSQL_TYPE_DOUBLE, 0, BINARY, 22, b"-2.5e-300", struct.pack("<d", -2.5e-300)),
    (T.MYSQL_TYPE_NEWDECIMAL, 0, BINARY, 12, b"-123.4500", b"-123.4500"),
    (T.MYSQL_TYPE_DECIMAL, ColumnFlag.UNSIGNED, BINARY, 4, b"9.99", b"9.99"),
    (T.MYSQL_TYPE_BIT, ColumnFlag.UNSIGNED, BINARY, 1, b"\x01", b"\x01"),
    (T.MYSQL_TYPE_BIT, ColumnFlag.UNSIGNED, BINARY, 12, b"\x0f\xff", b"\x0f\xff"),
    (T.MYSQL_TYPE_DATE, 0, BINARY, 10, b"2024-02-29", struct.pack("<HBB", 2024, 2, 29)),
    (T.MYSQL_TYPE_NEWDATE, 0, BINARY, 10, b"2024-02-29", struct.pack("<HBB", 2024, 2, 29)),
    (
        T.MYSQL_TYPE_DATETIME,
        0,
        BINARY,
        26,
        b"2024-02-29 12:00:00.123456",
        struct.pack("<HBBBBBI", 2024, 2, 29, 12, 0, 0, 123456),
    ),
    (
        T.MYSQL_TYPE_TIMESTAMP,
        0,
        BINARY,
        19,
        b"2024-02-29 12:00:00",
        struct.pack("<HBBBBB", 2024, 2, 29, 12, 0, 0),
    ),
    (T.MYSQL_TYPE_TIME, 0, BINARY, 10, b"-838:59:59", struct.pack("<BIBBB", 1, 34, 22, 59, 59)),
]


def bit_width(column_length: int) -> int:
    # BIT(M), M in 1..64, is (M + 7) // 8 bytes
    return (max(1, min(64, column_length)) + 7) // 8


def check_my_text(col_type: int, column_length: int, charset: int, out: bytes) -> None:
    if col_type in INT_TYPES or col_type == T.MYSQL_TYPE_YEAR:
        int(out)
    elif col_type in (T.MYSQL_TYPE_FLOAT, T.MYSQL_TYPE_DOUBLE):
        float(out)
    elif col_type in (T.MYSQL_TYPE_DECIMAL, T.MYSQL_TYPE_NEWDECIMAL):
        Decimal(out.decode("ascii"))
    elif col_type == T.MYSQL_TYPE_BIT:
        assert len(out) == bit_width(column_length)
    elif col_type in TEMPORAL_TEXT:
        dt.datetime.strptime(out.decode("ascii"), TEMPORAL_TEXT[col_type])
    elif col_type == T.MYSQL_TYPE_JSON:
        json.loads(out)
    else:
        out.decode(charset_codec(charset)[0], "surrogateescape")


def check_my_binary(col_type: int, flags: int, column_length: int, out: bytes) -> None:
    # The value survives a binary row's framing (fixed width, 1-byte temporal length,
    # lenenc strings) and decodes.
    assert parse_binary_row(build_binary_row([col_type], [out]), [col_type]) == [out]
    width = FIXED_WIDTH.get(col_type)
    if width is not None:
        assert len(out) == width
    if col_type in TEMPORAL_LENGTHS:
        assert len(out) in TEMPORAL_LENGTHS[col_type]
    value = decode_binary_value(col_type, out, bool(flags & ColumnFlag.UNSIGNED))
    if col_type in (T.MYSQL_TYPE_DATE, T.MYSQL_TYPE_DATETIME, T.MYSQL_TYPE_TIMESTAMP):
        assert isinstance(value, dt.date)
    elif col_type == T.MYSQL_TYPE_TIME:
        assert isinstance(value, dt.timedelta)
    elif col_type in (T.MYSQL_TYPE_DECIMAL, T.MYSQL_TYPE_NEWDECIMAL):
        Decimal(out.decode("ascii"))
    elif col_type == T.MYSQL_TYPE_BIT:
        assert len(out) == bit_width(column_length)
    elif col_type == T.MYSQL_TYPE_JSON:
        json.loads(out)
    elif col_type == T.MYSQL_TYPE_NEWDATE:
        assert len(out) == 4


@pytest.mark.parametrize(
    "column", MY_COLUMNS, ids=[f"{T(c[0]).name}-{c[2]}-{c[3]}" for c in MY_COLUMNS]
)
@pytest.mark.parametrize("style", all_styles(), ids=STYLE_IDS)
def test_every_mysql_type_decodes_in_both_protocols_under_every_style(
    column: tuple[int, int, int, int, bytes, bytes], style: Style
) -> None:
    col_type, flags, charset, column_length, text_value, binary_value = column
    text_mask = my_text_mask(col_type, flags, charset, column_length, style)
    binary_mask = my_binary_mask(col_type, flags, charset, column_length, style)
    assert text_mask.exact and binary_mask.exact
    text_out = text_mask.apply(text_value)
    binary_out = binary_mask.apply(binary_value)
    if style.name == "null":
        assert text_out is None and binary_out is None
        return
    assert text_out is not None and binary_out is not None
    check_my_text(col_type, column_length, charset, text_out)
    check_my_binary(col_type, flags, column_length, binary_out)
    for mask, out in ((text_mask, text_out), (binary_mask, binary_out)):
        if mask.max_length is None:
            assert len(out) <= column_length or col_type not in STRING_TYPES
        else:
            assert len(out) <= mask.max_length <= 0xFFFFFFFF
            assert mask.max_length > column_length


def test_mysql_strings_carry_the_style_in_the_column_charset() -> None:
    last4 = Style("last4")
    mask = my_text_mask(T.MYSQL_TYPE_VAR_STRING, 0, UTF8MB4, 80, last4)
    assert mask.apply(b"4111-1111-1111-1234") == b"****-****-****-1234"
    assert mask.max_length is None
    keep2 = Style("keep_last", keep_last=2)
    assert my_text_mask(T.MYSQL_TYPE_STRING, 0, LATIN1, 4, keep2).apply(b"12\xe9\x80") == (
        b"**\xe9\x80"  # cp1252 é and €
    )
    ucs2 = my_binary_mask(T.MYSQL_TYPE_VAR_STRING, 0, UCS2, 20, Style("email"))
    assert ucs2.apply("ab@c".encode("utf-16-be")) == "****@c".encode("utf-16-be")
    blob = my_binary_mask(T.MYSQL_TYPE_BLOB, ColumnFlag.BINARY, BINARY, 100, keep2)
    assert blob.apply(b"\x00\x01\xfe\xff") == b"**\xfe\xff"
    json_mask = my_text_mask(T.MYSQL_TYPE_JSON, 0, BINARY, 2**32 - 1, Style("email"))
    assert json_mask.apply(b'"bob@x.com"') == b'"****@x.com"'


def test_mysql_column_length_grows_when_the_mask_is_longer() -> None:
    # VARCHAR(3) utf8mb4: 12 bytes; a 32-character hash needs 32.
    assert (
        my_binary_mask(
            T.MYSQL_TYPE_VAR_STRING, 0, UTF8MB4, 12, Style("hash", hash_key=KEY)
        ).max_length
        == 32
    )
    assert my_text_mask(T.MYSQL_TYPE_STRING, 0, LATIN1, 2, Style("redact")).max_length == 4
    fixed = Style("fixed", value="ééé")
    assert my_text_mask(T.MYSQL_TYPE_STRING, 0, UTF8MB4, 4, fixed).max_length == 6
    assert my_text_mask(T.MYSQL_TYPE_STRING, 0, UCS2, 2, Style("redact")).max_length == 8
    assert my_text_mask(T.MYSQL_TYPE_STRING, 0, UTF8MB4, 40, Style("email")).max_length == 44
    # LONGTEXT is already at the 4-byte field's maximum
    long_email = my_text_mask(T.MYSQL_TYPE_LONG_BLOB, 0, UTF8MB4, 2**32 - 1, Style("email"))
    assert long_email.max_length is None
    assert my_text_mask(T.MYSQL_TYPE_STRING, 0, UTF8MB4, 40, Style("last4")).max_length is None
    assert my_text_mask(T.MYSQL_TYPE_STRING, 0, UTF8MB4, 40, Style("null")).max_length is None


CHARSETS = [UTF8MB4, 33, LATIN1, BINARY, UCS2, 2304]


@given(
    st.sampled_from(CHARSETS),
    st.integers(0, 30),
    st.data(),
    styles_st,
    st.sampled_from([T.MYSQL_TYPE_VAR_STRING, T.MYSQL_TYPE_JSON]),
)
def test_mysql_masked_strings_fit_the_reported_column_length(
    charset: int, chars: int, data: st.DataObject, style: Style, col_type: int
) -> None:
    codec, width = charset_codec(charset)
    column_length = chars * width
    if charset == BINARY:
        value = data.draw(st.binary(max_size=column_length))
    else:
        alphabet = st.characters(codec="latin-1" if charset == LATIN1 else "utf-8")
        text = data.draw(st.text(alphabet, max_size=chars))
        if charset in (33, UCS2):
            text = "".join(ch for ch in text if ord(ch) < 0x10000)  # BMP only (utf8mb3, ucs2)
        value = text.encode(codec, "replace")
    assert len(value) <= column_length
    for make in (my_text_mask, my_binary_mask):
        mask: MyColumnMask = make(col_type, 0, charset, column_length, style)
        out = mask.apply(value)
        if out is not None:
            assert len(out) <= (mask.max_length or column_length)


def test_mysql_sentinels() -> None:
    redact = Style("redact")
    assert my_text_mask(T.MYSQL_TYPE_LONG, 0, BINARY, 11, redact).apply(b"42") == b"0"
    assert my_binary_mask(T.MYSQL_TYPE_LONG, 0, BINARY, 11, redact).apply(b"*\0\0\0") == bytes(4)
    assert my_binary_mask(T.MYSQL_TYPE_LONGLONG, 0, BINARY, 20, redact).apply(bytes(8)) == bytes(8)
    assert my_binary_mask(T.MYSQL_TYPE_DOUBLE, 0, BINARY, 22, redact).apply(bytes(8)) == bytes(8)
    assert my_binary_mask(T.MYSQL_TYPE_NEWDECIMAL, 0, BINARY, 12, redact).apply(b"1.5") == b"0"
    assert my_text_mask(T.MYSQL_TYPE_YEAR, 0, BINARY, 4, redact).apply(b"2024") == b"1970"
    assert my_binary_mask(T.MYSQL_TYPE_YEAR, 0, BINARY, 4, redact).apply(b"\xe8\x07") == (
        struct.pack("<H", 1970)
    )
    assert my_text_mask(T.MYSQL_TYPE_DATETIME, 0, BINARY, 19, redact).apply(b"x") == (
        b"1970-01-01 00:00:00"
    )
    assert my_binary_mask(T.MYSQL_TYPE_DATE, 0, BINARY, 10, redact).apply(b"x") == (
        struct.pack("<HBB", 1970, 1, 1)
    )
    assert my_binary_mask(T.MYSQL_TYPE_TIME, 0, BINARY, 10, redact).apply(b"x") == b""
    assert my_text_mask(T.MYSQL_TYPE_BIT, 0, BINARY, 12, redact).apply(b"\x0f\xff") == bytes(2)


@pytest.mark.parametrize("col_type", UNMASKABLE_MY, ids=lambda t: hex(t))
def test_mysql_types_without_a_type_correct_mask_become_null_inexact(col_type: int) -> None:
    for make in (my_text_mask, my_binary_mask):
        for style in all_styles():
            mask = make(col_type, 0, BINARY, 100, style)
            assert mask.apply(b"\x00\x01") is None
            assert mask.exact is (style.name == "null")
            assert mask.max_length is None


def test_mysql_null_typed_column() -> None:
    mask = my_binary_mask(T.MYSQL_TYPE_NULL, 0, BINARY, 0, Style("redact"))
    assert mask.exact and mask.apply(b"") is None


@pytest.mark.parametrize("col_type", INT_TYPES, ids=lambda t: T(t).name)
@pytest.mark.parametrize("unsigned", [False, True])
def test_mysql_int_hash_agrees_across_protocols_and_stays_in_range(
    col_type: int, unsigned: bool
) -> None:
    style = Style("hash", hash_key=KEY)
    flags = ColumnFlag.UNSIGNED if unsigned else 0
    width = FIXED_WIDTH[col_type]
    text_out = my_text_mask(col_type, flags, BINARY, 11, style).apply(b"42")
    binary_out = my_binary_mask(col_type, flags, BINARY, 11, style).apply(
        (42).to_bytes(width, "little")
    )
    assert text_out is not None and binary_out is not None
    assert len(binary_out) == width
    decoded = decode_binary_value(col_type, binary_out, unsigned)
    assert decoded == int(text_out)
    bits = {1: 7, 2: 15, 4: 23 if col_type == T.MYSQL_TYPE_INT24 else 31, 8: 31}[width]
    assert decoded == hash_int(KEY, "42", bits)
    # the same value as PostgreSQL's int4/int8 hash wherever the ranges agree
    pg = pg_column_mask(Oid.INT8, 0, style).apply(b"42")
    assert pg is not None and int(pg) & ((1 << bits) - 1) == decoded


def test_mysql_float_and_decimal_hash() -> None:
    style = Style("hash", hash_key=KEY)
    f_text = my_text_mask(T.MYSQL_TYPE_FLOAT, 0, BINARY, 12, style).apply(b"1.1")
    f_bin = my_binary_mask(T.MYSQL_TYPE_FLOAT, 0, BINARY, 12, style).apply(struct.pack("<f", 1.1))
    assert f_text is not None and f_bin is not None
    assert float(f_text) == decode_binary_value(T.MYSQL_TYPE_FLOAT, f_bin)
    dec = my_binary_mask(T.MYSQL_TYPE_NEWDECIMAL, 0, BINARY, 7, style).apply(b"1.50")
    assert dec is not None and len(dec) <= 5  # DECIMAL(5, x): at most 5 digits
    assert dec == my_text_mask(T.MYSQL_TYPE_NEWDECIMAL, 0, BINARY, 7, style).apply(b"1.5")
    year = my_binary_mask(T.MYSQL_TYPE_YEAR, 0, BINARY, 4, style).apply(struct.pack("<H", 2024))
    assert year is not None
    assert 1901 <= struct.unpack("<H", year)[0] <= 2155


def test_charset_codecs() -> None:
    assert charset_codec(255) == ("utf-8", 4)
    assert charset_codec(45) == ("utf-8", 4)
    assert charset_codec(33) == ("utf-8", 3)
    assert charset_codec(8) == ("cp1252", 1)
    assert charset_codec(63) == ("utf-8", 1)
    assert charset_codec(45 + 1024) == ("utf-8", 4)  # MariaDB utf8mb4_general_nopad_ci
    assert charset_codec(8 + 1024) == ("cp1252", 1)
    assert charset_codec(2308) == ("utf-8", 4)  # unknown: UTF-8, 4 bytes a character


MY_TYPES = [c[0] for c in MY_COLUMNS] + UNMASKABLE_MY


@given(
    st.sampled_from(MY_TYPES),
    st.sampled_from([0, ColumnFlag.UNSIGNED, ColumnFlag.BINARY]),
    st.sampled_from([*CHARSETS, 12, 95, 0]),
    st.integers(0, 2**32 - 1),
    styles_st,
    st.binary(max_size=40),
)
def test_mysql_random_original_bytes_never_raise(
    col_type: int, flags: int, charset: int, column_length: int, style: Style, raw: bytes
) -> None:
    for binary in (False, True):
        make = my_binary_mask if binary else my_text_mask
        mask = make(col_type, flags, charset, column_length, style)
        out = mask.apply(raw)
        if out is None or col_type in STRING_TYPES:
            continue
        if binary:
            check_my_binary(col_type, flags, column_length, out)
        elif col_type != T.MYSQL_TYPE_JSON or charset_codec(charset)[0] == "utf-8":
            check_my_text(col_type, column_length, charset, out)
