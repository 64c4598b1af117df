"""Type-correct masked values for PostgreSQL result columns, in text and binary format.

A mask is chosen once per column of a RowDescription (``pg_column_mask``) and applied to
every non-NULL value of the column. The replacement must be a value the client's decoder
accepts for the column's type and format (PROTOCOLS.md 2.8): ``****`` in an ``int4`` column
breaks every driver. So:

* text-like types (text, varchar, bpchar, name, unknown) carry the style's text; json and
  jsonb carry it as a JSON string literal, xml as XML character data, bytea as the UTF-8
  bytes of the masked text (hex output ``\\x...`` in text format);
* numbers carry ``0``, or with the ``hash`` style a non-negative integer derived from the
  keyed hash of the value's canonical decimal text (``styles.hash_int``): 31 bits for
  int4/int8/oid/numeric/float8, 24 bits for float4 (exact in its mantissa), 15 for int2,
  so equal values still join across integer widths and formats; money always ``0``;
* bool carries false; dates and times the PostgreSQL epoch (2000-01-01, midnight, zero
  interval); inet/cidr ``0.0.0.0`` / ``0.0.0.0/32`` - under ``hash`` too (these values
  are not join keys, and a derived date or address would pass for a real one); uuid the
  nil UUID, or with ``hash`` a version-8 UUID from the keyed hash of the canonical form;
* "char" (the one-byte internal type) carries ``*`` (a fixed value's first character if
  that is one printable ASCII byte; with ``hash`` one hex digit of the keyed hash);
* everything else (arrays, records, ranges, geometric types, extension types such as
  citext or hstore whose OIDs differ per database) cannot be written type-correctly here:
  the value becomes NULL and the mask says ``exact=False`` so the caller may refuse the
  statement instead (``on_unmaskable = "deny"``). That holds in text format too: without
  the type's input syntax we cannot know a masked text would parse.

The ``null`` style is NULL for every type, exactly. Text formats follow PostgreSQL's
default output settings (DateStyle ISO, IntervalStyle postgres, bytea_output hex). Binary
layouts follow the types' send/recv functions (big-endian).

Values are decoded with ``errors="surrogateescape"``: a byte the client encoding does not
define survives a kept character unchanged, and nothing here raises on odd input.
"""

from __future__ import annotations

import codecs
import json
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

from protocols.postgres.rows import ConstantValue

from .styles import (
    MASK_CHAR,
    REDACTED,
    Style,
    canonical_number,
    decode_text,
    encode_document,
    encode_text,
    hash_digest,
    hash_int,
    json_string_content,
    text_masker,
    utf8,
)

ColumnMasker = Callable[[bytes], bytes | None]

TEXT_FORMAT = 0
BINARY_FORMAT = 1


class Oid(IntEnum):
    """Built-in type OIDs (src/include/catalog/pg_type.dat; stable across versions).

    protocols.postgres.constants has no type OIDs, so the ones masking needs live here.
    """

    BOOL = 16
    BYTEA = 17
    CHAR = 18  # "char": one byte, the internal single-character type
    NAME = 19
    INT8 = 20
    INT2 = 21
    INT4 = 23
    TEXT = 25
    OID = 26
    JSON = 114
    XML = 142
    CIDR = 650
    FLOAT4 = 700
    FLOAT8 = 701
    UNKNOWN = 705
    MONEY = 790
    INET = 869
    BPCHAR = 1042
    VARCHAR = 1043
    DATE = 1082
    TIME = 1083
    TIMESTAMP = 1114
    TIMESTAMPTZ = 1184
    INTERVAL = 1186
    TIMETZ = 1266
    NUMERIC = 1700
    UUID = 2950
    JSONB = 3802


@dataclass(frozen=True, slots=True)
class PgColumnMask:
    apply: ColumnMasker
    # False when the type could not be masked type-correctly and the masker yields NULL
    # (the caller may deny the statement instead).
    exact: bool


