"""The gateway's TLS contexts: both hops hand uvloop an SSLObject whose hot methods are
the C object's own, and a handshake plus data both ways behaves as with ``ssl.SSLObject``."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.embedded.certs import make_self_signed
from gateway.net.tls import DirectSSLObject, server_context, upstream_context


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


def _pair(tmp_path: Path, mode: str) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    cert, key = make_self_signed(tmp_path / "s.crt", tmp_path / "s.key")
    server_ctx = server_context(cert, key)
    client_ctx = upstream_context(mode, str(cert) if mode == "verify-full" else None)
    assert client_ctx is not None
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for name, obj in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        _pump(c_out, s_in)
        _pump(s_out, c_in)
        if all(done.values()):
            break
    assert all(done.values())
    client._bios = (c_in, c_out)  # type: ignore[attr-defined]
    server._bios = (s_in, s_out)  # type: ignore[attr-defined]
    return client, server


@pytest.mark.parametrize("mode", ["require", "verify-full"])
def test_both_hops_use_the_c_methods(tmp_path: Path, mode: str) -> None:
    client, server = _pair(tmp_path, mode)
    for obj in (client, server):
        assert isinstance(obj, DirectSSLObject)
        inner = obj._sslobj  # type: ignore[attr-defined]
        # Bound to the C object: no Python frame between uvloop and OpenSSL.
        assert obj.read == inner.read and obj.write == inner.write
        assert obj.pending == inner.pending
        assert type(obj.read).__name__ == "builtin_function_or_method"


def test_data_flows_and_errors_are_unchanged(tmp_path: Path) -> None:
    client, server = _pair(tmp_path, "require")
    assert client.write(b"Q\x00\x00\x00\x0dSELECT 1\x00") == 14
    # Nothing has reached the server yet: reading raises SSLWantReadError, as it does
    # through ssl.SSLObject.
    with pytest.raises(ssl.SSLWantReadError):
        server.read(1024)
    assert server.pending() == 0


def test_round_trip_through_memory_bios(tmp_path: Path) -> None:
    client, server = _pair(tmp_path, "require")
    c_in, c_out = client._bios  # type: ignore[attr-defined]
    s_in, s_out = server._bios  # type: ignore[attr-defined]
    client.write(b"hello upstream")
    _pump(c_out, s_in)
    assert server.read(1024) == b"hello upstream"
    buf = bytearray(64)
    server.write(b"hello client")
    _pump(s_out, c_in)
    n = int(client.read(64, buf))  # uvloop's buffered read: (size, buffer)
    assert bytes(buf[:n]) == b"hello client"
