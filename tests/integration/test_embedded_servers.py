"""The harness's own servers, checked with real clients: TLS, password methods, seeding."""

from __future__ import annotations

import re
import stat
from decimal import Decimal

import psycopg
import pymysql  # type: ignore[import-untyped]
import pytest

from gateway.embedded.mariadb import MariaDBServer
from gateway.embedded.postgres import PostgresServer
from gateway.embedded.seed import (
    CUSTOMERS,
    EVENTS,
    ORDERS,
    TABLES,
    customer_rows,
    luhn_valid,
    seed_mariadb,
    seed_postgres,
)

pytestmark = pytest.mark.integration

SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")


def _pg_auth_method(server: PostgresServer, role: str) -> str:
    """The method of the first pg_hba `host` line that matches `role` (first match wins)."""
    rows = server.psql(
        "SELECT auth_method FROM pg_hba_file_rules "
        f"WHERE type = 'host' AND ('{role}' = ANY(user_name) OR 'all' = ANY(user_name)) "
        "ORDER BY line_number LIMIT 1"
    )
    return rows.strip()


# --- PostgreSQL -------------------------------------------------------------------------------


def test_pg_verify_full_tls_with_scram(
    pg_server: PostgresServer, pg_gateway_role: tuple[str, str]
) -> None:
    role, _ = pg_gateway_role
    assert pg_server.ca_file is not None
    assert _pg_auth_method(pg_server, role) == "scram-sha-256"
    for host in ("127.0.0.1", "localhost"):
        dsn = pg_server.dsn("app", user=role, sslmode="verify-full", host=host)
        with psycopg.connect(dsn) as conn:
            assert conn.info.pgconn.ssl_in_use
            ssl, version = conn.execute(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone() or (None, None)
            assert ssl is True
            assert version in ("TLSv1.2", "TLSv1.3")
            assert conn.execute("SELECT current_user").fetchone() == (role,)
    verifier = pg_server.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'")
    assert verifier.startswith("SCRAM-SHA-256$")


def test_pg_wrong_password_is_refused(
    pg_server: PostgresServer, pg_gateway_role: tuple[str, str]
) -> None:
    role, _ = pg_gateway_role
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_server.dsn("app", user=role, password="wrong")).close()


def test_pg_md5_and_cleartext_roles(
    pg_server: PostgresServer,
    pg_md5_role: tuple[str, str],
    pg_clear_role: tuple[str, str],
) -> None:
    if pg_server.origin == "env":
        pytest.skip("the pg_hba.conf of a server from GATEWAY_TEST_PG_DSN is not ours")
    assert _pg_auth_method(pg_server, pg_md5_role[0]) == "md5"
    assert _pg_auth_method(pg_server, pg_clear_role[0]) == "password"
    stored = pg_server.psql(
        f"SELECT rolpassword FROM pg_authid WHERE rolname = '{pg_md5_role[0]}'"
    ).strip()
    assert stored.startswith("md5") and len(stored) == 35
    for role, _ in (pg_md5_role, pg_clear_role):
        with psycopg.connect(pg_server.dsn("app", user=role)) as conn:
            assert conn.execute("SELECT count(*) FROM customers").fetchone() == (CUSTOMERS,)


def test_pg_plain_tcp_also_works_for_the_tls_disable_path(
    pg_server: PostgresServer, pg_gateway_role: tuple[str, str]
) -> None:
    with psycopg.connect(pg_server.dsn("app", user=pg_gateway_role[0], sslmode="disable")) as conn:
        assert not conn.info.pgconn.ssl_in_use


