"""Hot reload (issue 8): SIGHUP and POST /api/reload re-read the configuration file;
new sessions get the new policies, live sessions keep theirs unless their identity lost
the target, a bad file changes nothing; readiness for orchestrators."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import psycopg
import pytest

from .admin_client import AdminClient
from .conftest import GatewayProcess, StartGateway, free_port

pytestmark = pytest.mark.integration

ADMIN = ("ops@example.com", ("gateway-admins",))

POLICIES = """
[[policies]]
name = "admins"
groups = ["dba"]
targets = ["app-pg"]
allow = ["*"]

[[policies]]
name = "analysts"
groups = ["analysts"]
targets = ["app-pg"]
allow = ["read", "session"]

[[policies]]
name = "interns"
groups = ["interns"]
targets = ["app-pg"]
allow = ["read", "session"]
"""

# The analysts may no longer read; the interns lose the target altogether.
TIGHTER = """
[[policies]]
name = "admins"
groups = ["dba"]
targets = ["app-pg"]
allow = ["*"]

[[policies]]
name = "analysts"
groups = ["analysts"]
targets = ["app-pg"]
allow = ["session"]
"""


@pytest.fixture
def admin_port() -> int:
    return free_port()


@pytest.fixture
def gw(start_gateway: StartGateway, admin_port: int) -> GatewayProcess:
    extra = f"""
