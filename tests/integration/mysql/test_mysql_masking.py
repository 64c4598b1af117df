"""Masking through the MySQL gateway with real clients and the real MariaDB (issue 6).

Same question as the PostgreSQL tests: does any raw seeded value reach the restricted
client, through PyMySQL (text protocol) or mysql-connector (text, and prepared statements
in the binary protocol), or its recording? Admins see raw values.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from gateway.embedded.seed import customer_rows

from .conftest import MyGateway, StartMyGateway
from .mywire import Wire

pytestmark = pytest.mark.integration

CONTRACTOR = "casey@contractor.example"

POLICIES = """
[[policies]]
name = "admins"
groups = ["dba"]
targets = ["app-my"]
allow = ["*"]

[[policies]]
name = "contractors"
groups = ["contractors"]
targets = ["app-my"]
allow = ["read", "session", "transaction"]
record_rows = 1000

[[policies.masks]]
columns = ["customers.ssn", "customers.card_number"]
style = "last4"

[[policies.masks]]
columns = ["customers.email"]
style = "email"

[[policies.masks]]
columns = ["customers.phone"]
style = "redact"

[[policies.masks]]
columns = ["mask_types.*"]
style = "redact"

[[policies.masks]]
detectors = ["credit_card", "ssn", "email", "phone"]
style = "redact"

# Masks, and CALL (class dynamic) allowed: multi-statement texts with procedures.
[[policies]]
name = "maskdyn"
groups = ["maskdyn"]
targets = ["app-my"]
allow = ["read", "session", "dynamic"]

