"""The recording file format, version 1 (specified in docs/recording-format.md).

    file   = header frame*
    header = MAGIC (8 bytes) | format version (u16 BE) | flags (u16 BE, 0)
    frame  = length (u32 BE, payload bytes) | payload (msgpack map)

Every payload is a msgpack map whose first three keys are ``t`` (the frame type, a
short string), ``seq`` (the frame's index in the file, from 0) and ``prev`` (the
SHA-256 of the previous frame's bytes, length prefix included; for frame 0 the
SHA-256 of the header). Checkpoint and end frames end with ``sig``: an Ed25519
signature over ``SIGNATURE_CONTEXT + payload[:-64]`` (everything in the payload but
the signature value itself), so a reader verifies it without re-encoding anything.

Compatibility rules (why no ``forbid_unknown_fields`` here): new fields and new frame
types may be added without a version bump; old readers ignore unknown fields and skip
unknown frame types (decoding only the envelope, so the chain still verifies). Fields
added later must have defaults, so new readers still read old files. The version in
the header changes only if framing, chaining or signing change.

This module is synchronous and free of I/O: it is shared by the writer (asyncio side
and writer thread) and by the readers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from struct import Struct
from typing import Any, Final, Protocol

import msgspec

MAGIC: Final = b"\x89GWREC\r\n"  # PNG-style: high bit and CRLF catch text-mode damage
FORMAT_VERSION: Final = 1
_HEADER_STRUCT: Final = Struct(">8sHH")
HEADER: Final = _HEADER_STRUCT.pack(MAGIC, FORMAT_VERSION, 0)
HEADER_SIZE: Final = _HEADER_STRUCT.size  # 12
HEADER_HASH: Final = hashlib.sha256(HEADER).digest()

LENGTH: Final = Struct(">I")
# Readers refuse a declared length above this before allocating anything: a flipped
# bit in a length prefix must not make a reader try to allocate 4 GiB.
MAX_FRAME_SIZE: Final = 1 << 30

HASH_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
SIGNATURE_CONTEXT: Final = b"gwrec/1 frame signature\x00"
ZERO_HASH: Final = bytes(HASH_SIZE)
ZERO_SIGNATURE: Final = bytes(SIGNATURE_SIZE)
# msgpack for the key "sig" (fixstr 3) followed by a bin 8 header of length 64.
SIGNATURE_TRAILER: Final = b"\xa3sig\xc4\x40"

FILE_SUFFIX: Final = ".gwrec"

# Row encodings (Rows.enc).
PG_DATAROW: Final = "pg.DataRow"  # concatenated, framed PostgreSQL DataRow messages
PG_COPYDATA: Final = "pg.CopyData"  # concatenated, framed CopyData messages (COPY TO STDOUT)


# --------------------------------------------------------------------------- structs
#
# kw_only everywhere: field order is the encoding order (``sig`` must stay last in
# signed frames) and later fields may be added with defaults anywhere before it.
# gc=False: frames hold no reference cycles; a long export creates millions of them.


class ColumnInfo(msgspec.Struct, gc=False):
    """One result column as the client saw it described."""

    name: str
    type_oid: int | None = None
    type_name: str | None = None
    format: str = "text"  # "text" | "binary"
    table_oid: int | None = None
    attnum: int | None = None
    table: str | None = None
    column: str | None = None
    masked: str | None = None  # masking style applied to this column, None if none


class Error(msgspec.Struct, gc=False):
    code: str  # SQLSTATE (PostgreSQL) or errno as a string (MySQL); "" if none
    message: str


class Frame(msgspec.Struct, tag_field="t", kw_only=True, gc=False):
    seq: int
    prev: bytes


class Start(Frame, tag="start", kw_only=True, gc=False):
    session_id: str
    subject: str
    groups: list[str]
    token_id: str | None
    token_expires_at: float | None
    target: str
    protocol: str
    client_address: str
    tls: dict[str, str]
    gateway_version: str
    policy_digest: str
    upstream_user: str
    started_at: float
    key_fp: str  # fingerprint of the public key that signs this file's frames


class Stmt(Frame, tag="stmt", kw_only=True, gc=False):
    stmt: int  # statement number within the session, from 1
    at: float
    text: str
    path: str  # "simple" | "extended" | "prepared" | ...
    name: str | None
    # Each parameter is str (text format), bytes (binary format) or None (NULL).
    # msgpack keeps str and bin apart, but msgspec cannot type a union of two
    # str-like types, hence Any; writers put only those three in here.
    params: list[Any] | None
    decision: str  # "allow" | "deny"
    rule: str | None


class Meta(Frame, tag="meta", kw_only=True, gc=False):
    stmt: int
    columns: list[ColumnInfo]


class Rows(Frame, tag="rows", kw_only=True, gc=False):
    stmt: int
    enc: str
    count: int
    # Typed bytes; the recorder also passes a memoryview here, which msgspec encodes
    # as the same msgpack bin (copying it into the session buffer).
    data: bytes


class Done(Frame, tag="done", kw_only=True, gc=False):
    stmt: int
    command_tag: str | None
    rows: int
    rows_recorded: int
    bytes_to_client: int
    duration: float
    error: Error | None


class Exec(msgspec.Struct, gc=False):
    """One completed statement inside an ``execs`` frame.

    Carries exactly what the ``stmt``, ``meta``, ``rows`` and ``done`` frames of the
    same statement would (the field names are theirs; ``columns`` is None when no
    result was described, ``data`` None when no rows were recorded).

    Positional (not ``kw_only``) because it is built once per statement on the hot
    path, where a keyword call with eighteen arguments costs several times more.
    """

    # As Stmt
    stmt: int
    at: float
    text: str
    path: str
    name: str | None
    params: list[Any] | None
    decision: str
    rule: str | None
    # As Meta
    columns: list[ColumnInfo] | None
    # As Rows
    enc: str | None
    count: int
    data: bytes | None
    # As Done
    command_tag: str | None
    rows: int
    rows_recorded: int
    bytes_to_client: int
    duration: float
    error: Error | None


class Execs(Frame, tag="execs", kw_only=True, gc=False):
    """Statements that completed since the previous frame, in completion order.

    Short statements are gathered here instead of costing four frames (stmt, meta,
    rows, done) each: one encode and one hash per batch is what keeps recording cheap
    on the hot path. A statement still running when the writer collects the session's
    buffer is written as separate frames instead (see ``SessionRecording``), so long
    statements reach the disk while they run. ``split_exec`` gives an item's frames.
    """

    items: list[Exec]


class Ctl(Frame, tag="ctl", kw_only=True, gc=False):
    at: float
    kind: str
    detail: dict[str, str]


class Ckpt(Frame, tag="ckpt", kw_only=True, gc=False):
    at: float
    sig: bytes


class End(Frame, tag="end", kw_only=True, gc=False):
    reason: str
    statements: int
    rows: int
    bytes_to_client: int
    denied: int
    ended_at: float
    sig: bytes


KnownFrame = Start | Stmt | Meta | Rows | Done | Execs | Ctl | Ckpt | End
KNOWN_TAGS: Final[frozenset[str]] = frozenset(
    {"start", "stmt", "meta", "rows", "done", "execs", "ctl", "ckpt", "end"}
)
SIGNED_TAGS: Final[frozenset[str]] = frozenset({"ckpt", "end"})


class Envelope(msgspec.Struct, gc=False):
    """The part of every frame a reader understands whatever its type."""

    t: str
    seq: int
    prev: bytes


@dataclass(slots=True)
class UnknownFrame:
    """A frame whose type this reader does not know (written by a newer gateway)."""

    t: str
    seq: int
    prev: bytes
    fields: dict[str, Any] = field(default_factory=dict)


class FrameDecodeError(ValueError):
    pass


class _StatementFields(Protocol):
    stmt: int
    at: float
    text: str
    path: str
    name: str | None
    params: list[Any] | None
    decision: str
    rule: str | None


def stmt_frame(seq: int, prev: bytes, src: _StatementFields) -> Stmt:
    """The ``stmt`` frame for anything carrying its fields (an ``Exec`` item, or the
    writer's record of a statement still running)."""
    return Stmt(
        seq=seq,
        prev=prev,
        stmt=src.stmt,
        at=src.at,
        text=src.text,
        path=src.path,
        name=src.name,
        params=src.params,
        decision=src.decision,
        rule=src.rule,
    )


def split_exec(batch: Execs, frame: Exec) -> list[Stmt | Meta | Rows | Done]:
    """The stmt, meta (if described), rows (if any recorded) and done frames that one
    item of an ``execs`` frame stands for; they carry the batch's ``seq`` and ``prev``."""
    seq, prev, stmt = batch.seq, batch.prev, frame.stmt
    parts: list[Stmt | Meta | Rows | Done] = [stmt_frame(seq, prev, frame)]
    if frame.columns is not None:
        parts.append(Meta(seq=seq, prev=prev, stmt=stmt, columns=frame.columns))
    if frame.data is not None and frame.enc is not None:
        parts.append(
            Rows(seq=seq, prev=prev, stmt=stmt, enc=frame.enc, count=frame.count, data=frame.data)
        )
    parts.append(
        Done(
            seq=seq,
            prev=prev,
            stmt=stmt,
            command_tag=frame.command_tag,
            rows=frame.rows,
            rows_recorded=frame.rows_recorded,
            bytes_to_client=frame.bytes_to_client,
            duration=frame.duration,
            error=frame.error,
        )
    )
    return parts


ENCODER: Final = msgspec.msgpack.Encoder()
_FRAME_DECODER: Final[msgspec.msgpack.Decoder[KnownFrame]] = msgspec.msgpack.Decoder(KnownFrame)
_ENVELOPE_DECODER: Final = msgspec.msgpack.Decoder(Envelope)
_ANY_DECODER: Final = msgspec.msgpack.Decoder()
# msgspec reports invalid UTF-8 in a str as UnicodeDecodeError (a ValueError), not
# as DecodeError: a flipped byte inside a string must still read as "malformed".
_DECODE_ERRORS: Final = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)


