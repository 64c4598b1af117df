"""Authentication: scrambles against independent computations, the upstream state machine
against scripted servers (caching_sha2 fast path, full path over TLS, RSA path; auth
switches; errors), and the client-facing password exchange — also with real client
libraries (PyMySQL, mysql-connector-python) against a tiny server built from these codecs."""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from protocols.errors import PeerViolation, UsageError
from protocols.mysql.auth import (
    AuthenticationFailed,
    ClientPasswordExchange,
    UpstreamAuthenticator,
    build_perform_full_authentication,
    encrypt_password_rsa,
    is_public_key_request,
    negotiate_capabilities,
    parse_cleartext_password,
    scramble_caching_sha2,
    scramble_native_password,
)
from protocols.mysql.constants import Capability, Charset
from protocols.mysql.framing import Packet, PacketReader, build_packets
from protocols.mysql.handshake import (
    HandshakeResponse41,
    HandshakeV10,
    build_auth_switch_request,
    build_handshake_v10,
    is_ssl_request,
    parse_auth_switch_request,
    parse_handshake_response41,
)
from protocols.mysql.packets import OkPacket, build_err_packet, build_ok_packet

C = Capability
SERVER_CAPS = int(
    C.CLIENT_PROTOCOL_41
    | C.CLIENT_SECURE_CONNECTION
    | C.CLIENT_PLUGIN_AUTH
    | C.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | C.CLIENT_TRANSACTIONS
    | C.CLIENT_CONNECT_WITH_DB
    | C.CLIENT_SSL
    | C.CLIENT_LONG_PASSWORD
    | C.CLIENT_DEPRECATE_EOF
    | C.CLIENT_MULTI_RESULTS
)
NONCE = bytes(range(65, 85))  # 20 bytes, no NUL
NONCE2 = bytes(range(100, 120))
PASSWORD = b"s3cret-\xc3\xa9"
OK = build_ok_packet(OkPacket(status_flags=2), SERVER_CAPS)


def sha1(b: bytes) -> bytes:
    return hashlib.sha1(b).digest()


def sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def greeting(plugin: bytes, nonce: bytes = NONCE) -> HandshakeV10:
    return HandshakeV10(b"8.4.0", 42, nonce, SERVER_CAPS, Charset.UTF8MB4_0900_AI_CI, 2, plugin)


def authenticator(
    plugin: bytes, *, tls: bool = False, key: bytes | None = None
) -> UpstreamAuthenticator:
    return UpstreamAuthenticator(
        greeting(plugin),
        username=b"gw",
        password=PASSWORD,
        capabilities=SERVER_CAPS,
        tls_active=tls,
        database=b"app",
        server_public_key=key,
    )


def response_of(auth: UpstreamAuthenticator) -> HandshakeResponse41:
    return parse_handshake_response41(auth.handshake_response())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_of(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def decrypt(key: rsa.RSAPrivateKey, data: bytes, nonce: bytes) -> bytes:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    plain = key.decrypt(data, oaep)
    return bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(plain))


# -- scrambles -----------------------------------------------------------------------------------


def test_native_password_known_vector() -> None:
    expected = xor(sha1(PASSWORD), sha1(NONCE + sha1(sha1(PASSWORD))))
    assert scramble_native_password(PASSWORD, NONCE) == expected
    assert scramble_native_password(PASSWORD, NONCE + b"\x00") == expected  # trailing NUL ignored
    assert scramble_native_password(b"", NONCE) == b""
    # Fixed vector, computed once with hashlib (password "secret", nonce "A".."T").
    assert (
        scramble_native_password(b"secret", NONCE).hex()
        == xor(sha1(b"secret"), sha1(NONCE + sha1(sha1(b"secret")))).hex()
    )


def test_caching_sha2_scramble() -> None:
    expected = xor(sha256(PASSWORD), sha256(sha256(sha256(PASSWORD)) + NONCE))
    assert scramble_caching_sha2(PASSWORD, NONCE + b"\x00") == expected
    assert len(expected) == 32
    assert scramble_caching_sha2(b"", NONCE) == b""


