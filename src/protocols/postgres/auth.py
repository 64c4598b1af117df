"""PostgreSQL authentication exchanges, sans-I/O.

Pieces (PostgreSQL manual, "Frontend/Backend Protocol" -> "Message Flow" ->
"Start-up", and "SASL Authentication"):

* SCRAM-SHA-256 client (gateway -> upstream) and server (scripted peer in
  tests, possibly the gateway's client-facing side later): RFC 5802 with the
  SHA-256 parameters of RFC 7677, no channel binding (gs2 header ``n,,``), and
  an empty user name in client-first as libpq sends it (the server uses the
  startup ``user`` instead).
* md5 (``"md5" + md5(md5(password + user) + salt)``) and cleartext.
* ``UpstreamAuthenticator``: the state machine fed every backend 'R' body.

Rules enforced here:

* The client verifies the server signature (``v=``) of RFC 5802 section 3
  before AuthenticationOk is accepted: a server that skips SASLFinal, or sends
  AuthenticationOk early, is not trusted (mutual authentication).
* The server nonce must extend ours (RFC 5802 section 5.1, ``r``) and the
  iteration count is bounded (a hostile server cannot make us spin PBKDF2).
* Once a method has been chosen, only its continuation or AuthenticationOk is
  accepted; nothing can downgrade SCRAM to cleartext mid-exchange.
* Cleartext is sent only over TLS unless explicitly allowed.
* After any violation the exchange is terminal: it keeps raising.

Error codes: malformed messages are "08P01" (protocol_violation); a failed
SCRAM verification or a server-side ``e=`` is "28P01" (invalid_password);
methods or situations we refuse are "28000" (invalid_authorization).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass, field
from enum import Enum
from struct import Struct

from ..errors import PeerViolation, UsageError
from .constants import AuthRequest, Frontend, SqlState
from .framing import build_message

__all__ = [
    "DEFAULT_ITERATIONS",
    "MAX_ITERATIONS",
    "SCRAM_SHA_256",
    "SCRAM_SHA_256_PLUS",
    "SaltedPasswordCache",
    "ScramSha256Client",
    "ScramSha256Server",
    "ScramVerifier",
    "UpstreamAuthenticator",
    "build_authentication",
    "build_password_message",
    "build_sasl_initial_response",
    "build_sasl_response",
    "make_scram_verifier",
    "md5_password_hash",
    "normalize_password",
    "parse_authentication",
    "parse_password_message",
    "parse_sasl_initial_response",
    "parse_sasl_mechanisms",
    "parse_scram_verifier",
    "salted_password",
    "saslprep",
]

SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_256_PLUS = "SCRAM-SHA-256-PLUS"

# PostgreSQL's default (scram_iterations GUC, PG16+; fixed 4096 before).
DEFAULT_ITERATIONS = 4096
# PG16 allows scram_iterations down to 1, so we accept >= 1; the upper bound
# keeps a hostile or misconfigured server from costing us seconds of PBKDF2.
MAX_ITERATIONS = 10_000_000

_NONCE_BYTES = 18  # libpq's SCRAM_RAW_NONCE_LEN
_SALT_BYTES = 16  # PostgreSQL's SCRAM_DEFAULT_SALT_LEN
_KEY_LEN = 32  # SHA-256 output (RFC 7677 section 3)

_INT32 = Struct("!i")
_PASSWORD = int(Frontend.PASSWORD)
_AUTHENTICATION = ord("R")


# ---------------------------------------------------------------------------
# SASLprep (RFC 4013), as PostgreSQL's src/common/saslprep.c applies it.


def _prohibited(ch: str) -> bool:
    # RFC 4013 section 2.3 (tables C.1.2, C.2.1, C.2.2, C.3-C.9 of RFC 3454)
    # plus section 2.5: unassigned code points (table A.1) are prohibited
    # because a password is a "stored string".
    return (
        stringprep.in_table_c12(ch)
        or stringprep.in_table_c21_c22(ch)
        or stringprep.in_table_c3(ch)
        or stringprep.in_table_c4(ch)
        or stringprep.in_table_c5(ch)
        or stringprep.in_table_c6(ch)
        or stringprep.in_table_c7(ch)
        or stringprep.in_table_c8(ch)
        or stringprep.in_table_c9(ch)
        or stringprep.in_table_a1(ch)
    )


def saslprep(text: str) -> str:
    """Apply SASLprep (RFC 4013) the way PostgreSQL does; ValueError if prohibited.

    Matches ``pg_saslprep`` so our SaltedPassword equals the one the server
    stored: pure ASCII is returned unchanged (even control characters); the
    prohibition and bidi checks (RFC 4013 sections 2.3 and 2.4) look at the
    string after mapping (section 2.1) and *before* NFKC (section 2.2), which
    is what PostgreSQL does; a string that maps to nothing is refused.
    """
    if text.isascii():
        return text
    # RFC 4013 section 2.1: C.1.2 (non-ASCII space) -> SPACE, B.1 -> nothing.
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    if not mapped:
        raise ValueError("SASLprep: string is empty after mapping")
    for ch in mapped:
        if _prohibited(ch):
            raise ValueError(f"SASLprep: prohibited character U+{ord(ch):04X}")
    # RFC 4013 section 2.4 -> RFC 3454 section 6: with any RandALCat (D.1)
    # character, no LCat (D.2) character, and RandALCat first and last.
    if any(stringprep.in_table_d1(ch) for ch in mapped) and (
        any(stringprep.in_table_d2(ch) for ch in mapped)
        or not stringprep.in_table_d1(mapped[0])
        or not stringprep.in_table_d1(mapped[-1])
    ):
        raise ValueError("SASLprep: invalid bidirectional string")
    # RFC 4013 section 2.2: Unicode normalization form KC.
    return unicodedata.normalize("NFKC", mapped)


def normalize_password(password: str | bytes) -> bytes:
    """The password bytes that enter PBKDF2 (RFC 5802 section 3, ``Normalize``).

    Like libpq and the server: SASLprep when the password is valid UTF-8 and
    passes it, otherwise the raw bytes. A ``str`` carrying surrogate escapes
    (non-UTF-8 bytes decoded with ``surrogateescape``) is taken back as raw bytes.
    """
    if isinstance(password, bytes):
        raw = password
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    else:
        text = password
        try:
            raw = password.encode("utf-8")
        except UnicodeEncodeError:
            return _encode_escaped(password)
    try:
        return saslprep(text).encode("utf-8")
    except ValueError:
        return raw


def _encode_escaped(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise UsageError("password contains lone surrogates") from exc


def _encode_secret(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    try:
        return secret.encode("utf-8")
    except UnicodeEncodeError:
        return _encode_escaped(secret)


# ---------------------------------------------------------------------------
# SCRAM primitives (RFC 5802 section 2.2 and 3, SHA-256 per RFC 7677).


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def salted_password(password: bytes, salt: bytes, iterations: int) -> bytes:
    """``SaltedPassword := Hi(Normalize(password), salt, i)`` (RFC 5802 section 3).

    ``Hi`` is PBKDF2 with HMAC as the PRF (RFC 5802 section 2.2).
    ``password`` is already normalized (see ``normalize_password``).
    """
    return hashlib.pbkdf2_hmac("sha256", password, salt, iterations)


class SaltedPasswordCache:
    """Bounded LRU cache of SaltedPassword per (password, salt, iterations).

    Reconnects to the same server reuse its salt and iteration count, so the
    PBKDF2 step (RFC 5802 section 3) runs once per credential, not per
    connection. Keys use an HMAC of the password under a per-instance random
    key, so the cache never holds the password or a plain hash of it.
    """

    __slots__ = ("_entries", "_key", "hits", "max_entries", "misses")

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise UsageError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self._entries: dict[tuple[bytes, bytes, int], bytes] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def salted_password(self, password: bytes, salt: bytes, iterations: int) -> bytes:
        """Return the cached SaltedPassword, computing (and caching) it on a miss."""
        key = (_hmac(self._key, password), salt, iterations)
        entries = self._entries
        found = entries.pop(key, None)
        if found is not None:
            self.hits += 1
            entries[key] = found  # re-insert: most recently used goes last
            return found
        self.misses += 1
        value = salted_password(password, salt, iterations)
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # least recently used
        entries[key] = value
        return value


@dataclass(frozen=True, slots=True)
class ScramVerifier:
    """A stored SCRAM-SHA-256 secret (RFC 5802 section 3: StoredKey, ServerKey)."""

    iterations: int
    salt: bytes
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    def __str__(self) -> str:
        # PostgreSQL's pg_authid.rolpassword format.
        return (
            f"{SCRAM_SHA_256}${self.iterations}:{_b64(self.salt)}"
            f"${_b64(self.stored_key)}:{_b64(self.server_key)}"
        )


def _make_nonce() -> str:
    # RFC 5802 section 5.1 (r): printable, no ','; base64 of random bytes
    # qualifies and is what libpq and the server send.
    return _b64(secrets.token_bytes(_NONCE_BYTES))


def _is_printable(value: str) -> bool:
    # RFC 5802 section 7: printable = %x21-2B / %x2D-7E (no ',').
    return all("!" <= ch <= "~" and ch != "," for ch in value)


def make_scram_verifier(
    password: str | bytes, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> str:
    """Build ``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`` (RFC 5802 section 3)."""
    if iterations < 1:
        raise UsageError("iterations must be at least 1")
    if salt is None:
        salt = secrets.token_bytes(_SALT_BYTES)
    elif not salt:
        raise UsageError("salt must not be empty")
    salted = salted_password(normalize_password(password), salt, iterations)
    stored_key = _h(_hmac(salted, b"Client Key"))
    server_key = _hmac(salted, b"Server Key")
    return str(ScramVerifier(iterations, salt, stored_key, server_key))


def _b64decode_strict(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"), validate=True)


def parse_scram_verifier(text: str) -> ScramVerifier:
    """Parse PostgreSQL's SCRAM-SHA-256 secret format; ValueError if malformed."""
    parts = text.split("$")
    if len(parts) != 3 or parts[0] != SCRAM_SHA_256:
        raise ValueError("not a SCRAM-SHA-256 verifier")
    iter_salt = parts[1].split(":")
    keys = parts[2].split(":")
    if len(iter_salt) != 2 or len(keys) != 2:
        raise ValueError("malformed SCRAM-SHA-256 verifier")
    iterations_text, salt_text = iter_salt
    if not iterations_text.isascii() or not iterations_text.isdigit() or len(iterations_text) > 10:
        raise ValueError("invalid iteration count in SCRAM verifier")
    iterations = int(iterations_text)
    if iterations < 1:
        raise ValueError("invalid iteration count in SCRAM verifier")
    try:
        salt = _b64decode_strict(salt_text)
        stored_key = _b64decode_strict(keys[0])
        server_key = _b64decode_strict(keys[1])
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("invalid base64 in SCRAM verifier") from exc
    if not salt or len(stored_key) != _KEY_LEN or len(server_key) != _KEY_LEN:
        raise ValueError("invalid salt or key length in SCRAM verifier")
    return ScramVerifier(iterations, salt, stored_key, server_key)