def test_pg_server_files_are_private(pg_server: PostgresServer) -> None:
    if pg_server.origin != "local":
        pytest.skip("only a local server has files here")  # not a missing server: by design
    assert pg_server.data_dir is not None
    key = pg_server.data_dir.parent / "tls" / "server.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pg_server.psql("SHOW max_connections").strip() == "200"
    assert pg_server.psql("SHOW listen_addresses").strip() == "127.0.0.1"
    # The unix socket logs in without a password ("local all all trust", the harness's
    # own psql): nobody but the server's OS user may reach it, or any local account would
    # be a superuser on the demo's database, past the gateway.
    assert pg_server.socket_dir is not None
    socket = pg_server.socket_dir / f".s.PGSQL.{pg_server.port}"
    assert stat.S_IMODE(socket.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(pg_server.socket_dir.stat().st_mode) & 0o077 == 0


def test_pg_app_database_is_seeded_and_owned_by_gateway(
    pg_server: PostgresServer, pg_gateway_role: tuple[str, str]
) -> None:
    role, _ = pg_gateway_role
    with psycopg.connect(pg_server.dsn("app", user=role)) as conn:
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        assert owners == [(role,)]
        # The identity sequences were moved past the seeded ids.
        new_id = conn.execute(
            "INSERT INTO orders (customer_id, amount, status) VALUES (1, 1.00, 'test') RETURNING id"
        ).fetchone()
        assert new_id == (ORDERS + 1,)
        conn.rollback()


def test_pg_seed_counts_and_luhn(
    pg_server: PostgresServer, pg_gateway_role: tuple[str, str]
) -> None:
    owner = pg_gateway_role[0]
    seed_postgres(pg_server, "seedtest", owner=owner)
    with psycopg.connect(pg_server.dsn("seedtest")) as conn:
        for table, expected in TABLES.items():
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (expected,)
        cards = [r[0] for r in conn.execute("SELECT card_number FROM customers").fetchall()]
        assert len(cards) == CUSTOMERS and all(luhn_valid(c) for c in cards)
        ssns = [r[0] for r in conn.execute("SELECT ssn FROM customers").fetchall()]
        assert all(SSN.match(s) for s in ssns)
        first = conn.execute(
            "SELECT id, name, email, ssn, card_number, phone FROM customers ORDER BY id LIMIT 1"
        ).fetchone()
        assert first == customer_rows()[0][:6]
        total = conn.execute("SELECT sum(amount) FROM orders").fetchone()
        kinds = conn.execute(
            "SELECT count(*) FROM events WHERE payload ? 'card' AND kind = 'checkout'"
        ).fetchone()
        assert kinds is not None and kinds[0] == EVENTS // 6 + (1 if EVENTS % 6 > 4 else 0)
    # Seeding again replaces the data instead of failing or doubling it.
    seed_postgres(pg_server, "seedtest", owner=owner)
    assert pg_server.psql("SELECT count(*) FROM events", dbname="seedtest").strip() == str(EVENTS)
    assert total is not None and isinstance(total[0], Decimal)


def test_pg_restart_keeps_address_and_drops_sessions(
    pg_server: PostgresServer, pg_gateway_role: tuple[str, str]
) -> None:
    if pg_server.origin == "env":
        pytest.skip("a server from GATEWAY_TEST_PG_DSN is not ours to restart")
    dsn = pg_server.dsn("app", user=pg_gateway_role[0])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT 1")
        pg_server.restart()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --- MariaDB ----------------------------------------------------------------------------------


def _my_connect(server: MariaDBServer, user: str, database: str = "app") -> pymysql.Connection:
    assert server.ca_file is not None
    return pymysql.connect(
        **server.connect_kwargs(user, database),
        ssl_ca=str(server.ca_file),
        ssl_verify_identity=True,
    )


def test_mariadb_tls_password_user(
    mariadb_server: MariaDBServer, mariadb_gateway_user: tuple[str, str]
) -> None:
    user, _ = mariadb_gateway_user
    conn = _my_connect(mariadb_server, user)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            row = cur.fetchone()
            assert row is not None and row[1] in ("TLSv1.2", "TLSv1.3")
            cur.execute("SELECT DATABASE(), CURRENT_USER()")
            assert cur.fetchone() == ("app", f"{user}@%")
    finally:
        conn.close()
    plugin = mariadb_server.sql(f"SELECT plugin FROM mysql.user WHERE user = '{user}'").strip()
    assert plugin == "mysql_native_password"
    assert mariadb_server.sql("SELECT COUNT(*) FROM mysql.user WHERE user = ''").strip() == "0"
    assert mariadb_server.sql("SELECT @@max_allowed_packet").strip() == str(64 * 1024 * 1024)


def test_mariadb_root_over_tcp_and_wrong_password(mariadb_server: MariaDBServer) -> None:
    conn = _my_connect(mariadb_server, mariadb_server.user, database="mysql")
    conn.close()
    kwargs = mariadb_server.connect_kwargs() | {"password": "wrong"}
    with pytest.raises(pymysql.err.OperationalError) as info:
        pymysql.connect(**kwargs, ssl_ca=str(mariadb_server.ca_file)).close()
    assert info.value.args[0] == 1045  # ER_ACCESS_DENIED_ERROR


def test_mariadb_seed_counts_and_luhn(mariadb_server: MariaDBServer) -> None:
    seed_mariadb(mariadb_server, "seedtest")
    conn = _my_connect(mariadb_server, mariadb_server.user, database="seedtest")
    try:
        with conn.cursor() as cur:
            for table, expected in TABLES.items():
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                assert cur.fetchone() == (expected,)
            cur.execute("SELECT card_number, ssn FROM customers")
            rows = cur.fetchall()
            assert len(rows) == CUSTOMERS
            assert all(luhn_valid(card) and SSN.match(ssn) for card, ssn in rows)
            cur.execute(
                "SELECT id, name, email, ssn, card_number, phone FROM customers ORDER BY id LIMIT 1"
            )
            assert cur.fetchone() == customer_rows()[0][:6]
    finally:
        conn.close()


def test_mariadb_and_postgres_hold_the_same_orders(
    pg_server: PostgresServer, mariadb_server: MariaDBServer
) -> None:
    """Both dialects generate identical rows: tests can compare answers across protocols."""
    pg = pg_server.psql("SELECT sum(amount), count(DISTINCT customer_id) FROM orders", "app")
    my = mariadb_server.sql("SELECT SUM(amount), COUNT(DISTINCT customer_id) FROM orders", "app")
    assert pg.split() == my.split()


def test_mariadb_restart_keeps_address(
    mariadb_server: MariaDBServer, mariadb_gateway_user: tuple[str, str]
) -> None:
    if mariadb_server.origin == "env":
        pytest.skip("a server from GATEWAY_TEST_MYSQL_DSN is not ours to restart")
    conn = _my_connect(mariadb_server, mariadb_gateway_user[0])
    try:
        mariadb_server.restart()
        with pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        # PyMySQL closes the connection itself when the socket dies; close what is left.
        if conn.open:
            conn.close()
    conn = _my_connect(mariadb_server, mariadb_gateway_user[0])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


# --- discovery and configuration without starting anything -----------------------------------


def test_no_postgres_anywhere_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.embedded.postgres as pg_mod
    from gateway.embedded import common

    monkeypatch.delenv(pg_mod.ENV_DSN, raising=False)
    monkeypatch.setattr(pg_mod, "find_postgres_bin_dir", lambda: None)
    monkeypatch.setattr(common, "docker_engine_problem", lambda: "no engine (test)")
    with pytest.raises(common.ServerUnavailable) as info:
        pg_mod.start_postgres()
    message = str(info.value)
    for needle in ("apt-get install postgresql", "Docker", "no engine (test)", pg_mod.ENV_DSN):
        assert needle in message


def test_no_mariadb_anywhere_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.embedded.mariadb as my_mod
    from gateway.embedded import common

    monkeypatch.delenv(my_mod.ENV_DSN, raising=False)
    monkeypatch.setattr(my_mod, "_find_local", lambda: None)
    monkeypatch.setattr(common, "docker_engine_problem", lambda: "no engine (test)")
    with pytest.raises(common.ServerUnavailable) as info:
        my_mod.start_mariadb()
    message = str(info.value)
    for needle in ("apt-get install mariadb-server", "Docker", "no engine (test)", my_mod.ENV_DSN):
        assert needle in message


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://u%40x:p%20w@db.example:6543/app?sslmode=verify-full&sslrootcert=/ca",
            {
                "host": "db.example",
                "port": "6543",
                "user": "u@x",
                "password": "p w",
                "dbname": "app",
                "sslmode": "verify-full",
                "sslrootcert": "/ca",
            },
        ),
        (
            "host=127.0.0.1 port=5433 user=postgres password='it\\'s secret' dbname=postgres",
            {
                "host": "127.0.0.1",
                "port": "5433",
                "user": "postgres",
                "password": "it's secret",
                "dbname": "postgres",
            },
        ),
    ],
)
def test_pg_env_dsn_parsing(dsn: str, expected: dict[str, str]) -> None:
    from gateway.embedded.postgres import _parse_dsn

    assert _parse_dsn(dsn) == expected


def test_pg_dsn_quotes_values_the_way_libpq_reads_them() -> None:
    from psycopg.conninfo import conninfo_to_dict

    server = PostgresServer(
        host="127.0.0.1",
        port=5999,
        superuser="postgres",
        password="pa ss'wo\\rd",
        ca_file=None,
        bin_dir=None,
        data_dir=None,
        origin="env",
    )
    server.roles["gw"] = "x y"
    assert conninfo_to_dict(server.dsn("app")) == {
        "host": "127.0.0.1",
        "port": "5999",
        "user": "postgres",
        "dbname": "app",
        "password": "pa ss'wo\\rd",
        "sslmode": "require",
    }
    assert conninfo_to_dict(server.dsn(user="gw", sslmode="disable"))["password"] == "x y"
