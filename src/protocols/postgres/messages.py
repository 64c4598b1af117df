"""Codecs for the PostgreSQL messages the gateway reads or writes itself.

Everything else is forwarded as opaque bytes. Parsers take the message *body*
(without type byte and length) and are bounds-checked: malformed bodies raise
``PeerViolation`` with SQLSTATE 08P01, never IndexError or over-reads.

Spec: PostgreSQL manual, "Message Formats".
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from struct import Struct
from typing import Final, NamedTuple

from ..errors import PeerViolation
from .constants import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    PROTOCOL_2_0,
    SSL_REQUEST_CODE,
    Backend,
    SqlState,
)
from .framing import build_message, build_untyped

_I16 = Struct("!h")
_I32 = Struct("!i")
_U32 = Struct("!I")
_II = Struct("!II")


# -- small readers --------------------------------------------------------------


def read_cstring(body: bytes, pos: int) -> tuple[bytes, int]:
    """A NUL-terminated string starting at ``pos``; returns (value, next position)."""
    end = body.find(b"\x00", pos)
    if end < 0:
        raise PeerViolation("unterminated string in message", SqlState.PROTOCOL_VIOLATION)
    return body[pos:end], end + 1


def _read_i16(body: bytes, pos: int) -> tuple[int, int]:
    if pos + 2 > len(body):
        raise PeerViolation("message truncated", SqlState.PROTOCOL_VIOLATION)
    return _I16.unpack_from(body, pos)[0], pos + 2


def _read_i32(body: bytes, pos: int) -> tuple[int, int]:
    if pos + 4 > len(body):
        raise PeerViolation("message truncated", SqlState.PROTOCOL_VIOLATION)
    return _I32.unpack_from(body, pos)[0], pos + 4


# -- first packet (untyped) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartupMessage:
    version: int
    parameters: dict[str, str]


@dataclass(frozen=True, slots=True)
class SSLRequest:
    pass


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    pass


@dataclass(frozen=True, slots=True)
class CancelRequest:
    process_id: int
    secret_key: bytes  # 4 bytes in protocol 3.0, 4..256 in 3.2


FirstPacket = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest

MAX_STARTUP_PACKET = 10_000  # the server's own limit (MAX_STARTUP_PACKET_LENGTH)


def first_packet_length(header: bytes) -> int:
    """Validate the int32 length of an untyped first packet (header = 4 bytes)."""
    length: int = _I32.unpack_from(header, 0)[0]
    if length < 8 or length > MAX_STARTUP_PACKET:
        raise PeerViolation(f"invalid startup packet length {length}", SqlState.PROTOCOL_VIOLATION)
    return length


def parse_first_packet(packet: bytes) -> FirstPacket:
    """Parse a whole untyped first packet, including its 4-byte length."""
    if len(packet) < 8:
        raise PeerViolation("startup packet truncated", SqlState.PROTOCOL_VIOLATION)
    code = _U32.unpack_from(packet, 4)[0]
    body = packet[8:]
    if code == SSL_REQUEST_CODE and not body:
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE and not body:
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        if len(body) < 8 or len(body) > 4 + 256:
            raise PeerViolation("malformed cancel request", SqlState.PROTOCOL_VIOLATION)
        return CancelRequest(_U32.unpack_from(body, 0)[0], bytes(body[4:]))
    major = code >> 16
    if code == PROTOCOL_2_0 or major != 3:
        raise PeerViolation(
            f"unsupported frontend protocol {major}.{code & 0xFFFF}: server supports 3.0 to 3.0",
            SqlState.FEATURE_NOT_SUPPORTED,
        )
    return StartupMessage(code, parse_startup_parameters(body))


def startup_options(value: str) -> list[tuple[str, str]] | None:
    """The settings in a startup packet's ``options`` (libpq's PGOPTIONS): ``-c name=value``
    and ``--name=value``, separated by spaces (a backslash escapes the next character).
    None if it holds anything else (other server switches: refused)."""
    words: list[str] = []
    word: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            word.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in " \t\n\r\f\v":
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(ch)
    if escaped:
        return None
    if word:
        words.append("".join(word))
    settings: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w == "-c" and i + 1 < len(words):
            pair, i = words[i + 1], i + 2
        elif len(w) > 2 and w[:2] in ("-c", "--"):
            pair, i = w[2:], i + 1
        else:
            return None
        name, eq, setting = pair.partition("=")
        if not eq or not name:
            return None
        settings.append((name.replace("-", "_"), setting))
    return settings


def parse_startup_parameters(body: bytes) -> dict[str, str]:
    params: dict[str, str] = {}
    pos = 0
    while True:
        key, pos = read_cstring(body, pos)
        if not key:
            break
        value, pos = read_cstring(body, pos)
        try:
            params[key.decode()] = value.decode()
        except UnicodeDecodeError:
            raise PeerViolation(
                "startup parameter is not valid UTF-8", SqlState.PROTOCOL_VIOLATION
            ) from None
    if pos != len(body):
        raise PeerViolation("trailing bytes after startup parameters", SqlState.PROTOCOL_VIOLATION)
    return params


def build_startup_message(parameters: dict[str, str], version: int = 196608) -> bytes:
    body = bytearray(_U32.pack(version))
    for key, value in parameters.items():
        body += key.encode() + b"\x00" + value.encode() + b"\x00"
    body += b"\x00"
    return build_untyped(bytes(body))


def build_ssl_request() -> bytes:
    return build_untyped(_U32.pack(SSL_REQUEST_CODE))


def build_cancel_request(process_id: int, secret_key: bytes) -> bytes:
    return build_untyped(_U32.pack(CANCEL_REQUEST_CODE) + _U32.pack(process_id) + secret_key)


def build_negotiate_protocol_version(newest_minor: int, unrecognized: list[str]) -> bytes:
    body = _I32.pack(newest_minor) + _I32.pack(len(unrecognized))
    body += b"".join(name.encode() + b"\x00" for name in unrecognized)
    return build_message(Backend.NEGOTIATE_PROTOCOL_VERSION, body)


# -- backend messages -------------------------------------------------------------


def build_backend_key_data(process_id: int, secret_key: bytes) -> bytes:
    return build_message(Backend.BACKEND_KEY_DATA, _U32.pack(process_id) + secret_key)


def parse_backend_key_data(body: bytes) -> tuple[int, bytes]:
    if len(body) < 8 or len(body) > 4 + 256:
        raise PeerViolation("malformed BackendKeyData", SqlState.PROTOCOL_VIOLATION)
    return _U32.unpack_from(body, 0)[0], bytes(body[4:])


def build_parameter_status(name: str, value: str) -> bytes:
    return build_message(
        Backend.PARAMETER_STATUS, name.encode() + b"\x00" + value.encode() + b"\x00"
    )


def parse_parameter_status(body: bytes) -> tuple[str, str]:
    name, pos = read_cstring(body, 0)
    value, _ = read_cstring(body, pos)
    return name.decode(errors="replace"), value.decode(errors="replace")


def build_ready_for_query(status: int) -> bytes:
    return build_message(Backend.READY_FOR_QUERY, bytes((status,)))


def build_error_response(
    code: str,
    message: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    """ErrorResponse with the fields every client expects (S, V, C, M)."""
    return build_message(
        Backend.ERROR_RESPONSE, _notice_fields(code, message, severity, detail, hint)
    )


def build_notice_response(
    code: str, message: str, *, severity: str = "NOTICE", detail: str | None = None
) -> bytes:
    """NoticeResponse: legal at any point of the backend stream, between any messages."""
    return build_message(
        Backend.NOTICE_RESPONSE, _notice_fields(code, message, severity, detail, None)
    )


def build_command_complete(tag: str) -> bytes:
    return build_message(Backend.COMMAND_COMPLETE, tag.encode() + b"\x00")


def _notice_fields(
    code: str, message: str, severity: str, detail: str | None, hint: str | None
) -> bytes:
    parts = [b"S" + severity.encode(), b"V" + severity.encode(), b"C" + code.encode()]
    parts.append(b"M" + message.encode())
    if detail:
        parts.append(b"D" + detail.encode())
    if hint:
        parts.append(b"H" + hint.encode())
    return b"\x00".join(parts) + b"\x00\x00"


def parse_error_fields(body: bytes) -> dict[str, str]:
    """Fields of an ErrorResponse / NoticeResponse keyed by their one-letter code."""
    fields: dict[str, str] = {}
    pos = 0
    n = len(body)
    while pos < n:
        code = body[pos]
        if code == 0:
            break
        value, pos = read_cstring(body, pos + 1)
        fields[chr(code)] = value.decode(errors="replace")
    return fields


def parse_command_complete(body: bytes) -> str:
    tag, _ = read_cstring(body, 0)
    return tag.decode(errors="replace")


def command_tag_rows(tag: str) -> int | None:
    """Row count from a CommandComplete tag (``SELECT 5``, ``INSERT 0 3``, ``COPY 7``)."""
    last = tag.rpartition(" ")[2]
    return int(last) if last.isdigit() else None


# -- frontend messages the gateway inspects --------------------------------------


def parse_query(body: bytes) -> bytes:
    text, _ = read_cstring(body, 0)
    return text


def parse_parse(body: bytes) -> tuple[bytes, bytes]:
    """Parse message: (statement name, query text); parameter type OIDs ignored."""
    name, pos = read_cstring(body, 0)
    query, pos = read_cstring(body, pos)
    count, pos = _read_i16(body, pos)
    if count < 0 or pos + 4 * count != len(body):
        raise PeerViolation("malformed Parse message", SqlState.PROTOCOL_VIOLATION)
    return name, query


class Bind(NamedTuple):
    """A parsed Bind. A NamedTuple, not a frozen dataclass: one is made per execution on
    the extended-protocol hot path, and a frozen dataclass costs ~0.4 µs more to build."""

    portal: bytes
    statement: bytes
    parameter_formats: tuple[int, ...]
    parameters: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]

    def parameter_format(self, index: int) -> int:
        formats = self.parameter_formats
        if not formats:
            return 0
        return formats[0] if len(formats) == 1 else formats[index]


def parse_bind_statement(body: bytes) -> bytes:
    """Only the statement name of a Bind (its second field)."""
    _, pos = read_cstring(body, 0)
    name, _ = read_cstring(body, pos)
    return name


def parse_bind_py(body: bytes) -> Bind:
    """The pure-Python ``parse_bind``: the reference the compiled one (``_wire.parse_bind``)
    is tested against."""
    # The two names inline (read_cstring twice): this runs once per execution.
    end = body.find(b"\x00")
    stop = body.find(b"\x00", end + 1) if end >= 0 else -1
    if stop < 0:
        raise PeerViolation("unterminated string in message", SqlState.PROTOCOL_VIOLATION)
    portal = body[:end]
    statement = body[end + 1 : stop]
    pos = stop + 1
    n = len(body)
    formats, pos = _read_i16_array(body, pos, n)
    if pos + 2 > n:
        raise PeerViolation("malformed Bind message", SqlState.PROTOCOL_VIOLATION)
    nparams = _I16.unpack_from(body, pos)[0]
    pos += 2
    if nparams < 0 or (len(formats) > 1 and len(formats) != nparams):
        raise PeerViolation("malformed Bind message", SqlState.PROTOCOL_VIOLATION)
    params: list[bytes | None] = []
    unpack_i32 = _I32.unpack_from
    for _ in range(nparams):
        if pos + 4 > n:
            raise PeerViolation("malformed Bind message", SqlState.PROTOCOL_VIOLATION)
        length = unpack_i32(body, pos)[0]
        pos += 4
        if length == -1:
            params.append(None)
            continue
        if length < 0 or pos + length > n:
            raise PeerViolation("malformed Bind parameter length", SqlState.PROTOCOL_VIOLATION)
        params.append(body[pos : pos + length])
        pos += length
    results, pos = _read_i16_array(body, pos, n)
    if pos != n:
        raise PeerViolation("trailing bytes in Bind message", SqlState.PROTOCOL_VIOLATION)
    return Bind(portal, statement, formats, tuple(params), results)


def _read_i16_array(body: bytes, pos: int, n: int) -> tuple[tuple[int, ...], int]:
    """An int16 count followed by that many int16 values (format-code lists)."""
    if pos + 2 > n:
        raise PeerViolation("malformed Bind message", SqlState.PROTOCOL_VIOLATION)
    count = _I16.unpack_from(body, pos)[0]
    pos += 2
    if count < 0 or pos + 2 * count > n:
        raise PeerViolation("malformed Bind message", SqlState.PROTOCOL_VIOLATION)
    if count == 0:
        return (), pos
    # Compiled once for the usual counts (up to 16 format codes); struct's module-level
    # functions cache other formats too, but looking one up costs a formatted string.
    unpack = _I16_ARRAYS[count].unpack_from if count < len(_I16_ARRAYS) else None
    if unpack is None:
        values: tuple[int, ...] = struct.unpack_from(f"!{count}h", body, pos)
    else:
        values = unpack(body, pos)
    return values, pos + 2 * count


_I16_ARRAYS: Final = tuple(Struct(f"!{count}h") for count in range(17))


def _bind_violation(message: str) -> PeerViolation:
    return PeerViolation(message, SqlState.PROTOCOL_VIOLATION)


# A Bind parsed and validated (lying parameter lengths are a protocol violation), once per
# extended-protocol execution: the compiled parser (_wire.c) where it was built, else
# parse_bind_py; both give the same Bind and the same errors.
parse_bind: Callable[[bytes], Bind]
try:
    from ._wire import parse_bind as _compiled_parse_bind

    parse_bind = partial(_compiled_parse_bind, Bind, _bind_violation)
except ImportError:  # pragma: no cover - depends on the build
    parse_bind = parse_bind_py


# Describe and Execute come with every extended-protocol execution: read inline, not
# through read_cstring/_read_i32 (same checks, same errors, a third of the bytecode).


def parse_describe_or_close(body: bytes) -> tuple[int, bytes]:
    """Describe / Close: (kind byte 'S' or 'P', name)."""
    if not body or body[0] not in _DESCRIBE_KINDS:
        raise PeerViolation("malformed Describe/Close message", SqlState.PROTOCOL_VIOLATION)
    end = body.find(0, 1)
    if end < 0:
        raise PeerViolation("unterminated string in message", SqlState.PROTOCOL_VIOLATION)
    return body[0], body[1:end]


def parse_execute(body: bytes) -> tuple[bytes, int]:
    end = body.find(0)
    if end < 0:
        raise PeerViolation("unterminated string in message", SqlState.PROTOCOL_VIOLATION)
    if end + 5 > len(body):
        raise PeerViolation("message truncated", SqlState.PROTOCOL_VIOLATION)
    return body[:end], _I32.unpack_from(body, end + 1)[0]


_DESCRIBE_KINDS: Final = (ord("S"), ord("P"))
