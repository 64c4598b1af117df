"""Throwaway database servers and demo data for the test harness and `gateway demo`.

    from gateway.embedded import start_postgres, seed_postgres
    with start_postgres() as pg:
        seed_postgres(pg, "app")
        print(pg.dsn("app", sslmode="verify-full"))

Servers come from an environment DSN, local server binaries, or Docker (testcontainers), in
that order; when none is possible, ServerUnavailable says what to install. See
docs/testing.md.
"""

from __future__ import annotations

from gateway.embedded.certs import make_ca_and_server_cert, make_self_signed
from gateway.embedded.common import EmbeddedServerError, ServerStartError, ServerUnavailable
from gateway.embedded.mariadb import MariaDBServer, start_mariadb
from gateway.embedded.postgres import PostgresServer, start_postgres
from gateway.embedded.seed import (
    mysql_seed_sql,
    postgres_seed_sql,
    seed_mariadb,
    seed_postgres,
)

__all__ = [
    "EmbeddedServerError",
    "MariaDBServer",
    "PostgresServer",
    "ServerStartError",
    "ServerUnavailable",
    "make_ca_and_server_cert",
    "make_self_signed",
    "mysql_seed_sql",
    "postgres_seed_sql",
    "seed_mariadb",
    "seed_postgres",
    "start_mariadb",
    "start_postgres",
]
