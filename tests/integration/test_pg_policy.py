"""Statement policy through the real gateway, with real clients and PostgreSQL.

The contractors' policy allows read, session and transaction statements; admins allow
everything (tests/integration/conftest.py). Every refusal is checked three ways: the
client gets SQLSTATE 42501 naming the rule, the database (read directly, not through
the gateway) shows no effect, and the same connection keeps working.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from gateway.embedded.postgres import PostgresServer
from gateway.recording.reader import RecordingReader
from gateway.recording.schema import Done, End, Start, Stmt
from protocols.postgres.messages import parse_error_fields

from .conftest import GatewayProcess, StartGateway
from .pgwire import FLUSH, SYNC, Wire, bind, execute, parse

pytestmark = pytest.mark.integration

CONTRACTOR = "pat@contractor.example"


@pytest.fixture(scope="module")
def gw(start_gateway: StartGateway) -> GatewayProcess:
    return start_gateway()


@pytest.fixture(scope="module")
def direct_dsn(pg_server: PostgresServer, pg_gateway_role: tuple[str, str]) -> str:
    role, _ = pg_gateway_role
    return pg_server.dsn("app", user=role)


@pytest.fixture(scope="module")
def admin_dsn(gw: GatewayProcess) -> str:
    return gw.dsn(gw.token("root@example.com", ("dba",)))


@pytest.fixture(scope="module")
def contractor_dsn(gw: GatewayProcess) -> str:
    return gw.dsn(gw.token(CONTRACTOR, ("contractors",)), user=CONTRACTOR)


@pytest.fixture(autouse=True)
def scratch(admin_dsn: str) -> None:
    """A small table the refused statements would damage (made through the gateway by an
    admin: allow "*" covers DDL)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS policy_scratch")
        conn.execute("CREATE TABLE policy_scratch (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO policy_scratch VALUES (1, 'one'), (2, 'two'), (3, 'three')")


def direct_rows(direct_dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(direct_dsn) as conn:
        return conn.execute("SELECT id, note FROM policy_scratch ORDER BY id").fetchall()


ORIGINAL = [(1, "one"), (2, "two"), (3, "three")]

REFUSED = [
    ("DROP TABLE policy_scratch", "ddl"),
    ("DELETE FROM policy_scratch", "write"),
    ("UPDATE policy_scratch SET note = 'x' WHERE id = 1", "write"),
    ("TRUNCATE policy_scratch", "write"),
    ("/* harmless */ DrOp /**/ TaBlE policy_scratch", "ddl"),
    ("SELECT 1; DELETE FROM policy_scratch", "write"),
    ("EXPLAIN ANALYZE DELETE FROM policy_scratch", "write"),
    ("WITH gone AS (DELETE FROM policy_scratch RETURNING *) SELECT * FROM gone", "write"),
    ("SELECT * INTO policy_copy FROM policy_scratch", "ddl"),
    ("DO $$ BEGIN DELETE FROM policy_scratch; END $$", "dynamic"),
    ("SELECT pg_read_file('/etc/passwd')", "file"),
    ("COPY policy_scratch TO STDOUT", "export"),
    ('DELETE FROM "policy_scratch"', "write"),
]


# Simple protocol for all; extended (Parse) for single statements (a Parse takes one).
CASES = [(sql, cls, False) for sql, cls in REFUSED] + [
    (sql, cls, True) for sql, cls in REFUSED if "; " not in sql
]


@pytest.mark.parametrize(
    ("sql", "cls", "prepare"),
    CASES,
    ids=[f"{'extended' if p else 'simple'}: {s}" for s, _, p in CASES],
)
def test_contractor_refusals_have_no_effect(
    contractor_dsn: str, direct_dsn: str, sql: str, cls: str, prepare: bool
) -> None:
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute(sql, prepare=prepare)
        message = info.value.diag.message_primary or ""
        assert "denied" in message or "refused" in message, message
        assert cls in message, message  # the rule names the class that was not allowed
        # The same connection keeps working.
        assert conn.execute("SELECT count(*) FROM policy_scratch").fetchone() == (3,)
    assert direct_rows(direct_dsn) == ORIGINAL


def test_benign_statements_pass(contractor_dsn: str) -> None:
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT 'DROP DATABASE app'").fetchone() == ("DROP DATABASE app",)
        assert conn.execute('SELECT 1 AS "delete from x"').fetchone() == (1,)
        row = conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) "
            "SELECT sum(i), max(i) OVER () FROM n GROUP BY i ORDER BY 1 DESC LIMIT 1"
        ).fetchone()
        assert row == (5, 5)
        assert conn.execute("""SELECT '{"a": {"b": 2}}'::jsonb #>> '{a,b}'""").fetchone() == ("2",)
        conn.execute("SET statement_timeout = '5s'")  # session class
        assert conn.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)


