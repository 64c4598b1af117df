"""A raw MySQL wire client for the bad-input tests, built on the sans-I/O codecs.

TLS runs through ``ssl.MemoryBIO`` so a test can put the SSLRequest and the TLS
ClientHello into one TCP segment (what real clients often do).
"""

from __future__ import annotations

import contextlib
import socket
import ssl

from protocols.mysql.constants import Capability, Command
from protocols.mysql.framing import build_packets
from protocols.mysql.handshake import (
    HandshakeResponse41,
    HandshakeV10,
    SslRequest,
    build_handshake_response41,
    build_ssl_request,
    parse_handshake_v10,
)
from protocols.mysql.packets import ErrPacket, parse_err_packet

C = Capability
CLIENT_CAPS = int(
    C.CLIENT_LONG_PASSWORD
    | C.CLIENT_LONG_FLAG
    | C.CLIENT_PROTOCOL_41
    | C.CLIENT_TRANSACTIONS
    | C.CLIENT_SECURE_CONNECTION
    | C.CLIENT_MULTI_STATEMENTS
    | C.CLIENT_MULTI_RESULTS
    | C.CLIENT_PS_MULTI_RESULTS
    | C.CLIENT_PLUGIN_AUTH
    | C.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | C.CLIENT_CONNECT_WITH_DB
)


class WireClosed(Exception):
    pass


class Wire:
    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.tls: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._plain = b""
        self.greeting: HandshakeV10 | None = None

    # -- raw bytes ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.sendall(data)
            return
        self.tls.write(data)
        self._flush()

    def _flush(self) -> None:
        pending = self._out.read()
        if pending:
            self.sock.sendall(pending)

    def _recv_some(self) -> bytes:
        if self.tls is None:
            data = self.sock.recv(65536)
            if not data:
                raise WireClosed
            return data
        while True:
            try:
                data = self.tls.read(65536)
                if not data:  # close_notify
                    raise WireClosed
                return data
            except ssl.SSLWantReadError:
                raw = self.sock.recv(65536)
                if not raw:
                    raise WireClosed from None
                self._in.write(raw)
            except ssl.SSLZeroReturnError:
                raise WireClosed from None

    def recv_exactly(self, n: int) -> bytes:
        while len(self._plain) < n:
            self._plain += self._recv_some()
        out, self._plain = self._plain[:n], self._plain[n:]
        return out

    def packet(self) -> tuple[int, bytes]:
        """(sequence id, payload) of one logical packet."""
        parts = []
        first_seq = -1
        while True:
            header = self.recv_exactly(4)
            length = int.from_bytes(header[:3], "little")
            if first_seq < 0:
                first_seq = header[3]
            parts.append(self.recv_exactly(length))
            if length < 0xFFFFFF:
                return first_seq, b"".join(parts)

    def closed(self, timeout: float = 5.0) -> bool:
        """True if the gateway closes the connection (EOF) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                self._recv_some()
        except (WireClosed, ConnectionResetError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    # -- login ------------------------------------------------------------------------------

    def read_greeting(self) -> HandshakeV10:
        seq, payload = self.packet()
        assert seq == 0
        self.greeting = parse_handshake_v10(payload)
        return self.greeting

    caps = CLIENT_CAPS

    def start_tls(self, *, pipelined: bool = False) -> None:
        """SSLRequest (seq 1), then the TLS handshake; with ``pipelined`` the first TLS
        flight goes out in the same write as the SSLRequest."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        request = build_packets(
            build_ssl_request(SslRequest(self.caps | C.CLIENT_SSL, 1 << 24, 45)), 1
        )[0]
        self.tls = ctx.wrap_bio(self._in, self._out, server_side=False)
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        hello = self._out.read()
        if pipelined:
            self.sock.sendall(request + hello)
        else:
            self.sock.sendall(request)
            self.sock.sendall(hello)
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                raw = self.sock.recv(65536)
                if not raw:
                    raise WireClosed from None
                self._in.write(raw)

    def handshake_response(
        self, user: str = "alice@example.com", database: str | None = "app", seq: int = 2
    ) -> None:
        caps = self.caps | (C.CLIENT_SSL if self.tls is not None else 0)
        response = HandshakeResponse41(
            caps,
            1 << 24,
            45,
            user.encode(),
            b"\x00" * 32,
            database.encode() if database else None,
            b"caching_sha2_password",
        )
        self.send(build_packets(build_handshake_response41(response), seq)[0])

    def login(self, token: str, *, pipelined: bool = False, extra_caps: int = 0) -> bytes:
        """Full TLS login; returns the final OK payload (raises on ERR)."""
        self.caps = CLIENT_CAPS | extra_caps
        self.read_greeting()
        self.start_tls(pipelined=pipelined)
        self.handshake_response()
        seq, payload = self.packet()
        assert (seq, payload) == (3, b"\x01\x04"), (seq, payload)  # perform full auth
        self.send(build_packets(token.encode() + b"\x00", 4)[0])
        seq, payload = self.packet()
        if payload[:1] == b"\xff":
            raise AssertionError(parse_err_packet(payload))
        assert seq == 5 and payload[:1] == b"\x00"
        return payload

    # -- commands ---------------------------------------------------------------------------

    def command(self, payload: bytes, seq: int = 0) -> None:
        self.send(build_packets(payload, seq)[0])

    def query(self, sql: str) -> None:
        self.command(bytes((Command.COM_QUERY,)) + sql.encode())

    def error(self) -> tuple[int, ErrPacket]:
        seq, payload = self.packet()
        assert payload[:1] == b"\xff", payload[:40]
        return seq, parse_err_packet(payload)

    def response_packets(self) -> list[tuple[int, bytes]]:
        """Every packet of a simple text result (or OK/ERR), classic EOF mode."""
        out = [self.packet()]
        first = out[0][1]
        if first[:1] in (b"\x00", b"\xff"):
            return out
        eofs = 0
        while eofs < 2:
            out.append(self.packet())
            payload = out[-1][1]
            if payload[:1] == b"\xff":
                break
            if payload[:1] == b"\xfe" and len(payload) < 9:
                eofs += 1
        return out