[[policies.masks]]
columns = ["customers.ssn"]
style = "redact"
"""

CUSTOMERS = customer_rows()
RAW_VALUES = sorted(
    {v for row in CUSTOMERS for v in (row[2], row[3], row[4], row[5])}
    | {re.sub(r"\D", "", row[4]) for row in CUSTOMERS},
    key=len,
    reverse=True,
)
SSN_RE = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")

QUERIES = [
    "SELECT * FROM customers ORDER BY id",
    "SELECT id, ssn, card_number, email, phone FROM customers",
    "SELECT ssn AS x, card_number AS y FROM customers",
    "SELECT CONCAT('x', ssn), UPPER(email), SUBSTRING(card_number, 1, 16) FROM customers",
    "SELECT CAST(ssn AS CHAR), LOWER(email) FROM customers",
    "SELECT CASE WHEN ssn LIKE '9%' THEN email ELSE phone END FROM customers",
    "SELECT s FROM (SELECT ssn AS s FROM customers) AS sub",
    "WITH t AS (SELECT email, card_number FROM customers) SELECT * FROM t",
    "SELECT ssn FROM customers UNION ALL SELECT name FROM customers",
    "SELECT JSON_OBJECT('s', ssn, 'e', email) FROM customers",
    "SELECT GROUP_CONCAT(ssn) FROM customers",
    "SELECT MAX(ssn), MIN(card_number) FROM customers",
    "SELECT payload FROM events ORDER BY id LIMIT 500",
    "SELECT c.ssn, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id LIMIT 100",
]


def leaked(values: Iterable[Any]) -> list[str]:
    text = "\n".join(
        v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else repr(v)
        for v in values
    )
    found = [raw for raw in RAW_VALUES if raw in text]
    return found + SSN_RE.findall(text)


def flat(rows: Iterable[Iterable[Any]]) -> list[Any]:
    return [v for row in rows for v in row]


@pytest.fixture(scope="module")
def gw(start_mysql_gateway: StartMyGateway) -> MyGateway:
    return start_mysql_gateway(policies=POLICIES)


@pytest.fixture(scope="module", autouse=True)
def mask_types(gw: MyGateway) -> None:
    admin = gw.pymysql_kwargs(gw.token("root@example.com", groups=("dba",)))
    with pymysql.connect(**admin, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS mask_types")
        cur.execute(
            "CREATE TABLE mask_types (id INT, t VARCHAR(20), i BIGINT, d DECIMAL(10,2), "
            "f DOUBLE, dt DATE, ts DATETIME(6), tm TIME, j JSON, b BLOB, y YEAR)"
        )
        cur.execute(
            "INSERT INTO mask_types VALUES (1, '111-22-3333', 4242, 12.50, 1.5, "
            "'2024-05-01', '2024-05-01 10:00:00.5', '10:00:00', '{\"a\": 1}', 'blob!', 2024)"
        )


def contractor(gw: MyGateway, subject: str = CONTRACTOR) -> dict[str, Any]:
    return gw.pymysql_kwargs(gw.token(subject, groups=("contractors",)), user=subject)


@pytest.mark.parametrize("sql", QUERIES)
def test_pymysql_sees_no_raw_value(gw: MyGateway, sql: str) -> None:
    with pymysql.connect(**contractor(gw)) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    assert rows, sql
    assert leaked(flat(rows)) == [], sql


def test_new_literals_in_one_session_keep_their_own_plans(gw: MyGateway) -> None:
    # Text queries that differ only in a literal share one lineage analysis and one row
    # plan; queries of another shape get theirs, also when their results are described
    # alike (`CAST(... AS CHAR(200)) AS v`: same name, type and length, no source column),
    # where only the statements' lineage tells them apart. Interleaved in one session.
    by_id = {row[0]: row for row in CUSTOMERS}
    ids = list(by_id)[:4]
    with pymysql.connect(**contractor(gw)) as conn, conn.cursor() as cur:
        for i in ids:
            cur.execute(f"SELECT id, ssn FROM customers WHERE id = {i}")
            ((_, ssn),) = cur.fetchall()
            cur.execute(f"SELECT id, name FROM customers WHERE id = {i}")
            ((_, name),) = cur.fetchall()
            cur.execute(f"SELECT id, CAST(ssn AS CHAR(200)) AS v FROM customers WHERE id = {i}")
            ((_, cast_ssn),) = cur.fetchall()
            cur.execute(f"SELECT id, CAST(name AS CHAR(200)) AS v FROM customers WHERE id = {i}")
            ((_, cast_name),) = cur.fetchall()
            assert ssn != by_id[i][3] and ssn.endswith(by_id[i][3][-4:])  # last4
            assert name == by_id[i][1]
            assert by_id[i][3] not in cast_ssn
            assert cast_name == by_id[i][1]


@pytest.mark.parametrize("sql", QUERIES)
@pytest.mark.parametrize("prepared", [False, True], ids=["text", "prepared"])
def test_connector_sees_no_raw_value(gw: MyGateway, sql: str, prepared: bool) -> None:
    kwargs = gw.connector_kwargs(gw.token(CONTRACTOR, groups=("contractors",)), user=CONTRACTOR)
    conn = mysql.connector.connect(**kwargs)
    try:
        cur = conn.cursor(prepared=prepared)
        cur.execute(sql)
        rows = cur.fetchall()
    finally:
        conn.close()
    assert rows, sql
    assert leaked(flat(rows)) == [], sql


def test_admin_sees_raw_values(gw: MyGateway) -> None:
    admin = gw.pymysql_kwargs(gw.token("root@example.com", groups=("dba",)))
    with pymysql.connect(**admin) as conn, conn.cursor() as cur:
        cur.execute("SELECT email, ssn, card_number, phone FROM customers ORDER BY id")
        rows = cur.fetchall()
    assert [tuple(r) for r in rows] == [(r[2], r[3], r[4], r[5]) for r in CUSTOMERS]
    assert len(leaked(flat(rows))) >= len(CUSTOMERS)


def test_styles_and_types(gw: MyGateway) -> None:
    with pymysql.connect(**contractor(gw)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name, email, ssn, card_number FROM customers ORDER BY id")
        rows = cur.fetchall()
        cur.execute("SELECT * FROM mask_types")
        typed = cur.fetchone()
    for (cid, name, email, ssn, card), raw in zip(rows, CUSTOMERS, strict=True):
        assert (cid, name) == (raw[0], raw[1])
        assert email.endswith("@" + raw[2].split("@")[1]) and email != raw[2]
        assert ssn.endswith(raw[3][-4:]) and ssn != raw[3]
        assert card.endswith(raw[4][-4:]) and card != raw[4]
    assert typed is not None
    assert "111-22-3333" not in repr(typed) and 4242 not in typed


def test_binary_protocol_types_decode(gw: MyGateway) -> None:
    kwargs = gw.connector_kwargs(gw.token(CONTRACTOR, groups=("contractors",)), user=CONTRACTOR)
    conn = mysql.connector.connect(**kwargs)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT * FROM mask_types WHERE id = ?", (1,))
        row = cur.fetchone()
    finally:
        conn.close()
    assert row is not None
    assert "111-22-3333" not in repr(row) and 4242 not in row


def test_exports_and_copies_refused(gw: MyGateway) -> None:
    with pymysql.connect(**contractor(gw)) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute("SELECT ssn FROM customers INTO OUTFILE '/tmp/mask-test-out.txt'")
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


@pytest.mark.parametrize(
    "store",
    [
        "SELECT ssn FROM customers WHERE id = 7 INTO @x",
        "PREPARE s FROM 'SELECT ssn INTO @x FROM customers WHERE id = 7'",
        "SELECT @x := ssn FROM customers WHERE id = 7",
    ],
)
def test_values_stored_in_variables_do_not_come_back_raw(gw: MyGateway, store: str) -> None:
    """A masked value copied into a user variable (INTO last, inside PREPARE, :=) is
    refused: reading the variable back has no lineage to mask by."""
    with pymysql.connect(**contractor(gw)) as conn, conn.cursor() as cur:
        try:
            cur.execute(store)
            cur.fetchall()
            if store.startswith("PREPARE"):
                cur.execute("EXECUTE s")
                cur.fetchall()
        except pymysql.err.MySQLError:
            pass  # refused: the point
        cur.execute("SELECT @x")
        assert leaked(flat(cur.fetchall())) == []


def test_cursor_rows_are_masked_by_the_executes_columns(gw: MyGateway) -> None:
    """A parameter in the select list has no type at prepare (MYSQL_TYPE_NULL: no bytes in
    a binary row) and a type once bound: fetched rows must be read with the columns of
    the execute that opened the cursor, or the masks land on the wrong bytes."""
    w = Wire(gw.host, gw.port)
    w.login(gw.token(CONTRACTOR, groups=("contractors",)))
    w.command(b"\x16SELECT ?, ssn FROM customers ORDER BY id LIMIT 3")
    _, ok = w.packet()
    assert ok[:1] == b"\x00", ok
    stmt_id = ok[1:5]
    columns, params = struct.unpack("<HH", ok[5:9])
    for _ in range(params + 1 + columns + 1):  # definitions, each list ended by an EOF
        w.packet()
    for param in (struct.pack("<q", 0x0B00), b"\x05"):
        kind = b"\x08\x00" if len(param) == 8 else b"\x01\x00"
        # flags: read-only cursor; iterations 1; NULL bitmap; new-params-bound; types; values
        w.command(b"\x17" + stmt_id + b"\x01\x01\x00\x00\x00" + b"\x00\x01" + kind + param)
        while True:
            _, packet = w.packet()
            if (
                packet[:1] == b"\xfe"
                and len(packet) < 9
                and struct.unpack("<H", packet[3:5])[0] & 0x40
            ):
                break  # the EOF after the column definitions: the cursor is open
            assert packet[:1] != b"\xff", packet
        w.command(b"\x1c" + stmt_id + struct.pack("<I", 5))
        rows = []
        while True:
            _, row = w.packet()
            if row[:1] in (b"\xfe", b"\xff"):
                break
            rows.append(row)
        text = [row.decode("latin-1") for row in rows]
        assert rows and not leaked(text), text
    w.close()


def test_recording_holds_only_masked_rows(gw: MyGateway) -> None:
    subject = "rec-check@contractor.example"
    with pymysql.connect(**contractor(gw, subject)) as conn, conn.cursor() as cur:
        for sql in QUERIES:
            cur.execute(sql)
            cur.fetchall()
    deadline = time.monotonic() + 15
    data = b""
    while time.monotonic() < deadline:
        files = [p for p in Path(gw.process.session_dir).glob("*.gwrec")]
        data = b"".join(p.read_bytes() for p in files if subject.encode() in p.read_bytes())
        if data and b"****" in data:
            break
        time.sleep(0.2)
    assert b"****" in data
    assert [raw for raw in RAW_VALUES if raw.encode() in data] == []


def test_errors_and_warnings_do_not_echo_values(gw: MyGateway) -> None:
    with pymysql.connect(**contractor(gw)) as conn, conn.cursor() as cur:
        # MariaDB quotes values in warnings: "Truncated incorrect DOUBLE value: '9..-..-....'".
        cur.execute("SELECT CAST(ssn AS DOUBLE) FROM customers LIMIT 5")
        cur.fetchall()
        cur.execute("SHOW WARNINGS")
        warnings = cur.fetchall()
        assert warnings and leaked(flat(warnings)) == []
        # An unknown table is the client's own typo: its message (naming only what the
        # statement says) is kept.
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("SELECT ssn FROM no_such_customers")
        assert "no_such_customers" in str(info.value) and "withheld" not in str(info.value)
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_the_audit_line_names_what_was_masked(gw: MyGateway) -> None:
    """As on PostgreSQL: column masks by source column, detector-only columns marked."""
    import json
    import time

    subject = "audited@contractor.example"
    with pymysql.connect(**contractor(gw, subject)) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, ssn FROM customers ORDER BY id LIMIT 2")
        cur.fetchall()
    path = gw.process.state_dir / "audit.log"
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        mine = [x for x in lines if x.get("event") == "statement" and x["subject"] == subject]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert mine, lines[-3:]
    assert mine[-1]["masked"] == ["app.customers.name (detectors)", "app.customers.ssn"]


def _raw(gw: MyGateway, subject: str, group: str, extra_caps: int = 0) -> Any:
    """A raw protocol client logged in as ``subject`` (for pipelined commands)."""
    from .mywire import Wire

    w = Wire(gw.host, gw.port)
    plain = w.handshake_response
    w.handshake_response = lambda **kw: plain(user=subject, **kw)  # type: ignore[method-assign]
    w.login(gw.token(subject, groups=(group,)), extra_caps=extra_caps)
    return w


def _prepare_ok(w: Any) -> None:
    """Read a COM_STMT_PREPARE answer: OK, parameter and column definitions (EOF each)."""
    import struct

    _, ok = w.packet()
    assert ok[:1] == b"\x00", ok
    columns, params = struct.unpack_from("<HH", ok, 5)
    for count in (params, columns):
        for _ in range(count + (1 if count else 0)):
            w.packet()


def test_executing_the_statement_just_prepared_in_a_pipeline_is_masked(gw: MyGateway) -> None:
    """COM_STMT_EXECUTE with id 0xFFFFFFFF ("the statement just prepared") sent right
    behind its COM_STMT_PREPARE runs the new statement, not the one prepared before."""
    import struct

    from protocols.mysql.constants import Command
    from protocols.mysql.framing import build_packets

    w = _raw(gw, "pipeliner@contractor.example", "contractors")
    try:
        w.command(bytes((Command.COM_STMT_PREPARE,)) + b"SELECT 'hello world' AS v")
        _prepare_ok(w)
        leaky = b"SELECT CONCAT(ssn, '') AS v FROM customers ORDER BY id LIMIT 3"
        execute_last = struct.pack("<IBI", 0xFFFFFFFF, 0, 1)
        w.send(
            build_packets(bytes((Command.COM_STMT_PREPARE,)) + leaky, 0)[0]
            + build_packets(bytes((Command.COM_STMT_EXECUTE,)) + execute_last, 0)[0]
        )
        _prepare_ok(w)
        packets = [p for _, p in w.response_packets()]
        assert len(packets) > 3 and not leaked(packets), packets
    finally:
        w.close()


def test_a_procedure_in_a_multi_statement_query_does_not_shift_masks(gw: MyGateway) -> None:
    """CALL answers with its result sets and an OK: the results after it are not matched
    to the statements by position any more, and are masked as unknown."""
    from pymysql.constants import CLIENT

    admin = gw.pymysql_kwargs(gw.token("root@example.com", groups=("dba",)))
    with pymysql.connect(**admin, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("DROP PROCEDURE IF EXISTS p_one")
        cur.execute("CREATE PROCEDURE p_one() SELECT 1")
    subject = "caller@example.com"
    kwargs = gw.pymysql_kwargs(gw.token(subject, groups=("maskdyn",)), user=subject)
    with (
        pymysql.connect(**kwargs, client_flag=CLIENT.MULTI_STATEMENTS) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(
            "CALL p_one(); SELECT CONCAT(ssn, '') AS v FROM customers ORDER BY id LIMIT 2; "
            "SELECT 'hello' AS v"
        )
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
    assert not leaked(flat(flat(results))), results


def test_a_masked_statements_error_message_is_withheld(gw: MyGateway) -> None:
    """A quote added to the value used to break the blanking of quoted text."""
    sql = (
        "SELECT count(*), CONCAT('''', (SELECT ssn FROM customers WHERE id = 1), "
        "FLOOR(RAND(0) * 2)) x FROM customers GROUP BY x"
    )
    with (
        pymysql.connect(**contractor(gw)) as conn,
        conn.cursor() as cur,
        pytest.raises(pymysql.err.MySQLError) as info,
    ):
        cur.execute(sql)
    assert "withheld" in str(info.value) and not leaked([str(info.value)]), info.value


def test_show_grants_is_refused_to_read_only_users(gw: MyGateway) -> None:
    """MariaDB shows the account's password hash, and every session shares the gateway's
    account: SHOW GRANTS is class admin."""
    with (
        pymysql.connect(**contractor(gw)) as conn,
        conn.cursor() as cur,
        pytest.raises(pymysql.err.OperationalError) as info,
    ):
        cur.execute("SHOW GRANTS")
    assert info.value.args[0] == 1142 and "PASSWORD" not in str(info.value)