def test_refusal_inside_a_transaction_aborts_it_like_the_server(
    contractor_dsn: str, direct_dsn: str
) -> None:
    with psycopg.connect(contractor_dsn) as conn:  # not autocommit: psycopg opens BEGIN
        assert conn.execute("SELECT count(*) FROM policy_scratch").fetchone() == (3,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM policy_scratch WHERE id = 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert direct_rows(direct_dsn) == ORIGINAL


def test_pipeline_keeps_order_and_resynchronises(contractor_dsn: str, direct_dsn: str) -> None:
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        with conn.pipeline() as p:
            c1 = conn.execute("SELECT 1")
            c2 = conn.execute("DELETE FROM policy_scratch WHERE id = %s", (2,))
            c3 = conn.execute("SELECT 3")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                p.sync()
        assert c1.fetchone() == (1,)
        del c2, c3  # skipped by the server after the error, as without the gateway
        assert conn.execute("SELECT 4").fetchone() == (4,)
    assert direct_rows(direct_dsn) == ORIGINAL


def test_asyncpg_prepared_refusal(gw: GatewayProcess, direct_dsn: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(
            gw.url(gw.token(CONTRACTOR, ("contractors",)), user="pat"), ssl="require"
        )
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.prepare("DELETE FROM policy_scratch WHERE id = $1")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DROP TABLE policy_scratch")
            stmt = await conn.prepare("SELECT note FROM policy_scratch WHERE id = $1")
            assert await stmt.fetchval(3) == "three"
        finally:
            await conn.close()

    asyncio.run(run())
    assert direct_rows(direct_dsn) == ORIGINAL


def test_copy_from_stdin_refused(contractor_dsn: str, direct_dsn: str) -> None:
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege),
            conn.cursor().copy("COPY policy_scratch FROM STDIN") as copy,
        ):
            copy.write_row((9, "nine"))
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert direct_rows(direct_dsn) == ORIGINAL


