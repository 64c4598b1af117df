"""The admin HTTP API (docs/approvals.md): list and decide approval requests.

Rules this module keeps:

* Every path except ``/healthz`` needs ``Authorization: Bearer <JWT>``, verified like a
  database login; ``/metrics`` (Prometheus) too, unless ``[admin] metrics_public`` is set
  for a scraper on a trusted network. A missing or bad token is 401 with
  ``WWW-Authenticate: Bearer``; the reason goes to the log, the caller only learns
  "invalid token".
* The API is open to members of ``[admin] groups`` and of any policy's ``approvers``
  (403 otherwise). Whether one may decide a given request is the broker's rule
  (``ApprovalBroker.may_decide``: an approver group of that request, never the requester);
  which requests one sees at all is ``ApprovalBroker.may_see`` (admins: all; approvers: their
  groups' and their own), and an invisible request answers 404 like an unknown id.
* Errors are JSON ``{"error": message}``; handlers stay thin and raise ApprovalError.
* Request bodies are optional JSON objects of at most 64 KiB with known string fields.
* ``/console`` paths belong to the web console (gateway.console, docs/console.md): it signs
  people in with a cookie session and guards its own pages, so both middlewares here pass
  those requests through untouched.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from ..approvals import ApprovalBroker, ApprovalError
from ..auth.jwt import AuthenticationFailed, KeysUnavailable, TokenVerifier
from ..config import Config
from ..console import is_console_path, mount_console
from ..identity import Identity

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("gateway.admin")

MAX_BODY: Final = 64 * 1024
PUBLIC_PATHS: Final = frozenset({"/healthz", "/readyz"})

BROKER: Final = web.AppKey("broker", ApprovalBroker)
VERIFIER: Final = web.AppKey("verifier", TokenVerifier)
# The groups allowed in now (from the running configuration: a hot reload changes them).
ALLOWED_GROUPS: Final = web.AppKey[Callable[[], frozenset[str]]]("allowed_groups")
READY: Final = web.AppKey[Callable[[], list[str]]]("ready")
# identity -> the id of a revocation matching it, or None (the runtime's revocation list).
RevokedCheck = Callable[[Identity], "str | None"]
REVOKED: Final = web.AppKey[RevokedCheck]("revoked")
PUBLIC: Final = web.AppKey("public", frozenset)
METRICS: Final = web.AppKey("metrics", object)
# The verified caller of the request being handled. The authenticate middleware and the
# handler run in the request's own task, so a context variable is request-scoped (and, unlike
# request storage keys, works on every aiohttp this project supports).
CALLER: ContextVar[Identity] = ContextVar("admin_caller")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def api_groups(config: Config) -> frozenset[str]:
    """Groups whose members may use the API: admins and every policy's approvers."""
    admins = config.admin.groups if config.admin is not None else []
    return frozenset(admins).union(*(p.approvers for p in config.policies))


def build_app(runtime: Runtime, config: Config) -> web.Application:
    # client_max_size makes request.read() refuse a larger body (mapped to 400 below).
    app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors, authenticate])
    app[BROKER] = runtime.approvals
    app[VERIFIER] = runtime.verifier
    app[REVOKED] = runtime.revoked
    app[ALLOWED_GROUPS] = lambda: api_groups(runtime.config)
    app[READY] = runtime.not_ready
    metrics_public = config.admin is not None and config.admin.metrics_public
    app[PUBLIC] = PUBLIC_PATHS | ({"/metrics"} if metrics_public else set())
    app[METRICS] = runtime.audit.metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/approvals", list_approvals)
    app.router.add_get("/api/approvals/{id}", show_approval)
    app.router.add_post("/api/approvals/{id}/approve", approve)
    app.router.add_post("/api/approvals/{id}/deny", deny)
    from .lifecycle_api import add_routes  # imports this module's helpers

    add_routes(app, runtime, config)
    mount_console(app, runtime)
    return app


# -- responses and middleware ---------------------------------------------------------


def reply(data: dict[str, Any], status: int = 200, **headers: str) -> web.Response:
    # Approval requests hold statement texts: never cached by anything in between.
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store", **headers})