# ---------------------------------------------------------------------------
# SCRAM message parsing (RFC 5802 section 7 grammar).


def _decode_scram(data: bytes, what: str) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PeerViolation(f"SCRAM {what} is not valid UTF-8") from exc


def _attributes(text: str, what: str) -> list[tuple[str, str]]:
    """Split ``a=value,b=value`` (RFC 5802 section 7: attr-val, ALPHA "=" value)."""
    out: list[tuple[str, str]] = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not (part[0].isascii() and part[0].isalpha()):
            raise PeerViolation(f"malformed SCRAM {what}")
        out.append((part[0], part[2:]))
    return out


def _take(attrs: list[tuple[str, str]], index: int, name: str, what: str) -> str:
    if index >= len(attrs) or attrs[index][0] != name:
        raise PeerViolation(f"malformed SCRAM {what}: expected attribute {name!r}")
    return attrs[index][1]


def _reject_mext(attrs: list[tuple[str, str]], what: str) -> None:
    # RFC 5802 section 5.1 (m): reserved; its presence MUST cause failure.
    if attrs and attrs[0][0] == "m":
        raise PeerViolation(f"SCRAM {what} uses the reserved 'm' extension")


def _escape_saslname(name: str) -> str:
    # RFC 5802 section 5.1 (n): ',' -> '=2C', '=' -> '=3D'.
    return name.replace("=", "=3D").replace(",", "=2C")


