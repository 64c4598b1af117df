"""The gateway's TLS contexts: both hops hand uvloop an SSLObject whose hot methods are
the C object's own, and a handshake plus data both ways behaves as with ``ssl.SSLObject``."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.embedded.certs import make_self_signed
from gateway.net.tls import DirectSSLObject, server_context, upstream_context

from .tls_memory import MemoryTls, handshake


def _pair(tmp_path: Path, mode: str) -> MemoryTls:
    cert, key = make_self_signed(tmp_path / "s.crt", tmp_path / "s.key")
    client_ctx = upstream_context(mode, str(cert) if mode == "verify-full" else None)
    assert client_ctx is not None
    return handshake(server_context(cert, key), client_ctx, "localhost")


@pytest.mark.parametrize("mode", ["require", "verify-full"])
def test_both_hops_use_the_c_methods(tmp_path: Path, mode: str) -> None:
    tls = _pair(tmp_path, mode)
    for obj in (tls.client, tls.server):
        assert isinstance(obj, DirectSSLObject)
        inner = obj._sslobj  # type: ignore[attr-defined]
        # Bound to the C object: no Python frame between uvloop and OpenSSL.
        assert obj.read == inner.read and obj.write == inner.write
        assert obj.pending == inner.pending
        assert type(obj.read).__name__ == "builtin_function_or_method"


def test_data_flows_and_errors_are_unchanged(tmp_path: Path) -> None:
    tls = _pair(tmp_path, "require")
    client, server = tls.client, tls.server
    assert client.write(b"Q\x00\x00\x00\x0dSELECT 1\x00") == 14
    # Nothing has reached the server yet: reading raises SSLWantReadError, as it does
    # through ssl.SSLObject.
    with pytest.raises(ssl.SSLWantReadError):
        server.read(1024)
    assert server.pending() == 0


def test_round_trip_through_memory_bios(tmp_path: Path) -> None:
    tls = _pair(tmp_path, "require")
    tls.client.write(b"hello upstream")
    tls.to_server()
    assert tls.server.read(1024) == b"hello upstream"
    buf = bytearray(64)
    tls.server.write(b"hello client")
    tls.to_client()
    n = int(tls.client.read(64, buf))  # uvloop's buffered read: (size, buffer)
    assert bytes(buf[:n]) == b"hello client"