def test_admin_may_run_ddl_and_writes(admin_dsn: str, direct_dsn: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM policy_scratch WHERE id = 3")
        conn.execute("ALTER TABLE policy_scratch ADD COLUMN extra int")
    assert direct_rows(direct_dsn) == ORIGINAL[:2]


def test_fast_path_function_call_refused(gw: GatewayProcess) -> None:
    client = Wire(gw.host, gw.port)
    try:
        status, _ = client.login(gw.token(CONTRACTOR, ("contractors",)), user=CONTRACTOR)
        assert status == "ok"
        # FunctionCall (function OID, no argument formats, no arguments, text result):
        # the OID does not matter, the call must not reach the server.
        body = struct.pack("!Ihhh", 1, 0, 0, 0)
        client.send(b"F" + struct.pack("!I", len(body) + 4) + body)
        kinds = []
        while True:
            mtype, payload = client.message()
            kinds.append(mtype)
            if mtype == "E":
                assert parse_error_fields(payload)["C"] == "42501"
            if mtype == "Z":
                break
        assert kinds == ["E", "Z"]
        assert [m for m, _ in client.query("SELECT 1")][-1] == "Z"
    finally:
        client.close()


def test_psql_script_with_a_refused_statement(gw: GatewayProcess, direct_dsn: str) -> None:
    token = gw.token(CONTRACTOR, ("contractors",))
    script = "SELECT 41 + 1;\nDROP TABLE policy_scratch;\nSELECT 'still here';\n"
    proc = subprocess.run(
        ["psql", "-X", "-At", gw.dsn(token, user=CONTRACTOR)],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "42" in proc.stdout and "still here" in proc.stdout
    assert "denied" in proc.stderr or "refused" in proc.stderr
    assert direct_rows(direct_dsn) == ORIGINAL


def test_refusals_are_recorded_with_their_rule(gw: GatewayProcess) -> None:
    subject = "rec-policy@contractor.example"
    dsn = gw.dsn(gw.token(subject, ("contractors",)), user=subject)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE policy_scratch")
    path = _recording(gw.session_dir, subject)
    with RecordingReader(path) as reader:
        frames = [f for _, f in reader.logical_frames()]
    stmts = {f.stmt: f for f in frames if isinstance(f, Stmt)}
    done = {f.stmt: f for f in frames if isinstance(f, Done)}
    refused = [s for s in stmts.values() if s.text == "DROP TABLE policy_scratch"]
    assert len(refused) == 1 and refused[0].decision == "deny"
    assert refused[0].rule is not None and "ddl" in refused[0].rule
    error = done[refused[0].stmt].error
    assert error is not None and error.code == "42501"
    allowed = [s for s in stmts.values() if s.text == "SELECT 1"]
    assert allowed and allowed[0].decision == "allow" and allowed[0].rule
    end = frames[-1]
    assert isinstance(end, End) and end.denied == 1


def _recording(session_dir: Path, subject: str) -> Path:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for path in sorted(session_dir.glob("*.gwrec")):
            try:
                with RecordingReader(path) as reader:
                    frames = [f for _, f in reader.logical_frames()]
            except Exception:
                continue
            ours = frames and isinstance(frames[0], Start) and frames[0].subject == subject
            if ours and isinstance(frames[-1], End):
                return path
        time.sleep(0.1)
    raise AssertionError(f"no complete recording for {subject}")


def test_logins_the_lexer_cannot_follow_are_refused(gw: GatewayProcess) -> None:
    # In SJIS the bytes 0x95 0x5C are one character; read as UTF-8 the 0x5C is a
    # backslash that could end a literal early. With standard_conforming_strings off a
    # backslash escapes a quote. Either way the gateway would read statements
    # differently from the server, so such sessions do not start.
    token = gw.token(CONTRACTOR, ("contractors",))
    for kw in ({"client_encoding": "SJIS"}, {"options": "-c standard_conforming_strings=off"}):
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(gw.dsn(token, user=CONTRACTOR, **kw))
        assert "gateway cannot check statements" in str(info.value)


def test_session_that_turns_off_standard_strings_is_ended(admin_dsn: str) -> None:
    # Only a policy allowing "privilege" may run it (admins: "*"); the session ends.
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
            conn.execute("SET standard_conforming_strings = off")
        assert "standard_conforming_strings" in str(info.value)
        assert conn.closed or conn.info.status == psycopg.pq.ConnStatus.BAD


def test_contractor_cannot_change_the_settings_the_lexer_needs(contractor_dsn: str) -> None:
    with psycopg.connect(contractor_dsn, autocommit=True) as conn:
        for sql in (
            "SET client_encoding = 'SJIS'",
            "SET standard_conforming_strings = off",
            "SELECT set_config('client_encoding', 'SJIS', false)",
            "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        conn.execute("SET client_encoding = 'UTF8'")
        assert conn.execute("SELECT 'ソ'").fetchone() == ("ソ",)


def test_backslash_text_pipelined_behind_a_settings_change_is_refused(
    gw: GatewayProcess,
) -> None:
    # Admins may change standard_conforming_strings ("*" includes privilege). A query
    # pipelined in the same write would be read by the server under the new value, so
    # the gateway refuses text with a backslash until the change is answered; the
    # session then ends because the new value cannot be checked.
    subject = "pipeline-admin@example.com"
    client = Wire(gw.host, gw.port)
    try:
        status, _ = client.login(gw.token(subject, ("dba",)), user=subject)
        assert status == "ok"
        first = b"SET standard_conforming_strings = off\0"
        second = b"SELECT 'x\\'' ; SELECT 1 --'\0"
        client.send(
            b"Q"
            + struct.pack("!I", len(first) + 4)
            + first
            + b"Q"
            + struct.pack("!I", len(second) + 4)
            + second
        )
        assert client.closed(timeout=10)
    finally:
        client.close()
    refused = _refused_texts(gw, subject)
    assert len(refused) == 1 and refused[0].decision == "deny"
    assert refused[0].rule == "unknown:settings_in_flight"


def _refused_texts(gw: GatewayProcess, subject: str) -> list[Stmt]:
    """The recorded statements of the subject's session whose text starts "SELECT 'x"."""
    with RecordingReader(_recording(gw.session_dir, subject)) as reader:
        stmts = [f for _, f in reader.logical_frames() if isinstance(f, Stmt)]
    return [s for s in stmts if s.text.startswith("SELECT 'x")]


def _msg(mtype: bytes, body: bytes) -> bytes:
    return mtype + struct.pack("!I", len(body) + 4) + body


def test_backslash_text_behind_a_bound_settings_statement_is_refused(
    gw: GatewayProcess,
) -> None:
    # The same, through the extended protocol: the SET is parsed (and answered) first;
    # the Bind that runs it later is pipelined with the backslash text.
    subject = "pipeline-admin-extended@example.com"
    client = Wire(gw.host, gw.port)
    try:
        status, _ = client.login(gw.token(subject, ("dba",)), user=subject)
        assert status == "ok"
        name = b"scs_off"
        client.send(
            _msg(b"P", name + b"\0SET standard_conforming_strings = off\0" + b"\0\0")
            + _msg(b"S", b"")
        )
        kinds = []
        while not kinds or kinds[-1] != "Z":
            kinds.append(client.message()[0])
        assert kinds == ["1", "Z"]
        bind = b"\0" + name + b"\0" + struct.pack("!hhh", 0, 0, 0)
        execute = b"\0" + struct.pack("!i", 0)
        query = b"SELECT 'x\\'' ; SELECT 1 --'\0"
        client.send(_msg(b"B", bind) + _msg(b"E", execute) + _msg(b"S", b"") + _msg(b"Q", query))
        assert client.closed(timeout=10)
    finally:
        client.close()
    refused = _refused_texts(gw, subject)
    assert len(refused) == 1 and refused[0].rule == "unknown:settings_in_flight"


def test_a_settings_statement_stays_one_when_the_server_skips_its_reparse(
    gw: GatewayProcess,
) -> None:
    """Parsing the name again for a harmless statement does not make it harmless when
    the server discards that Parse (it skips to the next Sync after an error): the Bind
    still runs the SET, so backslash text pipelined behind it is still refused."""
    subject = "pipeline-admin-reparse@example.com"
    client = Wire(gw.host, gw.port)
    try:
        status, _ = client.login(gw.token(subject, ("dba",)), user=subject)
        assert status == "ok"
        client.send(parse("scs_off", "SET standard_conforming_strings = off") + SYNC)
        client.until_ready()
        client.send(parse("", "SELEC 1") + FLUSH)
        client.until("E")
        client.send(parse("scs_off", "SELECT 1") + SYNC)  # discarded by the server
        client.until_ready()
        query = b"SELECT 'x\\'' ; SELECT 1 --'\0"
        client.send(bind("", "scs_off") + execute() + SYNC + _msg(b"Q", query))
        assert client.closed(timeout=10)
    finally:
        client.close()
    refused = _refused_texts(gw, subject)
    assert len(refused) == 1 and refused[0].rule == "unknown:settings_in_flight"


# -- startup parameters: settings the server applies at login ------------------------------


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ("-c role=pg_read_all_data", "role"),
        ("-c session_authorization=postgres", "session_authorization"),
        ("--search-path=pg_catalog -d 5", None),  # a server switch: refused whole
        ("-c search_path=public", ""),  # a harmless session setting: allowed
        ("-c application_name=tool -c statement_timeout=5s", ""),
    ],
)
def test_startup_options_are_decided_as_the_settings_they_are(
    gw: GatewayProcess, options: str, refused: str | None
) -> None:
    """libpq's options (PGOPTIONS) and other startup parameters set what SET would: a
    role change at connect time is refused like SET ROLE (class privilege)."""
    dsn = gw.dsn(gw.token(CONTRACTOR, ("contractors",)), user=CONTRACTOR)
    if refused == "":
        with psycopg.connect(dsn, options=options) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        return
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(dsn, options=options)
    assert "startup" in str(info.value)
    if refused:
        assert refused in str(info.value)
