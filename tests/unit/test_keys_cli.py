"""`gateway keys generate` and `gateway token`, checked with the real TokenVerifier."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.auth.jwt import TokenVerifier
from gateway.cli import main
from gateway.config import AuthSection
from gateway.identity import Identity
from gateway.keys import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    generate_signing_key,
    jwk_thumbprint,
    load_signing_key,
    mint_token,
)


def generate(capsys: pytest.CaptureFixture[str], out: Path, *extra: str) -> str:
    assert main(["keys", "generate", "--out", str(out), *extra]) == 0
    return capsys.readouterr().out


def token(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["token", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # only the token, so $(gateway token ...) works
    return out.strip()


async def verify(jwks: Path, value: str, **auth: Any) -> Identity:
    settings: dict[str, Any] = {
        "issuer": DEFAULT_ISSUER,
        "audience": DEFAULT_AUDIENCE,
        "jwks_file": str(jwks),
    }
    settings.update(auth)
    verifier = TokenVerifier(AuthSection(**settings))
    await verifier.start()
    try:
        return await verifier.verify(value)
    finally:
        await verifier.close()


@pytest.mark.parametrize(
    ("alg", "key_type"),
    [
        ("ES256", ec.EllipticCurvePrivateKey),
        ("RS256", rsa.RSAPrivateKey),
        ("EdDSA", ed25519.Ed25519PrivateKey),
    ],
)
async def test_generate_then_mint_then_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alg: str, key_type: type
) -> None:
    out = generate(capsys, tmp_path / "keys", "--alg", alg)
    key_path, jwks_path = tmp_path / "keys" / "signing_key.pem", tmp_path / "keys" / "jwks.json"
    assert f"wrote {key_path}" in out and f"wrote {jwks_path}" in out
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert isinstance(load_signing_key(key_path), key_type)

    (jwk,) = json.loads(jwks_path.read_text())["keys"]
    assert (jwk["alg"], jwk["use"]) == (alg, "sig")
    assert "d" not in jwk  # public only
    assert jwk["kid"] == jwk_thumbprint(load_signing_key(key_path).public_key())

    value = token(
        capsys,
        "--key", str(key_path), "--sub", "alice@example.com", "--groups", "dba, analysts",
        "--ttl", "15m", "--claim", "email=alice@example.com", "--claim", "level=3",
    )  # fmt: skip
    header = jwt.get_unverified_header(value)
    assert (header["alg"], header["kid"]) == (alg, jwk["kid"])

    identity = await verify(jwks_path, value, user_claim="email")
    assert identity.subject == "alice@example.com"
    assert identity.groups == ("dba", "analysts")
    claims = identity.claims
    assert claims["level"] == 3 and claims["sub"] == "alice@example.com"
    assert claims["iat"] == claims["nbf"] and claims["exp"] - claims["iat"] == 900
    assert abs(claims["iat"] - time.time()) < 5 and len(claims["jti"]) == 32


async def test_explicit_kid_sidecar_and_custom_audience(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = generate(capsys, tmp_path, "--kid", "dev-1")
    assert "kid=dev-1" in out
    assert (tmp_path / "signing_key.kid").read_text().strip() == "dev-1"
    value = token(
        capsys,
        "--key", str(tmp_path / "signing_key.pem"), "--sub", "bob", "--ttl", "1h",
        "--aud", "other", "--iss", "https://idp.test/",
    )  # fmt: skip
    assert jwt.get_unverified_header(value)["kid"] == "dev-1"
    identity = await verify(
        tmp_path / "jwks.json", value, audience="other", issuer="https://idp.test/"
    )
    assert identity.groups == ()


def test_generate_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate(capsys, tmp_path)
    before = (tmp_path / "signing_key.pem").read_bytes()
    assert main(["keys", "generate", "--out", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "signing_key.pem").read_bytes() == before
    generate(capsys, tmp_path, "--force")
    assert (tmp_path / "signing_key.pem").read_bytes() != before
    assert stat.S_IMODE((tmp_path / "signing_key.pem").stat().st_mode) == 0o600


def test_token_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--key", str(tmp_path / "missing.pem"), "--sub", "x"]) == 1
    assert "error:" in capsys.readouterr().err
    key = generate_signing_key(tmp_path)
    assert main(["token", "--key", str(key), "--sub", "x", "--ttl", "soon"]) == 1
    assert "invalid duration" in capsys.readouterr().err
    assert main(["token", "--key", str(key), "--sub", "x", "--claim", "novalue"]) == 1
    assert "K=V" in capsys.readouterr().err


async def test_library_functions_used_by_the_demo(tmp_path: Path) -> None:
    key = generate_signing_key(tmp_path / "k", alg="ES256")
    value = mint_token(key, "carol", ["contractors"], 60, "aud-x", "https://iss.example/")
    identity = await verify(
        tmp_path / "k" / "jwks.json", value, audience="aud-x", issuer="https://iss.example/"
    )
    assert identity.subject == "carol"
    assert identity.groups == ("contractors",)
    with pytest.raises(ValueError):
        mint_token(key, "carol", [], 0, "a", "i")
