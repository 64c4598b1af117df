"""Connection-phase packets: HandshakeV10, SSLRequest, HandshakeResponse41, auth switch.

Spec: page_protocol_connection_phase_packets_protocol_handshake_v10,
page_protocol_connection_phase_packets_protocol_ssl_request,
page_protocol_connection_phase_packets_protocol_handshake_response,
page_protocol_connection_phase_packets_protocol_auth_switch_request,
page_protocol_connection_phase_packets_protocol_auth_more_data;
MariaDB KB "Connection" (extended capabilities).

MariaDB extended capabilities (bits 32..63 of ``capabilities``) travel in the last
4 of the 10 reserved bytes of HandshakeV10 and in the last 4 of the 23 filler
bytes of SSLRequest / HandshakeResponse41, and only when bit 0 (CLIENT_MYSQL) is
cleared. Builders enforce that: extended bits with CLIENT_MYSQL set are a usage error.

A truncated or malformed connection-phase packet raises ``PeerViolation`` with
errno 1043 (ER_HANDSHAKE_ERROR, "Bad handshake").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from struct import Struct
from typing import ParamSpec, TypeVar

from ..errors import PeerViolation, UsageError
from .constants import (
    AUTH_MORE_DATA_HEADER,
    AUTH_SWITCH_HEADER,
    CLIENT_MYSQL,
    MARIADB_CAPABILITIES_MASK,
    PROTOCOL_VERSION_10,
    Capability,
    ErrorCode,
)
from .packets import (
    Buffer,
    build_lenenc_int,
    build_lenenc_string,
    read_fixed_string,
    read_lenenc_int,
    read_lenenc_string,
    read_nul_string,
    read_uint1,
    read_uint2,
    read_uint4,
)

HANDSHAKE_ERROR = int(ErrorCode.ER_HANDSHAKE_ERROR)
SSL_REQUEST_SIZE = 32

_U16 = Struct("<H")
_U32 = Struct("<I")
_PREFIX = Struct("<IIB")  # caps, max packet, charset (SSLRequest / HandshakeResponse41)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _handshake_errors(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Re-raise malformed-packet errors as ER_HANDSHAKE_ERROR."""

    @wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except PeerViolation as exc:
            raise PeerViolation(exc.message, HANDSHAKE_ERROR) from exc

    return wrapper


def _check_mariadb_bits(capabilities: int) -> None:
    if capabilities & MARIADB_CAPABILITIES_MASK and capabilities & CLIENT_MYSQL:
        raise UsageError("MariaDB extended capabilities require CLIENT_MYSQL (bit 0) cleared")


def _extended_caps_bytes(capabilities: int) -> bytes:
    if capabilities & CLIENT_MYSQL:
        return b"\x00\x00\x00\x00"
    return _U32.pack((capabilities >> 32) & 0xFFFFFFFF)


# -- HandshakeV10 ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeV10:
    server_version: bytes
    connection_id: int
    auth_plugin_data: bytes  # the scramble (normally 20 bytes), without the trailing NUL
    capabilities: int  # 64-bit: MariaDB extended capabilities in the upper half
    charset: int
    status_flags: int
    auth_plugin_name: bytes

    @property
    def is_mariadb(self) -> bool:
        return b"MariaDB" in self.server_version


def build_handshake_v10(hs: HandshakeV10) -> bytes:
    """The server greeting (gateway -> client)."""
    caps = hs.capabilities
    _check_mariadb_bits(caps)
    data = hs.auth_plugin_data
    if len(data) < 8:
        raise UsageError("auth_plugin_data must be at least 8 bytes")
    if b"\x00" in hs.server_version or b"\x00" in hs.auth_plugin_name:
        raise UsageError("NUL inside a NUL-terminated field")
    part2 = data[8:] + b"\x00"
    part2 += b"\x00" * (13 - len(part2)) if len(part2) < 13 else b""
    plugin_auth = bool(caps & Capability.CLIENT_PLUGIN_AUTH)
    return b"".join(
        (
            bytes((PROTOCOL_VERSION_10,)),
            hs.server_version,
            b"\x00",
            _U32.pack(hs.connection_id),
            data[:8],
            b"\x00",
            _U16.pack(caps & 0xFFFF),
            bytes((hs.charset,)),
            _U16.pack(hs.status_flags),
            _U16.pack((caps >> 16) & 0xFFFF),
            bytes((len(data) + 1 if plugin_auth else 0,)),
            b"\x00" * 6,
            _extended_caps_bytes(caps),
            part2 if caps & Capability.CLIENT_SECURE_CONNECTION else b"",
            hs.auth_plugin_name + b"\x00" if plugin_auth else b"",
        )
    )


