"""Unit tests for protocols.postgres.auth (SCRAM-SHA-256, md5, cleartext, upstream FSM)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import PeerViolation, UsageError
from protocols.postgres.auth import (
    SCRAM_SHA_256,
    SaltedPasswordCache,
    ScramSha256Client,
    ScramSha256Server,
    ScramVerifier,
    UpstreamAuthenticator,
    build_authentication,
    build_password_message,
    build_sasl_initial_response,
    build_sasl_response,
    make_scram_verifier,
    md5_password_hash,
    normalize_password,
    parse_authentication,
    parse_password_message,
    parse_sasl_initial_response,
    parse_sasl_mechanisms,
    parse_scram_verifier,
    saslprep,
)
from protocols.postgres.constants import AuthRequest

# RFC 7677 section 3 test vector.
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

FAST = 16  # iteration count for tests that do not need the RFC's 4096


def rfc_client() -> ScramSha256Client:
    return ScramSha256Client("pencil", nonce=RFC_CLIENT_NONCE, username="user")


def frontend_body(frame: bytes, mtype: bytes = b"p") -> bytes:
    """Unframe a frontend message and check its header."""
    assert frame[:1] == mtype
    (length,) = struct.unpack_from("!I", frame, 1)
    assert length == len(frame) - 1
    return frame[5:]


def auth_body(code: int, data: bytes = b"") -> bytes:
    return frame_body(build_authentication(code, data))


def frame_body(frame: bytes) -> bytes:
    return frontend_body(frame, b"R")


# --------------------------------------------------------------------------- client


def test_rfc7677_client_vector() -> None:
    client = rfc_client()
    assert client.client_first_message() == RFC_CLIENT_FIRST
    assert client.handle_server_first(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    assert not client.done
    client.handle_server_final(RFC_SERVER_FINAL)
    assert client.done


def test_client_first_body_is_sasl_initial_response() -> None:
    client = ScramSha256Client("pencil", nonce="abc")
    body = client.client_first()
    assert body == b"SCRAM-SHA-256\0" + struct.pack("!i", 11) + b"n,,n=,r=abc"
    assert parse_sasl_initial_response(body) == (SCRAM_SHA_256, b"n,,n=,r=abc")
    framed = build_sasl_initial_response(SCRAM_SHA_256, b"n,,n=,r=abc")
    assert frontend_body(framed) == body


def test_client_default_nonce_is_random_and_printable() -> None:
    first_a = ScramSha256Client("x").client_first_message()
    first_b = ScramSha256Client("x").client_first_message()
    assert first_a != first_b
    assert first_a.startswith(b"n,,n=,r=")
    nonce = first_a[len(b"n,,n=,r=") :]
    assert len(nonce) >= 18 and b"," not in nonce


@pytest.mark.parametrize("nonce", ["", "a,b", "sp ace", "caf\u00e9"])
def test_client_rejects_bad_nonce(nonce: str) -> None:
    with pytest.raises(UsageError):
        ScramSha256Client("x", nonce=nonce)


def test_username_is_escaped() -> None:
    client = ScramSha256Client("x", nonce="n", username="a=b,c")
    assert client.client_first_message() == b"n,,n=a=3Db=2Cc,r=n"
    server = ScramSha256Server(make_scram_verifier("x", iterations=FAST))
    server.handle_client_first(client.client_first_message())
    assert server.username == "a=b,c"


def test_tampered_server_signature() -> None:
    client = rfc_client()
    client.client_first_message()
    client.handle_server_first(RFC_SERVER_FIRST)
    sig = bytearray(base64.b64decode(RFC_SERVER_FINAL[2:]))
    sig[0] ^= 1
    with pytest.raises(PeerViolation) as exc:
        client.handle_server_final(b"v=" + base64.b64encode(bytes(sig)))
    assert exc.value.code == "28P01"
    assert not client.done
    with pytest.raises(UsageError):  # terminal
        client.handle_server_final(RFC_SERVER_FINAL)


def test_server_error_attribute() -> None:
    client = rfc_client()
    client.client_first_message()
    client.handle_server_first(RFC_SERVER_FIRST)
    with pytest.raises(PeerViolation, match="invalid-proof") as exc:
        client.handle_server_final(b"e=invalid-proof")
    assert exc.value.code == "28P01"


@pytest.mark.parametrize(
    "server_first",
    [
        # not extending our nonce
        b"r=XOprNGfwEbeRWgbNEkqO%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        # our nonce exactly, nothing appended
        b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        # a prefix of our nonce
        b"r=rOprNG,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    ],
)
def test_server_nonce_must_extend_ours(server_first: bytes) -> None:
    client = rfc_client()
    client.client_first_message()
    with pytest.raises(PeerViolation, match="nonce"):
        client.handle_server_first(server_first)


@pytest.mark.parametrize(
    "server_first",
    [
        b"",
        b"garbage",
        b"m=ext,r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOxyz,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=not*base64,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000001",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4k",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,",
        b"r=rOprNGfwEbeRWgbNEkqO\xff,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    ],
)
def test_malformed_server_first(server_first: bytes) -> None:
    client = rfc_client()
    client.client_first_message()
    with pytest.raises(PeerViolation) as exc:
        client.handle_server_first(server_first)
    assert exc.value.code == "08P01"


def test_server_first_extensions_are_ignored_and_low_iterations_accepted() -> None:
    # RFC 5802 section 7 allows extensions after i=; PG16 allows scram_iterations = 1.
    client = ScramSha256Client("pencil", nonce="abc")
    client.client_first_message()
    out = client.handle_server_first(b"r=abcdef,s=AAAA,i=1,x=future")
    assert out.startswith(b"c=biws,r=abcdef,p=")


def test_max_iterations_is_configurable() -> None:
    client = ScramSha256Client("pencil", nonce="abc", max_iterations=100)
    client.client_first_message()
    with pytest.raises(PeerViolation, match="out of range"):
        client.handle_server_first(b"r=abcdef,s=AAAA,i=101")


@pytest.mark.parametrize("server_final", [b"", b"x=1", b"v=***", b"v"])
def test_malformed_server_final(server_final: bytes) -> None:
    client = rfc_client()
    client.client_first_message()
    client.handle_server_first(RFC_SERVER_FIRST)
    with pytest.raises(PeerViolation):
        client.handle_server_final(server_final)
    assert not client.done


def test_client_call_order_is_enforced() -> None:
    client = rfc_client()
    with pytest.raises(UsageError):
        client.handle_server_first(RFC_SERVER_FIRST)
    client.client_first_message()
    with pytest.raises(UsageError):
        client.handle_server_final(RFC_SERVER_FINAL)
    client.handle_server_first(RFC_SERVER_FIRST)
    with pytest.raises(UsageError):
        client.client_first_message()
    with pytest.raises(UsageError):
        client.handle_server_first(RFC_SERVER_FIRST)


# --------------------------------------------------------------------------- cache


def test_salted_password_cache_skips_pbkdf2() -> None:
    cache = SaltedPasswordCache(max_entries=2)
    for _ in range(3):
        client = ScramSha256Client("pencil", nonce=RFC_CLIENT_NONCE, username="user", cache=cache)
        client.client_first_message()
        assert client.handle_server_first(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
        client.handle_server_final(RFC_SERVER_FINAL)
    assert (cache.misses, cache.hits, len(cache)) == (1, 2, 1)
    expected = hashlib.pbkdf2_hmac("sha256", b"pencil", RFC_SALT, 4096)
    assert cache.salted_password(b"pencil", RFC_SALT, 4096) == expected


def test_salted_password_cache_is_bounded_lru() -> None:
    cache = SaltedPasswordCache(max_entries=2)
    cache.salted_password(b"a", b"salt", 1)
    cache.salted_password(b"b", b"salt", 1)
    cache.salted_password(b"a", b"salt", 1)  # a is now most recent
    cache.salted_password(b"c", b"salt", 1)  # evicts b
    assert len(cache) == 2
    misses = cache.misses
    cache.salted_password(b"a", b"salt", 1)
    assert cache.misses == misses
    cache.salted_password(b"b", b"salt", 1)
    assert cache.misses == misses + 1
    # Keys differ by salt and iterations too.
    assert cache.salted_password(b"a", b"salt", 2) != cache.salted_password(b"a", b"salt", 1)
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(UsageError):
        SaltedPasswordCache(max_entries=0)


# --------------------------------------------------------------------------- server


def test_rfc7677_server_vector() -> None:
    verifier = make_scram_verifier("pencil", RFC_SALT, 4096)
    server = ScramSha256Server(verifier, nonce=RFC_SERVER_NONCE)
    assert server.handle_client_first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.username == "user"
    assert server.handle_client_final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL
    assert server.done


def run_exchange(
    client: ScramSha256Client, server: ScramSha256Server
) -> tuple[bytes, bytes, bytes, bytes]:
    first = client.client_first_message()
    server_first = server.handle_client_first(first)
    client_final = client.handle_server_first(server_first)
    server_final = server.handle_client_final(client_final)
    client.handle_server_final(server_final)
    return first, server_first, client_final, server_final


@pytest.mark.parametrize("password", ["secret", "caf\u00e9", "\u2168", "x\u0007\u00e9", "p w"])
def test_client_against_server(password: str) -> None:
    server = ScramSha256Server(make_scram_verifier(password, iterations=FAST))
    client = ScramSha256Client(password)
    run_exchange(client, server)
    assert client.done and server.done


def test_sasl_equivalent_passwords_authenticate() -> None:
    # "I<U+00AD>X" and "<U+2168>" both SASLprep to "IX" (RFC 4013 section 3).
    server = ScramSha256Server(make_scram_verifier("IX", iterations=FAST))
    run_exchange(ScramSha256Client("I\u00adX"), server)
    server = ScramSha256Server(make_scram_verifier("\u2168", iterations=FAST))
    run_exchange(ScramSha256Client("IX"), server)


def test_wrong_password_fails() -> None:
    server = ScramSha256Server(make_scram_verifier("right", iterations=FAST))
    client = ScramSha256Client("wrong")
    server_first = server.handle_client_first(client.client_first_message())
    client_final = client.handle_server_first(server_first)
    with pytest.raises(PeerViolation) as exc:
        server.handle_client_final(client_final)
    assert exc.value.code == "28P01"
    assert not server.done


def test_impostor_server_is_detected_by_client() -> None:
    # A server that does not know the password cannot produce ServerSignature.
    impostor = ScramSha256Server(make_scram_verifier("other", iterations=FAST))
    client = ScramSha256Client("right")
    server_first = impostor.handle_client_first(client.client_first_message())
    client.handle_server_first(server_first)
    forged = b"v=" + base64.b64encode(b"\0" * 32)
    with pytest.raises(PeerViolation) as exc:
        client.handle_server_final(forged)
    assert exc.value.code == "28P01"


@pytest.mark.parametrize(
    ("client_first", "code"),
    [
        (b"p=tls-server-end-point,,n=,r=abc", "08P01"),
        (b"n,a=admin,n=,r=abc", "0A000"),
        (b"x,,n=,r=abc", "08P01"),
        (b"n,,m=x,n=,r=abc", "08P01"),
        (b"n,,r=abc", "08P01"),
        (b"n,,n=,r=", "08P01"),
        (b"n,,n=a=zz,r=abc", "08P01"),
        (b"n,,n=", "08P01"),
        (b"n,", "08P01"),
    ],
)
def test_server_rejects_bad_client_first(client_first: bytes, code: str) -> None:
    server = ScramSha256Server(make_scram_verifier("x", iterations=FAST))
    with pytest.raises(PeerViolation) as exc:
        server.handle_client_first(client_first)
    assert exc.value.code == code


def test_server_accepts_y_flag_and_binds_it_into_c() -> None:
    # RFC 5802 section 6: 'y' = client supports binding, thinks the server does not.
    # The gs2 header is then echoed in c= (RFC 5802 section 7: base64("y,,") = "eSws").
    verifier = make_scram_verifier("pencil", iterations=FAST)
    server = ScramSha256Server(verifier, nonce="S")
    server_first = server.handle_client_first(b"y,,n=,r=C")
    client = ScramSha256Client("pencil", nonce="C")
    client.client_first_message()
    final = client.handle_server_first(server_first)
    # The client said "n,,", so its c=biws does not match the server's "y,,".
    with pytest.raises(PeerViolation, match="channel binding"):
        server.handle_client_final(final)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f.replace(b"c=biws", b"c=eSws"),
        lambda f: f.replace(b",r=C", b",r=X"),
        lambda f: f.rsplit(b",p=", 1)[0],
        lambda f: f.rsplit(b",p=", 1)[0] + b",p=AAAA",
        lambda f: f.rsplit(b",p=", 1)[0] + b",p=***",
    ],
)
def test_server_rejects_bad_client_final(mutate: Callable[[bytes], bytes]) -> None:
    server = ScramSha256Server(make_scram_verifier("pencil", iterations=FAST), nonce="S")
    client = ScramSha256Client("pencil", nonce="C")
    final = client.handle_server_first(server.handle_client_first(client.client_first_message()))
    with pytest.raises(PeerViolation) as exc:
        server.handle_client_final(mutate(final))
    assert exc.value.code == "08P01"


def test_server_call_order_is_enforced() -> None:
    server = ScramSha256Server(make_scram_verifier("x", iterations=FAST))
    with pytest.raises(UsageError):
        server.handle_client_final(b"c=biws,r=x,p=AAAA")
    server.handle_client_first(b"n,,n=,r=abc")
    with pytest.raises(UsageError):
        server.handle_client_first(b"n,,n=,r=abc")


# --------------------------------------------------------------------------- verifier


def test_verifier_format_and_keys() -> None:
    verifier = make_scram_verifier("pencil", RFC_SALT, 4096)
    assert verifier.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    parsed = parse_scram_verifier(verifier)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", RFC_SALT, 4096)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    assert parsed.stored_key == hashlib.sha256(client_key).digest()
    assert parsed.server_key == hmac.digest(salted, b"Server Key", "sha256")
    assert str(parsed) == verifier
    assert "stored_key" not in repr(parsed)


def test_verifier_default_salt_is_random() -> None:
    a = parse_scram_verifier(make_scram_verifier("x", iterations=FAST))
    b = parse_scram_verifier(make_scram_verifier("x", iterations=FAST))
    assert a.salt != b.salt and len(a.salt) == 16 and a.iterations == FAST


@pytest.mark.parametrize(
    "text",
    [
        "",
        "md5abc",
        "SCRAM-SHA-1$4096:AAAA$AAAA:AAAA",
        "SCRAM-SHA-256$4096:AAAA$AAAA",
        "SCRAM-SHA-256$0:AAAA$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$x:AAAA$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$4096:$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$4096:AAAA$AAAA:" + "A" * 43 + "=",
        "SCRAM-SHA-256$4096:A*AA$" + "A" * 43 + "=:" + "A" * 43 + "=",
    ],
)
def test_parse_verifier_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_scram_verifier(text)


def test_make_verifier_usage_errors() -> None:
    with pytest.raises(UsageError):
        make_scram_verifier("x", iterations=0)
    with pytest.raises(UsageError):
        make_scram_verifier("x", salt=b"")


@settings(max_examples=50, deadline=None)
@given(
    password=st.text(max_size=40),
    salt=st.binary(min_size=1, max_size=32),
    iterations=st.integers(min_value=1, max_value=64),
)
def test_verifier_round_trip(password: str, salt: bytes, iterations: int) -> None:
    text = make_scram_verifier(password, salt, iterations)
    parsed = parse_scram_verifier(text)
    assert isinstance(parsed, ScramVerifier)
    assert (parsed.salt, parsed.iterations) == (salt, iterations)
    assert str(parsed) == text


@settings(max_examples=30, deadline=None)
@given(password=st.text(min_size=1, max_size=24))
def test_any_password_authenticates_against_its_verifier(password: str) -> None:
    server = ScramSha256Server(make_scram_verifier(password, iterations=2))
    client = ScramSha256Client(password)
    run_exchange(client, server)
    assert client.done and server.done


# --------------------------------------------------------------------------- SASLprep


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_saslprep_printable_ascii_is_identity(text: str) -> None:
    assert saslprep(text) == text
    assert normalize_password(text) == text.encode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # RFC 4013 section 3 examples.
        ("I\u00adX", "IX"),
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        # C.1.2 non-ASCII space -> SPACE, then NFKC.
        ("a\u00a0b\u3000c", "a b c"),
        ("\ufb01", "fi"),
        ("e\u0301", "\u00e9"),
    ],
)
def test_saslprep_examples(text: str, expected: str) -> None:
    assert saslprep(text) == expected
    assert normalize_password(text) == expected.encode()


@pytest.mark.parametrize(
    "text",
    [
        "\u0007\u00e9",  # C.2.1 control (non-ASCII string, so no ASCII shortcut)
        "\u00e9\ue000",  # C.3 private use
        "\u00e9\u0340",  # C.8 change display properties
        "\u0627\u0031",  # RFC 4013 section 3: bidi rule violated
        "\u0627a\u0628",  # RandALCat with LCat
        "\u00e9\u0221",  # U+0221 unassigned in Unicode 3.2 (table A.1)
        "\u00ad",  # maps to nothing: empty
    ],
)
def test_saslprep_prohibited_falls_back_to_raw(text: str) -> None:
    with pytest.raises(ValueError):
        saslprep(text)
    assert normalize_password(text) == text.encode()


def test_saslprep_ascii_shortcut_like_postgres() -> None:
    # pg_saslprep returns pure ASCII unchanged, control characters included.
    assert saslprep("a\u0007b") == "a\u0007b"
    assert saslprep("") == ""


def test_normalize_password_bytes_and_escapes() -> None:
    assert normalize_password(b"\xff\xfe") == b"\xff\xfe"  # not UTF-8: raw
    assert normalize_password("I\u00adX".encode()) == b"IX"
    assert normalize_password(b"\xff".decode("utf-8", "surrogateescape")) == b"\xff"
    with pytest.raises(UsageError):
        normalize_password("\ud800")


# --------------------------------------------------------------------------- md5, cleartext


def test_md5_password_hash() -> None:
    salt = b"\x01\x02\x03\x04"
    # Known answer, computed with coreutils md5sum:
    #   inner = md5("secretpostgres"), outer = md5(inner_hex + salt).
    assert md5_password_hash("postgres", "secret", salt) == b"md5bb41a296aab6baccb36ff243a562abff"
    # Cross-check with the formula.
    inner = hashlib.md5(b"secretpostgres").hexdigest()
    assert inner == "53f48b7c4b76a86ce72276c5755f217d"  # pg_authid value, minus "md5"
    expected = b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()
    assert md5_password_hash("postgres", "secret", salt) == expected
    assert md5_password_hash("postgres", "secret", b"\x01\x02\x03\x05") != expected
    assert (
        md5_password_hash("caf\u00e9", "p\u00e4ss", salt)
        == b"md5"
        + hashlib.md5(hashlib.md5("p\u00e4sscaf\u00e9".encode()).hexdigest().encode() + salt)
        .hexdigest()
        .encode()
    )


def test_build_password_message() -> None:
    assert build_password_message("s3cret") == b"p\x00\x00\x00\x0bs3cret\x00"
    assert build_password_message(b"raw") == b"p\x00\x00\x00\x08raw\x00"
    assert frontend_body(build_password_message("caf\u00e9")) == "caf\u00e9".encode() + b"\0"
    with pytest.raises(UsageError):
        build_password_message("a\0b")


def test_build_sasl_response() -> None:
    assert build_sasl_response(b"c=biws") == b"p\x00\x00\x00\x0ac=biws"


# --------------------------------------------------------------------------- parsers


def test_parse_authentication() -> None:
    assert parse_authentication(b"\x00\x00\x00\x05\x01\x02\x03\x04") == (5, b"\x01\x02\x03\x04")
    assert parse_authentication(b"\x00\x00\x00\x00") == (0, b"")
    with pytest.raises(PeerViolation):
        parse_authentication(b"\x00\x00\x00")


def test_parse_sasl_mechanisms() -> None:
    assert parse_sasl_mechanisms(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0") == [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
    ]
    assert parse_sasl_mechanisms(b"\0") == []
    for bad in (b"", b"SCRAM-SHA-256\0", b"SCRAM-SHA-256", b"A\0\0\0", b"\xff\0\0"):
        with pytest.raises(PeerViolation):
            parse_sasl_mechanisms(bad)


def test_parse_sasl_initial_response() -> None:
    assert parse_sasl_initial_response(b"M\0\xff\xff\xff\xff") == ("M", None)
    assert frontend_body(build_sasl_initial_response("M", None)) == b"M\0\xff\xff\xff\xff"
    for bad in (b"M", b"M\0\0\0", b"M\0\0\0\0\x05ab", b"M\0\xff\xff\xff\xffx", b"\xff\0\0\0\0\0"):
        with pytest.raises(PeerViolation):
            parse_sasl_initial_response(bad)


def test_parse_password_message() -> None:
    assert parse_password_message(b"eyJ.token\0", 100) == "eyJ.token"
    assert parse_password_message("caf\u00e9\0".encode(), 5) == "caf\u00e9"
    assert parse_password_message(b"\0", 0) == ""
    for body, limit in [
        (b"abc", 100),  # not terminated
        (b"abcdef\0", 5),  # too long
        (b"ab\0cd\0", 100),  # trailing data
        (b"\xff\0", 100),  # invalid UTF-8
    ]:
        with pytest.raises(PeerViolation) as exc:
            parse_password_message(body, limit)
        assert exc.value.code == "08P01"


# --------------------------------------------------------------------------- upstream FSM


def drive(auth: UpstreamAuthenticator, bodies: list[bytes]) -> list[bytes | None]:
    return [auth.receive(body) for body in bodies]


def test_upstream_trust() -> None:
    auth = UpstreamAuthenticator("u", None, tls_active=False)
    assert auth.method == ""
    assert drive(auth, [auth_body(AuthRequest.OK)]) == [None]
    assert auth.done and auth.method == "trust"
    with pytest.raises(PeerViolation):
        auth.receive(auth_body(AuthRequest.OK))


def test_upstream_cleartext_over_tls() -> None:
    auth = UpstreamAuthenticator("u", "pw", tls_active=True)
    out = auth.receive(auth_body(AuthRequest.CLEARTEXT_PASSWORD))
    assert out == build_password_message("pw")
    assert not auth.done and auth.method == "password"
    assert auth.receive(auth_body(AuthRequest.OK)) is None
    assert auth.done


def test_upstream_cleartext_without_tls_refused() -> None:
    auth = UpstreamAuthenticator("u", "pw", tls_active=False)
    with pytest.raises(PeerViolation) as exc:
        auth.receive(auth_body(AuthRequest.CLEARTEXT_PASSWORD))
    assert exc.value.code == "28000"
    with pytest.raises(PeerViolation) as again:  # terminal
        auth.receive(auth_body(AuthRequest.OK))
    assert again.value is exc.value
    assert not auth.done


def test_upstream_cleartext_without_tls_allowed() -> None:
    auth = UpstreamAuthenticator("u", "pw", tls_active=False, allow_cleartext_without_tls=True)
    assert auth.receive(auth_body(AuthRequest.CLEARTEXT_PASSWORD)) == build_password_message("pw")
    auth.receive(auth_body(AuthRequest.OK))
    assert auth.done


def test_upstream_md5() -> None:
    salt = b"\x01\x02\x03\x04"
    auth = UpstreamAuthenticator("postgres", "secret", tls_active=False)
    out = auth.receive(auth_body(AuthRequest.MD5_PASSWORD, salt))
    assert out is not None
    assert frontend_body(out) == md5_password_hash("postgres", "secret", salt) + b"\0"
    assert auth.method == "md5"
    auth.receive(auth_body(AuthRequest.OK))
    assert auth.done


@pytest.mark.parametrize("salt", [b"", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05"])
def test_upstream_md5_bad_salt(salt: bytes) -> None:
    auth = UpstreamAuthenticator("u", "pw", tls_active=False)
    with pytest.raises(PeerViolation) as exc:
        auth.receive(auth_body(AuthRequest.MD5_PASSWORD, salt))
    assert exc.value.code == "08P01"


@pytest.mark.parametrize("password", [None, ""])
@pytest.mark.parametrize(
    ("code", "data"),
    [
        (AuthRequest.CLEARTEXT_PASSWORD, b""),
        (AuthRequest.MD5_PASSWORD, b"salt"),
        (AuthRequest.SASL, b"SCRAM-SHA-256\0\0"),
    ],
)
def test_upstream_password_required(password: str | None, code: int, data: bytes) -> None:
    auth = UpstreamAuthenticator("u", password, tls_active=True)
    with pytest.raises(PeerViolation) as exc:
        auth.receive(auth_body(code, data))
    assert exc.value.code == "28000"


def scram_transcript(
    auth: UpstreamAuthenticator, server: ScramSha256Server, mechanisms: bytes
) -> bytes:
    """Play the backend side of a SCRAM exchange against ``auth``; return server-final."""
    initial = auth.receive(auth_body(AuthRequest.SASL, mechanisms))
    assert initial is not None
    mechanism, client_first = parse_sasl_initial_response(frontend_body(initial))
    assert mechanism == SCRAM_SHA_256 and client_first is not None
    assert client_first.startswith(b"n,,n=,r=")
    server_first = server.handle_client_first(client_first)
    response = auth.receive(auth_body(AuthRequest.SASL_CONTINUE, server_first))
    assert response is not None
    return server.handle_client_final(frontend_body(response))


@pytest.mark.parametrize(
    "mechanisms",
    [b"SCRAM-SHA-256\0\0", b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0", b"X\0SCRAM-SHA-256\0\0"],
)
def test_upstream_scram(mechanisms: bytes) -> None:
    cache = SaltedPasswordCache()
    for _ in range(2):
        server = ScramSha256Server(make_scram_verifier("pw", b"fixed-salt", FAST))
        auth = UpstreamAuthenticator("u", "pw", tls_active=True, scram_cache=cache)
        server_final = scram_transcript(auth, server, mechanisms)
        assert auth.receive(auth_body(AuthRequest.SASL_FINAL, server_final)) is None
        assert not auth.done
        assert auth.receive(auth_body(AuthRequest.OK)) is None
        assert auth.done and auth.method == "scram-sha-256"
    assert (cache.misses, cache.hits) == (1, 1)


def test_upstream_scram_tampered_server_final() -> None:
    server = ScramSha256Server(make_scram_verifier("pw", iterations=FAST))
    auth = UpstreamAuthenticator("u", "pw", tls_active=True)
    server_final = scram_transcript(auth, server, b"SCRAM-SHA-256\0\0")
    forged = server_final[:-4] + (b"AAA=" if server_final[-4:] != b"AAA=" else b"BBB=")
    with pytest.raises(PeerViolation) as exc:
        auth.receive(auth_body(AuthRequest.SASL_FINAL, forged))
    assert exc.value.code == "28P01"
    assert not auth.done


def test_upstream_scram_wrong_password_rejected_by_server() -> None:
    server = ScramSha256Server(make_scram_verifier("right", iterations=FAST))
    auth = UpstreamAuthenticator("u", "wrong", tls_active=True)
    with pytest.raises(PeerViolation) as exc:
        scram_transcript(auth, server, b"SCRAM-SHA-256\0\0")
    assert exc.value.code == "28P01"


def test_upstream_premature_ok_after_sasl() -> None:
    auth = UpstreamAuthenticator("u", "pw", tls_active=True)
    auth.receive(auth_body(AuthRequest.SASL, b"SCRAM-SHA-256\0\0"))
    with pytest.raises(PeerViolation) as exc:
        auth.receive(auth_body(AuthRequest.OK))
    assert exc.value.code == "28000"
    assert not auth.done


def test_upstream_ok_without_sasl_final() -> None:
    # A server that skips SASLFinal never proved it knows the password.
    server = ScramSha256Server(make_scram_verifier("pw", iterations=FAST))
    auth = UpstreamAuthenticator("u", "pw", tls_active=True)
    scram_transcript(auth, server, b"SCRAM-SHA-256\0\0")
    with pytest.raises(PeerViolation) as exc:
        auth.receive(auth_body(AuthRequest.OK))
    assert exc.value.code == "28000"
    assert not auth.done


@pytest.mark.parametrize(
    ("code", "data"),
    [
        (AuthRequest.KERBEROS_V5, b""),
        (AuthRequest.GSS, b""),
        (AuthRequest.SSPI, b""),
        (AuthRequest.GSS_CONTINUE, b"x"),
        (AuthRequest.SASL, b"SCRAM-SHA-256-PLUS\0\0"),
        (AuthRequest.SASL, b"OAUTHBEARER\0\0"),
        (AuthRequest.SASL, b"\0"),
        (4, b""),  # crypt, removed long ago
        (99, b""),
    ],
)
def test_upstream_unsupported_methods(code: int, data: bytes) -> None:
    auth = UpstreamAuthenticator("u", "pw", tls_active=True)
    with pytest.raises(PeerViolation) as exc:
        auth.receive(auth_body(code, data))
    assert exc.value.code == "28000"


@pytest.mark.parametrize(
    "bodies",
    [
        # continuation without a start
        [auth_body(AuthRequest.SASL_CONTINUE, b"r=x,s=AAAA,i=1")],
        [auth_body(AuthRequest.SASL_FINAL, b"v=AAAA")],
        # downgrade attempt: SASL started, then cleartext requested
        [
            auth_body(AuthRequest.SASL, b"SCRAM-SHA-256\0\0"),
            auth_body(AuthRequest.CLEARTEXT_PASSWORD),
        ],
        # second method after a password was sent
        [auth_body(AuthRequest.MD5_PASSWORD, b"salt"), auth_body(AuthRequest.CLEARTEXT_PASSWORD)],
        # SASLFinal before SASLContinue
        [
            auth_body(AuthRequest.SASL, b"SCRAM-SHA-256\0\0"),
            auth_body(AuthRequest.SASL_FINAL, b"v=AAAA"),
        ],
        # trailing data
        [auth_body(AuthRequest.OK, b"x")],
        [auth_body(AuthRequest.CLEARTEXT_PASSWORD, b"x")],
        # short body
        [b"\0\0"],
    ],
)
def test_upstream_out_of_order(bodies: list[bytes]) -> None:
    auth = UpstreamAuthenticator("u", "pw", tls_active=True)
    with pytest.raises(PeerViolation) as exc:
        drive(auth, bodies)
    assert exc.value.code == "08P01"
    assert not auth.done


def test_upstream_message_after_sasl_verified_must_be_ok() -> None:
    server = ScramSha256Server(make_scram_verifier("pw", iterations=FAST))
    auth = UpstreamAuthenticator("u", "pw", tls_active=True)
    server_final = scram_transcript(auth, server, b"SCRAM-SHA-256\0\0")
    auth.receive(auth_body(AuthRequest.SASL_FINAL, server_final))
    with pytest.raises(PeerViolation):
        auth.receive(auth_body(AuthRequest.SASL_FINAL, server_final))


def test_build_authentication() -> None:
    assert build_authentication(AuthRequest.CLEARTEXT_PASSWORD) == b"R\0\0\0\x08\0\0\0\x03"
    assert build_authentication(AuthRequest.MD5_PASSWORD, b"abcd")[-4:] == b"abcd"