def _unescape_saslname(value: str) -> str:
    # RFC 5802 section 7: saslname allows '=' only in "=2C" and "=3D".
    out: list[str] = []
    pos = 0
    while (eq := value.find("=", pos)) >= 0:
        escape = value[eq : eq + 3]
        if escape not in ("=2C", "=3D"):
            raise PeerViolation("malformed SCRAM user name")
        out.append(value[pos:eq])
        out.append("," if escape == "=2C" else "=")
        pos = eq + 3
    out.append(value[pos:])
    return "".join(out)


class _ScramState(Enum):
    INITIAL = "initial"
    FIRST = "first"  # client: client-first sent; server: server-first sent
    FINAL = "final"  # client: client-final sent
    DONE = "done"
    FAILED = "failed"


class ScramSha256Client:
    """The client side of SCRAM-SHA-256 (RFC 5802 section 3 and 5, RFC 7677).

    ``client_first()`` -> SASLInitialResponse body; ``handle_server_first()``
    -> client-final-message; ``handle_server_final()`` verifies ``v=``.
    ``done`` is True only after the server signature matched.
    ``handle_server_first`` runs PBKDF2 synchronously (about a millisecond per
    4096 iterations); pass a shared ``SaltedPasswordCache`` so reconnects skip it.
    """

    mechanism = SCRAM_SHA_256

    def __init__(
        self,
        password: str | bytes,
        *,
        nonce: str | None = None,
        cache: SaltedPasswordCache | None = None,
        username: str = "",
        max_iterations: int = MAX_ITERATIONS,
    ) -> None:
        if nonce is None:
            nonce = _make_nonce()
        elif not nonce or not _is_printable(nonce):
            raise UsageError("nonce must be non-empty printable ASCII without ','")
        self._password = normalize_password(password)
        self._nonce = nonce
        self._cache = cache
        self._max_iterations = max_iterations
        # RFC 5802 section 7: client-first-message-bare = username "," nonce.
        # libpq leaves the name empty: PostgreSQL takes it from the startup packet.
        self._client_first_bare = f"n={_escape_saslname(username)},r={nonce}"
        self._server_signature = b""
        self._state = _ScramState.INITIAL

    @property
    def done(self) -> bool:
        """True once the server signature was verified (mutual authentication)."""
        return self._state is _ScramState.DONE

    def client_first_message(self) -> bytes:
        """The client-first-message: gs2 header ``n,,`` (no channel binding) + bare."""
        if self._state is _ScramState.INITIAL:
            self._state = _ScramState.FIRST
        elif self._state is not _ScramState.FIRST:
            raise UsageError("client-first already answered")
        return f"n,,{self._client_first_bare}".encode()

    def client_first(self) -> bytes:
        """The SASLInitialResponse body: mechanism NUL, int32 length, client-first."""
        return _sasl_initial_response_body(self.mechanism, self.client_first_message())

    def handle_server_first(self, data: bytes) -> bytes:
        """Consume server-first-message, return client-final-message."""
        if self._state is not _ScramState.FIRST:
            raise UsageError(f"server-first not expected in state {self._state.value}")
        try:
            out = self._server_first(data)
        except PeerViolation:
            self._state = _ScramState.FAILED
            raise
        self._state = _ScramState.FINAL
        return out

    def _server_first(self, data: bytes) -> bytes:
        what = "server-first-message"
        server_first = _decode_scram(data, what)
        attrs = _attributes(server_first, what)
        _reject_mext(attrs, what)
        # RFC 5802 section 7: server-first-message = nonce "," salt "," i ["," ext]
        nonce = _take(attrs, 0, "r", what)
        salt_text = _take(attrs, 1, "s", what)
        iter_text = _take(attrs, 2, "i", what)
        # RFC 5802 section 5.1 (r): the server appends its part to our nonce.
        if (
            len(nonce) <= len(self._nonce)
            or not nonce.startswith(self._nonce)
            or not _is_printable(nonce)
        ):
            raise PeerViolation("SCRAM server nonce does not extend the client nonce")
        try:
            salt = _b64decode_strict(salt_text)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise PeerViolation("SCRAM salt is not valid base64") from exc
        if not salt:
            raise PeerViolation("SCRAM salt is empty")
        if not (iter_text.isascii() and iter_text.isdigit()) or len(iter_text) > 10:
            raise PeerViolation("SCRAM iteration count is not a number")
        iterations = int(iter_text)
        if not 1 <= iterations <= self._max_iterations:
            raise PeerViolation(f"SCRAM iteration count {iterations} out of range")

        if self._cache is not None:
            salted = self._cache.salted_password(self._password, salt, iterations)
        else:
            salted = salted_password(self._password, salt, iterations)
        # RFC 5802 section 3.
        client_key = _hmac(salted, b"Client Key")
        stored_key = _h(client_key)
        # c=biws is base64("n,,"): the gs2 header without channel-binding data.
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        client_signature = _hmac(stored_key, auth_message)
        client_proof = _xor(client_key, client_signature)
        server_key = _hmac(salted, b"Server Key")
        self._server_signature = _hmac(server_key, auth_message)
        return f"{without_proof},p={_b64(client_proof)}".encode()

    def handle_server_final(self, data: bytes) -> None:
        """Verify server-final-message (RFC 5802 section 3: ServerSignature)."""
        if self._state is not _ScramState.FINAL:
            raise UsageError(f"server-final not expected in state {self._state.value}")
        try:
            self._server_final(data)
        except PeerViolation:
            self._state = _ScramState.FAILED
            raise
        self._state = _ScramState.DONE

    def _server_final(self, data: bytes) -> None:
        what = "server-final-message"
        attrs = _attributes(_decode_scram(data, what), what)
        # RFC 5802 section 7: server-final-message = (server-error / verifier) ["," ext]
        name, value = attrs[0]
        if name == "e":
            raise PeerViolation(
                f"SCRAM authentication failed: server error {value!r}", SqlState.INVALID_PASSWORD
            )
        if name != "v":
            raise PeerViolation(f"malformed SCRAM {what}")
        try:
            signature = _b64decode_strict(value)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise PeerViolation("SCRAM server signature is not valid base64") from exc
        if not hmac.compare_digest(signature, self._server_signature):
            raise PeerViolation(
                "SCRAM server signature mismatch: the server does not know the password",
                SqlState.INVALID_PASSWORD,
            )


