"""OIDC JWT verification: the password a client presents becomes an Identity.

Rules this module enforces, in order (cheap checks before any key lookup or crypto):

1. Size cap (``auth.max_token_size``) before parsing anything.
2. The header ``alg`` must be in ``auth.algorithms``; "none" and HMAC algorithms are refused
   even if a config built in code lists them, because we only hold public keys: accepting
   "HS256" would let anyone sign with the *public* key as the HMAC secret.
3. ``crit`` headers are refused (RFC 7515 section 4.1.11: we understand no extensions).
4. The key comes from our JWKS by ``kid`` (never from the token), and its type must match
   the algorithm family: RSA for RS*/PS*, EC on the matching curve for ES*, OKP for EdDSA. If
   the JWK declares its own ``alg``, that must equal the header's.
5. Signature, then ``iss`` (exact), ``aud``, ``exp`` (required), ``nbf``, ``iat``, with leeway.
6. The subject comes from ``auth.user_claim`` (a non-empty string) and the groups from
   ``auth.groups_claim`` (a string or a list of strings; missing means no groups).

``AuthenticationFailed`` messages are for the gateway's logs; the client only ever gets a
generic authentication error. Neither the token nor any part of it is logged.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gateway.auth.jwks import Jwk, JwksCache, JwksError, KeySet
from gateway.config import AuthSection
from gateway.identity import Identity

__all__ = ["AuthenticationFailed", "KeysUnavailable", "TokenVerifier"]

_EC_CURVES: Final[Mapping[str, type[ec.EllipticCurve]]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
_MISSING: Final = object()
# Verified tokens remembered (least recently used dropped first): ~1 KB each.
_VERIFIED_MAX: Final = 4096


class AuthenticationFailed(Exception):
    """The token was refused. The message is for logs only; never send it to the client."""


class KeysUnavailable(AuthenticationFailed):
    """No signing keys could be obtained (IdP unreachable, bad JWKS): not the client's fault."""


def _is_allowed_algorithm(alg: str) -> bool:
    return alg.lower() != "none" and not alg.upper().startswith("HS")


def key_matches_algorithm(key: Any, alg: str) -> bool:
    """Whether ``key`` (a cryptography public key) is of the family ``alg`` requires."""
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if alg in _EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _EC_CURVES[alg])
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


