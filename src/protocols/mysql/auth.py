"""Authentication: scrambles, the upstream (gateway-as-client) state machine, and the
client-facing helpers that obtain the cleartext password (the JWT).

Spec: page_protocol_connection_phase_authentication_methods_native_password_authentication,
page_caching_sha2_authentication_exchanges,
page_protocol_connection_phase_authentication_methods_clear_text_password;
PROTOCOLS.md 3.4.

Upstream (``UpstreamAuthenticator``), sans-I/O: ``handshake_response()`` gives the
HandshakeResponse41 payload, then every server packet goes to ``receive()`` which
returns the payload to send back or ``None``; ``done`` becomes true on OK, an ERR
raises ``AuthenticationFailed`` with the server's errno and message.

* mysql_native_password: ``SHA1(pw) XOR SHA1(scramble || SHA1(SHA1(pw)))``.
* caching_sha2_password fast path: ``SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) || nonce)``;
  AuthMoreData 0x03 = fast auth succeeded (an OK follows), 0x04 = perform full
  authentication: ``pw + NUL`` in clear over TLS, otherwise RSA-OAEP(SHA-1) of
  ``(pw + NUL) XOR nonce`` with the server's public key (pinned, or requested with
  0x02). The full path runs whenever the server's cache is cold (ephpm/ephpm#236).
* mysql_clear_password: ``pw + NUL``, only over TLS.
* One AuthSwitchRequest is honoured (to any of the above); a second is a violation.

Only this module of ``protocols`` imports ``cryptography`` (the RSA step).
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import PeerViolation, ProtocolError, UsageError
from .constants import (
    AUTH_MORE_DATA_HEADER,
    AUTH_SWITCH_HEADER,
    CACHING_SHA2_FAST_AUTH_SUCCESS,
    CACHING_SHA2_PASSWORD,
    CACHING_SHA2_PERFORM_FULL_AUTHENTICATION,
    CACHING_SHA2_REQUEST_PUBLIC_KEY,
    CLIENT_MYSQL,
    ERR_HEADER,
    MARIADB_CAPABILITIES_MASK,
    MYSQL_CLEAR_PASSWORD,
    MYSQL_NATIVE_PASSWORD,
    OK_HEADER,
    SCRAMBLE_LENGTH,
    Capability,
    Charset,
    ErrorCode,
)
from .handshake import (
    HANDSHAKE_ERROR,
    HandshakeResponse41,
    HandshakeV10,
    build_auth_more_data,
    build_auth_switch_request,
    build_handshake_response41,
    parse_auth_more_data,
    parse_auth_switch_request,
)
from .packets import Buffer, OkPacket, parse_err_packet, parse_ok_packet

ACCESS_DENIED = int(ErrorCode.ER_ACCESS_DENIED_ERROR)
NOT_SUPPORTED_AUTH_MODE = int(ErrorCode.ER_NOT_SUPPORTED_AUTH_MODE)

# Capabilities the gateway needs on every upstream hop.
REQUIRED_UPSTREAM_CAPABILITIES = (
    Capability.CLIENT_PROTOCOL_41
    | Capability.CLIENT_SECURE_CONNECTION
    | Capability.CLIENT_PLUGIN_AUTH
    | Capability.CLIENT_TRANSACTIONS
)


class AuthenticationFailed(ProtocolError):
    """The server refused the login (its ERR), or it asked for something we will not do."""

    def __init__(self, message: str, errno: int = ACCESS_DENIED, sqlstate: str = "28000") -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.sqlstate = sqlstate


# -- scrambles ---------------------------------------------------------------------------------


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _nonce(data: bytes) -> bytes:
    """The 20-byte scramble from auth plugin data (which usually carries a trailing NUL)."""
    if len(data) > SCRAMBLE_LENGTH and data[SCRAMBLE_LENGTH:] == b"\x00":
        return data[:SCRAMBLE_LENGTH]
    return data[:SCRAMBLE_LENGTH] if len(data) >= SCRAMBLE_LENGTH else data.rstrip(b"\x00")


def scramble_native_password(password: bytes, scramble: bytes) -> bytes:
    """mysql_native_password: SHA1(pw) XOR SHA1(scramble || SHA1(SHA1(pw))); empty pw -> b""."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(stage1).digest()
    return _xor(stage1, hashlib.sha1(_nonce(scramble) + stage2).digest())


