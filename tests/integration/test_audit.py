"""Audit log, /metrics and alerts through the real gateway with real PostgreSQL clients.

The audit log is read from the file the gateway writes (<state_dir>/audit.log); the
alerts webhook is a real aiohttp server in this process, checking the HMAC signature
exactly as docs/alerts.md tells a receiver to.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.approvals.notify import verify_signature
from gateway.cli import main as gateway_cli

from .conftest import GatewayProcess, StartGateway, free_port

pytestmark = pytest.mark.integration

SECRET = b"alerts-test-secret"

POLICIES = """
[[policies]]
name = "admins"
groups = ["dba"]
targets = ["app-pg"]
allow = ["*"]

[[policies]]
name = "readers"
groups = ["readers"]
targets = ["app-pg"]
allow = ["read", "session", "transaction"]

[[policies]]
name = "reviewed"
groups = ["reviewed"]
targets = ["app-pg"]
allow = ["read", "ddl"]
review = ["ddl"]
approvers = ["dba-leads"]
approval_timeout = "30s"
"""


def audit_lines(gw: GatewayProcess, path: Path | None = None) -> list[dict[str, Any]]:
    path = path or gw.state_dir / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(
    gw: GatewayProcess,
    predicate: Callable[[list[dict[str, Any]]], bool],
    path: Path | None = None,
    timeout: float = 10,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = audit_lines(gw, path)
        if predicate(lines):
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"audit log never matched; last lines: {lines[-5:]}")
        time.sleep(0.05)


def statements_of(lines: list[dict[str, Any]], subject: str) -> list[dict[str, Any]]:
    return [x for x in lines if x.get("event") == "statement" and x["subject"] == subject]


class Receiver:
    """An aiohttp webhook receiver on its own loop in a thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def hook(request: web.Request) -> web.Response:
            self.received.append((dict(request.headers), await request.read()))
            return web.Response(text="ok")

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/hook", hook)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._started.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        assert self._started.wait(10)

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def alerts(self) -> list[dict[str, Any]]:
        out = []
        for headers, body in list(self.received):
            assert verify_signature(SECRET, body, headers["X-Gateway-Signature"])
            assert headers["X-Gateway-Event"] == "alert"
            out.append(json.loads(body)["alert"])
        return out


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def admin_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gw(
    start_gateway: StartGateway,
    receiver: Receiver,
    admin_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> GatewayProcess:
    secret_file = tmp_path_factory.mktemp("alerts") / "secret"
    secret_file.write_bytes(SECRET)
    extra = f"""
[admin]
listen = "127.0.0.1:{admin_port}"
groups = ["gateway-admins"]
allow_plaintext = true

[audit]
flush_interval = "50ms"

[alerts]
window = "10m"
large_result_rows = 100
large_results = 3
denied = 0
approval_requests = 0
auth_failures = 3
sensitive_tables = ["audit_secrets"]
webhook_url = "http://127.0.0.1:{receiver.port}/hook"
webhook_secret_file = "{secret_file}"
"""
    gw = start_gateway(policies=POLICIES, extra=extra)
    with psycopg.connect(gw.dsn(gw.token("root@example.com", ("dba",))), autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS audit_big, audit_secrets")
        c.execute("CREATE TABLE audit_big (id int PRIMARY KEY, v text)")
        c.execute("INSERT INTO audit_big SELECT g, 'value ' || g FROM generate_series(1, 1000) g")
        c.execute("CREATE TABLE audit_secrets (id int, card text)")
        c.execute("INSERT INTO audit_secrets VALUES (1, '4111111111111111')")
    return gw


def test_one_line_per_statement_allowed_denied_failed(gw: GatewayProcess) -> None:
    who = "audit-pg@example.com"
    with psycopg.connect(gw.dsn(gw.token(who, ("readers",))), autocommit=True) as conn:
        rows = conn.execute("SELECT id, v FROM audit_big WHERE v = 'value 7' OR id < 3").fetchall()
        assert len(rows) == 3
        conn.execute("SELECT id FROM audit_big WHERE id = %s", (5,)).fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_big WHERE id = 42")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
    lines = wait_for(
        gw,
        lambda ls: any(x.get("event") == "session_end" and x["subject"] == who for x in ls),
    )
    mine = statements_of(lines, who)
    assert len(mine) == 4, mine
    ok, param, denied, failed = mine
    for line in mine:
        assert line["target"] == "app-pg" and line["protocol"] == "postgres"
        assert line["groups"] == ["readers"]
        assert line["client"].startswith("127.0.0.1:")
        assert len(line["fingerprint"]) == 16
        assert line["session_id"] == ok["session_id"]
        assert line["time"].endswith("Z")
    # Allowed, with rows and bytes to the client; literals redacted in the text.
    assert ok["decision"] == "allow" and ok["class"] == "read"
    assert ok["rule"] and ok["path"] == "simple"
    assert ok["rows"] == 3 and ok["bytes"] > 0 and ok["duration_ms"] >= 0
    assert ok["text"] == "SELECT id, v FROM audit_big WHERE v = ? OR id < ?"
    assert "value 7" not in json.dumps(lines)
    assert "error" not in ok
    # Extended protocol: the parameter value never appears, the statement does.
    assert param["path"] == "extended" and param["rows"] == 1
    assert "$1" in param["text"]
    # Denied: the rule and class, no rows, the literal redacted.
    assert denied["decision"] == "deny" and denied["class"] == "write"
    assert denied["rule"] and denied["rows"] == 0 and denied["error"] == "42501"
    assert denied["text"] == "DELETE FROM audit_big WHERE id = ?"
    # Failed at the server: its SQLSTATE only (messages may quote data).
    assert failed["decision"] == "allow" and failed["error"] == "22012"
    # Same shape, different literal: same fingerprint.
    with psycopg.connect(gw.dsn(gw.token(who, ("readers",))), autocommit=True) as conn:
        conn.execute("SELECT id, v FROM audit_big WHERE v = 'other'   OR id < 99").fetchall()
    lines = wait_for(gw, lambda ls: len(statements_of(ls, who)) == 5)
    assert statements_of(lines, who)[-1]["fingerprint"] == ok["fingerprint"]
    starts = [x for x in lines if x.get("event") == "session_start" and x["subject"] == who]
    assert len(starts) == 2 and starts[0]["session_id"] == ok["session_id"]


def _scrape(admin_port: int, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{admin_port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_scrape_needs_a_token_and_counts(gw: GatewayProcess, admin_port: int) -> None:
    status, _ = _scrape(admin_port, None)
    assert status == 401
    token = gw.token("ops@example.com", ("gateway-admins",))
    status, before_text = _scrape(admin_port, token)
    assert status == 200
    before = _samples(before_text)
    allow = (
        "gateway_statements_total",
        (("class", "read"), ("decision", "allow"), ("target", "app-pg")),
    )
    rows = ("gateway_rows_to_clients_total", (("target", "app-pg"),))
    with psycopg.connect(
        gw.dsn(gw.token("metrics@example.com", ("readers",))), autocommit=True
    ) as c:
        for _ in range(3):
            assert len(c.execute("SELECT id FROM audit_big WHERE id <= 10").fetchall()) == 10
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DROP TABLE audit_big")
        status, during = _scrape(admin_port, token)
        assert _samples(during)[("gateway_sessions_active", (("target", "app-pg"),))] >= 1
    after = _samples(_scrape(admin_port, token)[1])
    assert after[allow] - before.get(allow, 0) == 3
    assert after[rows] - before.get(rows, 0) == 30
    denied = [
        k for k in after if k[0] == "gateway_statements_total" and ("decision", "deny") in k[1]
    ]
    assert sum(after[k] for k in denied) - sum(before.get(k, 0) for k in denied) == 1
    latency = ("gateway_statement_duration_seconds_count", (("target", "app-pg"),))
    assert after[latency] - before.get(latency, 0) >= 3
    assert ("gateway_recording_backlog_bytes", ()) in after
    assert after[("gateway_recording_healthy", ())] == 1
    # Labels never carry a subject or statement text.
    assert "metrics@example.com" not in _scrape(admin_port, token)[1]
    assert "audit_big" not in _scrape(admin_port, token)[1]


def test_exfiltration_fires_once_normal_workload_does_not(
    gw: GatewayProcess, receiver: Receiver
) -> None:
    normal = "normal@example.com"
    with psycopg.connect(gw.dsn(gw.token(normal, ("readers",))), autocommit=True) as conn:
        for i in range(5):
            conn.execute("SELECT id, v FROM audit_big WHERE id > %s LIMIT 10", (i,)).fetchall()
    thief = "thief@example.com"
    with psycopg.connect(gw.dsn(gw.token(thief, ("readers",))), autocommit=True) as conn:
        for offset in range(0, 1000, 200):  # 5 pages of 200 rows, LIMIT/OFFSET
            page = conn.execute(
                f"SELECT id, v FROM audit_big ORDER BY id LIMIT 200 OFFSET {offset}"
            ).fetchall()
            assert len(page) == 200
    lines = wait_for(
        gw, lambda ls: any(x.get("event") == "alert" and x.get("subject") == thief for x in ls)
    )
    fired = [x for x in lines if x.get("event") == "alert" and x.get("rule") == "large_results"]
    assert [x["subject"] for x in fired] == [thief]  # the burst fired once (cool-down)
    assert fired[0]["count"] == 3 and fired[0]["threshold"] == 3
    assert not [x for x in lines if x.get("event") == "alert" and x.get("subject") == normal]
    deadline = time.monotonic() + 10
    while not any(a.get("subject") == thief for a in receiver.alerts()):
        assert time.monotonic() < deadline, "webhook never received the alert"
        time.sleep(0.05)
    hooked = [a for a in receiver.alerts() if a["rule"] == "large_results"]
    assert [a["subject"] for a in hooked] == [thief]


def test_first_access_to_a_sensitive_table(gw: GatewayProcess) -> None:
    who = "curious@example.com"
    for _ in range(2):
        with psycopg.connect(gw.dsn(gw.token(who, ("readers",))), autocommit=True) as conn:
            conn.execute("SELECT count(*) FROM audit_secrets").fetchall()
    lines = wait_for(gw, lambda ls: len(statements_of(ls, who)) == 2)
    time.sleep(0.2)
    lines = audit_lines(gw)
    fired = [
        x
        for x in lines
        if x.get("event") == "alert"
        and x.get("rule") == "first_sensitive_access"
        and x.get("subject") == who
    ]
    assert len(fired) == 1 and fired[0]["table"] == "audit_secrets"
    state = json.loads((gw.state_dir / "alerts_first_access.json").read_text())
    assert "audit_secrets" in state[who]


def test_auth_failures_from_one_address_fire(gw: GatewayProcess, receiver: Receiver) -> None:
    for _ in range(3):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(gw.dsn("not-a-token"))
    lines = wait_for(
        gw,
        lambda ls: any(x.get("rule") == "auth_failures" for x in ls if x.get("event") == "alert"),
    )
    refused = [x for x in lines if x.get("event") == "login_refused"]
    assert len(refused) >= 3 and refused[-1]["reason"] == "token_invalid"
    assert "not-a-token" not in json.dumps(lines)
    alert = next(x for x in lines if x.get("rule") == "auth_failures")
    assert alert["client_host"] == "127.0.0.1" and alert["count"] == 3
    deadline = time.monotonic() + 10
    while not any(a["rule"] == "auth_failures" for a in receiver.alerts()):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_reopen_after_rotation_writes_a_new_file(gw: GatewayProcess) -> None:
    path = gw.state_dir / "audit.log"
    wait_for(gw, lambda ls: bool(ls))
    rotated = gw.state_dir / "audit.log.1"
    os.rename(path, rotated)
    gw.proc.send_signal(signal.SIGHUP)
    who = "rotate@example.com"
    deadline = time.monotonic() + 10
    while not path.exists():
        # The reopen happens at the next flush; a statement gives it something to write.
        with psycopg.connect(gw.dsn(gw.token(who, ("readers",))), autocommit=True) as conn:
            conn.execute("SELECT 1").fetchall()
        assert time.monotonic() < deadline, "audit log was not reopened"
        time.sleep(0.1)
    lines = wait_for(gw, lambda ls: bool(statements_of(ls, who)))
    assert statements_of(lines, who)
    assert gw.alive()
    assert audit_lines(gw, rotated)  # the old lines stay in the renamed file


def test_audit_summary_names_the_top_identity(gw: GatewayProcess, tmp_path: Path) -> None:
    thief = "thief@example.com"
    with psycopg.connect(gw.dsn(gw.token(thief, ("readers",))), autocommit=True) as conn:
        conn.execute("SELECT id, v FROM audit_big").fetchall()
    wait_for(gw, lambda ls: len(statements_of(ls, thief)) >= 1)
    # Rotated and current file together, as an operator would cat them.
    combined = tmp_path / "audit.log"
    combined.write_bytes(
        b"".join(p.read_bytes() for p in sorted(gw.state_dir.glob("audit.log*"), reverse=True))
    )
    out = io.StringIO()
    with redirect_stdout(out):
        assert gateway_cli(["audit", "summary", "--since", "1h", "--audit-log", str(combined)]) == 0
    text = out.getvalue()
    top_rows = text.split("Top identities by rows")[1].splitlines()[2]
    assert top_rows.rstrip().endswith(thief), text
    assert "Alerts fired:" in text and "large_results" in text


def test_a_multi_statement_simple_query(gw: GatewayProcess) -> None:
    """PostgreSQL: one line per Query message (its whole text, the rows of all its results);
    MySQL gives one line per result (mysql/test_mysql_audit.py)."""
    who = "audit-multi@example.com"
    with psycopg.connect(gw.dsn(gw.token(who, ("dba",))), autocommit=True) as conn:
        conn.execute("SELECT id FROM audit_big WHERE id < 3; SELECT 1")
    lines = wait_for(
        gw,
        lambda ls: any(x.get("event") == "session_end" and x["subject"] == who for x in ls),
    )
    mine = statements_of(lines, who)
    assert len(mine) == 1
    [line] = mine
    assert line["rows"] == 3 and line["text"] == "SELECT id FROM audit_big WHERE id < ?; SELECT ?"


def test_a_review_approval_id_goes_with_the_reviewed_statement(
    gw: GatewayProcess, admin_port: int
) -> None:
    """A query sent before the one held for review finishes while the review is pending:
    the approval id is the held statement's, not that one's."""
    import struct

    from .admin_client import AdminClient
    from .pgwire import Wire

    who = "audit-review@example.com"
    approver = AdminClient(
        f"http://127.0.0.1:{admin_port}", gw.token("lead@example.com", ("dba-leads",))
    )
    wire = Wire(gw.host, gw.port)
    assert wire.login(gw.token(who, ("reviewed",)), user=who)[0] == "ok"

    def q(sql: str) -> bytes:
        body = sql.encode() + b"\0"
        return b"Q" + struct.pack("!I", len(body) + 4) + body

    # Both queries in one write: the first runs, the second waits for its review.
    wire.send(q("SELECT pg_sleep(0.2)") + q("CREATE TABLE IF NOT EXISTS audit_reviewed (a int)"))
    request = approver.wait_pending(who)
    wait_for(gw, lambda ls: len(statements_of(ls, who)) == 1)  # pg_sleep finished
    status, _ = approver.approve(request["id"])
    assert status == 200
    ready = 0
    while ready < 2:
        ready += wire.message()[0] == "Z"
    wire.send(b"X\0\0\0\4")
    wire.close()
    lines = wait_for(
        gw,
        lambda ls: any(x.get("event") == "session_end" and x["subject"] == who for x in ls),
    )
    sleep, create = statements_of(lines, who)
    assert "pg_sleep" in sleep["text"] and "approval_id" not in sleep
    assert "audit_reviewed" in create["text"] and create["approval_id"] == request["id"]


def test_copy_to_stdout_counts_its_rows(gw: GatewayProcess) -> None:
    """COPY ... TO STDOUT sends one CopyData message per row: the audit line counts them
    (the large-result alert reads this count)."""
    who = "audit-copy@example.com"
    sql = "COPY (SELECT id FROM audit_big WHERE id <= 5) TO STDOUT"
    with (
        psycopg.connect(gw.dsn(gw.token(who, ("dba",))), autocommit=True) as conn,
        conn.cursor().copy(sql) as copy,
    ):
        data = b"".join(bytes(chunk) for chunk in copy)
    assert data.count(b"\n") == 5
    lines = wait_for(
        gw,
        lambda ls: any(x.get("event") == "session_end" and x["subject"] == who for x in ls),
    )
    (line,) = statements_of(lines, who)
    assert line["rows"] == 5 and line["bytes"] > 0, line
