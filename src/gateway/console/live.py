"""The live sessions page and its Kill button (admin groups only).

Written against two Runtime methods only: ``live_sessions()`` (a list of plain dicts) and
``kill_session(session_id, reason, by)``; the lifecycle code behind them is not this
package's business.
"""

from __future__ import annotations

import time
from typing import Final

from aiohttp import web

from .app import access, console_of, current, forbidden, render, see_other
from .html import Markup, age, csrf_field, h, join, when

PAGE: Final = "/console/sessions"
MAX_REASON: Final = 1000
STATEMENT_SHOWN: Final = 500


def _number(value: object) -> int:
    return value if isinstance(value, int) else 0


async def sessions_page(request: web.Request) -> web.Response:
    allowed = access(request)
    if not allowed.sessions:
        raise forbidden("The live sessions page is for admin, approver and auditor groups.")
    live = console_of(request).runtime.live_sessions()
    now = time.time()
    csrf = current().csrf
    cards = join(_card(s, now, csrf if allowed.kill else None) for s in live)
    body = Markup(
        f'<p class="muted">{len(live)} open · <a href="{PAGE}">refresh</a></p>'
        f'<section id="live">{cards or Markup("<p>No session is open.</p>")}</section>'
    )
    return render(request, "Live sessions", body, active="sessions")


def _card(s: dict[str, object], now: float, csrf: str | None) -> Markup:
    since = s.get("since")
    started = float(since) if isinstance(since, int | float) else now
    groups = s.get("groups")
    facts = [
        ("who", s.get("subject")),
        ("groups", ", ".join(str(g) for g in groups) if isinstance(groups, list) else "-"),
        ("target", f"{s.get('target')} ({s.get('protocol')})"),
        ("client", s.get("client")),
        ("since", f"{when(started)} ({age(started, now)} ago)"),
        ("statements", _number(s.get("statements"))),
        ("rows", _number(s.get("rows"))),
        ("bytes", _number(s.get("bytes"))),
    ]
    dl = join(Markup(f"<dt>{h(k)}</dt><dd>{h(v)}</dd>") for k, v in facts)
    current_statement = s.get("current_statement")
    running = (
        Markup(
            '<div>running now:</div><pre class="statement">'
            f"{h(str(current_statement)[:STATEMENT_SHOWN])}</pre>"
        )
        if current_statement
        else ""
    )
    sid = str(s.get("session_id"))
    kill = ""
    if csrf is not None:
        kill = Markup(
            f'<div class="actions"><form method="post" action="{PAGE}/{h(sid)}/kill">'
            f"{csrf_field(csrf)}"
            '<input type="text" name="reason" placeholder="reason (optional)" '
            f'maxlength="{MAX_REASON}" aria-label="kill reason">'
            '<button type="submit" class="kill">Kill</button></form></div>'
        )
    return Markup(
        f'<article class="card session" id="s-{h(sid)}" data-subject="{h(s.get("subject"))}">'
        f'<h3>{h(sid)}</h3><dl class="facts">{dl}</dl>{running}{kill}</article>'
    )


async def kill(request: web.Request) -> web.Response:
    if not access(request).kill:
        raise forbidden("Only members of the admin groups may kill sessions.")
    session = current()
    form = await request.post()
    reason = str(form.get("reason") or "").strip()[:MAX_REASON]
    session_id = request.match_info["id"]
    killed = console_of(request).runtime.kill_session(
        session_id, reason or f"killed by {session.subject} from the console", session.subject
    )
    if killed:
        session.flash("ok", f"Session {session_id} is being ended.")
    else:
        session.flash("error", f"Session {session_id} is no longer open.")
    return see_other(PAGE)
