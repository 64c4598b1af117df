"""Revocations, the kill switch, token expiry and live sessions through the real gateway,
with psycopg against real PostgreSQL (issue 8: the offboarded contractor whose token still
worked). The administrator (root, group gateway-admins) uses the real admin API over HTTP
and the real CLI."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from gateway.cli import main as gateway_cli
from gateway.recording.schema import End

from .admin_client import AdminClient
from .conftest import UPSTREAM_PASSWORD_ENV, GatewayProcess, StartGateway, free_port, launch_gateway
from .test_recording_e2e import frames, session_file

pytestmark = pytest.mark.integration

ADMIN = ("root@example.com", ("gateway-admins",))

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

[[policies]]
name = "appr"
groups = ["appr"]
targets = ["app-pg"]
allow = ["read", "session", "transaction"]
max_rows = 100
on_limit = "approval"
approvers = ["dba-leads"]
approval_timeout = "60s"

[[policies]]
name = "rev"
groups = ["rev"]
targets = ["app-pg"]
allow = ["read", "ddl"]
review = ["ddl"]
approvers = ["dba-leads"]
approval_timeout = "60s"
"""


@pytest.fixture(scope="module")
def admin_port() -> int:
    return free_port()


def _extra(admin_port: int) -> str:
    return f"""
[admin]
listen = "127.0.0.1:{admin_port}"
groups = ["gateway-admins"]
allow_plaintext = true
"""


@pytest.fixture(scope="module")
def gw(start_gateway: StartGateway, admin_port: int) -> GatewayProcess:
    return start_gateway(policies=POLICIES, extra=_extra(admin_port))


@pytest.fixture(scope="module")
def admin(gw: GatewayProcess, admin_port: int) -> AdminClient:
    client = AdminClient(f"http://127.0.0.1:{admin_port}", gw.token(*ADMIN))
    _wait_admin(client)
    return client


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def connect(gw: GatewayProcess, user: str, *groups: str, **claims: Any) -> psycopg.Connection:
    token = gw.token(user, groups or ("dba",), **claims)
    return psycopg.connect(gw.dsn(token, user=user), autocommit=True)


def revoke(admin: AdminClient, **body: str) -> dict[str, Any]:
    status, answer = admin.call("POST", "/api/revocations", body)
    assert status == 201, answer
    return dict(answer)


def live(admin: AdminClient, subject: str) -> list[dict[str, Any]]:
    status, body = admin.call("GET", "/api/sessions")
    assert status == 200, body
    return [s for s in body["sessions"] if s["subject"] == subject]


