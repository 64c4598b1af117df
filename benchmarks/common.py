"""Shared plumbing for the benchmarks: a throwaway PostgreSQL, pgbouncer, the gateway, a bare
forwarder, and pgbench.

Everything runs on this machine, listens on 127.0.0.1 on ports the OS picked, lives in one
temporary directory and is stopped when the `Bench` context exits (also on Ctrl-C).

TLS is on every leg so the proxies are compared on equal terms:

    pgbench --TLS--> PostgreSQL                                  (direct)
    pgbench --TLS--> pgbouncer --TLS--> PostgreSQL               (session pool mode)
    pgbench --TLS--> gateway   --TLS--> PostgreSQL               (recording off / on)
    pgbench --TLS-----(bare forwarder)-----> PostgreSQL          (optional: one Python hop,
                                                                  TLS passes through untouched)
    pgbench --TLS--> TLS forwarder --TLS--> PostgreSQL           (optional: one Python hop that
                                                                  terminates TLS on both legs,
                                                                  as the gateway does; no parsing)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from gateway.embedded.certs import make_self_signed
from gateway.embedded.common import running_as_root, service_user
from gateway.embedded.postgres import PostgresServer, start_postgres
from gateway.keys import generate_signing_key, mint_token

ISSUER = "https://idp.bench/"
AUDIENCE = "db-gateway-bench"
BENCH_USER = "bench@example.com"
PG_ROLE = "gateway"
PG_DB = "app"
UPSTREAM_PASSWORD_ENV = "GW_BENCH_UPSTREAM_PASSWORD"
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Endpoint:
    """Where pgbench connects, as libpq environment variables."""

    name: str
    port: int
    user: str
    password: str
    proc: subprocess.Popen[bytes] | None = None
    # Extra libpq settings for this endpoint only.
    settings: Mapping[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": PG_DB,
            "PGSSLMODE": "require",
            "PGCONNECT_TIMEOUT": "20",
            **self.settings,
        }


@dataclass
class Bench:
    """Owns every process and file the benchmark starts; `close()` stops them all."""

    base: Path
    pg: PostgresServer | None = None
    role_password: str = "bench-upstream-pw"
    key_path: Path | None = None
    jwks_path: Path | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # -- PostgreSQL --

    def start_postgres(self, max_connections: int | None = None) -> PostgresServer:
        pg = start_postgres(base_dir=self.base, ssl=True)
        self.pg = pg
        if max_connections is not None:
            # The embedded harness writes max_connections = 200; ALTER SYSTEM (in
            # postgresql.auto.conf) overrides it after a restart.
            pg.psql(f"ALTER SYSTEM SET max_connections = {int(max_connections)};\n")
            pg.restart()
        pg.create_role(PG_ROLE, self.role_password, login=True)
        pg.create_database(PG_DB, owner=PG_ROLE)
        return pg

    def direct(self) -> Endpoint:
        assert self.pg is not None
        return Endpoint("direct", self.pg.port, PG_ROLE, self.role_password)

    # -- tokens --

    def token(self, ttl: float = 6 * 3600) -> str:
        if self.key_path is None:
            keydir = self.base / "keys"
            self.key_path = generate_signing_key(keydir, overwrite=True)
            self.jwks_path = keydir / "jwks.json"
        return mint_token(self.key_path, BENCH_USER, ["dba"], ttl, audience=AUDIENCE, issuer=ISSUER)

    # -- the gateway --

    def start_gateway(
        self,
        name: str,
        *,
        recording: bool,
        launcher: Sequence[str] | None = None,
        upstream_tls: str = "require",
        policy_extra: str = "",
        config_extra: str = "",
    ) -> Endpoint:
        """`launcher`: argv that runs the gateway CLI (default `python -m gateway`);
        `policy_extra` is appended to the bench policy (masks), `config_extra` to the file."""
        assert self.pg is not None
        token = self.token()
        work = self.base / name
        work.mkdir()
        port = free_port()
        config = work / "gateway.toml"
        config.write_text(
            f"""
