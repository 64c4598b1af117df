"""Basic data types and the generic response packets: lenenc, OK, ERR, EOF.

Spec: page_protocol_basic_dt_integers, page_protocol_basic_dt_strings,
page_protocol_basic_ok_packet, page_protocol_basic_err_packet,
page_protocol_basic_eof_packet; MariaDB KB "OK_Packet", "ERR_Packet", "EOF_Packet".

Every reader is bounds-checked: a length that points past the end of the payload
raises ``PeerViolation`` (errno 1835 ER_MALFORMED_PACKET) and never reads beyond
the buffer or returns a short value. Readers take ``(buf, pos)`` and return
``(value, new_pos)`` so callers walk a payload without slicing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct
from typing import Final, NamedTuple

from ..errors import PeerViolation, UsageError
from .constants import (
    EOF_HEADER,
    ERR_HEADER,
    LOCAL_INFILE_HEADER,
    MAX_PACKET_PAYLOAD,
    OK_HEADER,
    PROGRESS_REPORT_ERRNO,
    Capability,
    ErrorCode,
    ServerStatus,
    SessionTrackType,
)

Buffer = bytes | bytearray | memoryview

MALFORMED = int(ErrorCode.ER_MALFORMED_PACKET)

_U16 = Struct("<H")
_U32 = Struct("<I")
_U64 = Struct("<Q")
_ERR_HEAD = Struct("<BH")
_EOF = Struct("<BHH")
_STATUS_WARN = Struct("<HH")

_PROTOCOL_41 = int(Capability.CLIENT_PROTOCOL_41)
_TRANSACTIONS = int(Capability.CLIENT_TRANSACTIONS)
_SESSION_TRACK = int(Capability.CLIENT_SESSION_TRACK)
_STATE_CHANGED = int(ServerStatus.SESSION_STATE_CHANGED)
_MORE_RESULTS = int(ServerStatus.MORE_RESULTS_EXISTS)
_DEPRECATE_EOF = int(Capability.CLIENT_DEPRECATE_EOF)


def malformed(what: str) -> PeerViolation:
    return PeerViolation(f"malformed packet: {what}", MALFORMED)


# -- fixed-length integers and strings --------------------------------------------------------


def read_uint1(buf: Buffer, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise malformed("truncated int<1>")
    return buf[pos], pos + 1


def read_uint2(buf: Buffer, pos: int) -> tuple[int, int]:
    if pos + 2 > len(buf):
        raise malformed("truncated int<2>")
    return _U16.unpack_from(buf, pos)[0], pos + 2


def read_uint3(buf: Buffer, pos: int) -> tuple[int, int]:
    if pos + 3 > len(buf):
        raise malformed("truncated int<3>")
    return buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16), pos + 3


def read_uint4(buf: Buffer, pos: int) -> tuple[int, int]:
    if pos + 4 > len(buf):
        raise malformed("truncated int<4>")
    return _U32.unpack_from(buf, pos)[0], pos + 4


def read_uint8(buf: Buffer, pos: int) -> tuple[int, int]:
    if pos + 8 > len(buf):
        raise malformed("truncated int<8>")
    return _U64.unpack_from(buf, pos)[0], pos + 8


def read_fixed_string(buf: Buffer, pos: int, n: int) -> tuple[bytes, int]:
    end = pos + n
    if n < 0 or end > len(buf):
        raise malformed(f"truncated string<{n}>")
    return bytes(buf[pos:end]), end


def read_nul_string(buf: Buffer, pos: int) -> tuple[bytes, int]:
    """``string<NUL>``: bytes up to a NUL; returns the position after the NUL."""
    if isinstance(buf, memoryview):
        buf = bytes(buf)
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise malformed("unterminated string<NUL>")
    return bytes(buf[pos:end]), end + 1


def read_eof_string(buf: Buffer, pos: int) -> tuple[bytes, int]:
    """``string<EOF>``: the rest of the payload."""
    return bytes(buf[pos:]), len(buf)


# -- length-encoded integers and strings ------------------------------------------------------


def read_lenenc_int_or_null(buf: Buffer, pos: int) -> tuple[int | None, int]:
    """``int<lenenc>``; the 0xFB marker (NULL in a text row) yields ``None``.

    1 byte below 0xFB; 0xFC + 2 bytes; 0xFD + 3 bytes; 0xFE + 8 bytes; 0xFF is
    invalid (it starts an ERR packet, never an integer).
    """
    n = len(buf)
    if pos >= n:
        raise malformed("truncated int<lenenc>")
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFC:
        if pos + 3 > n:
            raise malformed("truncated int<lenenc> (0xFC)")
        return buf[pos + 1] | (buf[pos + 2] << 8), pos + 3
    if first == 0xFD:
        if pos + 4 > n:
            raise malformed("truncated int<lenenc> (0xFD)")
        return buf[pos + 1] | (buf[pos + 2] << 8) | (buf[pos + 3] << 16), pos + 4
    if first == 0xFE:
        if pos + 9 > n:
            raise malformed("truncated int<lenenc> (0xFE)")
        return _U64.unpack_from(buf, pos + 1)[0], pos + 9
    if first == 0xFB:
        return None, pos + 1
    raise malformed("0xFF is not a valid int<lenenc> prefix")


def read_lenenc_int(buf: Buffer, pos: int) -> tuple[int, int]:
    """``int<lenenc>`` where NULL is not allowed."""
    value, pos = read_lenenc_int_or_null(buf, pos)
    if value is None:
        raise malformed("unexpected NULL (0xFB) for int<lenenc>")
    return value, pos


def read_lenenc_string_or_null(buf: Buffer, pos: int) -> tuple[bytes | None, int]:
    """``string<lenenc>``; 0xFB (NULL) yields ``None``."""
    length, pos = read_lenenc_int_or_null(buf, pos)
    if length is None:
        return None, pos
    end = pos + length
    if end > len(buf):
        raise malformed(f"string<lenenc> of {length} bytes overruns the packet")
    return bytes(buf[pos:end]), end


def read_lenenc_string(buf: Buffer, pos: int) -> tuple[bytes, int]:
    length, pos = read_lenenc_int(buf, pos)
    end = pos + length
    if end > len(buf):
        raise malformed(f"string<lenenc> of {length} bytes overruns the packet")
    return bytes(buf[pos:end]), end


def skip_lenenc_string(buf: Buffer, pos: int) -> int:
    """Position after a ``string<lenenc>`` (or NULL) without copying it."""
    length, pos = read_lenenc_int_or_null(buf, pos)
    if length is None:
        return pos
    end = pos + length
    if end > len(buf):
        raise malformed(f"string<lenenc> of {length} bytes overruns the packet")
    return end


def build_lenenc_int(value: int) -> bytes:
    if value < 0:
        raise UsageError("int<lenenc> cannot be negative")
    if value < 0xFB:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + _U16.pack(value)
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    if value < 1 << 64:
        return b"\xfe" + _U64.pack(value)
    raise UsageError("int<lenenc> out of range")


def build_lenenc_string(value: Buffer | None) -> bytes:
    """``string<lenenc>``; ``None`` becomes the NULL marker 0xFB (text rows only)."""
    if value is None:
        return b"\xfb"
    return build_lenenc_int(len(value)) + bytes(value)


def lenenc_int_size(value: int) -> int:
    if value < 0xFB:
        return 1
    if value < 1 << 16:
        return 3
    if value < 1 << 24:
        return 4
    return 9


# -- OK packet ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionStateChange:
    """One entry of the session-state information (page_protocol_basic_ok_packet).

    ``data`` is the entry's ``string<lenenc>`` payload; its layout depends on
    ``type`` (system variables: lenenc name + lenenc value; schema: lenenc name...).
    """

    type: int
    data: bytes

    def system_variables(self) -> list[tuple[bytes, bytes]]:
        """(name, value) pairs of a SESSION_TRACK_SYSTEM_VARIABLES entry."""
        if self.type != SessionTrackType.SESSION_TRACK_SYSTEM_VARIABLES:
            return []
        out: list[tuple[bytes, bytes]] = []
        pos = 0
        while pos < len(self.data):
            name, pos = read_lenenc_string(self.data, pos)
            value, pos = read_lenenc_string(self.data, pos)
            out.append((name, value))
        return out

    def schema(self) -> bytes | None:
        """New default schema of a SESSION_TRACK_SCHEMA entry."""
        if self.type != SessionTrackType.SESSION_TRACK_SCHEMA:
            return None
        return read_lenenc_string(self.data, 0)[0]


class OkPacket(NamedTuple):
    """OK packet; ``header`` 0xFE is the OK that replaces EOF under CLIENT_DEPRECATE_EOF.

    A NamedTuple (one per statement's response): a frozen dataclass cost ~0.5 µs to build.
    """

    affected_rows: int = 0
    last_insert_id: int = 0
    status_flags: int = 0
    warnings: int = 0
    info: bytes = b""
    session_state_changes: tuple[SessionStateChange, ...] = ()
    header: int = OK_HEADER

    @property
    def more_results(self) -> bool:
        return bool(self.status_flags & _MORE_RESULTS)

    def tracked_schema(self) -> bytes | None:
        """The schema set by this statement (``USE db``), when the server tracks it."""
        schema: bytes | None = None
        for change in self.session_state_changes:
            new = change.schema()
            if new is not None:
                schema = new
        return schema


def parse_session_state_changes(block: Buffer) -> tuple[SessionStateChange, ...]:
    out: list[SessionStateChange] = []
    pos = 0
    while pos < len(block):
        kind, pos = read_uint1(block, pos)
        data, pos = read_lenenc_string(block, pos)
        out.append(SessionStateChange(kind, data))
    return tuple(out)


def build_session_state_changes(changes: tuple[SessionStateChange, ...]) -> bytes:
    return b"".join(bytes((c.type,)) + build_lenenc_string(c.data) for c in changes)


def parse_ok_packet(payload: Buffer, capabilities: int) -> OkPacket:
    """OK (0x00) or OK-as-EOF (0xFE) packet.

    With CLIENT_SESSION_TRACK the info is a ``string<lenenc>`` that the server omits
    when it is empty and no state changed; the state-change block follows only
    when SERVER_SESSION_STATE_CHANGED is set. Without it the info is ``string<EOF>``.
    """
    if not payload or payload[0] not in (OK_HEADER, EOF_HEADER):
        raise malformed("OK packet must start with 0x00 or 0xFE")
    if len(payload) >= MAX_PACKET_PAYLOAD:
        raise malformed("OK packet too long")
    header = payload[0]
    affected, pos = read_lenenc_int(payload, 1)
    insert_id, pos = read_lenenc_int(payload, pos)
    status = warnings = 0
    if capabilities & _PROTOCOL_41:
        status, pos = read_uint2(payload, pos)
        warnings, pos = read_uint2(payload, pos)
    elif capabilities & _TRANSACTIONS:
        status, pos = read_uint2(payload, pos)
    info = b""
    changes: tuple[SessionStateChange, ...] = ()
    if capabilities & _SESSION_TRACK:
        if pos < len(payload):
            info, pos = read_lenenc_string(payload, pos)
        if status & _STATE_CHANGED and pos < len(payload):
            block, pos = read_lenenc_string(payload, pos)
            changes = parse_session_state_changes(block)
        if pos != len(payload):
            raise malformed("trailing bytes after OK packet")
    else:
        info = bytes(payload[pos:])
    return OkPacket(affected, insert_id, status, warnings, info, changes, header)


def build_ok_packet(ok: OkPacket, capabilities: int) -> bytes:
    parts = [
        bytes((ok.header,)),
        build_lenenc_int(ok.affected_rows),
        build_lenenc_int(ok.last_insert_id),
    ]
    if capabilities & _PROTOCOL_41:
        parts.append(_STATUS_WARN.pack(ok.status_flags, ok.warnings))
    elif capabilities & _TRANSACTIONS:
        parts.append(_U16.pack(ok.status_flags))
    if capabilities & _SESSION_TRACK:
        state_changed = bool(ok.status_flags & _STATE_CHANGED)
        if state_changed or ok.info:
            parts.append(build_lenenc_string(ok.info))
        if state_changed:
            parts.append(build_lenenc_string(build_session_state_changes(ok.session_state_changes)))
        elif ok.session_state_changes:
            raise UsageError("session state changes need SESSION_STATE_CHANGED in status_flags")
    else:
        parts.append(ok.info)
    return b"".join(parts)


# -- ERR packet --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrPacket:
    errno: int
    sqlstate: str = "HY000"
    message: bytes = b""

    @property
    def text(self) -> str:
        return self.message.decode("utf-8", "replace")


def parse_err_packet(payload: Buffer) -> ErrPacket:
    """ERR packet: 0xFF, errno(2), ['#' + SQLSTATE(5)], message(EOF).

    The SQLSTATE marker is absent before CLIENT_PROTOCOL_41 is negotiated (e.g. an
    ERR sent in reply to the very first packet); the state then defaults to HY000.
    """
    if len(payload) < 3 or payload[0] != ERR_HEADER:
        raise malformed("ERR packet too short")
    _, errno = _ERR_HEAD.unpack_from(payload, 0)
    if len(payload) >= 9 and payload[3] == 0x23:  # '#'
        sqlstate = bytes(payload[4:9]).decode("ascii", "replace")
        return ErrPacket(errno, sqlstate, bytes(payload[9:]))
    return ErrPacket(errno, "HY000", bytes(payload[3:]))


def build_err_packet(
    errno: int, sqlstate: str = "HY000", message: str | bytes = b"", *, protocol_41: bool = True
) -> bytes:
    msg = message.encode("utf-8") if isinstance(message, str) else message
    if not protocol_41:
        return _ERR_HEAD.pack(ERR_HEADER, errno) + msg
    state = sqlstate.encode("ascii")
    if len(state) != 5:
        raise UsageError(f"SQLSTATE must be 5 characters, got {sqlstate!r}")
    return _ERR_HEAD.pack(ERR_HEADER, errno) + b"#" + state + msg


def is_progress_report(payload: Buffer) -> bool:
    """MariaDB progress report: an ERR-headed packet with errno 0xFFFF (MARIADB_CLIENT_PROGRESS)."""
    return len(payload) >= 3 and payload[0] == ERR_HEADER and payload[1] == payload[2] == 0xFF


@dataclass(frozen=True, slots=True)
class ProgressReport:
    stage: int
    max_stage: int
    progress: int  # thousandths of a percent
    info: bytes


def parse_progress_report(payload: Buffer) -> ProgressReport:
    """MariaDB KB "ERR_Packet": 0xFF 0xFFFF, stage(1), max_stage(1), progress(3), info lenenc."""
    if not is_progress_report(payload):
        raise malformed("not a progress report")
    stage, pos = read_uint1(payload, 3)
    max_stage, pos = read_uint1(payload, pos)
    progress, pos = read_uint3(payload, pos)
    info, pos = read_lenenc_string(payload, pos)
    return ProgressReport(stage, max_stage, progress, info)


def build_progress_report(report: ProgressReport) -> bytes:
    return (
        _ERR_HEAD.pack(ERR_HEADER, PROGRESS_REPORT_ERRNO)
        + bytes((report.stage, report.max_stage))
        + report.progress.to_bytes(3, "little")
        + build_lenenc_string(report.info)
    )


# -- EOF packet and terminators ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EofPacket:
    warnings: int = 0
    status_flags: int = 0

    @property
    def more_results(self) -> bool:
        return bool(self.status_flags & _MORE_RESULTS)


def is_eof_packet(payload: Buffer) -> bool:
    """A classic EOF packet: 0xFE and shorter than 9 bytes."""
    return 0 < len(payload) < 9 and payload[0] == EOF_HEADER


def is_terminator(payload: Buffer) -> bool:
    """EOF or OK-as-EOF: 0xFE and a logical length below 0xFFFFFF.

    A text row can only start with 0xFE as the 8-byte length prefix of a value of
    at least 2**24 bytes, which makes the row longer than 0xFFFFFF.
    """
    return 0 < len(payload) < MAX_PACKET_PAYLOAD and payload[0] == EOF_HEADER


# EOF packets and result-set terminators repeat (a handful of status-flag combinations, no
# row counts after a SELECT): their parsed forms, immutable, are shared per payload, at most
# _SHARED of each, so the two that end every result set are not parsed again every time.
_EOFS: dict[bytes, EofPacket] = {}
_TERMINATORS: dict[tuple[bytes, int], OkPacket] = {}
_SHARED: Final = 64
_SHAREABLE: Final = 16  # payload bytes


def parse_eof_packet(payload: Buffer) -> EofPacket:
    shareable = type(payload) is bytes
    if shareable:
        found = _EOFS.get(payload)  # type: ignore[arg-type]
        if found is not None:
            return found
    eof = _parse_eof_packet(payload)
    if shareable and len(_EOFS) < _SHARED:
        _EOFS[payload] = eof  # type: ignore[index]
    return eof


def _parse_eof_packet(payload: Buffer) -> EofPacket:
    if not is_eof_packet(payload):
        raise malformed("EOF packet must be 0xFE and shorter than 9 bytes")
    if len(payload) == 1:  # pre-4.1 EOF
        return EofPacket()
    if len(payload) != 5:
        raise malformed("EOF packet must be 5 bytes")
    _, warnings, status = _EOF.unpack_from(payload, 0)
    return EofPacket(warnings, status)


def build_eof_packet(warnings: int = 0, status_flags: int = 0) -> bytes:
    return _EOF.pack(EOF_HEADER, warnings, status_flags)


def parse_terminator(payload: Buffer, capabilities: int) -> OkPacket:
    """End of a result set as an ``OkPacket`` (header 0xFE) in either form.

    Under CLIENT_DEPRECATE_EOF the terminator is an OK packet with a 0xFE header;
    otherwise it is a classic EOF, mapped to an OK without row counts.
    """
    key = (payload, capabilities) if type(payload) is bytes and len(payload) <= _SHAREABLE else None
    if key is not None:
        found = _TERMINATORS.get(key)
        if found is not None:
            return found
    ok = _parse_terminator(payload, capabilities)
    if key is not None and len(_TERMINATORS) < _SHARED:
        _TERMINATORS[key] = ok
    return ok


def _parse_terminator(payload: Buffer, capabilities: int) -> OkPacket:
    if capabilities & _DEPRECATE_EOF:
        if not is_terminator(payload):
            raise malformed("expected an OK packet with a 0xFE header")
        return parse_ok_packet(payload, capabilities)
    eof = parse_eof_packet(payload)
    return OkPacket(status_flags=eof.status_flags, warnings=eof.warnings, header=EOF_HEADER)


def build_terminator(ok: OkPacket, capabilities: int) -> bytes:
    """EOF or OK-with-0xFE-header, whichever the negotiated capabilities call for."""
    if capabilities & _DEPRECATE_EOF:
        return build_ok_packet(
            OkPacket(
                ok.affected_rows,
                ok.last_insert_id,
                ok.status_flags,
                ok.warnings,
                ok.info,
                ok.session_state_changes,
                EOF_HEADER,
            ),
            capabilities,
        )
    return build_eof_packet(ok.warnings, ok.status_flags)


# -- LOCAL INFILE request ----------------------------------------------------------------------


def parse_local_infile_request(payload: Buffer) -> bytes:
    """0xFB + file name (page_protocol_com_query_response_local_infile_request)."""
    if not payload or payload[0] != LOCAL_INFILE_HEADER:
        raise malformed("LOCAL INFILE request must start with 0xFB")
    return bytes(payload[1:])


def build_local_infile_request(filename: bytes) -> bytes:
    return bytes((LOCAL_INFILE_HEADER,)) + filename
