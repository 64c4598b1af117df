"""The web console in a real browser (Debian's Chromium via Playwright) against the real
gateway, a real PostgreSQL and a real client (psycopg in a thread) whose result waits for an
approval. One browser for the module; each person gets their own browser context (cookies).
"""

from __future__ import annotations

import http.client
import re
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from .admin_client import AdminClient
from .browser import chromium
from .conftest import GatewayProcess, StartGateway, free_port, wait_listening

pytestmark = pytest.mark.integration

BIG = 3000
APPROVER = "bob@example.com"
ADMIN = "root@example.com"
AUDITOR = "audrey@example.com"
PHONE = {"width": 390, "height": 844}
SCRIPT = "<script>window.__pwned = 1</script>"

POLICIES = """
[[policies]]
name = "admins"
groups = ["dba"]
targets = ["app-pg"]
allow = ["*"]

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
name = "readers"
groups = ["readers"]
targets = ["app-pg"]
allow = ["read", "session", "transaction"]

[[policies]]
name = "ops"
groups = ["ops"]
targets = ["app-pg"]
allow = ["read"]
max_rows = 100
on_limit = "approval"
approvers = ["ops-leads"]
"""


@pytest.fixture(scope="module")
def admin_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gw(start_gateway: StartGateway, admin_port: int) -> GatewayProcess:
    extra = f"""
[admin]
listen = "127.0.0.1:{admin_port}"
groups = ["gateway-admins"]
auditor_groups = ["auditors"]
allow_plaintext = true
"""
    gw = start_gateway(policies=POLICIES, extra=extra)
    with psycopg.connect(gw.dsn(gw.token("dba@example.com", ("dba",))), autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS console_big")
        c.execute(
            "CREATE TABLE console_big AS SELECT g AS id, repeat('x', 20) AS pad "
            f"FROM generate_series(1, {BIG}) g"
        )
    return gw


@pytest.fixture(scope="module")
def base(admin_port: int) -> str:
    return f"http://127.0.0.1:{admin_port}/console"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def api(gw: GatewayProcess, admin_port: int) -> AdminClient:
    return AdminClient(f"http://127.0.0.1:{admin_port}", gw.token(APPROVER, ("dba-leads",)))


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    yield ctx
    ctx.close()


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/login")
    page.fill("textarea[name=token]", token)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/console/login" not in page.url, page.inner_text("main")


def paused_query(gw: GatewayProcess, user: str, sql: str, *groups: str) -> Future[Any]:
    """A client whose result pauses at max_rows=100; the future holds its rows (or error)."""
    conn = psycopg.connect(gw.dsn(gw.token(user, groups or ("appr",)), user=user), autocommit=True)

    def run() -> Any:
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    return ThreadPoolExecutor(1).submit(run)


def card(page: Page, requester: str) -> Any:
    return page.locator(f'article.approval[data-requester="{requester}"]')


def wait_card(page: Page, base: str, requester: str) -> Any:
    """Reload the pending page until the requester's request shows (as a person would)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page.goto(f"{base}/approvals")
        if card(page, requester).count():
            return card(page, requester)
        time.sleep(0.2)
    raise AssertionError(f"no pending request of {requester} on the page")


# ------------------------------------------------------------------------------ approvals


def test_approve_from_the_page_resumes_the_client(
    gw: GatewayProcess, base: str, context: BrowserContext
) -> None:
    user = "erin@example.com"
    future = paused_query(gw, user, "SELECT * FROM console_big ORDER BY id")
    page = context.new_page()
    sign_in(page, base, gw.token(APPROVER, ("dba-leads",)))
    request = wait_card(page, base, user)
    expect(request.locator("pre.statement")).to_contain_text("FROM console_big")
    expect(request).to_contain_text("100 rows")
    expect(request).to_contain_text("max_rows=100")
    assert not future.done()
    request.locator("button.approve").click()
    rows = future.result(timeout=30)
    assert [r[0] for r in rows] == list(range(1, BIG + 1))
    expect(page.locator(".flash.ok")).to_contain_text("Approved")
    history = page.locator("#history table")
    expect(history).to_contain_text(user)
    expect(history).to_contain_text(APPROVER)
    assert card(page, user).count() == 0


def test_deny_from_the_page_gives_the_client_the_error(
    gw: GatewayProcess, base: str, context: BrowserContext
) -> None:
    user = "dan@example.com"
    future = paused_query(gw, user, "SELECT * FROM console_big")
    page = context.new_page()
    sign_in(page, base, gw.token(APPROVER, ("dba-leads",)))
    request = wait_card(page, base, user)
    request.locator("form[action$='/deny'] input[name=reason]").fill("not during the freeze")
    request.locator("button.deny").click()
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
        future.result(timeout=30)
    assert f"denied by {APPROVER}: not during the freeze" in str(info.value)
    expect(page.locator(".flash.ok")).to_contain_text("Denied")


def test_requester_cannot_approve_their_own_request(
    gw: GatewayProcess, base: str, context: BrowserContext, api: AdminClient
) -> None:
    user = "vic@example.com"  # a requester who is also an approver
    future = paused_query(gw, user, "SELECT * FROM console_big", "appr", "dba-leads")
    page = context.new_page()
    sign_in(page, base, gw.token(user, ("appr", "dba-leads")))
    request = wait_card(page, base, user)
    expect(request.locator(".why")).to_contain_text("cannot approve or deny your own request")
    assert request.locator("button.approve").count() == 0
    assert request.locator("button.deny").count() == 0
    pending = api.wait_pending(user)
    assert api.deny(pending["id"], "cleanup")[0] == 200
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        future.result(timeout=30)


def test_an_approver_of_another_team_does_not_see_the_request(
    gw: GatewayProcess, base: str, browser: Browser, context: BrowserContext, api: AdminClient
) -> None:
    # ops-leads approve the ops policy's requests; this one is for dba-leads. Its statement,
    # requester and reason stay off the ops approver's page (pending and history).
    user = "fay@example.com"
    future = paused_query(gw, user, "SELECT * FROM console_big WHERE id > 0")
    pending = api.wait_pending(user)
    page = context.new_page()
    sign_in(page, base, gw.token("olga@example.com", ("ops-leads",)))
    page.goto(f"{base}/approvals")
    assert card(page, user).count() == 0
    assert user not in page.inner_text("main")
    assert "console_big WHERE id > 0" not in page.content()
    # The dba-leads approver sees it (signed in from another browser: cookies are per
    # context, and one context holds one console session).
    other_context = browser.new_context()
    try:
        other = other_context.new_page()
        sign_in(other, base, gw.token(APPROVER, ("dba-leads",)))
        wait_card(other, base, user)
    finally:
        other_context.close()
    assert api.deny(pending["id"], "cleanup")[0] == 200
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        future.result(timeout=30)
    page.goto(f"{base}/approvals")
    assert user not in page.inner_text("#history")


def test_statement_text_is_escaped_and_the_page_fits_a_phone(
    gw: GatewayProcess, base: str, browser: Browser, api: AdminClient
) -> None:
    user = "mallory@example.com"
    sql = f"SELECT id, '{SCRIPT}' AS payload, '{'y' * 300}' AS wide FROM console_big"
    future = paused_query(gw, user, sql)
    ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = ctx.new_page()
        sign_in(page, base, gw.token(APPROVER, ("dba-leads",)))
        request = wait_card(page, base, user)
        # Shown as text, never run: no script element, no side effect, escaped in the HTML.
        expect(request.locator("pre.statement")).to_contain_text(SCRIPT)
        assert page.evaluate("window.__pwned") is None
        assert page.locator("script").count() == 0
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page.content()
        # A phone-sized screen: no horizontal scroll of the page.
        width = page.evaluate("document.documentElement.scrollWidth")
        inner = page.evaluate("window.innerWidth")
        assert inner == PHONE["width"]  # the viewport meta tag: no zoomed-out desktop layout
        assert width <= inner, (width, inner)
        expect(request.locator("button.approve")).to_be_visible()
    finally:
        ctx.close()
    pending = api.wait_pending(user)
    assert api.deny(pending["id"])[0] == 200
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        future.result(timeout=30)


# ------------------------------------------------------------------------ who may sign in


def test_non_approver_token_gets_403(
    gw: GatewayProcess, base: str, context: BrowserContext
) -> None:
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("textarea[name=token]", gw.token("eve@example.com", ("appr",)))
    with page.expect_response(lambda r: r.request.method == "POST") as info:
        page.click("button[type=submit]")
    assert info.value.status == 403
    expect(page.locator("main")).to_contain_text("not a member")
    # No console session was created: the pages still send one to sign in.
    page.goto(f"{base}/approvals")
    assert page.url.endswith("/console/login")


def test_bad_token_is_refused(base: str, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("textarea[name=token]", "not.a.token")
    with page.expect_response(lambda r: r.request.method == "POST") as info:
        page.click("button[type=submit]")
    assert info.value.status == 401
    expect(page.locator(".flash.error")).to_have_text("Invalid token.")


def test_auditor_sees_recordings_but_not_approvals(
    gw: GatewayProcess, base: str, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, base, gw.token(AUDITOR, ("auditors",)))
    assert page.url.endswith("/console/recordings")
    response = page.goto(f"{base}/approvals")
    assert response is not None and response.status == 403
    assert page.locator("nav a", has_text="Approvals").count() == 0


# --------------------------------------------------------------------- CSRF, cookies, headers


class Http:
    """A bare HTTP client (no redirects followed, cookies by hand) for what a browser
    would not send: forged POSTs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            body = urlencode(form).encode() if form is not None else None
            head = {k.replace("_", "-"): v for k, v in headers.items()}
            if body is not None:
                head["Content-Type"] = "application/x-www-form-urlencoded"
            if self.cookies:
                head["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body=body, headers=head)
            response = conn.getresponse()
            text = response.read().decode()
            for value in response.headers.get_all("Set-Cookie") or []:
                self.set_cookie_headers.append(value)
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0].strip('"')
            return response.status, dict(response.headers.items()), text
        finally:
            conn.close()

    def sign_in(self, token: str) -> None:
        status, _, text = self.request("GET", "/console/login")
        assert status == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', text)
        assert csrf is not None
        status, _, _ = self.request(
            "POST", "/console/login", {"csrf": csrf.group(1), "token": token}
        )
        assert status == 303, status
        assert "gw_console" in self.cookies


def page_csrf(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found is not None
    return found.group(1)


def test_post_without_csrf_token_is_refused(
    gw: GatewayProcess, admin_port: int, api: AdminClient
) -> None:
    user = "csrf@example.com"
    future = paused_query(gw, user, "SELECT * FROM console_big")
    pending = api.wait_pending(user)
    client = Http(admin_port)
    client.sign_in(gw.token(APPROVER, ("dba-leads",)))
    approve = f"/console/approvals/{pending['id']}/approve"

    status, _, text = client.request("POST", approve, {"reason": "forged"})
    assert status == 403
    assert "security token" in text
    status, _, _ = client.request("POST", approve, {"csrf": "wrong", "reason": "forged"})
    assert status == 403
    # The right token from another origin is refused too (Origin, then Referer).
    _, _, page = client.request("GET", "/console/approvals")
    csrf = page_csrf(page)
    status, _, _ = client.request("POST", approve, {"csrf": csrf}, Origin="https://evil.example")
    assert status == 403
    status, _, _ = client.request("POST", approve, {"csrf": csrf}, Referer="https://evil.example/x")
    assert status == 403
    # Nothing was decided by any of these.
    assert any(r["id"] == pending["id"] for r in api.pending())
    assert not future.done()
    # The genuine form post works.
    status, headers, _ = client.request(
        "POST", approve, {"csrf": csrf}, Origin=f"http://127.0.0.1:{admin_port}"
    )
    assert status == 303 and headers["Location"] == "/console/approvals"
    assert len(future.result(timeout=30)) == BIG


def test_sign_in_needs_its_form_token_and_sets_a_strict_cookie(
    gw: GatewayProcess, admin_port: int
) -> None:
    token = gw.token(APPROVER, ("dba-leads",))
    forged = Http(admin_port)
    status, _, _ = forged.request("POST", "/console/login", {"token": token})
    assert status == 403
    assert "gw_console" not in forged.cookies

    client = Http(admin_port)
    client.sign_in(token)
    session_cookie = next(c for c in client.set_cookie_headers if c.startswith("gw_console="))
    attributes = {a.strip().split("=")[0].lower() for a in session_cookie.split(";")[1:]}
    assert {"httponly", "path", "max-age"} <= attributes, session_cookie
    assert "SameSite=Strict" in session_cookie and "Path=/console" in session_cookie
    max_age = int(re.search(r"Max-Age=(\d+)", session_cookie).group(1))  # type: ignore[union-attr]
    assert 0 < max_age <= 900  # no longer than the token (ttl 900 s)
    assert token not in session_cookie

    status, headers, text = client.request("GET", "/console/approvals")
    assert status == 200
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    assert '<meta name="viewport"' in text
    # Error pages carry them too.
    status, headers, _ = client.request("GET", "/console/recordings/nope")
    assert status in (403, 404)
    assert headers["X-Frame-Options"] == "DENY"

    # Sign-out ends the server-side session: the old cookie no longer works.
    old = dict(client.cookies)
    status, _, _ = client.request("POST", "/console/logout", {"csrf": page_csrf(text)})
    assert status == 303
    client.cookies = old
    status, headers, _ = client.request("GET", "/console/approvals")
    assert status == 303 and headers["Location"] == "/console/login"


# ------------------------------------------------------------------------- live sessions


def test_live_sessions_lists_the_client_and_an_admin_can_kill_it(
    gw: GatewayProcess, base: str, browser: Browser
) -> None:
    user = "lily@example.com"
    conn = psycopg.connect(gw.dsn(gw.token(user, ("readers",)), user=user), autocommit=True)
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # An approver sees the session but has no Kill button.
        ctx = browser.new_context()
        page = ctx.new_page()
        sign_in(page, base, gw.token(APPROVER, ("dba-leads",)))
        page.goto(f"{base}/sessions")
        live = page.locator(f'article.session[data-subject="{user}"]')
        expect(live).to_contain_text("app-pg")
        assert live.locator("button.kill").count() == 0
        ctx.close()

        ctx = browser.new_context()
        page = ctx.new_page()
        sign_in(page, base, gw.token(ADMIN, ("gateway-admins",)))
        page.goto(f"{base}/sessions")
        live = page.locator(f'article.session[data-subject="{user}"]')
        expect(live).to_contain_text("app-pg")
        live.locator("input[name=reason]").fill("incident 42")
        live.locator("button.kill").click()
        expect(page.locator(".flash.ok")).to_contain_text("is being ended")
        ctx.close()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()


# ---------------------------------------------------------------------------- recordings


def test_recordings_list_and_timeline(
    gw: GatewayProcess, base: str, context: BrowserContext, api: AdminClient
) -> None:
    user = "rita@example.com"
    with psycopg.connect(gw.dsn(gw.token(user, ("appr",)), user=user), autocommit=True) as c:
        c.execute("SELECT 'console-marker-42' AS marker, 7 AS n").fetchall()
        c.execute(f"SELECT '{SCRIPT}' AS payload").fetchall()
        paused = ThreadPoolExecutor(1).submit(
            lambda: c.execute("SELECT id FROM console_big").fetchall()
        )
        assert api.approve(api.wait_pending(user)["id"])[0] == 200
        assert len(paused.result(timeout=30)) == BIG
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DELETE FROM console_big")

    page = context.new_page()
    sign_in(page, base, gw.token(AUDITOR, ("auditors",)))
    row = page.locator("table.recordings tr", has_text=user)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the end frame is written when the session closes
        page.goto(f"{base}/recordings")
        if row.count() and "verified" in row.inner_text():
            break
        time.sleep(0.2)
    expect(row).to_contain_text("verified")
    expect(row).to_contain_text("app-pg")
    row.locator("a").click()

    expect(page.locator("h1")).to_contain_text("Recording")
    expect(page.locator("main")).to_contain_text(user)
    marker = page.locator("li.statement", has_text="console-marker-42")
    expect(marker.locator("table.result")).to_contain_text("console-marker-42")
    expect(marker.locator("table.result th").first).to_have_text("marker")
    expect(marker.locator(".outcome")).to_contain_text("1 row")
    payload = page.locator("li.statement", has_text="payload")
    expect(payload.locator("table.result td")).to_have_text(SCRIPT)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("script").count() == 0
    denied = page.locator("li.statement", has_text="DELETE FROM console_big")
    expect(denied.locator(".badge")).to_have_text("deny")
    expect(denied.locator(".outcome")).to_contain_text("ERROR")
    # The approval is part of the timeline, between the paused result's statement and the end.
    big = page.locator("li.statement", has_text="SELECT id FROM console_big")
    # record_rows (1000 by default) caps what was recorded, the page shows 200 of them.
    expect(big.locator("details > summary")).to_have_text("1000 rows recorded")
    expect(big).to_contain_text("800 more recorded row(s) not shown")
    assert big.locator("table.result tbody tr").count() == 200
    expect(big.locator(".outcome")).to_contain_text(f"{BIG} rows")
    expect(page.locator('li.event[data-kind="approval_approved"]')).to_contain_text(APPROVER)
    assert page.locator('li.event[data-kind="limit_reached"]').count() == 1
    expect(page.locator("#end")).to_contain_text("Ended")


def test_over_tls_the_cookies_are_secure(start_gateway: StartGateway) -> None:
    """Without allow_plaintext the admin listener speaks HTTPS (the gateway's certificate):
    the console's cookies get the Secure attribute."""
    port = free_port()
    gw = start_gateway(
        policies=POLICIES, extra=f'[admin]\nlisten = "127.0.0.1:{port}"\n', recording=False
    )
    wait_listening(gw.proc, port, gw.log_path)  # the admin listener starts after the targets'
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE  # the generated self-signed certificate
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=tls)
    try:
        conn.request("GET", "/console/login")
        response = conn.getresponse()
        text = response.read().decode()
        assert response.status == 200
        login_cookie = response.headers["Set-Cookie"]
        assert "Secure" in login_cookie and "HttpOnly" in login_cookie
        pre = login_cookie.split(";", 1)[0]
        body = urlencode({"csrf": page_csrf(text), "token": gw.token(ADMIN, ("gateway-admins",))})
        conn.request(
            "POST",
            "/console/login",
            body=body,
            headers={"Cookie": pre, "Content-Type": "application/x-www-form-urlencoded"},
        )
        response = conn.getresponse()
        response.read()
        assert response.status == 303
        session_cookie = next(
            c for c in response.headers.get_all("Set-Cookie") or [] if c.startswith("gw_console=")
        )
        assert "Secure" in session_cookie and "SameSite=Strict" in session_cookie
        # Unknown console paths: to sign in without a session, else an HTML 404 page with
        # the console's headers.
        conn.request("GET", "/console/no-such-page")
        response = conn.getresponse()
        response.read()
        assert response.status == 303 and response.headers["Location"] == "/console/login"
        cookie = session_cookie.split(";", 1)[0]
        conn.request("GET", "/console/no-such-page", headers={"Cookie": cookie})
        response = conn.getresponse()
        response.read()
        assert response.status == 404
        assert response.headers["X-Frame-Options"] == "DENY"
        conn.request("GET", "/console")
        response = conn.getresponse()
        response.read()
        assert response.status == 303 and response.headers["Location"] == "/console/"
    finally:
        conn.close()