class ScramSha256Server:
    """The server side of SCRAM-SHA-256 from a stored verifier (RFC 5802 section 3).

    Channel binding is not offered: gs2 flags ``n`` and ``y`` are accepted
    (``y`` means the client could bind but believes we cannot, RFC 5802
    section 6), ``p=`` is refused. ``username`` is what the client sent (PostgreSQL
    ignores it and uses the startup packet's ``user``).
    """

    mechanism = SCRAM_SHA_256

    def __init__(self, verifier: str | ScramVerifier, *, nonce: str | None = None) -> None:
        if isinstance(verifier, str):
            verifier = parse_scram_verifier(verifier)
        if nonce is None:
            nonce = _make_nonce()
        elif not nonce or not _is_printable(nonce):
            raise UsageError("nonce must be non-empty printable ASCII without ','")
        self._verifier = verifier
        self._server_nonce_part = nonce
        self._state = _ScramState.INITIAL
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self.username = ""

    @property
    def done(self) -> bool:
        return self._state is _ScramState.DONE

    def handle_client_first(self, data: bytes) -> bytes:
        """Consume client-first-message, return server-first-message."""
        if self._state is not _ScramState.INITIAL:
            raise UsageError(f"client-first not expected in state {self._state.value}")
        try:
            out = self._client_first(data)
        except PeerViolation:
            self._state = _ScramState.FAILED
            raise
        self._state = _ScramState.FIRST
        return out

    def _client_first(self, data: bytes) -> bytes:
        what = "client-first-message"
        text = _decode_scram(data, what)
        # RFC 5802 section 7: gs2-header = gs2-cbind-flag "," [authzid] ","
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise PeerViolation(f"malformed SCRAM {what}")
        flag, authzid, bare = parts
        if flag.startswith("p="):
            raise PeerViolation("SCRAM channel binding requested but not offered")
        if flag not in ("n", "y"):
            raise PeerViolation(f"malformed SCRAM {what}: invalid gs2 flag")
        if authzid:
            raise PeerViolation(
                "SCRAM authorization identity is not supported", SqlState.FEATURE_NOT_SUPPORTED
            )
        attrs = _attributes(bare, what)
        _reject_mext(attrs, what)
        username = _unescape_saslname(_take(attrs, 0, "n", what))
        client_nonce = _take(attrs, 1, "r", what)
        if not client_nonce or not _is_printable(client_nonce):
            raise PeerViolation("SCRAM client nonce is not printable")
        self.username = username
        self._gs2_header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = client_nonce + self._server_nonce_part
        v = self._verifier
        self._server_first = f"r={self._nonce},s={_b64(v.salt)},i={v.iterations}"
        return self._server_first.encode()

    def handle_client_final(self, data: bytes) -> bytes:
        """Verify client-final-message, return server-final-message (``v=``)."""
        if self._state is not _ScramState.FIRST:
            raise UsageError(f"client-final not expected in state {self._state.value}")
        try:
            out = self._client_final(data)
        except PeerViolation:
            self._state = _ScramState.FAILED
            raise
        self._state = _ScramState.DONE
        return out

    def _client_final(self, data: bytes) -> bytes:
        what = "client-final-message"
        text = _decode_scram(data, what)
        # RFC 5802 section 7: client-final-message-without-proof "," proof;
        # the proof is always the last attribute.
        without_proof, sep, proof_text = text.rpartition(",p=")
        if not sep:
            raise PeerViolation(f"malformed SCRAM {what}: no proof")
        attrs = _attributes(without_proof, what)
        cbind = _take(attrs, 0, "c", what)
        nonce = _take(attrs, 1, "r", what)
        # RFC 5802 section 7: c= carries base64(gs2 header) when not binding.
        if cbind != _b64(self._gs2_header.encode()):
            raise PeerViolation("SCRAM channel binding data does not match the gs2 header")
        if nonce != self._nonce:
            raise PeerViolation("SCRAM nonce mismatch in client-final-message")
        try:
            proof = _b64decode_strict(proof_text)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise PeerViolation("SCRAM client proof is not valid base64") from exc
        if len(proof) != _KEY_LEN:
            raise PeerViolation("SCRAM client proof has the wrong length")
        v = self._verifier
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        # RFC 5802 section 3: ClientKey = ClientProof XOR ClientSignature;
        # the client is authentic iff H(ClientKey) == StoredKey.
        client_key = _xor(proof, _hmac(v.stored_key, auth_message))
        if not hmac.compare_digest(_h(client_key), v.stored_key):
            raise PeerViolation(
                "SCRAM authentication failed: wrong password", SqlState.INVALID_PASSWORD
            )
        return f"v={_b64(_hmac(v.server_key, auth_message))}".encode()