@_handshake_errors
def parse_handshake_v10(payload: Buffer) -> HandshakeV10:
    """The server greeting (upstream -> gateway). A leading 0xFF is an ERR, not a greeting."""
    if not payload:
        raise PeerViolation("empty handshake packet")
    if payload[0] != PROTOCOL_VERSION_10:
        raise PeerViolation(f"unsupported handshake protocol version {payload[0]}")
    version, pos = read_nul_string(payload, 1)
    conn_id, pos = read_uint4(payload, pos)
    part1, pos = read_fixed_string(payload, pos, 8)
    _, pos = read_uint1(payload, pos)  # filler
    caps, pos = read_uint2(payload, pos)
    if pos == len(payload):  # very old server: nothing after the low capabilities
        return HandshakeV10(version, conn_id, part1, caps, 0, 0, b"")
    charset, pos = read_uint1(payload, pos)
    status, pos = read_uint2(payload, pos)
    caps_high, pos = read_uint2(payload, pos)
    caps |= caps_high << 16
    data_len, pos = read_uint1(payload, pos)
    _, pos = read_fixed_string(payload, pos, 6)
    ext, pos = read_uint4(payload, pos)
    if not caps & CLIENT_MYSQL:
        caps |= ext << 32
    scramble = part1
    if caps & Capability.CLIENT_SECURE_CONNECTION:
        part2, pos = read_fixed_string(payload, pos, max(13, data_len - 8))
        # part 2 is NUL-terminated; the scramble is part1 + part2 without that NUL
        if part2.endswith(b"\x00"):
            part2 = part2[:-1]
        scramble = part1 + part2
    plugin = b""
    if caps & Capability.CLIENT_PLUGIN_AUTH:
        # NUL-terminated, but some servers omit the final NUL (MySQL bug #59453).
        rest = bytes(payload[pos:])
        plugin = rest.split(b"\x00", 1)[0]
    return HandshakeV10(version, conn_id, scramble, caps, charset, status, plugin)


# -- SSLRequest --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SslRequest:
    capabilities: int
    max_packet_size: int
    charset: int


def is_ssl_request(payload: Buffer) -> bool:
    """A 32-byte first client packet with CLIENT_SSL set (vs a full HandshakeResponse41)."""
    return len(payload) == SSL_REQUEST_SIZE and bool(
        _U32.unpack_from(payload, 0)[0] & Capability.CLIENT_SSL
    )


def _build_prefix(capabilities: int, max_packet_size: int, charset: int) -> bytes:
    _check_mariadb_bits(capabilities)
    return (
        _PREFIX.pack(capabilities & 0xFFFFFFFF, max_packet_size, charset)
        + b"\x00" * 19
        + _extended_caps_bytes(capabilities)
    )


def _parse_prefix(payload: Buffer) -> tuple[int, int, int, int]:
    if len(payload) < SSL_REQUEST_SIZE:
        raise PeerViolation("truncated handshake response")
    caps, max_packet, charset = _PREFIX.unpack_from(payload, 0)
    if not caps & CLIENT_MYSQL:
        caps |= _U32.unpack_from(payload, 28)[0] << 32
    return caps, max_packet, charset, SSL_REQUEST_SIZE


def build_ssl_request(req: SslRequest) -> bytes:
    return _build_prefix(req.capabilities | Capability.CLIENT_SSL, req.max_packet_size, req.charset)


@_handshake_errors
def parse_ssl_request(payload: Buffer) -> SslRequest:
    if len(payload) != SSL_REQUEST_SIZE:
        raise PeerViolation(f"SSLRequest must be {SSL_REQUEST_SIZE} bytes")
    caps, max_packet, charset, _ = _parse_prefix(payload)
    if not caps & Capability.CLIENT_SSL:
        raise PeerViolation("SSLRequest without CLIENT_SSL")
    return SslRequest(caps, max_packet, charset)


# -- HandshakeResponse41 -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeResponse41:
    capabilities: int
    max_packet_size: int
    charset: int
    username: bytes
    auth_response: bytes = b""
    database: bytes | None = None  # with CLIENT_CONNECT_WITH_DB
    auth_plugin_name: bytes | None = None  # with CLIENT_PLUGIN_AUTH
    connect_attrs: tuple[tuple[bytes, bytes], ...] = ()  # with CLIENT_CONNECT_ATTRS
    zstd_level: int | None = None  # with CLIENT_ZSTD_COMPRESSION_ALGORITHM


