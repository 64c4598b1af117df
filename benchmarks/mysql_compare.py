"""sysbench through the gateway vs direct to MariaDB, side by side in one run.

    uv run --no-sync python benchmarks/mysql_compare.py [--time 10] [--threads 1,8]

Starts a throwaway MariaDB (TLS on), a gateway in front of it (recording on, as in
production, and a second one with recording off), prepares the sysbench tables once,
then runs `oltp_point_select` and `oltp_read_only` with prepared statements
(`--db-ps-mode=auto`) and text queries (`--db-ps-mode=disable`), 1 and 8 threads,
against each endpoint, and prints a Markdown table with the ratios to direct.

TLS is on every leg, so the gateway is compared on equal terms:

    sysbench --TLS--> MariaDB                                (direct)
    sysbench --TLS--> gateway --TLS (verify-full)--> MariaDB (recording on / off)

sysbench 1.0 with `--mysql-ssl=on` loads `client-key.pem`, `client-cert.pem` and
`cacert.pem` from its working directory (hard-coded), and MariaDB verifies a client
certificate that is presented: the script gives MariaDB a CA of its own (`FLUSH SSL`)
and signs a client certificate with it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.embedded.mariadb import MariaDBServer, start_mariadb
from gateway.keys import generate_signing_key, mint_token

ISSUER = "https://idp.bench/"
AUDIENCE = "db-gateway-bench"
BENCH_USER = "bench@example.com"
DB_USER = "gateway"
PASSWORD_ENV = "GW_BENCH_MY_PASSWORD"
TABLES = 4
TABLE_SIZE = 10000


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- certificates -----------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    ca_pem: bytes
    server: tuple[bytes, bytes]  # cert, key
    client: tuple[bytes, bytes]


def make_pki() -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("bench CA", ca_key, None, ca_key, ca=True)
    pem = serialization.Encoding.PEM
    out = []
    for subject, usage in (
        ("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH),
        ("sysbench", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(subject, key, ca, ca_key, usage=usage)
        out.append((cert.public_bytes(pem), _pem_key(key)))
    return Pki(ca.public_bytes(pem), out[0], out[1])


def install_server_tls(server: MariaDBServer, pki: Pki) -> Path:
    """Give the running MariaDB our CA-signed certificate (FLUSH SSL reloads it)."""
    assert server.ca_file is not None, "MariaDB was started without TLS"
    tls_dir = server.ca_file.parent
    # Overwrite in place: the files keep the owner/mode the server can read.
    (tls_dir / "ca.crt").write_bytes(pki.ca_pem)
    (tls_dir / "server.crt").write_bytes(pki.server[0])
    (tls_dir / "server.key").write_bytes(pki.server[1])
    server.sql("FLUSH SSL;")
    return tls_dir / "ca.crt"


def sysbench_dir(base: Path, ca_pem: bytes, client: tuple[bytes, bytes]) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    (base / "cacert.pem").write_bytes(ca_pem)
    (base / "client-cert.pem").write_bytes(client[0])
    (base / "client-key.pem").write_bytes(client[1])
    return base


# -- endpoints --------------------------------------------------------------------------------


@dataclass
class Endpoint:
    name: str
    port: int
    user: str
    password: str
    cwd: Path  # sysbench's TLS files
    pid: int | None = None  # process to measure CPU of (the gateway)


def start_gateway(
    work: Path,
    server: MariaDBServer,
    ca_file: Path,
    password: str,
    *,
    recording: bool,
    policy_extra: str = "",
    launcher: list[str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """`policy_extra` is appended to the bench policy (limits, masks: benchmarks/suite.py);
    `launcher`: argv that runs the gateway CLI (default `python -m gateway`)."""
    port = free_port()
    config = work / "gateway.toml"
    config.write_text(
        f"""
[gateway]
state_dir = "{work / "state"}"
session_dir = "{work / "sessions"}"
log_level = "warning"