# ---------------------------------------------------------------------------
# md5, cleartext and message helpers.


def md5_password_hash(user: str, password: str, salt: bytes) -> bytes:
    """PasswordMessage content for AuthenticationMD5Password.

    ``"md5" + hex(md5(hex(md5(password + user)) + salt))`` (manual, "Message
    Flow": AuthenticationMD5Password).
    """
    inner = hashlib.md5(_encode_secret(password) + _encode_secret(user)).hexdigest()
    return b"md5" + hashlib.md5(inner.encode("ascii") + salt).hexdigest().encode("ascii")


def build_password_message(secret: str | bytes) -> bytes:
    """A framed PasswordMessage ('p'): the secret as a NUL-terminated string."""
    data = _encode_secret(secret)
    if b"\0" in data:
        raise UsageError("a password cannot contain NUL bytes")
    return build_message(_PASSWORD, data + b"\0")


def _sasl_initial_response_body(mechanism: str, data: bytes | None) -> bytes:
    name = mechanism.encode("ascii")
    if b"\0" in name:
        raise UsageError("mechanism name cannot contain NUL")
    if data is None:
        return name + b"\0" + _INT32.pack(-1)  # -1: no initial response
    return name + b"\0" + _INT32.pack(len(data)) + data


def build_sasl_initial_response(mechanism: str, data: bytes | None) -> bytes:
    """A framed SASLInitialResponse ('p'): mechanism NUL, int32 length (-1: none), data."""
    return build_message(_PASSWORD, _sasl_initial_response_body(mechanism, data))