def decode_envelope(payload: bytes | memoryview) -> Envelope:
    try:
        return _ENVELOPE_DECODER.decode(payload)
    except _DECODE_ERRORS as exc:
        raise FrameDecodeError(f"malformed frame envelope: {exc}") from None


def decode_frame(payload: bytes | memoryview) -> KnownFrame | UnknownFrame:
    """The frame as a Struct; an ``UnknownFrame`` for a type this reader does not know."""
    try:
        return _FRAME_DECODER.decode(payload)
    except _DECODE_ERRORS as exc:
        first_error = exc
    envelope = decode_envelope(payload)
    if envelope.t in KNOWN_TAGS:
        raise FrameDecodeError(f"malformed {envelope.t!r} frame: {first_error}")
    try:
        fields = _ANY_DECODER.decode(payload)
    except _DECODE_ERRORS as exc:
        raise FrameDecodeError(f"malformed {envelope.t!r} frame: {exc}") from None
    if not isinstance(fields, dict):  # pragma: no cover - the envelope decoded as a map
        raise FrameDecodeError("frame payload is not a map")
    return UnknownFrame(envelope.t, envelope.seq, envelope.prev, fields)


def frame_hash(prefix_and_payload: bytes | bytearray | memoryview) -> bytes:
    """Chain hash of one frame: SHA-256 over its length prefix and payload."""
    return hashlib.sha256(prefix_and_payload).digest()


