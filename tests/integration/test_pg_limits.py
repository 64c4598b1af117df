"""Row and byte limits, and approvals, through the real gateway with real clients (issue 7).

Each group below has one policy; ``big`` holds 5,000 rows. The approver (bob, group
dba-leads) decides through the real admin API over HTTP, while the client waits in
another thread, exactly as a person would from a phone.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import psycopg
import pytest

from gateway.cli import main as gateway_cli
from gateway.recording.schema import Ctl

from .admin_client import AdminClient
from .conftest import GatewayProcess, StartGateway, free_port
from .pgwire import FLUSH, SYNC, Wire, bind, execute, parse, query, rows
from .test_recording_e2e import frames, session_file

pytestmark = pytest.mark.integration

APPROVER = "bob@example.com"
BIG = 5000

POLICIES = """
[[policies]]
name = "admins"
groups = ["dba"]
targets = ["app-pg"]
allow = ["*"]

[[policies]]
name = "err"
groups = ["err"]
targets = ["app-pg"]
allow = ["read", "session", "transaction", "export"]
max_rows = 100

[[policies]]
name = "trunc"
groups = ["trunc"]
targets = ["app-pg"]
allow = ["read", "session", "transaction", "export"]
max_rows = 100
on_limit = "truncate"

[[policies]]
name = "bytes"
groups = ["bytes"]
targets = ["app-pg"]
allow = ["read"]
max_bytes = "4KB"
on_limit = "truncate"

[[policies]]
name = "sess"
groups = ["sess"]
targets = ["app-pg"]
allow = ["read", "session", "transaction"]
session_max_rows = 250

[[policies]]
name = "window"
groups = ["window"]
targets = ["app-pg"]
allow = ["read"]
window_max_rows = 300
window = "1h"

[[policies]]
name = "appr"
groups = ["appr"]
targets = ["app-pg"]
allow = ["read", "session", "transaction"]
max_rows = 100
on_limit = "approval"
approvers = ["dba-leads"]
approval_timeout = "30s"

[[policies]]
name = "quick"
groups = ["quick"]
targets = ["app-pg"]
allow = ["read"]
max_rows = 100
on_limit = "approval"
approvers = ["dba-leads"]
approval_timeout = "1500ms"

[[policies]]
name = "reviewed"
groups = ["reviewed"]
targets = ["app-pg"]
allow = ["read", "ddl"]
review = ["ddl"]
approvers = ["dba-leads"]
approval_timeout = "30s"
"""


class WebhookReceiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        WebhookReceiver.received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def webhook() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WebhookReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def admin_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gw(start_gateway: StartGateway, admin_port: int, webhook: int) -> GatewayProcess:
    extra = f"""
[admin]
listen = "127.0.0.1:{admin_port}"
groups = ["gateway-admins"]
allow_plaintext = true