def build_sasl_response(data: bytes) -> bytes:
    """A framed SASLResponse ('p'): the mechanism data, unframed inside."""
    return build_message(_PASSWORD, data)


def build_authentication(code: int, data: bytes = b"") -> bytes:
    """A framed Authentication ('R') message: int32 code + method-specific data."""
    return build_message(_AUTHENTICATION, _INT32.pack(code) + data)


def parse_authentication(body: bytes) -> tuple[int, bytes]:
    """Split an Authentication ('R') body into (code, rest)."""
    if len(body) < 4:
        raise PeerViolation("Authentication message too short")
    return _INT32.unpack_from(body)[0], bytes(body[4:])


def parse_sasl_mechanisms(data: bytes) -> list[str]:
    """AuthenticationSASL payload: NUL-terminated names, then an empty name."""
    if not data.endswith(b"\0"):
        raise PeerViolation("SASL mechanism list is not terminated")
    names = bytes(data[:-1]).split(b"\0")
    if names[-1] != b"":
        raise PeerViolation("SASL mechanism list is not terminated")
    names.pop()
    out: list[str] = []
    for name in names:
        if not name:
            raise PeerViolation("empty SASL mechanism name")
        try:
            out.append(name.decode("ascii"))
        except UnicodeDecodeError as exc:
            raise PeerViolation("SASL mechanism name is not ASCII") from exc
    return out


