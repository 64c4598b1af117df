"""The web console for approvers and auditors (docs/console.md), served by the admin
listener under ``/console/``: sign in with a token, decide pending approvals, watch and
kill live sessions, browse and replay recordings.

Server-rendered HTML, no JavaScript. The admin API's bearer-token middleware leaves
``/console`` paths to this package's own guard (``app.console_guard``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ..recording.keys import PRIVATE_KEY_NAME, public_key_path
from . import app, approvals, live, recordings_view
from .recordings import RecordingIndex
from .sessions import SessionStore

if TYPE_CHECKING:
    from ..runtime import Runtime

PREFIX = app.PREFIX
# Threads reading and verifying recording files for the console (Console.files).
FILE_WORKERS = 2


def is_console_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def recording_public_key(runtime: Runtime) -> Path:
    """The public half of the key that signs this gateway's recordings."""
    if runtime.recorder is not None:
        return public_key_path(runtime.recorder.signing_key_path)
    cfg = runtime.config
    if cfg.recording.signing_key_file:
        return public_key_path(Path(cfg.recording.signing_key_file))
    return public_key_path(Path(cfg.gateway.state_dir) / PRIVATE_KEY_NAME)


def console_app(runtime: Runtime) -> web.Application:
    """The sub-application to mount at ``/console``."""
    sub = web.Application(middlewares=[app.console_guard])
    files = ThreadPoolExecutor(max_workers=FILE_WORKERS, thread_name_prefix="console-files")
    sub[app.CONSOLE] = app.Console(
        runtime=runtime,
        store=SessionStore(),
        recordings=RecordingIndex(
            Path(runtime.config.gateway.session_dir), recording_public_key(runtime)
        ),
        files=files,
    )

    async def stop_files(_: web.Application) -> None:
        files.shutdown(wait=False, cancel_futures=True)

    sub.on_cleanup.append(stop_files)
    route = sub.router
    route.add_get("/", app.home)
    route.add_get("/login", app.login_form)
    route.add_post("/login", app.login)
    route.add_post("/logout", app.logout)
    route.add_get("/static/console.css", app.stylesheet)
    route.add_get("/approvals", approvals.approvals_page)
    route.add_post("/approvals/{id}/approve", approvals.approve)
    route.add_post("/approvals/{id}/deny", approvals.deny)
    route.add_get("/sessions", live.sessions_page)
    route.add_post("/sessions/{id}/kill", live.kill)
    route.add_get("/recordings", recordings_view.recordings_page)
    route.add_get("/recordings/{id}", recordings_view.recording_page)
    return sub


def mount_console(parent: web.Application, runtime: Runtime) -> None:
    parent.add_subapp(PREFIX, console_app(runtime))


__all__ = ["PREFIX", "console_app", "is_console_path", "mount_console"]
