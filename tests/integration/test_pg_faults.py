"""Bad input and faults: the gateway answers with a protocol error or closes that
one connection, and keeps serving everyone else."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import psycopg
import pytest

from gateway.embedded.postgres import PostgresServer, start_postgres

from .conftest import GatewayProcess, StartGateway
from .pgwire import Wire

pytestmark = pytest.mark.integration


@pytest.fixture
def healthy(gateway: GatewayProcess) -> Iterator[None]:
    """After each fault, a normal client must still be served."""
    yield
    assert gateway.alive()
    with psycopg.connect(gateway.dsn(gateway.token())) as conn:
        assert conn.execute("SELECT 'still serving'").fetchone() == ("still serving",)


def _error_then_close(w: Wire) -> dict[str, str]:
    from protocols.postgres.messages import parse_error_fields

    mtype, body = w.message()
    assert mtype == "E"
    fields = parse_error_fields(body)
    assert w.closed()
    w.close()
    return fields


def test_garbage_first_packet(gateway: GatewayProcess, healthy: None) -> None:
    w = Wire(gateway.host, gateway.port)
    w.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _error_then_close(w)["C"] == "08P01"


@pytest.mark.parametrize("length", [0, 4, 7, -1, 10_001, 2**31 - 1])
def test_startup_length_lies(gateway: GatewayProcess, healthy: None, length: int) -> None:
    w = Wire(gateway.host, gateway.port)
    w.send(struct.pack("!i", length) + struct.pack("!I", 196608) + b"user\0x\0\0")
    assert _error_then_close(w)["C"] == "08P01"


def test_truncated_startup_then_disconnect(gateway: GatewayProcess, healthy: None) -> None:
    w = Wire(gateway.host, gateway.port)
    w.send(struct.pack("!I", 100) + struct.pack("!I", 196608) + b"user\0")
    w.close()


def test_protocol_2_refused(gateway: GatewayProcess, healthy: None) -> None:
    w = Wire(gateway.host, gateway.port)
    w.send(struct.pack("!II", 8, 131072))
    assert _error_then_close(w)["C"] == "0A000"


def test_bytes_pipelined_after_ssl_request_refused(gateway: GatewayProcess, healthy: None) -> None:
    # CVE-2021-23214 class: plaintext injected before the TLS handshake.
    w = Wire(gateway.host, gateway.port)
    w.send(struct.pack("!II", 8, 80877103) + b"Q\0\0\0\x0dSELECT 1\0")
    data = w.sock.recv(1)
    assert data in (b"", b"E")  # refused (no 'S')
    assert w.closed()
    w.close()


def test_oversized_message_refused_before_buffering(gateway: GatewayProcess, healthy: None) -> None:
    w = Wire(gateway.host, gateway.port)
    assert w.login(gateway.token())[0] == "ok"
    # Header only: declares 1 GiB (limit in the test config: 32 MiB).
    w.send(b"Q" + struct.pack("!I", 1 << 30))
    fields = _error_then_close(w)
    assert fields["C"] == "54000"


def test_lying_length_after_login(gateway: GatewayProcess, healthy: None) -> None:
    w = Wire(gateway.host, gateway.port)
    assert w.login(gateway.token())[0] == "ok"
    w.send(b"Q" + struct.pack("!I", 2))
    assert _error_then_close(w)["C"] == "08P01"


def test_unknown_message_type(gateway: GatewayProcess, healthy: None) -> None:
    w = Wire(gateway.host, gateway.port)
    assert w.login(gateway.token())[0] == "ok"
    w.send(b"?" + struct.pack("!I", 4))
    assert _error_then_close(w)["C"] == "08P01"


def test_malformed_bind_is_a_protocol_violation(gateway: GatewayProcess, healthy: None) -> None:
    w = Wire(gateway.host, gateway.port)
    assert w.login(gateway.token())[0] == "ok"
    body = b"\0\0" + struct.pack("!h", 0) + struct.pack("!h", 1) + struct.pack("!i", 1000) + b"x"
    w.send(b"B" + struct.pack("!I", len(body) + 4) + body)
    assert _error_then_close(w)["C"] == "08P01"


def test_many_messages_in_one_write(gateway: GatewayProcess, healthy: None) -> None:
    w = Wire(gateway.host, gateway.port)
    assert w.login(gateway.token())[0] == "ok"
    q = b"SELECT 1\0"
    w.send((b"Q" + struct.pack("!I", len(q) + 4) + q) * 200)
    for _ in range(200):
        while w.message()[0] != "Z":
            pass
    w.close()


def test_client_vanishes_mid_result_cancels_upstream(
    gateway: GatewayProcess, pg_server: PostgresServer, healthy: None
) -> None:
    w = Wire(gateway.host, gateway.port)
    status, msgs = w.login(gateway.token())
    assert status == "ok"
    pid = next(struct.unpack("!I", body[:4])[0] for t, body in msgs if t == "K")
    # A long result: read a little, then drop the connection without Terminate.
    w.send(
        b"Q"
        + struct.pack("!I", 4 + 61)
        + b"SELECT g, repeat('x', 200) FROM generate_series(1, 100000000) g\0"[:61]
    )
    w.message()
    w.sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        still = pg_server.psql(
            f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}", dbname="app"
        ).strip()
        if still == "0":
            break
        time.sleep(0.2)
    assert still == "0", "the backend kept running after the client vanished"


def test_database_restarted_mid_session(start_gateway: object, tmp_path: Path) -> None:
    server = start_postgres(base_dir=tmp_path / "pg", ssl=True)
    try:
        server.create_role("gw_restart", "restart-pass-123", login=True)
        gw = start_gateway(  # type: ignore[operator]
            server=server,
            pg_user="gw_restart",
            password="restart-pass-123",
            database="postgres",
            recording=False,
        )
        other = psycopg.connect(gw.dsn(gw.token(), dbname="postgres"), autocommit=True)
        conn = psycopg.connect(gw.dsn(gw.token(), dbname="postgres"), autocommit=True)
        assert conn.execute("SELECT 1").fetchone() == (1,)
        server.restart()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            other.execute("SELECT 1")
        conn.close()
        other.close()
        assert gw.alive()
        with psycopg.connect(gw.dsn(gw.token(), dbname="postgres")) as fresh:
            assert fresh.execute("SELECT 2").fetchone() == (2,)
    finally:
        server.stop()


def test_upstream_md5_and_cleartext_roles(
    start_gateway: object, pg_md5_role: tuple[str, str], pg_clear_role: tuple[str, str]
) -> None:
    for role, password in (pg_md5_role, pg_clear_role):
        gw = start_gateway(pg_user=role, password=password, recording=False)  # type: ignore[operator]
        with psycopg.connect(gw.dsn(gw.token())) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
        assert '"upstream_auth": "' + ("md5" if "md5" in role else "password") in gw.log_text()


def test_wrong_upstream_password_gives_generic_error(start_gateway: object) -> None:
    gw = start_gateway(password="definitely-wrong", recording=False)  # type: ignore[operator]
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(gw.dsn(gw.token()))
    text = str(info.value)
    assert 'could not connect to target "app-pg"' in text
    assert "gw_" not in text  # the real upstream user is not revealed


def test_token_expiry_ends_session(gateway: GatewayProcess) -> None:
    # exp is whole seconds (4-5 s from now): room for the login and a first query on a
    # slow host.
    token = gateway.token(ttl=5)
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    conn = psycopg.connect(gateway.dsn(token), autocommit=True)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    # The session keeps working until its token expires, then ends.
    deadline = time.monotonic() + max(0.0, expires_at - time.time()) + 10
    with pytest.raises(psycopg.OperationalError, match="token expired"):
        while True:
            conn.execute("SELECT 1")
            assert time.monotonic() < deadline, "the session outlived its token"
            time.sleep(0.1)
    assert time.time() > expires_at - 0.5  # not before its time (timers have ms steps)
    conn.close()


def refused_within(gw: GatewayProcess, seconds: float) -> None:
    """Wait until the gateway's listener refuses connections (it stopped accepting)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((gw.host, gw.port), timeout=1):
                pass
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, "the listener still accepts connections"
        time.sleep(0.02)


