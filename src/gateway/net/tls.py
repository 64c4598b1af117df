"""TLS contexts for both hops.

Client-facing: the configured certificate or a self-signed one generated into
state_dir. ALPN ``postgresql`` is offered because PostgreSQL 17 clients using
direct TLS (``sslnegotiation=direct``) require it, and the gateway requires it
from them in turn (as the PG17 server does).

Upstream modes follow libpq's sslmode: disable | prefer | require (encrypt, no
verification) | verify-full (CA + host name).
"""

from __future__ import annotations

import ssl
from pathlib import Path

ALPN_POSTGRESQL = "postgresql"


class DirectSSLObject(ssl.SSLObject):
    """``ssl.SSLObject`` whose hot methods are the C object's own.

    uvloop's TLS transport calls ``read``, ``write`` and ``pending`` several times per
    network read or write; ``ssl.SSLObject`` defines each as a Python method that only
    forwards to the ``_ssl._SSLObject`` it wraps. Binding the C methods on the instance
    removes that Python frame from every call and changes nothing else: same arguments,
    results and exceptions (tests/unit/test_tls_contexts.py).
    """

    @classmethod
    def _create(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        self = super()._create(*args, **kwargs)  # type: ignore[misc]
        inner = self._sslobj
        self.read = inner.read
        self.write = inner.write
        self.pending = inner.pending
        return self


def _direct(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.sslobject_class = DirectSSLObject
    return ctx


def server_context(cert_file: Path, key_file: Path, *, min_version: str = "1.2") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    ctx.set_alpn_protocols([ALPN_POSTGRESQL])
    return _direct(ctx)


def ensure_server_certificate(
    cert_file: str | None, key_file: str | None, state_dir: Path
) -> tuple[Path, Path]:
    """The configured pair, or a self-signed pair kept in state_dir (made once)."""
    if cert_file and key_file:
        return Path(cert_file), Path(key_file)
    cert = state_dir / "server.crt"
    key = state_dir / "server.key"
    if not (cert.exists() and key.exists()):
        from gateway.embedded.certs import make_self_signed

        state_dir.mkdir(parents=True, exist_ok=True)
        make_self_signed(cert, key)
    return cert, key


def upstream_context(mode: str, ca_file: str | None) -> ssl.SSLContext | None:
    if mode == "disable":
        return None
    if mode == "verify-full":
        ctx = (
            ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        )
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return _direct(ctx)
    # prefer / require: encrypt without verifying, as libpq does without a root cert.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return _direct(ctx)
