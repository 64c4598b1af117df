"""The audit log for MySQL sessions: one line per statement through PyMySQL (allowed,
refused by the policy, failed at the server), with the same fields as PostgreSQL's."""

from __future__ import annotations

import json
import time
from typing import Any

import pymysql
import pytest

from .conftest import MyGateway, StartMyGateway

pytestmark = pytest.mark.integration

WHO = "audit-my@example.com"


@pytest.fixture(scope="module")
def gw(start_mysql_gateway: StartMyGateway) -> MyGateway:
    return start_mysql_gateway(extra='[audit]\nflush_interval = "50ms"\n')


def _lines(gw: MyGateway) -> list[dict[str, Any]]:
    path = gw.process.state_dir / "audit.log"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_one_line_per_statement(gw: MyGateway) -> None:
    with pymysql.connect(**gw.pymysql_kwargs(gw.token(WHO, ("dba",)), user=WHO)) as conn:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS audit_my")
            cur.execute("CREATE TABLE audit_my (id INT PRIMARY KEY, v VARCHAR(20))")
            cur.execute("INSERT INTO audit_my VALUES (1, 'secret-one'), (2, 'two')")
        conn.commit()
    reader = "reader-my@example.com"
    kwargs = gw.pymysql_kwargs(gw.token(reader, ("contractors",)), user=reader)
    with pymysql.connect(**kwargs) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, v FROM audit_my WHERE v = 'secret-one' OR id = 2")
        assert len(cur.fetchall()) == 2
        with pytest.raises(pymysql.err.OperationalError) as refused:
            cur.execute("DELETE FROM audit_my WHERE id = 1")
        assert refused.value.args[0] == 1142
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM audit_no_such_table")
    deadline = time.monotonic() + 10
    while not any(x.get("event") == "session_end" and x["subject"] == reader for x in _lines(gw)):
        assert time.monotonic() < deadline, _lines(gw)[-5:]
        time.sleep(0.05)
    lines = _lines(gw)
    mine = [x for x in lines if x.get("event") == "statement" and x["subject"] == reader]
    # PyMySQL's own SET NAMES / SET AUTOCOMMIT come first: one line each too.
    assert [x["class"] for x in mine[:-3]] == ["session"] * (len(mine) - 3)
    mine = mine[-3:]
    assert [x["decision"] for x in mine] == ["allow", "deny", "allow"], mine
    ok, denied, failed = mine
    for line in mine:
        assert line["protocol"] == "mysql" and line["target"] == "app-my"
        assert line["groups"] == ["contractors"] and len(line["fingerprint"]) == 16
    assert ok["rows"] == 2 and ok["bytes"] > 0 and ok["class"] == "read" and ok["rule"]
    assert ok["text"] == "SELECT id, v FROM audit_my WHERE v = ? OR id = ?"
    assert "error" not in ok
    assert denied["class"] == "write" and denied["error"] == "1142/42000" and denied["rule"]
    assert denied["text"] == "DELETE FROM audit_my WHERE id = ?"
    assert failed["error"] == "1146/42S02"
    assert "secret-one" not in json.dumps([x for x in lines if x["subject"] == reader])


