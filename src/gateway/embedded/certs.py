"""Throwaway X.509 material for the embedded servers and the gateway's default listener.

Two shapes are needed:
- `make_self_signed`: one certificate that is its own issuer. The gateway uses it for its
  client-facing TLS when no `[tls]` section is configured (clients then use sslmode=require).
- `make_ca_and_server_cert`: a small CA plus a server certificate it signed, so tests can
  connect with sslmode=verify-full / ssl_verify_identity against `ca_file`. libpq refuses a
  self-signed leaf under verify-full unless it is also a CA, so the two roles are kept apart.

EC P-256 keys: fast to generate and accepted by PostgreSQL, MariaDB (OpenSSL), libpq,
PyMySQL and Python's ssl module. Private keys are written 0600 because PostgreSQL refuses a
key file readable by group or others (unless root-owned 0640), and because they are keys.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_HOSTNAMES", "make_ca_and_server_cert", "make_self_signed"]

DEFAULT_HOSTNAMES: tuple[str, ...] = ("localhost", "127.0.0.1")
_DEFAULT_DAYS = 825  # the longest validity Apple clients accept for a TLS server certificate
# Backdating tolerates small clock differences between this host and a container.
_BACKDATE = dt.timedelta(minutes=5)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _san(hostnames: Sequence[str]) -> x509.SubjectAlternativeName:
    """DNS entries for names, IP entries for literals (verify-full on 127.0.0.1 needs iPAddress)."""
    entries: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create with 0600 from the start: a chmod after writing would leave a readable window.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply when the file already existed


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _server_builder(
    subject_cn: str,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    hostnames: Sequence[str],
    days: int,
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(_san(hostnames), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key),
            critical=False,
        )
    )


def make_self_signed(
    cert_path: Path,
    key_path: Path,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    days: int = _DEFAULT_DAYS,
) -> tuple[Path, Path]:
    """Write a self-signed server certificate and its key; return (cert_path, key_path).

    The certificate carries every hostname as a SAN (DNS or IP) and the first as CN.
    """
    if not hostnames:
        raise ValueError("at least one hostname is required")
    cert_path, key_path = Path(cert_path), Path(key_path)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    cert = (
        _server_builder(hostnames[0], name, key.public_key(), hostnames, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path


def make_ca_and_server_cert(
    directory: Path,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    days: int = _DEFAULT_DAYS,
) -> tuple[Path, Path, Path]:
    """Write ca.crt, server.crt and server.key into `directory`; return those three paths.

    The CA key is not kept: nothing needs to sign more certificates later, and a key that is
    never written cannot leak.
    """
    if not hostnames:
        raise ValueError("at least one hostname is required")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    ca_key = _new_key()
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "db-gateway test"),
            x509.NameAttribute(NameOID.COMMON_NAME, "db-gateway throwaway CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days + 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_key = _new_key()
    server_cert = (
        _server_builder(hostnames[0], ca_name, server_key.public_key(), hostnames, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_path = directory / "ca.crt"
    cert_path = directory / "server.crt"
    key_path = directory / "server.key"
    _write_cert(ca_path, ca_cert)
    _write_cert(cert_path, server_cert)
    _write_key(key_path, server_key)
    return ca_path, cert_path, key_path