class TokenVerifier:
    """Verifies tokens against ``[auth]``. Use ``start()`` before and ``close()`` after."""

    def __init__(
        self,
        auth: AuthSection,
        *,
        http_session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        self._auth = auth
        self._algorithms = frozenset(a for a in auth.algorithms if _is_allowed_algorithm(a))
        self._audiences = auth.audiences
        self._keys = JwksCache(auth, http_session_factory=http_session_factory)
        # Verified tokens, by SHA-256 of the token (the token itself is not kept): a client
        # that opens many connections with one token (pools, CI jobs, pgbench -C) pays the
        # signature check once. An entry holds only while the token is unexpired and the
        # key set that verified it is still the current one (a JWKS change re-verifies).
        self._verified: OrderedDict[bytes, tuple[Identity, KeySet]] = OrderedDict()

    @property
    def jwks(self) -> JwksCache:
        return self._keys

    async def start(self) -> None:
        """Load the JWKS file (errors raise JwksError) or make a first fetch (errors logged)."""
        await self._keys.start()

    async def close(self) -> None:
        await self._keys.close()

    async def verify(self, token: str) -> Identity:
        """The Identity the token proves. Raises AuthenticationFailed (KeysUnavailable)."""
        if len(token) > self._auth.max_token_size:
            raise AuthenticationFailed(
                f"token of {len(token)} characters exceeds auth.max_token_size "
                f"({self._auth.max_token_size})"
            )
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._verified.get(digest)
        header = self._read_header(token)
        alg = header["alg"]
        kid = header.get("kid")
        try:
            keyset = await self._keys.get(kid)
        except JwksError as exc:
            raise KeysUnavailable(str(exc)) from None
        if cached is not None:
            identity, verified_by = cached
            assert identity.expires_at is not None  # "exp" is required
            if verified_by is keyset and time.time() < identity.expires_at + self._auth.leeway:
                self._verified.move_to_end(digest)
                return identity
            del self._verified[digest]  # expired, or the keys changed: verify again
        candidates = [k for k in keyset.lookup(kid) if self._usable(k, alg)]
        if not candidates:
            raise AuthenticationFailed(f"no signing key for kid={_shown(kid)} and alg={alg}")
        for key in candidates:
            try:
                claims = self._decode(token, key, alg)
            except jwt.InvalidSignatureError:
                continue  # without a kid several keys may be candidates
            except jwt.PyJWTError as exc:
                raise AuthenticationFailed(_reason(exc)) from None
            except (ValueError, TypeError):
                # Defensive: odd inputs that slip past pyjwt's own error types.
                raise AuthenticationFailed("malformed token") from None
            identity = self._identity(claims)
            self._verified[digest] = (identity, keyset)
            if len(self._verified) > _VERIFIED_MAX:
                self._verified.popitem(last=False)
            return identity
        raise AuthenticationFailed(f"signature verification failed (kid={_shown(kid)}, alg={alg})")

    def _read_header(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            # pyjwt's messages name the defect (padding, JSON, crit), never the token's content.
            raise AuthenticationFailed(f"malformed token ({_shown(str(exc))})") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthenticationFailed(f"algorithm {_shown(alg)} is not allowed")
        if "crit" in header:
            raise AuthenticationFailed("token uses critical header extensions")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationFailed("token header kid is not a string")
        return header

    @staticmethod
    def _usable(key: Jwk, alg: str) -> bool:
        if key.alg is not None and key.alg != alg:
            return False
        return key_matches_algorithm(key.key, alg)

    def _decode(self, token: str, key: Jwk, alg: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience=self._audiences,
            issuer=self._auth.issuer,
            leeway=self._auth.leeway,
            options={"require": ["exp", "iss", "aud"]},
        )
        return claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        subject = _claim(claims, self._auth.user_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthenticationFailed(
                f"claim {self._auth.user_claim!r} (auth.user_claim) is missing or not a string"
            )
        raw_groups = _claim(claims, self._auth.groups_claim)
        if raw_groups is _MISSING or raw_groups is None:
            groups: tuple[str, ...] = ()
        elif isinstance(raw_groups, str):
            groups = (raw_groups,)
        elif isinstance(raw_groups, list) and all(isinstance(g, str) for g in raw_groups):
            groups = tuple(raw_groups)
        else:
            # Fail closed: a group we cannot read might be the one a policy keys on.
            raise AuthenticationFailed(
                f"claim {self._auth.groups_claim!r} (auth.groups_claim) is not a list of strings"
            )
        jti = claims.get("jti")
        iat = claims.get("iat")
        return Identity(
            subject=subject,
            groups=groups,
            token_id=jti if isinstance(jti, str) else None,
            issuer=claims["iss"],
            expires_at=float(claims["exp"]),
            issued_at=float(iat) if isinstance(iat, int | float) else None,
            claims=claims,
        )


def _shown(value: object, limit: int = 64) -> str:
    """repr() of an attacker-controlled header value, cut short so logs stay readable."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(truncated)"


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """``claims[name]``; a dotted name not present as such walks nested objects.

    The exact key wins so that URL-named claims ("https://example.com/groups") work, and the
    dotted walk serves nested ones such as Keycloak's "realm_access.roles".
    """
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


_REASONS: Final[Mapping[type[jwt.PyJWTError], str]] = {
    jwt.ExpiredSignatureError: "token expired",
    jwt.ImmatureSignatureError: "token not yet valid (nbf/iat in the future)",
    jwt.InvalidIssuerError: "issuer mismatch",
    jwt.InvalidAudienceError: "audience mismatch",
    jwt.DecodeError: "malformed token",
}


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"required claim {exc.claim!r} is missing"
    for kind, reason in _REASONS.items():
        if isinstance(exc, kind):
            return reason
    return f"invalid token ({type(exc).__name__}: {exc})"
