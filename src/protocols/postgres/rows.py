"""RowDescription and DataRow codecs.

Spec: PostgreSQL manual, "Message Formats": RowDescription ('T') and DataRow ('D').

Parsers take the message *body* (no type byte, no length) except ``iter_data_rows``,
which walks a concatenation of complete, framed DataRow messages (the form in which
the gateway records rows: exactly the bytes the client received). Every length read
from the peer is checked against what is actually present: a length that lies raises
``PeerViolation`` (SQLSTATE 08P01), never IndexError, never an over-read, and never a
silently short value.

Not used per row on the pass-through hot path; the recorder's readers, masking and
tests use these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from struct import Struct
from typing import NamedTuple

from ..errors import PeerViolation
from .constants import Backend, SqlState
from .framing import build_message

_I16 = Struct("!h")
_I32 = Struct("!i")
_U32 = Struct("!I")
# Per-field tail of RowDescription: table OID (u32), attnum (i16), type OID (u32),
# type size (i16), type modifier (i32), format code (i16) = 18 bytes.
_FIELD = Struct("!IhIhih")
_HEADER = Struct("!BI")

# Names go through surrogateescape so a RowDescription in a non-UTF-8
# client_encoding still round-trips byte for byte through parse/build.
_NAME_ERRORS = "surrogateescape"


class FieldDescription(NamedTuple):
    name: str
    table_oid: int
    attnum: int
    type_oid: int
    type_size: int
    type_modifier: int
    format: int  # 0 = text, 1 = binary


def _violation(what: str) -> PeerViolation:
    return PeerViolation(what, SqlState.PROTOCOL_VIOLATION)


def parse_row_description(body: bytes | memoryview) -> list[FieldDescription]:
    """Fields of a RowDescription body."""
    data = bytes(body)
    n = len(data)
    if n < 2:
        raise _violation("RowDescription truncated")
    (count,) = _I16.unpack_from(data, 0)
    if count < 0:
        raise _violation(f"RowDescription with negative field count {count}")
    pos = 2
    fields: list[FieldDescription] = []
    for _ in range(count):
        end = data.find(b"\x00", pos)
        if end < 0:
            raise _violation("unterminated field name in RowDescription")
        name = data[pos:end].decode("utf-8", _NAME_ERRORS)
        pos = end + 1
        if pos + _FIELD.size > n:
            raise _violation("RowDescription truncated")
        table_oid, attnum, type_oid, type_size, type_mod, fmt = _FIELD.unpack_from(data, pos)
        pos += _FIELD.size
        fields.append(FieldDescription(name, table_oid, attnum, type_oid, type_size, type_mod, fmt))
    if pos != n:
        raise _violation("trailing bytes after RowDescription fields")
    return fields


def build_row_description(fields: Iterable[FieldDescription]) -> bytes:
    """A framed RowDescription message (type byte and length included)."""
    items = list(fields)
    body = bytearray(_I16.pack(len(items)))
    for f in items:
        body += f.name.encode("utf-8", _NAME_ERRORS) + b"\x00"
        body += _FIELD.pack(
            f.table_oid, f.attnum, f.type_oid, f.type_size, f.type_modifier, f.format
        )
    return build_message(Backend.ROW_DESCRIPTION, body)


def _parse_data_row_at(data: bytes, pos: int, end: int) -> list[bytes | None]:
    """Columns of the DataRow body occupying ``data[pos:end]``."""
    if end - pos < 2:
        raise _violation("DataRow truncated")
    (count,) = _I16.unpack_from(data, pos)
    if count < 0:
        raise _violation(f"DataRow with negative column count {count}")
    pos += 2
    values: list[bytes | None] = []
    append = values.append
    for _ in range(count):
        if end - pos < 4:
            raise _violation("DataRow truncated")
        (length,) = _I32.unpack_from(data, pos)
        pos += 4
        if length == -1:  # SQL NULL
            append(None)
            continue
        if length < 0 or length > end - pos:
            raise _violation(f"DataRow column length {length} exceeds the message")
        append(data[pos : pos + length])
        pos += length
    if pos != end:
        raise _violation("trailing bytes after DataRow columns")
    return values


def parse_data_row(body: bytes | memoryview) -> list[bytes | None]:
    """Column values of a DataRow body (None for SQL NULL)."""
    data = bytes(body)
    return _parse_data_row_at(data, 0, len(data))


def build_data_row(values: Sequence[bytes | None]) -> bytes:
    """A framed DataRow message."""
    body = bytearray(_I16.pack(len(values)))
    for value in values:
        if value is None:
            body += _I32.pack(-1)
        else:
            body += _I32.pack(len(value))
            body += value
    return build_message(Backend.DATA_ROW, body)


def iter_data_rows(data: bytes | memoryview) -> Iterator[list[bytes | None]]:
    """Rows of a concatenation of complete, framed DataRow messages.

    Anything else (another message type, a partial message at the end, a length
    below 4) is a ``PeerViolation``: the input is supposed to be exactly what was
    forwarded to the client as rows.
    """
    buf = bytes(data)
    for start, stop in _framed(buf, Backend.DATA_ROW, "DataRow"):
        yield _parse_data_row_at(buf, start, stop)


def _framed(buf: bytes, expected: int, what: str) -> Iterator[tuple[int, int]]:
    """(body start, stop) of each message of ``buf``, which must be complete messages of
    type ``expected`` and nothing else."""
    n = len(buf)
    pos = 0
    while pos < n:
        if n - pos < _HEADER.size:
            raise _violation(f"partial {what} header at the end of the data")
        mtype, length = _HEADER.unpack_from(buf, pos)
        if mtype != expected:
            raise _violation(f"expected {what}, found message type {mtype:#04x}")
        if length < 4:
            raise _violation(f"invalid message length {length}")
        stop = pos + 1 + length
        if stop > n:
            raise _violation(f"{what} length exceeds the data")
        yield pos + _HEADER.size, stop
        pos = stop


ValueRewriter = Callable[[bytes], "bytes | None"]
_NULL_LENGTH = b"\xff\xff\xff\xff"


class ConstantValue:
    """A rewrite that returns the same value (bytes, or None for NULL) for every input.

    Masks such as ``redact`` and ``fixed`` are constants; marking them lets the compiled
    rewriter write the value without calling back into Python for every row."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | None) -> None:
        self.value = value

    def __call__(self, _value: bytes) -> bytes | None:
        return self.value


