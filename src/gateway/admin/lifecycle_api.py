"""Admin API routes for live sessions and revocations (docs/operations.md, "Revocation and
the kill switch").

Only members of ``[admin] groups`` may use them: an approver decides about results, an
administrator decides who is connected (403 otherwise). Errors are JSON like the rest of
the API; kills and revocation changes are written to the ``gateway.audit`` log by
``gateway.lifecycle.control``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web

from ..approvals import ApprovalError as ApiError  # the API's JSON error (status, message)
from ..config import Config, ConfigError, parse_duration
from ..lifecycle import KINDS, RevocationError, RevocationWriteError
from .api import CALLER, read_body, reply

if TYPE_CHECKING:
    from ..lifecycle.control import Lifecycle
    from ..runtime import Runtime

log = logging.getLogger("gateway.admin")

RUNTIME: Final = web.AppKey("lifecycle_runtime", object)
# The running configuration's admin groups (a hot reload changes them).
ADMIN_GROUPS: Final = web.AppKey[Callable[[], frozenset[str]]]("admin_groups")


def add_routes(app: web.Application, runtime: Runtime, config: Config) -> None:
    app[RUNTIME] = runtime
    app[ADMIN_GROUPS] = lambda: frozenset(
        runtime.config.admin.groups if runtime.config.admin is not None else ()
    )
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_post("/api/sessions/{id}/kill", kill_session)
    app.router.add_get("/api/revocations", list_revocations)
    app.router.add_post("/api/revocations", add_revocation)
    app.router.add_delete("/api/revocations/{id}", remove_revocation)
    app.router.add_post("/api/reload", reload_config)


def _admin(request: web.Request) -> str:
    """The calling administrator's subject; 403 for anyone else (approvers included)."""
    identity = CALLER.get()
    if request.app[ADMIN_GROUPS]().isdisjoint(identity.groups):
        raise ApiError(403, "not a member of an admin group ([admin] groups)")
    return identity.subject


def _runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]  # type: ignore[return-value]


def _lifecycle(request: web.Request) -> Lifecycle:
    return _runtime(request).lifecycle


async def list_sessions(request: web.Request) -> web.Response:
    _admin(request)
    return reply({"sessions": _runtime(request).live_sessions(), "now": time.time()})


async def kill_session(request: web.Request) -> web.Response:
    by = _admin(request)
    body = await read_body(request, ("reason",))
    session_id = request.match_info["id"]
    if not _runtime(request).kill_session(session_id, body.get("reason", ""), by):
        raise ApiError(404, f"no live session {session_id}")
    return reply({"session_id": session_id, "killed": True})


async def list_revocations(request: web.Request) -> web.Response:
    _admin(request)
    revocations = _lifecycle(request).revocations.list()
    return reply({"revocations": [r.to_json() for r in revocations], "now": time.time()})


async def add_revocation(request: web.Request) -> web.Response:
    by = _admin(request)
    body = await read_body(request, (*KINDS, "expires_in", "reason"))
    named = [k for k in KINDS if k in body]
    if len(named) != 1:
        raise ApiError(400, f"name exactly one of {', '.join(KINDS)}")
    kind = named[0]
    expires_in: float | None = None
    if body.get("expires_in"):
        try:
            expires_in = parse_duration(body["expires_in"])
        except ValueError:
            raise ApiError(400, 'expires_in must be a duration such as "30m" or "1h"') from None
    try:
        revocation, ended = _lifecycle(request).revoke(
            kind, body[kind], reason=body.get("reason", ""), by=by, expires_in=expires_in
        )
    except RevocationWriteError as exc:  # nothing was revoked
        raise ApiError(500, str(exc)) from None
    except RevocationError as exc:
        raise ApiError(400, str(exc)) from None
    return reply({**revocation.to_json(), "sessions_ended": ended}, 201)


async def remove_revocation(request: web.Request) -> web.Response:
    by = _admin(request)
    revocation_id = request.match_info["id"]
    try:
        removed = _lifecycle(request).lift(revocation_id, by)
    except RevocationError as exc:
        raise ApiError(500, str(exc)) from None
    if removed is None:
        raise ApiError(404, f"no revocation {revocation_id}")
    return reply({**removed.to_json(), "removed": True})


async def reload_config(request: web.Request) -> web.Response:
    """Hot reload, as SIGHUP: 200 with what changed, or 400 with every error of the new
    file (the running configuration stays in force)."""
    by = _admin(request)
    runtime = _runtime(request)
    body = await read_body(request, ("live_sessions",))
    live_sessions = body.get("live_sessions")
    if live_sessions not in (None, "keep", "end"):
        raise ApiError(400, 'live_sessions must be "keep" or "end"')
    try:
        report = runtime.reload_config(live_sessions)
    except ConfigError as exc:
        log.warning(
            "configuration reload rejected",
            extra={"event": "config_reload_rejected", "by": by, "errors": exc.errors},
        )
        return reply({"error": "the new configuration was rejected", "errors": exc.errors}, 400)
    return reply({"status": "reloaded", "by": by, **report})