def scramble_caching_sha2(password: bytes, nonce: bytes) -> bytes:
    """caching_sha2_password fast path; empty pw -> b""."""
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    return _xor(p1, hashlib.sha256(p2 + _nonce(nonce)).digest())


def encrypt_password_rsa(password: bytes, nonce: bytes, public_key_pem: bytes) -> bytes:
    """RSA-OAEP(SHA-1) of ``(pw + NUL) XOR nonce`` (nonce repeated), as caching_sha2 expects.

    With a 2048-bit key the password is limited to 213 bytes (a JWT does not fit).
    """
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthenticationFailed("server public key is not an RSA key", NOT_SUPPORTED_AUTH_MODE)
    seed = _nonce(nonce)
    if not seed:
        raise AuthenticationFailed("empty scramble for RSA password exchange")
    plain = password + b"\x00"
    xored = bytes(b ^ seed[i % len(seed)] for i, b in enumerate(plain))
    limit = key.key_size // 8 - 2 * 20 - 2
    if len(xored) > limit:
        raise AuthenticationFailed(
            f"password too long for RSA exchange ({len(xored)} > {limit} bytes); use TLS",
            NOT_SUPPORTED_AUTH_MODE,
        )
    return key.encrypt(
        xored,
        padding.OAEP(
            mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None
        ),
    )


# -- upstream: gateway as client ---------------------------------------------------------------

_SUPPORTED = (MYSQL_NATIVE_PASSWORD, CACHING_SHA2_PASSWORD, MYSQL_CLEAR_PASSWORD)

# Upstream states.
_SENT_RESPONSE, _SWITCHED, _FULL_AUTH_KEY, _FULL_AUTH_SENT, _DONE = range(5)


def negotiate_capabilities(requested: int, server: int, *, tls: bool, database: bool) -> int:
    """Capabilities to send upstream: what we request ∩ what the server offers, plus
    the required ones; CLIENT_SSL / CONNECT_WITH_DB as the hop needs; MariaDB
    extended capabilities only if the server announced them (CLIENT_MYSQL cleared)."""
    missing = REQUIRED_UPSTREAM_CAPABILITIES & ~server
    if missing:
        raise AuthenticationFailed(
            f"server lacks required capabilities {Capability(missing)!r}", NOT_SUPPORTED_AUTH_MODE
        )
    caps = (requested & server) | REQUIRED_UPSTREAM_CAPABILITIES
    caps &= ~(Capability.CLIENT_SSL | Capability.CLIENT_CONNECT_WITH_DB)
    if tls:
        caps |= Capability.CLIENT_SSL
    if database:
        caps |= Capability.CLIENT_CONNECT_WITH_DB
    if server & CLIENT_MYSQL:
        caps &= ~MARIADB_CAPABILITIES_MASK
    if caps & MARIADB_CAPABILITIES_MASK:
        caps &= ~CLIENT_MYSQL
    return int(caps)