# A screen's needle: (table, text, bits, guard, at_start). ``table`` indexes
# ScreenedValue.tables (-1: the value's own bytes); ``guard`` is the index of an earlier
# needle that must have been found for this one to be looked for (-1: none); with
# ``at_start`` the text must begin the (translated) value rather than occur anywhere in it.
Needle = tuple[int, bytes, int, int, bool]
MAX_NEEDLES = 64


class ScreenedValue:
    """A rewrite that most values do not need, with a byte screen that tells which might.

    The screen is data, not code, so the compiled rewriter runs it without calling into
    Python: a value shorter than ``min_length`` is kept; otherwise each needle is searched
    in the value translated by its table (``bytes.translate``; or must begin it), and the
    ``bits`` of every needle found (whose guard was found) are or-ed into the value's
    *hits*. A value with no hits is kept as it is. The others are passed in batches:
    ``rewrite(values, hits)`` gets lists of values and their hits and returns a list with
    each value's result (bytes, or None for NULL); the compiled rewriter makes one call per
    column for all the rows it is given. Content detectors use it (issue 6): most text
    holds nothing they could find, screening it in C costs a fraction of one Python call,
    and one call per batch instead of one per value saves most of what calling Python
    costs.

    ``whole(value)`` is the same rewrite for callers without a screen of their own (it
    screens, in Python, however it likes); calling the object calls it."""

    __slots__ = ("min_length", "needles", "rewrite", "tables", "whole")

    def __init__(
        self,
        whole: ValueRewriter,
        rewrite: Callable[[list[bytes], list[int]], list[bytes | None]],
        min_length: int,
        tables: tuple[bytes, ...],
        needles: tuple[Needle, ...],
    ) -> None:
        if any(len(t) != 256 for t in tables):
            raise ValueError("a screen table maps all 256 byte values")
        if len(needles) > MAX_NEEDLES:
            raise ValueError(f"a screen has at most {MAX_NEEDLES} needles")
        for i, (table, text, bits, guard, _at_start) in enumerate(needles):
            if not -1 <= table < len(tables) or not -1 <= guard < i or not text or bits < 0:
                raise ValueError(f"screen needle {i} is malformed")
        self.whole = whole
        self.rewrite = rewrite
        self.min_length = min_length
        self.tables = tables
        self.needles = needles

    def __call__(self, value: bytes) -> bytes | None:
        return self.whole(value)

    def hits(self, value: bytes) -> int:
        """The screen's verdict on one value: 0 to keep it as it is (reference for _rows.c)."""
        if len(value) < self.min_length:
            return 0
        copies: dict[int, bytes] = {-1: value}
        found: list[bool] = []
        hits = 0
        for table, text, bits, guard, at_start in self.needles:
            if guard >= 0 and not found[guard]:
                found.append(False)
                continue
            copy = copies.get(table)
            if copy is None:
                copy = copies[table] = value.translate(self.tables[table])
            seen = copy.startswith(text) if at_start else text in copy
            found.append(seen)
            if seen:
                hits |= bits
        return hits


def iter_copy_data(data: bytes | memoryview) -> Iterator[bytes]:
    """The payloads of a concatenation of complete, framed CopyData messages (what a
    ``COPY ... TO STDOUT`` sent, one message per row in text and CSV formats).

    Anything else is a ``PeerViolation``, as in ``iter_data_rows``."""
    buf = bytes(data)
    for start, stop in _framed(buf, Backend.COPY_DATA, "CopyData"):
        yield buf[start:stop]