def wait_running(admin: AdminClient, subject: str, needle: str) -> dict[str, Any]:
    """The live session of ``subject`` once it is running a statement containing ``needle``."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for session in live(admin, subject):
            if needle in (session["current_statement"] or ""):
                return session
        time.sleep(0.05)
    raise AssertionError(f"{subject} is not running {needle!r}")


# "At once": the statements these tests end would run for 30 s or more (a pg_sleep, an
# approval timeout); a few seconds leave room for a slow shared host and still tell an
# immediate end from one that waited for the statement.
AT_ONCE = 5.0


def ended_within(future: Future[Any], started: float, limit: float = AT_ONCE) -> BaseException:
    """The exception the client got, asserting it came within ``limit`` seconds."""
    exc = future.exception(timeout=15)
    assert exc is not None
    assert time.monotonic() - started < limit, f"took {time.monotonic() - started:.2f}s"
    return exc


def backend_gone(gw: GatewayProcess, needle: str) -> None:
    """No backend still runs the killed statement (the gateway cancelled it)."""
    with connect(gw, "dba-check@example.com") as conn:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            (count,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = %s", (needle,)
            ).fetchone()  # type: ignore[misc]
            if count == 0:
                return
            time.sleep(0.1)
    raise AssertionError(f"a backend still runs {needle!r}")


def end_frame(gw: GatewayProcess, subject: str) -> End:
    last = frames(session_file(gw, subject))[-1]
    assert isinstance(last, End)
    return last


# ------------------------------------------------------------------ revoke a subject


def test_revoking_a_subject_ends_its_running_query_at_once(
    gw: GatewayProcess, admin: AdminClient, pool: ThreadPoolExecutor
) -> None:
    user = "contractor1@example.com"
    sleep = "SELECT pg_sleep(30)"
    conn = connect(gw, user, "contractors")
    bystander = connect(gw, "colleague@example.com", "contractors")
    future = pool.submit(conn.execute, sleep)
    session = wait_running(admin, user, "pg_sleep")
    assert session["groups"] == ["contractors"] and session["protocol"] == "postgres"

    started = time.monotonic()
    answer = revoke(admin, subject=user, reason="offboarded")
    exc = ended_within(future, started)
    assert answer["sessions_ended"] == [session["session_id"]]
    assert isinstance(exc, psycopg.errors.AdminShutdown), exc
    assert "session ended by an administrator: offboarded" in str(exc)
    conn.close()
    backend_gone(gw, sleep)
    # The recording says why it ended.
    end = end_frame(gw, user)
    assert "offboarded" in end.reason and "root@example.com" in end.reason
    # Other identities are untouched.
    assert bystander.execute("SELECT 1").fetchone() == (1,)
    bystander.close()

    # And the revoked identity cannot log in again, with a clear message.
    with pytest.raises(psycopg.OperationalError) as info:
        connect(gw, user, "contractors")
    assert "access revoked by an administrator" in str(info.value)
    log = gw.log_text()
    refused = [json.loads(line) for line in log.splitlines() if '"login_refused"' in line]
    assert any(r["subject"] == user and r["revocation_id"] == answer["id"] for r in refused)
    audit = [json.loads(line) for line in log.splitlines() if '"revocation_added"' in line]
    assert audit and audit[-1]["by"] == "root@example.com" and audit[-1]["reason"] == "offboarded"


def test_revoking_a_token_id_ends_a_session_idle_in_a_transaction(
    gw: GatewayProcess, admin: AdminClient
) -> None:
    user = "jti-user@example.com"
    conn = connect(gw, user, jti="leaked-token-1")
    other = connect(gw, user, jti="fresh-token-2")
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    started = time.monotonic()
    answer = revoke(admin, token_id="leaked-token-1", reason="token leaked")
    assert len(answer["sessions_ended"]) == 1
    with pytest.raises(psycopg.errors.AdminShutdown, match="token leaked"):
        conn.execute("SELECT 2")
    assert time.monotonic() - started < AT_ONCE
    # The same subject with another token is not affected, and may log in again.
    assert other.execute("SELECT 3").fetchone() == (3,)
    connect(gw, user, jti="fresh-token-3").close()
    with pytest.raises(psycopg.OperationalError, match="access revoked"):
        connect(gw, user, jti="leaked-token-1")
    conn.close()
    other.close()


def test_revoking_a_group(gw: GatewayProcess, admin: AdminClient) -> None:
    member = connect(gw, "temp1@example.com", "dba", "temps")
    outsider = connect(gw, "staff1@example.com", "dba")
    answer = revoke(admin, group="temps", reason="contract ended")
    assert len(answer["sessions_ended"]) == 1
    with pytest.raises(psycopg.errors.AdminShutdown):
        member.execute("SELECT 1")
    assert outsider.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="access revoked"):
        connect(gw, "temp2@example.com", "dba", "temps")
    member.close()
    outsider.close()
    status, _ = admin.call("DELETE", f"/api/revocations/{answer['id']}")
    assert status == 200
    connect(gw, "temp2@example.com", "dba", "temps").close()


def test_a_revocation_with_an_expiry_stops_applying(gw: GatewayProcess, admin: AdminClient) -> None:
    user = "suspended@example.com"
    # Long enough for the refused login below to come before the expiry on a slow host.
    answer = revoke(admin, subject=user, expires_in="6s", reason="cooling off")
    assert answer["expires_at"] - answer["created_at"] == pytest.approx(6.0)
    with pytest.raises(psycopg.OperationalError, match="access revoked"):
        connect(gw, user)
    # The gateway compares the wall clock with expires_at at each login: past that
    # moment (plus a margin for float rounding) the revocation no longer applies.
    time.sleep(max(0.0, answer["expires_at"] - time.time()) + 0.3)
    with connect(gw, user) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    status, body = admin.call("GET", "/api/revocations")
    assert status == 200
    assert answer["id"] not in [r["id"] for r in body["revocations"]]


# ------------------------------------------------------------- kill switch and live list


def test_sessions_live_and_kill_from_the_cli(
    gw: GatewayProcess, admin: AdminClient, pool: ThreadPoolExecutor
) -> None:
    user = "analyst@example.com"
    conn = connect(gw, user)
    assert len(conn.execute("SELECT g FROM generate_series(1, 120) g").fetchall()) == 120
    conn.execute("SELECT 'second'")
    future = pool.submit(conn.execute, "SELECT 42, pg_sleep(30)")
    wait_running(admin, user, "pg_sleep")

    def cli(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = gateway_cli([*argv, "--url", admin.base_url, "--token", admin.token])
        return code, out.getvalue()

    code, out = cli("sessions", "live", "--json")
    assert code == 0
    [mine] = [s for s in json.loads(out)["sessions"] if s["subject"] == user]
    assert mine["statements"] >= 3
    assert mine["rows"] >= 121
    assert mine["bytes"] > 120 * 10
    assert mine["current_statement"] == "SELECT 42, pg_sleep(30)"
    assert mine["target"] == "app-pg" and mine["client"].startswith("127.0.0.1:")
    assert 0 < time.time() - mine["since"] < 60
    code, out = cli("sessions", "live")
    assert code == 0 and mine["session_id"] in out and user in out

    started = time.monotonic()
    code, out = cli("sessions", "kill", mine["session_id"], "--reason", "runaway query")
    assert code == 0 and out.strip() == f"{mine['session_id']}: killed"
    exc = ended_within(future, started)
    assert isinstance(exc, psycopg.errors.AdminShutdown)
    assert "session ended by an administrator: runaway query" in str(exc)
    conn.close()
    assert "runaway query" in end_frame(gw, user).reason
    assert live(admin, user) == []
    # A killed session is not a revoked identity: it may log in again.
    connect(gw, user).close()
    code, _ = cli("sessions", "kill", mine["session_id"])
    assert code == 1


def paused_result(
    gw: GatewayProcess, admin: AdminClient, pool: ThreadPoolExecutor, user: str
) -> tuple[AdminClient, psycopg.Connection, Future[Any], dict[str, Any], dict[str, Any]]:
    """``user``'s result paused at the appr policy's limit: (an approver's client, the
    connection, the query's future, the pending request, the live session)."""
    approver = AdminClient(admin.base_url, gw.token("bob@example.com", ("dba-leads",)))
    conn = connect(gw, user, "appr")
    future = pool.submit(
        lambda: conn.execute("SELECT g FROM generate_series(1, 5000) g").fetchall()
    )
    request = approver.wait_pending(user)
    [session] = live(admin, user)
    return approver, conn, future, request, session


def test_kill_a_result_paused_for_approval(
    gw: GatewayProcess, admin: AdminClient, pool: ThreadPoolExecutor
) -> None:
    user = "paused@example.com"
    approver, conn, future, request, session = paused_result(gw, admin, pool, user)
    assert session["rows"] >= 100  # the rows that fit were sent
    started = time.monotonic()
    status, _ = admin.call("POST", f"/api/sessions/{session['session_id']}/kill", {"reason": "no"})
    assert status == 200
    exc = ended_within(future, started)
    assert isinstance(exc, psycopg.errors.AdminShutdown), exc
    conn.close()
    # The approval request was withdrawn with the session.
    deadline = time.monotonic() + 5
    while any(r["id"] == request["id"] for r in approver.pending()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    [decided] = [r for r in approver.history() if r["id"] == request["id"]]
    assert decided["state"] == "withdrawn"


def test_non_admins_are_refused(gw: GatewayProcess, admin: AdminClient) -> None:
    approver = AdminClient(admin.base_url, gw.token("bob@example.com", ("dba-leads",)))
    assert approver.call("GET", "/api/sessions")[0] == 403
    assert approver.call("POST", "/api/revocations", {"subject": "x"})[0] == 403
    user = AdminClient(admin.base_url, gw.token("eve@example.com", ("dba",)))
    assert user.call("GET", "/api/revocations")[0] == 403


# ------------------------------------------------------------------------- token expiry


def test_token_expiry_ends_a_running_query(gw: GatewayProcess, pool: ThreadPoolExecutor) -> None:
    user = "short-lived@example.com"
    token = gw.token(user, ("dba",), ttl=3)
    exp = json.loads(_payload(token))["exp"]
    conn = psycopg.connect(gw.dsn(token, user=user), autocommit=True)
    future = pool.submit(conn.execute, "SELECT pg_sleep(30)")
    exc = future.exception(timeout=15)
    assert isinstance(exc, psycopg.OperationalError)
    assert "session ended: token expired" in str(exc)
    assert exp - 0.5 <= time.time() < exp + 2  # ended at exp (grace 0), not later
    conn.close()
    backend_gone(gw, "SELECT pg_sleep(30)")
    assert end_frame(gw, user).reason == "token expired"


def _payload(token: str) -> bytes:
    import base64

    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# ------------------------------------------------------------------------------ restart


def test_revocations_survive_a_restart(
    start_gateway: StartGateway, pg_gateway_role: tuple[str, str]
) -> None:
    port = free_port()
    gw = start_gateway(policies=POLICIES, extra=_extra(port))
    admin = AdminClient(f"http://127.0.0.1:{port}", gw.token(*ADMIN))
    user = "gone@example.com"
    _wait_admin(admin)  # it starts listening just after the database listeners
    answer = revoke(admin, subject=user, reason="left the company")
    assert gw.stop() == 0
    again = launch_gateway(
        gw.config_path.parent,
        gw.config_path,
        gw.port,
        gw.key_path,
        {UPSTREAM_PASSWORD_ENV: pg_gateway_role[1]},
    )
    try:
        with pytest.raises(psycopg.OperationalError, match="access revoked"):
            connect(again, user)
        _wait_admin(admin)
        status, body = admin.call("GET", "/api/revocations")
        assert status == 200 and [r["id"] for r in body["revocations"]] == [answer["id"]]
        connect(again, "someone-else@example.com").close()
    finally:
        again.stop()


def _wait_admin(admin: AdminClient, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.call("GET", "/healthz")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_revoked_approver_loses_the_admin_api(gw: GatewayProcess, admin: AdminClient) -> None:
    """Revocation applies to the control plane too: an offboarded approver's still-valid
    token no longer lists or decides approval requests."""
    approver = AdminClient(admin.base_url, gw.token("leaver@example.com", ("dba-leads",)))
    assert approver.call("GET", "/api/approvals")[0] == 200
    answer = revoke(admin, subject="leaver@example.com", reason="left the company")
    status, body = approver.call("GET", "/api/approvals")
    assert (status, body["error"]) == (401, "access revoked")
    assert admin.call("DELETE", f"/api/revocations/{answer['id']}")[0] == 200
    assert approver.call("GET", "/api/approvals")[0] == 200


# ------------------------------------------------------------- audit log of a killed session


def audit_lines(gw: GatewayProcess, predicate: Any, timeout: float = 10) -> list[dict[str, Any]]:
    """The audit log's lines once one of them matches ``predicate`` (it is flushed every
    second)."""
    path = gw.state_dir / "audit.log"
    deadline = time.monotonic() + timeout
    while True:
        lines = (
            [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            if path.exists()
            else []
        )
        if any(predicate(x) for x in lines):
            return lines
        assert time.monotonic() < deadline, f"no matching audit line; last: {lines[-3:]}"
        time.sleep(0.1)


def test_the_statement_a_kill_interrupts_has_its_audit_line(
    gw: GatewayProcess, admin: AdminClient, pool: ThreadPoolExecutor
) -> None:
    user = "audit-killed@example.com"
    conn = connect(gw, user, "contractors")
    future = pool.submit(conn.execute, "SELECT pg_sleep(30)")
    session = wait_running(admin, user, "pg_sleep")
    status, _ = admin.call("POST", f"/api/sessions/{session['session_id']}/kill", {"reason": "x"})
    assert status == 200
    assert isinstance(future.exception(timeout=15), psycopg.errors.AdminShutdown)
    conn.close()
    lines = audit_lines(gw, lambda x: x.get("event") == "session_end" and x.get("subject") == user)
    [line] = [x for x in lines if x.get("event") == "statement" and x["subject"] == user]
    assert line["text"] == "SELECT pg_sleep(?)" and line["decision"] == "allow"
    assert line["error"] == "interrupted" and line["session_id"] == session["session_id"]


def test_a_killed_paused_result_is_audited_with_its_approval_id(
    gw: GatewayProcess, admin: AdminClient, pool: ThreadPoolExecutor
) -> None:
    user = "audit-paused@example.com"
    _, conn, future, request, session = paused_result(gw, admin, pool, user)
    status, _ = admin.call("POST", f"/api/sessions/{session['session_id']}/kill", {"reason": "no"})
    assert status == 200
    assert isinstance(future.exception(timeout=15), psycopg.errors.AdminShutdown)
    conn.close()
    lines = audit_lines(gw, lambda x: x.get("event") == "session_end" and x.get("subject") == user)
    [line] = [x for x in lines if x.get("event") == "statement" and x["subject"] == user]
    assert line["approval_id"] == request["id"] and line["error"] == "interrupted"
    assert line["rows"] == 100
    withdrawn = [x for x in lines if x.get("event") == "approval_withdrawn"]
    assert any(x["approval_id"] == request["id"] for x in withdrawn)


def test_revoking_mid_copy_from_stdin_keeps_nothing_of_it(
    gw: GatewayProcess, admin: AdminClient, pool: ThreadPoolExecutor
) -> None:
    import threading

    user = "copier@example.com"
    with connect(gw, "dba-setup@example.com") as dba:
        dba.execute("DROP TABLE IF EXISTS copy_target")
        dba.execute("CREATE TABLE copy_target (id int)")
    conn = connect(gw, user)
    go_on = threading.Event()

    def load() -> None:
        with conn.cursor() as cur, cur.copy("COPY copy_target FROM STDIN") as copy:
            for i in range(1000):
                copy.write_row((i,))
            conn.pgconn.flush()
            go_on.wait(15)
            for i in range(1000, 2000):
                copy.write_row((i,))

    future = pool.submit(load)
    session = wait_running(admin, user, "COPY copy_target")
    time.sleep(0.3)  # the first rows reached the server
    revoke(admin, subject=user, reason="stop the load")
    go_on.set()
    assert isinstance(future.exception(timeout=15), psycopg.Error)
    conn.close()
    with connect(gw, "dba-check@example.com") as dba:
        assert dba.execute("SELECT count(*) FROM copy_target").fetchone() == (0,)
    assert "stop the load" in end_frame(gw, user).reason
    assert session["session_id"]


def test_revoking_a_session_whose_statement_is_held_for_review(
    gw: GatewayProcess, admin: AdminClient, pool: ThreadPoolExecutor
) -> None:
    user = "held@example.com"
    approver = AdminClient(admin.base_url, gw.token("bob@example.com", ("dba-leads",)))
    conn = connect(gw, user, "rev")
    future = pool.submit(conn.execute, "CREATE TABLE held_for_review (a int)")
    request = approver.wait_pending(user)
    started = time.monotonic()
    revoke(admin, subject=user, reason="revoked while held")
    exc = ended_within(future, started)
    assert isinstance(exc, psycopg.errors.AdminShutdown), exc
    conn.close()
    deadline = time.monotonic() + 5
    while any(r["id"] == request["id"] for r in approver.pending()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # An approval arriving now changes nothing: the statement never runs.
    approver.approve(request["id"])
    with connect(gw, "dba-check@example.com") as dba:
        assert dba.execute("SELECT to_regclass('held_for_review')").fetchone() == (None,)
    assert "revoked while held" in end_frame(gw, user).reason


def test_a_damaged_revocation_list_stops_the_gateway_from_starting(
    start_gateway: StartGateway, pg_gateway_role: tuple[str, str]
) -> None:
    """Fail closed: a revocation list that cannot be read could be hiding a revocation, so
    the gateway refuses to start, saying why (exit 2, no traceback)."""
    import os
    import subprocess
    import sys

    gw = start_gateway(policies=POLICIES, extra=_extra(free_port()))
    assert gw.stop() == 0
    (gw.state_dir / "revocations.json").write_text('{"revocations": [{"kind": "subj')
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(gw.config_path)],
        env={**os.environ, UPSTREAM_PASSWORD_ENV: pg_gateway_role[1]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "revocations.json" in run.stderr
    assert "Traceback" not in run.stderr
