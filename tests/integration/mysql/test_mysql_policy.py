"""Statement policy through the MySQL gateway with real clients and the real MariaDB.

Contractors may run ``read``, ``session`` and ``transaction`` statements (conftest.py);
admins may run anything. A refused statement is answered by the gateway with ERR 1142
and never reaches the database (checked on a direct connection); the connection keeps
working; the recording holds the refusal with the rule that fired.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

from gateway.embedded.mariadb import MariaDBServer
from gateway.recording.reader import RecordingReader
from gateway.recording.schema import Done, End, Start, Stmt
from protocols.mysql.packets import parse_err_packet

from .conftest import DEFAULT_POLICIES, MyGateway, StartMyGateway
from .mywire import Wire

pytestmark = pytest.mark.integration

TABLE = "policy_t"
ER_TABLEACCESS_DENIED_ERROR = 1142

# (statement, text the refusal message must contain: the class the rule names)
REFUSED = [
    (f"DROP TABLE {TABLE}", 'class "ddl"'),
    (f"DELETE FROM {TABLE}", 'class "write"'),
    (f"INSERT INTO {TABLE} VALUES (99, 'evil')", 'class "write"'),
    (f"/*!50000 DROP TABLE {TABLE} */", 'class "ddl"'),
    (f"SELECT * FROM {TABLE} INTO OUTFILE '/tmp/gateway-policy-test.txt'", 'class "file"'),
    (f"SELECT 1; DROP TABLE {TABLE}", 'class "ddl"'),
    (f"UPDATE {TABLE} SET v = 'x'", 'class "write"'),
]


@pytest.fixture(scope="module")
def gw(start_mysql_gateway: StartMyGateway) -> MyGateway:
    return start_mysql_gateway()


def _contents(direct_kwargs: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pymysql.connect(**direct_kwargs) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, v FROM {TABLE} ORDER BY id")
        return list(cur.fetchall())


@pytest.fixture
def table(direct_kwargs: dict[str, Any]) -> Iterator[list[tuple[Any, ...]]]:
    """A small table made directly on the database; yields its rows."""
    with pymysql.connect(**direct_kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(f"CREATE TABLE {TABLE} (id INT PRIMARY KEY, v VARCHAR(20))")
        cur.execute(f"INSERT INTO {TABLE} VALUES (1, 'one'), (2, 'two')")
    yield _contents(direct_kwargs)
    with pymysql.connect(**direct_kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")


def _contractor(gw: MyGateway, subject: str) -> dict[str, Any]:
    token = gw.token(subject, groups=("contractors",))
    return gw.pymysql_kwargs(token, user=subject)


def _recorded(gw: MyGateway, subject: str) -> list[tuple[Stmt, Done | None]]:
    """The statements (and their completions) of the one finished session of ``subject``."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for path in gw.session_dir.glob("*.gwrec"):
            found = _session_statements(path, subject)
            if found is not None:
                return found
        time.sleep(0.1)
    raise AssertionError(f"no complete recording for {subject}")


def _session_statements(path: Path, subject: str) -> list[tuple[Stmt, Done | None]] | None:
    try:
        with RecordingReader(path) as reader:
            frames = [frame for _, frame in reader.logical_frames()]
    except Exception:  # a file still being written
        return None
    if not frames or not isinstance(frames[0], Start) or frames[0].subject != subject:
        return None
    if not isinstance(frames[-1], End):
        return None
    stmts: dict[int, Stmt] = {}
    done: dict[int, Done] = {}
    for f in frames:
        if isinstance(f, Stmt):
            stmts[f.stmt] = f
        elif isinstance(f, Done):
            done[f.stmt] = f
    return [(s, done.get(n)) for n, s in sorted(stmts.items())]