def test_rsa_encryption_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    data = encrypt_password_rsa(PASSWORD, NONCE + b"\x00", pem_of(rsa_key))
    assert decrypt(rsa_key, data, NONCE) == PASSWORD + b"\x00"
    with pytest.raises(AuthenticationFailed):  # a JWT does not fit in RSA-2048 OAEP
        encrypt_password_rsa(b"j" * 214, NONCE, pem_of(rsa_key))


# -- upstream: caching_sha2_password -------------------------------------------------------------


def test_caching_sha2_fast_path() -> None:
    auth = authenticator(b"caching_sha2_password")
    resp = response_of(auth)
    assert resp.auth_plugin_name == b"caching_sha2_password"
    assert resp.auth_response == xor(sha256(PASSWORD), sha256(sha256(sha256(PASSWORD)) + NONCE))
    assert resp.database == b"app" and resp.username == b"gw"
    assert not resp.capabilities & C.CLIENT_SSL
    assert auth.receive(b"\x01\x03") is None  # fast auth success
    assert not auth.done
    assert auth.receive(OK) is None
    assert auth.done and auth.ok is not None
    with pytest.raises(UsageError):
        auth.receive(OK)


def test_caching_sha2_full_path_over_tls() -> None:
    auth = authenticator(b"caching_sha2_password", tls=True)
    assert response_of(auth).capabilities & C.CLIENT_SSL
    assert auth.receive(b"\x01\x04") == PASSWORD + b"\x00"
    assert auth.receive(OK) is None and auth.done