class UpstreamAuthenticator:
    """Logs the gateway in to the upstream server (see the module docstring)."""

    __slots__ = (
        "_nonce",
        "_password",
        "_state",
        "capabilities",
        "charset",
        "connect_attrs",
        "database",
        "max_packet_size",
        "ok",
        "plugin",
        "server_public_key",
        "tls_active",
        "username",
    )

    def __init__(
        self,
        handshake: HandshakeV10,
        *,
        username: bytes,
        password: bytes,
        capabilities: int,
        tls_active: bool,
        database: bytes | None = None,
        charset: int = Charset.UTF8MB4_GENERAL_CI,
        max_packet_size: int = 1 << 24,
        connect_attrs: tuple[tuple[bytes, bytes], ...] = (),
        server_public_key: bytes | None = None,
    ) -> None:
        self.username = username
        self._password = password
        self.database = database
        self.tls_active = tls_active
        self.charset = charset
        self.max_packet_size = max_packet_size
        self.server_public_key = server_public_key
        self.capabilities = negotiate_capabilities(
            capabilities, handshake.capabilities, tls=tls_active, database=database is not None
        )
        if not connect_attrs:
            self.capabilities &= ~Capability.CLIENT_CONNECT_ATTRS
        self.connect_attrs = connect_attrs
        self._nonce = handshake.auth_plugin_data
        plugin = handshake.auth_plugin_name
        self.plugin = plugin if plugin in _SUPPORTED and plugin != MYSQL_CLEAR_PASSWORD else None
        if self.plugin is None:
            self.plugin = MYSQL_NATIVE_PASSWORD  # the server will switch us to the right one
        self.ok: OkPacket | None = None
        self._state = _SENT_RESPONSE

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def handshake_response(self) -> bytes:
        """The HandshakeResponse41 payload (send with seq 1, or 2 after an SSLRequest)."""
        plugin = self.plugin or MYSQL_NATIVE_PASSWORD
        caps = self.capabilities
        auth = self._plugin_data(plugin, self._nonce)
        if len(auth) > 250:
            caps |= Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        return build_handshake_response41(
            HandshakeResponse41(
                caps,
                self.max_packet_size,
                self.charset,
                self.username,
                auth,
                self.database,
                plugin,
                self.connect_attrs,
                None,
            )
        )

    def receive(self, payload: Buffer) -> bytes | None:
        """A server packet of the auth exchange -> the payload to send, or None."""
        if self._state == _DONE:
            raise UsageError("authentication already finished")
        if not payload:
            raise PeerViolation("empty packet during authentication", HANDSHAKE_ERROR)
        first = payload[0]
        if first == OK_HEADER:
            self.ok = parse_ok_packet(payload, self.capabilities)
            self._state = _DONE
            return None
        if first == ERR_HEADER:
            err = parse_err_packet(payload)
            self._state = _DONE
            raise AuthenticationFailed(err.text, err.errno, err.sqlstate)
        if first == AUTH_SWITCH_HEADER:
            return self._switch(payload)
        if first == AUTH_MORE_DATA_HEADER:
            return self._more_data(parse_auth_more_data(payload))
        raise PeerViolation(
            f"unexpected packet 0x{first:02x} during authentication", HANDSHAKE_ERROR
        )

    # -- internals -----------------------------------------------------------------------------

    def _plugin_data(self, plugin: bytes, nonce: bytes) -> bytes:
        if plugin == MYSQL_NATIVE_PASSWORD:
            return scramble_native_password(self._password, nonce)
        if plugin == CACHING_SHA2_PASSWORD:
            return scramble_caching_sha2(self._password, nonce)
        if plugin == MYSQL_CLEAR_PASSWORD:
            if not self.tls_active:
                raise AuthenticationFailed(
                    "server asked for mysql_clear_password without TLS", NOT_SUPPORTED_AUTH_MODE
                )
            return self._password + b"\x00"
        raise AuthenticationFailed(
            f"unsupported authentication plugin {plugin.decode('ascii', 'replace')}",
            NOT_SUPPORTED_AUTH_MODE,
        )

    def _switch(self, payload: Buffer) -> bytes:
        if self._state != _SENT_RESPONSE:
            raise PeerViolation("second AuthSwitchRequest", HANDSHAKE_ERROR)
        req = parse_auth_switch_request(payload)
        self._state = _SWITCHED
        self.plugin = req.plugin_name
        if req.plugin_data:
            self._nonce = req.plugin_data
        return self._plugin_data(req.plugin_name, self._nonce)

    def _more_data(self, data: bytes) -> bytes | None:
        if self.plugin != CACHING_SHA2_PASSWORD:
            raise PeerViolation("AuthMoreData outside caching_sha2_password", HANDSHAKE_ERROR)
        if self._state == _FULL_AUTH_KEY:
            # The server's PEM public key, answering our 0x02 request.
            self._state = _FULL_AUTH_SENT
            return encrypt_password_rsa(self._password, self._nonce, data)
        if self._state == _FULL_AUTH_SENT or not data:
            raise PeerViolation("unexpected AuthMoreData", HANDSHAKE_ERROR)
        status = data[0]
        if status == CACHING_SHA2_FAST_AUTH_SUCCESS and len(data) == 1:
            return None  # an OK packet follows
        if status == CACHING_SHA2_PERFORM_FULL_AUTHENTICATION and len(data) == 1:
            if self.tls_active:
                self._state = _FULL_AUTH_SENT
                return self._password + b"\x00"
            if self.server_public_key is not None:
                self._state = _FULL_AUTH_SENT
                return encrypt_password_rsa(self._password, self._nonce, self.server_public_key)
            self._state = _FULL_AUTH_KEY
            return bytes((CACHING_SHA2_REQUEST_PUBLIC_KEY,))
        raise PeerViolation(f"unexpected caching_sha2_password status {status}", HANDSHAKE_ERROR)


