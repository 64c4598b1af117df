"""Human-readable rendering for the auditors' CLI: values, psql-style tables, times.

Text-format values are UTF-8 (PostgreSQL's client_encoding as the gateway runs it);
binary-format values are decoded for common type OIDs (catalog/pg_type.dat) and shown
as ``\\x`` hex otherwise, the way psql shows bytea.
"""

from __future__ import annotations

import math
import struct
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Final

from .schema import ColumnInfo, Done

# Type OIDs (src/include/catalog/pg_type.dat).
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, XML, FLOAT4, FLOAT8, MONEY, BPCHAR, VARCHAR = 114, 142, 700, 701, 790, 1042, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID, JSONB = 1082, 1083, 1114, 1184, 1700, 2950, 3802

# psql right-aligns these (print.c: column_type_alignment).
NUMERIC_OIDS: Final = frozenset({INT2, INT4, INT8, OID, FLOAT4, FLOAT8, NUMERIC, MONEY, 24, 28})

_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_DATE: Final = date(2000, 1, 1)
_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)
_INT32_MAX, _INT32_MIN = 2**31 - 1, -(2**31)


def hex_value(value: bytes) -> str:
    return "\\x" + value.hex()


def _utf8(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _unpack(fmt: str) -> Callable[[bytes], str]:
    s = struct.Struct(fmt)

    def decode(value: bytes) -> str:
        return str(s.unpack(value)[0])

    return decode


def _float4(value: bytes) -> str:
    (x,) = struct.unpack(">f", value)
    if not math.isfinite(x):
        return _special_float(x)
    # Shortest text that reads back as the same float4, like PostgreSQL 12+.
    for digits in range(1, 10):
        text = f"{x:.{digits}g}"
        if struct.pack(">f", float(text)) == value:
            return text
    return repr(x)  # pragma: no cover


def _float8(value: bytes) -> str:
    (x,) = struct.unpack(">d", value)
    return repr(x) if math.isfinite(x) else _special_float(x)


def _special_float(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def _bool(value: bytes) -> str:
    return "t" if value != b"\x00" else "f"


def _uuid(value: bytes) -> str:
    return str(uuid.UUID(bytes=value))


def _jsonb(value: bytes) -> str:
    # Binary jsonb is a version byte (1) followed by the JSON text.
    if value[:1] != b"\x01":
        raise ValueError("unknown jsonb version")
    return _utf8(value[1:])


def _date(value: bytes) -> str:
    (days,) = struct.unpack(">i", value)
    if days == _INT32_MAX:
        return "infinity"
    if days == _INT32_MIN:
        return "-infinity"
    return (_PG_EPOCH_DATE + timedelta(days=days)).isoformat()


def _time(value: bytes) -> str:
    (micros,) = struct.unpack(">q", value)
    seconds, micros = divmod(micros, 1_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return text + (f".{micros:06d}".rstrip("0") if micros else "")


def _timestamp(value: bytes, suffix: str = "") -> str:
    (micros,) = struct.unpack(">q", value)
    if micros == _INT64_MAX:
        return "infinity"
    if micros == _INT64_MIN:
        return "-infinity"
    moment = _PG_EPOCH + timedelta(microseconds=micros)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + suffix


def _numeric(value: bytes) -> str:
    ndigits, weight, sign, dscale = struct.unpack_from(">hhHh", value)
    if sign == 0xC000:
        return "NaN"
    if sign == 0xD000:
        return "Infinity"
    if sign == 0xF000:
        return "-Infinity"
    if len(value) != 8 + 2 * ndigits or ndigits < 0 or dscale < 0:
        raise ValueError("malformed numeric")
    digits = struct.unpack_from(f">{ndigits}h", value, 8)
    # Base-10000 digits: digit i has weight 10000 ** (weight - i).
    int_part = "".join(f"{digits[i] if i < ndigits else 0:04d}" for i in range(weight + 1))
    int_part = int_part.lstrip("0") or "0"
    frac = "0000" * max(0, -weight - 1)
    frac += "".join(f"{d:04d}" for d in digits[max(weight + 1, 0) :])
    frac = (frac + "0" * dscale)[:dscale]
    text = int_part + ("." + frac if dscale else "")
    return ("-" + text) if sign == 0x4000 else text


BINARY_DECODERS: Final[dict[int, Callable[[bytes], str]]] = {
    BOOL: _bool,
    BYTEA: hex_value,
    CHAR: _utf8,
    NAME: _utf8,
    TEXT: _utf8,
    VARCHAR: _utf8,
    BPCHAR: _utf8,
    JSON: _utf8,
    XML: _utf8,
    JSONB: _jsonb,
    INT2: _unpack(">h"),
    INT4: _unpack(">i"),
    INT8: _unpack(">q"),
    OID: _unpack(">I"),
    FLOAT4: _float4,
    FLOAT8: _float8,
    NUMERIC: _numeric,
    UUID: _uuid,
    DATE: _date,
    TIME: _time,
    TIMESTAMP: _timestamp,
    TIMESTAMPTZ: lambda v: _timestamp(v, "+00"),
}


def decode_value(value: bytes | None, column: ColumnInfo | None) -> str | None:
    """A recorded column value as text (None for SQL NULL)."""
    if value is None:
        return None
    if column is None or column.format != "binary":
        return _utf8(value)
    decoder = BINARY_DECODERS.get(column.type_oid or 0)
    if decoder is None:
        return hex_value(value)
    try:
        return decoder(value)
    except (ValueError, struct.error, IndexError):
        return hex_value(value)  # a value that does not fit its type: show the bytes


# -- psql "aligned" tables ----------------------------------------------------------


def display_width(text: str) -> int:
    """Terminal columns: East Asian wide/fullwidth characters take two."""
    if text.isascii():
        return len(text)
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _pad(text: str, width: int, align: str) -> str:
    gap = width - display_width(text)
    if align == "r":
        return " " * gap + text
    if align == "c":
        left = gap // 2
        return " " * left + text + " " * (gap - left)
    return text + " " * gap


def escape(text: str, *, newlines: bool = False) -> str:
    """``text`` safe for an auditor's terminal: control characters (and every other
    character Python does not consider printable: tabs, line and paragraph separators,
    bidi overrides, ...) are shown as ``\\x1b``, never sent to the terminal; recorded and
    client-supplied text is untrusted input. With ``newlines`` a newline is kept (for
    multi-line output), otherwise it is escaped too."""
    if text.isprintable():
        return text
    keep = "\n" if newlines else ""
    return "".join(c if c.isprintable() or c == keep else f"\\x{ord(c):02x}" for c in text)


def _clean(text: str) -> str:
    # Table cells: newlines stay (continued lines), everything else is escaped.
    return escape(text, newlines=True)


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str | None]], right: Sequence[bool]
) -> list[str]:
    """Lines of a psql-style aligned table with its ``(N rows)`` footer.

    Multi-line values continue on the next line with ``+`` at the end, as psql does.
    """
    ncols = len(headers)
    heads = [[_clean(h)] for h in headers]
    cells = [[_clean(v).split("\n") if v is not None else [""] for v in row] for row in rows]
    widths = [max(display_width(x) for x in h) for h in heads]
    for row in cells:
        for j, lines in enumerate(row[:ncols]):
            widths[j] = max(widths[j], *(display_width(x) for x in lines))
    out = _row_lines(heads, widths, ["c"] * ncols)
    out.append("+".join("-" * (w + 2) for w in widths))
    aligns = ["r" if r else "l" for r in right]
    for row in cells:
        out.extend(_row_lines(row, widths, aligns))
    n = len(rows)
    out.append(f"({n} row{'' if n == 1 else 's'})")
    return out


