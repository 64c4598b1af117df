"""Codecs in protocols.postgres.messages: first packets, Bind, errors, tags."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import PeerViolation
from protocols.postgres.messages import (
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    build_backend_key_data,
    build_cancel_request,
    build_error_response,
    build_negotiate_protocol_version,
    build_ssl_request,
    build_startup_message,
    command_tag_rows,
    first_packet_length,
    parse_backend_key_data,
    parse_bind,
    parse_describe_or_close,
    parse_error_fields,
    parse_execute,
    parse_first_packet,
    parse_parse,
    startup_options,
)

# psql 15's StartupMessage (sslmode=disable application_name=psql), captured
# from the wire with a listening socket.
PSQL_STARTUP = bytes.fromhex(
    "00000037000300007573657200616c69636500646174616261736500617070006170706c69"
    "636174696f6e5f6e616d65007073716c0000"
)


def test_captured_psql_startup() -> None:
    assert first_packet_length(PSQL_STARTUP[:4]) == len(PSQL_STARTUP)
    assert parse_first_packet(PSQL_STARTUP) == StartupMessage(
        196608, {"user": "alice", "database": "app", "application_name": "psql"}
    )


def test_special_first_packets() -> None:
    assert parse_first_packet(build_ssl_request()) == SSLRequest()
    assert parse_first_packet(struct.pack("!II", 8, 80877104)) == GSSENCRequest()
    assert parse_first_packet(build_cancel_request(1234, b"\x01\x02\x03\x04")) == CancelRequest(
        1234, b"\x01\x02\x03\x04"
    )
    # Protocol 3.2 cancel keys are variable length (up to 256 bytes).
    long_key = bytes(range(32))
    assert parse_first_packet(build_cancel_request(7, long_key)) == CancelRequest(7, long_key)


@pytest.mark.parametrize(
    ("packet", "code"),
    [
        (struct.pack("!II", 8, 131072), "0A000"),  # protocol 2.0
        (struct.pack("!II", 8, 4 << 16), "0A000"),  # protocol 4.0
        (struct.pack("!II", 12, 80877102) + b"\0\0\0\1", "08P01"),  # cancel without key
        (struct.pack("!II", 9, 196608) + b"u", "08P01"),  # unterminated
        (struct.pack("!II", 10, 196608) + b"u\0", "08P01"),  # key without value
        (build_startup_message({"user": "a"})[:-1] + b"x", "08P01"),  # trailing garbage
    ],
)
def test_malformed_first_packets(packet: bytes, code: str) -> None:
    with pytest.raises(PeerViolation) as info:
        parse_first_packet(struct.pack("!I", len(packet)) + packet[4:])
    assert info.value.code == code


@pytest.mark.parametrize("length", [-1, 0, 7, 10_001, 2**31 - 1])
def test_first_packet_length_bounds(length: int) -> None:
    with pytest.raises(PeerViolation):
        first_packet_length(struct.pack("!i", length))


@given(
    st.dictionaries(
        st.text(
            alphabet=st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
            min_size=1,
        ),
        st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=["Cs"])),
        max_size=8,
    )
)
def test_startup_round_trip(params: dict[str, str]) -> None:
    pkt = build_startup_message(params)
    assert first_packet_length(pkt[:4]) == len(pkt) or len(pkt) > 10_000
    assert parse_first_packet(pkt) == StartupMessage(196608, params)


def _bind_body(
    portal: bytes, stmt: bytes, fmts: list[int], params: list[bytes | None], res: list[int]
) -> bytes:
    body = portal + b"\0" + stmt + b"\0" + struct.pack("!h", len(fmts))
    body += b"".join(struct.pack("!h", f) for f in fmts)
    body += struct.pack("!h", len(params))
    for p in params:
        body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
    return body + struct.pack("!h", len(res)) + b"".join(struct.pack("!h", f) for f in res)


@given(
    st.binary(max_size=10).filter(lambda b: b"\0" not in b),
    st.lists(st.one_of(st.none(), st.binary(max_size=50)), max_size=10),
    st.lists(st.sampled_from([0, 1]), max_size=3),
)
def test_bind_round_trip(portal: bytes, params: list[bytes | None], res: list[int]) -> None:
    fmts = [1] if params else []
    bind = parse_bind(_bind_body(portal, b"s1", fmts, params, res))
    assert bind.portal == portal and bind.statement == b"s1"
    assert list(bind.parameters) == params
    assert list(bind.result_formats) == res
    assert all(bind.parameter_format(i) == 1 for i in range(len(params)))


@pytest.mark.parametrize(
    "body",
    [
        _bind_body(b"", b"", [], [b"abc"], [])[:-5],  # truncated
        _bind_body(b"", b"", [0, 1], [b"a"], []),  # 2 format codes for 1 parameter
        _bind_body(b"", b"", [], [b"a"], []).replace(struct.pack("!i", 1), struct.pack("!i", 99)),
        _bind_body(b"", b"", [], [b"a"], []).replace(struct.pack("!i", 1), struct.pack("!i", -7)),
        _bind_body(b"", b"", [], [], []) + b"junk",
        b"no-terminator",
    ],
)
def test_malformed_bind(body: bytes) -> None:
    with pytest.raises(PeerViolation):
        parse_bind(body)


def test_parse_message() -> None:
    body = b"s1\0SELECT $1\0" + struct.pack("!hI", 1, 23)
    assert parse_parse(body) == (b"s1", b"SELECT $1")
    with pytest.raises(PeerViolation):
        parse_parse(b"s1\0SELECT $1\0" + struct.pack("!h", 2) + b"\0\0\0\x17")


def test_error_response_fields_round_trip() -> None:
    msg = build_error_response("42501", "blocked", severity="ERROR", detail="d", hint="h")
    assert msg[0:1] == b"E" and struct.unpack("!I", msg[1:5])[0] == len(msg) - 1
    assert parse_error_fields(msg[5:]) == {
        "S": "ERROR",
        "V": "ERROR",
        "C": "42501",
        "M": "blocked",
        "D": "d",
        "H": "h",
    }


def test_backend_key_data_and_negotiate() -> None:
    msg = build_backend_key_data(4242, b"\xaa\xbb\xcc\xdd")
    assert parse_backend_key_data(msg[5:]) == (4242, b"\xaa\xbb\xcc\xdd")
    with pytest.raises(PeerViolation):
        parse_backend_key_data(b"\0\0")  # a zero-length key is a violation
    neg = build_negotiate_protocol_version(0, ["_pq_.a", "_pq_.b"])
    assert neg[:1] == b"v" and neg[5:13] == struct.pack("!ii", 0, 2) and neg.endswith(b"_pq_.b\0")


@pytest.mark.parametrize(
    ("tag", "rows"),
    [("SELECT 5", 5), ("INSERT 0 3", 3), ("COPY 7", 7), ("BEGIN", None), ("FETCH 100", 100)],
)
def test_command_tag_rows(tag: str, rows: int | None) -> None:
    assert command_tag_rows(tag) == rows


@given(st.binary(max_size=12).filter(lambda b: b"\x00" not in b), st.integers(0, 2**31 - 1))
def test_execute_and_describe_round_trip(name: bytes, max_rows: int) -> None:
    assert parse_execute(name + b"\x00" + struct.pack("!i", max_rows)) == (name, max_rows)
    for kind in b"SP":
        assert parse_describe_or_close(bytes([kind]) + name + b"\x00") == (kind, name)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"portal", "unterminated string in message"),
        (b"p\x00\x00\x00\x00", "message truncated"),  # max_rows cut short
        (b"", "unterminated string in message"),
    ],
)
def test_malformed_execute(body: bytes, message: str) -> None:
    with pytest.raises(PeerViolation, match=message):
        parse_execute(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "malformed Describe/Close"),
        (b"Xname\x00", "malformed Describe/Close"),
        (b"Sname", "unterminated string in message"),
    ],
)
def test_malformed_describe_or_close(body: bytes, message: str) -> None:
    with pytest.raises(PeerViolation, match=message):
        parse_describe_or_close(body)


@pytest.mark.parametrize(
    ("options", "settings"),
    [
        ("-c search_path=hr", [("search_path", "hr")]),
        ("-csearch_path=hr --role=x", [("search_path", "hr"), ("role", "x")]),
        ("-c a=b\\ c  -c geqo=off", [("a", "b c"), ("geqo", "off")]),
        ("--statement-timeout=5s", [("statement_timeout", "5s")]),
        ("", []),
        ("-d 5", None),  # a server switch other than a setting
        ("-c", None),
        ("-c novalue", None),
        ("-c a=b\\", None),
    ],
)
def test_startup_options_are_read_as_libpq_writes_them(
    options: str, settings: list[tuple[str, str]] | None
) -> None:
    assert startup_options(options) == settings
