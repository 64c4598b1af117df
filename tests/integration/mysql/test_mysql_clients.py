"""Real MySQL clients through the gateway, compared with the same calls direct.

The gateway runs as a subprocess in front of the harness's MariaDB (TLS on,
verify-full upstream, mysql_native_password account); clients log in with a JWT
over TLS through caching_sha2_password's full-authentication path.
"""

from __future__ import annotations

import datetime
import decimal
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

from .conftest import MyGateway

pytestmark = pytest.mark.integration

QUERIES = [
    "SELECT id, name, email, ssn, card_number, phone, created_at FROM customers "
    "ORDER BY id LIMIT 50",
    "SELECT count(*), sum(amount), min(created_at) FROM orders",
    "SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind",
    "SELECT 1, -2.5, 'x', NULL, CAST('2024-01-02' AS DATE), CAST('-12:34:56.5' AS TIME(1)), "
    "x'deadbeef', JSON_OBJECT('a', 1), 18446744073709551615, 1e300, _utf8mb4'žluťoučký 🐎'",
    "SELECT * FROM events ORDER BY id LIMIT 5000",
]


def _pymysql_results(kwargs: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    with pymysql.connect(**kwargs) as conn, conn.cursor() as cur:
        for q in QUERIES:
            cur.execute(q)
            out.append((cur.description, cur.fetchall()))
    return out


def test_pymysql_matches_direct(mysql_gateway: MyGateway, direct_kwargs: dict[str, Any]) -> None:
    through = _pymysql_results(mysql_gateway.pymysql_kwargs())
    direct = _pymysql_results(direct_kwargs)
    assert through == direct
    assert len(through[0][1]) == 50
    assert len(through[-1][1]) == 5000


def _connector_kwargs(kwargs: dict[str, Any], pure: bool) -> dict[str, Any]:
    out = {k: v for k, v in kwargs.items() if k not in ("connect_timeout", "ssl_verify_identity")}
    out["use_pure"] = pure
    out["connection_timeout"] = 10
    return out


def _connector_results(kwargs: dict[str, Any], *, prepared: bool) -> list[Any]:
    out: list[Any] = []
    conn = mysql.connector.connect(**kwargs)
    try:
        cur = conn.cursor(prepared=prepared)
        for q in QUERIES:
            cur.execute(q)
            out.append((cur.description, cur.fetchall()))
        cur.execute(
            "SELECT id, email FROM customers WHERE id BETWEEN %s AND %s ORDER BY id", (3, 9)
        )
        out.append(cur.fetchall())
        cur.close()
    finally:
        conn.close()
    return out


@pytest.mark.parametrize("pure", [True, False], ids=["pure", "cext"])
@pytest.mark.parametrize("prepared", [False, True], ids=["text", "prepared"])
def test_mysql_connector_matches_direct(
    mysql_gateway: MyGateway, direct_kwargs: dict[str, Any], pure: bool, prepared: bool
) -> None:
    gw = _connector_kwargs(mysql_gateway.pymysql_kwargs(), pure)
    through = _connector_results(gw, prepared=prepared)
    direct = _connector_results(_connector_kwargs(direct_kwargs, pure), prepared=prepared)
    assert through == direct
    assert through[-1] == [(i, through[0][1][i - 1][2]) for i in range(3, 10)]


# -- every common column type through the binary protocol -------------------------------

TYPES_DDL = """
CREATE TABLE {name} (
  id INT PRIMARY KEY,
  t TINYINT, s SMALLINT, m MEDIUMINT, i INT, b BIGINT, ub BIGINT UNSIGNED,
  d DECIMAL(20,6), f FLOAT, db DOUBLE,
  dt DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(6), y YEAR,
  c CHAR(4), vc VARCHAR(40), tx TEXT, bl BLOB, js JSON, bt BIT(8),
  en ENUM('a','b'), st SET('x','y')
)
"""
COLUMNS = [
    "t",
    "s",
    "m",
    "i",
    "b",
    "ub",
    "d",
    "f",
    "db",
    "dt",
    "dtm",
    "ts",
    "tm",
    "y",
    "c",
    "vc",
    "tx",
    "bl",
    "js",
    "bt",
    "en",
    "st",
]
TYPES_ROWS = [
    (
        1,
        -128,
        -32768,
        -8388608,
        -2147483648,
        -(2**63),
        2**64 - 1,
        decimal.Decimal("-12345678901234.123456"),
        1.5,
        -2.25e-300,
        datetime.date(2024, 2, 29),
        datetime.datetime(2024, 2, 29, 23, 59, 58, 123456),
        datetime.datetime(2030, 1, 1, 0, 0, 1, 500000),
        datetime.timedelta(hours=-838, minutes=-59, seconds=-59),
        2155,
        "abcd",
        "žluťoučký kůň 🐎",
        "x" * 1000,
        bytes(range(256)),
        '{"a": [1, 2, {"b": null}]}',
        b"\x81",
        "b",
        "x,y",
    ),
    (2, *([None] * 22)),
    (
        3,
        127,
        32767,
        8388607,
        2147483647,
        2**63 - 1,
        0,
        decimal.Decimal("0.000001"),
        -0.0,
        1e308,
        datetime.date(1000, 1, 1),
        datetime.datetime(1970, 1, 1, 0, 0, 0),
        None,
        datetime.timedelta(0),
        1901,
        "",
        "",
        "",
        b"",
        "[]",
        b"\x00",
        "a",
        "",
    ),
]


@pytest.fixture(scope="module")
def types_table(direct_kwargs: dict[str, Any]) -> Iterator[str]:
    name = f"types_{secrets.token_hex(4)}"
    with pymysql.connect(**direct_kwargs) as conn, conn.cursor() as cur:
        cur.execute(TYPES_DDL.format(name=name))
    yield name
    with pymysql.connect(**direct_kwargs) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE {name}")


@pytest.mark.parametrize("pure", [True, False], ids=["pure", "cext"])
def test_prepared_every_type(
    mysql_gateway: MyGateway, direct_kwargs: dict[str, Any], types_table: str, pure: bool
) -> None:
    gw = _connector_kwargs(mysql_gateway.pymysql_kwargs(), pure)
    # Stored through the pure client: the C extension cannot bind 2**64 - 1 and sends
    # 1e308 in a form MariaDB refuses (direct too).
    conn = mysql.connector.connect(**_connector_kwargs(mysql_gateway.pymysql_kwargs(), True))
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(f"DELETE FROM {types_table}")
        marks = ", ".join(["%s"] * 23)
        for row in TYPES_ROWS:
            cur.execute(f"INSERT INTO {types_table} VALUES ({marks})", row)
        conn.commit()
        cur.close()
    finally:
        conn.close()

    def read(kwargs: dict[str, Any], prepared: bool) -> list[Any]:
        c = mysql.connector.connect(**kwargs)
        try:
            cur = c.cursor(prepared=prepared)
            rows: list[Any] = []
            # mysql-connector (pure) reads a binary YEAR as 1 byte instead of 2 and
            # loses the rest of the row, direct too: YEAR is checked with PyMySQL.
            cols = [c for c in COLUMNS if c != "y"]
            for group in (cols[:8], cols[8:16], cols[16:]):
                cur.execute(
                    f"SELECT id, {', '.join(group)} FROM {types_table} WHERE id >= %s ORDER BY id",
                    (1,),
                )
                rows.append(cur.fetchall())
            cur.close()
            return rows
        finally:
            c.close()

    direct = _connector_kwargs(direct_kwargs, pure)
    for prepared in (True, False):
        through = read(gw, prepared)
        assert through == read(direct, prepared)
        assert [len(g) for g in through] == [3, 3, 3]
    # PyMySQL (text protocol) agrees on what was stored.
    with pymysql.connect(**mysql_gateway.pymysql_kwargs()) as c1, c1.cursor() as cur1:
        cur1.execute(f"SELECT * FROM {types_table} ORDER BY id")
        with pymysql.connect(**direct_kwargs) as c2, c2.cursor() as cur2:
            cur2.execute(f"SELECT * FROM {types_table} ORDER BY id")
            assert cur1.fetchall() == cur2.fetchall()


# -- multi-statements, multiple result sets, errors, transactions ------------------------


def test_multi_statements_and_procedures(mysql_gateway: MyGateway) -> None:
    kwargs = mysql_gateway.pymysql_kwargs()
    with pymysql.connect(**kwargs, client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1; SELECT 2, 3; DO 1; SELECT 'a;b' AS s")
            assert cur.fetchall() == ((1,),)
            assert cur.nextset()
            assert cur.fetchall() == ((2, 3),)
            assert cur.nextset()
            assert not cur.fetchall()
            assert cur.nextset()
            assert cur.fetchall() == (("a;b",),)
            assert not cur.nextset()
            name = f"p_{secrets.token_hex(4)}"
            cur.execute(
                f"CREATE PROCEDURE {name}() BEGIN SELECT 1 AS x; SELECT 2 AS y, 3 AS z; END"
            )
            try:
                cur.execute(f"CALL {name}()")
                assert cur.fetchall() == ((1,),)
                assert cur.nextset()
                assert cur.fetchall() == ((2, 3),)
                assert cur.nextset()  # the CALL's own OK
                assert not cur.nextset()
            finally:
                cur.execute(f"DROP PROCEDURE {name}")
            # An error in the middle of a multi-statement ends the packet.
            with pytest.raises(pymysql.err.ProgrammingError):
                cur.execute("SELECT 1; SELECT * FROM no_such_table; SELECT 3")
                while cur.nextset():
                    pass
        with conn.cursor() as cur:
            cur.execute("SELECT 'still usable'")
            assert cur.fetchone() == ("still usable",)


def test_errors_and_transactions(mysql_gateway: MyGateway) -> None:
    with pymysql.connect(**mysql_gateway.pymysql_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
        conn.begin()
        cur.execute("INSERT INTO t VALUES (1, 'a'), (2, NULL)")
        conn.commit()
        with pytest.raises(pymysql.err.IntegrityError) as info:
            cur.execute("INSERT INTO t VALUES (1, 'dup')")
        assert info.value.args[0] == 1062
        conn.begin()
        cur.execute("UPDATE t SET v = 'zz'")
        assert cur.rowcount == 2
        conn.rollback()
        cur.execute("SELECT id, v FROM t ORDER BY id")
        assert cur.fetchall() == ((1, "a"), (2, None))
        with pytest.raises(pymysql.err.ProgrammingError) as info2:
            cur.execute("SELEC 1")
        assert info2.value.args[0] == 1064
        conn.select_db("information_schema")
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("information_schema",)
        conn.ping()
        cur.execute("SELECT CONNECTION_ID() = %s", (conn.thread_id(),))
        # CONNECTION_ID() is the upstream thread id; the client knows the gateway's id.
        assert cur.fetchone() == (0,)


# -- large payloads (> 16 MiB) both ways ------------------------------------------------------

BIG = 17 * 1024 * 1024 + 12345


def test_large_values_both_ways(mysql_gateway: MyGateway) -> None:
    blob = os.urandom(BIG)
    with pymysql.connect(**mysql_gateway.pymysql_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE big (id INT, b LONGBLOB)")
        cur.execute("INSERT INTO big VALUES (1, %s)", (blob,))  # COM_QUERY > 16 MiB
        cur.execute("SELECT b, LENGTH(b), 'after' FROM big")  # a row > 16 MiB
        value, length, after = cur.fetchone()
        assert length == BIG and value == blob and after == "after"
        # Exactly 2**24 - 1 bytes: the row ends with an empty continuation packet.
        cur.execute("SELECT REPEAT('a', 16777215 - 4)")
        assert len(cur.fetchone()[0]) == 16777211
    # The C extension: the pure client cannot read binary rows > 16 MiB (direct too).
    conn2 = mysql.connector.connect(**_connector_kwargs(mysql_gateway.pymysql_kwargs(), False))
    try:
        cur2 = conn2.cursor(prepared=True)
        cur2.execute("CREATE TEMPORARY TABLE big2 (id INT, b LONGBLOB)")
        cur2.execute("INSERT INTO big2 VALUES (%s, %s)", (2, blob))  # COM_STMT_EXECUTE > 16 MiB
        cur2.execute("SELECT b FROM big2 WHERE id = %s", (2,))  # binary row > 16 MiB
        assert cur2.fetchone()[0] == blob
        cur2.close()
    finally:
        conn2.close()


# -- the mariadb command-line client ----------------------------------------------------------

CLI_SCRIPT = """
SELECT id, name, email FROM customers ORDER BY id LIMIT 7;
SELECT 1 AS a, NULL AS b, 'tab\\there' AS c, 2.50 AS d;
CREATE TEMPORARY TABLE tt (id INT, v TEXT);
INSERT INTO tt VALUES (1, 'x'), (2, REPEAT('y', 3000));
SELECT id, LENGTH(v) FROM tt ORDER BY id;
PREPARE s FROM 'SELECT ? + 1 AS n';
SET @v = 41;
EXECUTE s USING @v;
DEALLOCATE PREPARE s;
SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind;
SHOW WARNINGS;
SELECT DATABASE(), CURRENT_USER();
"""


def _cli(args: list[str], script: str) -> str:
    proc = subprocess.run(
        [*args, "--table", "app"], input=script, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_mariadb_cli_matches_direct(
    mysql_gateway: MyGateway, direct_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(mysql_gateway.token())
    through = _cli(mysql_gateway.cli_args(token_file), CLI_SCRIPT)
    direct = _cli(
        [
            "mariadb",
            "--no-defaults",
            "--ssl",
            f"--ssl-ca={direct_kwargs['ssl_ca']}",
            "--protocol=TCP",
            "-h",
            direct_kwargs["host"],
            "-P",
            str(direct_kwargs["port"]),
            "-u",
            direct_kwargs["user"],
            f"--password={direct_kwargs['password']}",
        ],
        CLI_SCRIPT,
    )
    assert through == direct
    assert "Zoe Okafor" in through
    assert "|   42 |" in through  # EXECUTE s USING @v


def test_mariadb_cli_plain_login_command(mysql_gateway: MyGateway, tmp_path: Path) -> None:
    """The command the demo prints: --ssl, the token as password, nothing else."""
    token = mysql_gateway.token()
    proc = subprocess.run(
        [
            "mariadb",
            "--no-defaults",
            "--ssl",
            "-h",
            mysql_gateway.host,
            "-P",
            str(mysql_gateway.port),
            "-u",
            "alice@example.com",
            f"-p{token}",
            "app",
            "-e",
            "SELECT COUNT(*) FROM customers",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "COUNT(*)"
    assert int(proc.stdout.split()[1]) > 0


# -- sysbench -------------------------------------------------------------------------------


def test_sysbench_oltp_read_only(
    mysql_gateway: MyGateway, direct_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    from gateway.embedded.certs import make_self_signed

    # sysbench 1.0 with --mysql-ssl=on loads client-key.pem, client-cert.pem and
    # cacert.pem from its working directory (hard-coded); the gateway asks for no
    # client certificate, so a self-signed pair does.
    make_self_signed(tmp_path / "client-cert.pem", tmp_path / "client-key.pem", ["sysbench"])
    (tmp_path / "cacert.pem").write_bytes(mysql_gateway.cert_file.read_bytes())
    common = ["--db-driver=mysql", "--mysql-db=app", "--tables=2", "--table-size=2000"]
    direct = [
        f"--mysql-host={direct_kwargs['host']}",
        f"--mysql-port={direct_kwargs['port']}",
        f"--mysql-user={direct_kwargs['user']}",
        f"--mysql-password={direct_kwargs['password']}",
    ]

    def sysbench(*args: str) -> str:
        proc = subprocess.run(
            ["sysbench", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    sysbench("oltp_read_only", *common, *direct, "cleanup")
    sysbench("oltp_read_only", *common, *direct, "prepare")
    try:
        for ps_mode in ("auto", "disable"):
            out = sysbench(
                "oltp_read_only",
                *common,
                f"--mysql-host={mysql_gateway.host}",
                f"--mysql-port={mysql_gateway.port}",
                "--mysql-user=alice@example.com",
                f"--mysql-password={mysql_gateway.token()}",
                "--mysql-ssl=on",
                f"--db-ps-mode={ps_mode}",
                "--threads=4",
                "--time=3",
                "run",
            )
            assert "ignored errors:                      0" in out
            transactions = int(out.split("transactions:")[1].split()[0])
            assert transactions > 50, out
    finally:
        sysbench("oltp_read_only", *common, *direct, "cleanup")
