"""Fixtures that run the real gateway (a subprocess, like production) in front of
the real MariaDB started by tests/conftest.py (`mariadb_server`: TLS on, password
user `gateway` with all privileges on the seeded database `app`).

The MySQL tests live in this folder so these fixtures extend, and do not touch,
the PostgreSQL ones in ../conftest.py.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.embedded.mariadb import MariaDBServer

from ..conftest import GatewayProcess, common_config, free_port, launch_gateway

MY_PASSWORD_ENV = "GW_TEST_MY_UPSTREAM_PASSWORD"
DEFAULT_USER = "alice@example.com"

DEFAULT_POLICIES = """
[[policies]]
name = "admins"
groups = ["dba"]
targets = ["app-my"]
# "*" is every class but "unknown": DBAs also pass what the gateway cannot classify
# (syntax errors the server should answer, statements over the parse limit).
allow = ["*", "unknown"]

[[policies]]
name = "contractors"
groups = ["contractors"]
targets = ["app-my"]
allow = ["read", "session", "transaction"]
record_rows = 5
"""


def write_mysql_config(
    path: Path,
    *,
    port: int,
    host: str,
    upstream_port: int,
    user: str,
    ca_file: Path | None,
    jwks: Path,
    state_dir: Path,
    session_dir: Path,
    upstream_tls: str = "verify-full",
    policies: str | None = None,
    recording: bool = True,
    database: str = "app",
    extra: str = "",
    max_message_size: int = 64 * 1024 * 1024,
) -> None:
    ca_line = f'tls_ca_file = "{ca_file}"' if ca_file and upstream_tls == "verify-full" else ""
    header = common_config(
        state_dir, session_dir, jwks, recording=recording, max_message_size=max_message_size
    )
    path.write_text(
        f"""
{header}
[[targets]]
name = "app-my"
protocol = "mysql"
listen = "127.0.0.1:{port}"
host = "{host}"
port = {upstream_port}
database = "{database}"
user = "{user}"
password_env = "{MY_PASSWORD_ENV}"
tls = "{upstream_tls}"
{ca_line}
{policies if policies is not None else DEFAULT_POLICIES}
{extra}
"""
    )


@dataclass
class MyGateway:
    """A running gateway with one MySQL target, plus client helpers."""

    process: GatewayProcess

    @property
    def host(self) -> str:
        return self.process.host

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def cert_file(self) -> Path:
        # The gateway's self-signed client-facing certificate (made at first start).
        return self.process.state_dir / "server.crt"

    @property
    def session_dir(self) -> Path:
        return self.process.session_dir

    def token(self, sub: str = DEFAULT_USER, groups: tuple[str, ...] = ("dba",), **kw: Any) -> str:
        return self.process.token(sub, groups, **kw)

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cert_file))
        ctx.check_hostname = False
        return ctx

    def pymysql_kwargs(
        self, token: str | None = None, *, user: str = DEFAULT_USER, database: str | None = "app"
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": token if token is not None else self.token(user),
            "ssl_ca": str(self.cert_file),
            "ssl_verify_identity": False,
            "connect_timeout": 10,
        }
        if database is not None:
            kwargs["database"] = database
        return kwargs

    def connector_kwargs(
        self, token: str | None = None, *, user: str = DEFAULT_USER, database: str | None = "app"
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": token if token is not None else self.token(user),
            "ssl_ca": str(self.cert_file),
            "ssl_verify_identity": False,
            "connection_timeout": 10,
        }
        if database is not None:
            kwargs["database"] = database
        return kwargs

    def cli_args(self, token_file: Path, *, user: str = DEFAULT_USER) -> list[str]:
        return [
            "mariadb",
            "--no-defaults",
            "--ssl",
            f"--ssl-ca={self.cert_file}",
            "--protocol=TCP",
            "-h",
            self.host,
            "-P",
            str(self.port),
            "-u",
            user,
            f"--password={token_file.read_text().strip()}",
        ]

    def log_text(self) -> str:
        return self.process.log_text()

    def alive(self) -> bool:
        return self.process.alive()


StartMyGateway = Callable[..., MyGateway]


@pytest.fixture(scope="session")
def start_mysql_gateway(
    mariadb_server: MariaDBServer,
    mariadb_gateway_user: tuple[str, str],
    signing_key: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StartMyGateway]:
    """Factory: each call starts one gateway subprocess (MySQL target ``app-my``)."""
    started: list[GatewayProcess] = []
    key, jwks = signing_key
    user, password = mariadb_gateway_user

    def start(**kw: Any) -> MyGateway:
        base = tmp_path_factory.mktemp("mygateway")
        port = free_port()
        upstream_password = str(kw.pop("password", password))
        config_path = base / "gateway.toml"
        write_mysql_config(
            config_path,
            port=port,
            host=str(kw.pop("host", mariadb_server.host)),
            upstream_port=int(kw.pop("upstream_port", mariadb_server.port)),
            user=str(kw.pop("user", user)),
            ca_file=mariadb_server.ca_file,
            jwks=jwks,
            state_dir=base / "state",
            session_dir=base / "sessions",
            **kw,
        )
        gw = launch_gateway(base, config_path, port, key, {MY_PASSWORD_ENV: upstream_password})
        started.append(gw)
        return MyGateway(gw)

    yield start
    for gw in started:
        gw.stop(timeout=10)


@pytest.fixture(scope="session")
def mysql_gateway(start_mysql_gateway: StartMyGateway) -> MyGateway:
    """One shared gateway for the tests that do not restart or kill it."""
    return start_mysql_gateway()


@pytest.fixture(scope="session")
def direct_kwargs(
    mariadb_server: MariaDBServer, mariadb_gateway_user: tuple[str, str]
) -> dict[str, Any]:
    """PyMySQL kwargs for the same account, straight to MariaDB (TLS verified)."""
    user, password = mariadb_gateway_user
    return {
        "host": mariadb_server.host,
        "port": mariadb_server.port,
        "user": user,
        "password": password,
        "database": "app",
        "ssl_ca": str(mariadb_server.ca_file),
        "connect_timeout": 10,
    }
