"""Session-wide real database servers (see docs/testing.md).

Each server is started once per test session, on a free port in a temporary directory, and
stopped when the session ends, whether tests passed or not. A server that cannot be started
FAILS the tests that need it (with the message saying what to install); it never skips them,
so a machine without databases cannot pass by running nothing.

PostgreSQL (`pg_server`) is set up the way the gateway meets production databases:
- `gateway`: LOGIN CREATEDB, SCRAM password, owner of database `app` (demo schema loaded);
- `gw_md5`: password stored as an md5 hash and pg_hba `md5`, for the upstream md5 path;
- `gw_clear`: pg_hba `password`, for the upstream cleartext-password path.
MariaDB (`mariadb_server`) starts only when a test asks for it: user `gateway`
(mysql_native_password) with all privileges on database `app` (demo schema loaded).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from hypothesis import settings

from gateway.embedded.common import ServerUnavailable
from gateway.embedded.mariadb import MariaDBServer, start_mariadb
from gateway.embedded.postgres import (
    PostgresServer,
    pg_quote_ident,
    pg_quote_literal,
    start_postgres,
)
from gateway.embedded.seed import seed_mariadb, seed_postgres

T = TypeVar("T")

# Property tests check correctness, not speed: on a loaded 2-core CI machine one slow example
# would otherwise fail a run with DeadlineExceeded (seen once on a masking property).
settings.register_profile("gateway", deadline=None)
settings.load_profile("gateway")

PG_GATEWAY_ROLE = "gateway"
PG_MD5_ROLE = "gw_md5"
PG_CLEAR_ROLE = "gw_clear"
APP_DB = "app"
MY_GATEWAY_USER = "gateway"


def _start_or_fail(start: Callable[[], T]) -> T:
    try:
        return start()
    except ServerUnavailable as exc:
        # Fail, never skip: TESTING.md rule 4.
        pytest.fail(str(exc), pytrace=False)


def _reset_external_pg(server: PostgresServer) -> None:
    """A server from GATEWAY_TEST_PG_DSN outlives sessions: drop what a previous run made
    (the databases our roles own, then the roles)."""
    roles = (PG_GATEWAY_ROLE, PG_MD5_ROLE, PG_CLEAR_ROLE)
    owned = server.psql(
        "SELECT datname FROM pg_database JOIN pg_roles ON pg_roles.oid = datdba "
        f"WHERE rolname IN ({', '.join(pg_quote_literal(r) for r in roles)})"
    )
    for dbname in owned.split():
        server.psql(f"DROP DATABASE {pg_quote_ident(dbname)} WITH (FORCE);")
    for role in roles:
        server.psql(f"DROP ROLE IF EXISTS {pg_quote_ident(role)};")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """PostgreSQL 127.0.0.1:<free port>, ssl=on (CA in `.ca_file`), scram-sha-256 over TCP.

    `.roles` maps each created role to its password. Restarting it (`.restart()`) is allowed;
    the address stays the same.
    """
    server = _start_or_fail(
        lambda: start_postgres(
            base_dir=tmp_path_factory.mktemp("postgres"),
            ssl=True,
            auth_method="scram-sha-256",
            # First match wins: these come before the catch-all scram line.
            extra_hba=[
                f"host all {PG_MD5_ROLE} 127.0.0.1/32 md5",
                f"host all {PG_CLEAR_ROLE} 127.0.0.1/32 password",
            ],
        )
    )
    try:
        if server.origin == "env":
            _reset_external_pg(server)
        server.create_role(PG_GATEWAY_ROLE, secrets.token_urlsafe(16), createdb=True)
        server.create_role(PG_MD5_ROLE, secrets.token_urlsafe(16), password_encryption="md5")
        server.create_role(PG_CLEAR_ROLE, secrets.token_urlsafe(16))
        seed_postgres(server, APP_DB, owner=PG_GATEWAY_ROLE)
        server.psql(
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {PG_MD5_ROLE}, {PG_CLEAR_ROLE};",
            dbname=APP_DB,
        )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_gateway_role(pg_server: PostgresServer) -> tuple[str, str]:
    """(role, password) of the gateway's upstream role: SCRAM, not superuser, owns `app`."""
    return PG_GATEWAY_ROLE, pg_server.roles[PG_GATEWAY_ROLE]


@pytest.fixture(scope="session")
def pg_md5_role(pg_server: PostgresServer) -> tuple[str, str]:
    """(role, password) of a role that authenticates with md5 (md5-hashed, pg_hba md5)."""
    return PG_MD5_ROLE, pg_server.roles[PG_MD5_ROLE]


@pytest.fixture(scope="session")
def pg_clear_role(pg_server: PostgresServer) -> tuple[str, str]:
    """(role, password) of a role that authenticates with cleartext (pg_hba `password`)."""
    return PG_CLEAR_ROLE, pg_server.roles[PG_CLEAR_ROLE]


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """MariaDB 127.0.0.1:<free port> with TLS (CA in `.ca_file`); admin account root.

    Session-scoped and started lazily: only sessions that run a MySQL test pay for it.
    `.users` maps each created user to its password.
    """
    server = _start_or_fail(
        lambda: start_mariadb(base_dir=tmp_path_factory.mktemp("mariadb"), ssl=True)
    )
    try:
        if server.origin == "env":
            server.sql(f"DROP USER IF EXISTS '{MY_GATEWAY_USER}'@'%';")
            server.sql(f"DROP DATABASE IF EXISTS {APP_DB};")
        server.create_database(APP_DB)
        server.create_user(MY_GATEWAY_USER, secrets.token_urlsafe(16), grant_all_on=APP_DB)
        seed_mariadb(server, APP_DB)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb_gateway_user(mariadb_server: MariaDBServer) -> tuple[str, str]:
    """(user, password) of the gateway's upstream MariaDB user (mysql_native_password)."""
    return MY_GATEWAY_USER, mariadb_server.users[MY_GATEWAY_USER]
