"""TokenVerifier against real keys, real pyjwt tokens and a real local JWKS/OIDC server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from gateway.auth.jwks import JwksError
from gateway.auth.jwt import AuthenticationFailed, KeysUnavailable, TokenVerifier
from gateway.config import AuthSection

ISSUER = "https://idp.example.com/"
AUDIENCE = "db-gateway"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    data = {**data, "kid": kid, "use": "sig"}
    if alg:
        data["alg"] = alg
    return data


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "groups": ["analysts", "contractors"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(key: Any = RSA_KEY, kid: str = "rsa-1", alg: str = "RS256", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def auth(**overrides: Any) -> AuthSection:
    settings: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE}
    settings.update(overrides)
    return AuthSection(**settings)


KEYS = {"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1", "ES256"), jwk(ED_KEY, "ed-1")]}


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(KEYS))
    return path


@pytest.fixture
async def verifier(jwks_file: Path) -> AsyncIterator[TokenVerifier]:
    v = TokenVerifier(auth(jwks_file=str(jwks_file)))
    await v.start()
    yield v
    await v.close()


# ------------------------------------------------------------------ a real local IdP


class IdP:
    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": list(KEYS["keys"])}
        self.jwks_hits = 0
        self.discovery_hits = 0
        self.delay = 0.0
        self.base = ""
        self.issuer_override: str | None = None

    async def handle_jwks(self, request: web.Request) -> web.Response:
        self.jwks_hits += 1
        await asyncio.sleep(self.delay)
        return web.json_response(self.jwks)

    async def handle_discovery(self, request: web.Request) -> web.Response:
        self.discovery_hits += 1
        issuer = self.issuer_override or self.base
        return web.json_response({"issuer": issuer, "jwks_uri": f"{self.base}/keys"})


@pytest.fixture
async def idp() -> AsyncIterator[IdP]:
    server = IdP()
    app = web.Application()
    app.router.add_get("/keys", server.handle_jwks)
    app.router.add_get("/.well-known/openid-configuration", server.handle_discovery)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


Started = Callable[..., Awaitable[TokenVerifier]]


@pytest.fixture
async def started() -> AsyncIterator[Started]:
    verifiers: list[TokenVerifier] = []

    async def start(section: AuthSection) -> TokenVerifier:
        v = TokenVerifier(section)
        verifiers.append(v)
        await v.start()
        return v

    yield start
    for v in verifiers:
        await v.close()


# ------------------------------------------------------------------ valid tokens


async def test_valid_rsa_token_gives_identity(verifier: TokenVerifier) -> None:
    token_claims = claims()
    token = jwt.encode(token_claims, RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    identity = await verifier.verify(token)
    assert identity.subject == "alice"
    assert identity.groups == ("analysts", "contractors")
    assert identity.issuer == ISSUER
    assert identity.token_id == token_claims["jti"]
    assert identity.expires_at == float(token_claims["exp"])
    assert identity.issued_at == float(token_claims["iat"])
    assert identity.claims == token_claims
    assert token not in repr(identity)


@pytest.mark.parametrize(
    ("key", "kid", "alg"),
    [
        (RSA_KEY, "rsa-1", "RS512"),
        (RSA_KEY, "rsa-1", "PS256"),
        (EC_KEY, "ec-1", "ES256"),
        (ED_KEY, "ed-1", "EdDSA"),
    ],
)
async def test_every_key_family(verifier: TokenVerifier, key: Any, kid: str, alg: str) -> None:
    assert (await verifier.verify(mint(key, kid, alg))).subject == "alice"


async def test_token_without_kid_tries_matching_keys(verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(), EC_KEY, algorithm="ES256")
    assert (await verifier.verify(token)).subject == "alice"


async def test_claims_mapping(jwks_file: Path, started: Started) -> None:
    v = await started(auth(jwks_file=str(jwks_file), user_claim="email", groups_claim="roles"))
    identity = await v.verify(mint(email="a@example.com", roles="dba"))
    assert (identity.subject, identity.groups) == ("a@example.com", ("dba",))
    identity = await v.verify(mint(email="a@example.com"))
    assert identity.groups == ()  # a missing groups claim means no groups

    nested = await started(
        auth(jwks_file=str(jwks_file), groups_claim="realm_access.roles", audience=["x", AUDIENCE])
    )
    identity = await nested.verify(mint(realm_access={"roles": ["r1", "r2"]}))
    assert identity.groups == ("r1", "r2")


async def test_expiry_leeway(verifier: TokenVerifier) -> None:
    now = int(time.time())
    # 10 s past exp is inside the default 30 s leeway.
    assert await verifier.verify(mint(exp=now - 10))


# ------------------------------------------------------------------ refused tokens


def tampered() -> str:
    header, _, signature = mint().split(".")
    payload = b64(json.dumps(claims(sub="root", groups=["dba"])).encode())
    return f"{header}.{payload}.{signature}"


def hs256_with_public_key() -> str:
    # The classic key-confusion attack: HMAC "signed" with the RSA public key PEM as secret.
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
        + "."
        + b64(json.dumps(claims()).encode())
    )
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def relabel(token: str, alg: str) -> str:
    # pyjwt will not sign with a mismatched curve, so change the header of a real token.
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    return ".".join([b64(json.dumps({**header, "alg": alg}).encode()), *token.split(".")[1:]])


def unsigned() -> str:
    header = {"alg": "none", "typ": "JWT", "kid": "rsa-1"}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}."


def with_crit() -> str:
    return jwt.encode(
        claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1", "crit": ["exp"]}
    )


BAD_TOKENS: list[tuple[str, Callable[[], str], str]] = [
    ("expired", lambda: mint(exp=int(time.time()) - 120), "token expired"),
    ("not yet valid", lambda: mint(nbf=int(time.time()) + 120), "not yet valid"),
    ("issued in the future", lambda: mint(iat=int(time.time()) + 120), "not yet valid"),
    ("wrong issuer", lambda: mint(iss="https://evil.example.com/"), "issuer mismatch"),
    ("wrong audience", lambda: mint(aud="something-else"), "audience mismatch"),
    ("no audience", lambda: mint(aud=None), "required claim 'aud' is missing"),
    ("no exp", lambda: mint(exp=None), "required claim 'exp' is missing"),
    ("unknown kid", lambda: mint(kid="nope"), "no signing key for kid='nope'"),
    ("alg none", unsigned, "algorithm 'none' is not allowed"),
    ("HS256 with public key", hs256_with_public_key, "algorithm 'HS256' is not allowed"),
    ("tampered payload", tampered, "signature verification failed"),
    ("signed by another key", lambda: mint(OTHER_RSA_KEY), "signature verification failed"),
    ("RS256 naming an EC key", lambda: mint(RSA_KEY, "ec-1"), "no signing key for kid='ec-1'"),
    ("EdDSA naming an RSA key", lambda: mint(ED_KEY, "rsa-1", "EdDSA"), "no signing key"),
    ("ES384 on a P-256 key", lambda: relabel(mint(EC_KEY, "ec-1", "ES256"), "ES384"), "no signing"),
    ("missing user claim", lambda: mint(sub=None), "claim 'sub' (auth.user_claim) is missing"),
    ("bad groups", lambda: mint(groups=["a", 1]), "is not a list of strings"),
    ("crit header", with_crit, "critical"),
    ("garbage", lambda: "not-a-jwt", "malformed token"),
    ("bad base64", lambda: "a.b.c", "malformed token"),
]


@pytest.mark.parametrize(
    ("make", "reason"), [(m, r) for _, m, r in BAD_TOKENS], ids=[n for n, _, _ in BAD_TOKENS]
)
async def test_bad_tokens_are_refused_without_leaking_them(
    verifier: TokenVerifier,
    caplog: pytest.LogCaptureFixture,
    make: Callable[[], str],
    reason: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = make()
    with pytest.raises(AuthenticationFailed) as info:
        await verifier.verify(token)
    assert reason in str(info.value)
    assert not isinstance(info.value, KeysUnavailable)
    for part in token.split("."):
        if len(part) > 8:
            assert part not in str(info.value)
            assert part not in caplog.text


async def test_symmetric_algorithms_refused_even_if_configured(
    jwks_file: Path, started: Started
) -> None:
    # AuthSection built in code skips config validation; the verifier must still refuse.
    v = await started(auth(jwks_file=str(jwks_file), algorithms=["HS256", "none", "RS256"]))
    for token in (hs256_with_public_key(), unsigned()):
        with pytest.raises(AuthenticationFailed, match="is not allowed"):
            await v.verify(token)


async def test_algorithm_outside_the_allow_list(jwks_file: Path, started: Started) -> None:
    v = await started(auth(jwks_file=str(jwks_file), algorithms=["ES256"]))
    with pytest.raises(AuthenticationFailed, match="'RS256' is not allowed"):
        await v.verify(mint())


async def test_jwk_alg_must_match_header(jwks_file: Path, started: Started) -> None:
    jwks_file.write_text(json.dumps({"keys": [jwk(RSA_KEY, "rsa-1", "PS256")]}))
    v = await started(auth(jwks_file=str(jwks_file)))
    with pytest.raises(AuthenticationFailed, match="no signing key"):
        await v.verify(mint(alg="RS256"))
    assert await v.verify(mint(alg="PS256"))


async def test_oversized_token(jwks_file: Path, started: Started) -> None:
    v = await started(auth(jwks_file=str(jwks_file), max_token_size=200))
    token = mint(padding="x" * 500)
    with pytest.raises(AuthenticationFailed, match=r"exceeds auth\.max_token_size"):
        await v.verify(token)


# ------------------------------------------------------------------ JWKS file


async def test_jwks_file_is_reloaded_when_it_changes(jwks_file: Path, started: Started) -> None:
    v = await started(auth(jwks_file=str(jwks_file)))
    other = mint(OTHER_RSA_KEY, "rsa-2")
    with pytest.raises(AuthenticationFailed):
        await v.verify(other)

    jwks_file.write_text(json.dumps({"keys": [jwk(OTHER_RSA_KEY, "rsa-2")]}))
    os.utime(jwks_file, ns=(time.time_ns(), time.time_ns() + 10**9))  # coarse mtime clocks
    assert await v.verify(other)
    with pytest.raises(AuthenticationFailed):
        await v.verify(mint())  # the removed key is no longer trusted

    jwks_file.write_text("{ broken")
    with pytest.raises(KeysUnavailable, match="not valid JSON"):
        await v.verify(other)  # fail closed, not "keep the old keys"
    jwks_file.write_text(json.dumps({"keys": [jwk(OTHER_RSA_KEY, "rsa-2")]}))
    assert await v.verify(other)  # and recovers on the next verification


async def test_missing_jwks_file_fails_at_start(tmp_path: Path) -> None:
    v = TokenVerifier(auth(jwks_file=str(tmp_path / "missing.json")))
    with pytest.raises(JwksError, match=r"auth\.jwks_file: cannot read"):
        await v.start()
    await v.close()


async def test_unusable_keys_are_skipped(jwks_file: Path, started: Started) -> None:
    keys = [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {**jwk(RSA_KEY, "enc"), "use": "enc"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        jwk(RSA_KEY, "rsa-1"),
    ]
    jwks_file.write_text(json.dumps({"keys": keys}))
    v = await started(auth(jwks_file=str(jwks_file)))
    assert await v.verify(mint())
    with pytest.raises(AuthenticationFailed, match="no signing key"):
        await v.verify(mint(kid="enc"))


# ------------------------------------------------------------------ JWKS URL and discovery


async def test_jwks_url(idp: IdP, started: Started) -> None:
    v = await started(auth(jwks_url=f"{idp.base}/keys"))
    assert idp.jwks_hits == 1  # fetched at start
    assert (await v.verify(mint(EC_KEY, "ec-1", "ES256"))).subject == "alice"
    assert (await v.verify(mint())).subject == "alice"
    assert idp.jwks_hits == 1  # served from the cache


async def test_discovery(idp: IdP, started: Started) -> None:
    v = await started(auth(issuer=idp.base))
    assert await v.verify(mint(ED_KEY, "ed-1", "EdDSA", iss=idp.base))
    assert (idp.discovery_hits, idp.jwks_hits) == (1, 1)


async def test_discovery_issuer_mismatch_is_refused(idp: IdP, started: Started) -> None:
    idp.issuer_override = "https://somebody-else.example.com"
    v = await started(auth(issuer=idp.base))
    with pytest.raises(KeysUnavailable, match=r"does not match auth\.issuer"):
        await v.verify(mint(iss=idp.base))
    assert idp.jwks_hits == 0


async def test_unknown_kid_refetches_once_then_is_rate_limited(idp: IdP, started: Started) -> None:
    v = await started(auth(jwks_url=f"{idp.base}/keys", jwks_min_refetch_interval=0.5))
    assert idp.jwks_hits == 1
    await asyncio.sleep(0.55)  # the fetch at start counts against the interval too
    rotated = mint(OTHER_RSA_KEY, "rsa-2")

    with pytest.raises(AuthenticationFailed, match="no signing key for kid='rsa-2'"):
        await v.verify(rotated)
    assert idp.jwks_hits == 2  # one refetch for the unknown kid

    idp.jwks = {"keys": [*KEYS["keys"], jwk(OTHER_RSA_KEY, "rsa-2")]}
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            await v.verify(mint(OTHER_RSA_KEY, "made-up"))
        with pytest.raises(AuthenticationFailed):
            await v.verify(rotated)
    assert idp.jwks_hits == 2  # rate limited: no fetch storm

    await asyncio.sleep(0.55)
    assert (await v.verify(rotated)).subject == "alice"  # the rotated key is picked up
    assert idp.jwks_hits == 3
    assert await v.verify(mint())  # known kids never refetch
    assert idp.jwks_hits == 3


async def test_concurrent_verifications_share_one_fetch(idp: IdP, started: Started) -> None:
    v = await started(auth(jwks_url=f"{idp.base}/keys", jwks_min_refetch_interval=0))
    idp.jwks = {"keys": [jwk(OTHER_RSA_KEY, "rsa-2")]}
    idp.delay = 0.1
    rotated = mint(OTHER_RSA_KEY, "rsa-2")
    results = await asyncio.gather(*(v.verify(rotated) for _ in range(20)))
    assert {r.subject for r in results} == {"alice"}
    assert idp.jwks_hits == 2  # start + one shared refetch


async def test_cancelled_login_does_not_cancel_the_shared_fetch(idp: IdP, started: Started) -> None:
    v = await started(auth(jwks_url=f"{idp.base}/keys", jwks_min_refetch_interval=0))
    idp.jwks = {"keys": [jwk(OTHER_RSA_KEY, "rsa-2")]}
    idp.delay = 0.1
    rotated = mint(OTHER_RSA_KEY, "rsa-2")
    first = asyncio.create_task(v.verify(rotated))
    second = asyncio.create_task(v.verify(rotated))
    await asyncio.sleep(0.02)
    first.cancel()
    assert (await second).subject == "alice"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert idp.jwks_hits == 2


async def test_cache_ttl_refresh_and_outage_keeps_previous_keys(idp: IdP, started: Started) -> None:
    v = await started(
        auth(jwks_url=f"{idp.base}/keys", jwks_cache_ttl=0.1, jwks_min_refetch_interval=0)
    )
    await asyncio.sleep(0.15)
    assert await v.verify(mint())
    assert idp.jwks_hits == 2  # the TTL expired, so it refreshed

    idp.jwks = {"not": "a jwks"}  # the IdP starts serving junk
    await asyncio.sleep(0.15)
    assert await v.verify(mint())  # previous keys stay in use
    assert idp.jwks_hits == 3


async def test_unreachable_idp(started: Started) -> None:
    v = await started(auth(jwks_url="http://127.0.0.1:9/keys"))  # start() does not raise
    with pytest.raises(KeysUnavailable, match="fetching signing keys failed"):
        await v.verify(mint())


# ------------------------------------------------------------------ verified-token cache


async def test_a_verified_token_is_remembered_until_the_keys_change(
    jwks_file: Path, started: Started
) -> None:
    v = await started(auth(jwks_file=str(jwks_file)))
    token = mint()
    first = await v.verify(token)
    decoded = []
    original = v._decode
    v._decode = lambda *a: decoded.append(1) or original(*a)  # type: ignore[method-assign]
    assert await v.verify(token) is first  # no second signature check
    assert decoded == []
    # The key that signed it is removed from the JWKS: the cached result does not survive.
    jwks_file.write_text(json.dumps({"keys": [jwk(OTHER_RSA_KEY, "rsa-2")]}))
    os.utime(jwks_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(AuthenticationFailed):
        await v.verify(token)


async def test_a_remembered_token_still_expires(jwks_file: Path, started: Started) -> None:
    v = await started(auth(jwks_file=str(jwks_file), leeway=0))
    exp = int(time.time()) + 2
    token = mint(exp=exp)
    await v.verify(token)
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
    with pytest.raises(AuthenticationFailed, match="expired"):
        await v.verify(token)


async def test_a_tampered_token_is_not_taken_from_the_cache(
    jwks_file: Path, started: Started
) -> None:
    v = await started(auth(jwks_file=str(jwks_file)))
    token = mint()
    await v.verify(token)
    header, _payload, signature = token.split(".")
    forged = b64(json.dumps({**claims(), "sub": "mallory"}).encode())
    with pytest.raises(AuthenticationFailed):
        await v.verify(f"{header}.{forged}.{signature}")
