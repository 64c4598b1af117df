"""Signing keys for token verification: a JWKS file, a JWKS URL, or OIDC discovery.

Rules this module enforces:

* A file is re-read when its (mtime, size, inode) changes; a file that fails to load leaves
  *no* keys (fail closed: an operator who removes a compromised key and makes a typo must not
  keep trusting the old key) and is retried on the next verification.
* Remote keys are cached for ``jwks_cache_ttl``. A token with an unknown ``kid`` triggers a
  refetch (key rotation), but fetches start at most once per ``jwks_min_refetch_interval`` so
  a stream of tokens with made-up ``kid``s cannot make the gateway hammer the IdP.
* Concurrent callers share one in-flight fetch; a caller that is cancelled (client went away)
  does not cancel the fetch for the others.
* When a refresh fails, the previous keys stay in use until a later refresh succeeds: an IdP
  outage should not lock everyone out, and removing a key is done by the IdP publishing a
  new set, which a successful refresh picks up.
* Keys are never taken from token headers (``jku``, ``x5u``, ``jwk`` are ignored).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import jwt

from gateway.config import AuthSection

__all__ = ["Jwk", "JwksCache", "JwksError", "KeySet"]

log = logging.getLogger("gateway.auth")

_MAX_DOCUMENT_SIZE: Final = 1024 * 1024  # a JWKS or discovery document; real ones are ~10 KiB
_HTTP_TIMEOUT: Final = aiohttp.ClientTimeout(total=10)
_SIGNING_KEY_TYPES: Final = frozenset({"RSA", "EC", "OKP"})
_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})


class JwksError(Exception):
    """Keys could not be obtained (unreachable IdP, bad document, unreadable file)."""


@dataclass(frozen=True, slots=True)
class Jwk:
    kid: str | None
    alg: str | None  # the JWK's own "alg" member, when it declares one
    key: Any  # a cryptography public key object


class KeySet:
    """Parsed signing keys, looked up by ``kid``."""

    __slots__ = ("_by_kid", "keys")

    def __init__(self, keys: list[Jwk]) -> None:
        self.keys = keys
        self._by_kid: dict[str, list[Jwk]] = {}
        for key in keys:
            if key.kid is not None:
                self._by_kid.setdefault(key.kid, []).append(key)

    def has_kid(self, kid: str) -> bool:
        return kid in self._by_kid

    def lookup(self, kid: str | None) -> list[Jwk]:
        """Keys for ``kid``; without a ``kid`` every key is a candidate."""
        return list(self.keys) if kid is None else list(self._by_kid.get(kid, ()))

    @classmethod
    def from_json(cls, data: bytes, source: str) -> KeySet:
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise JwksError(f"{source}: not valid JSON ({exc})") from None
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise JwksError(f'{source}: not a JWK set (no "keys" array)')
        keys = [key for key in (_parse_jwk(entry, source) for entry in entries) if key]
        if not keys:
            raise JwksError(f"{source}: no usable signing keys")
        return cls(keys)


def _parse_jwk(entry: object, source: str) -> Jwk | None:
    if not isinstance(entry, dict):
        return None
    kid = entry.get("kid")
    kid = kid if isinstance(kid, str) else None
    if entry.get("use", "sig") != "sig" or entry.get("kty") not in _SIGNING_KEY_TYPES:
        return None  # encryption keys and symmetric ("oct") keys never verify our tokens
    alg = entry.get("alg")
    try:
        key = jwt.PyJWK(entry).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring JWK kid=%r from %s: %s", kid, source, exc)
        return None
    if hasattr(key, "public_key"):
        # A private JWK published by mistake: verify with its public half only.
        log.warning("JWK kid=%r from %s contains private key material", kid, source)
        key = key.public_key()
    return Jwk(kid=kid, alg=alg if isinstance(alg, str) else None, key=key)


def _check_remote_url(url: object, what: str) -> str:
    if isinstance(url, str):
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        # Plain http only where nothing leaves the machine (development, tests).
        local = parts.scheme == "http" and parts.hostname in _LOOPBACK_NAMES
        if parts.hostname and (secure or local):
            return url
    raise JwksError(f"{what}: {url!r} is not an https:// URL")


class JwksCache:
    """Gives the current KeySet, fetching or re-reading it as the rules above say."""

    def __init__(
        self,
        auth: AuthSection,
        *,
        http_session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        self._auth = auth
        self._http_session_factory = http_session_factory
        self._http: aiohttp.ClientSession | None = None
        self._keys: KeySet | None = None
        self._file_signature: tuple[int, int, int] | None = None
        self._fresh_until = -math.inf
        self._last_attempt = -math.inf
        self._last_error = "signing keys have not been fetched yet"
        self._inflight: asyncio.Task[None] | None = None
        self._jwks_uri: str | None = auth.jwks_url
        self._fetch_count = 0

    @property
    def fetch_count(self) -> int:
        """Remote fetch attempts so far (for metrics and tests)."""
        return self._fetch_count

    @property
    def loaded(self) -> bool:
        """Signing keys are at hand (readiness): a local file, or a successful fetch."""
        return self._auth.jwks_file is not None or self._keys is not None

    async def start(self) -> None:
        if self._auth.jwks_file is not None:
            self._load_file()  # a broken local file is a startup error
            return
        if self._http is None:
            factory = self._http_session_factory
            self._http = factory() if factory else aiohttp.ClientSession(timeout=_HTTP_TIMEOUT)
        # An unreachable IdP at startup is logged, not fatal: logins retry (rate limited).
        await self._refresh()

    async def close(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def get(self, kid: str | None) -> KeySet:
        """The keys to verify a token whose header carries ``kid``. Raises JwksError."""
        if self._auth.jwks_file is not None:
            return self._load_file()
        if self._keys is None or time.monotonic() >= self._fresh_until:
            await self._refresh()
        elif kid is not None and not self._keys.has_kid(kid):
            await self._refresh()  # maybe the IdP rotated keys; rate limited
        if self._keys is None:
            raise JwksError(self._last_error)
        return self._keys

    # ------------------------------------------------------------------ file

    def _load_file(self) -> KeySet:
        path = self._auth.jwks_file
        assert path is not None
        try:
            st = os.stat(path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if self._keys is not None and signature == self._file_signature:
                return self._keys
            self._keys = None  # fail closed until the new content parses
            self._file_signature = signature
            data = Path(path).read_bytes()
        except OSError as exc:
            self._keys = None
            raise JwksError(f"auth.jwks_file: cannot read {path}: {exc.strerror}") from None
        try:
            self._keys = KeySet.from_json(data, f"auth.jwks_file {path}")
        except JwksError:
            log.error("signing keys from %s could not be loaded; refusing all tokens", path)
            raise
        log.info("loaded %d signing key(s) from %s", len(self._keys.keys), path)
        return self._keys

    # ------------------------------------------------------------------ remote

    async def _refresh(self) -> None:
        if self._inflight is None:
            now = time.monotonic()
            if now - self._last_attempt < self._auth.jwks_min_refetch_interval:
                return  # rate limited: keep what we have
            self._last_attempt = now
            self._inflight = asyncio.create_task(self._fetch(), name="jwks-fetch")
        # shield: a cancelled login must not cancel the fetch other logins wait for.
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        try:
            self._fetch_count += 1
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover()
            body = await self._get(self._jwks_uri)
            self._keys = KeySet.from_json(body, f"JWKS {self._jwks_uri}")
            self._fresh_until = time.monotonic() + self._auth.jwks_cache_ttl
            log.info("fetched %d signing key(s) from %s", len(self._keys.keys), self._jwks_uri)
        except JwksError as exc:
            self._fail(str(exc))
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._fail(f"fetching signing keys failed: {type(exc).__name__}: {exc}")
        except Exception as exc:
            # Never let a surprise escape into every waiting login; fail closed and log it.
            log.exception("unexpected error while fetching signing keys")
            self._fail(f"fetching signing keys failed: {type(exc).__name__}")
        finally:
            self._inflight = None

    def _fail(self, message: str) -> None:
        self._last_error = message
        if self._auth.jwks_url is None:
            self._jwks_uri = None  # rediscover next time: the jwks_uri may have moved
        log.warning("%s (keeping %s)", message, "previous keys" if self._keys else "no keys")

    async def _discover(self) -> str:
        url = self._auth.discovery_url
        try:
            document = json.loads(await self._get(url))
        except ValueError as exc:
            raise JwksError(f"discovery document {url}: not valid JSON ({exc})") from None
        if not isinstance(document, dict):
            raise JwksError(f"discovery document {url}: not a JSON object")
        # OpenID Connect Discovery 1.0 section 4.3: the issuer must match exactly.
        if document.get("issuer") != self._auth.issuer:
            raise JwksError(
                f"discovery document {url}: issuer {document.get('issuer')!r} "
                f"does not match auth.issuer {self._auth.issuer!r}"
            )
        return _check_remote_url(document.get("jwks_uri"), f"discovery document {url} jwks_uri")

    async def _get(self, url: str) -> bytes:
        if self._http is None:
            raise JwksError("the token verifier was not started")
        async with self._http.get(url, timeout=_HTTP_TIMEOUT) as response:
            if response.status != 200:
                raise JwksError(f"GET {url}: HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > _MAX_DOCUMENT_SIZE:
                    raise JwksError(f"GET {url}: response larger than {_MAX_DOCUMENT_SIZE} bytes")
            return bytes(body)
