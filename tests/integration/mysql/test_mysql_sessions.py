"""Session-level features through the gateway: cancel (KILL QUERY on a new
connection, what clients send on Ctrl-C), COM_CHANGE_USER with a new JWT,
COM_RESET_CONNECTION, LOAD DATA LOCAL INFILE."""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from .conftest import MyGateway

pytestmark = pytest.mark.integration


def wait_running(direct_kwargs: dict[str, Any], statement: str) -> None:
    """Wait until MariaDB runs ``statement`` (seen on a direct connection): a kill sent
    before it started would find nothing to kill."""
    deadline = time.monotonic() + 10
    with pymysql.connect(**direct_kwargs) as direct, direct.cursor() as cur:
        while True:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = %s",
                (statement,),
            )
            if cur.fetchone()[0]:
                return
            assert time.monotonic() < deadline, f"MariaDB is not running {statement!r}"
            time.sleep(0.05)


def _sleep_in_thread(
    kwargs: dict[str, Any], direct_kwargs: dict[str, Any]
) -> tuple[threading.Thread, dict[str, Any], Any]:
    """A SLEEP(30) running on MariaDB through ``kwargs``' connection, in a thread."""
    conn = pymysql.connect(**kwargs)
    result: dict[str, Any] = {}
    # Its own alias, so that only this statement is waited for.
    statement = f"SELECT SLEEP(30) AS victim_{secrets.token_hex(4)}"

    def run() -> None:
        started = time.monotonic()
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                result["rows"] = cur.fetchall()
        except pymysql.err.MySQLError as exc:
            result["error"] = exc
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    wait_running(direct_kwargs, statement)
    return thread, result, conn


def test_kill_query_from_another_connection(
    mysql_gateway: MyGateway, direct_kwargs: dict[str, Any]
) -> None:
    thread, result, victim = _sleep_in_thread(mysql_gateway.pymysql_kwargs(), direct_kwargs)
    try:
        with pymysql.connect(**mysql_gateway.pymysql_kwargs()) as killer, killer.cursor() as cur:
            cur.execute(f"KILL QUERY {victim.thread_id()}")
        thread.join(10)
        assert not thread.is_alive()
        # SLEEP() returns 1 when interrupted (MariaDB), or the statement fails with 1317.
        assert result["elapsed"] < 10
        assert result.get("rows") == ((1,),) or result["error"].args[0] == 1317
        # The victim's session goes on.
        with victim.cursor() as cur:
            cur.execute("SELECT 'alive'")
            assert cur.fetchone() == ("alive",)
    finally:
        victim.close()


def test_com_process_kill_and_kill_connection(
    mysql_gateway: MyGateway, direct_kwargs: dict[str, Any]
) -> None:
    thread, result, victim = _sleep_in_thread(mysql_gateway.pymysql_kwargs(), direct_kwargs)
    try:
        with pymysql.connect(**mysql_gateway.pymysql_kwargs()) as killer:
            killer.kill(victim.thread_id())  # COM_PROCESS_KILL: the whole connection
        thread.join(10)
        assert not thread.is_alive()
        assert result["elapsed"] < 10
        assert "error" in result
        with pytest.raises(pymysql.err.Error):
            victim.ping(reconnect=False)
    finally:
        with contextlib.suppress(pymysql.err.Error):
            victim.close()


def test_kill_needs_the_same_identity(
    mysql_gateway: MyGateway, direct_kwargs: dict[str, Any]
) -> None:
    thread, _, victim = _sleep_in_thread(mysql_gateway.pymysql_kwargs(), direct_kwargs)
    try:
        other = mysql_gateway.pymysql_kwargs(mysql_gateway.token("mallory@example.com"))
        with pymysql.connect(**other) as killer, killer.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute(f"KILL QUERY {victim.thread_id()}")
            assert info.value.args[0] == 1095
            with pytest.raises(pymysql.err.OperationalError) as info:
                killer.kill(victim.thread_id())
            assert info.value.args[0] == 1095
            # Unknown ids, KILL USER (the upstream account is shared) and KILL hidden in
            # a multi-statement packet are refused; the session stays usable.
            with pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute("KILL QUERY 4294967000")
            assert info.value.args[0] == 1094
            with pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute("KILL USER gateway")
            assert info.value.args[0] == 1095
            with pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute("/*!KILL USER gateway */")
            assert info.value.args[0] == 1095
            cur.execute("SELECT 'still here'")
            assert cur.fetchone() == ("still here",)
        assert thread.is_alive()  # nothing was killed
        with pymysql.connect(**mysql_gateway.pymysql_kwargs()) as owner, owner.cursor() as cur:
            cur.execute(f"KILL QUERY {victim.thread_id()}")
        thread.join(10)
        assert not thread.is_alive()
    finally:
        victim.close()


