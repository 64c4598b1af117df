"""A TLS connection between two contexts through memory BIOs: no sockets, so nothing to
leak or time out (shared by the certificate and TLS-context tests)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass
class MemoryTls:
    client: ssl.SSLObject
    server: ssl.SSLObject
    c_in: ssl.MemoryBIO
    c_out: ssl.MemoryBIO
    s_in: ssl.MemoryBIO
    s_out: ssl.MemoryBIO

    def to_server(self) -> None:
        self.s_in.write(self.c_out.read())

    def to_client(self) -> None:
        self.c_in.write(self.s_out.read())


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> MemoryTls:
    """Both sides' handshakes, driven to completion (AssertionError if they do not end)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    tls = MemoryTls(client, server, c_in, c_out, s_in, s_out)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        tls.to_server()
        tls.to_client()
        if all(done.values()):
            return tls
    raise AssertionError("handshake did not complete")
