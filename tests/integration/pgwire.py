"""A tiny blocking PostgreSQL wire client for tests that need exact bytes:
SQLSTATEs and fields of refusals, and deliberately broken input."""

from __future__ import annotations

import socket
import ssl
import struct

from protocols.postgres.messages import (
    build_ssl_request,
    build_startup_message,
    parse_error_fields,
)


class Wire:
    def __init__(self, host: str, port: int, timeout: float = 10) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout
        )

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError(f"closed after {len(out)} of {n} bytes")
            out += chunk
        return out

    def message(self) -> tuple[str, bytes]:
        header = self.recv_exact(5)
        length = struct.unpack("!I", header[1:])[0]
        return chr(header[0]), self.recv_exact(length - 4)

    def closed(self, timeout: float = 5) -> bool:
        """True if the peer closes (EOF or reset) within the timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, ssl.SSLError, OSError) as exc:
            return not isinstance(exc, TimeoutError)

    def start_tls(self) -> None:
        self.send(build_ssl_request())
        assert self.recv_exact(1) == b"S"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock)

    def login(
        self, token: str, *, user: str = "alice@example.com", tls: bool = True, **params: str
    ) -> tuple[str, dict[str, str] | list[tuple[str, bytes]]]:
        """('ok', messages up to ReadyForQuery) or ('error', ErrorResponse fields)."""
        if tls:
            self.start_tls()
        self.send(build_startup_message({"user": user, "database": "app", **params}))
        msgs: list[tuple[str, bytes]] = []
        while True:
            mtype, body = self.message()
            if mtype == "E":
                return "error", parse_error_fields(body)
            if mtype == "R" and struct.unpack("!i", body[:4])[0] == 3:
                self.send(b"p" + struct.pack("!I", len(token) + 5) + token.encode() + b"\0")
                continue
            msgs.append((mtype, body))
            if mtype == "Z":
                return "ok", msgs

    def query(self, sql: str) -> list[tuple[str, bytes]]:
        body = sql.encode() + b"\0"
        self.send(b"Q" + struct.pack("!I", len(body) + 4) + body)
        return self.until_ready()

    def until_ready(self) -> list[tuple[str, bytes]]:
        """Every message up to and including the next ReadyForQuery."""
        out = []
        while True:
            mtype, body = self.message()
            out.append((mtype, body))
            if mtype == "Z":
                return out

    def until(self, kind: str) -> list[tuple[str, bytes]]:
        """Every message up to and including the next one of type ``kind``."""
        out = []
        while True:
            out.append(self.message())
            if out[-1][0] == kind:
                return out

    def close(self) -> None:
        self.sock.close()


# -- frontend messages, byte for byte ("Message Formats") ----------------------------------


def frontend(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def parse(name: str, sql: str) -> bytes:
    return frontend(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + b"\0\0")


def bind(portal: str, statement: str) -> bytes:
    """No parameters, every result column in text format."""
    return frontend(b"B", portal.encode() + b"\0" + statement.encode() + b"\0" + bytes(6))


def describe(kind: bytes, name: str) -> bytes:
    return frontend(b"D", kind + name.encode() + b"\0")


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return frontend(b"E", portal.encode() + b"\0" + struct.pack("!i", max_rows))


def query(sql: str) -> bytes:
    return frontend(b"Q", sql.encode() + b"\0")


SYNC = frontend(b"S")
FLUSH = frontend(b"H")
COPY_DONE = frontend(b"c")


def rows(messages: list[tuple[str, bytes]]) -> list[bytes]:
    """The DataRow bodies among ``messages``."""
    return [body for kind, body in messages if kind == "D"]
