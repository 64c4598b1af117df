"""The console's aiohttp sub-application: sign-in, the guard middleware, shared helpers.

Rules the guard (``console_guard``) keeps for every request under ``/console/``:

* Responses carry ``Content-Security-Policy: default-src 'self'`` (plus frame-ancestors,
  form-action and base-uri), ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``,
  ``X-Content-Type-Options: nosniff`` and ``Cache-Control: no-store`` -- error pages too.
* A POST whose ``Origin`` (or, without one, ``Referer``) names another origin is refused
  with 403 before anything else is looked at (``Origin: null`` names none).
* Except the sign-in page and the stylesheet, a request needs a live console session (the
  cookie); without one a GET is sent to the sign-in page and a POST is refused (403).
* Every POST made within a session carries that session's CSRF token in the ``csrf`` form
  field, compared in constant time; the sign-in POST carries the pre-session token of its
  own cookie instead (double submit), so a forged sign-in is refused too.
* Errors are HTML pages; the reason of a rejected token goes to the log only.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from aiohttp import web

from ..auth.jwt import AuthenticationFailed, KeysUnavailable
from .html import STYLESHEET, Markup, csrf_field, h, page
from .recordings import RecordingIndex
from .sessions import Access, ConsoleSession, SessionStore

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("gateway.console")

PREFIX: Final = "/console"
COOKIE: Final = "gw_console"
LOGIN_COOKIE: Final = "gw_console_login"
PUBLIC: Final = frozenset({f"{PREFIX}/login", f"{PREFIX}/static/console.css"})
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Console:
    runtime: Runtime
    store: SessionStore
    recordings: RecordingIndex
    # Recording files are read here, never in asyncio's default executor: the audit log
    # writer and upstream name resolution use that one, and a few people opening huge
    # recordings must not stall them (the console waits for its own threads instead).
    files: ThreadPoolExecutor


CONSOLE: Final = web.AppKey("console", Console)
# The signed-in session of the request being handled (request-scoped: the middleware and
# the handler run in the request's task).
CURRENT: ContextVar[ConsoleSession] = ContextVar("console_session")


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]


def current() -> ConsoleSession:
    return CURRENT.get()


def access(request: web.Request) -> Access:
    return Access.of(console_of(request).runtime.config, current().groups)


def render(
    request: web.Request, title: str, body: str, *, active: str = "", status: int = 200
) -> web.Response:
    """A page for the signed-in user (nav, sign-out, flashed messages)."""
    session = current()
    text = page(
        title,
        body,
        active=active,
        subject=session.subject,
        csrf=session.csrf,
        sections=access(request).sections(),
        flashes=session.take_flashes(),
    )
    return web.Response(text=text, status=status, content_type="text/html")


def error_page(status: int, title: str, message: str) -> web.Response:
    session = CURRENT.get(None)
    body = Markup(f'<p>{h(message)}</p><p><a href="{PREFIX}/">Back to the console</a></p>')
    text = page(title, body, subject=session.subject if session else None)
    return web.Response(text=text, status=status, content_type="text/html")


def forbidden(message: str) -> web.HTTPException:
    """Raised by handlers; the guard renders it as a 403 page."""
    return web.HTTPForbidden(reason="Forbidden", text=message)


def see_other(location: str) -> web.Response:
    """POST/redirect/GET and plain redirects (returned, never raised, so cookies set on it
    survive)."""
    return web.Response(status=303, headers={"Location": location})


# -- the guard ---------------------------------------------------------------------------


def _same_origin(request: web.Request) -> bool:
    """False when the browser says the POST comes from another origin."""
    own = f"{request.scheme}://{request.host}"
    origin = request.headers.get("Origin")
    # "null" says nothing: browsers send it for every POST from a page served with
    # Referrer-Policy: no-referrer (ours). Such a POST is judged by its CSRF token and by
    # the SameSite=Strict cookie, which a cross-site form never carries.
    if origin is not None and origin != "null":
        return origin == own
    referer = request.headers.get("Referer")
    if referer is not None:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}" == own
    return True  # neither header: the CSRF token alone decides


@web.middleware
async def console_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await _guarded(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # handlers return their redirects; nothing else raises these
        # 403 pages say why (texts written by this package); others show the reason phrase.
        message = exc.text if exc.status == 403 and exc.text else exc.reason
        response = error_page(exc.status, exc.reason, message or exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        log.exception("console request failed", extra={"path": request.path})
        response = error_page(500, "Internal error", "The request failed; see the gateway log.")
    response.headers.update(SECURITY_HEADERS)
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == PREFIX:
        return see_other(PREFIX + "/")
    post = request.method == "POST"
    if post and not _same_origin(request):
        log.info("console: cross-origin POST refused", extra={"path": request.path})
        raise forbidden("This form was not sent from the console's own pages.")
    if request.path in PUBLIC:
        return await handler(request)
    console = console_of(request)
    session = console.store.get(request.cookies.get(COOKIE))
    if session is None:
        if post:
            raise forbidden("Your console session has ended; sign in again.")
        return see_other(f"{PREFIX}/login")
    reset = CURRENT.set(session)
    try:
        if session.identity is not None and console.runtime.revoked(session.identity):
            console.store.drop(session.id)
            log.info("console: access revoked", extra={"subject": session.subject})
            raise forbidden("Your access was revoked by an administrator.")
        if not Access.of(console.runtime.config, session.groups).console:
            # Groups were removed from the configuration after sign-in.
            console.store.drop(session.id)
            raise forbidden("You are not a member of an admin, approver or auditor group.")
        if post:
            form = await request.post()
            presented = form.get("csrf")
            if not session.csrf_ok(presented if isinstance(presented, str) else None):
                log.info(
                    "console: POST without a valid CSRF token refused",
                    extra={"path": request.path, "subject": session.subject},
                )
                raise forbidden("The form's security token is missing or wrong; reload the page.")
        return await handler(request)
    finally:
        CURRENT.reset(reset)


# -- sign-in -------------------------------------------------------------------------------


def _cookie_args(request: web.Request, max_age: float) -> dict[str, object]:
    return {
        "path": PREFIX,
        "httponly": True,
        "samesite": "Strict",
        "secure": request.secure,
        "max_age": max(0, int(max_age)),
    }


async def login_form(request: web.Request, message: str = "", status: int = 200) -> web.Response:
    pre = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    note = Markup(f'<p class="flash error" role="alert">{h(message)}</p>') if message else ""
    body = Markup(
        f"{note}<p>Paste an access token (a JWT from your identity provider, the same one a "
        "database client uses as its password).</p>"
        f'<form method="post" action="{PREFIX}/login">{csrf_field(pre)}'
        '<label for="token">Token</label>'
        '<textarea id="token" name="token" required autocomplete="off" spellcheck="false">'
        '</textarea><p><button type="submit">Sign in</button></p></form>'
    )
    response = web.Response(text=page("Sign in", body), status=status, content_type="text/html")
    response.set_cookie(LOGIN_COOKIE, pre, **_cookie_args(request, 3600))  # type: ignore[arg-type]
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    pre, presented = request.cookies.get(LOGIN_COOKIE), form.get("csrf")
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a 500).
    if not (
        pre and isinstance(presented, str) and hmac.compare_digest(pre.encode(), presented.encode())
    ):
        raise forbidden("The sign-in form's security token is missing or wrong; reload the page.")
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    if not token:
        return await login_form(request, "Paste a token.", 400)
    console = console_of(request)
    try:
        identity = await console.runtime.verifier.verify(token)
    except KeysUnavailable as exc:
        log.warning("console: signing keys unavailable", extra={"reason": str(exc)})
        return await login_form(request, "Token signing keys are unavailable; try again.", 503)
    except AuthenticationFailed as exc:
        # The reason goes to our log, never to the browser (and the token to neither).
        log.info("console: token rejected", extra={"reason": str(exc)})
        return await login_form(request, "Invalid token.", 401)
    if not Access.of(console.runtime.config, identity.groups).console:
        log.info("console: access refused", extra={"subject": identity.subject})
        raise forbidden(
            "You are not a member of an admin, approver or auditor group of this gateway."
        )
    if console.runtime.revoked(identity):
        log.info("console: access revoked", extra={"subject": identity.subject})
        raise forbidden("Your access was revoked by an administrator.")
    session = console.store.create(identity.subject, identity.groups, identity.expires_at, identity)
    log.info("console: signed in", extra={"event": "console_sign_in", "subject": session.subject})
    response = see_other(f"{PREFIX}/")
    response.set_cookie(
        COOKIE,
        session.id,
        **_cookie_args(request, session.expires_at - time.time()),  # type: ignore[arg-type]
    )
    response.del_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    session = current()
    console_of(request).store.drop(session.id)
    log.info("console: signed out", extra={"event": "console_sign_out", "subject": session.subject})
    response = see_other(f"{PREFIX}/login")
    response.del_cookie(COOKIE, path=PREFIX)
    return response


async def home(request: web.Request) -> web.StreamResponse:
    allowed = access(request)
    if allowed.approvals:
        return see_other(f"{PREFIX}/approvals")
    if allowed.recordings:
        return see_other(f"{PREFIX}/recordings")
    return see_other(f"{PREFIX}/sessions")


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(text=STYLESHEET, content_type="text/css")
