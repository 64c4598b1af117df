"""The admin API on a real aiohttp server (127.0.0.1, port 0), real tokens verified against a
real JWKS file, driven over HTTP by aiohttp and by ``gateway approvals`` (the CLI); the
approvals webhook against a real aiohttp receiver; the wiring in Gateway.start/stop."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import ssl
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.admin import AdminServer, AiohttpTransport, start_admin, webhook_notifier
from gateway.approvals import ApprovalBroker, ApprovalRequest
from gateway.approvals.notify import WebhookNotifier, verify_signature
from gateway.auth.jwt import TokenVerifier
from gateway.cli import main
from gateway.config import Config, ConfigError, parse_config
from gateway.embedded.certs import make_self_signed
from gateway.keys import generate_signing_key, mint_token
from gateway.net.tls import server_context
from gateway.runtime import Runtime
from gateway.server import Gateway

ISSUER = "https://idp.test/"
AUDIENCE = "db-gateway-test"

ALICE = ("alice", ("analysts",))  # the requester
BOB = ("bob", ("dba-leads",))  # an approver
ROOT = ("root", ("gateway-admins",))  # an admin, not an approver
EVE = ("eve", ("analysts",))  # neither
OLIVE = ("olive", ("ops-leads",))  # an approver of another policy (the ops team)


@dataclass
class Keys:
    key_path: Path
    jwks: Path
    other_key_path: Path
    cert: Path
    cert_key: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    base = tmp_path_factory.mktemp("admin-keys")
    key_path = generate_signing_key(base / "idp", "ES256")
    other = generate_signing_key(base / "other", "ES256")
    cert, cert_key = make_self_signed(base / "server.crt", base / "server.key")
    return Keys(key_path, base / "idp" / "jwks.json", other, cert, cert_key)


def token(keys: Keys, who: tuple[str, tuple[str, ...]], *, key: Path | None = None) -> str:
    sub, groups = who
    return mint_token(
        key or keys.key_path, sub, list(groups), 600, audience=AUDIENCE, issuer=ISSUER
    )


def config_text(
    keys: Keys,
    state_dir: Path,
    *,
    plaintext: bool = True,
    listen: str = "127.0.0.1:0",
    approvals: str = "",
) -> str:
    return textwrap.dedent(
        f"""
        [gateway]
        state_dir = "{state_dir}"
        session_dir = "{state_dir / "sessions"}"
        shutdown_grace = "1s"

        [recording]
        enabled = false

        [auth]
        issuer = "{ISSUER}"
        audience = "{AUDIENCE}"
        jwks_file = "{keys.jwks}"

        [admin]
        listen = "{listen}"
        allow_plaintext = {"true" if plaintext else "false"}

        [approvals]
        {approvals}

        [[targets]]
        name = "app-pg"
        protocol = "postgres"
        listen = "127.0.0.1:0"
        host = "127.0.0.1"
        port = 5432
        database = "app"
        user = "gateway"

        [[policies]]
        name = "analysts"
        groups = ["analysts"]
        targets = ["app-pg"]
        allow = ["read", "ddl"]
        review = ["ddl"]
        approvers = ["dba-leads"]

        [[policies]]
        name = "ops"
        groups = ["ops"]
        targets = ["app-pg"]
        allow = ["read"]
        on_limit = "approval"
        max_rows = 1000
        approvers = ["ops-leads"]
        """
    )


class Outcome:
    def __init__(self) -> None:
        self.decided: asyncio.Future[ApprovalRequest] = asyncio.get_running_loop().create_future()
        self.events: list[tuple[str, dict[str, str]]] = []
        self.event_seen = asyncio.Event()

    def on_decision(self, request: ApprovalRequest) -> None:
        self.decided.set_result(request)

    def on_event(self, kind: str, detail: dict[str, str]) -> None:
        self.events.append((kind, detail))
        self.event_seen.set()


def open_request(
    broker: ApprovalBroker, *, subject: str = "alice", timeout: float = 60.0
) -> tuple[ApprovalRequest, Outcome]:
    outcome = Outcome()
    request = broker.open(
        kind="limit",
        session_id="20260101T000000Z-abc",
        subject=subject,
        groups=["analysts"],
        target="app-pg",
        statement="SELECT *\nFROM customers",
        policy="analysts",
        approvers=["dba-leads"],
        timeout=timeout,
        reason="max_rows=100",
        rows=100,
        nbytes=5000,
        on_decision=outcome.on_decision,
        on_event=outcome.on_event,
    )
    return request, outcome


@dataclass
class Admin:
    keys: Keys
    config: Config
    runtime: Runtime
    server: AdminServer
    http: aiohttp.ClientSession
    ssl: ssl.SSLContext | bool = True
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def broker(self) -> ApprovalBroker:
        return self.runtime.approvals

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, who: tuple[str, tuple[str, ...]]) -> str:
        if who[0] not in self.tokens:
            self.tokens[who[0]] = token(self.keys, who)
        return self.tokens[who[0]]

    async def call(
        self,
        method: str,
        path: str,
        who: tuple[str, tuple[str, ...]] | None = None,
        *,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        sent = dict(headers or {})
        if who is not None:
            sent["Authorization"] = f"Bearer {self.token(who)}"
        if body is not None:
            data = json.dumps(body).encode()
        async with self.http.request(
            method, self.url + path, data=data, headers=sent, ssl=self.ssl
        ) as response:
            text = await response.text()
            return response.status, json.loads(text), response.headers


@asynccontextmanager
async def running_admin(
    keys: Keys, state_dir: Path, *, plaintext: bool = True
) -> AsyncIterator[Admin]:
    config = parse_config(config_text(keys, state_dir, plaintext=plaintext), state_dir)
    verifier = TokenVerifier(config.auth)
    await verifier.start()
    runtime = Runtime(
        config,
        verifier=verifier,
        recorder=None,
        server_tls=server_context(keys.cert, keys.cert_key),
    )
    server = await start_admin(runtime, config)
    client_tls: ssl.SSLContext | bool = (
        True if plaintext else ssl.create_default_context(cafile=str(keys.cert))
    )
    try:
        async with aiohttp.ClientSession() as http:
            yield Admin(keys, config, runtime, server, http, client_tls)
    finally:
        for request in runtime.approvals.pending():
            runtime.approvals.withdraw(request.id, "test over")
        await server.close()
        await verifier.close()


@pytest.fixture
async def admin(keys: Keys, tmp_path: Path) -> AsyncIterator[Admin]:
    async with running_admin(keys, tmp_path) as running:
        yield running


async def cli(*argv: str) -> int:
    """``gateway approvals ...`` in a thread: it blocks on urllib while the API runs here."""
    return await asyncio.to_thread(main, ["approvals", *argv])


# -- authentication and access -----------------------------------------------------------


async def test_healthz_needs_no_token(admin: Admin) -> None:
    status, body, _ = await admin.call("GET", "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    assert admin.server.address[0] == "127.0.0.1" and admin.server.address[1] > 0


async def test_missing_token_is_401_with_bearer_challenge(admin: Admin) -> None:
    status, body, headers = await admin.call("GET", "/api/approvals")
    assert status == 401 and body == {"error": "authentication required"}
    assert headers["WWW-Authenticate"] == "Bearer"
    status, _, headers = await admin.call(
        "GET", "/api/approvals", headers={"Authorization": "Basic Ym9iOnNlY3JldA=="}
    )
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    # Unknown paths do not reveal themselves before authentication.
    status, _, _ = await admin.call("GET", "/api/nothing-here")
    assert status == 401


async def test_bad_tokens_are_401_without_the_reason(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    forged = token(admin.keys, BOB, key=admin.keys.other_key_path)
    with caplog.at_level(logging.INFO, logger="gateway.admin"):
        for bad in ("not-a-jwt", forged):
            status, body, headers = await admin.call(
                "GET", "/api/approvals", headers={"Authorization": f"Bearer {bad}"}
            )
            assert status == 401 and body == {"error": "invalid token"}
            assert headers["WWW-Authenticate"].startswith("Bearer")
    assert any(getattr(r, "reason", None) for r in caplog.records)  # logged for us
    assert forged not in caplog.text  # the token itself never


async def test_outsider_is_403(admin: Admin) -> None:
    status, body, _ = await admin.call("GET", "/api/approvals", EVE)
    assert status == 403 and "admin or approver" in body["error"]


async def test_admin_may_list_but_only_approvers_decide(admin: Admin) -> None:
    request, outcome = open_request(admin.broker)
    status, body, _ = await admin.call("GET", "/api/approvals", ROOT)
    assert status == 200 and [a["id"] for a in body["approvals"]] == [request.id]
    status, body, _ = await admin.call("POST", f"/api/approvals/{request.id}/approve", ROOT)
    assert status == 403 and "dba-leads" in body["error"]
    assert not outcome.decided.done() and request.state == "pending"


async def test_approvers_see_only_requests_of_their_groups(admin: Admin) -> None:
    # An approver of another team (ops-leads) may use the API, but not read this request:
    # its statement text, requester and reason are not theirs. For them it does not exist
    # (404, like an unknown id), and they cannot decide it. Its approvers and admins see it,
    # and so does its requester when they may use the API at all (an approver of another
    # team); the history follows the same rule.
    request, outcome = open_request(admin.broker, subject="olive2")
    requester = ("olive2", ("ops-leads",))
    for who, sees in ((OLIVE, False), (BOB, True), (ROOT, True), (requester, True)):
        status, body, _ = await admin.call("GET", "/api/approvals", who)
        assert status == 200 and [a["id"] for a in body["approvals"]] == (
            [request.id] if sees else []
        ), who
        status, body, _ = await admin.call("GET", f"/api/approvals/{request.id}", who)
        assert status == (200 if sees else 404), who
    status, body, _ = await admin.call("POST", f"/api/approvals/{request.id}/approve", OLIVE)
    assert status == 404 and request.id in body["error"]
    assert not outcome.decided.done() and request.state == "pending"
    status, _, _ = await admin.call("POST", f"/api/approvals/{request.id}/deny", BOB)
    assert status == 200
    status, body, _ = await admin.call("GET", "/api/approvals?state=decided", OLIVE)
    assert body["approvals"] == []
    status, body, _ = await admin.call("GET", "/api/approvals?state=decided", BOB)
    assert [a["id"] for a in body["approvals"]] == [request.id]


async def test_requester_cannot_approve_own_request(admin: Admin) -> None:
    requester = ("alice", ("analysts", "dba-leads"))  # even as an approver
    request, outcome = open_request(admin.broker, subject="alice")
    status, body, _ = await admin.call("POST", f"/api/approvals/{request.id}/approve", requester)
    assert status == 403 and "own request" in body["error"]
    assert not outcome.decided.done()


# -- listing and deciding --------------------------------------------------------------------


async def test_list_and_show(admin: Admin) -> None:
    status, body, headers = await admin.call("GET", "/api/approvals", BOB)
    assert status == 200 and body["approvals"] == [] and isinstance(body["now"], float)
    assert headers["Cache-Control"] == "no-store"
    request, _ = open_request(admin.broker)
    status, body, _ = await admin.call("GET", "/api/approvals", BOB)
    assert body["approvals"] == [request.to_json()]
    status, body, _ = await admin.call("GET", f"/api/approvals/{request.id}", BOB)
    assert status == 200 and body["id"] == request.id and body["rows_so_far"] == 100
    status, body, _ = await admin.call("GET", "/api/approvals/apr_unknown", BOB)
    assert status == 404 and "apr_unknown" in body["error"]
    status, body, _ = await admin.call("GET", "/api/approvals?state=everything", BOB)
    assert status == 400


async def test_approve_resolves_the_session_with_its_scope(admin: Admin) -> None:
    request, outcome = open_request(admin.broker)
    status, body, _ = await admin.call(
        "POST",
        f"/api/approvals/{request.id}/approve",
        BOB,
        body={"scope": "session", "reason": "quarter close"},
    )
    assert status == 200
    assert (body["state"], body["scope"], body["decided_by"]) == ("approved", "session", "bob")
    decided = await asyncio.wait_for(outcome.decided, 1)
    assert decided is request and decided.approved and decided.scope == "session"
    assert decided.decision_reason == "quarter close"
    status, body, _ = await admin.call("POST", f"/api/approvals/{request.id}/deny", BOB)
    assert status == 409 and "no longer pending" in body["error"]


async def test_approve_without_body_is_statement_scope(admin: Admin) -> None:
    request, outcome = open_request(admin.broker)
    status, body, _ = await admin.call("POST", f"/api/approvals/{request.id}/approve", BOB)
    assert status == 200 and body["scope"] == "statement"
    assert (await asyncio.wait_for(outcome.decided, 1)).approved


async def test_deny_with_reason_then_history(admin: Admin) -> None:
    request, outcome = open_request(admin.broker)
    status, body, _ = await admin.call(
        "POST", f"/api/approvals/{request.id}/deny", BOB, body={"reason": "use the report"}
    )
    assert status == 200 and body["state"] == "denied"
    decided = await asyncio.wait_for(outcome.decided, 1)
    assert decided.state == "denied" and decided.decision_reason == "use the report"
    status, body, _ = await admin.call("GET", "/api/approvals", BOB)
    assert body["approvals"] == []
    status, body, _ = await admin.call("GET", "/api/approvals?state=decided", BOB)
    assert [(a["id"], a["state"]) for a in body["approvals"]] == [(request.id, "denied")]
    status, body, _ = await admin.call("GET", f"/api/approvals/{request.id}", ROOT)
    assert status == 200 and body["decision_reason"] == "use the report"


@pytest.mark.parametrize(
    ("action", "data", "message"),
    [
        ("approve", b"{not json", "not JSON"),
        ("approve", b"\xff\xfe", "not JSON"),
        ("approve", b"[1, 2]", "JSON object"),
        ("approve", b'{"scope": "forever"}', "scope must be"),
        ("approve", b'{"scope": 1}', "scope must be a string"),
        ("approve", b'{"approve": true}', "unknown field"),
        ("deny", b'{"scope": "session"}', "unknown field"),
        ("approve", b'{"reason": "' + b"x" * (64 * 1024) + b'"}', "64 KiB"),
    ],
)
async def test_bad_bodies_are_400(admin: Admin, action: str, data: bytes, message: str) -> None:
    request, outcome = open_request(admin.broker)
    status, body, _ = await admin.call(
        "POST",
        f"/api/approvals/{request.id}/{action}",
        BOB,
        data=data,
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and message in body["error"]
    assert request.state == "pending" and not outcome.decided.done()


async def test_errors_of_the_router_are_json(admin: Admin) -> None:
    status, body, headers = await admin.call("GET", "/api/approvals/apr_x/approve", BOB)
    assert status == 405 and body == {"error": "method not allowed"}
    assert "POST" in headers["Allow"]
    status, body, _ = await admin.call("GET", "/api/elsewhere", BOB)
    assert status == 404 and body == {"error": "not found"}


async def test_timed_out_request_cannot_be_approved(admin: Admin) -> None:
    request, outcome = open_request(admin.broker, timeout=0.05)
    assert (await asyncio.wait_for(outcome.decided, 2)).state == "timed_out"
    status, _, _ = await admin.call("POST", f"/api/approvals/{request.id}/approve", BOB)
    assert status == 409


# -- the CLI ---------------------------------------------------------------------------------


async def test_cli_list_show_approve_deny(admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    first, first_outcome = open_request(admin.broker)
    second, second_outcome = open_request(admin.broker)
    bob = admin.token(BOB)

    assert await cli("list", "--url", admin.url, "--token", bob) == 0
    out = capsys.readouterr().out
    header, *lines = out.splitlines()
    assert header.split()[:6] == ["ID", "KIND", "REQUESTER", "TARGET", "ROWS", "AGE"]
    assert [line.split()[0] for line in lines] == [first.id, second.id]
    assert "alice" in lines[0] and "max_rows=100: SELECT * FROM customers" in lines[0]
    assert bob not in out

    assert await cli("show", first.id, "--url", admin.url, "--token", bob) == 0
    out = capsys.readouterr().out
    assert f"id:          {first.id}" in out and "SELECT *\nFROM customers" in out

    assert (
        await cli(
            "approve",
            first.id,
            "--scope",
            "session",
            "--reason",
            "ok",
            "--url",
            admin.url,
            "--token",
            bob,
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == f"{first.id}: approved (scope: session)"
    assert (await asyncio.wait_for(first_outcome.decided, 1)).scope == "session"

    assert await cli("deny", second.id, "--reason", "no", "--url", admin.url, "--token", bob) == 0
    assert capsys.readouterr().out.strip() == f"{second.id}: denied"
    assert (await asyncio.wait_for(second_outcome.decided, 1)).decision_reason == "no"

    assert (
        await cli("list", "--state", "decided", "--json", "--url", admin.url, "--token", bob) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert [a["id"] for a in data["approvals"]] == [second.id, first.id]


async def test_cli_reads_url_and_token_from_the_environment(
    admin: Admin, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_URL", admin.url)
    monkeypatch.setenv("GATEWAY_TOKEN", admin.token(ROOT))
    assert await cli("list") == 0
    assert capsys.readouterr().out.strip() == "no pending approval requests"


async def test_cli_api_errors_exit_1_with_the_message(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    request, _ = open_request(admin.broker)
    url = ("--url", admin.url)
    assert await cli("approve", "apr_nope", *url, "--token", admin.token(BOB)) == 1
    assert "HTTP 404: no approval request apr_nope" in capsys.readouterr().err
    assert await cli("approve", request.id, *url, "--token", admin.token(ROOT)) == 1
    assert "HTTP 403: only members of the approver groups" in capsys.readouterr().err
    assert await cli("list", *url, "--token", "garbage") == 1
    assert "HTTP 401: invalid token" in capsys.readouterr().err


async def test_cli_usage_and_connection_errors_exit_2(
    admin: Admin, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_TOKEN", raising=False)
    assert await cli("list", "--url", admin.url) == 2
    assert "no token" in capsys.readouterr().err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert await cli("list", "--url", closed, "--token", "t") == 2
    assert "cannot reach" in capsys.readouterr().err
    assert admin.url.startswith("http://")  # plain HTTP: https:// is the wrong scheme
    assert await cli("list", "--url", "https://" + admin.url[7:], "--token", "t") == 2
    assert "pass --url http://" in capsys.readouterr().err
    assert await cli("list", "--url", "ftp://x", "--token", "t") == 2
    with pytest.raises(SystemExit) as info:
        await cli("approve", "apr_x", "--scope", "forever")
    assert info.value.code == 2
    capsys.readouterr()


async def test_cli_output_cannot_drive_the_terminal(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = Outcome()
    admin.broker.open(
        kind="review",
        session_id="s",
        subject="alice",
        groups=["analysts"],
        target="app-pg",
        statement="DROP TABLE t -- \x1b]0;owned\x07\x1b[2J",
        policy="analysts",
        approvers=["dba-leads"],
        timeout=60,
        reason="review:ddl",
        on_decision=outcome.on_decision,
    )
    assert await cli("list", "--url", admin.url, "--token", admin.token(BOB)) == 0
    assert "\x1b" not in capsys.readouterr().out


# -- TLS ---------------------------------------------------------------------------------------


async def test_https_with_the_gateway_certificate(
    keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_admin(keys, tmp_path, plaintext=False) as admin:
        assert admin.url.startswith("https://127.0.0.1:")
        request, _ = open_request(admin.broker)
        status, body, _ = await admin.call("GET", "/api/approvals", BOB)
        assert status == 200 and body["approvals"][0]["id"] == request.id
        bob = admin.token(BOB)
        assert (
            await cli("list", "--url", admin.url, "--token", bob, "--cafile", str(keys.cert)) == 0
        )
        assert request.id in capsys.readouterr().out
        # Not trusted without the CA: a connection error, not an API error.
        assert await cli("list", "--url", admin.url, "--token", bob) == 2
        assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err
        assert await cli("list", "--url", admin.url, "--token", bob, "--insecure") == 0
        capsys.readouterr()


async def test_plaintext_only_on_loopback(keys: Keys, tmp_path: Path) -> None:
    # Refused when the configuration is read (check-config and start alike).
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(keys, tmp_path, listen="0.0.0.0:0"), tmp_path)
    assert info.value.errors == [
        "admin.allow_plaintext: plain HTTP is only allowed on a loopback listen address"
    ]


# -- webhook -----------------------------------------------------------------------------------


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]


@asynccontextmanager
async def receiver(
    answer: Callable[[int], Awaitable[web.Response]],
) -> AsyncIterator[tuple[str, list[Delivery]]]:
    """A webhook receiver on 127.0.0.1:0; ``answer(n)`` answers the n-th POST (1-based)."""
    received: list[Delivery] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(Delivery(await request.read(), dict(request.headers)))
        return await answer(len(received))

    app = web.Application()
    app.router.add_post("/hooks/approvals", hook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/hooks/approvals", received
    finally:
        await runner.cleanup()


def notifier(url: str, **kw: Any) -> WebhookNotifier:
    kw.setdefault("backoff", (0.01,))
    return WebhookNotifier(url, transport=AiohttpTransport(), **kw)


async def test_webhook_is_signed_over_the_raw_body() -> None:
    secret = b"s3cret-for-tests"

    async def ok(n: int) -> web.Response:
        return web.json_response({"ok": True})

    async with receiver(ok) as (url, received):
        notify = notifier(url, secret=secret, admin_url="https://gw.example:8081")
        broker = ApprovalBroker(notify=notify)
        request, outcome = open_request(broker)
        await asyncio.wait_for(outcome.event_seen.wait(), 5)
        await notify.close()
    assert outcome.events == [("notified", {"status": "200"})]
    assert len(received) == 1
    delivery = received[0]
    expected = "sha256=" + hmac.new(secret, delivery.body, hashlib.sha256).hexdigest()
    assert delivery.headers["X-Gateway-Signature"] == expected
    assert verify_signature(secret, delivery.body, delivery.headers["X-Gateway-Signature"])
    assert delivery.headers["X-Gateway-Event"] == "approval_requested"
    assert delivery.headers["X-Gateway-Delivery"] == request.id
    assert delivery.headers["Content-Type"] == "application/json"
    payload = json.loads(delivery.body)
    assert payload["event"] == "approval_requested"
    assert payload["request"]["id"] == request.id
    assert payload["request"]["requester"] == "alice"
    assert payload["approve_url"] == f"https://gw.example:8081/api/approvals/{request.id}/approve"
    assert payload["deny_url"].endswith(f"/api/approvals/{request.id}/deny")
    broker.withdraw(request.id, "test over")


async def test_webhook_without_secret_is_unsigned_and_has_no_hints() -> None:
    async def ok(n: int) -> web.Response:
        return web.Response(status=204)

    async with receiver(ok) as (url, received):
        notify = notifier(url)
        broker = ApprovalBroker(notify=notify)
        request, outcome = open_request(broker)
        await notify.wait()
        await notify.close()
    assert outcome.events == [("notified", {"status": "204"})]
    assert "X-Gateway-Signature" not in received[0].headers
    assert "approve_url" not in json.loads(received[0].body)
    broker.withdraw(request.id, "test over")


async def test_webhook_5xx_is_retried_three_times_then_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(n: int) -> web.Response:
        return web.Response(status=500)

    async with receiver(broken) as (url, received):
        notify = notifier(url + "?token=do-not-log", secret=b"k")
        broker = ApprovalBroker(notify=notify)
        with caplog.at_level(logging.INFO, logger="gateway"):
            request, outcome = open_request(broker)
            await notify.wait()
        await notify.close()
    assert len(received) == 3
    assert len({d.body for d in received}) == 1  # the same signed bytes every time
    assert outcome.events == [("notify_failed", {"error": "HTTP 500 after 3 attempt(s)"})]
    failed = [r for r in caplog.records if getattr(r, "event", "") == "approval_notify_failed"]
    assert len(failed) == 1 and failed[0].webhook == url.rsplit("/hooks", 1)[0]  # type: ignore[attr-defined]
    assert "do-not-log" not in caplog.text
    broker.withdraw(request.id, "test over")


async def test_webhook_recovers_after_a_5xx_and_4xx_is_final() -> None:
    async def flaky(n: int) -> web.Response:
        return web.Response(status=503 if n == 1 else 200)

    async with receiver(flaky) as (url, received):
        notify = notifier(url)
        broker = ApprovalBroker(notify=notify)
        request, outcome = open_request(broker)
        await notify.wait()
        await notify.close()
    assert len(received) == 2 and outcome.events == [("notified", {"status": "200"})]
    broker.withdraw(request.id, "test over")

    async def refuse(n: int) -> web.Response:
        return web.Response(status=403)

    async with receiver(refuse) as (url, received):
        notify = notifier(url)
        broker = ApprovalBroker(notify=notify)
        request, outcome = open_request(broker)
        await notify.wait()
        await notify.close()
    assert len(received) == 1
    assert outcome.events == [("notify_failed", {"error": "HTTP 403 after 1 attempt(s)"})]
    broker.withdraw(request.id, "test over")


async def test_webhook_connection_refused_and_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    notify = notifier(closed)
    broker = ApprovalBroker(notify=notify)
    request, outcome = open_request(broker)
    await notify.wait()
    await notify.close()
    [(kind, detail)] = outcome.events
    assert kind == "notify_failed" and detail["error"].startswith("cannot connect to 127.0.0.1:")
    assert detail["error"].endswith("after 3 attempt(s)")
    broker.withdraw(request.id, "test over")

    async def slow(n: int) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(status=200)

    async with receiver(slow) as (url, _):
        notify = notifier(url, timeout=0.05, attempts=2)
        broker = ApprovalBroker(notify=notify)
        request, outcome = open_request(broker)
        await notify.wait()
        await notify.close()
    assert outcome.events == [
        ("notify_failed", {"error": "no answer within 0.05s after 2 attempt(s)"})
    ]
    broker.withdraw(request.id, "test over")


async def test_webhook_result_is_not_reported_to_a_decided_request() -> None:
    release = asyncio.Event()

    async def held(n: int) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    async with receiver(held) as (url, received):
        notify = notifier(url)
        broker = ApprovalBroker(notify=notify)
        request, outcome = open_request(broker)
        while not received:
            await asyncio.sleep(0.01)
        broker.withdraw(request.id, "client went away")
        release.set()
        await notify.wait()
        await notify.close()
    assert outcome.events == []


async def test_notifier_close_abandons_deliveries_in_flight() -> None:
    async def slow(n: int) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(status=200)

    async with receiver(slow) as (url, received):
        notify = notifier(url)
        broker = ApprovalBroker(notify=notify)
        request, outcome = open_request(broker)
        while not received:
            await asyncio.sleep(0.01)
        assert notify.in_flight == 1
        await notify.close()
        assert notify.in_flight == 0
        notify(request)  # closed: ignored
        assert notify.in_flight == 0
    assert outcome.events == []
    broker.withdraw(request.id, "test over")


# -- wiring in Gateway.start / stop --------------------------------------------------------------


async def test_gateway_starts_admin_and_webhook(
    keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GW_TEST_WEBHOOK_SECRET", "shh")

    async def ok(n: int) -> web.Response:
        return web.Response(status=200)

    async with receiver(ok) as (url, received):
        approvals = f'webhook_url = "{url}"\nwebhook_secret_env = "GW_TEST_WEBHOOK_SECRET"'
        config = parse_config(config_text(keys, tmp_path, approvals=approvals), tmp_path)
        gateway = Gateway(config)
        with caplog.at_level(logging.INFO, logger="gateway"):
            await gateway.start()
        try:
            assert gateway.admin_address is not None
            host, port = gateway.admin_address
            assert host == "127.0.0.1" and port > 0
            [ready] = [r for r in caplog.records if getattr(r, "event", "") == "ready"]
            assert ready.admin == f"127.0.0.1:{port}"  # type: ignore[attr-defined]
            assert ready.admin_url == f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
            assert gateway.runtime is not None
            assert gateway.runtime.approvals.notify is gateway.notifier
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://{host}:{port}/healthz") as response,
            ):
                assert response.status == 200
            request, outcome = open_request(gateway.runtime.approvals)
            await asyncio.wait_for(outcome.event_seen.wait(), 5)
            assert verify_signature(
                b"shh", received[0].body, received[0].headers["X-Gateway-Signature"]
            )
            payload = json.loads(received[0].body)
            assert payload["approve_url"].startswith(f"http://127.0.0.1:{port}/api/approvals/")
            gateway.runtime.approvals.withdraw(request.id, "test over")
        finally:
            await gateway.stop()
        assert gateway.admin_address is None and gateway.notifier is None
        with socket.socket() as s:
            assert s.connect_ex((host, port)) != 0  # the admin listener is closed


async def test_gateway_refuses_to_start_without_the_webhook_secret(
    keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GW_TEST_MISSING_SECRET", raising=False)
    approvals = (
        'webhook_url = "http://127.0.0.1:9/hook"\nwebhook_secret_env = "GW_TEST_MISSING_SECRET"'
    )
    config = parse_config(config_text(keys, tmp_path, approvals=approvals), tmp_path)
    gateway = Gateway(config)
    with pytest.raises(ConfigError) as info:
        await gateway.start()
    assert info.value.errors == [
        "approvals.webhook_secret_env: environment variable GW_TEST_MISSING_SECRET is not set"
    ]
    await gateway.stop()
    assert gateway.runtime is None


async def test_webhook_notifier_from_config(keys: Keys, tmp_path: Path) -> None:
    config = parse_config(config_text(keys, tmp_path), tmp_path)
    assert webhook_notifier(config, None) is None


def test_verify_signature_refuses_a_non_ascii_header_without_raising() -> None:
    assert not verify_signature(b"k" * 32, b"{}", "sha256=\u00e9\u00e9")