def rewrite_data_rows(
    buf: bytes | bytearray,
    start: int,
    stop: int,
    columns: Sequence[tuple[int, ValueRewriter]],
) -> bytearray:
    """Framed DataRows ``buf[start:stop]`` with some column values replaced.

    ``columns`` lists ``(index, rewrite)`` in increasing index order; ``rewrite`` gets the
    value's bytes (never called for NULL, which stays NULL) and returns the new value or
    None for NULL. A row is parsed only up to the last rewritten column; the spans in
    between and after are copied unchanged, and each row's length is recomputed (a value
    may grow). Rows with fewer columns than a rewritten index, or lengths that overrun
    the message, are a ``PeerViolation``: the server described more columns than it sent.
    A ``ScreenedValue`` rewrite is called only for the values its screen selects (the
    compiled implementation calls it once per column, before any other rewrite: which
    error surfaces when several rewrites fail is not specified); a ``ConstantValue`` is not
    called at all.

    Runs the compiled implementation (``_rows.c``) when it is built, else
    ``rewrite_data_rows_py``; both give the same bytes and the same errors.
    """
    if _compiled is not None:
        return _compiled(buf, start, stop, columns, ConstantValue, ScreenedValue, _violation)
    return rewrite_data_rows_py(buf, start, stop, columns)


def rewrite_data_rows_py(
    buf: bytes | bytearray,
    start: int,
    stop: int,
    columns: Sequence[tuple[int, ValueRewriter]],
) -> bytearray:
    """The pure-Python ``rewrite_data_rows``: the reference the compiled one is tested
    against, and what runs where the extension could not be built."""
    columns = tuple(columns)  # ours: a rewrite that changes the caller's list cannot skip one
    out = bytearray()
    view = memoryview(buf)
    unpack_i32 = _I32.unpack_from
    pack_u32 = _U32.pack_into
    i32 = _I32.pack
    last = columns[-1][0]
    pos = start
    while pos < stop:
        if stop - pos < 5:
            raise _violation("DataRow truncated")
        (length,) = unpack_i32(buf, pos + 1)
        end = pos + 1 + length
        if end > stop or length < 6:
            raise _violation("DataRow truncated")
        (count,) = _I16.unpack_from(buf, pos + 5)
        if count <= last:
            raise _violation(f"DataRow has {count} columns; the RowDescription promised more")
        row_at = len(out)
        out += view[pos : pos + 7]
        copied = p = pos + 7
        col = 0
        for index, rewrite in columns:
            while col < index:
                if p + 4 > end:
                    raise _violation("DataRow column lengths exceed the message")
                (n,) = unpack_i32(buf, p)
                p += 4 + n if n > 0 else 4
                col += 1
            if p + 4 > end:
                raise _violation("DataRow column lengths exceed the message")
            (n,) = unpack_i32(buf, p)
            col += 1
            if n < 0:
                p += 4
                continue
            value_at = p + 4
            value_end = value_at + n
            if value_end > end:
                raise _violation(f"DataRow column length {n} exceeds the message")
            value = bytes(view[value_at:value_end])
            if type(rewrite) is ScreenedValue:
                hits = rewrite.hits(value)
                new = rewrite.rewrite([value], [hits])[0] if hits else value
            else:
                new = rewrite(value)
            if p > copied:
                out += view[copied:p]
            if new is None:
                out += _NULL_LENGTH
            else:
                out += i32(len(new))
                out += new
            copied = p = value_end
        if p > end:
            raise _violation("DataRow column lengths exceed the message")
        out += view[copied:end]
        pack_u32(out, row_at + 1, len(out) - row_at - 1)
        pos = end
    return out


_compiled: Callable[..., bytearray] | None
try:  # the compiled rewriter, built by setuptools where a C compiler is present
    from ._rows import rewrite as _compiled
except ImportError:  # pragma: no cover - depends on the build
    _compiled = None

COMPILED = _compiled is not None


def split_data_rows(
    buf: bytes | bytearray, start: int, stop: int, max_rows: int, max_bytes: int
) -> tuple[int, int]:
    """Where a run of framed DataRows ``buf[start:stop]`` must be cut so that at most
    ``max_rows`` rows and ``max_bytes`` bytes (whole messages) come before the cut:
    ``(position, rows)``. Walks message headers only; the run was framed by the scanner."""
    unpack_i32 = _I32.unpack_from
    pos = start
    rows = 0
    while pos < stop and rows < max_rows:
        (length,) = unpack_i32(buf, pos + 1)
        end = pos + 1 + length
        if end - start > max_bytes:
            break
        pos = end
        rows += 1
    return pos, rows


def skip_data_rows(buf: bytes | bytearray, start: int, rows: int) -> int:
    """The position after the first ``rows`` framed DataRows from ``start``."""
    unpack_i32 = _I32.unpack_from
    pos = start
    for _ in range(rows):
        (length,) = unpack_i32(buf, pos + 1)
        pos += 1 + length
    return pos