[gateway]
state_dir = "{work / "state"}"
session_dir = "{work / "sessions"}"
shutdown_grace = "2s"
log_level = "info"
log_format = "json"

[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "{self.jwks_path}"

[recording]
enabled = {"true" if recording else "false"}

[[targets]]
name = "app-pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
host = "127.0.0.1"
port = {self.pg.port}
database = "{PG_DB}"
user = "{PG_ROLE}"
password_env = "{UPSTREAM_PASSWORD_ENV}"
tls = "{upstream_tls}"

# A realistic policy: statement classes and built-in deny rules are checked on
# every statement (decisions cached by text and by literal-stripped fingerprint).
[[policies]]
name = "bench"
groups = ["dba"]
targets = ["app-pg"]
allow = ["read", "write", "transaction", "session"]
deny = ["truncate", "delete_without_where", "update_without_where"]
{policy_extra}
{config_extra}
"""
        )
        env = dict(os.environ)
        env[UPSTREAM_PASSWORD_ENV] = self.role_password
        log = work / "gateway.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [*(launcher or [sys.executable, "-m", "gateway"]), "run", "--config", str(config)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.procs.append(proc)
        wait_port(port, proc, log)
        return Endpoint(name, port, BENCH_USER, token, proc)

    # -- pgbouncer --

    def start_pgbouncer(
        self, auth_type: str = "scram-sha-256", *, pool_size: int = 150, max_clients: int = 2000
    ) -> Endpoint:
        """Session pool mode. `pool_size` server connections at most: in session mode every
        client holds one, so holding N idle clients needs pool_size >= N."""
        assert self.pg is not None
        work = self.base / "pgbouncer"
        work.mkdir()
        cert, key = work / "server.crt", work / "server.key"
        make_self_signed(cert, key)
        port = free_port()
        (work / "userlist.txt").write_text(f'"{PG_ROLE}" "{self.role_password}"\n')
        ini = work / "pgbouncer.ini"
        log = work / "pgbouncer.log"
        ini.write_text(
            f"""
[databases]
{PG_DB} = host=127.0.0.1 port={self.pg.port} dbname={PG_DB}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
logfile = {log}
pidfile = {work / "pgbouncer.pid"}
auth_type = {auth_type}
auth_file = {work / "userlist.txt"}
pool_mode = session
max_client_conn = {int(max_clients)}
default_pool_size = {int(pool_size)}
max_db_connections = {int(pool_size)}
server_tls_sslmode = require
client_tls_sslmode = require
client_tls_cert_file = {cert}
client_tls_key_file = {key}
"""
        )
        argv = [PGBOUNCER, str(ini)]
        if running_as_root():
            # pgbouncer refuses to run as root.
            user = service_user("postgres")
            for path in (work, *work.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
            argv = ["runuser", "-u", user.pw_name, "--", *argv]
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        self.procs.append(proc)
        wait_port(port, proc, log)
        return Endpoint("pgbouncer", port, PG_ROLE, self.role_password, proc)

    # -- the bare forwarder (reference: the cost of one Python hop) --

    def start_forwarder(
        self, upstream_port: int | None = None, name: str = "forwarder"
    ) -> Endpoint:
        """In front of PostgreSQL, or of any TCP server at `upstream_port` (MariaDB)."""
        if upstream_port is None:
            assert self.pg is not None
            upstream_port = self.pg.port
        port = free_port()
        proc = self._start_forwarding(
            self.base / f"{name}.log", ["forward", str(port), str(upstream_port)], port
        )
        return Endpoint(name, port, PG_ROLE, self.role_password, proc)

    def start_tls_forwarder(self, name: str = "tls-forwarder") -> Endpoint:
        """In front of PostgreSQL: terminates the client's TLS and opens its own to the
        server, then splices bytes without parsing them (the floor of a Python proxy that
        does what the gateway does with TLS)."""
        assert self.pg is not None
        work = self.base / name
        work.mkdir()
        cert, key = work / "server.crt", work / "server.key"
        make_self_signed(cert, key)
        port = free_port()
        argv = ["forward-tls", str(port), str(self.pg.port), str(cert), str(key)]
        proc = self._start_forwarding(work / "forwarder.log", argv, port)
        # SCRAM channel binding ties the password exchange to the TLS certificate the client
        # saw; PostgreSQL's is not the forwarder's, so it must be off for the client.
        settings = {"PGCHANNELBINDING": "disable"}
        return Endpoint(name, port, PG_ROLE, self.role_password, proc, settings)

    def _start_forwarding(self, log: Path, argv: list[str], port: int) -> subprocess.Popen[bytes]:
        """This file run as a forwarder (``argv``: see the end of the file), ready on ``port``."""
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), *argv],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs.append(proc)
        wait_port(port, proc, log)
        return proc

    # -- teardown --

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                stop_process(proc)
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def bench_env(keep: bool = False) -> Iterator[Bench]:
    base = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    base.chmod(0o755)  # pgbouncer and PostgreSQL run as `postgres` under root
    bench = Bench(base)
    try:
        yield bench
    finally:
        if keep:
            print(f"(kept {base})", file=sys.stderr)
            for proc in reversed(bench.procs):
                with contextlib.suppress(Exception):
                    stop_process(proc)
            if bench.pg is not None:
                bench.pg.stop()
        else:
            bench.close()


# --- measuring processes and reporting -----------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu_seconds(
    proc: subprocess.Popen[bytes] | None, *, user_only: bool = False
) -> float | None:
    """User+system (``user_only``: user) CPU seconds of a process and its children
    (pgbouncer runs under runuser as root; py-spy or a launcher may sit above the gateway).
    None if it is gone."""
    if proc is None:
        return None
    try:
        total = 0.0
        for p in _tree(proc.pid):
            t = p.cpu_times()
            total += t.user if user_only else t.user + t.system
        return total
    except psutil.Error:
        return None


def tree_rss_mb(proc: subprocess.Popen[bytes]) -> float:
    """Resident set size of a process and its children, in MiB."""
    return sum(p.memory_info().rss for p in _tree(proc.pid)) / (1024 * 1024)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt(x: float, digits: int = 0) -> str:
    if x != x:  # NaN
        return "n/a"
    return f"{x:,.{digits}f}"


def ratio(a: float, b: float) -> str:
    return "n/a" if not b or a != a or b != b else f"{a / b:.2f}"


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, check=False
            ).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "?"

    return {
        "pgbench": first_line(["pgbench", "--version"]),
        "pgbouncer": first_line(["pgbouncer", "--version"]),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "kernel": platform.release(),
    }


# --- pgbench ----------------------------------------------------------------------------------


@dataclass
class PgbenchResult:
    tps: float
    latency_ms: float | None
    transactions: int
    failed: int
    conn_ms: float | None  # "average connection time" (-C) or "initial connection time"
    output: str


def run_pgbench(
    endpoint: Endpoint,
    args: Sequence[str],
    *,
    timeout: float | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> PgbenchResult:
    env = {**os.environ, **endpoint.env(), **(extra_env or {})}
    proc = subprocess.run(
        ["pgbench", "-n", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} against {endpoint.name} failed:\n{out}")
    return parse_pgbench(out)


def parse_pgbench(out: str) -> PgbenchResult:
    def num(pattern: str) -> float | None:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else None

    tps = num(r"tps = ([\d.]+)")
    if tps is None:
        raise RuntimeError(f"no tps in pgbench output:\n{out}")
    return PgbenchResult(
        tps=tps,
        latency_ms=num(r"latency average = ([\d.]+) ms"),
        transactions=int(num(r"number of transactions actually processed: (\d+)") or 0),
        failed=int(num(r"number of failed transactions: (\d+)") or 0),
        conn_ms=num(r"(?:average|initial) connection time = ([\d.]+) ms"),
        output=out,
    )


def pgbench_init(endpoint: Endpoint, scale: int) -> None:
    env = {**os.environ, **endpoint.env()}
    proc = subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(scale), "--unlogged-tables"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench -i failed:\n{proc.stdout}{proc.stderr}")


# --- the forwarders (subprocess entry points) -------------------------------------------------


class _Side(asyncio.Protocol):
    """One leg of a forwarder: what it reads is written to its peer's transport, pausing
    reads when the peer's write buffer is full. Until ``_link`` gives it a peer, what
    arrives is kept (the handshake bytes, or a first message sent early)."""

    def __init__(self) -> None:
        self.peer: _Side | None = None
        self.transport: asyncio.Transport | None = None
        self.early = bytearray()
        self.arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.early += data
            self.arrived.set()

    async def take(self, n: int) -> bytes:
        """The next ``n`` bytes that arrived before the leg was linked."""
        while len(self.early) < n:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)
        out = bytes(self.early[:n])
        del self.early[:n]
        return out

    def connection_lost(self, exc: Exception | None) -> None:
        self.arrived.set()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


def _link(a: _Side, b: _Side) -> None:
    """Make ``a`` and ``b`` peers and hand each what the other kept: either side may have
    spoken first (the client's first message, a MySQL server's greeting)."""
    a.peer, b.peer = b, a
    for x, y in ((a, b), (b, a)):
        if x.early:
            assert y.transport is not None
            y.transport.write(bytes(x.early))
            x.early.clear()


def _serve(listen_port: int, session: Callable[[_Side], Coroutine[Any, Any, None]]) -> None:
    """Accept clients on ``listen_port``, run ``session`` for each (it links the client to
    an upstream leg), until SIGTERM or SIGINT."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()

        def client_factory() -> _Side:
            client = _Side()
            task = loop.create_task(session(client))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return client

        server = await loop.create_server(client_factory, "127.0.0.1", listen_port)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        server.close()

    uvloop.run(main())


def _forward(listen_port: int, upstream_port: int) -> None:
    """Splice bytes both ways with uvloop protocols. No parsing, no TLS termination: the
    floor for any Python proxy."""

    async def session(client: _Side) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(_Side, "127.0.0.1", upstream_port)
        except OSError:
            if client.transport is not None:
                client.transport.close()
            return
        _link(client, upstream)

    _serve(listen_port, session)


# PostgreSQL's SSLRequest: Int32 length 8, Int32 code 80877103 ("Message Formats").
_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


def _forward_tls(listen_port: int, upstream_port: int, cert: str, key: str) -> None:
    """A PostgreSQL forwarder that terminates TLS on both legs: answers the client's
    SSLRequest and handshakes with it, sends its own SSLRequest upstream and handshakes
    with the server, then splices the decrypted bytes with uvloop protocols (no parsing).
    What the gateway costs above this is its own work on the messages."""
    import ssl

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE  # the benchmark's own throwaway server

    async def session(client: _Side) -> None:
        loop = asyncio.get_running_loop()
        try:
            if await client.take(8) != _SSL_REQUEST:
                raise ConnectionError("not an SSLRequest")
            assert client.transport is not None
            client.transport.write(b"S")
            client.transport = await loop.start_tls(
                client.transport, client, server_ctx, server_side=True
            )
            _, up = await loop.create_connection(_Side, "127.0.0.1", upstream_port)
            assert up.transport is not None
            up.transport.write(_SSL_REQUEST)
            if await up.take(1) != b"S":
                raise ConnectionError("the server refused TLS")
            up.transport = await loop.start_tls(
                up.transport, up, client_ctx, server_hostname="127.0.0.1"
            )
            _link(client, up)
        except (TimeoutError, OSError, ConnectionError, ssl.SSLError):
            if client.transport is not None:
                client.transport.close()

    _serve(listen_port, session)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "forward":
        _forward(int(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) == 6 and sys.argv[1] == "forward-tls":
        _forward_tls(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        sys.exit(
            "usage: common.py forward LISTEN_PORT UPSTREAM_PORT\n"
            "       common.py forward-tls LISTEN_PORT PG_PORT CERT KEY"
        )