[approvals]
webhook_url = "http://127.0.0.1:{webhook}/hook"
webhook_secret_env = "GW_TEST_WEBHOOK_SECRET"
"""
    import os

    os.environ["GW_TEST_WEBHOOK_SECRET"] = "webhook-test-secret"
    return start_gateway(policies=POLICIES, extra=extra)


@pytest.fixture(scope="module")
def approver(gw: GatewayProcess, admin_port: int) -> AdminClient:
    return AdminClient(f"http://127.0.0.1:{admin_port}", gw.token(APPROVER, ("dba-leads",)))


@pytest.fixture(scope="module", autouse=True)
def schema(gw: GatewayProcess) -> None:
    with psycopg.connect(gw.dsn(gw.token("root@example.com", ("dba",))), autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS big")
        c.execute(
            "CREATE TABLE big AS SELECT g AS id, repeat('x', 20) AS pad "
            f"FROM generate_series(1, {BIG}) g"
        )
        c.execute("DROP TABLE IF EXISTS reviewed_t")


def connect(gw: GatewayProcess, user: str, group: str, **kw: Any) -> psycopg.Connection:
    return psycopg.connect(gw.dsn(gw.token(user, (group,)), user=user), **kw)


def notices(conn: psycopg.Connection) -> list[str]:
    seen: list[str] = []
    conn.add_notice_handler(lambda d: seen.append(d.message_primary or ""))
    return seen


def still_usable(conn: psycopg.Connection) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    assert conn.execute("SELECT 41 + 1").fetchone() == (42,)


# ------------------------------------------------------------------------------ error


def test_error_stops_the_result_and_the_session_goes_on(gw: GatewayProcess) -> None:
    with connect(gw, "erin@example.com", "err", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
            conn.execute("SELECT * FROM big").fetchall()
        assert "max_rows=100" in str(info.value)
        assert "'err'" in str(info.value)
        still_usable(conn)
        # Under the limit: untouched.
        assert len(conn.execute("SELECT * FROM big LIMIT 100").fetchall()) == 100
        # The upstream query was cancelled, not run to the end: nothing is left running.
        still_usable(conn)


def test_error_inside_a_transaction(gw: GatewayProcess) -> None:
    with connect(gw, "erin@example.com", "err") as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("SELECT * FROM big").fetchall()
        # The client saw an error inside its transaction block: it rolls back and goes on.
        conn.rollback()
        still_usable(conn)


def test_error_on_extended_protocol_and_portals_with_asyncpg(gw: GatewayProcess) -> None:
    async def run() -> None:
        user = "erin@example.com"
        conn = await asyncpg.connect(
            host=gw.host,
            port=gw.port,
            user=user,
            password=gw.token(user, ("err",)),
            database="app",
            ssl="require",
        )
        try:
            with pytest.raises(asyncpg.exceptions.ProgramLimitExceededError):
                await conn.fetch("SELECT * FROM big")
            assert await conn.fetchval("SELECT 7") == 7
            # A prepared statement's portal fetched 30 rows at a time (Execute with a row
            # limit, PortalSuspended between batches): the limit counts across batches.
            seen = 0
            with pytest.raises(asyncpg.exceptions.ProgramLimitExceededError):
                async with conn.transaction():
                    async for _ in conn.cursor("SELECT * FROM big", prefetch=30):
                        seen += 1
            assert seen == 90  # three whole batches; the fourth crossed 100
            assert await conn.fetchval("SELECT count(*) FROM big") == BIG
        finally:
            await conn.close()

    asyncio.run(run())


def test_psql_sees_the_error(gw: GatewayProcess) -> None:
    user = "erin@example.com"
    result = subprocess.run(
        [
            "psql",
            gw.dsn(gw.token(user, ("err",)), user=user),
            "-c",
            "SELECT * FROM big",
            "-c",
            "SELECT 'after'",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "max_rows=100" in result.stderr
    # psql goes on to the next command on the same connection.
    assert "after" in result.stdout


# ------------------------------------------------------------------------------ truncate


def test_truncate_delivers_the_rows_so_far_and_a_warning(gw: GatewayProcess) -> None:
    with connect(gw, "tru@example.com", "trunc", autocommit=True) as conn:
        seen = notices(conn)
        cur = conn.execute("SELECT * FROM big ORDER BY id")
        rows = cur.fetchall()
        assert [r[0] for r in rows] == list(range(1, 101))
        assert cur.statusmessage == "SELECT 100"
        assert any("truncated" in n and "max_rows=100" in n for n in seen), seen
        still_usable(conn)


def test_truncate_inside_a_transaction_keeps_the_transaction(gw: GatewayProcess) -> None:
    with connect(gw, "tru@example.com", "trunc") as conn:
        conn.execute("SET LOCAL statement_timeout = '1min'")
        assert len(conn.execute("SELECT * FROM big").fetchall()) == 100
        # Not cancelled (that would abort the block): the transaction is still good.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert conn.execute("SELECT count(*) FROM big").fetchone() == (BIG,)
        conn.commit()


def test_truncate_with_a_multi_statement_query(gw: GatewayProcess) -> None:
    with connect(gw, "tru@example.com", "trunc", autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM big; SELECT 'second'")
        assert len(cur.fetchall()) == 100
        assert cur.nextset()
        assert cur.fetchall() == [("second",)]


def test_truncate_by_bytes(gw: GatewayProcess) -> None:
    with connect(gw, "bytes@example.com", "bytes", autocommit=True) as conn:
        seen = notices(conn)
        rows = conn.execute("SELECT * FROM big ORDER BY id").fetchall()
        # A text DataRow of (id, 20 x's) is 1+4+2 + 4+len(str(id)) + 4+20 bytes.
        total, fit = 0, 0
        for i in range(1, BIG + 1):
            total += 35 + len(str(i))
            if total > 4000:
                break
            fit += 1
        assert len(rows) == fit == 108
        assert any("max_bytes=4000" in n for n in seen), seen


# ------------------------------------------------------------------------ budgets


def test_session_budget_counts_offset_pages_and_cursor_fetches(gw: GatewayProcess) -> None:
    with connect(gw, "sam@example.com", "sess", autocommit=True) as conn:
        for page in range(2):
            rows = conn.execute(f"SELECT * FROM big ORDER BY id LIMIT 100 OFFSET {page * 100}")
            assert len(rows.fetchall()) == 100
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
            conn.execute("SELECT * FROM big ORDER BY id LIMIT 100 OFFSET 200").fetchall()
        assert "session_max_rows=250" in str(info.value)
    with connect(gw, "sam2@example.com", "sess") as conn:
        with conn.cursor(name="pager") as cur:  # DECLARE ... CURSOR; FETCH 60 at a time
            cur.itersize = 60
            cur.execute("SELECT * FROM big")
            got = 0
            with pytest.raises(psycopg.errors.ProgramLimitExceeded):
                for _ in cur:
                    got += 1
        assert got == 240
        conn.rollback()
        # The budget is spent for this session: results with rows fail, the rest works.
        assert conn.execute("SELECT 1 WHERE false").fetchall() == []
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("SELECT 1").fetchall()


def test_window_budget_survives_reconnecting(gw: GatewayProcess) -> None:
    user = "wendy@example.com"
    with connect(gw, user, "window", autocommit=True) as conn:
        assert len(conn.execute("SELECT * FROM big LIMIT 200").fetchall()) == 200
    with connect(gw, user, "window", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
            conn.execute("SELECT * FROM big LIMIT 200").fetchall()
        assert "window_max_rows=300" in str(info.value)
    # Another identity has its own window.
    with connect(gw, "walt@example.com", "window", autocommit=True) as conn:
        assert len(conn.execute("SELECT * FROM big LIMIT 200").fetchall()) == 200


# ---------------------------------------------------------------------------- approval


def _run_in_thread(fn: Any) -> Any:
    pool = ThreadPoolExecutor(1)
    return pool.submit(fn)


def test_approval_resumes_the_stream(gw: GatewayProcess, approver: AdminClient) -> None:
    user = "ann@example.com"
    conn = connect(gw, user, "appr", autocommit=True)
    seen = notices(conn)
    future = _run_in_thread(lambda: conn.execute("SELECT * FROM big ORDER BY id").fetchall())
    request = approver.wait_pending(user)
    assert request["kind"] == "limit"
    assert request["rows_so_far"] == 100
    assert request["reason"] == "max_rows=100"
    assert "FROM big" in request["statement"]
    assert not future.done()
    status, body = approver.approve(request["id"])
    assert status == 200, body
    rows = future.result(timeout=30)
    assert [r[0] for r in rows] == list(range(1, BIG + 1))
    assert any(request["id"] in n and "waiting for approval" in n for n in seen), seen
    # Statement scope: the next big result pauses again.
    future = _run_in_thread(lambda: conn.execute("SELECT * FROM big").fetchall())
    second = approver.wait_pending(user)
    assert second["id"] != request["id"]
    status, _ = approver.approve(second["id"], scope="session")
    assert status == 200
    assert len(future.result(timeout=30)) == BIG
    # Session scope: no more pauses in this session.
    assert len(conn.execute("SELECT * FROM big").fetchall()) == BIG
    conn.close()

    path = session_file(gw, user)
    kinds = [f.kind for f in frames(path) if isinstance(f, Ctl)]
    for step in ("limit_reached", "approval_requested", "approval_approved", "resumed"):
        assert step in kinds, kinds


def test_denial_and_timeout_stop_the_result(gw: GatewayProcess, approver: AdminClient) -> None:
    user = "dan@example.com"
    conn = connect(gw, user, "appr", autocommit=True)
    future = _run_in_thread(lambda: conn.execute("SELECT * FROM big").fetchall())
    request = approver.wait_pending(user)
    # Denied from the command line, with a reason.
    code = gateway_cli(
        [
            "approvals",
            "deny",
            request["id"],
            "--reason",
            "too much data",
            "--url",
            approver.base_url,
            "--token",
            approver.token,
        ]
    )
    assert code == 0
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
        future.result(timeout=30)
    assert f"denied by {APPROVER}: too much data" in str(info.value)
    still_usable(conn)
    conn.close()

    user = "quinn@example.com"
    with connect(gw, user, "quick", autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
            conn.execute("SELECT * FROM big").fetchall()
        assert "timed out" in str(info.value)
        assert 1.2 < time.monotonic() - started < 15
        still_usable(conn)


def test_who_may_decide(gw: GatewayProcess, approver: AdminClient, admin_port: int) -> None:
    user = "ann2@example.com"
    conn = connect(gw, user, "appr", autocommit=True)
    future = _run_in_thread(lambda: conn.execute("SELECT * FROM big").fetchall())
    request = approver.wait_pending(user)
    base = f"http://127.0.0.1:{admin_port}"
    # The requester, even if also an approver, cannot approve their own request.
    self_approval = AdminClient(base, gw.token(user, ("appr", "dba-leads")))
    status, body = self_approval.approve(request["id"])
    assert status == 403 and "own request" in body["error"]
    # Someone outside the approver groups cannot either.
    outsider = AdminClient(base, gw.token("eve@example.com", ("gateway-admins",)))
    status, body = outsider.approve(request["id"])
    assert status == 403
    assert approver.approve(request["id"])[0] == 200
    assert len(future.result(timeout=30)) == BIG
    assert approver.approve(request["id"])[0] == 409  # decided already
    conn.close()


def test_webhook_receives_the_request(gw: GatewayProcess, approver: AdminClient) -> None:
    import hashlib
    import hmac

    user = "hook@example.com"
    conn = connect(gw, user, "appr", autocommit=True)
    future = _run_in_thread(lambda: conn.execute("SELECT * FROM big").fetchall())
    request = approver.wait_pending(user)
    deadline = time.monotonic() + 10
    mine: list[tuple[dict[str, str], bytes]] = []
    while not mine and time.monotonic() < deadline:
        mine = [(h, b) for h, b in WebhookReceiver.received if request["id"].encode() in b]
        time.sleep(0.05)
    assert mine, "the webhook was not called"
    headers, body = mine[0]
    payload = json.loads(body)
    assert payload["request"]["id"] == request["id"]
    assert payload["request"]["requester"] == user
    expected = hmac.new(b"webhook-test-secret", body, hashlib.sha256).hexdigest()
    assert headers["X-Gateway-Signature"] == f"sha256={expected}"
    approver.approve(request["id"])
    assert len(future.result(timeout=30)) == BIG
    conn.close()


def test_client_cancel_while_paused(gw: GatewayProcess, approver: AdminClient) -> None:
    user = "cancel@example.com"
    conn = connect(gw, user, "appr", autocommit=True)
    future = _run_in_thread(lambda: conn.execute("SELECT * FROM big").fetchall())
    request = approver.wait_pending(user)
    conn.cancel()
    with pytest.raises(psycopg.errors.QueryCanceled):
        future.result(timeout=30)
    assert all(r["id"] != request["id"] for r in approver.pending())
    still_usable(conn)
    conn.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_paused_million_row_result_is_not_buffered(
    gw: GatewayProcess, approver: AdminClient
) -> None:
    """While paused, the database is blocked writing (TCP backpressure) and the gateway
    holds at most one read: its memory does not grow with the result."""
    user = "mem@example.com"
    admin = psycopg.connect(gw.dsn(gw.token("root@example.com", ("dba",))), autocommit=True)
    conn = connect(gw, user, "appr", autocommit=True)
    conn.execute("SELECT 1")
    before = _rss_kib(gw.proc.pid)
    query = "SELECT g, repeat('y', 100) FROM generate_series(1, 1000000) g"
    future = _run_in_thread(lambda: sum(1 for _ in conn.execute(query)))
    request = approver.wait_pending(user)
    # The backend waits on its socket: it cannot send more until the gateway reads.
    deadline = time.monotonic() + 15
    waiting = None
    while time.monotonic() < deadline:
        waiting = admin.execute(
            "SELECT wait_event FROM pg_stat_activity "
            "WHERE query LIKE '%generate_series(1, 1000000)%' AND pid <> pg_backend_pid()"
        ).fetchone()
        if waiting and waiting[0] == "ClientWrite":
            break
        time.sleep(0.1)
    assert waiting == ("ClientWrite",)
    time.sleep(0.5)
    paused = _rss_kib(gw.proc.pid)
    # The whole result is ~110 MB; the gateway may hold one read and its own buffers.
    assert paused - before < 8 * 1024, (before, paused)
    approver.approve(request["id"])
    assert future.result(timeout=120) == 1_000_000
    conn.close()
    admin.close()


# ------------------------------------------------------------------------------- review


def test_review_holds_a_statement_until_approved(gw: GatewayProcess, approver: AdminClient) -> None:
    user = "rita@example.com"
    admin = psycopg.connect(gw.dsn(gw.token("root@example.com", ("dba",))), autocommit=True)
    conn = connect(gw, user, "reviewed", autocommit=True)
    seen = notices(conn)
    future = _run_in_thread(lambda: conn.execute("CREATE TABLE reviewed_t (a int)"))
    request = approver.wait_pending(user)
    assert request["kind"] == "review"
    assert request["statement"] == "CREATE TABLE reviewed_t (a int)"
    # Held: nothing was sent to the database.
    assert admin.execute("SELECT to_regclass('reviewed_t')").fetchone() == (None,)
    assert approver.approve(request["id"])[0] == 200
    future.result(timeout=30)
    assert admin.execute("SELECT to_regclass('reviewed_t')").fetchone() == ("reviewed_t",)
    assert any("held by the gateway for review" in n for n in seen), seen
    # Denied: refused like a denied statement, never run; the session goes on.
    future = _run_in_thread(lambda: conn.execute("DROP TABLE reviewed_t"))
    request = approver.wait_pending(user)
    approver.deny(request["id"], "not today")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        future.result(timeout=30)
    assert "not today" in str(info.value)
    assert admin.execute("SELECT to_regclass('reviewed_t')").fetchone() == ("reviewed_t",)
    still_usable(conn)
    # Statements that need no review are not held.
    assert conn.execute("SELECT count(*) FROM big").fetchone() == (BIG,)
    conn.close()
    admin.close()
    history = {r["id"]: r for r in approver.history()}
    assert history[request["id"]]["state"] == "denied"
    assert history[request["id"]]["decision_reason"] == "not today"
    assert re.fullmatch(r"apr_[0-9a-f]{16}", request["id"])


def test_copy_to_stdout_is_limited_too(gw: GatewayProcess) -> None:
    for group in ("err", "trunc"):
        with connect(gw, f"copy-{group}@example.com", group, autocommit=True) as conn:
            got = 0
            with (
                pytest.raises(psycopg.errors.ProgramLimitExceeded) as info,
                conn.cursor().copy("COPY (SELECT * FROM big) TO STDOUT") as copy,
            ):
                for _ in copy.rows():
                    got += 1
            assert got <= 100
            assert "max_rows=100" in str(info.value)
            still_usable(conn)


# -- a result the gateway must keep counting, whatever the client sends around it ---------


def _wire(gw: GatewayProcess, group: str) -> Wire:
    client = Wire(gw.host, gw.port)
    subject = f"wire-{group}@example.com"
    status, _ = client.login(gw.token(subject, (group,)), user=subject)
    assert status == "ok"
    return client


def _batch(client: Wire, portal: str) -> list[tuple[str, bytes]]:
    client.send(execute(portal, 100) + SYNC)
    return client.until_ready()


@pytest.mark.parametrize("around", ["forgetting query", "64 other portals"])
def test_a_portal_fetched_in_batches_stays_one_result(gw: GatewayProcess, around: str) -> None:
    """max_rows = 100 for a portal fetched 100 rows at a time: the second batch is
    refused, even after a query whose words make the gateway forget its portal records
    (CLOSE in a literal) or after many other portals were bound and executed."""
    client = _wire(gw, "err")
    try:
        client.query("BEGIN")
        client.send(parse("s1", "SELECT * FROM big") + bind("p0", "s1") + execute("p0", 100))
        client.send(SYNC)
        assert len(rows(client.until_ready())) == 100
        if around == "forgetting query":
            client.query("SELECT 'close'")
        else:
            others = parse("s2", "SELECT 1")
            for i in range(64):
                others += bind(f"q{i}", "s2") + execute(f"q{i}")
            client.send(others + SYNC)
            client.until_ready()
        for _ in range(3):
            out = _batch(client, "p0")
            assert not rows(out)
            assert any(kind == "E" and b"54000" in body for kind, body in out), out
    finally:
        client.close()


def test_a_query_the_server_skips_after_an_error_cannot_escape_the_limit(
    gw: GatewayProcess,
) -> None:
    client = _wire(gw, "err")
    try:
        client.send(parse("", "SELEC 1") + FLUSH)
        client.until("E")
        client.send(query("SELECT 1") + SYNC)
        client.until_ready()
        out = client.query("SELECT * FROM big")
        assert len(rows(out)) == 100 and any(b"54000" in body for _, body in out)
    finally:
        client.close()
