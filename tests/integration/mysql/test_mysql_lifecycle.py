"""Revocations and the kill switch through the real gateway with PyMySQL against real
MariaDB (issue 8): a revocation ends a running statement at once with ERR 1927, a revoked
identity cannot log in (ERR 1045), an administrator kills idle and paused sessions."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pymysql
import pytest

from gateway.recording.schema import End
from protocols.mysql.commands import ChangeUser, build_com_change_user
from protocols.mysql.constants import Capability

from ..admin_client import AdminClient
from ..conftest import free_port
from ..test_recording_e2e import frames, session_file
from .conftest import MyGateway, StartMyGateway
from .mywire import Wire

pytestmark = pytest.mark.integration

ADMIN = ("root@example.com", ("gateway-admins",))
ER_CONNECTION_KILLED = 1927

POLICIES = """
[[policies]]
name = "admins"
groups = ["dba"]
targets = ["app-my"]
allow = ["*", "unknown"]

[[policies]]
name = "appr"
groups = ["appr"]
targets = ["app-my"]
allow = ["read", "session", "transaction"]
max_rows = 100
on_limit = "approval"
approvers = ["dba-leads"]
approval_timeout = "60s"
"""


@pytest.fixture(scope="module")
def admin_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gw(start_mysql_gateway: StartMyGateway, admin_port: int) -> MyGateway:
    extra = f"""