[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "{work.parent / "keys" / "jwks.json"}"

[recording]
enabled = {"true" if recording else "false"}

[[targets]]
name = "bench-my"
protocol = "mysql"
listen = "127.0.0.1:{port}"
host = "{server.host}"
port = {server.port}
database = "sbtest"
user = "{DB_USER}"
password_env = "{PASSWORD_ENV}"
tls = "verify-full"
tls_ca_file = "{ca_file}"

[[policies]]
name = "bench"
groups = ["bench"]
targets = ["*"]
# A realistic policy, so the benchmark pays for statement decisions. drop_database
# and file_access cannot fire here (ddl and file are not allowed, so such statements
# are refused by class) and check-config rejects rules that can never fire.
allow = ["read", "write", "transaction", "session"]
deny = ["truncate", "delete_without_where", "update_without_where"]
{policy_extra}
"""
    )
    env = dict(os.environ)
    env[PASSWORD_ENV] = password
    log_path = work / "gateway.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [*(launcher or [sys.executable, "-m", "gateway"]), "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"gateway did not start:\n{log_path.read_text()}")


@dataclass
class Prepared:
    """A running MariaDB with TLS from our own CA, the sysbench tables, a direct endpoint."""

    server: MariaDBServer
    password: str
    pki: Pki
    ca_file: Path
    direct: Endpoint


def prepare(base: Path, server: MariaDBServer) -> Prepared:
    password = secrets.token_urlsafe(18)
    server.create_database("sbtest")
    server.create_user(DB_USER, password, grant_all_on="sbtest")
    pki = make_pki()
    ca_file = install_server_tls(server, pki)
    direct = Endpoint(
        "direct",
        server.port,
        DB_USER,
        password,
        sysbench_dir(base / "sb-direct", pki.ca_pem, pki.client),
    )
    log(f"preparing {TABLES} tables of {TABLE_SIZE} rows")
    sysbench(direct, "oltp_read_only", "prepare")
    return Prepared(server, password, pki, ca_file, direct)


def bench_token(base: Path) -> str:
    """A signing key and its JWKS in ``base/keys`` (where ``gateway_endpoint``'s config
    looks) and a day's token for the bench user, in the group the bench policy names."""
    key = generate_signing_key(base / "keys")
    return mint_token(key, BENCH_USER, ["bench"], 86400, audience=AUDIENCE, issuer=ISSUER)


def gateway_endpoint(
    work: Path,
    setup: Prepared,
    token: str,
    name: str,
    *,
    recording: bool,
    policy_extra: str = "",
    launcher: list[str] | None = None,
) -> tuple[subprocess.Popen[bytes], Endpoint]:
    """Start a gateway in `work` (a new directory next to `keys/`, which holds the JWKS) and
    give sysbench the gateway's certificate to trust."""
    work.mkdir()
    proc, port = start_gateway(
        work,
        setup.server,
        setup.ca_file,
        setup.password,
        recording=recording,
        policy_extra=policy_extra,
        launcher=launcher,
    )
    cert = (work / "state" / "server.crt").read_bytes()
    sb = sysbench_dir(work / "sb", cert, setup.pki.client)
    return proc, Endpoint(name, port, BENCH_USER, token, sb, proc.pid)


# -- sysbench ---------------------------------------------------------------------------------


@dataclass
class Result:
    tps: float
    qps: float
    latency_ms: float
    errors: int
    cpu: float | None  # gateway CPU, % of one core


def sysbench(endpoint: Endpoint, test: str, command: str, *extra: str, timeout: float = 600) -> str:
    args = [
        "sysbench",
        test,
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        f"--mysql-port={endpoint.port}",
        f"--mysql-user={endpoint.user}",
        f"--mysql-password={endpoint.password}",
        "--mysql-db=sbtest",
        "--mysql-ssl=on",
        f"--tables={TABLES}",
        f"--table-size={TABLE_SIZE}",
        *extra,
        command,
    ]
    proc = subprocess.run(
        args, cwd=endpoint.cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"sysbench {test} {command} on {endpoint.name} failed:\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc.stdout


def run_one(endpoint: Endpoint, test: str, ps_mode: str, threads: int, seconds: int) -> Result:
    proc = psutil.Process(endpoint.pid) if endpoint.pid else None
    cpu_before = proc.cpu_times() if proc else None
    started = time.monotonic()
    out = sysbench(
        endpoint,
        test,
        "run",
        f"--threads={threads}",
        f"--time={seconds}",
        f"--db-ps-mode={ps_mode}",
        "--report-interval=0",
    )
    elapsed = time.monotonic() - started
    cpu = None
    if proc is not None and cpu_before is not None:
        after = proc.cpu_times()
        used = (after.user - cpu_before.user) + (after.system - cpu_before.system)
        cpu = 100.0 * used / elapsed

    def number(pattern: str) -> float:
        m = re.search(pattern, out)
        if m is None:
            raise RuntimeError(f"cannot parse sysbench output:\n{out}")
        return float(m.group(1))

    return Result(
        tps=number(r"transactions:\s+\d+\s+\(([\d.]+) per sec"),
        qps=number(r"queries:\s+\d+\s+\(([\d.]+) per sec"),
        latency_ms=number(r"avg:\s+([\d.]+)"),
        errors=int(number(r"ignored errors:\s+(\d+)")),
        cpu=cpu,
    )


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--threads", default="1,8", help="thread counts (default 1,8)")
    parser.add_argument(
        "--tests", default="oltp_point_select,oltp_read_only", help="sysbench tests"
    )
    parser.add_argument("--no-norec", action="store_true", help="skip the recording-off gateway")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    tests = args.tests.split(",")

    base = Path(tempfile.mkdtemp(prefix="gateway-mysql-bench-"))
    server: MariaDBServer | None = None
    gateways: list[subprocess.Popen[bytes]] = []
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        log(f"work directory {base}")
        server = start_mariadb(base_dir=base / "mariadb", ssl=True)
        setup = prepare(base, server)
        token = bench_token(base)
        endpoints = [setup.direct]
        variants = [("gateway", True)] + (
            [] if args.no_norec else [("gateway, no recording", False)]
        )
        for name, recording in variants:
            work = base / name.replace(", ", "-").replace(" ", "-")
            proc, endpoint = gateway_endpoint(work, setup, token, name, recording=recording)
            gateways.append(proc)
            endpoints.append(endpoint)
        results: dict[tuple[str, str, int, str], Result] = {}
        for test in tests:
            for ps_mode in ("auto", "disable"):
                for n in threads:
                    for endpoint in endpoints:
                        log(f"{test} ps-mode={ps_mode} threads={n} {endpoint.name} ...")
                        r = run_one(endpoint, test, ps_mode, n, args.time)
                        results[(test, ps_mode, n, endpoint.name)] = r
        print(render(results, tests, threads, endpoints, args.time))
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in gateways:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if server is not None:
            server.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def render(
    results: dict[tuple[str, str, int, str], Result],
    tests: list[str],
    threads: list[int],
    endpoints: list[Endpoint],
    seconds: int,
) -> str:
    import platform

    version = subprocess.run(["sysbench", "--version"], capture_output=True, text=True).stdout
    lines = [
        f"sysbench MySQL comparison: {seconds}s per run, {TABLES} tables x {TABLE_SIZE} rows, "
        f"TLS on every leg; {os.cpu_count()} CPUs ({platform.machine()}), "
        f"{version.strip()}, Python {platform.python_version()}.",
        "",
        "| test | statements | threads | endpoint | TPS | QPS | avg latency ms | vs direct "
        "| gateway CPU % |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for test in tests:
        for ps_mode in ("auto", "disable"):
            mode = "prepared" if ps_mode == "auto" else "text"
            for n in threads:
                base = results[(test, ps_mode, n, "direct")]
                for endpoint in endpoints:
                    r = results[(test, ps_mode, n, endpoint.name)]
                    ratio = f"{r.tps / base.tps:.2f}x" if base.tps else "-"
                    cpu = f"{r.cpu:.0f}" if r.cpu is not None else ""
                    errors = f" ({r.errors} errors)" if r.errors else ""
                    lines.append(
                        f"| {test} | {mode} | {n} | {endpoint.name}{errors} | {r.tps:,.0f} | "
                        f"{r.qps:,.0f} | {r.latency_ms:.2f} | {ratio} | {cpu} |"
                    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