# -- client-facing: obtaining the JWT ----------------------------------------------------------


def build_perform_full_authentication() -> bytes:
    """AuthMoreData 0x01 0x04: makes a caching_sha2 client send ``pw + NUL`` (over TLS)."""
    return build_auth_more_data(bytes((CACHING_SHA2_PERFORM_FULL_AUTHENTICATION,)))


def build_fast_auth_success() -> bytes:
    return build_auth_more_data(bytes((CACHING_SHA2_FAST_AUTH_SUCCESS,)))


def is_public_key_request(payload: Buffer) -> bool:
    """The client's caching_sha2 request for the server's RSA key (a lone 0x02)."""
    return len(payload) == 1 and payload[0] == CACHING_SHA2_REQUEST_PUBLIC_KEY


def parse_cleartext_password(payload: Buffer) -> bytes:
    """``pw + NUL`` (caching_sha2 full auth, mysql_clear_password) -> pw."""
    data = bytes(payload)
    return data[:-1] if data.endswith(b"\x00") else data


_WAIT_SWITCH, _WAIT_PASSWORD, _HAVE_PASSWORD = range(3)


class ClientPasswordExchange:
    """Server side of the client login: obtain the client's cleartext password.

    Default path (PROTOCOLS.md 3.4, option 1): caching_sha2_password "perform full
    authentication" (0x01 0x04), to which stock clients over TLS answer ``pw + NUL``;
    clients that started with another plugin are first switched to
    caching_sha2_password. ``prefer_clear_password`` switches to mysql_clear_password
    instead (needs client opt-in). Without TLS the exchange is refused (errno 1045)
    unless ``allow_plaintext``; a client asking for the RSA key (0x02) is always
    refused: the RSA path cannot carry a JWT.
    """

    __slots__ = (
        "_state",
        "allow_plaintext",
        "password",
        "prefer_clear_password",
        "scramble",
        "tls_active",
    )

    def __init__(
        self,
        scramble: bytes,
        *,
        tls_active: bool,
        allow_plaintext: bool = False,
        prefer_clear_password: bool = False,
    ) -> None:
        if len(scramble) != SCRAMBLE_LENGTH:
            raise UsageError("scramble must be 20 bytes")
        self.scramble = scramble
        self.tls_active = tls_active
        self.allow_plaintext = allow_plaintext
        self.prefer_clear_password = prefer_clear_password
        self.password: bytes | None = None
        self._state = _WAIT_SWITCH

    @property
    def done(self) -> bool:
        return self.password is not None

    def _require_secure(self) -> None:
        if not (self.tls_active or self.allow_plaintext):
            raise PeerViolation("Access denied: JWT login requires TLS", ACCESS_DENIED)

    def start(self, response: HandshakeResponse41) -> bytes | None:
        """After the HandshakeResponse41: the payload to send, or None if the password
        came with the response (mysql_clear_password)."""
        self._require_secure()
        plugin = response.auth_plugin_name or b""
        if plugin == MYSQL_CLEAR_PASSWORD and response.auth_response:
            self._got(parse_cleartext_password(response.auth_response))
            return None
        if plugin == CACHING_SHA2_PASSWORD and not self.prefer_clear_password:
            self._state = _WAIT_PASSWORD
            return build_perform_full_authentication()
        target = MYSQL_CLEAR_PASSWORD if self.prefer_clear_password else CACHING_SHA2_PASSWORD
        self._state = _WAIT_SWITCH
        return build_auth_switch_request(target, self.scramble + b"\x00")

    def receive(self, payload: Buffer) -> bytes | None:
        """A client packet of the exchange -> the payload to send, or None once the
        password is known (``self.password``)."""
        if self.password is not None:
            raise UsageError("password already received")
        if self._state == _WAIT_SWITCH:
            if self.prefer_clear_password:
                self._got(parse_cleartext_password(payload))
                return None
            if not payload:  # caching_sha2 client with an empty password
                self._got(b"")
                return None
            self._state = _WAIT_PASSWORD
            return build_perform_full_authentication()
        if is_public_key_request(payload):
            raise PeerViolation(
                "Access denied: JWT login requires TLS (RSA key exchange refused)", ACCESS_DENIED
            )
        self._got(parse_cleartext_password(payload))
        return None

    def _got(self, password: bytes) -> None:
        self.password = password
        self._state = _HAVE_PASSWORD
