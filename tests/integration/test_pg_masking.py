"""Masking through the real gateway, with real clients and PostgreSQL (issue 6).

The contractors' masks: ssn and card_number keep their last 4 characters, email keeps its
domain, phone is a keyed hash, and the content detectors redact card numbers, SSNs, emails
and phones anywhere else (events.payload is jsonb holding some). Every test asks the same
question of a different path: does any raw seeded value reach the restricted client, or its
recording? The admins' policy has no masks: they see raw values, which proves the seeded
values are really there to be found.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from gateway.embedded.seed import customer_rows

from .conftest import GatewayProcess, StartGateway
from .pgwire import COPY_DONE, FLUSH, SYNC, Wire, bind, describe, execute, frontend, parse, query
from .pgwire import rows as _data
from .test_recording_e2e import session_file

pytestmark = pytest.mark.integration

CONTRACTOR = "casey@contractor.example"
STRICT = "sam@strict.example"

POLICIES = """
[[policies]]
name = "admins"
groups = ["dba"]
targets = ["app-pg"]
allow = ["*"]

[[policies]]
name = "contractors"
groups = ["contractors"]
targets = ["app-pg"]
allow = ["read", "session", "transaction"]
record_rows = 1000

[[policies.masks]]
columns = ["customers.ssn", "customers.card_number"]
style = "last4"

[[policies.masks]]
columns = ["customers.email"]
style = "email"

[[policies.masks]]
columns = ["customers.phone", "*.secret_note"]
style = "hash"

[[policies.masks]]
columns = ["mask_types.*"]
style = "redact"

[[policies.masks]]
detectors = ["credit_card", "ssn", "email", "phone"]
style = "redact"

[[policies]]
name = "strict"
groups = ["strict"]
targets = ["app-pg"]
allow = ["*"]
on_unmaskable = "deny"
on_unknown_lineage = "deny"

[[policies.masks]]
columns = ["customers.ssn", "mask_types.*"]
style = "redact"
"""

# Every sensitive seeded value; none may reach a contractor.
CUSTOMERS = customer_rows()
RAW_VALUES = sorted(
    {v for row in CUSTOMERS for v in (row[2], row[3], row[4], row[5])}
    | {re.sub(r"\D", "", row[4]) for row in CUSTOMERS},
    key=len,
    reverse=True,
)
SSN_RE = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")


def leaked(values: Iterable[Any]) -> list[str]:
    """Raw seeded values (or anything shaped like an SSN) found in ``values``."""
    text = "\n".join(repr(v) for v in values)
    found = [raw for raw in RAW_VALUES if raw in text]
    found += SSN_RE.findall(text)
    return found


async def apg_connect(gw: GatewayProcess) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=gw.host,
        port=gw.port,
        user=CONTRACTOR,
        password=gw.token(CONTRACTOR, ("contractors",)),
        database="app",
        ssl="require",
    )


def flat(rows: Iterable[Iterable[Any]]) -> list[Any]:
    return [v for row in rows for v in row]


@pytest.fixture(scope="module")
def gw(start_gateway: StartGateway, tmp_path_factory: pytest.TempPathFactory) -> GatewayProcess:
    key_file = tmp_path_factory.mktemp("maskkey") / "hash.key"
    key_file.write_text("test-hash-key-0123456789abcdef\n")
    extra = f'[masking]\nhash_key_file = "{key_file}"\ncatalog_refresh = "1h"\n'
    return start_gateway(policies=POLICIES, extra=extra)


@pytest.fixture(scope="module")
def admin_dsn(gw: GatewayProcess) -> str:
    return gw.dsn(gw.token("root@example.com", ("dba",)))


@pytest.fixture(scope="module")
def contractor_dsn(gw: GatewayProcess) -> str:
    return gw.dsn(gw.token(CONTRACTOR, ("contractors",)), user=CONTRACTOR)


@pytest.fixture(scope="module")
def strict_dsn(gw: GatewayProcess) -> str:
    return gw.dsn(gw.token(STRICT, ("strict",)), user=STRICT)


@pytest.fixture(scope="module", autouse=True)
def schema(admin_dsn: str) -> None:
    """Objects the tests read: a view over customers, a table of many types (all masked
    for contractors), made through the gateway by an admin."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("DROP VIEW IF EXISTS customer_contacts")
        conn.execute("CREATE VIEW customer_contacts AS SELECT id, name, email, ssn FROM customers")
        # What the COPY FROM STDIN tests load into (a session with masks runs no DDL).
        conn.execute("DROP TABLE IF EXISTS copied")
        conn.execute("CREATE TABLE copied (x int)")
        conn.execute("DROP TABLE IF EXISTS mask_types")
        conn.execute(
            """CREATE TABLE mask_types (
                id int, t text, vc varchar(20), bp char(11), i2 smallint, i4 int, i8 bigint,
                f4 real, f8 double precision, num numeric(12,2), b boolean, d date,
                ts timestamp, tstz timestamptz, tm time, iv interval, u uuid, j json,
                jb jsonb, by bytea, ip inet, arr text[])"""
        )
        conn.execute(
            """INSERT INTO mask_types VALUES (1, '111-22-3333', 'secret', 'abc', 7, 42, 99,
                1.5, 2.5, 1234.56, true, '2024-05-01', '2024-05-01 10:00', '2024-05-01 10:00Z',
                '10:00', '1 day', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": 1}',
                '{"b": 2}', '\\xdeadbeef', '10.1.2.3', ARRAY['x', 'y'])"""
        )