def signed_message(payload: bytes | bytearray | memoryview) -> bytes:
    """The bytes an Ed25519 signature of a ckpt/end frame covers."""
    return SIGNATURE_CONTEXT + bytes(payload[:-SIGNATURE_SIZE])


def has_signature_trailer(payload: bytes | bytearray | memoryview) -> bool:
    n = len(payload) - SIGNATURE_SIZE - len(SIGNATURE_TRAILER)
    return n >= 0 and bytes(payload[n : n + len(SIGNATURE_TRAILER)]) == SIGNATURE_TRAILER


def parse_envelope_prefix(payload: bytes | bytearray | memoryview) -> tuple[str, int]:
    """(frame type, offset of the 32-byte ``prev`` value) from a payload's first bytes.

    Relies on the key order every writer of this format uses (``t``, ``seq``, ``prev``
    first): the writer thread patches ``prev`` in place, and readers peek at a frame's
    type without reading its body. Raises ``FrameDecodeError`` if the order differs.
    """
    p = payload
    n = len(p)
    if n < 1:
        raise FrameDecodeError("empty frame payload")
    b = p[0]
    if 0x80 <= b <= 0x8F:  # fixmap
        pos = 1
    elif b == 0xDE:  # map 16
        pos = 3
    elif b == 0xDF:  # map 32
        pos = 5
    else:
        raise FrameDecodeError("frame payload is not a msgpack map")
    if bytes(p[pos : pos + 2]) != b"\xa1t":
        raise FrameDecodeError("frame payload does not start with 't'")
    pos += 2
    if pos >= n:
        raise FrameDecodeError("frame payload truncated")
    b = p[pos]
    if 0xA0 <= b <= 0xBF:  # fixstr
        length, pos = b - 0xA0, pos + 1
    elif b == 0xD9 and pos + 1 < n:  # str 8
        length, pos = p[pos + 1], pos + 2
    else:
        raise FrameDecodeError("frame type is not a short string")
    tag = bytes(p[pos : pos + length]).decode("utf-8", "replace")
    pos += length
    if bytes(p[pos : pos + 4]) != b"\xa3seq":
        raise FrameDecodeError("frame payload lacks 'seq' in second place")
    pos += 4
    if pos >= n:
        raise FrameDecodeError("frame payload truncated")
    b = p[pos]
    if b < 0x80:
        pos += 1
    elif b in _UINT_SIZES:
        pos += 1 + _UINT_SIZES[b]
    else:
        raise FrameDecodeError("frame 'seq' is not an unsigned integer")
    if bytes(p[pos : pos + 7]) != b"\xa4prev\xc4\x20":
        raise FrameDecodeError("frame payload lacks a 32-byte 'prev' in third place")
    pos += 7
    if pos + HASH_SIZE > n:
        raise FrameDecodeError("frame payload truncated")
    return tag, pos


_UINT_SIZES: Final = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


def parse_header(data: bytes) -> int:
    """Validate a file header; returns the format version."""
    if len(data) < HEADER_SIZE or data[: len(MAGIC)] != MAGIC:
        raise FrameDecodeError("not a gateway recording (bad magic)")
    _, version, _flags = _HEADER_STRUCT.unpack_from(data, 0)
    if version != FORMAT_VERSION:
        raise FrameDecodeError(
            f"unsupported recording format version {version} (this reader knows {FORMAT_VERSION})"
        )
    return int(version)
