"""Decoding recorded MySQL rows (``mysql.text`` / ``mysql.binary``) for the auditors' CLI.

``data`` is a run of complete row packets exactly as the client received them,
4-byte headers included; a row of 16 MiB or more spans several physical packets
(docs/recording-format.md). Column metadata (``meta`` frame): ``type_oid`` is the
MySQL column type byte, ``type_name`` ends in ``UNSIGNED`` / ``BINARY`` as applicable.

Values are shown the way the ``mariadb`` client prints them: text-protocol values
as sent, binary-protocol values converted to the same text (dates ISO, TIME as
``[-]HH:MM:SS[.ffffff]``), binary strings as ``\\x`` hex. Recorded data is
untrusted: every length is bounds-checked by the codecs.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from typing import Final

from protocols.errors import PeerViolation
from protocols.mysql.constants import HEADER_SIZE, MAX_PACKET_PAYLOAD, ColumnType
from protocols.mysql.resultset import decode_binary_value, parse_binary_row, parse_text_row

from .render import hex_value
from .schema import ColumnInfo

MYSQL_TEXT: Final = "mysql.text"
MYSQL_BINARY: Final = "mysql.binary"
MYSQL_ENCODINGS: Final = frozenset({MYSQL_TEXT, MYSQL_BINARY})

T = ColumnType
# The mariadb client right-aligns numbers.
NUMERIC_TYPES: Final = frozenset(
    {
        T.MYSQL_TYPE_DECIMAL,
        T.MYSQL_TYPE_NEWDECIMAL,
        T.MYSQL_TYPE_TINY,
        T.MYSQL_TYPE_SHORT,
        T.MYSQL_TYPE_LONG,
        T.MYSQL_TYPE_INT24,
        T.MYSQL_TYPE_LONGLONG,
        T.MYSQL_TYPE_FLOAT,
        T.MYSQL_TYPE_DOUBLE,
        T.MYSQL_TYPE_YEAR,
    }
)


def iter_packets(data: bytes) -> list[bytes]:
    """Logical payloads of the framed packets in ``data`` (continuations joined)."""
    out: list[bytes] = []
    parts: list[bytes] = []
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < HEADER_SIZE:
            raise PeerViolation("truncated packet header in recorded rows")
        length = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
        end = pos + HEADER_SIZE + length
        if end > n:
            raise PeerViolation("recorded row packet overruns the data")
        parts.append(data[pos + HEADER_SIZE : end])
        pos = end
        if length < MAX_PACKET_PAYLOAD:
            out.append(b"".join(parts))
            parts = []
    if parts:
        raise PeerViolation("recorded rows end inside a continued packet")
    return out


def _is_binary_string(column: ColumnInfo) -> bool:
    return (column.type_name or "").endswith("BINARY")


def _unsigned(column: ColumnInfo) -> bool:
    return "UNSIGNED" in (column.type_name or "")


def _float(raw: bytes) -> str:
    (x,) = struct.unpack("<f", raw)
    # Shortest text that reads back as the same float, as the mariadb client shows it.
    for digits in range(1, 10):
        text = f"{x:.{digits}g}"
        if struct.pack("<f", float(text)) == raw:
            return text
    return repr(x)  # pragma: no cover


def _time_text(value: dt.timedelta) -> str:
    negative = value < dt.timedelta(0)
    value = -value if negative else value
    seconds = value.days * 86400 + value.seconds
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{'-' if negative else ''}{hours:02d}:{minutes:02d}:{secs:02d}"
    return text + (f".{value.microseconds:06d}" if value.microseconds else "")


def binary_value_text(raw: bytes, column: ColumnInfo) -> str:
    col_type = column.type_oid if column.type_oid is not None else T.MYSQL_TYPE_BLOB
    if col_type == T.MYSQL_TYPE_FLOAT and len(raw) == 4:
        return _float(raw)
    value = decode_binary_value(col_type, raw, _unsigned(column))
    if isinstance(value, bytes):
        if col_type in (T.MYSQL_TYPE_DATE, T.MYSQL_TYPE_DATETIME, T.MYSQL_TYPE_TIMESTAMP):
            return "0000-00-00" if col_type == T.MYSQL_TYPE_DATE else "0000-00-00 00:00:00"
        if _is_binary_string(column):
            return hex_value(value)
        return value.decode("utf-8", "replace")
    if isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return text + (f".{value.microsecond:06d}" if value.microsecond else "")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _time_text(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def text_value_text(raw: bytes, column: ColumnInfo) -> str:
    if _is_binary_string(column):
        return hex_value(raw)
    return raw.decode("utf-8", "replace")


def decode_rows(
    chunks: Sequence[bytes], encoding: str, columns: Sequence[ColumnInfo]
) -> list[list[str | None]]:
    """Rows of the recorded chunks as text (None for SQL NULL)."""
    ncols = len(columns)
    types = [c.type_oid if c.type_oid is not None else T.MYSQL_TYPE_BLOB for c in columns]
    rows: list[list[str | None]] = []
    for chunk in chunks:
        for payload in iter_packets(chunk):
            if encoding == MYSQL_BINARY:
                values = parse_binary_row(payload, types)
                rows.append(
                    [
                        None if v is None else _safe_binary_text(v, c)
                        for v, c in zip(values, columns, strict=True)
                    ]
                )
            else:
                values = parse_text_row(payload, ncols)
                rows.append(
                    [
                        None if v is None else text_value_text(v, c)
                        for v, c in zip(values, columns, strict=True)
                    ]
                )
    return rows


def _safe_binary_text(raw: bytes, column: ColumnInfo) -> str:
    try:
        return binary_value_text(raw, column)
    except (ValueError, struct.error, IndexError):
        return hex_value(raw)  # a value that does not fit its type: show the bytes


def right_aligned(columns: Sequence[ColumnInfo]) -> list[bool]:
    return [c.type_oid in NUMERIC_TYPES for c in columns]