[admin]
listen = "127.0.0.1:{admin_port}"
groups = ["gateway-admins"]
allow_plaintext = true
"""
    return start_gateway(policies=POLICIES, extra=extra)


@pytest.fixture
def admin(gw: GatewayProcess, admin_port: int) -> AdminClient:
    """The admin API, once the gateway reports ready (SIGHUP before that is ignored)."""
    client = AdminClient(f"http://127.0.0.1:{admin_port}", gw.token(*ADMIN))
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(client.base_url + "/readyz", timeout=5) as response:
                if response.status == 200:
                    return client
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "gateway not ready"
        time.sleep(0.05)


def connect(gw: GatewayProcess, user: str, group: str) -> psycopg.Connection[Any]:
    return psycopg.connect(gw.dsn(gw.token(user, (group,)), user=user), autocommit=True)


def rewrite(gw: GatewayProcess, old: str, new: str) -> None:
    text = gw.config_path.read_text()
    assert old in text
    gw.config_path.write_text(text.replace(old, new))


def wait_log(gw: GatewayProcess, event: str, count: int = 1, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while gw.log_text().count(f'"event": "{event}"') < count:
        assert time.monotonic() < deadline, f"no {event} in the log"
        time.sleep(0.05)


def can_read(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1 FROM customers LIMIT 1").fetchall()
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def test_sighup_applies_new_policies_to_new_sessions(
    gw: GatewayProcess, admin: AdminClient
) -> None:
    analyst = connect(gw, "ana@example.com", "analysts")
    intern = connect(gw, "ian@example.com", "interns")
    assert can_read(analyst) and can_read(intern)
    rewrite(gw, POLICIES, TIGHTER)
    gw.proc.send_signal(signal.SIGHUP)
    wait_log(gw, "config_reloaded")
    # A new analyst session runs under the new policy.
    with connect(gw, "ana@example.com", "analysts") as fresh:
        assert not can_read(fresh)
        fresh.execute("SET application_name = 'reloaded'")  # class session: still allowed
    # The live analyst session keeps the policy it started with (documented).
    assert can_read(analyst)
    # The intern's group lost the target: the live session was ended, new ones refused.
    with pytest.raises(psycopg.OperationalError, match="session ended by an administrator"):
        intern.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        connect(gw, "ian@example.com", "interns")
    analyst.close()
    intern.close()
    # The recording of a new session carries the new policy digest.
    line = next(json.loads(x) for x in gw.log_text().splitlines() if '"config_reloaded"' in x)
    assert line["policy_digest"] != line["previous_policy_digest"]
    assert "policies" in line["changed"]


def test_a_bad_file_changes_nothing(gw: GatewayProcess, admin: AdminClient) -> None:
    rewrite(
        gw,
        'allow = ["read", "session"]\n\n[[policies]]\nname = "interns"',
        'allow = ["read", "sesion"]\n\n[[policies]]\nname = "interns"',
    )
    gw.proc.send_signal(signal.SIGHUP)
    wait_log(gw, "config_reload_rejected")
    assert gw.alive()
    with connect(gw, "ana@example.com", "analysts") as conn:
        assert can_read(conn)
    status, body = admin.call("POST", "/api/reload")
    assert status == 400
    assert any("sesion" in e for e in body["errors"]), body
    # Not TOML at all.
    gw.config_path.write_text(gw.config_path.read_text() + "\n[[policies\n")
    status, body = admin.call("POST", "/api/reload")
    assert status == 400, body
    with connect(gw, "ana@example.com", "analysts") as conn:
        assert can_read(conn)


def test_reload_through_the_api_reports_what_needs_a_restart(
    gw: GatewayProcess, admin: AdminClient
) -> None:
    approver = AdminClient(admin.base_url, gw.token("bob@example.com", ("dba",)))
    assert approver.call("POST", "/api/reload")[0] == 403  # admins only
    rewrite(gw, POLICIES, TIGHTER)
    rewrite(gw, 'shutdown_grace = "3s"', 'shutdown_grace = "4s"')
    status, body = admin.call("POST", "/api/reload")
    assert status == 200, body
    assert body["status"] == "reloaded" and body["by"] == ADMIN[0]
    assert "policies" in body["changed"]
    assert body["restart_required"] == ["gateway.shutdown_grace"]
    assert len(body["sessions_ended"]) == 0
    with connect(gw, "ana@example.com", "analysts") as conn:
        assert not can_read(conn)
    # Admin groups are reloadable: a new admin group is let in at once.
    rewrite(gw, 'groups = ["gateway-admins"]', 'groups = ["gateway-admins", "sre"]')
    assert admin.call("POST", "/api/reload")[0] == 200
    sre = AdminClient(admin.base_url, gw.token("sam@example.com", ("sre",)))
    assert sre.call("GET", "/api/sessions")[0] == 200


def test_health_and_readiness(gw: GatewayProcess, admin: AdminClient) -> None:
    for path, expected in (("/healthz", "ok"), ("/readyz", "ready")):
        with urllib.request.urlopen(admin.base_url + path, timeout=5) as response:
            assert response.status == 200
            assert json.loads(response.read())["status"] == expected
    # Draining for shutdown: not ready, while the live session may still finish.
    conn = connect(gw, "ana@example.com", "analysts")
    gw.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while True:
        try:
            urllib.request.urlopen(admin.base_url + "/readyz", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            body = json.loads(exc.read())
            assert body["status"] == "not ready"
            assert "shutting down" in body["reasons"][0]
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    conn.close()


def test_reload_can_end_the_sessions_whose_policies_changed(
    gw: GatewayProcess, admin: AdminClient
) -> None:
    """`reload_live_sessions = "end"` (or the API's `live_sessions`): a live session whose
    policies changed is ended so that it reconnects under the new ones; a session whose
    policies did not change goes on."""
    analyst = connect(gw, "ana@example.com", "analysts")
    dba = connect(gw, "dee@example.com", "dba")
    rewrite(gw, POLICIES, TIGHTER)
    status, body = admin.call("POST", "/api/reload", {"live_sessions": "sometimes"})
    assert status == 400
    status, body = admin.call("POST", "/api/reload", {"live_sessions": "end"})
    assert status == 200, body
    assert len(body["sessions_ended"]) == 1
    with pytest.raises(psycopg.OperationalError, match="policies of this session changed"):
        analyst.execute("SELECT 1")
    assert dba.execute("SELECT 1").fetchone() == (1,)
    with connect(gw, "ana@example.com", "analysts") as again:
        assert not can_read(again)  # the new policy
    # The same through the file, for SIGHUP: a second change ends the reconnected session.
    fresh = connect(gw, "ana@example.com", "analysts")
    rewrite(gw, 'shutdown_grace = "3s"', 'shutdown_grace = "3s"\nreload_live_sessions = "end"')
    rewrite(gw, 'allow = ["session"]', 'allow = ["session", "transaction"]')
    gw.proc.send_signal(signal.SIGHUP)
    wait_log(gw, "config_reloaded", count=2)
    with pytest.raises(psycopg.OperationalError, match="policies of this session changed"):
        fresh.execute("SELECT 1")
    assert dba.execute("SELECT 1").fetchone() == (1,)
    for conn in (analyst, fresh, dba):
        conn.close()
