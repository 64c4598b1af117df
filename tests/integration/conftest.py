"""Fixtures that run the real gateway (as a subprocess, like production) in
front of the real PostgreSQL started by tests/conftest.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.keys import generate_signing_key, mint_token

ISSUER = "https://idp.test/"
AUDIENCE = "db-gateway-test"
UPSTREAM_PASSWORD_ENV = "GW_TEST_UPSTREAM_PASSWORD"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _conninfo_quote(value: str) -> str:
    if value and not any(c in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    config_path: Path
    session_dir: Path
    state_dir: Path
    key_path: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def token(
        self,
        sub: str = "alice@example.com",
        groups: tuple[str, ...] = ("dba",),
        ttl: float = 900,
        **claims: object,
    ) -> str:
        return mint_token(
            self.key_path,
            sub,
            list(groups),
            ttl,
            audience=AUDIENCE,
            issuer=ISSUER,
            extra_claims=claims or None,
        )

    def dsn(
        self, token: str, dbname: str = "app", user: str = "alice@example.com", **kw: str
    ) -> str:
        params = {
            "host": self.host,
            "port": str(self.port),
            "dbname": dbname,
            "user": user,
            "password": token,
            "sslmode": "require",
            "connect_timeout": "10",
            **kw,
        }
        return " ".join(f"{k}={_conninfo_quote(v)}" for k, v in params.items())

    def url(self, token: str, dbname: str = "app", user: str = "alice") -> str:
        """postgresql:// URL (asyncpg); the token needs no escaping (base64url + dots)."""
        return f"postgresql://{user}:{token}@{self.host}:{self.port}/{dbname}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def common_config(
    state_dir: Path,
    session_dir: Path,
    jwks: Path,
    *,
    recording: bool = True,
    max_message_size: int = 32 * 1024 * 1024,
) -> str:
    """The [gateway], [auth] and [recording] sections every test gateway uses."""
    return f"""[gateway]
state_dir = "{state_dir}"
session_dir = "{session_dir}"
max_message_size = {max_message_size}
shutdown_grace = "3s"
log_format = "json"
log_level = "debug"

[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "{jwks}"
user_claim = "sub"
groups_claim = "groups"

[recording]
enabled = {"true" if recording else "false"}
fsync_interval = "200ms"
"""


def write_config(
    path: Path,
    *,
    port: int,
    pg_host: str,
    pg_port: int,
    pg_user: str,
    ca_file: Path | None,
    jwks: Path,
    state_dir: Path,
    session_dir: Path,
    upstream_tls: str = "verify-full",
    extra: str = "",
    policies: str | None = None,
    recording: bool = True,
    database: str = "app",
) -> None:
    ca_line = f'tls_ca_file = "{ca_file}"' if ca_file and upstream_tls == "verify-full" else ""
    if policies is None:
        policies = """
[[policies]]
name = "admins"
groups = ["dba"]
targets = ["app-pg"]
allow = ["*"]

[[policies]]
name = "contractors"
groups = ["contractors"]
targets = ["app-pg"]
allow = ["read", "session", "transaction"]
record_rows = 5
"""
    path.write_text(
        f"""
{common_config(state_dir, session_dir, jwks, recording=recording)}
[[targets]]
name = "app-pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
host = "{pg_host}"
port = {pg_port}
database = "{database}"
user = "{pg_user}"
password_env = "{UPSTREAM_PASSWORD_ENV}"
tls = "{upstream_tls}"
{ca_line}
{policies}
{extra}
"""
    )


def wait_listening(
    proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"gateway did not start listening:\n{log_path.read_text()}")


def launch_gateway(
    base: Path, config_path: Path, port: int, key: Path, env_extra: dict[str, str]
) -> GatewayProcess:
    """Run `gateway run --config` as a subprocess (as in production) and wait until
    its listener accepts connections; the log goes to base/gateway.log."""
    env = {**os.environ, **env_extra}
    log_path = base / "gateway.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    gw = GatewayProcess(
        proc, "127.0.0.1", port, config_path, base / "sessions", base / "state", key, log_path
    )
    try:
        wait_listening(proc, port, log_path)
    except RuntimeError:
        gw.stop(timeout=5)
        raise
    return gw


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    keydir = tmp_path_factory.mktemp("keys")
    key = generate_signing_key(keydir)
    return key, keydir / "jwks.json"


StartGateway = Callable[..., GatewayProcess]


@pytest.fixture(scope="session")
def start_gateway(
    pg_server: object,
    pg_gateway_role: tuple[str, str],
    signing_key: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StartGateway]:
    """Factory: each call starts one gateway subprocess; all stop at session end."""
    started: list[GatewayProcess] = []
    key, jwks = signing_key
    role, password = pg_gateway_role

    def start(**kw: object) -> GatewayProcess:
        base = tmp_path_factory.mktemp("gateway")
        port = free_port()
        upstream_password = str(kw.pop("password", password))
        server = kw.pop("server", pg_server)
        config_path = base / "gateway.toml"
        write_config(
            config_path,
            port=port,
            pg_host=server.host,  # type: ignore[attr-defined]
            pg_port=server.port,  # type: ignore[attr-defined]
            pg_user=str(kw.pop("pg_user", role)),
            ca_file=server.ca_file,  # type: ignore[attr-defined]
            jwks=jwks,
            state_dir=base / "state",
            session_dir=base / "sessions",
            **kw,  # type: ignore[arg-type]
        )
        gw = launch_gateway(
            base, config_path, port, key, {UPSTREAM_PASSWORD_ENV: upstream_password}
        )
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop(timeout=10)


@pytest.fixture(scope="session")
def gateway(start_gateway: StartGateway) -> GatewayProcess:
    """One shared gateway for the tests that do not restart or kill it."""
    return start_gateway()