def test_mariadb_cli_ctrl_c_kills_the_query(
    mysql_gateway: MyGateway, direct_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(mysql_gateway.token())
    # No digit in the alias: a "1" in the output is the interrupted SLEEP's result.
    statement = "SELECT SLEEP(30) AS slept"
    proc = subprocess.Popen(
        [*mysql_gateway.cli_args(token_file), "app", "-e", statement],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_running(direct_kwargs, statement)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - started < 10
    assert "query killed" in err or "interrupted" in err or "1" in out, (out, err)


@pytest.mark.parametrize("pure", [True, False], ids=["pure", "cext"])
def test_change_user_with_a_new_token(mysql_gateway: MyGateway, pure: bool) -> None:
    kwargs = mysql_gateway.pymysql_kwargs()
    kwargs = {
        k: v for k, v in kwargs.items() if k not in ("connect_timeout", "ssl_verify_identity")
    }
    conn = mysql.connector.connect(**kwargs, use_pure=pure)
    try:
        cur = conn.cursor()
        cur.execute("SET @x = 5")
        cur.execute("CREATE TEMPORARY TABLE tmp_cu (id INT)")
        cur.close()
        new = mysql_gateway.token("bob@example.com")
        conn.cmd_change_user(username="bob@example.com", password=new, database="app")
        cur = conn.cursor()
        # A new upstream session state: variables and temporary tables are gone.
        cur.execute("SELECT @x, DATABASE()")
        assert cur.fetchall() == [(None, "app")]
        with pytest.raises(mysql.connector.errors.ProgrammingError):
            cur.execute("SELECT * FROM tmp_cu")
        cur.close()
        # A token that does not verify ends the session (fail closed).
        with pytest.raises(mysql.connector.errors.Error):
            conn.cmd_change_user(username="bob@example.com", password="not-a-jwt", database="app")
    finally:
        conn.close()


def test_change_user_refused_without_policy(mysql_gateway: MyGateway) -> None:
    kwargs = mysql_gateway.pymysql_kwargs()
    kwargs = {
        k: v for k, v in kwargs.items() if k not in ("connect_timeout", "ssl_verify_identity")
    }
    conn = mysql.connector.connect(**kwargs, use_pure=True)
    try:
        stranger = mysql_gateway.token("eve@example.com", groups=("nobody",))
        with pytest.raises(mysql.connector.errors.Error) as info:
            conn.cmd_change_user(username="eve@example.com", password=stranger)
        assert info.value.errno == 1045
        assert "gateway" not in str(info.value)  # nothing about the upstream account
    finally:
        conn.close()


def test_reset_connection(mysql_gateway: MyGateway) -> None:
    kwargs = mysql_gateway.pymysql_kwargs()
    kwargs = {
        k: v for k, v in kwargs.items() if k not in ("connect_timeout", "ssl_verify_identity")
    }
    conn = mysql.connector.connect(**kwargs, use_pure=True)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT ? + 1", (1,))
        assert cur.fetchall() == [(2,)]
        cur.close()
        cur = conn.cursor()
        cur.execute("SET @y = 7")
        cur.close()
        conn.cmd_reset_connection()
        cur = conn.cursor()
        cur.execute("SELECT @y")
        assert cur.fetchall() == [(None,)]
        cur.close()
    finally:
        conn.close()


def test_load_data_local_infile(mysql_gateway: MyGateway, tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("".join(f"{i},name {i}\n" for i in range(2000)))
    kwargs = mysql_gateway.pymysql_kwargs()
    with pymysql.connect(**kwargs, local_infile=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE ld (id INT, name VARCHAR(20))")
        cur.execute(
            f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE ld "
            "FIELDS TERMINATED BY ',' LINES TERMINATED BY '\\n'"
        )
        assert cur.rowcount == 2000
        cur.execute("SELECT COUNT(*), MAX(id) FROM ld")
        assert cur.fetchone() == (2000, 1999)
    # Without local_infile the client does not negotiate CLIENT_LOCAL_FILES: the
    # server refuses, and no file is asked for.
    with pymysql.connect(**kwargs) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE ld (id INT, name VARCHAR(20))")
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute(f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE ld FIELDS TERMINATED BY ','")
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_many_sessions_in_parallel(mysql_gateway: MyGateway) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with pymysql.connect(**mysql_gateway.pymysql_kwargs()) as conn, conn.cursor() as cur:
                for i in range(30):
                    cur.execute("SELECT %s + %s", (n, i))
                    assert cur.fetchone() == (n + i,)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


def test_statistics_ping_init_db(mysql_gateway: MyGateway) -> None:
    """COM_STATISTICS (a bare string reply), COM_PING, COM_INIT_DB pass through."""
    kwargs = mysql_gateway.pymysql_kwargs()
    kwargs = {
        k: v for k, v in kwargs.items() if k not in ("connect_timeout", "ssl_verify_identity")
    }
    conn = mysql.connector.connect(**kwargs, use_pure=True)
    try:
        stats = conn.cmd_statistics()
        assert "Uptime" in stats
        conn.ping()
        conn.cmd_init_db("information_schema")
        cur = conn.cursor()
        cur.execute("SELECT DATABASE()")
        assert cur.fetchall() == [("information_schema",)]
        cur.close()
    finally:
        conn.close()