def parse_sasl_initial_response(body: bytes) -> tuple[str, bytes | None]:
    """Split a SASLInitialResponse body into (mechanism, data or None)."""
    end = body.find(b"\0")
    if end < 0:
        raise PeerViolation("SASLInitialResponse mechanism is not terminated")
    try:
        mechanism = bytes(body[:end]).decode("ascii")
    except UnicodeDecodeError as exc:
        raise PeerViolation("SASL mechanism name is not ASCII") from exc
    pos = end + 1
    if len(body) - pos < 4:
        raise PeerViolation("SASLInitialResponse too short")
    (length,) = _INT32.unpack_from(body, pos)
    pos += 4
    if length == -1 and pos == len(body):
        return mechanism, None
    if length < 0 or pos + length != len(body):
        raise PeerViolation("SASLInitialResponse length does not match its body")
    return mechanism, bytes(body[pos:])


def parse_password_message(body: bytes, max_size: int) -> str:
    """The client's PasswordMessage ('p') as text; ``max_size`` bounds the password bytes."""
    if len(body) - 1 > max_size:
        raise PeerViolation(f"password longer than {max_size} bytes")
    end = body.find(b"\0")
    if end < 0:
        raise PeerViolation("password is not NUL-terminated")
    if end != len(body) - 1:
        raise PeerViolation("trailing data after the password")
    try:
        return bytes(body[:end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PeerViolation("password is not valid UTF-8") from exc


# ---------------------------------------------------------------------------
# The upstream state machine.


class _Upstream(Enum):
    START = "start"
    PASSWORD_SENT = "password sent"  # cleartext or md5: only Ok may follow
    SASL_CONTINUE = "awaiting SASLContinue"
    SASL_FINAL = "awaiting SASLFinal"
    SASL_VERIFIED = "server signature verified"
    DONE = "done"
    FAILED = "failed"


_UNSUPPORTED: dict[int, str] = {
    AuthRequest.KERBEROS_V5: "Kerberos V5",
    AuthRequest.GSS: "GSSAPI",
    AuthRequest.GSS_CONTINUE: "GSSAPI",
    AuthRequest.SSPI: "SSPI",
}


class UpstreamAuthenticator:
    """Authenticates the gateway to the upstream server with stored credentials.

    Feed ``receive`` the body of every backend Authentication ('R') message in
    order; it returns the framed frontend message to send, or None. ``done``
    turns True on an accepted AuthenticationOk; ``method`` is "" until the
    server picks one, then "scram-sha-256", "md5", "password" or "trust".
    """

    def __init__(
        self,
        user: str,
        password: str | None,
        *,
        tls_active: bool,
        allow_cleartext_without_tls: bool = False,
        scram_cache: SaltedPasswordCache | None = None,
    ) -> None:
        self.user = user
        # libpq treats an empty password as none supplied; so do we.
        self._password = password or None
        self.tls_active = tls_active
        self.allow_cleartext_without_tls = allow_cleartext_without_tls
        self._cache = scram_cache
        self._scram: ScramSha256Client | None = None
        self._state = _Upstream.START
        self._error: PeerViolation | None = None
        self.method = ""

    @property
    def done(self) -> bool:
        return self._state is _Upstream.DONE

    def receive(self, body: bytes) -> bytes | None:
        if self._error is not None:
            raise self._error
        try:
            return self._receive(body)
        except PeerViolation as exc:
            self._state = _Upstream.FAILED
            self._error = exc
            raise

    def _receive(self, body: bytes) -> bytes | None:
        code, rest = parse_authentication(body)
        state = self._state
        if state is _Upstream.DONE:
            raise PeerViolation("Authentication message after AuthenticationOk")
        if code == AuthRequest.OK:
            self._ok(rest)
            return None
        if state is _Upstream.START:
            return self._start(code, rest)
        if state is _Upstream.SASL_CONTINUE and code == AuthRequest.SASL_CONTINUE:
            assert self._scram is not None
            self._state = _Upstream.SASL_FINAL
            return build_sasl_response(self._scram.handle_server_first(rest))
        if state is _Upstream.SASL_FINAL and code == AuthRequest.SASL_FINAL:
            assert self._scram is not None
            self._scram.handle_server_final(rest)
            self._state = _Upstream.SASL_VERIFIED
            return None
        raise PeerViolation(f"unexpected authentication request {code} ({state.value})")

    def _ok(self, rest: bytes) -> None:
        if rest:
            raise PeerViolation("trailing data in AuthenticationOk")
        state = self._state
        if state in (_Upstream.SASL_CONTINUE, _Upstream.SASL_FINAL):
            # RFC 5802 section 3: the client authenticates the server through
            # ServerSignature; without it we may be talking to an impostor.
            raise PeerViolation(
                "AuthenticationOk before the SCRAM server signature was verified",
                SqlState.INVALID_AUTHORIZATION,
            )
        if state is _Upstream.START:
            self.method = "trust"
        self._state = _Upstream.DONE

    def _need_password(self, what: str) -> str:
        if self._password is None:
            raise PeerViolation(
                f"server requested {what} authentication but no password is configured",
                SqlState.INVALID_AUTHORIZATION,
            )
        return self._password

    def _start(self, code: int, rest: bytes) -> bytes:
        if code == AuthRequest.CLEARTEXT_PASSWORD:
            if rest:
                raise PeerViolation("trailing data in AuthenticationCleartextPassword")
            if not self.tls_active and not self.allow_cleartext_without_tls:
                raise PeerViolation(
                    "server requested a cleartext password over a connection without TLS",
                    SqlState.INVALID_AUTHORIZATION,
                )
            password = self._need_password("password")
            self.method = "password"
            self._state = _Upstream.PASSWORD_SENT
            return build_password_message(password)
        if code == AuthRequest.MD5_PASSWORD:
            if len(rest) != 4:
                raise PeerViolation("AuthenticationMD5Password salt is not 4 bytes")
            password = self._need_password("md5")
            self.method = "md5"
            self._state = _Upstream.PASSWORD_SENT
            return build_password_message(md5_password_hash(self.user, password, rest))
        if code == AuthRequest.SASL:
            mechanisms = parse_sasl_mechanisms(rest)
            # SCRAM-SHA-256-PLUS may be listed too; without channel binding
            # support we pick plain SCRAM-SHA-256 and send gs2 flag 'n'.
            if SCRAM_SHA_256 not in mechanisms:
                raise PeerViolation(
                    f"no supported SASL mechanism offered: {', '.join(mechanisms) or '(none)'}",
                    SqlState.INVALID_AUTHORIZATION,
                )
            password = self._need_password("SCRAM-SHA-256")
            self._scram = ScramSha256Client(password, cache=self._cache)
            self.method = "scram-sha-256"
            self._state = _Upstream.SASL_CONTINUE
            return build_sasl_initial_response(SCRAM_SHA_256, self._scram.client_first_message())
        if code in (AuthRequest.SASL_CONTINUE, AuthRequest.SASL_FINAL):
            raise PeerViolation(f"authentication request {code} without a SASL exchange")
        name = _UNSUPPORTED.get(code)
        raise PeerViolation(
            f"unsupported authentication method: {name or f'request code {code}'}",
            SqlState.INVALID_AUTHORIZATION,
        )