TEXT_OIDS: frozenset[int] = frozenset({Oid.TEXT, Oid.VARCHAR, Oid.BPCHAR, Oid.NAME, Oid.UNKNOWN})

# Sentinels: (text format, binary format).
_ZERO_INT: dict[int, tuple[bytes, bytes]] = {
    Oid.INT2: (b"0", bytes(2)),
    Oid.INT4: (b"0", bytes(4)),
    Oid.INT8: (b"0", bytes(8)),
    Oid.OID: (b"0", bytes(4)),
}
_INT_WIDTH: dict[int, int] = {Oid.INT2: 2, Oid.INT4: 4, Oid.INT8: 8, Oid.OID: 4}
_INT_BITS: dict[int, int] = {Oid.INT2: 15, Oid.INT4: 31, Oid.INT8: 31, Oid.OID: 31}
_NUMBER_BITS = 31
_FLOAT4_BITS = 24  # float4 has a 24-bit significand: the derived integer stays exact
# numeric_send: ndigits, weight, sign, dscale (int16 each), then base-10000 digits.
_NUMERIC_HEAD = struct.Struct(">hhHh")
_NUMERIC_NAN = 0xC000
_NUMERIC_PINF = 0xD000
_NUMERIC_NINF = 0xF000
_NUMERIC_NEG = 0x4000
_FLOAT4 = struct.Struct(">f")
_FLOAT8 = struct.Struct(">d")

_SENTINELS: dict[int, tuple[bytes, bytes]] = {
    Oid.BOOL: (b"f", b"\x00"),
    Oid.FLOAT4: (b"0", bytes(4)),
    Oid.FLOAT8: (b"0", bytes(8)),
    Oid.NUMERIC: (b"0", _NUMERIC_HEAD.pack(0, 0, 0, 0)),
    # cash_out falls back to "$" when the locale has no currency symbol: "$0.00" is what
    # both lc_monetary=C and en_US print, and cash_in reads it back. Binary: int64 cents.
    Oid.MONEY: (b"$0.00", bytes(8)),
    # Day 0, microsecond 0 of the PostgreSQL epoch 2000-01-01 (date2j(2000, 1, 1)).
    Oid.DATE: (b"2000-01-01", bytes(4)),
    Oid.TIMESTAMP: (b"2000-01-01 00:00:00", bytes(8)),
    Oid.TIMESTAMPTZ: (b"2000-01-01 00:00:00+00", bytes(8)),
    Oid.TIME: (b"00:00:00", bytes(8)),
    Oid.TIMETZ: (b"00:00:00+00", bytes(12)),  # int64 time, int32 zone (seconds west)
    Oid.INTERVAL: (b"00:00:00", bytes(16)),  # int64 microseconds, int32 days, int32 months
    Oid.UUID: (b"00000000-0000-0000-0000-000000000000", bytes(16)),
    # inet_send: family (PGSQL_AF_INET = AF_INET = 2), bits, is_cidr, address length, address.
    Oid.INET: (b"0.0.0.0", bytes((2, 32, 0, 4, 0, 0, 0, 0))),
    Oid.CIDR: (b"0.0.0.0/32", bytes((2, 32, 1, 4, 0, 0, 0, 0))),
}

# Characters XML 1.0 forbids (a "fixed" value could hold one).
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_BYTEA_ESCAPE = re.compile(rb"\\(\\|[0-3][0-7][0-7])")

# PostgreSQL client_encoding names Python does not know under the same name.
_PG_CODECS = {
    "SQL_ASCII": "utf-8",  # bytes as stored; most such databases hold UTF-8
    "KOI8R": "koi8_r",
    "KOI8U": "koi8_u",
    "EUC_TW": "utf-8",
    "MULE_INTERNAL": "utf-8",
}