def _unauthorized(message: str, bearer: str = "Bearer") -> web.Response:
    return reply({"error": message}, 401, **{"WWW-Authenticate": bearer})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_console_path(request.path):
        return await handler(request)  # HTML pages, with the console's own error pages
    try:
        return await handler(request)
    except ApprovalError as exc:
        return reply({"error": exc.message}, exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        extra = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return reply({"error": exc.reason.lower()}, exc.status, **extra)
    except Exception:
        log.exception("admin API request failed", extra={"path": request.path})
        return reply({"error": "internal error"}, 500)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in request.app[PUBLIC] or is_console_path(request.path):
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _unauthorized("authentication required")
    try:
        identity = await request.app[VERIFIER].verify(token)
    except KeysUnavailable as exc:
        log.warning("admin API: signing keys unavailable", extra={"reason": str(exc)})
        return reply({"error": "token signing keys are unavailable; try again later"}, 503)
    except AuthenticationFailed as exc:
        # The reason goes to our log, never to the caller (and the token to neither).
        log.info("admin API: token rejected", extra={"reason": str(exc), "path": request.path})
        return _unauthorized("invalid token", 'Bearer error="invalid_token"')
    revocation = request.app[REVOKED](identity)
    if revocation is not None:
        # A revoked identity loses the admin API with its database access (an offboarded
        # approver must not keep deciding requests).
        log.info(
            "admin API: access revoked",
            extra={"subject": identity.subject, "path": request.path, "revocation_id": revocation},
        )
        return _unauthorized("access revoked", 'Bearer error="invalid_token"')
    if request.app[ALLOWED_GROUPS]().isdisjoint(identity.groups):
        log.info(
            "admin API: access refused",
            extra={"subject": identity.subject, "path": request.path},
        )
        return reply({"error": "not a member of an admin or approver group"}, 403)
    reset = CALLER.set(identity)
    try:
        return await handler(request)
    finally:
        CALLER.reset(reset)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this gateway's registry (docs/operations.md)."""
    from ..audit.metrics import CONTENT_TYPE, GatewayMetrics

    registry = request.app[METRICS]
    assert isinstance(registry, GatewayMetrics)
    return web.Response(
        body=registry.render(),
        headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
    )


async def read_body(request: web.Request, fields: Collection[str]) -> dict[str, str]:
    """The optional JSON object body, with only ``fields``, all strings."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApprovalError(400, f"request body larger than {MAX_BODY // 1024} KiB")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApprovalError(400, f"request body larger than {MAX_BODY // 1024} KiB") from None
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApprovalError(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise ApprovalError(400, "request body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApprovalError(
            400, f"unknown field(s): {', '.join(unknown)}; expected {', '.join(sorted(fields))}"
        )
    for key, value in body.items():
        if not isinstance(value, str):
            raise ApprovalError(400, f"{key} must be a string")
    return body


# -- handlers ---------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return reply({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 with the reasons while the gateway should get no new sessions
    (starting, draining for shutdown, no signing keys, recording failing)."""
    reasons = request.app[READY]()
    if reasons:
        return reply({"status": "not ready", "reasons": reasons}, 503)
    return reply({"status": "ready"})


def _view(request: web.Request) -> tuple[Identity, bool]:
    """The caller and whether they are an admin (who sees every request)."""
    from .lifecycle_api import ADMIN_GROUPS  # imports this module's helpers

    identity = CALLER.get()
    return identity, not request.app[ADMIN_GROUPS]().isdisjoint(identity.groups)


async def list_approvals(request: web.Request) -> web.Response:
    broker = request.app[BROKER]
    state = request.query.get("state", "pending")
    if state == "pending":
        requests = broker.pending()
    elif state == "decided":
        requests = broker.history()
    else:
        raise ApprovalError(400, "state must be pending or decided")
    identity, admin = _view(request)
    shown = [
        r.to_json()
        for r in requests
        if broker.may_see(r, identity.subject, identity.groups, admin=admin)
    ]
    # "now" lets a client show ages without trusting its own clock.
    return reply({"approvals": shown, "now": time.time()})


async def show_approval(request: web.Request) -> web.Response:
    request_id = request.match_info["id"]
    identity, admin = _view(request)
    found = request.app[BROKER].find(request_id, identity.subject, identity.groups, admin=admin)
    if found is None:
        # The same answer for a request the caller may not see: not even its existence.
        raise ApprovalError(404, f"no approval request {request_id}")
    return reply(found.to_json())


async def approve(request: web.Request) -> web.Response:
    body = await read_body(request, ("scope", "reason"))
    return _decide(request, True, body.get("reason", ""), body.get("scope", "statement"))


async def deny(request: web.Request) -> web.Response:
    body = await read_body(request, ("reason",))
    return _decide(request, False, body.get("reason", ""), "statement")


def _decide(request: web.Request, approve: bool, reason: str, scope: str) -> web.Response:
    identity, admin = _view(request)
    decided = request.app[BROKER].decide_as_viewer(
        request.match_info["id"],
        subject=identity.subject,
        groups=identity.groups,
        approve=approve,
        reason=reason,
        scope=scope,
        admin=admin,
    )
    return reply(decided.to_json())