def _statements_once_ended(gw: MyGateway, who: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while not any(x.get("event") == "session_end" and x["subject"] == who for x in _lines(gw)):
        assert time.monotonic() < deadline, _lines(gw)[-5:]
        time.sleep(0.05)
    return [x for x in _lines(gw) if x.get("event") == "statement" and x["subject"] == who]


def test_prepared_and_multi_statement_paths(gw: MyGateway) -> None:
    import mysql.connector
    from pymysql.constants import CLIENT

    who = "audit-my-paths@example.com"
    kwargs = gw.pymysql_kwargs(gw.token(who, ("dba",)), user=who)
    with pymysql.connect(**kwargs, client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS audit_paths")
            cur.execute("CREATE TABLE audit_paths (id INT, v VARCHAR(20))")
            cur.execute("INSERT INTO audit_paths VALUES (1, 'hidden-one'), (2, 'b'), (3, 'c')")
            cur.execute("SELECT 1; SELECT id FROM audit_paths WHERE id > 1")
            while cur.nextset():
                pass
        conn.commit()
    mine = _statements_once_ended(gw, who)
    at = [x["text"] for x in mine].index("SELECT ?")
    first, second = mine[at : at + 2]
    assert (first["text"], first["rows"]) == ("SELECT ?", 1)
    assert (second["text"], second["rows"]) == ("SELECT id FROM audit_paths WHERE id > ?", 2)
    assert first["path"] == second["path"] == "simple"

    who = "audit-my-prepared@example.com"
    connector = {k: v for k, v in gw.pymysql_kwargs(gw.token(who, ("dba",)), user=who).items()}
    connector.pop("connect_timeout")
    connector.pop("ssl_verify_identity")
    conn2 = mysql.connector.connect(**connector, use_pure=True, connection_timeout=10)
    try:
        cur2 = conn2.cursor(prepared=True)
        cur2.execute("SELECT id, v FROM audit_paths WHERE v = %s", ("hidden-one",))
        assert cur2.fetchall() == [(1, "hidden-one")]
        cur2.execute("SELECT id, v FROM audit_paths WHERE v = %s", ("b",))
        assert len(cur2.fetchall()) == 1
        cur2.close()
    finally:
        conn2.close()
    prepared = [x for x in _statements_once_ended(gw, who) if x["path"] == "prepared"]
    assert [x["rows"] for x in prepared] == [1, 1]
    assert prepared[0]["text"] == "SELECT id, v FROM audit_paths WHERE v = ?"
    assert prepared[0]["fingerprint"] == prepared[1]["fingerprint"]
    assert prepared[0]["rule"] and prepared[0]["class"] == "read"
    assert "hidden-one" not in json.dumps(prepared)


def test_change_user_moves_the_audit_attribution(gw: MyGateway) -> None:
    """After COM_CHANGE_USER the statements are the new identity's in the audit log."""
    import mysql.connector

    first, second = "audit-cu-one@example.com", "audit-cu-two@example.com"
    kw = gw.connector_kwargs(gw.token(first, ("dba",)), user=first)
    conn = mysql.connector.connect(**kw, use_pure=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 'as the first'")
        cur.fetchall()
        token = gw.token(second, ("contractors",))
        conn.cmd_change_user(username=second, password=token, database="app")
        cur = conn.cursor()
        cur.execute("SELECT 'as the second'")
        cur.fetchall()
    finally:
        conn.close()
    # The session ends under the second identity; its statements are attributed to it.
    deadline = time.monotonic() + 10
    while not any(
        x.get("event") == "session_end" for x in _lines(gw) if x.get("subject") == second
    ):
        assert time.monotonic() < deadline, _lines(gw)[-5:]
        time.sleep(0.05)
    statements = [
        (x["subject"], x["groups"])
        for x in _lines(gw)
        if x.get("event") == "statement"
        and x["subject"] in (first, second)
        and x["text"] == "SELECT ?"
    ]
    assert statements == [(first, ["dba"]), (second, ["contractors"])], statements


def test_prepared_statements_are_audited_with_recording_off(
    start_mysql_gateway: StartMyGateway,
) -> None:
    """The audit log does not depend on the recording: with recording disabled, every
    COM_STMT_EXECUTE still gets its line (text, rule, class, rows), as a COM_QUERY does."""
    import mysql.connector

    gw = start_mysql_gateway(recording=False, extra='[audit]\nflush_interval = "50ms"\n')
    who = "audit-my-norec@example.com"
    connector = dict(gw.pymysql_kwargs(gw.token(who, ("dba",)), user=who))
    connector.pop("connect_timeout")
    connector.pop("ssl_verify_identity")
    conn = mysql.connector.connect(**connector, use_pure=True, connection_timeout=10)
    try:
        setup = conn.cursor()
        setup.execute("DROP TABLE IF EXISTS audit_norec")
        setup.execute("CREATE TABLE audit_norec (id INT, v VARCHAR(20))")
        setup.execute("INSERT INTO audit_norec VALUES (1, 'quiet-one'), (2, 'b'), (3, 'c')")
        conn.commit()
        setup.close()
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT id, v FROM audit_norec WHERE id > %s", (1,))
        assert len(cur.fetchall()) == 2
        cur.execute("SELECT id, v FROM audit_norec WHERE v = %s", ("quiet-one",))
        assert cur.fetchall() == [(1, "quiet-one")]
        cur.close()
    finally:
        conn.close()
    assert not list(gw.process.session_dir.glob("*.gwrec"))  # recording really was off
    prepared = [x for x in _statements_once_ended(gw, who) if x["path"] == "prepared"]
    assert [(x["text"], x["rows"]) for x in prepared] == [
        ("SELECT id, v FROM audit_norec WHERE id > ?", 2),
        ("SELECT id, v FROM audit_norec WHERE v = ?", 1),
    ]
    assert all(x["decision"] == "allow" and x["class"] == "read" and x["rule"] for x in prepared)
    assert "quiet-one" not in json.dumps(prepared)