@lru_cache(maxsize=64)
def python_codec(encoding: str) -> str:
    """The Python codec for a client encoding given by its PostgreSQL or Python name;
    UTF-8 for one Python lacks (values are decoded with surrogateescape, so the bytes of a
    kept character survive either way)."""
    name = encoding.strip()
    upper = name.upper()
    if upper in _PG_CODECS:
        return _PG_CODECS[upper]
    if upper.startswith("WIN") and upper[3:].isdigit():
        name = "cp" + upper[3:]
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


# Constant masks are marked (ConstantValue) so the compiled DataRow rewriter writes the
# value without calling back into Python for every row.
_null: ColumnMasker = ConstantValue(None)


def _constant(data: bytes) -> ColumnMasker:
    return ConstantValue(data)


def pg_column_mask(
    type_oid: int, format_code: int, style: Style, encoding: str = "utf-8"
) -> PgColumnMask:
    """The mask for one result column of type ``type_oid`` sent in ``format_code``
    (0 text, 1 binary) with ``client_encoding`` ``encoding``.

    Raises StyleError for a style that cannot be applied.
    """
    masker = text_masker(style)  # validates the style once per column
    if style.name == "null":
        return PgColumnMask(_null, True)
    if format_code not in (TEXT_FORMAT, BINARY_FORMAT):
        return PgColumnMask(_null, False)
    binary = format_code == BINARY_FORMAT
    codec = python_codec(encoding)
    if type_oid in TEXT_OIDS:
        return PgColumnMask(_text_apply(masker, style, codec), True)
    if type_oid == Oid.CHAR:
        if style.name == "hash":
            return PgColumnMask(_char_hash(style.hash_key), True)
        return PgColumnMask(_constant(_char_value(style)), True)
    if type_oid in (Oid.JSON, Oid.JSONB):
        jsonb_binary = binary and type_oid == Oid.JSONB
        return PgColumnMask(_json_apply(masker, style, codec, jsonb_binary), True)
    if type_oid == Oid.XML:
        return PgColumnMask(_xml_apply(masker, style, codec), True)
    if type_oid == Oid.BYTEA:
        return PgColumnMask(_bytea_apply(masker, style, binary), True)
    if type_oid in _ZERO_INT:
        if style.name == "hash":
            return PgColumnMask(_int_hash(type_oid, binary, style.hash_key), True)
        return PgColumnMask(_constant(_ZERO_INT[type_oid][binary]), True)
    if style.name == "hash":
        hashed = _typed_hash(type_oid, binary, style.hash_key)
        if hashed is not None:
            return PgColumnMask(hashed, True)
    sentinel = _SENTINELS.get(type_oid)
    if sentinel is not None:
        return PgColumnMask(_constant(sentinel[binary]), True)
    # Arrays, records, ranges, geometric and extension types: NULL, flagged inexact.
    return PgColumnMask(_null, False)


# -- text-like ---------------------------------------------------------------------------------


def _text_apply(masker: Callable[[str], str | None], style: Style, codec: str) -> ColumnMasker:
    # text, varchar, bpchar, name, unknown: text and binary format are both the characters
    # in the client encoding (textsend/varcharsend/bpcharsend/namesend, pq_sendtext).
    if style.name == "redact":
        return _constant(encode_text(REDACTED, codec))
    if style.name == "fixed":
        return _constant(encode_text(style.value, codec))

    def apply(value: bytes) -> bytes | None:
        out = masker(decode_text(value, codec))
        return None if out is None else encode_text(out, codec)

    return apply


def _char_value(style: Style) -> bytes:
    # "char" holds one byte (charout/charsend). A fixed value keeps its first character when
    # that is one ASCII byte; every other style writes the mask character.
    if style.name == "fixed" and style.value[:1].isascii() and style.value[:1].isprintable():
        return style.value[:1].encode("ascii") or MASK_CHAR.encode()
    return MASK_CHAR.encode()