def test_graceful_shutdown_drains_then_closes(start_gateway: object) -> None:
    gw = start_gateway(recording=False)  # type: ignore[operator]  # shutdown_grace = 3s
    conn = psycopg.connect(gw.dsn(gw.token()), autocommit=True)
    os.kill(gw.proc.pid, signal.SIGTERM)
    refused_within(gw, 2.0)  # the listener closes at once; the grace is 3 s
    # Draining: the live session keeps working, new connections are refused.
    assert conn.execute("SELECT 'draining'").fetchone() == ("draining",)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(gw.dsn(gw.token()), connect_timeout=2)
    # After the grace period the session is closed with 57P01 and the process exits 0.
    assert gw.proc.wait(15) == 0
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    assert '"event": "stopped"' in gw.log_text()


def test_shutdown_after_the_grace_cancels_a_running_statement(
    start_gateway: object, pg_server: PostgresServer
) -> None:
    """A statement still running when the drain grace ends is cancelled on the server,
    not left running behind a closed socket."""
    from concurrent.futures import ThreadPoolExecutor

    gw = start_gateway(recording=False)  # type: ignore[operator]  # shutdown_grace = 3s
    conn = psycopg.connect(gw.dsn(gw.token()), autocommit=True)
    needle = "SELECT pg_sleep(60) AS shutdown_probe"
    running = ThreadPoolExecutor(1).submit(conn.execute, needle)
    time.sleep(0.5)
    os.kill(gw.proc.pid, signal.SIGTERM)
    assert gw.proc.wait(15) == 0
    with pytest.raises(psycopg.OperationalError, match="shutting down"):
        running.result(10)
    direct = psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        dbname="app",
        user="gateway",
        password=pg_server.roles["gateway"],
        sslmode="require",
    )
    with direct:
        deadline = time.monotonic() + 5
        while True:
            (count,) = direct.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = %s", (needle,)
            ).fetchone()  # type: ignore[misc]
            if count == 0:
                break
            assert time.monotonic() < deadline, "the backend still runs the statement"
            time.sleep(0.1)
    conn.close()


