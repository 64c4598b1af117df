"""Development signing keys and tokens (``gateway keys generate``, ``gateway token``).

For demos and tests only: production tokens come from a real IdP. The private key is written
with mode 0600 and files are replaced atomically, so a crash never leaves half a key.

The key id is the RFC 7638 JWK thumbprint of the public key unless one is chosen explicitly,
in which case it is kept in a ``signing_key.kid`` sidecar next to the key. ``keys generate``
and ``mint_token`` use the same rule, so the minted tokens' ``kid`` matches ``jwks.json``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_ISSUER",
    "JWKS_NAME",
    "KEY_ALGORITHMS",
    "SIGNING_KEY_NAME",
    "algorithm_for_key",
    "generate_signing_key",
    "jwk_thumbprint",
    "key_id_for",
    "load_signing_key",
    "mint_token",
    "public_jwk",
]

SIGNING_KEY_NAME: Final = "signing_key.pem"
JWKS_NAME: Final = "jwks.json"
KID_SUFFIX: Final = ".kid"
DEFAULT_AUDIENCE: Final = "db-gateway"
DEFAULT_ISSUER: Final = "https://gateway.local/dev"
KEY_ALGORITHMS: Final = ("RS256", "ES256", "EdDSA")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# JWA (RFC 7518 section 3.4) ties each ES algorithm to one curve.
_EC_BY_CURVE: Final[Mapping[str, tuple[str, str, int]]] = {
    "secp256r1": ("P-256", "ES256", 32),
    "secp384r1": ("P-384", "ES384", 48),
    "secp521r1": ("P-521", "ES512", 66),
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _new_key(alg: str) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {alg!r}; choose one of {', '.join(KEY_ALGORITHMS)}")


def public_jwk(public_key: PublicKey) -> dict[str, str]:
    """The public JWK members (RFC 7517/7518/8037), without kid/alg/use."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"kty": "RSA", "n": _b64url(_uint(numbers.n)), "e": _b64url(_uint(numbers.e))}
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        crv, _, size = _ec_params(public_key.curve)
        point = public_key.public_numbers()
        return {
            "kty": "EC",
            "crv": crv,
            "x": _b64url(point.x.to_bytes(size, "big")),
            "y": _b64url(point.y.to_bytes(size, "big")),
        }
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}


def _ec_params(curve: ec.EllipticCurve) -> tuple[str, str, int]:
    try:
        return _EC_BY_CURVE[curve.name]
    except KeyError:
        raise ValueError(f"unsupported EC curve {curve.name}") from None


def jwk_thumbprint(public_key: PublicKey) -> str:
    """RFC 7638 thumbprint: SHA-256 over the required members, sorted, no whitespace."""
    jwk = public_jwk(public_key)
    required = {
        "RSA": ("e", "kty", "n"),
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
    }
    canonical = {k: jwk[k] for k in required[jwk["kty"]]}
    encoded = json.dumps(canonical, separators=(",", ":"), sort_keys=True).encode()
    return _b64url(hashlib.sha256(encoded).digest())


def algorithm_for_key(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return _ec_params(key.curve)[1]
    return "EdDSA"


def load_signing_key(path: str | os.PathLike[str]) -> PrivateKey:
    """An unencrypted PEM private key (RSA, EC or Ed25519). Raises ValueError / OSError."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, PrivateKey):
        raise ValueError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def key_id_for(key_path: str | os.PathLike[str], private_key: PrivateKey) -> str:
    """The kid from the sidecar file next to the key, else the RFC 7638 thumbprint."""
    sidecar = Path(key_path).with_suffix(KID_SUFFIX)
    try:
        kid = sidecar.read_text("utf-8").strip()
    except FileNotFoundError:
        kid = ""
    return kid or jwk_thumbprint(private_key.public_key())


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # Write a temporary file with the final mode, then rename: readers see the old file or
    # the whole new one, and the private key is never readable by others, even briefly.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate_signing_key(
    out_dir: str | os.PathLike[str],
    alg: str = "ES256",
    *,
    kid: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir/signing_key.pem`` (0600) and ``out_dir/jwks.json``; return the key path.

    Raises FileExistsError if either file exists and ``overwrite`` is false (replacing a key
    silently invalidates every token signed with it).
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    key_path, jwks_path = directory / SIGNING_KEY_NAME, directory / JWKS_NAME
    sidecar = key_path.with_suffix(KID_SUFFIX)
    if not overwrite:
        for existing in (key_path, jwks_path):
            if existing.exists():
                raise FileExistsError(f"{existing} already exists (use --force to replace it)")
    private_key = _new_key(alg)
    public_key = private_key.public_key()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_id = kid or jwk_thumbprint(public_key)
    jwk: dict[str, str] = {**public_jwk(public_key), "kid": key_id, "alg": alg, "use": "sig"}
    _write_atomic(key_path, pem, 0o600)
    if kid:
        _write_atomic(sidecar, kid.encode() + b"\n", 0o644)
    else:
        sidecar.unlink(missing_ok=True)  # a stale sidecar would override the thumbprint
    _write_atomic(jwks_path, json.dumps({"keys": [jwk]}, indent=2).encode() + b"\n", 0o644)
    return key_path


def mint_token(
    key_path: str | os.PathLike[str],
    sub: str,
    groups: Iterable[str],
    ttl_seconds: float,
    audience: str = DEFAULT_AUDIENCE,
    issuer: str = DEFAULT_ISSUER,
    extra_claims: Mapping[str, Any] | None = None,
    *,
    kid: str | None = None,
    groups_claim: str = "groups",
) -> str:
    """A signed JWT for ``sub``; ``extra_claims`` are added last and may override defaults."""
    if ttl_seconds <= 0:
        raise ValueError("ttl must be positive")
    private_key = load_signing_key(key_path)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        groups_claim: list(groups),
        "iat": now,
        "nbf": now,
        "exp": now + max(1, round(ttl_seconds)),
        "jti": secrets.token_hex(16),
    }
    claims.update(extra_claims or {})
    return jwt.encode(
        claims,
        private_key,
        algorithm=algorithm_for_key(private_key),
        headers={"kid": kid or key_id_for(key_path, private_key)},
    )
