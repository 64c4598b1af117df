"""HandshakeV10, SSLRequest, HandshakeResponse41, AuthSwitchRequest, AuthMoreData."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import PeerViolation, UsageError
from protocols.mysql.constants import Capability, Charset
from protocols.mysql.handshake import (
    AuthSwitchRequest,
    HandshakeResponse41,
    HandshakeV10,
    SslRequest,
    build_auth_more_data,
    build_auth_switch_request,
    build_handshake_response41,
    build_handshake_v10,
    build_ssl_request,
    is_ssl_request,
    parse_auth_more_data,
    parse_auth_switch_request,
    parse_handshake_response41,
    parse_handshake_v10,
    parse_ssl_request,
)

C = Capability
BAD_HANDSHAKE = 1043
# MariaDB 10.11 greeting (captured; see test_mysql_transcripts.py).
GREETING = bytes.fromhex(
    "0a352e352e352d31302e31312e31392d4d6172696144422d302b6465623132753100130000007052"
    "29722766514000fef72d0200ff81150000000000001d0000002e62283b31245c284f37636c006d7973716c5f"
    "6e61746976655f70617373776f726400"
)
BASE_CLIENT = C.CLIENT_PROTOCOL_41 | C.CLIENT_SECURE_CONNECTION | C.CLIENT_PLUGIN_AUTH
no_nul = st.binary(max_size=40).filter(lambda b: b"\x00" not in b)


def test_parse_captured_greeting() -> None:
    hs = parse_handshake_v10(GREETING)
    assert hs.server_version == b"5.5.5-10.11.19-MariaDB-0+deb12u1"
    assert hs.connection_id == 0x13
    assert hs.charset == Charset.UTF8MB4_GENERAL_CI
    assert hs.status_flags == 2
    assert hs.capabilities >> 32 == 0x1D  # PROGRESS, STMT_BULK, EXTENDED_METADATA, CACHE_METADATA
    assert build_handshake_v10(hs) == GREETING


def test_truncated_greeting_is_bad_handshake() -> None:
    hs = parse_handshake_v10(GREETING)
    for n in range(len(GREETING)):
        prefix = GREETING[:n]
        try:
            got = parse_handshake_v10(prefix)
        except PeerViolation as exc:
            assert exc.code == BAD_HANDSHAKE
        else:
            # Only a pre-4.1 greeting (ending after the low capabilities) or a plugin name
            # missing its NUL (MySQL bug #59453) may end early.
            assert n == len(hs.server_version) + 17 or n >= len(GREETING) - 22
            assert got.server_version == hs.server_version


def test_greeting_errors() -> None:
    for bad in (b"", b"\x09abc", b"\xff\x10\x04Too many connections"):
        with pytest.raises(PeerViolation) as exc:
            parse_handshake_v10(bad)
        assert exc.value.code == BAD_HANDSHAKE


server_caps = st.integers(0, 0xFFFFFFFF).map(
    lambda c: c | C.CLIENT_PROTOCOL_41 | C.CLIENT_SECURE_CONNECTION | C.CLIENT_PLUGIN_AUTH
)


@given(
    no_nul,
    st.integers(0, 2**32 - 1),
    st.binary(min_size=20, max_size=20),
    server_caps,
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    no_nul,
)
def test_handshake_v10_round_trip(
    version: bytes,
    conn_id: int,
    scramble: bytes,
    caps: int,
    mariadb: int,
    charset: int,
    status: int,
    plugin: bytes,
) -> None:
    if not caps & C.CLIENT_LONG_PASSWORD:
        caps |= mariadb << 32  # extended caps only travel with CLIENT_MYSQL cleared
    hs = HandshakeV10(version, conn_id, scramble, caps, charset, status, plugin)
    assert parse_handshake_v10(build_handshake_v10(hs)) == hs


def test_mariadb_caps_need_client_mysql_cleared() -> None:
    hs = HandshakeV10(
        b"v", 1, b"x" * 20, C.CLIENT_LONG_PASSWORD | C.MARIADB_CLIENT_PROGRESS, 45, 2, b"p"
    )
    with pytest.raises(UsageError):
        build_handshake_v10(hs)


# -- SSLRequest ----------------------------------------------------------------------------------


def test_ssl_request() -> None:
    req = SslRequest(BASE_CLIENT | C.MARIADB_CLIENT_EXTENDED_METADATA, 1 << 24, 45)
    data = build_ssl_request(req)
    assert len(data) == 32 and is_ssl_request(data)
    got = parse_ssl_request(data)
    assert got.capabilities == req.capabilities | C.CLIENT_SSL
    assert got.max_packet_size == 1 << 24 and got.charset == 45
    assert not is_ssl_request(data[:31])
    for bad in (data[:31], data + b"\x00"):
        with pytest.raises(PeerViolation) as exc:
            parse_ssl_request(bad)
        assert exc.value.code == BAD_HANDSHAKE
    no_ssl = bytearray(data)
    no_ssl[1] &= ~(C.CLIENT_SSL >> 8) & 0xFF
    assert not is_ssl_request(bytes(no_ssl))


# -- HandshakeResponse41 -------------------------------------------------------------------------

optional_flags = st.sets(
    st.sampled_from(
        [
            C.CLIENT_CONNECT_WITH_DB,
            C.CLIENT_PLUGIN_AUTH,
            C.CLIENT_CONNECT_ATTRS,
            C.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
            C.CLIENT_SECURE_CONNECTION,
            C.CLIENT_ZSTD_COMPRESSION_ALGORITHM,
            C.CLIENT_DEPRECATE_EOF,
            C.CLIENT_SSL,
        ]
    )
)


@given(
    optional_flags,
    st.integers(0, 0xFFFFFFFF),
    st.booleans(),
    st.integers(0, 2**32 - 1),
    st.integers(0, 255),
    no_nul,
    st.binary(max_size=400),
    no_nul,
    no_nul,
    st.lists(st.tuples(st.binary(max_size=30), st.binary(max_size=300)), max_size=5),
    st.integers(0, 22),
)
def test_handshake_response41_round_trip(
    flags: set[int],
    mariadb: int,
    mysql_bit: bool,
    max_packet: int,
    charset: int,
    user: bytes,
    auth: bytes,
    database: bytes,
    plugin: bytes,
    attrs: list[tuple[bytes, bytes]],
    zstd: int,
) -> None:
    caps = C.CLIENT_PROTOCOL_41
    for f in flags:
        caps |= f
    caps = int(caps) | (C.CLIENT_LONG_PASSWORD if mysql_bit else mariadb << 32)
    if not caps & C.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth = auth[:255] if caps & C.CLIENT_SECURE_CONNECTION else auth.replace(b"\x00", b"")
    resp = HandshakeResponse41(
        caps,
        max_packet,
        charset,
        user,
        auth,
        database if caps & C.CLIENT_CONNECT_WITH_DB else None,
        plugin if caps & C.CLIENT_PLUGIN_AUTH else None,
        tuple(attrs) if caps & C.CLIENT_CONNECT_ATTRS else (),
        zstd if caps & C.CLIENT_ZSTD_COMPRESSION_ALGORITHM else None,
    )
    assert parse_handshake_response41(build_handshake_response41(resp)) == resp


FULL = (
    BASE_CLIENT
    | C.CLIENT_CONNECT_WITH_DB
    | C.CLIENT_CONNECT_ATTRS
    | C.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
)
SAMPLE = HandshakeResponse41(
    FULL,
    1 << 24,
    45,
    b"alice",
    b"s" * 20,
    b"test",
    b"caching_sha2_password",
    ((b"_client_name", b"x"),),
)


def test_truncated_response41_is_bad_handshake() -> None:
    data = build_handshake_response41(SAMPLE)
    tolerated = {  # optional trailing fields may be absent entirely
        data.index(b"test\x00"),
        data.index(b"caching_sha2"),
        data.index(b"caching_sha2") + len(b"caching_sha2_password\x00"),
    }
    for n in range(len(data)):
        if n in tolerated:
            parse_handshake_response41(data[:n])
            continue
        with pytest.raises(PeerViolation) as exc:
            parse_handshake_response41(data[:n])
        assert exc.value.code == BAD_HANDSHAKE, n


def test_response41_lying_lengths() -> None:
    data = bytearray(build_handshake_response41(SAMPLE))
    auth_len_at = 32 + len(b"alice\x00")
    lying = bytes(data[:auth_len_at]) + b"\xc8" + bytes(data[auth_len_at + 1 :])  # 200 announced
    with pytest.raises(PeerViolation):
        parse_handshake_response41(lying)
    attrs_at = data.index(b"\x0c_client_name") - 1
    data[attrs_at] = 0x40  # attribute block claims 64 bytes
    with pytest.raises(PeerViolation):
        parse_handshake_response41(bytes(data))
    no41 = bytearray(build_handshake_response41(SAMPLE))
    no41[1] &= ~(C.CLIENT_PROTOCOL_41 >> 8) & 0xFF
    with pytest.raises(PeerViolation):
        parse_handshake_response41(bytes(no41))


def test_response41_long_auth_needs_lenenc() -> None:
    resp = HandshakeResponse41(BASE_CLIENT, 0, 45, b"u", b"j" * 256)
    with pytest.raises(UsageError):
        build_handshake_response41(resp)


# -- auth switch / more data -----------------------------------------------------------------


def test_auth_switch_request() -> None:
    data = build_auth_switch_request(b"caching_sha2_password", b"n" * 20 + b"\x00")
    assert parse_auth_switch_request(data) == AuthSwitchRequest(
        b"caching_sha2_password", b"n" * 20 + b"\x00"
    )
    assert parse_auth_switch_request(b"\xfe").plugin_name == b"mysql_old_password"
    for bad in (b"", b"\x00abc", b"\xfeunterminated"):
        with pytest.raises(PeerViolation) as exc:
            parse_auth_switch_request(bad)
        assert exc.value.code == BAD_HANDSHAKE
    with pytest.raises(UsageError):
        build_auth_switch_request(b"a\x00b", b"")


def test_auth_more_data() -> None:
    assert build_auth_more_data(b"\x04") == b"\x01\x04"
    assert parse_auth_more_data(b"\x01-----BEGIN PUBLIC KEY-----") == b"-----BEGIN PUBLIC KEY-----"
    with pytest.raises(PeerViolation):
        parse_auth_more_data(b"\x02")