def _row_lines(cells: list[list[str]], widths: list[int], aligns: list[str]) -> list[str]:
    height = max((len(c) for c in cells), default=1)
    lines = []
    for k in range(height):
        parts = []
        for j, width in enumerate(widths):
            cell = cells[j] if j < len(cells) else [""]
            text = cell[k] if k < len(cell) else ""
            more = k < len(cell) - 1
            parts.append(" " + _pad(text, width, aligns[j]) + ("+" if more else " "))
        # psql prints no trailing blanks after the last column.
        lines.append("|".join(parts).rstrip())
    return lines


# -- small formatting helpers --------------------------------------------------------


def format_time(epoch: float | None, *, millis: bool = True) -> str:
    if epoch is None:
        return "-"
    moment = datetime.fromtimestamp(epoch, UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return text + (f".{moment.microsecond // 1000:03d}" if millis else "")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def outcome_parts(done: Done, message: Callable[[str], str]) -> list[str]:
    """A completed statement's outcome for people: the error (its message through
    ``message``, which shortens it) or the command tag, rows (and how many were recorded),
    duration, bytes to the client. The CLI timeline and the web console join the parts."""
    parts = []
    if done.error is not None:
        code = f" {done.error.code}" if done.error.code else ""
        parts.append(f"ERROR{code}: {message(done.error.message)}")
    elif done.command_tag:
        parts.append(done.command_tag)
    rows = f"{done.rows} row{'' if done.rows == 1 else 's'}"
    if done.rows_recorded < done.rows:
        rows += f" ({done.rows_recorded} recorded)"
    parts += [rows, format_duration(done.duration), format_bytes(done.bytes_to_client)]
    return parts


def one_line(text: str, limit: int | None = 160) -> str:
    """Statement text on one line (whitespace collapsed), cut at ``limit`` characters."""
    flat = _clean(" ".join(text.split()))
    if limit is not None and len(flat) > limit:
        return flat[: limit - 1] + "…"
    return flat