[admin]
listen = "127.0.0.1:{admin_port}"
groups = ["gateway-admins"]
allow_plaintext = true
"""
    return start_mysql_gateway(policies=POLICIES, extra=extra)


@pytest.fixture(scope="module")
def admin(gw: MyGateway, admin_port: int) -> AdminClient:
    client = AdminClient(f"http://127.0.0.1:{admin_port}", gw.token(*ADMIN))
    deadline = time.monotonic() + 10
    while True:
        try:
            client.call("GET", "/healthz")
            return client
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def connect(gw: MyGateway, user: str, group: str = "dba") -> pymysql.Connection[Any]:
    return pymysql.connect(
        **gw.pymysql_kwargs(gw.token(user, (group,)), user=user), autocommit=True
    )


def query(conn: pymysql.Connection[Any], sql: str) -> list[Any]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def live(admin: AdminClient, subject: str) -> list[dict[str, Any]]:
    status, body = admin.call("GET", "/api/sessions")
    assert status == 200, body
    return [s for s in body["sessions"] if s["subject"] == subject]


def wait_running(admin: AdminClient, subject: str, needle: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for session in live(admin, subject):
            if needle in (session["current_statement"] or ""):
                return session
        time.sleep(0.05)
    raise AssertionError(f"{subject} is not running {needle!r}")


# "At once": the statements these tests end would run for 30 s or more (a SLEEP, an
# approval timeout); a few seconds leave room for a slow shared host and still tell an
# immediate end from one that waited for the statement.
AT_ONCE = 5.0


def ended_within(future: Future[Any], started: float, limit: float = AT_ONCE) -> BaseException:
    """The exception the client got, asserting it came within ``limit`` seconds."""
    exc = future.exception(timeout=15)
    assert exc is not None
    assert time.monotonic() - started < limit, f"took {time.monotonic() - started:.2f}s"
    return exc


def test_revoking_a_subject_ends_its_running_statement(
    gw: MyGateway,
    admin: AdminClient,
    pool: ThreadPoolExecutor,
    direct_kwargs: dict[str, Any],
) -> None:
    user = "my-contractor@example.com"
    sleep = "SELECT SLEEP(30)"
    conn = connect(gw, user)
    bystander = connect(gw, "my-colleague@example.com")
    future = pool.submit(query, conn, sleep)
    session = wait_running(admin, user, "SLEEP")
    assert session["protocol"] == "mysql" and session["target"] == "app-my"

    started = time.monotonic()
    status, answer = admin.call(
        "POST", "/api/revocations", {"subject": user, "reason": "offboarded"}
    )
    assert status == 201 and answer["sessions_ended"] == [session["session_id"]]
    exc = ended_within(future, started)
    assert isinstance(exc, pymysql.err.OperationalError), exc
    assert exc.args[0] == ER_CONNECTION_KILLED
    assert "session ended by an administrator: offboarded" in exc.args[1]
    conn.close()
    # The statement does not go on running on the server (KILL QUERY upstream).
    with pymysql.connect(**direct_kwargs) as direct:
        deadline = time.monotonic() + 5
        while query(
            direct, f"SELECT id FROM information_schema.PROCESSLIST WHERE INFO = '{sleep}'"
        ):
            assert time.monotonic() < deadline, "the upstream statement is still running"
            time.sleep(0.1)
    last = frames(session_file(gw, user))[-1]  # type: ignore[arg-type]
    assert isinstance(last, End) and "offboarded" in last.reason
    assert query(bystander, "SELECT 1") == [(1,)]
    bystander.close()

    # A revoked identity cannot log in: ERR 1045 (28000) with a clear message.
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(gw, user)
    assert info.value.args[0] == 1045
    assert "access revoked by an administrator" in info.value.args[1]


def test_kill_an_idle_session(gw: MyGateway, admin: AdminClient) -> None:
    user = "my-idle@example.com"
    conn = connect(gw, user)
    assert query(conn, "SELECT 1") == [(1,)]
    [session] = live(admin, user)
    # PyMySQL's own SET AUTOCOMMIT at connect, then SELECT 1 (one row).
    assert session["statements"] == 2 and session["rows"] == 1 and session["bytes"] > 0
    assert session["current_statement"] is None
    status, body = admin.call(
        "POST", f"/api/sessions/{session['session_id']}/kill", {"reason": "maintenance"}
    )
    assert status == 200 and body["killed"] is True
    # The ERR is read as the answer to the client's next command.
    with pytest.raises(pymysql.err.OperationalError) as info:
        query(conn, "SELECT 2")
    assert info.value.args[0] == ER_CONNECTION_KILLED
    assert "maintenance" in info.value.args[1]
    conn.close()
    assert live(admin, user) == []
    connect(gw, user).close()  # killed, not revoked


def test_kill_during_change_user_sends_the_err_in_sequence(
    gw: MyGateway, admin: AdminClient
) -> None:
    # COM_CHANGE_USER (seq 0) is answered with an AuthSwitchRequest (seq 1); the client's
    # reply will be seq 2, so an ERR that ends the session meanwhile must be seq 3: the
    # client reads it after writing its reply. (Seq 1, right between commands, would be
    # "packets out of order" to it.)
    user = "my-change-user@example.com"
    wire = Wire(gw.host, gw.port)
    try:
        wire.login(gw.token(user, ("dba",)))
        [session] = live(admin, user)
        change = ChangeUser(user.encode(), b"", b"app", 45, b"mysql_native_password")
        wire.command(build_com_change_user(change, wire.caps | Capability.CLIENT_SSL))
        seq, switch = wire.packet()
        assert seq == 1 and switch[:1] == b"\xfe", switch  # AuthSwitchRequest
        status, _ = admin.call(
            "POST", f"/api/sessions/{session['session_id']}/kill", {"reason": "mid-change"}
        )
        assert status == 200
        seq, err = wire.error()
        assert (seq, err.errno) == (3, ER_CONNECTION_KILLED)
        assert "mid-change" in err.text
        assert wire.closed()
    finally:
        wire.close()


def test_kill_a_result_paused_for_approval(
    gw: MyGateway, admin: AdminClient, pool: ThreadPoolExecutor
) -> None:
    user = "my-paused@example.com"
    approver = AdminClient(admin.base_url, gw.token("bob@example.com", ("dba-leads",)))
    conn = connect(gw, user, "appr")
    future = pool.submit(query, conn, "SELECT seq FROM seq_1_to_5000")
    request = approver.wait_pending(user)
    [session] = live(admin, user)
    assert session["rows"] >= 100
    started = time.monotonic()
    status, _ = admin.call("POST", f"/api/sessions/{session['session_id']}/kill", {"reason": "no"})
    assert status == 200
    exc = ended_within(future, started)
    # The ERR takes the place of the next row, with the sequence id the client expects.
    assert isinstance(exc, pymysql.err.OperationalError), exc
    assert exc.args[0] == ER_CONNECTION_KILLED
    conn.close()
    deadline = time.monotonic() + 5
    while any(r["id"] == request["id"] for r in approver.pending()):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_token_expiry_ends_a_running_statement(
    gw: MyGateway, pool: ThreadPoolExecutor, direct_kwargs: dict[str, Any]
) -> None:
    user = "my-short-lived@example.com"
    sleep = "SELECT SLEEP(29)"
    token = gw.token(user, ("dba",), ttl=3)
    conn = pymysql.connect(**gw.pymysql_kwargs(token, user=user), autocommit=True)
    started = time.monotonic()
    future = pool.submit(query, conn, sleep)
    exc = future.exception(timeout=15)
    assert time.monotonic() - started < 5
    assert isinstance(exc, pymysql.err.OperationalError), exc
    assert exc.args == (ER_CONNECTION_KILLED, "session ended: token expired")
    conn.close()
    with pymysql.connect(**direct_kwargs) as direct:
        deadline = time.monotonic() + 5
        while query(
            direct, f"SELECT id FROM information_schema.PROCESSLIST WHERE INFO = '{sleep}'"
        ):
            assert time.monotonic() < deadline, "the upstream statement is still running"
            time.sleep(0.1)


def test_the_statement_a_kill_interrupts_has_its_audit_line(
    gw: MyGateway, admin: AdminClient, pool: ThreadPoolExecutor
) -> None:
    import json

    user = "my-audit-killed@example.com"
    conn = connect(gw, user)
    future = pool.submit(query, conn, "SELECT SLEEP(30)")
    session = wait_running(admin, user, "SLEEP")
    status, _ = admin.call("POST", f"/api/sessions/{session['session_id']}/kill", {"reason": "x"})
    assert status == 200
    assert isinstance(future.exception(timeout=15), pymysql.err.OperationalError)
    conn.close()
    path = gw.process.state_dir / "audit.log"
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        if any(x.get("event") == "session_end" and x.get("subject") == user for x in lines):
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    mine = [x for x in lines if x.get("event") == "statement" and x["subject"] == user]
    assert [x["text"] for x in mine][-1] == "SELECT SLEEP(?)"
    assert mine[-1]["error"] == "interrupted"
    assert mine[-1]["session_id"] == session["session_id"]


def test_revoking_mid_load_data_local_keeps_nothing_of_it(
    gw: MyGateway, admin: AdminClient, pool: ThreadPoolExecutor, tmp_path: Any
) -> None:
    """The client streams its file (a FIFO the test feeds): the revocation lands mid-upload;
    the server must not keep the rows already sent."""
    user = "my-loader@example.com"
    with connect(gw, "my-setup@example.com") as setup:
        query(setup, "DROP TABLE IF EXISTS ld_revoked")
        query(setup, "CREATE TABLE ld_revoked (id INT) ENGINE=InnoDB")
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    kwargs = gw.pymysql_kwargs(gw.token(user, ("dba",)), user=user)
    conn = pymysql.connect(**kwargs, autocommit=True, local_infile=True)
    future = pool.submit(query, conn, f"LOAD DATA LOCAL INFILE '{fifo}' INTO TABLE ld_revoked")
    with open(fifo, "w") as feed:  # opens once the client reads the file
        feed.write("".join(f"{i}\n" for i in range(20_000)))
        feed.flush()
        session = wait_running(admin, user, "LOAD DATA")
        time.sleep(0.3)  # those rows reached the server
        status, _ = admin.call("POST", "/api/revocations", {"subject": user, "reason": "stop"})
        assert status == 201
        with contextlib.suppress(BrokenPipeError):  # the client may have stopped reading
            feed.write("".join(f"{i}\n" for i in range(20_000, 40_000)))
    assert isinstance(future.exception(timeout=15), pymysql.err.MySQLError)
    conn.close()
    with connect(gw, "my-check@example.com") as check:
        assert query(check, "SELECT COUNT(*) FROM ld_revoked") == [(0,)]
    last = frames(session_file(gw, user))[-1]  # type: ignore[arg-type]
    assert isinstance(last, End) and "stop" in last.reason
    assert session["session_id"]