def build_handshake_response41(resp: HandshakeResponse41) -> bytes:
    caps = resp.capabilities
    parts = [_build_prefix(caps, resp.max_packet_size, resp.charset), resp.username, b"\x00"]
    auth = resp.auth_response
    if caps & Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        parts.append(build_lenenc_string(auth))
    elif caps & Capability.CLIENT_SECURE_CONNECTION:
        if len(auth) > 255:
            raise UsageError("auth response > 255 bytes needs PLUGIN_AUTH_LENENC_CLIENT_DATA")
        parts += (bytes((len(auth),)), auth)
    else:
        parts += (auth, b"\x00")
    if caps & Capability.CLIENT_CONNECT_WITH_DB:
        parts += (resp.database or b"", b"\x00")
    if caps & Capability.CLIENT_PLUGIN_AUTH:
        parts += (resp.auth_plugin_name or b"", b"\x00")
    if caps & Capability.CLIENT_CONNECT_ATTRS:
        block = b"".join(
            build_lenenc_string(k) + build_lenenc_string(v) for k, v in resp.connect_attrs
        )
        parts += (build_lenenc_int(len(block)), block)
    if caps & Capability.CLIENT_ZSTD_COMPRESSION_ALGORITHM:
        parts.append(bytes((resp.zstd_level or 0,)))
    return b"".join(parts)


def _parse_connect_attrs(payload: Buffer, pos: int) -> tuple[tuple[tuple[bytes, bytes], ...], int]:
    total, pos = read_lenenc_int(payload, pos)
    end = pos + total
    if end > len(payload):
        raise PeerViolation("connect attributes overrun the packet")
    block = bytes(payload[pos:end])
    attrs: list[tuple[bytes, bytes]] = []
    p = 0
    while p < len(block):
        key, p = read_lenenc_string(block, p)
        value, p = read_lenenc_string(block, p)
        attrs.append((key, value))
    return tuple(attrs), end


@_handshake_errors
def parse_handshake_response41(payload: Buffer) -> HandshakeResponse41:
    """The client's login packet.

    Optional trailing fields whose capability is set but which are missing at the
    very end of the packet are tolerated (``None``), as the server does; a field
    that is present but cut short is a violation.
    """
    caps, max_packet, charset, pos = _parse_prefix(payload)
    if not caps & Capability.CLIENT_PROTOCOL_41:
        raise PeerViolation("client does not support CLIENT_PROTOCOL_41")
    username, pos = read_nul_string(payload, pos)
    if caps & Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth, pos = read_lenenc_string(payload, pos)
    elif caps & Capability.CLIENT_SECURE_CONNECTION:
        n, pos = read_uint1(payload, pos)
        auth, pos = read_fixed_string(payload, pos, n)
    else:
        auth, pos = read_nul_string(payload, pos)
    n = len(payload)
    database: bytes | None = None
    if caps & Capability.CLIENT_CONNECT_WITH_DB and pos < n:
        database, pos = read_nul_string(payload, pos)
    plugin: bytes | None = None
    if caps & Capability.CLIENT_PLUGIN_AUTH and pos < n:
        plugin, pos = read_nul_string(payload, pos)
    attrs: tuple[tuple[bytes, bytes], ...] = ()
    if caps & Capability.CLIENT_CONNECT_ATTRS and pos < n:
        attrs, pos = _parse_connect_attrs(payload, pos)
    zstd: int | None = None
    if caps & Capability.CLIENT_ZSTD_COMPRESSION_ALGORITHM and pos < n:
        zstd, pos = read_uint1(payload, pos)
    if pos != n:
        raise PeerViolation("trailing bytes after HandshakeResponse41")
    return HandshakeResponse41(
        caps, max_packet, charset, username, auth, database, plugin, attrs, zstd
    )


# -- auth switch and more data -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthSwitchRequest:
    plugin_name: bytes
    plugin_data: bytes  # as sent; native/caching_sha2 send the 20-byte scramble + NUL


OLD_PASSWORD_PLUGIN = b"mysql_old_password"


def build_auth_switch_request(plugin_name: bytes, plugin_data: bytes) -> bytes:
    if b"\x00" in plugin_name:
        raise UsageError("NUL inside plugin name")
    return bytes((AUTH_SWITCH_HEADER,)) + plugin_name + b"\x00" + plugin_data


@_handshake_errors
def parse_auth_switch_request(payload: Buffer) -> AuthSwitchRequest:
    if not payload or payload[0] != AUTH_SWITCH_HEADER:
        raise PeerViolation("AuthSwitchRequest must start with 0xFE")
    if len(payload) == 1:  # "Old Authentication Method Switch Request" (pre-4.1 hashing)
        return AuthSwitchRequest(OLD_PASSWORD_PLUGIN, b"")
    name, pos = read_nul_string(payload, 1)
    return AuthSwitchRequest(name, bytes(payload[pos:]))


def build_auth_more_data(data: bytes) -> bytes:
    return bytes((AUTH_MORE_DATA_HEADER,)) + data


@_handshake_errors
def parse_auth_more_data(payload: Buffer) -> bytes:
    if not payload or payload[0] != AUTH_MORE_DATA_HEADER:
        raise PeerViolation("AuthMoreData must start with 0x01")
    return bytes(payload[1:])


def build_auth_switch_response(data: bytes) -> bytes:
    """AuthSwitchResponse: the plugin's data as the whole payload."""
    return bytes(data)


def parse_auth_switch_response(payload: Buffer) -> bytes:
    return bytes(payload)