def _char_hash(key: bytes) -> ColumnMasker:
    # One hex digit of the keyed hash: deterministic, but only 16 buckets.
    def apply(value: bytes) -> bytes:
        return b"%x" % hash_int(key, str(value, "latin-1"), 4)

    return apply


def _json_apply(
    masker: Callable[[str], str | None], style: Style, codec: str, jsonb_binary: bool
) -> ColumnMasker:
    # The masked text is written as a JSON string literal, a valid json/jsonb document.
    # jsonb_send prefixes the text with the format version byte 1 (jsonb_recv checks it).
    prefix = b"\x01" if jsonb_binary else b""
    if style.name in ("redact", "fixed"):
        literal = json.dumps(REDACTED if style.name == "redact" else style.value)
        return _constant(prefix + encode_document(literal, codec))

    def apply(value: bytes) -> bytes | None:
        data = value[1:] if jsonb_binary else value
        out = masker(json_string_content(decode_text(data, codec)))
        if out is None:
            return None
        return prefix + encode_document(json.dumps(out, ensure_ascii=False), codec)

    return apply


def _xml_text(text: str) -> str:
    # Bare character data is a valid XML value under the default XMLOPTION CONTENT.
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _XML_FORBIDDEN.sub("?", escaped)


def _xml_apply(masker: Callable[[str], str | None], style: Style, codec: str) -> ColumnMasker:
    # xml_out and xml_send both give the document's text in the client encoding; the whole
    # text (markup included) is masked and the result written as character data.
    if style.name in ("redact", "fixed"):
        text = REDACTED if style.name == "redact" else style.value
        return _constant(encode_document(_xml_text(text), codec))

    def apply(value: bytes) -> bytes | None:
        out = masker(decode_text(value, codec))
        return None if out is None else encode_document(_xml_text(out), codec)

    return apply


def _unescape_bytea(text: bytes) -> bytes:
    """The bytes of a bytea text value: hex (``\\x...``, the default) or escape format."""
    if text[:2] == b"\\x":
        try:
            return bytes.fromhex(str(text[2:], "latin-1"))
        except ValueError:
            return bytes(text)
    return _BYTEA_ESCAPE.sub(
        lambda m: b"\\" if m.group(1) == b"\\" else bytes((int(m.group(1), 8),)), bytes(text)
    )


def _bytea_apply(masker: Callable[[str], str | None], style: Style, binary: bool) -> ColumnMasker:
    # bytea carries the UTF-8 bytes of the masked text (the value read as UTF-8 with
    # surrogateescape, so "hash" hashes exactly the stored bytes). Text format is written
    # as hex output, which every bytea_output setting's clients read.
    def wire(masked: str) -> bytes:
        data = encode_text(masked, "utf-8")
        return data if binary else b"\\x" + data.hex().encode("ascii")

    if style.name in ("redact", "fixed"):
        return _constant(wire(REDACTED if style.name == "redact" else style.value))

    def apply(value: bytes) -> bytes | None:
        data = value if binary else _unescape_bytea(value)
        out = masker(decode_text(data, "utf-8"))
        return None if out is None else wire(out)

    return apply


# -- numbers and uuid under "hash" ---------------------------------------------------------


def _int_hash(oid: int, binary: bool, key: bytes) -> ColumnMasker:
    width = _INT_WIDTH[oid]
    bits = _INT_BITS[oid]
    signed = oid != Oid.OID

    def apply(value: bytes) -> bytes:
        if binary:
            number = str(int.from_bytes(value, "big", signed=signed))
        else:
            number = canonical_number(str(value, "latin-1"))
        masked = hash_int(key, number, bits)
        return masked.to_bytes(width, "big") if binary else str(masked).encode("ascii")

    return apply


