"""Type-correct masked values for MySQL / MariaDB result columns, in the text protocol
(COM_QUERY rows: every value a ``string<lenenc>``) and the binary protocol
(COM_STMT_EXECUTE rows: fixed-width numbers, length-prefixed strings and temporals).

A mask is chosen once per ColumnDefinition and applied to every non-NULL value. ``apply``
takes and returns value *content*: the text row's lenenc string without its length, or
the binary value as ``protocols.mysql.resultset.binary_row_spans`` delimits it (the fixed
bytes, or the bytes after the length prefix). The row rewriter adds the prefixes back.
``None`` means NULL (a 0xFB text value, or the NULL-bitmap bit in a binary row).

* Strings (VARCHAR, VAR_STRING, STRING, the BLOB family, ENUM, SET) carry the style's text
  in the column's character set; JSON carries it as a JSON string literal. Binary strings
  (charset 63) are read as UTF-8 with surrogateescape and written back the same way, so
  a kept byte is the original byte and ``hash`` hashes exactly the stored bytes. A
  character set Python has no codec for is treated as UTF-8.
* ``max_length`` is the ``column_length`` the ColumnDefinition needs so the masked value
  fits (C clients size fetch buffers from it and report MYSQL_DATA_TRUNCATED otherwise,
  PROTOCOLS.md "Masking binary rows"), or None when the original length is enough.
* Numbers carry 0, keeping the binary width; with ``hash`` a non-negative integer derived
  from the keyed hash of the value's canonical decimal text (``styles.hash_int``), so it
  agrees with the PostgreSQL side and across integer widths: 7 bits for TINY, 15 SHORT,
  23 INT24, 31 LONG/LONGLONG/DOUBLE, 24 FLOAT; DECIMAL at most column_length - 2 digits.
  YEAR carries 1970 (1901 + hash mod 255 under ``hash``): a valid YEAR, where 0 reads as
  the zero date some drivers refuse. BIT carries zero bits in its byte width, in both
  protocols (BIT is raw big-endian bytes in text rows too, not digits).
* Temporal types carry the Unix epoch, 1970-01-01 00:00:00 (time 00:00:00); binary
  contents are one of the lengths in ``resultset.TEMPORAL_LENGTHS`` (4 for dates and
  datetimes, 0 for TIME), the rewriter adds the 1-byte length.
* MariaDB reports JSON columns as LONGTEXT (format name ``json`` in the extended
  metadata, which this signature does not carry): a caller that knows pass
  MYSQL_TYPE_JSON as ``col_type`` to get a JSON literal; otherwise they are masked as text.
* GEOMETRY, VECTOR and types this module does not know become NULL with ``exact=False``
  (the caller may refuse the statement instead). The ``null`` style is NULL everywhere.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protocols.mysql.constants import ColumnFlag
from protocols.mysql.constants import ColumnType as T

from .styles import (
    REDACTED,
    Style,
    canonical_number,
    decode_text,
    encode_document,
    encode_text,
    hash_int,
    json_string_content,
    text_masker,
)

MyMasker = Callable[[bytes], bytes | None]


@dataclass(frozen=True, slots=True)
class MyColumnMask:
    apply: MyMasker
    # False when the type could not be masked type-correctly and the masker yields NULL.
    exact: bool
    # For text-ish columns: the column_length (bytes) the masked values need, or None if the
    # original is enough.
    max_length: int | None


STRING_TYPES: frozenset[int] = frozenset(
    {
        T.MYSQL_TYPE_VARCHAR,
        T.MYSQL_TYPE_VAR_STRING,
        T.MYSQL_TYPE_STRING,
        T.MYSQL_TYPE_TINY_BLOB,
        T.MYSQL_TYPE_MEDIUM_BLOB,
        T.MYSQL_TYPE_LONG_BLOB,
        T.MYSQL_TYPE_BLOB,
        T.MYSQL_TYPE_ENUM,
        T.MYSQL_TYPE_SET,
    }
)
# Binary-protocol widths (page_protocol_binary_resultset) and hash bits (the non-negative
# range of the signed type, at most 31 bits, so both signednesses hold the value).
_INT_TYPES: dict[int, tuple[int, int]] = {
    T.MYSQL_TYPE_TINY: (1, 7),
    T.MYSQL_TYPE_SHORT: (2, 15),
    T.MYSQL_TYPE_INT24: (4, 23),
    T.MYSQL_TYPE_LONG: (4, 31),
    T.MYSQL_TYPE_LONGLONG: (8, 31),
}
_FLOAT_TYPES: dict[int, tuple[struct.Struct, int]] = {
    T.MYSQL_TYPE_FLOAT: (struct.Struct("<f"), 24),  # exact in float's 24-bit significand
    T.MYSQL_TYPE_DOUBLE: (struct.Struct("<d"), 31),
}
_DECIMAL_TYPES = frozenset({T.MYSQL_TYPE_DECIMAL, T.MYSQL_TYPE_NEWDECIMAL})
_YEAR = 1970
_UNSIGNED = int(ColumnFlag.UNSIGNED)  # a plain int: `int & IntFlag` runs enum code
_YEAR_MIN, _YEAR_SPAN = 1901, 255  # YEAR holds 1901..2155 (and 0)
_U16 = struct.Struct("<H")
# Text sentinels and binary contents (year 1970 month 1 day 1, length 4; TIME length 0).
_EPOCH_DATE = struct.pack("<HBB", 1970, 1, 1)
_TEMPORAL: dict[int, tuple[bytes, bytes]] = {
    T.MYSQL_TYPE_DATE: (b"1970-01-01", _EPOCH_DATE),
    T.MYSQL_TYPE_NEWDATE: (b"1970-01-01", _EPOCH_DATE),
    T.MYSQL_TYPE_DATETIME: (b"1970-01-01 00:00:00", _EPOCH_DATE),
    T.MYSQL_TYPE_TIMESTAMP: (b"1970-01-01 00:00:00", _EPOCH_DATE),
    T.MYSQL_TYPE_TIME: (b"00:00:00", b""),
}
BINARY_CHARSET = 63
_U32_MAX = 0xFFFFFFFF  # column_length is a 4-byte field


def _ids(*parts: int | range) -> Iterable[int]:
    for part in parts:
        yield from ([part] if isinstance(part, int) else part)


def _charset_table() -> dict[int, tuple[str, int]]:
    """Collation id -> (Python codec, max bytes per character), from
    information_schema.COLLATIONS of MySQL 8 and MariaDB 10/11."""
    groups: list[tuple[str, int, Iterable[int]]] = [
        ("utf-8", 4, _ids(45, 46, range(224, 248), range(255, 324), range(608, 640))),
        ("utf-8", 3, _ids(33, 76, 83, range(192, 216), 223, range(576, 608))),
        ("cp1252", 1, _ids(5, 8, 15, 31, 47, 48, 49, 94)),  # MySQL "latin1" is cp1252
        ("ascii", 1, _ids(11, 65)),
        ("iso8859-2", 1, _ids(2, 9, 21, 27, 77)),
        ("cp1250", 1, _ids(26, 34, 44, 66, 99)),
        ("cp1251", 1, _ids(14, 23, 50, 51, 52)),
        ("cp1256", 1, _ids(57, 67)),
        ("cp1257", 1, _ids(29, 58, 59)),
        ("iso8859-7", 1, _ids(25, 70)),
        ("iso8859-8", 1, _ids(16, 71)),
        ("iso8859-9", 1, _ids(30, 78)),
        ("iso8859-13", 1, _ids(20, 41, 42, 79)),
        ("koi8_r", 1, _ids(7, 74)),
        ("koi8_u", 1, _ids(22, 75)),
        ("cp850", 1, _ids(4, 80)),
        ("cp852", 1, _ids(40, 81)),
        ("cp866", 1, _ids(36, 68)),
        ("mac_roman", 1, _ids(39, 53)),
        ("tis_620", 1, _ids(18, 89)),
        ("big5", 2, _ids(1, 84)),
        ("gb2312", 2, _ids(24, 86)),
        ("gbk", 2, _ids(28, 87)),
        ("gb18030", 4, _ids(248, 249, 250)),
        ("shift_jis", 2, _ids(13, 88)),
        ("cp932", 2, _ids(95, 96)),
        ("euc_jp", 3, _ids(12, 91, 97, 98)),
        ("euc_kr", 2, _ids(19, 85)),
        # ucs2/utf16/utf32 are big-endian in MySQL; ASCII-incompatible, so '*' is 2-4 bytes.
        ("utf-16-be", 2, _ids(35, 90, range(128, 152), 159, range(640, 672))),
        ("utf-16-be", 4, _ids(54, 55, range(101, 125), range(672, 736))),
        ("utf-16-le", 4, _ids(56, 62)),
        ("utf-32-be", 4, _ids(60, 61, range(160, 184), range(736, 768))),
        ("utf-8", 1, _ids(BINARY_CHARSET)),  # bytes: UTF-8 with surrogateescape, see above
    ]
    return {cid: (codec, width) for codec, width, ids in groups for cid in ids}


_CHARSETS = _charset_table()
# MariaDB's NO PAD collations are the PAD SPACE id + 1024; unknown ids (MariaDB's UCA-14
# collations, ids above 2047, are mostly utf8mb4) are treated as UTF-8, 4 bytes a character.
_NOPAD_OFFSET = 1024
_UNKNOWN_CHARSET = ("utf-8", 4)


def charset_codec(charset: int) -> tuple[str, int]:
    """(Python codec, max bytes per character) of a MySQL collation id."""
    found = _CHARSETS.get(charset)
    if found is None and charset >= _NOPAD_OFFSET:
        found = _CHARSETS.get(charset - _NOPAD_OFFSET)
    return found or _UNKNOWN_CHARSET


def _null(_value: bytes) -> None:
    return None


def _constant(data: bytes) -> MyMasker:
    return lambda _value: data


def my_text_mask(
    col_type: int, flags: int, charset: int, column_length: int, style: Style
) -> MyColumnMask:
    """The mask for a column of a text-protocol result (every value a string)."""
    return _column_mask(col_type, flags, charset, column_length, style, binary=False)


def my_binary_mask(
    col_type: int, flags: int, charset: int, column_length: int, style: Style
) -> MyColumnMask:
    """The mask for a column of a binary-protocol result (COM_STMT_EXECUTE rows)."""
    return _column_mask(col_type, flags, charset, column_length, style, binary=True)


def _column_mask(
    col_type: int, flags: int, charset: int, column_length: int, style: Style, *, binary: bool
) -> MyColumnMask:
    masker = text_masker(style)  # validates the style once per column
    if style.name == "null" or col_type == T.MYSQL_TYPE_NULL:
        # A NULL-typed column has only NULL values; apply is never called for them.
        return MyColumnMask(_null, True, None)
    if col_type in STRING_TYPES or col_type == T.MYSQL_TYPE_JSON:
        return _string_mask(col_type, charset, column_length, style, masker)
    hashing = style.name == "hash"
    key = style.hash_key
    unsigned = bool(flags & _UNSIGNED)
    if col_type in _INT_TYPES:
        width, bits = _INT_TYPES[col_type]
        if not hashing:
            return MyColumnMask(_constant(bytes(width) if binary else b"0"), True, None)
        return MyColumnMask(_int_hash(key, width, bits, unsigned, binary), True, None)
    if col_type == T.MYSQL_TYPE_YEAR:
        sentinel = _U16.pack(_YEAR) if binary else b"%d" % _YEAR
        if not hashing:
            return MyColumnMask(_constant(sentinel), True, None)
        return MyColumnMask(_year_hash(key, binary), True, None)
    if col_type in _FLOAT_TYPES:
        packer, bits = _FLOAT_TYPES[col_type]
        if not hashing:
            return MyColumnMask(_constant(bytes(packer.size) if binary else b"0"), True, None)
        return MyColumnMask(_float_hash(key, packer, bits, binary), True, None)
    if col_type in _DECIMAL_TYPES:
        # Text rows and binary rows both carry DECIMAL as decimal text.
        if not hashing:
            return MyColumnMask(_constant(b"0"), True, None)
        return MyColumnMask(_decimal_hash(key, column_length), True, None)
    if col_type == T.MYSQL_TYPE_BIT:
        return MyColumnMask(_bit_mask(key if hashing else None, column_length), True, None)
    temporal = _TEMPORAL.get(col_type)
    if temporal is not None:
        return MyColumnMask(_constant(temporal[binary]), True, None)
    # GEOMETRY, VECTOR and anything unknown: cannot be written type-correctly.
    return MyColumnMask(_null, False, None)


# -- strings -----------------------------------------------------------------------------------


def _string_mask(
    col_type: int,
    charset: int,
    column_length: int,
    style: Style,
    masker: Callable[[str], str | None],
) -> MyColumnMask:
    is_json = col_type == T.MYSQL_TYPE_JSON
    # JSON text is UTF-8 whatever charset the server reports for it (63 in MySQL 5.7).
    codec = "utf-8" if is_json else charset_codec(charset)[0]
    needed = _needed_bytes(style, column_length, codec)
    if is_json:
        # json.dumps writes at most 6 characters per character (\u00XX) plus two quotes.
        needed = 6 * needed + 2 * len(encode_text('"', codec))
    needed = min(needed, _U32_MAX)
    max_length = needed if needed > column_length else None

    def wire(masked: str) -> bytes:
        if is_json:
            return encode_document(json.dumps(masked, ensure_ascii=False), codec)
        return encode_text(masked, codec)

    if style.name in ("redact", "fixed"):
        return MyColumnMask(
            _constant(wire(REDACTED if style.name == "redact" else style.value)), True, max_length
        )

    def apply(value: bytes) -> bytes | None:
        text = decode_text(value, codec)
        if is_json:
            text = json_string_content(text)
        out = masker(text)
        return None if out is None else wire(out)

    return MyColumnMask(apply, True, max_length)


def _needed_bytes(style: Style, column_length: int, codec: str) -> int:
    """Upper bound, in bytes of ``codec``, of a masked value of a column whose values are
    at most ``column_length`` bytes."""
    name = style.name
    if name == "redact":
        return len(encode_text(REDACTED, codec))
    if name == "fixed":
        return len(encode_text(style.value, codec))
    if name == "hash":
        return len(encode_text("0" * 32, codec))
    if name == "email":
        # "****" replaces everything before the last "@"; the "@domain" bytes are kept.
        return column_length + len(encode_text(REDACTED, codec))
    # keep_last: a kept character keeps its bytes, a masked one becomes '*', which is the
    # shortest character in every charset here (1 byte, or the code unit of utf16/32).
    return column_length


# -- numbers under "hash" ----------------------------------------------------------------------


def _int_hash(key: bytes, width: int, bits: int, unsigned: bool, binary: bool) -> MyMasker:
    def apply(value: bytes) -> bytes:
        if binary:
            number = str(int.from_bytes(value, "little", signed=not unsigned))
        else:
            number = canonical_number(str(value, "latin-1"))
        masked = hash_int(key, number, bits)
        return masked.to_bytes(width, "little") if binary else b"%d" % masked

    return apply


def _year_hash(key: bytes, binary: bool) -> MyMasker:
    def apply(value: bytes) -> bytes:
        number = str(_U16.unpack(value)[0]) if binary and len(value) == 2 else str(value, "latin-1")
        masked = _YEAR_MIN + hash_int(key, canonical_number(number), 31) % _YEAR_SPAN
        return _U16.pack(masked) if binary else b"%d" % masked

    return apply


def _float_hash(key: bytes, packer: struct.Struct, bits: int, binary: bool) -> MyMasker:
    def apply(value: bytes) -> bytes:
        if binary and len(value) == packer.size:
            number = _shortest_float(packer, value)
        else:
            number = str(value, "latin-1")
        masked = hash_int(key, canonical_number(number), bits)
        return packer.pack(masked) if binary else b"%d" % masked

    return apply


def _shortest_float(packer: struct.Struct, value: bytes) -> str:
    # The shortest text reading back as the same float/double, as the server prints it in
    # text rows, so a value hashes alike in both protocols.
    number: float = packer.unpack(value)[0]
    if packer.size == 8:
        return repr(number)
    for digits in range(6, 10):
        text = f"{number:.{digits}g}"
        if packer.pack(float(text)) == value:
            return text
    return repr(number)


def _decimal_hash(key: bytes, column_length: int) -> MyMasker:
    # column_length of DECIMAL(M, D) is M plus sign and point: keep the derived integer
    # within M digits so it fits the client's buffer (D is not known here).
    modulus = 10 ** max(1, min(9, column_length - 2))

    def apply(value: bytes) -> bytes:
        masked = hash_int(key, canonical_number(str(value, "latin-1")), 31) % modulus
        return b"%d" % masked

    return apply


def _bit_mask(key: bytes | None, column_length: int) -> MyMasker:
    # BIT(M): (M + 7) // 8 big-endian bytes, column_length = M (1..64).
    bits = max(1, min(64, column_length))
    width = (bits + 7) // 8
    if key is None:
        return _constant(bytes(width))

    def apply(value: bytes) -> bytes:
        number = str(int.from_bytes(value, "big"))
        return hash_int(key, number, min(31, bits)).to_bytes(width, "big")

    return apply
