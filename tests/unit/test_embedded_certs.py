"""Certificates from gateway.embedded.certs: SANs, key permissions, and real TLS handshakes."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.embedded.certs import make_ca_and_server_cert, make_self_signed

from .tls_memory import handshake


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> None:
    handshake(server_ctx, client_ctx, hostname)


def _server_ctx(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def _client_ctx(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    # Python 3.13 turns strict X.509 checks on by default; prove the certificates pass them.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def _sans(cert_path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return dns, ips


def test_self_signed_has_dns_and_ip_sans_and_private_key(tmp_path: Path) -> None:
    cert, key = make_self_signed(
        tmp_path / "s.crt", tmp_path / "s.key", ("localhost", "127.0.0.1", "::1", "gw.test")
    )
    dns, ips = _sans(cert)
    assert dns == ["localhost", "gw.test"]
    assert [ipaddress.ip_address(i) for i in ips] == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    assert isinstance(loaded.public_key(), ec.EllipticCurvePublicKey)


def test_self_signed_key_is_0600_even_when_overwriting(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("old")
    key.chmod(0o644)
    make_self_signed(tmp_path / "c.pem", key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_self_signed_verifies_when_pinned_as_its_own_ca(tmp_path: Path, hostname: str) -> None:
    cert, key = make_self_signed(tmp_path / "s.crt", tmp_path / "s.key")
    _handshake(_server_ctx(cert, key), _client_ctx(cert), hostname)


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_ca_signed_server_passes_hostname_verification(tmp_path: Path, hostname: str) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    assert {p.name for p in (ca, cert, key)} == {"ca.crt", "server.crt", "server.key"}
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    _handshake(_server_ctx(cert, key), _client_ctx(ca), hostname)


def test_ca_signed_server_rejects_other_hostname(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path, ("localhost",))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_server_ctx(cert, key), _client_ctx(ca), "db.example.com")


def test_ca_signed_server_rejected_by_another_ca(tmp_path: Path) -> None:
    _, cert, key = make_ca_and_server_cert(tmp_path / "a")
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "b")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_server_ctx(cert, key), _client_ctx(other_ca), "localhost")


def test_empty_hostnames_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_self_signed(tmp_path / "c", tmp_path / "k", ())
    with pytest.raises(ValueError):
        make_ca_and_server_cert(tmp_path, ())