# Statements a contractor runs; each must show no raw value, and most return rows.
QUERIES = [
    "SELECT * FROM customers ORDER BY id",
    "SELECT id, ssn, card_number, email, phone FROM customers ORDER BY id",
    "SELECT ssn AS x, card_number AS y, email AS z FROM customers",
    "SELECT c.ssn FROM customers c JOIN orders o ON o.customer_id = c.id LIMIT 50",
    "SELECT 'x' || ssn, upper(email), substring(card_number from 1 for 16) FROM customers",
    "SELECT ssn::text, CAST(card_number AS varchar(30)), lower(email) FROM customers",
    "SELECT CASE WHEN ssn LIKE '9%' THEN email ELSE phone END FROM customers",
    "SELECT (SELECT max(ssn) FROM customers), (SELECT min(email) FROM customers)",
    "SELECT s FROM (SELECT ssn AS s FROM customers) AS sub",
    "WITH t AS (SELECT email, card_number FROM customers) SELECT * FROM t",
    "SELECT ssn FROM customers UNION ALL SELECT name FROM customers",
    "SELECT name FROM customers UNION SELECT email FROM customers",
    "SELECT row_to_json(c) FROM customers c",
    "SELECT to_jsonb(c.*) FROM customers c",
    "SELECT json_agg(c) FROM customers c",
    "SELECT json_build_object('s', ssn, 'e', email) FROM customers",
    "SELECT string_agg(ssn, ',') FROM customers",
    "SELECT array_agg(card_number) FROM customers",
    "SELECT * FROM customer_contacts",
    "SELECT payload FROM events WHERE payload ? 'card' LIMIT 200",
    "SELECT payload->>'email', payload->>'phone' FROM events WHERE payload ? 'email' LIMIT 200",
    "SELECT kind, payload::text FROM events ORDER BY id LIMIT 500",
    "SELECT max(ssn), min(card_number) FROM customers",
    "SELECT ssn, count(*) FROM customers GROUP BY ssn",
]


@pytest.mark.parametrize("sql", QUERIES)
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_psycopg_sees_no_raw_value(contractor_dsn: str, sql: str, binary: bool) -> None:
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        rows = conn.execute(sql, binary=binary).fetchall()
    assert rows, sql
    assert leaked(flat(rows)) == [], sql


@pytest.mark.parametrize("sql", QUERIES)
def test_asyncpg_sees_no_raw_value(gw: GatewayProcess, sql: str) -> None:
    async def run() -> list[Any]:
        conn = await apg_connect(gw)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    rows = asyncio.run(run())
    assert rows, sql
    assert leaked(flat(rows)) == [], sql


