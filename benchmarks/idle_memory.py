"""Gateway memory per idle authenticated session.

    uv run --no-sync python benchmarks/idle_memory.py [--sessions 1000] [--recording on|off|both]
                                                      [--cycles 2] [--gc-probe] [--tls-floor]

Starts a throwaway PostgreSQL (max_connections raised so every session gets its backend) and
the gateway, opens two warm-up sessions (so lazily imported modules and TLS contexts are loaded
before the baseline), then measures the gateway's RSS (psutil) before and after opening N
concurrent sessions with asyncpg (TLS, JWT as password; each session runs `SELECT 1` once and
then stays idle), and after they are closed. Target (issue 2): 1,000 idle sessions add at most
30 MB to the gateway's RSS.

--cycles N     open and close the N sessions N times; RSS after each close shows whether memory
               is retained across sessions.
--gc-probe     run the gateway under a small launcher that, on SIGUSR1, runs gc.collect() and
               glibc's malloc_trim(0); after every close the script sends SIGUSR1 and measures
               again. RSS that comes back after it was retained by reference cycles awaiting the
               cyclic GC or by the allocator, not leaked. (The launcher changes nothing else.)
--upstream-tls disable|require  the gateway's TLS mode towards PostgreSQL (default require);
               `disable` leaves one TLS leg per session.
--plaintext    no TLS on either leg (clients without TLS, `[tls] allow_plaintext`, upstream
               `tls = "disable"`): the gateway's own memory per session, without OpenSSL's.
--tls-floor    also measure a reference: a bare uvloop process that holds, per session, one
               server-side and one client-side TLS leg upgraded with loop.start_tls (as the
               gateway does), after small exchanges on each (two upstream, after the TLS 1.3
               session tickets, as the gateway's login: see _floor_middle). No PostgreSQL
               logic: the memory floor of two TLS legs in this runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
import psutil
from common import (
    PG_DB,
    Bench,
    Endpoint,
    bench_env,
    free_port,
    log,
    stop_process,
    wait_port,
)

TARGET_MB_PER_1000 = 30.0
MB = 1024 * 1024
HERE = str(Path(__file__).resolve())


def client_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # sslmode=require: encrypted, certificate not checked
    return ctx


async def open_sessions(
    ep: Endpoint, n: int, concurrency: int, tls: ssl.SSLContext | bool
) -> list[asyncpg.Connection]:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> asyncpg.Connection:
        async with sem:
            conn = await asyncpg.connect(
                host="127.0.0.1",
                port=ep.port,
                user=ep.user,
                password=ep.password,
                database=PG_DB,
                ssl=tls,
                # Generous: thousands of TLS + SCRAM logins queue behind one another in a
                # single-threaded proxy on 2 vCPUs (pgbouncer took over 60 s for some of
                # 5,000 on a slow host, and the suite lost its row).
                timeout=300,
                statement_cache_size=0,
            )
            # Simple query protocol: with statement_cache_size=0 asyncpg's extended protocol
            # skips Describe, which a gateway with masks configured refuses (suite.py).
            await conn.execute("SELECT 1")
            return conn

    return list(await asyncio.gather(*(one() for _ in range(n))))


def rss(proc: psutil.Process) -> float:
    return proc.memory_info().rss / MB


def settle(proc: psutil.Process, seconds: float = 2.0) -> float:
    """RSS after the process has been idle for a moment (writer tasks flushed, etc.)."""
    time.sleep(seconds)
    return rss(proc)


async def measure(
    bench: Bench,
    name: str,
    recording: bool,
    sessions: int,
    concurrency: int,
    cycles: int,
    probe: bool,
    upstream_tls: str,
    plaintext: bool = False,
) -> dict[str, object]:
    launcher = [sys.executable, HERE, "_gateway-with-gc-probe"] if probe else None
    ep = bench.start_gateway(
        name,
        recording=recording,
        launcher=launcher,
        upstream_tls="disable" if plaintext else upstream_tls,
        config_extra="[tls]\nallow_plaintext = true\n" if plaintext else "",
    )
    assert ep.proc is not None
    proc = psutil.Process(ep.proc.pid)
    tls: ssl.SSLContext | bool = False if plaintext else client_tls()
    for conn in await open_sessions(ep, 2, 2, tls):
        await conn.close()
    gc.collect()
    before = settle(proc)
    log(f"{name}: RSS {before:.1f} MB before; opening {sessions} sessions")
    t0 = time.monotonic()
    half = await open_sessions(ep, sessions // 2, concurrency, tls)
    mid = settle(proc, 1.0)
    conns = half + await open_sessions(ep, sessions - len(half), concurrency, tls)
    open_s = time.monotonic() - t0
    after = settle(proc)
    log(
        f"{name}: RSS {after:.1f} MB with {len(conns)} sessions "
        f"({open_s:.1f}s, {proc.num_fds()} fds)"
    )
    # Still alive and usable after sitting idle?
    assert await conns[0].fetchval("SELECT 1") == 1
    assert await conns[-1].fetchval("SELECT 1") == 1
    history: list[tuple[float, float, float | None]] = []  # (open, closed, closed after gc+trim)
    opened = after
    for cycle in range(cycles):
        if cycle:
            conns = await open_sessions(ep, sessions, concurrency, tls)
            opened = settle(proc)
        await asyncio.gather(*(c.close() for c in conns))
        conns = []
        closed = settle(proc, 3.0)
        trimmed = None
        if probe:
            os.kill(ep.proc.pid, signal.SIGUSR1)
            trimmed = settle(proc, 2.0)
        history.append((opened, closed, trimmed))
        log(
            f"{name}: cycle {cycle + 1}: {opened:.1f} MB open, {closed:.1f} MB closed"
            + (f", {trimmed:.1f} MB after gc.collect()+malloc_trim" if trimmed is not None else "")
        )
    stop_process(ep.proc)
    return {
        "before": before,
        "mid": mid,
        "after": after,
        "added": after - before,
        "per_session_kb": (after - before) * 1024 / sessions,
        "open_s": open_s,
        "history": history,
    }


# --- reference: two bare TLS legs per session in a uvloop process ------------------------------


class _Side(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.queue.put_nowait(data)


def _server_ctx(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


async def _floor_middle(port: int, upstream: int, cert: str, key: str) -> None:
    """Per client: plaintext hello -> 'S' -> start_tls (server side); then a TCP connection to
    `upstream`, start_tls (client side), two ping/pongs upstream and one on the client's leg;
    then hold both.

    Two upstream, because the gateway's upstream leg writes again after the server's TLS 1.3
    session tickets arrived (they come after the handshake, with the first answer): OpenSSL
    sets up a record write buffer (~16 KB) when it processes them and frees it only after
    the next complete write (SSL_MODE_RELEASE_BUFFERS). With one exchange that buffer stays
    allocated, which the gateway's idle sessions do not pay (its login writes several
    messages after the first answer)."""
    loop = asyncio.get_running_loop()
    server_ctx, client_ctx = _server_ctx(cert, key), client_tls()
    held: list[object] = []
    tasks: set[asyncio.Task[None]] = set()

    def factory() -> _Side:
        side = _Side()

        async def session() -> None:
            await side.queue.get()
            side.transport.write(b"S")  # type: ignore[union-attr]
            tls = await loop.start_tls(side.transport, side, server_ctx, server_side=True)  # type: ignore[arg-type]
            raw, up = await loop.create_connection(_Side, "127.0.0.1", upstream)
            up_tls = await loop.start_tls(raw, up, client_ctx, server_hostname="localhost")
            for _ in range(2):
                up_tls.write(b"ping")
                await up.queue.get()
            await side.queue.get()
            tls.write(b"pong")  # type: ignore[union-attr]
            held.append((tls, up_tls))

        tasks.add(task := loop.create_task(session()))
        task.add_done_callback(tasks.discard)
        return side

    await loop.create_server(factory, "127.0.0.1", port)
    await asyncio.Event().wait()


async def _floor_echo(port: int, cert: str, key: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(64):  # echo each ping; hold until the peer closes
            writer.write(data)
            await writer.drain()

    await asyncio.start_server(handle, "127.0.0.1", port, ssl=_server_ctx(cert, key))
    await asyncio.Event().wait()


async def _floor_clients(port: int, n: int, concurrency: int) -> list[object]:
    loop = asyncio.get_running_loop()
    ctx = client_tls()
    sem = asyncio.Semaphore(concurrency)

    async def one() -> object:
        async with sem:
            raw, side = await loop.create_connection(_Side, "127.0.0.1", port)
            raw.write(b"hello")
            await side.queue.get()
            tls = await loop.start_tls(raw, side, ctx, server_hostname="localhost")
            tls.write(b"query")
            await side.queue.get()
            return tls

    return list(await asyncio.gather(*(one() for _ in range(n))))


def measure_tls_floor(bench: Bench, sessions: int, concurrency: int) -> dict[str, object]:
    from gateway.embedded.certs import make_self_signed

    work = bench.base / "tls-floor"
    work.mkdir()
    cert, key = work / "server.crt", work / "server.key"
    make_self_signed(cert, key)
    up_port, port = free_port(), free_port()
    log_path = work / "floor.log"
    procs = []
    with open(log_path, "wb") as fh:
        for argv in (
            ["_tls-echo", str(up_port), str(cert), str(key)],
            ["_tls-floor", str(port), str(up_port), str(cert), str(key)],
        ):
            procs.append(
                subprocess.Popen([sys.executable, HERE, *argv], stdout=fh, stderr=subprocess.STDOUT)
            )
    bench.procs.extend(procs)
    wait_port(up_port, procs[0], log_path)
    wait_port(port, procs[1], log_path)
    proc = psutil.Process(procs[1].pid)

    async def run() -> dict[str, object]:
        warm = await _floor_clients(port, 2, 2)
        before = settle(proc)
        held = await _floor_clients(port, sessions, concurrency)
        after = settle(proc)
        for t in warm + held:
            t.close()  # type: ignore[attr-defined]
        return {
            "before": before,
            "after": after,
            "added": after - before,
            "per_session_kb": (after - before) * 1024 / sessions,
        }

    import uvloop

    result = uvloop.run(run())
    for p in procs:
        stop_process(p)
    log(f"TLS floor: {result['added']:.1f} MB for {sessions} sessions")
    return result


# --- the gateway under a launcher that can be asked to collect garbage and trim the heap -------


def _gateway_with_gc_probe(argv: list[str]) -> None:
    import ctypes
    import runpy

    libc = ctypes.CDLL("libc.so.6")

    def probe(signum: int, frame: object) -> None:
        gc.collect()
        libc.malloc_trim(0)

    signal.signal(signal.SIGUSR1, probe)
    sys.argv = ["gateway", *argv]
    runpy.run_module("gateway", run_name="__main__", alter_sys=True)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=50, help="sessions being opened at once")
    ap.add_argument("--recording", choices=["on", "off", "both"], default="both")
    ap.add_argument("--cycles", type=int, default=2, help="open/close cycles (default 2)")
    ap.add_argument(
        "--gc-probe",
        action="store_true",
        help="measure again after gc.collect()+malloc_trim in the gateway",
    )
    ap.add_argument(
        "--tls-floor", action="store_true", help="also measure two bare uvloop TLS legs per session"
    )
    ap.add_argument(
        "--upstream-tls",
        choices=["require", "disable"],
        default="require",
        help="the gateway's TLS mode to PostgreSQL (default require)",
    )
    ap.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS on either leg: the gateway's own memory per session",
    )
    args = ap.parse_args()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    variants = {"on": [("gateway+rec", True)], "off": [("gateway", False)]}.get(
        args.recording, [("gateway", False), ("gateway+rec", True)]
    )
    results: dict[str, dict[str, object]] = {}
    floor: dict[str, object] | None = None
    with bench_env() as bench:
        log(f"starting PostgreSQL with max_connections = {args.sessions + 100}")
        bench.start_postgres(max_connections=args.sessions + 100)
        for name, recording in variants:
            results[name] = asyncio.run(
                measure(
                    bench,
                    name,
                    recording,
                    args.sessions,
                    args.concurrency,
                    max(1, args.cycles),
                    args.gc_probe,
                    args.upstream_tls,
                    args.plaintext,
                )
            )
        if args.tls_floor:
            floor = measure_tls_floor(bench, args.sessions, args.concurrency)

    command = "uv run --no-sync python benchmarks/idle_memory.py " + " ".join(sys.argv[1:])
    n = args.sessions
    print(f"## Gateway RSS with {n:,} idle sessions ({when})")
    print()
    print(f"Command: `{command.strip()}`  ")
    print(
        f"Machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; RSS from psutil; "
        + (
            "no TLS on either leg (--plaintext)."
            if args.plaintext
            else f"client TLS on, gateway -> PostgreSQL tls = {args.upstream_tls}."
        )
    )
    print()
    head = [
        "process",
        "RSS before",
        f"with {n // 2:,}",
        f"with {n:,}",
        "added",
        "per session",
        "time to open",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, r in results.items():
        print(
            f"| {name} | {r['before']:.1f} MB | {r['mid']:.1f} MB | {r['after']:.1f} MB | "
            f"{r['added']:+.1f} MB | {r['per_session_kb']:.1f} KB | {r['open_s']:.1f}s |"
        )
    if floor is not None:
        print(
            f"| reference: bare uvloop, 2 TLS legs/session | {floor['before']:.1f} MB | | "
            f"{floor['after']:.1f} MB | {floor['added']:+.1f} MB | "
            f"{floor['per_session_kb']:.1f} KB | |"
        )
    print()
    print(
        f"Open/close cycles ({n:,} sessions each): RSS with the sessions open -> after closing them"
        + (" -> after gc.collect() + malloc_trim(0) in the gateway" if args.gc_probe else "")
    )
    print()
    for name, r in results.items():
        steps = []
        for opened, closed, trimmed in r["history"]:  # type: ignore[attr-defined]
            step = f"{opened:.0f} -> {closed:.0f}"
            if trimmed is not None:
                step += f" -> {trimmed:.0f}"
            steps.append(step)
        print(f"- {name}: " + "; ".join(steps) + " MB")
    print()
    limit = TARGET_MB_PER_1000 * n / 1000
    ok = True
    for name, r in results.items():
        added = float(r["added"])  # type: ignore[arg-type]
        passed = added <= limit
        ok &= passed
        print(
            f"- **{'PASS' if passed else 'FAIL'}** {name}: {n:,} idle sessions add "
            f"{added:.1f} MB (target <= {limit:.0f} MB)"
        )
    print()
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_gateway-with-gc-probe":
        _gateway_with_gc_probe(sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "_tls-echo":
        import uvloop

        uvloop.run(_floor_echo(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
    elif len(sys.argv) == 6 and sys.argv[1] == "_tls-floor":
        import uvloop

        uvloop.run(_floor_middle(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]))
    else:
        sys.exit(main())