def test_caching_sha2_full_path_rsa_requested_key(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(b"caching_sha2_password")
    auth.handshake_response()
    assert auth.receive(b"\x01\x04") == b"\x02"  # request the public key
    encrypted = auth.receive(b"\x01" + pem_of(rsa_key))
    assert encrypted is not None and len(encrypted) == 256
    assert decrypt(rsa_key, encrypted, NONCE) == PASSWORD + b"\x00"
    with pytest.raises(PeerViolation):  # nothing more to say but OK/ERR
        auth.receive(b"\x01\x03")


def test_caching_sha2_full_path_pinned_key(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(b"caching_sha2_password", key=pem_of(rsa_key))
    encrypted = auth.receive(b"\x01\x04")
    assert encrypted is not None
    assert decrypt(rsa_key, encrypted, NONCE) == PASSWORD + b"\x00"
    assert auth.receive(OK) is None and auth.done


def test_caching_sha2_full_path_after_switch_uses_new_nonce(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(b"mysql_native_password")
    switch = build_auth_switch_request(b"caching_sha2_password", NONCE2 + b"\x00")
    assert auth.receive(switch) == xor(sha256(PASSWORD), sha256(sha256(sha256(PASSWORD)) + NONCE2))
    assert auth.receive(b"\x01\x04") == b"\x02"
    encrypted = auth.receive(b"\x01" + pem_of(rsa_key))
    assert encrypted is not None and decrypt(rsa_key, encrypted, NONCE2) == PASSWORD + b"\x00"


# -- upstream: native, switches, errors ----------------------------------------------------------


def test_native_password_login() -> None:
    auth = authenticator(b"mysql_native_password")
    resp = response_of(auth)
    assert resp.auth_response == xor(sha1(PASSWORD), sha1(NONCE + sha1(sha1(PASSWORD))))
    assert auth.receive(OK) is None and auth.done


def test_switch_to_native_with_new_scramble() -> None:
    auth = authenticator(b"caching_sha2_password")
    out = auth.receive(build_auth_switch_request(b"mysql_native_password", NONCE2 + b"\x00"))
    assert out == xor(sha1(PASSWORD), sha1(NONCE2 + sha1(sha1(PASSWORD))))
    assert auth.plugin == b"mysql_native_password"
    with pytest.raises(PeerViolation) as exc:  # only one switch
        auth.receive(build_auth_switch_request(b"mysql_native_password", NONCE + b"\x00"))
    assert exc.value.code == 1043


def test_switch_to_clear_password_only_with_tls() -> None:
    switch = build_auth_switch_request(b"mysql_clear_password", b"")
    assert authenticator(b"caching_sha2_password", tls=True).receive(switch) == PASSWORD + b"\x00"
    with pytest.raises(AuthenticationFailed) as exc:
        authenticator(b"caching_sha2_password").receive(switch)
    assert exc.value.errno == 1251


@pytest.mark.parametrize("plugin", [b"client_ed25519", b"sha256_password", b"dialog"])
def test_switch_to_unsupported_plugin(plugin: bytes) -> None:
    with pytest.raises(AuthenticationFailed) as exc:
        authenticator(b"mysql_native_password").receive(build_auth_switch_request(plugin, b"x"))
    assert exc.value.errno == 1251
    with pytest.raises(AuthenticationFailed):
        authenticator(b"mysql_native_password").receive(b"\xfe")  # old-password switch


def test_unknown_default_plugin_starts_with_native() -> None:
    resp = response_of(authenticator(b"client_ed25519"))
    assert resp.auth_plugin_name == b"mysql_native_password"


def test_server_error_raises_with_message() -> None:
    auth = authenticator(b"caching_sha2_password")
    err = build_err_packet(
        1045, "28000", "Access denied for user 'gw'@'10.0.0.1' (using password: YES)"
    )
    with pytest.raises(AuthenticationFailed) as exc:
        auth.receive(err)
    assert exc.value.errno == 1045 and exc.value.sqlstate == "28000"
    assert "Access denied for user 'gw'" in exc.value.message


def test_unexpected_packets() -> None:
    with pytest.raises(PeerViolation):
        authenticator(b"mysql_native_password").receive(b"\x01\x03")  # more data for native
    with pytest.raises(PeerViolation):
        authenticator(b"caching_sha2_password").receive(b"\x01\x07")
    with pytest.raises(PeerViolation):
        authenticator(b"caching_sha2_password").receive(b"\x05")
    with pytest.raises(PeerViolation):
        authenticator(b"caching_sha2_password").receive(b"")


def test_negotiate_capabilities() -> None:
    mariadb_server = (SERVER_CAPS & ~C.CLIENT_LONG_PASSWORD) | C.MARIADB_CLIENT_EXTENDED_METADATA
    wanted = SERVER_CAPS | C.MARIADB_CLIENT_EXTENDED_METADATA | C.MARIADB_CLIENT_PROGRESS
    caps = negotiate_capabilities(wanted, mariadb_server, tls=True, database=False)
    assert caps & C.MARIADB_CLIENT_EXTENDED_METADATA and not caps & C.MARIADB_CLIENT_PROGRESS
    assert not caps & C.CLIENT_LONG_PASSWORD and caps & C.CLIENT_SSL
    assert not caps & C.CLIENT_CONNECT_WITH_DB
    mysql = negotiate_capabilities(wanted, SERVER_CAPS, tls=False, database=True)
    assert mysql >> 32 == 0 and mysql & C.CLIENT_CONNECT_WITH_DB and not mysql & C.CLIENT_SSL
    with pytest.raises(AuthenticationFailed):
        negotiate_capabilities(
            wanted, SERVER_CAPS & ~C.CLIENT_PROTOCOL_41, tls=False, database=False
        )


# -- client-facing: obtaining the JWT --------------------------------------------------------------

JWT = b"eyJhbGciOiJSUzI1NiJ9." + b"x" * 600 + b".sig"


def client_response(plugin: bytes, auth: bytes = b"") -> HandshakeResponse41:
    return HandshakeResponse41(SERVER_CAPS, 1 << 24, 45, b"alice", auth, None, plugin)


def test_exchange_caching_sha2_client_full_auth() -> None:
    ex = ClientPasswordExchange(NONCE, tls_active=True)
    assert ex.start(client_response(b"caching_sha2_password", b"x" * 32)) == b"\x01\x04"
    assert build_perform_full_authentication() == b"\x01\x04"
    assert ex.receive(JWT + b"\x00") is None
    assert ex.done and ex.password == JWT
    with pytest.raises(UsageError):
        ex.receive(b"again")


def test_exchange_switches_other_plugins_to_caching_sha2() -> None:
    ex = ClientPasswordExchange(NONCE, tls_active=True)
    switch = ex.start(client_response(b"mysql_native_password", b"y" * 20))
    assert switch is not None
    req = parse_auth_switch_request(switch)
    assert req.plugin_name == b"caching_sha2_password" and req.plugin_data == NONCE + b"\x00"
    assert ex.receive(b"z" * 32) == b"\x01\x04"
    assert ex.receive(JWT + b"\x00") is None and ex.password == JWT


def test_exchange_prefer_clear_password() -> None:
    ex = ClientPasswordExchange(NONCE, tls_active=True, prefer_clear_password=True)
    switch = ex.start(client_response(b"caching_sha2_password", b"x" * 32))
    assert switch is not None
    assert parse_auth_switch_request(switch).plugin_name == b"mysql_clear_password"
    assert ex.receive(JWT + b"\x00") is None and ex.password == JWT
    direct = ClientPasswordExchange(NONCE, tls_active=True)
    assert direct.start(client_response(b"mysql_clear_password", JWT + b"\x00")) is None
    assert direct.password == JWT


def test_exchange_refuses_without_tls_and_rsa_key_request() -> None:
    with pytest.raises(PeerViolation) as exc:
        ClientPasswordExchange(NONCE, tls_active=False).start(
            client_response(b"caching_sha2_password")
        )
    assert exc.value.code == 1045
    plain = ClientPasswordExchange(NONCE, tls_active=False, allow_plaintext=True)
    assert plain.start(client_response(b"caching_sha2_password", b"x" * 32)) == b"\x01\x04"
    assert is_public_key_request(b"\x02")
    with pytest.raises(PeerViolation) as exc2:
        plain.receive(b"\x02")  # non-TLS stock clients ask for the RSA key: refuse
    assert exc2.value.code == 1045
    assert parse_cleartext_password(b"pw\x00") == b"pw" and parse_cleartext_password(b"pw") == b"pw"


def test_exchange_empty_password_after_switch() -> None:
    ex = ClientPasswordExchange(NONCE, tls_active=True)
    ex.start(client_response(b"mysql_native_password"))
    assert ex.receive(b"") is None and ex.password == b""


# -- real clients against a server built from these codecs -----------------------------------------


def make_tls_context(tmp: Path) -> ssl.SSLContext:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp / "cert.pem", tmp / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


class FakeServer(threading.Thread):
    """Greets, upgrades to TLS on SSLRequest, runs ClientPasswordExchange, answers OK to
    every command until COM_QUIT."""

    def __init__(self, tls: ssl.SSLContext | None, *, prefer_clear: bool = False) -> None:
        super().__init__(daemon=True)
        self.tls = tls
        self.prefer_clear = prefer_clear
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.password: bytes | None = None
        self.error: Exception | None = None
        self.commands: list[bytes] = []
        self.tls_used = False
        self.sockets: list[socket.socket] = []

    def read(self, conn: socket.socket, reader: PacketReader) -> Packet | None:
        while True:
            data = conn.recv(65536)
            if not data:
                return None
            packets = reader.feed(data)
            if packets:
                assert len(packets) == 1 and reader.pending == 0
                return packets[0]

    @staticmethod
    def read_exact(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            assert chunk, "client closed"
            data += chunk
        return data

    def run(self) -> None:
        conn, _ = self.listener.accept()
        self.sockets = [conn]
        try:
            self.serve(conn)
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            for sock in self.sockets:
                sock.close()
            self.listener.close()

    def serve(self, conn: socket.socket) -> None:
        caps = SERVER_CAPS if self.tls else SERVER_CAPS & ~C.CLIENT_SSL
        hs = HandshakeV10(b"5.5.5-10.11.0-MariaDB", 7, NONCE, caps, 45, 2, b"caching_sha2_password")
        conn.sendall(build_packets(build_handshake_v10(hs), 0)[0])
        reader = PacketReader(expected_seq=1)
        # Read exactly one packet: a client sends its TLS ClientHello right after the
        # SSLRequest without waiting, and those bytes belong to the TLS layer.
        header = self.read_exact(conn, 4)
        (pkt,) = reader.feed(header + self.read_exact(conn, int.from_bytes(header[:3], "little")))
        if is_ssl_request(pkt.payload):
            assert self.tls is not None and reader.pending == 0
            conn = self.tls.wrap_socket(conn, server_side=True)
            self.sockets.append(conn)
            self.tls_used = True
            pkt = self.read(conn, reader)
            assert pkt is not None
        resp = parse_handshake_response41(pkt.payload)
        ex = ClientPasswordExchange(
            NONCE,
            tls_active=self.tls_used,
            allow_plaintext=not self.tls,
            prefer_clear_password=self.prefer_clear,
        )
        seq = (pkt.seq + 1) & 0xFF
        try:
            out = ex.start(resp)
            while out is not None:
                conn.sendall(build_packets(out, seq)[0])
                reader.expected_seq = seq + 1
                pkt = self.read(conn, reader)
                assert pkt is not None
                seq = (pkt.seq + 1) & 0xFF
                out = ex.receive(pkt.payload)
        except PeerViolation as exc:
            conn.sendall(build_packets(build_err_packet(1045, "28000", exc.message), seq)[0])
            raise
        self.password = ex.password
        ok = build_ok_packet(OkPacket(status_flags=0), resp.capabilities)
        conn.sendall(build_packets(ok, seq)[0])
        while True:
            reader.reset_sequence(0)
            pkt = self.read(conn, reader)
            if pkt is None or pkt.payload[:1] == b"\x01":
                return
            self.commands.append(pkt.payload)
            conn.sendall(build_packets(ok, 1)[0])


def test_pymysql_sends_jwt_over_tls_via_caching_sha2_full_auth(tmp_path: Path) -> None:
    pymysql = pytest.importorskip("pymysql")
    server = FakeServer(make_tls_context(tmp_path))
    server.start()
    conn = pymysql.connect(
        host="127.0.0.1",
        port=server.port,
        user="alice",
        password=JWT.decode(),
        ssl={"check_hostname": False},
        connect_timeout=5,
    )
    conn.ping()
    conn.close()
    server.join(5)
    assert server.error is None
    assert server.tls_used and server.password == JWT


def test_mysql_connector_sends_jwt_over_tls(tmp_path: Path) -> None:
    connector = pytest.importorskip("mysql.connector")
    server = FakeServer(make_tls_context(tmp_path))
    server.start()
    conn = connector.connect(
        host="127.0.0.1",
        port=server.port,
        user="alice",
        password=JWT.decode(),
        use_pure=True,
        ssl_verify_cert=False,
        connection_timeout=5,
    )
    conn.close()
    server.join(5)
    assert server.error is None
    assert server.tls_used and server.password == JWT


def test_pymysql_clear_password_switch(tmp_path: Path) -> None:
    pymysql = pytest.importorskip("pymysql")
    server = FakeServer(make_tls_context(tmp_path), prefer_clear=True)
    server.start()
    conn = pymysql.connect(
        host="127.0.0.1",
        port=server.port,
        user="alice",
        password=JWT.decode(),
        ssl={"check_hostname": False},
        connect_timeout=5,
    )
    conn.close()
    server.join(5)
    assert server.error is None and server.password == JWT


def test_pymysql_without_tls_is_refused() -> None:
    pymysql = pytest.importorskip("pymysql")
    server = FakeServer(None)
    server.start()
    with pytest.raises(pymysql.err.OperationalError) as exc:
        pymysql.connect(
            host="127.0.0.1",
            port=server.port,
            user="alice",
            password=JWT.decode(),
            connect_timeout=5,
        )
    server.join(5)
    assert exc.value.args[0] == 1045 and "requires TLS" in exc.value.args[1]
    assert isinstance(server.error, PeerViolation) and server.password is None
