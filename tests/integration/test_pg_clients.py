"""Real PostgreSQL clients through the gateway, compared with the same call direct.

The gateway runs as a subprocess in front of the harness's PostgreSQL (SCRAM,
TLS on, verify-full upstream); clients log in with a JWT over TLS.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import psycopg
import pytest

from gateway.embedded.postgres import PostgresServer

from .conftest import GatewayProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def direct_dsn(pg_server: PostgresServer, pg_gateway_role: tuple[str, str]) -> str:
    role, _ = pg_gateway_role
    return pg_server.dsn("app", user=role)


@pytest.fixture(scope="module")
def gw_dsn(gateway: GatewayProcess) -> str:
    return gateway.dsn(gateway.token())


QUERIES = [
    "SELECT id, name, email, ssn, card_number, phone FROM customers ORDER BY id LIMIT 50",
    "SELECT count(*), sum(amount), min(created_at) FROM orders",
    "SELECT 1::int2, 2::int4, 3::int8, 1.5::float4, 2.25::float8, 12345.678::numeric, "
    "true, 'x'::text, now()::date, '12:34:56'::time, interval '1 day 2 hours', "
    "'{1,2,3}'::int[], '{\"a\": [1, 2]}'::jsonb, 'a1b2c3d4-0000-4000-8000-000000000000'::uuid, "
    "'\\xdeadbeef'::bytea, NULL::text",
    "SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind",
]


# -- psycopg 3 --------------------------------------------------------------------------


def _psycopg_results(
    dsn: str, *, prepare: bool | None, binary: bool
) -> list[list[tuple[object, ...]]]:
    out = []
    with psycopg.connect(dsn) as conn:
        for q in QUERIES:
            with conn.cursor(binary=binary) as cur:
                cur.execute(q, prepare=prepare)
                out.append(cur.fetchall())
    return out


@pytest.mark.parametrize(
    ("prepare", "binary"),
    [(False, False), (True, False), (True, True), (None, True)],
    ids=["simple", "prepared", "prepared-binary", "binary"],
)
def test_psycopg_matches_direct(
    direct_dsn: str, gw_dsn: str, prepare: bool | None, binary: bool
) -> None:
    through = _psycopg_results(gw_dsn, prepare=prepare, binary=binary)
    direct = _psycopg_results(direct_dsn, prepare=prepare, binary=binary)
    assert through == direct
    assert len(through[0]) == 50


def test_psycopg_parameters_and_transactions(gw_dsn: str) -> None:
    with psycopg.connect(gw_dsn) as conn:
        conn.execute("CREATE TEMP TABLE t (id int primary key, v text)")
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES (%s, %s), (%s, %s)", (1, "a", 2, None))
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("INSERT INTO t VALUES (%s, %s)", (1, "dup"))
        # The failed transaction rolled back; the connection is still usable.
        rows = conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()
        assert rows == [(1, "a"), (2, None)]
        with conn.cursor() as cur:
            cur.execute("SELECT 1; SELECT 2, 3")  # multi-statement simple query
            assert cur.fetchall() == [(1,)]
            assert cur.nextset()
            assert cur.fetchall() == [(2, 3)]


def test_psycopg_pipeline_mode(direct_dsn: str, gw_dsn: str) -> None:
    def run(dsn: str) -> list[object]:
        results: list[object] = []
        with psycopg.connect(dsn, autocommit=True) as conn, conn.pipeline() as p:
            curs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(20)]
            bad = conn.cursor()
            p.sync()
            for c in curs:
                results.append(c.fetchone())
            with pytest.raises(psycopg.errors.DivisionByZero):
                bad.execute("SELECT 1/0")
                p.sync()
            results.append(conn.execute("SELECT 'after error'").fetchone())
        return results

    assert run(gw_dsn) == run(direct_dsn)


def test_psycopg_copy_in_and_out(gw_dsn: str) -> None:
    with psycopg.connect(gw_dsn) as conn:
        conn.execute("CREATE TEMP TABLE c (id int, v text)")
        with conn.cursor() as cur:
            with cur.copy("COPY c FROM STDIN") as copy:
                for i in range(5000):
                    copy.write_row((i, f"row {i}"))
            assert cur.execute("SELECT count(*) FROM c").fetchone() == (5000,)
            lines = []
            with cur.copy("COPY (SELECT * FROM c ORDER BY id LIMIT 3) TO STDOUT") as copy:
                for row in copy.rows():
                    lines.append(row)
            assert lines == [("0", "row 0"), ("1", "row 1"), ("2", "row 2")]
            # Binary COPY both ways (what asyncpg's copy_records_to_table uses).
            with cur.copy("COPY c FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "text"])
                copy.write_row((-1, "binary"))
            assert cur.execute("SELECT v FROM c WHERE id = -1").fetchone() == ("binary",)
        # A failing COPY leaves the session usable.
        with (
            pytest.raises(psycopg.errors.InvalidTextRepresentation),
            conn.cursor() as cur,
            cur.copy("COPY c FROM STDIN") as copy,
        ):
            copy.write(b"not-an-int\tx\n")
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_backend_pid_and_notifications(gw_dsn: str) -> None:
    with (
        psycopg.connect(gw_dsn, autocommit=True) as listener,
        psycopg.connect(gw_dsn, autocommit=True) as sender,
    ):
        # The PID the client was given is the real backend PID.
        assert (
            listener.info.backend_pid == listener.execute("SELECT pg_backend_pid()").fetchone()[0]
        )
        listener.execute("LISTEN gw_test")
        sender.execute("NOTIFY gw_test, 'hello'")
        sender.execute("SELECT pg_notify('gw_test', 'second')")
        got = []
        for n in listener.notifies(timeout=5, stop_after=2):
            got.append((n.channel, n.payload, n.pid))
        assert got == [
            ("gw_test", "hello", sender.info.backend_pid),
            ("gw_test", "second", sender.info.backend_pid),
        ]


def test_notices_and_parameter_status(gw_dsn: str) -> None:
    notices: list[str] = []
    with psycopg.connect(gw_dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hi from plpgsql'; END $$")
        assert notices == ["hi from plpgsql"]
        assert conn.info.parameter_status("server_version")
        conn.execute("SET application_name = 'changed-later'")
        # ParameterStatus arriving after startup is forwarded.
        assert conn.info.parameter_status("application_name") == "changed-later"
        conn.execute("SET TimeZone = 'Asia/Tokyo'")
        assert conn.info.parameter_status("TimeZone") == "Asia/Tokyo"


def test_startup_parameters_are_forwarded(
    gateway: GatewayProcess, pg_gateway_role: tuple[str, str]
) -> None:
    dsn = gateway.dsn(
        gateway.token(), application_name="gw-test-app", options="-c search_path=pg_catalog,public"
    )
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("gw-test-app",)
        assert conn.execute("SHOW search_path").fetchone() == ("pg_catalog,public",)
        # The gateway logs in as the target's user, never the client's label.
        assert conn.execute("SELECT current_user").fetchone() == (pg_gateway_role[0],)
        assert conn.info.user == "alice@example.com"


def test_cancel_from_psycopg(gw_dsn: str) -> None:
    with psycopg.connect(gw_dsn) as conn:
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - t0 < 5
        conn.rollback()
        assert conn.execute("SELECT 42").fetchone() == (42,)
        # Legacy PQcancel (plaintext cancel packet, as psql 15 sends it).
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - t0 < 5


def test_direct_tls_negotiation(gateway: GatewayProcess) -> None:
    # libpq >= 17: TLS from the first byte, ALPN "postgresql".
    if psycopg.pq.version() < 170000:
        pytest.fail("psycopg's bundled libpq is too old for sslnegotiation=direct")
    dsn = gateway.dsn(gateway.token(), sslnegotiation="direct")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 7").fetchone() == (7,)
        assert conn.pgconn.ssl_in_use


# -- asyncpg ------------------------------------------------------------------------------


async def _asyncpg_session(conn: asyncpg.Connection) -> list[object]:
    out: list[object] = []
    stmt = await conn.prepare(
        "SELECT $1::int8 AS a, $2::numeric AS b, $3::timestamptz AS c, $4::uuid AS d, "
        "$5::bytea AS e, $6::text[] AS f, $7::jsonb AS g, $8::float8 AS h, $9::date AS i"
    )
    args = (
        2**40,
        decimal.Decimal("-12345.6789"),
        datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.UTC),
        uuid.UUID("a1b2c3d4-0000-4000-8000-000000000000"),
        b"\x00\xffbinary",
        ["x", None, "z"],
        '{"k": [1, 2, null]}',
        float("inf"),
        datetime.date(1999, 12, 31),
    )
    for _ in range(3):  # executes reuse the prepared statement (Bind/Execute only)
        out.append(tuple(await stmt.fetchrow(*args)))
    out.append(await conn.fetch("SELECT id, email FROM customers ORDER BY id LIMIT 20"))
    async with conn.transaction():
        cur = await conn.cursor("SELECT id FROM events ORDER BY id")
        out.append(await cur.fetch(5))
        out.append(await cur.fetch(5))
        out.append(
            [r async for r in conn.cursor("SELECT g FROM generate_series(1, 250) g", prefetch=50)][
                -1
            ]
        )
    await conn.executemany("SELECT $1::int", [(i,) for i in range(10)])
    out.append(await conn.fetchval("SELECT pg_backend_pid() = $1", conn.get_server_pid()))
    return [tuple(r) if isinstance(r, asyncpg.Record) else r for r in out]


async def test_asyncpg_matches_direct(
    gateway: GatewayProcess, pg_server: PostgresServer, pg_gateway_role: tuple[str, str]
) -> None:
    role, password = pg_gateway_role
    through = await asyncpg.connect(gateway.url(gateway.token()), ssl="require")
    direct = await asyncpg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user=role,
        password=password,
        database="app",
        ssl="require",
    )
    try:
        a = await _asyncpg_session(through)
        b = await _asyncpg_session(direct)
    finally:
        await through.close()
        await direct.close()
    assert a == b
    assert a[-1] is True  # server PID seen by the client is the real one


async def test_asyncpg_cancel_by_timeout(gateway: GatewayProcess) -> None:
    conn = await asyncpg.connect(gateway.url(gateway.token()), ssl="require")
    try:
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await conn.execute("SELECT pg_sleep(30)", timeout=0.5)
        # asyncpg cancels the query on timeout; the connection stays usable.
        assert await conn.fetchval("SELECT 1") == 1
        assert time.monotonic() - t0 < 5
    finally:
        await conn.close()


async def test_asyncpg_arrays_and_ranges(gateway: GatewayProcess) -> None:
    """asyncpg looks up types it does not know with an introspection query (it casts
    $1::oid[]): the statement policy must read it, or every array or range breaks."""
    conn = await asyncpg.connect(gateway.url(gateway.token()), ssl="require")
    try:
        assert await conn.fetchval("SELECT $1::int[]", [1, 2]) == [1, 2]
        assert await conn.fetchval("SELECT $1::int4range", asyncpg.Range(1, 5)) == (
            asyncpg.Range(1, 5)
        )
    finally:
        await conn.close()


async def test_asyncpg_copy_both_ways(gateway: GatewayProcess, tmp_path: Path) -> None:
    """asyncpg's COPY: copy_records_to_table sends the COPY, its binary data and CopyDone
    without waiting for the server's CopyInResponse; copy_to_table streams a file;
    copy_from_query reads COPY TO STDOUT. Each several times on one connection: the
    session must stay in step with the server after each."""
    conn = await asyncpg.connect(gateway.url(gateway.token()), ssl="require")
    try:
        await conn.execute("CREATE TEMP TABLE cr (id int, v text)")
        for i in range(5):
            await conn.copy_records_to_table("cr", records=[(2 * i, "a"), (2 * i + 1, "b")])
            assert await conn.fetchval("SELECT count(*) FROM cr") == 2 * i + 2
        source = tmp_path / "rows.tsv"
        source.write_text("100\tfile\n101\tfile\n")
        await conn.copy_to_table("cr", source=str(source))
        out = tmp_path / "out.tsv"
        await conn.copy_from_query(
            "SELECT id, v FROM cr WHERE id >= 100 ORDER BY id", output=str(out)
        )
        assert out.read_text() == "100\tfile\n101\tfile\n"
        assert await conn.fetchval("SELECT count(*) FROM cr") == 12
    finally:
        await conn.close()


async def test_asyncpg_listen_notify(gateway: GatewayProcess) -> None:
    a = await asyncpg.connect(gateway.url(gateway.token()), ssl="require")
    b = await asyncpg.connect(gateway.url(gateway.token()), ssl="require")
    got: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue()
    try:
        await a.add_listener(
            "chan", lambda _c, pid, ch, payload: got.put_nowait((pid, ch, payload))
        )
        await b.execute("NOTIFY chan, 'ping'")
        pid, ch, payload = await asyncio.wait_for(got.get(), 5)
        assert (pid, ch, payload) == (b.get_server_pid(), "chan", "ping")
    finally:
        await a.close()
        await b.close()


# -- psql and pgbench ----------------------------------------------------------------------

PSQL_SCRIPT = r"""
\set ON_ERROR_STOP 1
\pset pager off
SELECT count(*) AS customers FROM customers;
\d customers
BEGIN;
CREATE TEMP TABLE s (id int, note text);
INSERT INTO s SELECT g, 'n' || g FROM generate_series(1, 10) g;
\copy s TO STDOUT
COMMIT;
SELECT name, email FROM customers ORDER BY id LIMIT 3;
\dt
"""


def _psql(dsn: str, password: str | None, script: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"}
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run(
        ["psql", "-X", dsn, "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_psql_script_matches_direct(
    gateway: GatewayProcess, direct_dsn: str, tmp_path: Path
) -> None:
    token = gateway.token()
    dsn = f"host=127.0.0.1 port={gateway.port} dbname=app user=alice@example.com sslmode=require"
    through = _psql(dsn, token, PSQL_SCRIPT)
    direct = _psql(direct_dsn, None, PSQL_SCRIPT)
    assert through.returncode == 0, through.stderr
    assert direct.returncode == 0, direct.stderr
    assert through.stdout == direct.stdout
    assert "card_number" in through.stdout  # \d customers ran


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_modes(gateway: GatewayProcess, mode: str) -> None:
    token = gateway.token(ttl=600)
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": token, "PGSSLMODE": "require"}
    args = ["-h", "127.0.0.1", "-p", str(gateway.port), "-U", "alice@example.com", "app"]
    init = subprocess.run(
        ["pgbench", "-i", "-s", "1", "-q", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr  # pgbench -i loads with COPY FROM STDIN
    run = subprocess.run(
        ["pgbench", "-M", mode, "-c", "4", "-j", "2", "-T", "2", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "number of failed transactions: 0" in run.stdout
    tps = float(run.stdout.split("tps = ")[1].split()[0])
    assert tps > 50