def _typed_hash(oid: int, binary: bool, key: bytes) -> ColumnMasker | None:
    """Hash maskers for float4/8, numeric and uuid; None where ``hash`` means the sentinel."""
    if oid in (Oid.FLOAT4, Oid.FLOAT8):
        double = oid == Oid.FLOAT8
        bits = _NUMBER_BITS if double else _FLOAT4_BITS
        packer = _FLOAT8 if double else _FLOAT4

        def apply_float(value: bytes) -> bytes:
            number = _float_text(value, double) if binary else str(value, "latin-1")
            masked = hash_int(key, canonical_number(number), bits)
            return packer.pack(masked) if binary else str(masked).encode("ascii")

        return apply_float
    if oid == Oid.NUMERIC:

        def apply_numeric(value: bytes) -> bytes:
            number = _numeric_text(value) if binary else str(value, "latin-1")
            masked = hash_int(key, canonical_number(number), _NUMBER_BITS)
            return build_numeric_integer(masked) if binary else str(masked).encode("ascii")

        return apply_numeric
    if oid == Oid.UUID:

        def apply_uuid(value: bytes) -> bytes:
            masked = hashed_uuid(key, _uuid_text(value, binary))
            return masked.bytes if binary else str(masked).encode("ascii")

        return apply_uuid
    return None


def _float_text(value: bytes, double: bool) -> str:
    if len(value) != (8 if double else 4):
        return str(value, "latin-1")
    if double:
        return repr(_FLOAT8.unpack(value)[0])
    # The shortest text that reads back as the same float4, as float4out prints it, so a
    # float4 hashes alike in text and binary format.
    number: float = _FLOAT4.unpack(value)[0]
    for digits in range(6, 10):
        text = f"{number:.{digits}g}"
        if _FLOAT4.pack(float(text)) == value:
            return text
    return repr(number)


def _numeric_text(value: bytes) -> str:
    """numeric_send's layout back to decimal text (the input of canonical_number)."""
    if len(value) < _NUMERIC_HEAD.size:
        return str(value, "latin-1")
    ndigits, weight, sign, _dscale = _NUMERIC_HEAD.unpack_from(value)
    if sign == _NUMERIC_NAN:
        return "NaN"
    if sign in (_NUMERIC_PINF, _NUMERIC_NINF):
        return "Infinity" if sign == _NUMERIC_PINF else "-Infinity"
    if ndigits < 0 or len(value) != _NUMERIC_HEAD.size + 2 * ndigits:
        return str(value, "latin-1")
    digits = struct.unpack_from(f">{ndigits}H", value, _NUMERIC_HEAD.size)
    text = "".join(f"{d:04d}" for d in digits) or "0"
    # The first base-10000 digit is worth 10000**weight.
    exponent = 4 * (weight - ndigits + 1)
    return f"{'-' if sign == _NUMERIC_NEG else ''}{text}E{exponent}"


def build_numeric_integer(number: int) -> bytes:
    """numeric_send's layout of a non-negative integer (dscale 0)."""
    digits: list[int] = []
    while number:
        number, digit = divmod(number, 10000)
        digits.append(digit)
    digits.reverse()
    # Trailing zero base-10000 digits are dropped, as PostgreSQL strips them.
    weight = len(digits) - 1 if digits else 0
    while digits and digits[-1] == 0:
        digits.pop()
    head = _NUMERIC_HEAD.pack(len(digits), weight, 0, 0)
    return head + struct.pack(f">{len(digits)}H", *digits)


def _uuid_text(value: bytes, binary: bool) -> str:
    try:
        if binary:
            return str(uuid.UUID(bytes=bytes(value)))
        return str(uuid.UUID(str(value, "latin-1")))
    except ValueError:
        return str(value, "latin-1")


def hashed_uuid(key: bytes, canonical: str) -> uuid.UUID:
    """A version-8 (RFC 9562 "custom") UUID from the keyed hash of ``canonical`` (the
    hyphenated lowercase form): 122 hash bits, valid for every UUID parser."""
    raw = bytearray(hash_digest(key, utf8(canonical))[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant 10 (RFC 4122 / 9562)
    return uuid.UUID(bytes=bytes(raw))