def contractor_psql(
    gw: GatewayProcess, dsn: str, script: str, *options: str
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in one psql session (the simple Query protocol) as the contractor."""
    proc = subprocess.run(
        ["psql", "-X", *options, "-v", "ON_ERROR_STOP=1", dsn, "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PGPASSWORD": gw.token(CONTRACTOR, ("contractors",))},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_psql_sees_no_raw_value(gw: GatewayProcess, contractor_dsn: str) -> None:
    proc = contractor_psql(gw, contractor_dsn, "\n".join(q + ";" for q in QUERIES[:12]))
    assert "rows)" in proc.stdout
    assert leaked([proc.stdout]) == []


def test_new_literals_in_one_session_keep_their_own_plans(
    gw: GatewayProcess, contractor_dsn: str
) -> None:
    # Simple queries that differ only in a literal share one lineage analysis and one row
    # plan; queries of another shape get theirs. Interleaved in one psql session: every ssn
    # is masked, every name (not masked) comes through as stored -- also when the two
    # results are described alike (`upper(...) AS v`: same name, type, no source column),
    # where only the statements' lineage tells them apart.
    ids = [row[0] for row in CUSTOMERS[:4]]
    script = "".join(
        f"SELECT id, ssn FROM customers WHERE id = {i};\n"
        f"SELECT id, name FROM customers WHERE id = {i};\n"
        f"SELECT id, upper(ssn) AS v FROM customers WHERE id = {i};\n"
        f"SELECT id, upper(name) AS v FROM customers WHERE id = {i};\n"
        for i in ids
    )
    proc = contractor_psql(gw, contractor_dsn, script, "-A", "-t")
    lines = [line.split("|") for line in proc.stdout.splitlines() if line]
    by_id = {row[0]: row for row in CUSTOMERS}
    assert len(lines) == 4 * len(ids)
    for n, i in enumerate(ids):
        ssn_line, name_line, upper_ssn, upper_name = lines[4 * n : 4 * n + 4]
        assert ssn_line[0] == name_line[0] == upper_ssn[0] == upper_name[0] == str(i)
        assert by_id[i][3].upper() not in upper_ssn[1]
        assert upper_name[1] == by_id[i][1].upper()
        assert ssn_line[1].rstrip() != by_id[i][3] and ssn_line[1].rstrip().endswith(
            by_id[i][3][-4:]
        )
        assert name_line[1] == by_id[i][1]
    assert leaked([proc.stdout]) == []


def test_admin_sees_raw_values(admin_dsn: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, name, email, ssn, card_number, phone FROM customers ORDER BY id"
        ).fetchall()
    expected = [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in CUSTOMERS]
    assert [(r[0], r[1], r[2], r[3].strip(), r[4], r[5]) for r in rows] == expected
    # The leak check finds them: the contractors' tests would fail if masking missed one.
    assert len(leaked(flat(rows))) >= len(CUSTOMERS)


def test_styles_as_configured(contractor_dsn: str) -> None:
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, name, email, ssn, card_number, phone FROM customers ORDER BY id"
        ).fetchall()
        again = conn.execute("SELECT phone FROM customers ORDER BY id").fetchall()
    for (cid, name, email, ssn, card, phone), raw in zip(rows, CUSTOMERS, strict=True):
        assert cid == raw[0] and name == raw[1]  # unmasked columns are untouched
        assert email.endswith("@" + raw[2].split("@")[1]) and raw[2] not in email
        assert ssn.rstrip().endswith(raw[3][-4:]) and ssn != raw[3]
        assert card.endswith(raw[4][-4:]) and card != raw[4]
        assert phone != raw[5]
    # The keyed hash is deterministic: the same input masks to the same value (joins work).
    assert [r[5] for r in rows] == [r[0] for r in again]
    assert len({r[5] for r in rows}) == len({r[5] for r in CUSTOMERS})


def test_count_reveals_no_values_and_is_exact(contractor_dsn: str, admin_dsn: str) -> None:
    sql = "SELECT count(ssn), count(DISTINCT email) FROM customers"
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        masked = conn.execute(sql).fetchone()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        raw = conn.execute(sql).fetchone()
    assert masked == raw and masked is not None and masked[0] == len(CUSTOMERS)


def test_every_masked_type_decodes(gw: GatewayProcess, contractor_dsn: str) -> None:
    """Type-correct output: the binary decoders of asyncpg and psycopg accept every masked
    column (a wrong length or layout raises in the client)."""
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        text_row = conn.execute("SELECT * FROM mask_types").fetchone()
        binary_row = conn.execute("SELECT * FROM mask_types", binary=True).fetchone()

    async def run() -> Any:
        conn = await apg_connect(gw)
        try:
            return await conn.fetchrow("SELECT * FROM mask_types")
        finally:
            await conn.close()

    apg_row = asyncio.run(run())
    for row in (text_row, binary_row, tuple(apg_row)):
        assert row is not None
        values = list(row)
        assert "111-22-3333" not in repr(values)
        assert 42 not in values and 99 not in values and "secret" not in values
        assert b"\xde\xad\xbe\xef" not in [bytes(v) for v in values if isinstance(v, bytes)]


def test_strict_policy_refuses_unmaskable_result(strict_dsn: str) -> None:
    with psycopg.connect(strict_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute("SELECT arr FROM mask_types").fetchall()
        assert "cannot carry a masked value" in str(info.value)
        # The connection is in step: the next statement works.
        assert conn.execute("SELECT count(*) FROM mask_types").fetchone() == (1,)
        rows = conn.execute("SELECT ssn FROM customers LIMIT 3").fetchall()
        assert [r[0] for r in rows] == ["****"] * 3


def test_strict_policy_refuses_unknown_lineage(strict_dsn: str) -> None:
    with psycopg.connect(strict_dsn, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute("DECLARE c CURSOR FOR SELECT ssn FROM customers")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("FETCH 5 FROM c")
        conn.execute("ROLLBACK")


def test_cursor_fetch_is_masked(contractor_dsn: str) -> None:
    with psycopg.connect(contractor_dsn) as conn:
        conn.execute("DECLARE c CURSOR FOR SELECT name, ssn, email FROM customers")
        rows = conn.execute("FETCH 50 FROM c").fetchall()
    assert len(rows) == 50 and leaked(flat(rows)) == []


def test_server_side_cursor_and_prepared(contractor_dsn: str) -> None:
    with psycopg.connect(contractor_dsn) as conn:
        with conn.cursor(name="named") as cur:
            cur.execute("SELECT ssn, card_number FROM customers WHERE id > %s", (0,))
            rows = cur.fetchall()
        assert rows and leaked(flat(rows)) == []
        for _ in range(7):  # past psycopg's prepare threshold: Bind/Execute without Describe
            row = conn.execute(
                "SELECT ssn, email FROM customers WHERE id = %s", (3,), prepare=True
            ).fetchone()
            assert row is not None and leaked(row) == []


def test_sql_prepare_that_copies_masked_values_is_refused(contractor_dsn: str) -> None:
    """PREPARE is judged by the statement it prepares: set_config(.., email, ..) would copy
    the raw email into a setting that SHOW returns unmasked (found by review)."""
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "PREPARE leak AS SELECT set_config('my.x', email, false) "
                "FROM customers WHERE id = 1"
            )
        with pytest.raises(psycopg.Error):
            conn.execute("EXECUTE leak")  # never prepared
        setting = conn.execute("SELECT current_setting('my.x', true)").fetchone()
        assert setting is not None and leaked(setting) == []
        # A PREPARE that only reads masked columns works, and EXECUTE's rows are masked.
        conn.execute("PREPARE reads AS SELECT ssn, email FROM customers WHERE id = 1")
        rows = conn.execute("EXECUTE reads").fetchall()
        assert rows and leaked(flat(rows)) == []


def test_error_messages_do_not_echo_masked_values(contractor_dsn: str) -> None:
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        for sql in (
            "SELECT ssn::int FROM customers",
            "SELECT card_number::numeric::int FROM customers",
            "SELECT email::int FROM customers",
        ):
            with pytest.raises(psycopg.Error) as info:
                conn.execute(sql)
            diag = info.value.diag
            texts = [diag.message_primary, diag.message_detail, diag.context, str(info.value)]
            assert leaked(texts) == [], sql


# Values the server prints unquoted, or a quote added to break the blanking of quoted text.
_ECHOING_ERRORS = (
    """SELECT ('"' || ssn || '"')::int FROM customers WHERE id = 1""",
    """SELECT ('"' || regexp_replace(ssn, '(.)', '\\1 ', 'g') || '"')::int FROM customers""",
    "SELECT make_date(replace(ssn, '-', '')::int, 1, 1) FROM customers WHERE id = 1",
    "SELECT make_date(substr(card_number, 1, 8)::int, 1, 1) FROM customers WHERE id = 1",
    "SELECT chr(replace(ssn, '-', '')::int) FROM customers WHERE id = 1",
)


@pytest.mark.parametrize("sql", _ECHOING_ERRORS)
def test_a_masked_statements_error_message_is_withheld_whole(contractor_dsn: str, sql: str) -> None:
    """Servers put values in messages in too many ways for parts of a message to be kept:
    the message of a statement that reads masked columns is replaced, its code kept."""
    with (
        psycopg.connect(contractor_dsn, autocommit=True) as conn,
        pytest.raises(psycopg.Error) as info,
    ):
        conn.execute(sql)
    diag = info.value.diag
    assert diag.sqlstate and diag.sqlstate in (diag.message_primary or "")
    assert "withheld" in (diag.message_primary or "")
    said = " ".join(filter(None, [str(info.value), diag.message_detail, diag.context]))
    assert not any(part in said for part in ("943", "9 4 3", "5201959", "zoe")), said


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM customers c, generate_series(1, substr(replace(c.ssn, '-', ''), "
        "1, 5)::int) g WHERE c.id = 1",
        "SELECT c.id, (SELECT count(*) FROM generate_series(1, substr(replace(c.ssn, '-', ''), "
        "6, 4)::int)) FROM customers c",
        "SELECT 1 FROM generate_series(1, 1000000) LIMIT (SELECT substr(replace(ssn, '-', ''), "
        "1, 5)::int FROM customers WHERE id = 1)",
        # a set-returning function in the select list
        "SELECT count(*) FROM (SELECT generate_series(1, substr(ssn, 1, 3)::int) "
        "FROM customers WHERE id = 1) s",
        "SELECT count(*) FROM (SELECT regexp_split_to_table(ssn, '') FROM customers) s",
        # a recursive CTE bounded by the value
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < "
        "(SELECT substr(ssn, 1, 3)::int FROM customers WHERE id = 1)) SELECT count(*) FROM r",
        # generated rows picked by the value: every value in one query
        "SELECT c.id, (SELECT g FROM generate_series(0, 9999) g WHERE g = "
        "replace(c.ssn, '-', '')::bigint % 10000) FROM customers c",
        "SELECT c.id, g FROM customers c JOIN generate_series(0, 999) g ON g = "
        "substr(c.ssn, 1, 3)::int",
        # the share of rows sampled
        "SELECT count(*) FROM orders TABLESAMPLE BERNOULLI ((SELECT substr(ssn, 1, 2)::int "
        "FROM customers WHERE id = 1)) REPEATABLE (1)",
    ],
)
def test_masked_values_cannot_decide_how_many_rows_come_back(contractor_dsn: str, sql: str) -> None:
    """A count, or the row count itself, would carry the value."""
    with (
        psycopg.connect(contractor_dsn, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="how many rows"),
    ):
        conn.execute(sql)


def test_errors_at_move_and_commit_are_withheld_and_typos_are_not(contractor_dsn: str) -> None:
    """MOVE runs a cursor's query and COMMIT materialises a WITH HOLD cursor's: their
    errors may quote masked values. An unknown column or table is the client's own typo:
    its message is kept."""
    with psycopg.connect(contractor_dsn) as conn:
        for declare, end in (
            ("DECLARE mc CURSOR FOR SELECT ssn::int FROM customers WHERE id = 1", "MOVE 1 IN mc"),
            (
                "DECLARE hc CURSOR WITH HOLD FOR SELECT ssn::int FROM customers WHERE id = 1",
                "COMMIT",
            ),
        ):
            conn.execute(declare)
            with pytest.raises(psycopg.Error) as info:
                conn.execute(end)
            assert "withheld" in str(info.value) and "943" not in str(info.value), info.value
            conn.rollback()
        conn.execute("DECLARE hc2 CURSOR WITH HOLD FOR SELECT ssn::int FROM customers WHERE id = 1")
        with pytest.raises(psycopg.Error) as info:  # COMMIT behind another statement
            conn.execute("SELECT 1; COMMIT")
        assert "withheld" in str(info.value) and "943" not in str(info.value), info.value
        conn.rollback()
        with pytest.raises(psycopg.errors.UndefinedColumn, match="nosuchcol"):
            conn.execute("SELECT nosuchcol FROM orders")
        conn.rollback()
        # A value turned into a name is not a typo: the message is withheld.
        with pytest.raises(psycopg.errors.UndefinedTable) as info:
            conn.execute("SELECT quote_ident(ssn)::regclass FROM customers WHERE id = 1")
        assert "withheld" in str(info.value) and "943" not in str(info.value), info.value
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # a store of the value
            conn.execute("SELECT setseed(substr(ssn, 1, 3)::int / 1000.0) FROM customers")


def test_an_advisory_lock_key_cannot_carry_a_masked_value(contractor_dsn: str) -> None:
    """Every session sees advisory lock keys in pg_locks."""
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "SELECT pg_advisory_lock(replace(ssn, '-', '')::bigint) FROM customers WHERE id = 1"
            )
        rows = conn.execute("SELECT objid::text, objid FROM pg_catalog.pg_locks").fetchall()
        assert all(value in (None, "****") for row in rows for value in row), rows


def test_ddl_is_refused_while_masks_apply(strict_dsn: str) -> None:
    """DDL can move masked values where lineage does not look (a default calling a
    function, a trigger, inheritance, a rename)."""
    with psycopg.connect(strict_dsn, autocommit=True) as conn:
        for sql in (
            "ALTER TABLE customers RENAME COLUMN ssn TO tax_id",
            "CREATE TABLE rv_p (LIKE customers)",
            "CREATE FUNCTION rv_f() RETURNS text LANGUAGE sql AS 'SELECT ssn FROM customers'",
            "CREATE INDEX rv_ix ON customers ((ssn::int))",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="DDL"):
                conn.execute(sql)
        assert conn.execute("SELECT to_regclass('rv_p')").fetchone() == (None,)


def test_notify_payloads_are_masked(admin_dsn: str, contractor_dsn: str) -> None:
    with psycopg.connect(contractor_dsn, autocommit=True) as listener:
        listener.execute("LISTEN masked_channel")
        raw = CUSTOMERS[0]
        with psycopg.connect(admin_dsn, autocommit=True) as sender:
            sender.execute(f"NOTIFY masked_channel, 'customer {raw[2]} ssn {raw[3]}'")
        deadline = time.monotonic() + 10
        payloads = []
        for note in listener.notifies(timeout=10, stop_after=1):
            payloads.append(note.payload)
        assert time.monotonic() < deadline
    assert payloads and leaked(payloads) == []


def test_strict_copy_and_ctas_refused(strict_dsn: str) -> None:
    with psycopg.connect(strict_dsn, autocommit=True) as conn:
        for sql in (
            "CREATE TABLE stolen AS SELECT ssn FROM customers",
            "COPY customers TO STDOUT",
            "COPY (SELECT ssn FROM customers) TO STDOUT",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        assert conn.execute("SELECT to_regclass('stolen')").fetchone() == (None,)


def test_table_created_after_start_is_masked(admin_dsn: str, contractor_dsn: str) -> None:
    """A table the catalog did not know at login: its masked column is masked, on the very
    first select (the source is unknown, so masked whole) and after the reload (by rule)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS late_notes")
        conn.execute("CREATE TABLE late_notes (id int, secret_note text)")
        conn.execute("INSERT INTO late_notes VALUES (1, 'the vault code is 8841')")
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        for _ in range(2):
            rows = conn.execute("SELECT id, secret_note FROM late_notes").fetchall()
            assert rows[0][1] != "the vault code is 8841"
            time.sleep(0.5)


def test_recording_holds_only_masked_rows(gw: GatewayProcess) -> None:
    subject = "rec-check@contractor.example"
    dsn = gw.dsn(gw.token(subject, ("contractors",)), user=subject)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in QUERIES:
            conn.execute(sql).fetchall()
            conn.execute(sql, binary=True).fetchall()
    path: Path = session_file(gw, subject)
    data = path.read_bytes()
    found = [raw for raw in RAW_VALUES if raw.encode() in data]
    assert found == []
    assert b"****" in data  # the masked rows themselves are recorded


# -- protocol names the server and the gateway could see differently --------------------------

_LEAKY = "SELECT lower(email) AS v, ssn || '' AS s FROM customers ORDER BY id LIMIT 2"
_HARMLESS = "SELECT lower(name) AS v, name || '' AS s FROM customers ORDER BY id LIMIT 2"


def _no_raw_rows(messages: list[tuple[str, bytes]]) -> None:
    """Either refused or only masked rows: no raw value, nothing shaped like an SSN."""
    rows = _data(messages)
    text = [row.decode("utf-8", "replace") for row in rows]
    assert not leaked(text), text


@pytest.mark.parametrize("who", ["contractor", "strict"])
@pytest.mark.parametrize("case", ["failed_reparse", "sql_prepare", "sql_cursor"])
def test_names_the_server_changed_behind_the_gateway_stay_masked(
    gw: GatewayProcess, who: str, case: str
) -> None:
    """A Parse the server rejects, and SQL-level PREPARE / DEALLOCATE / DECLARE / CLOSE of
    a protocol name, leave the gateway's record of that name stale: the leaky text runs
    while the gateway would plan the harmless one. It must forget such names instead."""
    subject = CONTRACTOR if who == "contractor" else STRICT
    group = "contractors" if who == "contractor" else "strict"
    client = Wire(gw.host, gw.port)
    try:
        status, _ = client.login(gw.token(subject, (group,)), user=subject)
        assert status == "ok"
        if case == "failed_reparse":
            client.send(parse("s1", _LEAKY) + SYNC)
            client.until_ready()
            client.send(parse("s1", _HARMLESS) + SYNC)  # 42P05: the server keeps the first
            assert any(kind == "E" for kind, _ in client.until_ready())
            client.send(describe(b"S", "s1") + bind("", "s1") + execute("") + SYNC)
        elif case == "sql_prepare":
            client.send(parse("s2", _HARMLESS) + SYNC)
            client.until_ready()
            client.query(f"DEALLOCATE s2; PREPARE s2 AS {_LEAKY}")
            client.send(describe(b"S", "s2") + bind("", "s2") + execute("") + SYNC)
        else:
            client.query("BEGIN")
            statement = parse("s3", _HARMLESS) + describe(b"S", "s3")
            client.send(statement + bind("p1", "s3") + SYNC)
            client.until_ready()
            client.query(f"CLOSE p1; DECLARE p1 CURSOR FOR {_LEAKY}")
            client.send(describe(b"P", "p1") + execute("p1") + SYNC)
        _no_raw_rows(client.until_ready())
    finally:
        client.close()


# -- messages the server discards: the gateway must not lose step with it -----------------

_SECRET = "SELECT id, ssn FROM customers ORDER BY id LIMIT 3"  # masked for both groups


def _login(gw: GatewayProcess, who: str) -> Wire:
    subject, group = (CONTRACTOR, "contractors") if who == "contractor" else (STRICT, "strict")
    client = Wire(gw.host, gw.port)
    status, _ = client.login(gw.token(subject, (group,)), user=subject)
    assert status == "ok"
    return client


def _masked_or_ended(client: Wire, sql: str) -> None:
    """The query's rows come back masked, or the gateway ended the session: never raw."""
    try:
        messages = client.query(sql)
    except (EOFError, OSError):
        return
    assert _data(messages), messages  # the session goes on: its rows are masked
    _no_raw_rows(messages)


@pytest.mark.parametrize("who", ["contractor", "strict"])
def test_a_query_the_server_skips_after_an_error_cannot_shift_results(
    gw: GatewayProcess, who: str
) -> None:
    """After an extended-protocol error the server discards everything up to the next
    Sync, a simple Query too. A gateway that expected an answer to that Query would give
    the next query's rows to no statement (unmasked, unlimited, unrecorded)."""
    client = _login(gw, who)
    try:
        client.send(parse("", "SELEC 1") + FLUSH)
        assert client.until("E")[-1][0] == "E"
        client.send(query("SELECT 1") + SYNC)
        assert [kind for kind, _ in client.until_ready()] == ["Z"]  # the Query was skipped
        _masked_or_ended(client, _SECRET)
        _masked_or_ended(client, _SECRET)
    finally:
        client.close()


def test_a_parse_the_server_skips_does_not_rename_a_statement(gw: GatewayProcess) -> None:
    client = _login(gw, "contractor")
    try:
        leaky = "SELECT translate(ssn, '0123456789', 'abcdefghij') AS v FROM customers "
        client.send(parse("s2", leaky + "ORDER BY id LIMIT 3") + SYNC)
        client.until_ready()
        client.send(parse("", "SELEC 1") + FLUSH)
        client.until("E")
        client.send(parse("s2", "SELECT 'abc' AS v") + SYNC)  # discarded by the server
        client.until_ready()
        client.send(describe(b"S", "s2") + bind("", "s2") + execute() + SYNC)
        out = client.until_ready()
        assert _data(out) and all(b"****" in row for row in _data(out)), out
    finally:
        client.close()


def test_syncs_sent_inside_copy_from_stdin_cannot_shift_results(gw: GatewayProcess) -> None:
    """The server ignores Sync during COPY FROM STDIN."""
    client = _login(gw, "strict")
    try:
        client.send(query("COPY copied FROM STDIN"))
        assert client.until("G")[-1][0] == "G"
        client.send(frontend(b"d", b"1\n") + SYNC + SYNC + COPY_DONE)
        assert [kind for kind, _ in client.until_ready()] == ["C", "Z"]
        _masked_or_ended(client, _SECRET)
    finally:
        client.close()


def test_copy_from_stdin_in_the_extended_protocol_keeps_step(gw: GatewayProcess) -> None:
    """What libpq sends for a COPY with the extended protocol: Parse, Bind, Describe,
    Execute and Sync at once (that Sync is read by the copy-in and ignored), the data,
    CopyDone and a second Sync. One ReadyForQuery comes back, and the session goes on
    with its results masked."""
    client = _login(gw, "strict")
    try:
        copy = parse("", "COPY copied FROM STDIN") + bind("", "")
        client.send(copy + describe(b"P", "") + execute() + SYNC)
        assert [kind for kind, _ in client.until("G")] == ["1", "2", "n", "G"]
        client.send(frontend(b"d", b"1\n2\n") + COPY_DONE + SYNC)
        assert client.until_ready() == [("C", b"COPY 2\0"), ("Z", b"I")]
        _masked_or_ended(client, _SECRET)
        assert _data(client.query("SELECT 1"))  # not ended
    finally:
        client.close()


def test_messages_pipelined_into_a_copy_in_end_the_session(gw: GatewayProcess) -> None:
    """A message the server would read as part of a copy-in (or refuse there) in ways the
    gateway cannot follow: the session is ended with a protocol error."""
    client = _login(gw, "strict")
    try:
        client.send(query("COPY copied FROM STDIN") + query(_SECRET))
        out = []
        with contextlib.suppress(EOFError, OSError):
            while True:
                out.append(client.message())
        errors = [body for kind, body in out if kind == "E"]
        assert errors and b"08P01" in errors[-1] and b"COPY" in errors[-1]
        assert not _data(out)
    finally:
        client.close()


def test_the_audit_line_names_what_was_masked(gw: GatewayProcess, contractor_dsn: str) -> None:
    """Column masks by source column; columns only the content detectors screen, marked
    as such (their values are replaced only where a detector matches)."""
    import json

    sql = "SELECT name, ssn FROM customers ORDER BY id LIMIT 2"
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        conn.execute(sql).fetchall()
    path = gw.state_dir / "audit.log"
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        mine = [
            x
            for x in lines
            if x.get("event") == "statement"
            and x["subject"] == CONTRACTOR
            and x["text"].startswith("SELECT name, ssn FROM customers")
        ]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert mine, lines[-3:]
    assert mine[-1]["masked"] == ["public.customers.name (detectors)", "public.customers.ssn"]


@pytest.mark.parametrize(
    "copy", ["COPY customers FROM STDIN (FREEZE)", "COPY customer_contacts FROM STDIN"]
)
def test_a_copy_failing_after_copy_in_response_cannot_shift_results(
    gw: GatewayProcess, copy: str
) -> None:
    """These fail after the server's CopyInResponse and before it reads anything: it then
    answers the Sync sent behind the COPY, which a copy-in would have ignored. The
    gateway cannot tell which happened, so the session ends; the harmless statement the
    gateway last saw parsed must never stand for the leaky one the server runs next."""
    client = _login(gw, "strict")
    try:
        client.send(parse("", "SELECT 'abc' || '' AS v") + SYNC)
        client.until_ready()
        client.send(parse("c", copy) + bind("", "c") + execute() + SYNC)
        seen: list[tuple[str, bytes]] = []
        with contextlib.suppress(EOFError, OSError):
            client.send(parse("", "SELECT ssn || '' AS v FROM customers ORDER BY id") + SYNC)
            client.send(describe(b"S", "") + bind("", "") + execute() + SYNC)
            while True:
                seen.append(client.message())
        assert not _data(seen), seen
        assert any(kind == "E" and b"08P01" in body for kind, body in seen), seen
    finally:
        client.close()
