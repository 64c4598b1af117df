"""Recorded result rows as text cells: shared by ``gateway sessions replay`` (psql-style
tables) and the web console (HTML tables), so rows are decoded in one place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .render import NUMERIC_OIDS, decode_value, hex_value
from .render_mysql import MYSQL_ENCODINGS
from .render_mysql import decode_rows as decode_mysql_rows
from .render_mysql import right_aligned as mysql_right_aligned
from .schema import PG_COPYDATA, PG_DATAROW, ColumnInfo


@dataclass
class DecodedResult:
    headers: list[str]
    rows: list[list[str | None]] = field(default_factory=list)
    right: list[bool] = field(default_factory=list)  # right-align (numeric) per column
    # Why the rows could not be shown (unknown encoding, malformed bytes); None when they can.
    problem: str | None = None


def decode_result(
    columns: Sequence[ColumnInfo], data: Sequence[bytes], encodings: set[str]
) -> DecodedResult:
    """The recorded rows of one result: its ``meta`` columns and its ``rows`` chunks."""
    headers = [c.name for c in columns]
    if encodings and encodings <= MYSQL_ENCODINGS and len(encodings) == 1:
        return _mysql(columns, data, next(iter(encodings)))
    if encodings == {PG_COPYDATA}:
        return _copy_data(data)
    if encodings - {PG_DATAROW}:
        problem = f"rows in encoding {sorted(encodings)} are not rendered by this version"
        return DecodedResult(headers, problem=problem)
    from protocols.errors import PeerViolation
    from protocols.postgres.rows import iter_data_rows

    rows: list[list[str | None]] = []
    try:
        for chunk in data:
            for values in iter_data_rows(chunk):
                rows.append(
                    [
                        decode_value(v, columns[i] if i < len(columns) else None)
                        for i, v in enumerate(values)
                    ]
                )
    except PeerViolation as exc:
        return DecodedResult(headers, problem=f"recorded rows are malformed: {exc.message}")
    return DecodedResult(headers, rows, [c.type_oid in NUMERIC_OIDS for c in columns])


def _mysql(columns: Sequence[ColumnInfo], data: Sequence[bytes], encoding: str) -> DecodedResult:
    from protocols.errors import PeerViolation

    headers = [c.name for c in columns]
    try:
        rows = decode_mysql_rows(list(data), encoding, list(columns))
    except PeerViolation as exc:
        return DecodedResult(headers, problem=f"recorded rows are malformed: {exc.message}")
    return DecodedResult(headers, rows, mysql_right_aligned(list(columns)))


# The signature that opens COPY's binary format ("COPY", "Binary Format").
_PGCOPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
COPY_HEADER = "COPY data"


def _copy_data(data: Sequence[bytes]) -> DecodedResult:
    """A ``COPY ... TO STDOUT`` result: one row per CopyData message, its line as text
    (text and CSV formats end each row with a newline, dropped here); the binary format
    is shown as bytes."""
    from protocols.errors import PeerViolation
    from protocols.postgres.rows import iter_copy_data

    rows: list[list[str | None]] = []
    binary = False
    try:
        for chunk in data:
            for payload in iter_copy_data(chunk):
                if not rows and payload.startswith(_PGCOPY_SIGNATURE):
                    binary = True
                if binary:
                    rows.append([hex_value(payload)])
                else:
                    line = payload[:-1] if payload.endswith(b"\n") else payload
                    rows.append([line.decode("utf-8", "replace")])
    except PeerViolation as exc:
        return DecodedResult([COPY_HEADER], problem=f"recorded rows are malformed: {exc.message}")
    return DecodedResult([COPY_HEADER], rows, [False])