def test_contractor_reads_and_is_refused_writes(
    gw: MyGateway, table: list[tuple[Any, ...]], direct_kwargs: dict[str, Any]
) -> None:
    subject = "policy-pymysql@example.com"
    kwargs = _contractor(gw, subject)
    with (
        pymysql.connect(**kwargs, client_flag=CLIENT.MULTI_STATEMENTS) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(f"SELECT id, v FROM {TABLE} ORDER BY id")
        assert list(cur.fetchall()) == table
        for sql, names in REFUSED:
            with pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute(sql)
            errno, message = info.value.args
            assert errno == ER_TABLEACCESS_DENIED_ERROR, (sql, message)
            assert names in message, (sql, message)
            # Nothing reached the database, and the connection still works.
            assert _contents(direct_kwargs) == table
            cur.execute("SELECT 41 + 1")
            assert cur.fetchall() == ((42,),)
    # One log line per refusal, without the statement text (literals may be sensitive).
    log_text = gw.log_text()
    assert log_text.count("statement refused") >= len(REFUSED)
    assert "evil" not in log_text
    recorded = _recorded(gw, subject)
    denied = [(s, d) for s, d in recorded if s.decision == "deny"]
    assert [s.text for s, _ in denied] == [sql for sql, _ in REFUSED]
    for s, d in denied:
        assert s.rule is not None and s.rule.startswith("class:")
        assert d is not None and d.error is not None
        assert d.error.code == "1142"
        assert d.error.message.startswith("42000: statement")
    allowed = [s for s, _ in recorded if s.text == "SELECT 41 + 1"]
    assert len(allowed) == len(REFUSED)
    assert all(s.decision == "allow" and s.rule == "allow:read" for s in allowed)


def test_prepared_statement_refused_at_prepare(
    gw: MyGateway, table: list[tuple[Any, ...]], direct_kwargs: dict[str, Any]
) -> None:
    subject = "policy-prepared@example.com"
    token = gw.token(subject, groups=("contractors",))
    conn = mysql.connector.connect(**gw.connector_kwargs(token, user=subject), use_pure=True)
    try:
        cur = conn.cursor(prepared=True)
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute(f"INSERT INTO {TABLE} VALUES (%s, %s)", (7, "seven"))
        assert info.value.errno == ER_TABLEACCESS_DENIED_ERROR
        assert 'class "write"' in str(info.value.msg)
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute(f"DELETE FROM {TABLE} WHERE id = %s", (1,))
        assert info.value.errno == ER_TABLEACCESS_DENIED_ERROR
        assert _contents(direct_kwargs) == table
        cur = conn.cursor(prepared=True)
        cur.execute(f"SELECT v FROM {TABLE} WHERE id = %s", (2,))
        assert cur.fetchall() == [("two",)]
        cur.close()
    finally:
        conn.close()
    recorded = _recorded(gw, subject)
    denied = [s for s, _ in recorded if s.decision == "deny"]
    assert [(s.path, s.rule) for s in denied] == [("prepared", "class:write not allowed")] * 2
    executed = [s for s, _ in recorded if s.text.startswith("SELECT v FROM")]
    assert [(s.path, s.decision, s.rule) for s in executed] == [("prepared", "allow", "allow:read")]


def test_refusal_in_a_pipeline_keeps_order(
    gw: MyGateway, table: list[tuple[Any, ...]], direct_kwargs: dict[str, Any]
) -> None:
    """A refused command between two forwarded ones, in one write: the gateway's ERR
    (sequence id 1) comes after the first reply and before the second."""
    w = Wire(gw.host, gw.port)
    try:
        w.login(gw.token("alice@example.com", groups=("contractors",)))
        query = bytes((3,))
        w.send(
            b"".join(
                _packet(query + sql.encode())
                for sql in ("SELECT SLEEP(0.2), 1", f"DROP TABLE {TABLE}", "SELECT 2")
            )
        )
        first = w.response_packets()
        assert first[-1][1][:1] == b"\xfe" and len(first) > 3
        seq, payload = w.packet()
        assert seq == 1 and payload[:1] == b"\xff"
        err = parse_err_packet(payload)
        assert (err.errno, err.sqlstate) == (ER_TABLEACCESS_DENIED_ERROR, "42000")
        assert 'class "ddl"' in str(err.text)
        third = w.response_packets()
        assert any(p[1] == b"\x012" for p in third)
        # Idle again: a refusal is answered at once.
        w.query(f"DELETE FROM {TABLE}")
        seq, err = w.error()
        assert seq == 1 and err.errno == ER_TABLEACCESS_DENIED_ERROR
        w.query("SELECT 3")
        assert any(p[1] == b"\x013" for p in w.response_packets())
    finally:
        w.close()
    assert _contents(direct_kwargs) == table


def _packet(payload: bytes, seq: int = 0) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes((seq,)) + payload


def test_admin_runs_ddl(gw: MyGateway, direct_kwargs: dict[str, Any]) -> None:
    kwargs = gw.pymysql_kwargs(
        gw.token("policy-admin@example.com"), user="policy-admin@example.com"
    )
    with pymysql.connect(**kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS policy_admin_t")
        cur.execute("CREATE TABLE policy_admin_t (id INT)")
        cur.execute("INSERT INTO policy_admin_t VALUES (1)")
        cur.execute("DROP TABLE policy_admin_t")
    with pymysql.connect(**direct_kwargs) as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'policy_admin_t'")
        assert cur.fetchall() == ()


def test_unsafe_client_charset_is_refused(gw: MyGateway) -> None:
    """sjis/big5/gbk text can hide a quote from the classifier: fail closed."""
    subject = "policy-charset@example.com"
    kwargs = gw.pymysql_kwargs(gw.token(subject), user=subject)
    # Even an admin cannot switch to one by SQL (the statement is refused before it runs).
    with pymysql.connect(**kwargs) as conn, conn.cursor() as cur:
        for sql in ("SET NAMES sjis", "SET character_set_client = big5", "SET NAMES DEFAULT"):
            with pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute(sql)
            assert info.value.args[0] == ER_TABLEACCESS_DENIED_ERROR
            assert "character_set_client" in info.value.args[1]
        cur.execute("SELECT @@character_set_client")
        assert cur.fetchall() == (("utf8mb4",),)
    # Logged in with sjis: every statement is refused.
    with (
        pytest.raises(pymysql.err.MySQLError) as info,
        pymysql.connect(**kwargs, charset="sjis") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT 1")
    assert info.value.args[0] == ER_TABLEACCESS_DENIED_ERROR
    assert "character_set_client sjis" in info.value.args[1]


def test_sql_mode_that_changes_how_text_is_read_is_refused_even_for_admins(
    gw: MyGateway,
) -> None:
    """ANSI_QUOTES / NO_BACKSLASH_ESCAPES would make every later statement read
    differently by the server than by the gateway: refused whatever the policy."""
    subject = "policy-sqlmode@example.com"
    kwargs = gw.pymysql_kwargs(gw.token(subject), user=subject)
    with pymysql.connect(**kwargs) as conn, conn.cursor() as cur:
        for sql in (
            "SET sql_mode = 'NO_BACKSLASH_ESCAPES'",
            "SET SESSION sql_mode = 'ANSI_QUOTES'",
            "SET @@sql_mode = concat(@@sql_mode, ',ANSI')",
        ):
            with pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute(sql)
            assert info.value.args[0] == ER_TABLEACCESS_DENIED_ERROR
            assert "sql_mode" in info.value.args[1]
        cur.execute("SET sql_mode = 'STRICT_TRANS_TABLES'")  # harmless: allowed
        cur.execute("SELECT @@sql_mode")
        assert cur.fetchall() == (("STRICT_TRANS_TABLES",),)


def test_mariadb_cli_contractor(
    gw: MyGateway, table: list[tuple[Any, ...]], direct_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    subject = "policy-cli@example.com"
    token_file = tmp_path / "token"
    token_file.write_text(gw.token(subject, groups=("contractors",)))
    args = [*gw.cli_args(token_file, user=subject), "--batch", "app"]
    proc = subprocess.run(
        args, input=f"DROP TABLE {TABLE};\n", capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "ERROR 1142 (42000)" in proc.stderr and 'class "ddl"' in proc.stderr
    proc = subprocess.run(
        [*args, "--force"],
        input=f"DELETE FROM {TABLE};\nSELECT count(*) FROM {TABLE};\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ERROR 1142 (42000)" in proc.stderr
    assert proc.stdout.split() == ["count(*)", "2"]
    assert _contents(direct_kwargs) == table


def test_server_default_sql_mode_the_gateway_cannot_read_refuses_logins(
    gw: MyGateway, mariadb_server: MariaDBServer
) -> None:
    """A server whose global sql_mode has ANSI_QUOTES reads "..." as identifiers: the
    gateway's reading of statements would differ, so sessions are refused."""
    subject = "policy-global-sqlmode@example.com"
    kwargs = gw.pymysql_kwargs(gw.token(subject), user=subject)
    before = mariadb_server.sql("SELECT @@GLOBAL.sql_mode;").strip()
    mariadb_server.sql("SET GLOBAL sql_mode = CONCAT(@@GLOBAL.sql_mode, ',ANSI_QUOTES');")
    try:
        with pytest.raises(pymysql.err.MySQLError) as info:
            pymysql.connect(**kwargs)
        assert info.value.args[0] == 1235 and "ANSI_QUOTES" in info.value.args[1]
    finally:
        mariadb_server.sql(f"SET GLOBAL sql_mode = '{before}';")
    with pymysql.connect(**kwargs) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchall() == ((1,),)


# -- commands that carry no statement text ---------------------------------------------------

SCHEMA_RULED = (
    DEFAULT_POLICIES
    + """
[[policies]]
name = "schema-ruled"
groups = ["schema-ruled"]
targets = ["app-my"]
allow = ["read", "session"]
deny = ["no-info-schema", "no-policy-t"]

[[policies.rules]]
name = "no-info-schema"
schemas = ["information_schema"]

[[policies.rules]]
name = "no-policy-t"
tables = ["policy_t"]

[[policies]]
name = "read-only"
groups = ["read-only"]
targets = ["app-my"]
allow = ["read"]
"""
)


@pytest.fixture(scope="module")
def ruled_gw(start_mysql_gateway: StartMyGateway) -> MyGateway:
    return start_mysql_gateway(policies=SCHEMA_RULED)


def _ruled(gw: MyGateway, database: str | None = "app") -> dict[str, Any]:
    subject = "ruled@example.com"
    token = gw.token(subject, groups=("schema-ruled",))
    return gw.pymysql_kwargs(token, user=subject, database=database)


def test_a_schema_rule_covers_choosing_the_database(ruled_gw: MyGateway) -> None:
    """COM_INIT_DB and the database named at login are decided as USE: a schema rule
    refuses them (they once reached the server unchecked)."""
    with pymysql.connect(**_ruled(ruled_gw)) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as refused:
            conn.select_db("information_schema")  # COM_INIT_DB
        assert refused.value.args[0] == ER_TABLEACCESS_DENIED_ERROR
        conn.select_db("app")
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("app",)
    with pytest.raises(pymysql.err.OperationalError) as login:
        pymysql.connect(**_ruled(ruled_gw, database="information_schema"))
    assert login.value.args[0] == 1044


def test_commands_that_flush_or_debug_are_refused(gw: MyGateway) -> None:
    """COM_REFRESH (FLUSH, RESET MASTER / SLAVE) and COM_DEBUG carry no statement for the
    policy to decide: refused, and the session goes on."""
    w = Wire(gw.host, gw.port)
    w.login(gw.token("dba-refresh@example.com", ("dba",)))
    for command in (b"\x07\x01", b"\x07\x80", b"\x0d"):  # REFRESH GRANT, REFRESH MASTER, DEBUG
        w.command(command)
        _, reply = w.packet()
        assert reply[:1] == b"\xff" and b"not allowed through the gateway" in reply, reply
    w.query("SELECT 'still here'")
    assert w.response_packets()[3][1] == b"\x0astill here"
    w.close()


def test_choosing_a_database_needs_no_session_class(ruled_gw: MyGateway) -> None:
    """USE is class session, but COM_INIT_DB never needed it: only deny rules refuse it."""
    w = Wire(ruled_gw.host, ruled_gw.port)
    w.login(ruled_gw.token("reader@example.com", ("read-only",)))
    w.command(b"\x02app")
    _, reply = w.packet()
    assert reply[:1] == b"\x00", reply
    w.close()


def test_a_table_rule_covers_the_field_list_command(
    ruled_gw: MyGateway, table: list[tuple[Any, ...]]
) -> None:
    """COM_FIELD_LIST is decided as SHOW COLUMNS: a table rule refuses its metadata."""
    w = Wire(ruled_gw.host, ruled_gw.port)
    w.login(ruled_gw.token("ruled-fields@example.com", ("schema-ruled",)))
    w.command(b"\x04" + TABLE.encode() + b"\x00")
    _, reply = w.packet()
    assert reply[:1] == b"\xff" and b"no-policy-t" in reply, reply
    w.query("SELECT 'still here'")
    assert w.response_packets()[3][1] == b"\x0astill here"
    w.close()