def test_slow_client_pauses_upstream_memory_stays_bounded(gateway: GatewayProcess) -> None:
    import psutil

    proc = psutil.Process(gateway.proc.pid)
    w = Wire(gateway.host, gateway.port)
    assert w.login(gateway.token())[0] == "ok"
    before = proc.memory_info().rss
    # About 1 GB of rows; the client reads one message and then stops reading.
    sql = b"SELECT g, repeat('x', 2000) FROM generate_series(1, 500000) g\0"
    w.send(b"Q" + struct.pack("!I", len(sql) + 4) + sql)
    w.message()
    time.sleep(3)
    grown = proc.memory_info().rss - before
    w.sock.close()
    # Socket buffers aside, nothing piles up in the gateway: the upstream leg is
    # paused while the client leg's transport is above its high-water mark.
    assert grown < 48 * 1024 * 1024, f"gateway RSS grew by {grown / 1e6:.1f} MB"
    assert gateway.alive()


@pytest.fixture
def silent_upstream() -> Iterator[object]:
    """A "database" that accepts connections and never answers: logins hang upstream."""
    import threading
    from types import SimpleNamespace

    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield SimpleNamespace(host="127.0.0.1", port=server.getsockname()[1], ca_file=None)
    server.close()
    for conn in accepted:
        conn.close()


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


def test_a_client_sending_ahead_of_its_login_is_not_buffered_without_bound(
    start_gateway: StartGateway, silent_upstream: object
) -> None:
    """While the gateway logs in upstream, what the client sends waits in TCP, not in
    the gateway's memory: it stops reading past a small buffer."""
    from protocols.postgres.messages import build_startup_message

    gw = start_gateway(server=silent_upstream, upstream_tls="disable")
    assert gw.proc is not None
    before = _rss_kb(gw.proc.pid)
    client = Wire(gw.host, gw.port)
    try:
        client.start_tls()
        client.send(build_startup_message({"user": "a", "database": "app"}))
        assert client.message()[0] == "R"
        token = gw.token().encode()
        client.send(b"p" + struct.pack("!I", len(token) + 5) + token + b"\0")
        chunk = (b"Q" + struct.pack("!I", 13) + b"SELECT 1\0") * 8000
        sent = 0
        client.sock.settimeout(1)
        deadline = time.monotonic() + 5
        with contextlib.suppress(TimeoutError, OSError):
            while time.monotonic() < deadline:
                client.sock.sendall(chunk)
                sent += len(chunk)
        assert sent < 64 * 1024 * 1024  # the gateway stopped reading
        assert _rss_kb(gw.proc.pid) - before < 32 * 1024
    finally:
        client.close()
