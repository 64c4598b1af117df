"""Every bad-token case from TESTING.md is refused with 28P01 and no detail;
a valid identity without a target gets 28000; plaintext, replication and
protocol 2.0 are refused. The gateway keeps serving afterwards."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import AUDIENCE, ISSUER, GatewayProcess
from .pgwire import Wire

pytestmark = pytest.mark.integration


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _kid(gateway: GatewayProcess) -> str:
    jwks = json.loads((gateway.key_path.parent / "jwks.json").read_text())
    return str(jwks["keys"][0]["kid"])


def _claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "mallory@example.com",
        "groups": ["dba"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "t-1",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(
    gateway: GatewayProcess,
    claims: dict[str, object],
    *,
    kid: str | None = None,
    key: object = None,
) -> str:
    private = key or serialization.load_pem_private_key(gateway.key_path.read_bytes(), None)
    return jwt.encode(claims, private, algorithm="ES256", headers={"kid": kid or _kid(gateway)})  # type: ignore[arg-type]


def _bad_tokens(gateway: GatewayProcess) -> dict[str, str]:
    now = int(time.time())
    kid = _kid(gateway)
    good = _sign(gateway, _claims())
    head, _payload, sig = good.split(".")
    tampered_payload = _b64(json.dumps(_claims(groups=["dba", "superusers"])).encode())
    public_pem = (
        serialization.load_pem_private_key(gateway.key_path.read_bytes(), None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    hs_header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    hs_body = _b64(json.dumps(_claims()).encode())
    hs_sig = _b64(hmac.new(public_pem, f"{hs_header}.{hs_body}".encode(), hashlib.sha256).digest())
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    other_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "expired": _sign(gateway, _claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600)),
        "not yet valid": _sign(gateway, _claims(nbf=now + 3600, exp=now + 7200)),
        "wrong issuer": _sign(gateway, _claims(iss="https://evil.example/")),
        "wrong audience": _sign(gateway, _claims(aud="some-other-api")),
        "unknown kid": _sign(gateway, _claims(), kid="not-a-known-kid"),
        "alg none": f"{none_header}.{hs_body}.",
        "HS256 signed with the public key": f"{hs_header}.{hs_body}.{hs_sig}",
        "tampered payload": f"{head}.{tampered_payload}.{sig}",
        "signed by another key with our kid": _sign(gateway, _claims(), key=other_key),
        "no exp": _sign(gateway, _claims(exp=None)),
        "garbage": "not-a-jwt-at-all",
        "empty": "",
    }


CASES = [
    "expired",
    "not yet valid",
    "wrong issuer",
    "wrong audience",
    "unknown kid",
    "alg none",
    "HS256 signed with the public key",
    "tampered payload",
    "signed by another key with our kid",
    "no exp",
    "garbage",
    "empty",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_token_refused_without_detail(gateway: GatewayProcess, case: str) -> None:
    token = _bad_tokens(gateway)[case]
    w = Wire(gateway.host, gateway.port)
    try:
        status, fields = w.login(token, user="mallory@example.com")
    finally:
        w.close()
    assert status == "error"
    assert isinstance(fields, dict)
    assert fields["C"] == "28P01"
    assert fields["S"] == "FATAL"
    # Nothing that helps an attacker: same text for every case, no detail/hint.
    assert fields["M"] == 'password authentication failed for user "mallory@example.com"'
    assert "D" not in fields and "H" not in fields
    # The token never shows up in the gateway's log.
    if token:
        assert token not in gateway.log_text()


def test_good_token_still_works_after_refusals(gateway: GatewayProcess) -> None:
    w = Wire(gateway.host, gateway.port)
    status, _ = w.login(gateway.token())
    assert status == "ok"
    w.close()


def test_identity_without_target_gets_28000(gateway: GatewayProcess) -> None:
    w = Wire(gateway.host, gateway.port)
    status, fields = w.login(gateway.token(sub="eve@example.com", groups=("marketing",)))
    w.close()
    assert status == "error" and isinstance(fields, dict)
    assert fields["C"] == "28000"


def test_plaintext_login_refused(gateway: GatewayProcess) -> None:
    w = Wire(gateway.host, gateway.port)
    status, fields = w.login(gateway.token(), tls=False)
    w.close()
    assert status == "error" and isinstance(fields, dict)
    assert fields["C"] == "28000"
    assert "TLS" in fields["M"]
    with pytest.raises(psycopg.OperationalError, match="requires TLS"):
        psycopg.connect(gateway.dsn(gateway.token(), sslmode="disable"))


def test_replication_connection_refused(gateway: GatewayProcess) -> None:
    w = Wire(gateway.host, gateway.port)
    status, fields = w.login(gateway.token(), replication="database")
    w.close()
    assert status == "error" and isinstance(fields, dict)
    assert fields["C"] == "0A000"


def test_protocol_3_2_negotiated_down(gateway: GatewayProcess) -> None:
    w = Wire(gateway.host, gateway.port)
    w.start_tls()
    from protocols.postgres.messages import build_startup_message

    w.send(
        build_startup_message({"user": "a", "database": "app", "_pq_.future": "1"}, version=196610)
    )
    mtype, body = w.message()
    assert mtype == "v"
    assert body[:4] == b"\0\0\0\0"  # newest minor we support: 0
    assert b"_pq_.future" in body
    assert w.message()[0] == "R"  # login continues in 3.0
    w.close()


def test_gssenc_request_answered_n_then_tls(gateway: GatewayProcess) -> None:
    w = Wire(gateway.host, gateway.port)
    w.send((8).to_bytes(4, "big") + (80877104).to_bytes(4, "big"))
    assert w.recv_exact(1) == b"N"
    status, _ = w.login(gateway.token())  # SSLRequest on the same socket
    assert status == "ok"
    w.close()


def test_allow_plaintext_config(start_gateway: object, tmp_path: Path) -> None:
    gw = start_gateway(extra="[tls]\nallow_plaintext = true\n", recording=False)  # type: ignore[operator]
    with psycopg.connect(gw.dsn(gw.token(), sslmode="disable")) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _token_of_length(gateway: GatewayProcess, length: int) -> str:
    """A valid token of exactly ``length`` characters (padded with a claim)."""
    pad = 0
    token = gateway.token()
    while len(token) < length:
        pad += max(1, (length - len(token)) * 3 // 4)
        token = gateway.token(pad="x" * pad)
    while len(token) > length:
        pad -= 1
        token = gateway.token(pad="x" * pad)
    assert len(token) == length or pytest.fail(f"no token of {length} characters")
    return token


def test_tokens_up_to_max_token_size_log_in(gateway: GatewayProcess) -> None:
    """auth.max_token_size (default 16384) bounds the token itself, not the message that
    carries it: a token of exactly that size logs in, one byte more is refused."""
    client = Wire(gateway.host, gateway.port)
    try:
        status, _ = client.login(_token_of_length(gateway, 16384))
        assert status == "ok"
    finally:
        client.close()
    client = Wire(gateway.host, gateway.port)
    try:
        status, fields = client.login(_token_of_length(gateway, 16385))
        assert status == "error" and isinstance(fields, dict) and fields["C"] == "08P01"
    finally:
        client.close()


def test_the_servers_refusal_of_a_startup_setting_reaches_the_client(
    gateway: GatewayProcess,
) -> None:
    """An error about the client's own startup options is passed on as the server wrote
    it (its SQLSTATE and message), not prefixed with the code or the gateway's context."""
    client = Wire(gateway.host, gateway.port)
    try:
        status, fields = client.login(gateway.token(), options="-c work_mem=bogus")
    finally:
        client.close()
    assert status == "error" and isinstance(fields, dict)
    assert fields["C"] == "22023"
    assert fields["M"] == 'invalid value for parameter "work_mem": "bogus"'
