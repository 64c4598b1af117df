"""Result sets and the binary protocol: column definitions, text and binary rows,
COM_STMT_PREPARE_OK and COM_STMT_EXECUTE.

Spec: page_protocol_com_query_response_text_resultset (column count, ColumnDefinition41,
text rows), page_protocol_binary_resultset (binary rows, value encodings),
page_protocol_com_stmt_prepare, page_protocol_com_stmt_execute; MariaDB KB
"Result Set Packets" (extended metadata, metadata_follows).

Row values are returned as the raw wire content (``bytes``; ``None`` for NULL): for
length-prefixed values the prefix is stripped, for fixed-width types it is the
fixed bytes. ``*_spans`` functions give the byte range of each encoded value
(prefix included) for splicing in place. ``decode_binary_value`` /
``encode_binary_value`` convert between the binary wire form and Python values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from struct import Struct
from typing import NamedTuple

from ..errors import UsageError
from .constants import (
    OK_HEADER,
    PARAM_UNSIGNED_FLAG,
    Capability,
    ColumnFlag,
    ColumnType,
    Command,
    ExtendedMetadataKey,
)
from .packets import (
    Buffer,
    build_lenenc_int,
    build_lenenc_string,
    malformed,
    read_lenenc_int,
    read_lenenc_int_or_null,
    read_lenenc_string,
    read_lenenc_string_or_null,
    read_uint1,
)

_FIXED_FIELDS = Struct("<HIBHB")  # charset, column_length, type, flags, decimals
_FIXED_FIELDS_LENGTH = 0x0C  # the 5 fields + 2 filler bytes
_PREPARE_OK = Struct("<BIHHBH")
_EXECUTE_HEAD = Struct("<BIBI")
_U16 = Struct("<H")
_UNSIGNED = int(ColumnFlag.UNSIGNED)  # a plain int: `int & IntFlag` runs enum code
_U32 = Struct("<I")
_EXTENDED_METADATA = int(Capability.MARIADB_CLIENT_EXTENDED_METADATA)
_CACHE_METADATA = int(Capability.MARIADB_CLIENT_CACHE_METADATA)

T = ColumnType

# Binary protocol value widths (page_protocol_binary_resultset, "Binary Protocol Value").
# Types absent here are string<lenenc>; DATE/DATETIME/TIMESTAMP/TIME carry a 1-byte length.
FIXED_WIDTH: dict[int, int] = {
    T.MYSQL_TYPE_TINY: 1,
    T.MYSQL_TYPE_SHORT: 2,
    T.MYSQL_TYPE_YEAR: 2,
    T.MYSQL_TYPE_LONG: 4,
    T.MYSQL_TYPE_INT24: 4,
    T.MYSQL_TYPE_FLOAT: 4,
    T.MYSQL_TYPE_LONGLONG: 8,
    T.MYSQL_TYPE_DOUBLE: 8,
    T.MYSQL_TYPE_NULL: 0,
}
TEMPORAL_LENGTHS: dict[int, frozenset[int]] = {
    T.MYSQL_TYPE_DATE: frozenset((0, 4, 7, 11)),
    T.MYSQL_TYPE_DATETIME: frozenset((0, 4, 7, 11)),
    T.MYSQL_TYPE_TIMESTAMP: frozenset((0, 4, 7, 11)),
    T.MYSQL_TYPE_TIME: frozenset((0, 8, 12)),
}


# -- column count and definitions --------------------------------------------------------------


def parse_column_count(payload: Buffer, capabilities: int = 0) -> tuple[int, bool]:
    """Column count packet -> (count, metadata_follows).

    With MARIADB_CLIENT_CACHE_METADATA a ``metadata_follows`` byte follows; 0 means
    the column definitions are omitted (the client reuses cached ones).
    """
    count, pos = read_lenenc_int(payload, 0)
    if count == 0:
        raise malformed("column count 0")
    follows = True
    if capabilities & _CACHE_METADATA:
        flag, pos = read_uint1(payload, pos)
        follows = flag != 0
    if pos != len(payload):
        raise malformed("trailing bytes after column count")
    return count, follows


def build_column_count(
    count: int, capabilities: int = 0, *, metadata_follows: bool = True
) -> bytes:
    out = build_lenenc_int(count)
    if capabilities & _CACHE_METADATA:
        out += b"\x01" if metadata_follows else b"\x00"
    return out


class ColumnDefinition41(NamedTuple):
    """Protocol::ColumnDefinition41. A NamedTuple: result plans and recorded column lists
    are cached by tuples of these, hashed on every result (a frozen dataclass's generated
    ``__hash__`` runs Python code per column; a NamedTuple's is the C tuple hash)."""

    schema: bytes
    table: bytes
    org_table: bytes
    name: bytes
    org_name: bytes
    charset: int
    column_length: int
    type: int
    flags: int = 0
    decimals: int = 0
    catalog: bytes = b"def"
    # MariaDB MARIADB_CLIENT_EXTENDED_METADATA: (key, value) pairs, key 0 type name, 1 format
    extended_metadata: tuple[tuple[int, bytes], ...] = ()

    @property
    def unsigned(self) -> bool:
        return bool(self.flags & _UNSIGNED)

    @property
    def extended_type_name(self) -> bytes | None:
        """MariaDB's extended type name (``json``, ``uuid``, ``inet6``, ``point`` ...)."""
        return self._extended(ExtendedMetadataKey.TYPE_NAME)

    @property
    def extended_format_name(self) -> bytes | None:
        """MariaDB's extended format name (``json`` for JSON columns, which are LONGTEXT)."""
        return self._extended(ExtendedMetadataKey.FORMAT_NAME)

    def _extended(self, wanted: int) -> bytes | None:
        for key, value in self.extended_metadata:
            if key == wanted:
                return value
        return None


def parse_column_definition41(payload: Buffer, capabilities: int = 0) -> ColumnDefinition41:
    """ColumnDefinition41 (COM_FIELD_LIST's trailing default values are ignored)."""
    catalog, pos = read_lenenc_string(payload, 0)
    schema, pos = read_lenenc_string(payload, pos)
    table, pos = read_lenenc_string(payload, pos)
    org_table, pos = read_lenenc_string(payload, pos)
    name, pos = read_lenenc_string(payload, pos)
    org_name, pos = read_lenenc_string(payload, pos)
    extended: tuple[tuple[int, bytes], ...] = ()
    if capabilities & _EXTENDED_METADATA:
        block, pos = read_lenenc_string(payload, pos)
        entries: list[tuple[int, bytes]] = []
        p = 0
        while p < len(block):
            key, p = read_uint1(block, p)
            value, p = read_lenenc_string(block, p)
            entries.append((key, value))
        extended = tuple(entries)
    fixed_len, pos = read_lenenc_int(payload, pos)
    if fixed_len < 10 or pos + fixed_len > len(payload):
        raise malformed(f"column definition fixed-length fields of {fixed_len} bytes")
    charset, column_length, col_type, flags, decimals = _FIXED_FIELDS.unpack_from(payload, pos)
    return ColumnDefinition41(
        schema,
        table,
        org_table,
        name,
        org_name,
        charset,
        column_length,
        col_type,
        flags,
        decimals,
        catalog,
        extended,
    )


def build_column_definition41(col: ColumnDefinition41, capabilities: int = 0) -> bytes:
    parts = [
        build_lenenc_string(col.catalog),
        build_lenenc_string(col.schema),
        build_lenenc_string(col.table),
        build_lenenc_string(col.org_table),
        build_lenenc_string(col.name),
        build_lenenc_string(col.org_name),
    ]
    if capabilities & _EXTENDED_METADATA:
        block = b"".join(bytes((k,)) + build_lenenc_string(v) for k, v in col.extended_metadata)
        parts.append(build_lenenc_string(block))
    parts.append(bytes((_FIXED_FIELDS_LENGTH,)))
    parts.append(
        _FIXED_FIELDS.pack(col.charset, col.column_length, col.type, col.flags, col.decimals)
    )
    parts.append(b"\x00\x00")
    return b"".join(parts)


# -- text rows ---------------------------------------------------------------------------------


def parse_text_row(payload: Buffer, column_count: int) -> list[bytes | None]:
    """Text row: one ``string<lenenc>`` per column, 0xFB for NULL."""
    values: list[bytes | None] = []
    pos = 0
    for _ in range(column_count):
        value, pos = read_lenenc_string_or_null(payload, pos)
        values.append(value)
    if pos != len(payload):
        raise malformed("trailing bytes after text row")
    return values


def text_row_spans(
    payload: Buffer, column_count: int, upto: int | None = None
) -> list[tuple[int, int, int] | None]:
    """Per column ``(start, value_start, stop)`` or None for NULL, for the first ``upto``
    columns (all by default): ``payload[start:stop]`` is the encoded value with its
    length prefix, ``payload[value_start:stop]`` the value."""
    n = column_count if upto is None else min(upto, column_count)
    spans: list[tuple[int, int, int] | None] = []
    pos = 0
    size = len(payload)
    for _ in range(n):
        start = pos
        length, pos = read_lenenc_int_or_null(payload, pos)
        if length is None:
            spans.append(None)
            continue
        stop = pos + length
        if stop > size:
            raise malformed("text row value overruns the packet")
        spans.append((start, pos, stop))
        pos = stop
    return spans


def build_text_row(values: Sequence[Buffer | None]) -> bytes:
    return b"".join(build_lenenc_string(v) for v in values)


# -- binary rows -------------------------------------------------------------------------------


def null_bitmap_size(count: int, offset: int) -> int:
    return (count + offset + 7) // 8


def _binary_value_span(
    buf: Buffer, pos: int, col_type: int, *, param: bool = False
) -> tuple[int, int]:
    """(value_start, stop) of the binary-encoded value at ``pos``.

    ``param``: a COM_STMT_EXECUTE parameter. The server reads only the low 4 bytes of
    an 8-byte (0xFE) length there (sql_prepare.cc ``get_param_length``) and node
    mysql2 relies on it (sysown/proxysql#5188), so we do the same.
    """
    width = FIXED_WIDTH.get(col_type)
    if width is not None:
        stop = pos + width
        if stop > len(buf):
            raise malformed(f"binary value of type {col_type} overruns the packet")
        return pos, stop
    allowed = TEMPORAL_LENGTHS.get(col_type)
    if allowed is not None:
        length, start = read_uint1(buf, pos)
        if length not in allowed:
            raise malformed(f"invalid length {length} for temporal type {col_type}")
    elif param and pos < len(buf) and buf[pos] == 0xFE:
        if pos + 9 > len(buf):
            raise malformed("truncated int<lenenc> (0xFE)")
        length, start = _U32.unpack_from(buf, pos + 1)[0], pos + 9
    else:
        length, start = read_lenenc_int(buf, pos)
    stop = start + length
    if stop > len(buf):
        raise malformed(f"binary value of {length} bytes overruns the packet")
    return start, stop


def binary_row_spans(
    payload: Buffer, types: Sequence[int], upto: int | None = None
) -> list[tuple[int, int, int] | None]:
    """Binary row: per column ``(start, value_start, stop)`` or None for NULL."""
    count = len(types)
    n = count if upto is None else min(upto, count)
    bitmap_end = 1 + null_bitmap_size(count, 2)
    if len(payload) < bitmap_end or payload[0] != OK_HEADER:
        raise malformed("binary row must start with 0x00 and a NULL bitmap")
    spans: list[tuple[int, int, int] | None] = []
    pos = bitmap_end
    for i in range(n):
        bit = i + 2
        if payload[1 + (bit >> 3)] & (1 << (bit & 7)):
            spans.append(None)
            continue
        start, stop = _binary_value_span(payload, pos, types[i])
        spans.append((pos, start, stop))
        pos = stop
    return spans


def parse_binary_row(payload: Buffer, types: Sequence[int]) -> list[bytes | None]:
    """Binary row: 0x00, NULL bitmap with offset 2, then the non-NULL values."""
    spans = binary_row_spans(payload, types)
    end = 1 + null_bitmap_size(len(types), 2)
    values: list[bytes | None] = []
    for span in spans:
        if span is None:
            values.append(None)
        else:
            values.append(bytes(payload[span[1] : span[2]]))
            end = span[2]
    if end != len(payload):
        raise malformed("trailing bytes after binary row")
    return values


def _encode_raw(col_type: int, raw: Buffer) -> bytes:
    width = FIXED_WIDTH.get(col_type)
    if width is not None:
        if len(raw) != width:
            raise UsageError(f"type {col_type} needs {width} bytes, got {len(raw)}")
        return bytes(raw)
    allowed = TEMPORAL_LENGTHS.get(col_type)
    if allowed is not None:
        if len(raw) not in allowed:
            raise UsageError(f"invalid length {len(raw)} for temporal type {col_type}")
        return bytes((len(raw),)) + bytes(raw)
    return build_lenenc_string(raw)


def build_null_bitmap(values: Sequence[object | None], offset: int) -> bytearray:
    bitmap = bytearray(null_bitmap_size(len(values), offset))
    for i, value in enumerate(values):
        if value is None:
            bit = i + offset
            bitmap[bit >> 3] |= 1 << (bit & 7)
    return bitmap


def build_binary_row(types: Sequence[int], values: Sequence[Buffer | None]) -> bytes:
    """Inverse of ``parse_binary_row`` (values are raw wire content)."""
    if len(types) != len(values):
        raise UsageError("types and values differ in length")
    parts = [b"\x00", bytes(build_null_bitmap(values, 2))]
    parts += [_encode_raw(t, v) for t, v in zip(types, values, strict=True) if v is not None]
    return b"".join(parts)


# -- binary values <-> Python ------------------------------------------------------------------

_INT_FORMATS: dict[int, tuple[Struct, Struct]] = {
    T.MYSQL_TYPE_TINY: (Struct("<b"), Struct("<B")),
    T.MYSQL_TYPE_SHORT: (Struct("<h"), Struct("<H")),
    T.MYSQL_TYPE_YEAR: (Struct("<h"), Struct("<H")),
    T.MYSQL_TYPE_LONG: (Struct("<i"), Struct("<I")),
    T.MYSQL_TYPE_INT24: (Struct("<i"), Struct("<I")),
    T.MYSQL_TYPE_LONGLONG: (Struct("<q"), Struct("<Q")),
}
_FLOAT = Struct("<f")
_DOUBLE = Struct("<d")
_DATE = Struct("<HBB")
_DATETIME = Struct("<HBBBBB")
_DATETIME_US = Struct("<HBBBBBI")
_TIME = Struct("<BIBBB")
_TIME_US = Struct("<BIBBBI")

BinaryValue = int | float | bytes | dt.date | dt.datetime | dt.timedelta | None


def decode_binary_value(col_type: int, raw: bytes, unsigned: bool = False) -> BinaryValue:
    """Python value of a binary-protocol value (raw content as returned by ``parse_binary_row``).

    Dates with zero parts (``0000-00-00``) cannot be Python dates and come back as
    the raw bytes.
    """
    fmts = _INT_FORMATS.get(col_type)
    if fmts is not None:
        value: int = fmts[1 if unsigned else 0].unpack(raw)[0]
        return value
    if col_type == T.MYSQL_TYPE_FLOAT:
        return float(_FLOAT.unpack(raw)[0])
    if col_type == T.MYSQL_TYPE_DOUBLE:
        return float(_DOUBLE.unpack(raw)[0])
    if col_type == T.MYSQL_TYPE_NULL:
        return None
    if col_type in (T.MYSQL_TYPE_DATE, T.MYSQL_TYPE_DATETIME, T.MYSQL_TYPE_TIMESTAMP):
        n = len(raw)
        if n == 0:
            return raw
        year, month, day = _DATE.unpack_from(raw)
        hour = minute = second = micro = 0
        if n >= 7:
            hour, minute, second = raw[4], raw[5], raw[6]
        if n == 11:
            micro = _U32.unpack_from(raw, 7)[0]
        try:
            if col_type == T.MYSQL_TYPE_DATE:
                return dt.date(year, month, day)
            return dt.datetime(year, month, day, hour, minute, second, micro)
        except ValueError:
            return raw
    if col_type == T.MYSQL_TYPE_TIME:
        if not raw:
            return dt.timedelta(0)
        neg, days, hour, minute, second = _TIME.unpack_from(raw)
        micro = _U32.unpack_from(raw, 8)[0] if len(raw) == 12 else 0
        delta = dt.timedelta(
            days=days, hours=hour, minutes=minute, seconds=second, microseconds=micro
        )
        return -delta if neg else delta
    return raw


def encode_binary_value(col_type: int, value: BinaryValue, unsigned: bool = False) -> bytes:
    """Raw binary-protocol content of ``value`` (the inverse of ``decode_binary_value``),
    using the shortest valid length for temporal types."""
    if value is None:
        raise UsageError("NULL is encoded in the NULL bitmap, not as a value")
    fmts = _INT_FORMATS.get(col_type)
    if fmts is not None:
        if not isinstance(value, int):
            raise UsageError(f"type {col_type} needs an int")
        return fmts[1 if unsigned else 0].pack(value)
    if col_type in (T.MYSQL_TYPE_FLOAT, T.MYSQL_TYPE_DOUBLE):
        if not isinstance(value, int | float):
            raise UsageError(f"type {col_type} needs a float")
        return (_FLOAT if col_type == T.MYSQL_TYPE_FLOAT else _DOUBLE).pack(value)
    if isinstance(value, bytes):
        return value
    if isinstance(value, dt.datetime):
        if value.microsecond:
            return _DATETIME_US.pack(
                value.year,
                value.month,
                value.day,
                value.hour,
                value.minute,
                value.second,
                value.microsecond,
            )
        if value.hour or value.minute or value.second:
            return _DATETIME.pack(
                value.year, value.month, value.day, value.hour, value.minute, value.second
            )
        return _DATE.pack(value.year, value.month, value.day)
    if isinstance(value, dt.date):
        return _DATE.pack(value.year, value.month, value.day)
    if isinstance(value, dt.timedelta):
        neg = value < dt.timedelta(0)
        mag = -value if neg else value
        if not mag:
            return b""
        seconds = mag.seconds
        hour, rem = divmod(seconds, 3600)
        minute, second = divmod(rem, 60)
        if mag.microseconds:
            return _TIME_US.pack(neg, mag.days, hour, minute, second, mag.microseconds)
        return _TIME.pack(neg, mag.days, hour, minute, second)
    raise UsageError(f"cannot encode {type(value).__name__} as type {col_type}")


# -- COM_STMT_PREPARE_OK -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StmtPrepareOk:
    statement_id: int
    num_columns: int
    num_params: int
    warnings: int = 0


def parse_stmt_prepare_ok(payload: Buffer) -> StmtPrepareOk:
    """0x00, statement_id(4), num_columns(2), num_params(2), reserved(1), warnings(2)."""
    if len(payload) < 12 or payload[0] != OK_HEADER:
        raise malformed("COM_STMT_PREPARE_OK too short")
    _, stmt_id, cols, params, _, warnings = _PREPARE_OK.unpack_from(payload, 0)
    return StmtPrepareOk(stmt_id, cols, params, warnings)


def build_stmt_prepare_ok(ok: StmtPrepareOk) -> bytes:
    return _PREPARE_OK.pack(
        OK_HEADER, ok.statement_id, ok.num_columns, ok.num_params, 0, ok.warnings
    )


# -- COM_STMT_EXECUTE --------------------------------------------------------------------------

_NO_LONG_DATA: frozenset[int] = frozenset()
# Parameter type blocks seen, decoded: clients send the same block with every execute of
# a statement (new-params-bound set each time), so it is decoded once (bounded memo).
_PARAM_TYPES: dict[bytes, tuple[tuple[int, bool], ...]] = {}
_PARAM_TYPES_MAX = 1024


class StmtExecute(NamedTuple):
    """A parsed COM_STMT_EXECUTE.

    ``param_types`` are the (type, unsigned) pairs in force: sent in this packet
    (``new_params_bound``) or remembered from the previous execute of the
    statement. ``values`` hold the raw binary content, ``None`` for NULL; a
    parameter whose data came through COM_STMT_SEND_LONG_DATA is listed in
    ``long_data`` and has no value in the packet (``values[i] == b""``).

    A NamedTuple, not a frozen dataclass: one is built per execution when the session
    is recorded, and a frozen dataclass's ``__init__`` costs ~1 µs more.
    """

    statement_id: int
    flags: int
    iteration_count: int
    new_params_bound: bool
    param_types: tuple[tuple[int, bool], ...]
    values: tuple[bytes | None, ...]
    long_data: frozenset[int] = _NO_LONG_DATA


def parse_stmt_execute_header(payload: Buffer) -> tuple[int, int, int]:
    """(statement_id, flags, iteration_count) of a COM_STMT_EXECUTE packet."""
    if len(payload) < 10 or payload[0] != Command.COM_STMT_EXECUTE:
        raise malformed("COM_STMT_EXECUTE too short")
    _, stmt_id, flags, iterations = _EXECUTE_HEAD.unpack_from(payload, 0)
    return stmt_id, flags, iterations


def parse_com_stmt_execute(
    payload: Buffer,
    num_params: int,
    previous_types: tuple[tuple[int, bool], ...] | None = None,
    long_data: AbstractSet[int] = _NO_LONG_DATA,
) -> StmtExecute:
    """Parse COM_STMT_EXECUTE for a statement with ``num_params`` parameters.

    ``new_params_bound_flag = 0`` reuses ``previous_types`` (the caller remembers
    them per statement: sysown/proxysql#3585); without them the packet cannot be
    parsed and is a violation.
    """
    stmt_id, flags, iterations = parse_stmt_execute_header(payload)
    pos = 10
    if num_params == 0:
        if pos != len(payload):
            raise malformed("trailing bytes after COM_STMT_EXECUTE without parameters")
        return StmtExecute(stmt_id, flags, iterations, False, (), ())
    bitmap_len = null_bitmap_size(num_params, 0)
    if pos + bitmap_len + 1 > len(payload):
        raise malformed("COM_STMT_EXECUTE truncated before the parameter types")
    bitmap = payload[pos : pos + bitmap_len]
    pos += bitmap_len
    bound, pos = read_uint1(payload, pos)
    if bound:
        if pos + 2 * num_params > len(payload):
            raise malformed("COM_STMT_EXECUTE truncated in the parameter types")
        raw = bytes(payload[pos : pos + 2 * num_params])
        types = _PARAM_TYPES.get(raw)
        if types is None:
            types = tuple(
                (raw[2 * i], bool(raw[2 * i + 1] & PARAM_UNSIGNED_FLAG)) for i in range(num_params)
            )
            if len(_PARAM_TYPES) >= _PARAM_TYPES_MAX:
                _PARAM_TYPES.clear()
            _PARAM_TYPES[raw] = types
        pos += 2 * num_params
    elif previous_types is not None and len(previous_types) == num_params:
        types = previous_types
    else:
        raise malformed("COM_STMT_EXECUTE without parameter types and none remembered")
    values: list[bytes | None] = []
    for i in range(num_params):
        if i in long_data:
            values.append(b"")
            continue
        if bitmap[i >> 3] & (1 << (i & 7)):
            values.append(None)
            continue
        start, stop = _binary_value_span(payload, pos, types[i][0], param=True)
        values.append(bytes(payload[start:stop]))
        pos = stop
    if pos != len(payload):
        raise malformed("trailing bytes after COM_STMT_EXECUTE parameters")
    return StmtExecute(
        stmt_id,
        flags,
        iterations,
        bool(bound),
        types,
        tuple(values),
        frozenset(long_data) if long_data else _NO_LONG_DATA,
    )


def build_com_stmt_execute(ex: StmtExecute) -> bytes:
    parts = [
        _EXECUTE_HEAD.pack(Command.COM_STMT_EXECUTE, ex.statement_id, ex.flags, ex.iteration_count)
    ]
    n = len(ex.param_types)
    if len(ex.values) != n:
        raise UsageError("param_types and values differ in length")
    if n:
        bitmap = bytearray(null_bitmap_size(n, 0))
        for i, value in enumerate(ex.values):
            if value is None and i not in ex.long_data:
                bitmap[i >> 3] |= 1 << (i & 7)
        parts.append(bytes(bitmap))
        parts.append(b"\x01" if ex.new_params_bound else b"\x00")
        if ex.new_params_bound:
            parts += [
                bytes((t, PARAM_UNSIGNED_FLAG if unsigned else 0)) for t, unsigned in ex.param_types
            ]
        for i, ((t, _), value) in enumerate(zip(ex.param_types, ex.values, strict=True)):
            if value is not None and i not in ex.long_data:
                parts.append(_encode_raw(t, value))
    return b"".join(parts)


# -- rewriting rows (masking) -------------------------------------------------------------------

ValueRewriter = Callable[[bytes], "bytes | None"]
_TEXT_NULL = b"\xfb"
_MAX_ROW_PAYLOAD = 0xFFFFFF


def rewrite_row_packets(
    buf: Buffer,
    start: int,
    stop: int,
    column_count: int,
    columns: Sequence[tuple[int, ValueRewriter]],
    types: Sequence[int] | None = None,
) -> bytearray:
    """Row packets ``buf[start:stop]`` (framed, each under 16 MiB) with values replaced.

    ``columns``: ``(index, rewrite)`` in increasing index order; ``rewrite`` gets a value's
    content and returns the new content or None for NULL (NULL values stay NULL). ``types``
    given: binary-protocol rows (NULL bitmap, fixed-width and length-prefixed values; a new
    value must keep a fixed-width type's width); else text rows. Each packet keeps its
    sequence id; its length is recomputed. A row of 16 MiB or more (split across packets)
    cannot be rewritten here: ``PeerViolation``, and the caller fails closed.
    """
    out = bytearray()
    view = memoryview(buf)
    upto = columns[-1][0] + 1
    if upto > column_count:
        raise malformed("masked column index beyond the column count")
    pos = start
    while pos < stop:
        length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        if length >= _MAX_ROW_PAYLOAD:
            raise malformed("a row of 16 MiB or more cannot be masked")
        seq = buf[pos + 3]
        payload = view[pos + 4 : pos + 4 + length]
        if types is None:
            new = _rewrite_text_row(payload, column_count, upto, columns)
        else:
            new = _rewrite_binary_row(payload, types, upto, columns)
        if len(new) >= _MAX_ROW_PAYLOAD:
            raise malformed("a masked row would need 16 MiB or more")
        out += len(new).to_bytes(3, "little")
        out.append(seq)
        out += new
        pos += 4 + length
    return out


def _rewrite_text_row(
    payload: memoryview, count: int, upto: int, columns: Sequence[tuple[int, ValueRewriter]]
) -> bytearray:
    spans = text_row_spans(payload, count, upto)
    new = bytearray()
    copied = 0
    for index, rewrite in columns:
        span = spans[index]
        if span is None:
            continue
        value_start, value_stop = span[1], span[2]
        value = rewrite(bytes(payload[value_start:value_stop]))
        new += payload[copied : span[0]]
        new += _TEXT_NULL if value is None else build_lenenc_string(value)
        copied = value_stop
    new += payload[copied:]
    return new


def _rewrite_binary_row(
    payload: memoryview,
    types: Sequence[int],
    upto: int,
    columns: Sequence[tuple[int, ValueRewriter]],
) -> bytearray:
    spans = binary_row_spans(payload, types, upto)
    bitmap_end = 1 + null_bitmap_size(len(types), 2)
    new = bytearray(payload[:bitmap_end])
    copied = bitmap_end
    for index, rewrite in columns:
        span = spans[index]
        if span is None:
            continue
        value = rewrite(bytes(payload[span[1] : span[2]]))
        new += payload[copied : span[0]]
        if value is None:
            bit = index + 2
            new[1 + (bit >> 3)] |= 1 << (bit & 7)
        else:
            new += _encode_raw(types[index], value)
        copied = span[2]
    new += payload[copied:]
    return new


# -- splitting a run of rows (result limits) ----------------------------------------------------


def split_row_packets(
    buf: Buffer, start: int, stop: int, max_rows: int, max_bytes: int
) -> tuple[int, int]:
    """Where a run of framed row packets ``buf[start:stop]`` must be cut so that at most
    ``max_rows`` rows and ``max_bytes`` framed bytes go out: ``(offset, rows)``, the end of
    the last whole row that fits and how many rows that is. A row split across 16 MiB
    continuation packets is one row (all its physical packets count toward its bytes)."""
    pos = start
    rows = 0
    while pos < stop and rows < max_rows:
        end = pos
        while True:
            length = buf[end] | (buf[end + 1] << 8) | (buf[end + 2] << 16)
            end += 4 + length
            if length < _MAX_ROW_PAYLOAD:
                break
        if end > stop:
            raise UsageError("split_row_packets: range does not end on a packet boundary")
        if end - start > max_bytes:
            break
        pos = end
        rows += 1
    return pos, rows


def skip_row_packets(buf: Buffer, start: int, rows: int) -> int:
    """The offset after the first ``rows`` framed row packets from ``start``."""
    pos, _ = split_row_packets(buf, start, len(buf), rows, 1 << 62)
    return pos
