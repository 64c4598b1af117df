"""The pending approvals page, its Approve/Deny forms, and the history of decisions.

Deciding goes through ``ApprovalBroker.decide`` exactly as the admin API does, so the
broker's rules hold here too (an approver group of that request, never the requester); the
page only hides the buttons when ``may_decide`` already says no, and shows why.
"""

from __future__ import annotations

import time
from typing import Final

from aiohttp import web

from ..approvals import ApprovalError, ApprovalRequest
from ..approvals.broker import MAX_STATEMENT_CHARS
from .app import access, console_of, current, forbidden, render, see_other
from .html import Markup, age, csrf_field, h, join, span, table, when

HISTORY_SHOWN: Final = 50
MAX_REASON: Final = 1000
PAGE: Final = "/console/approvals"


def _require(request: web.Request) -> None:
    if not access(request).approvals:
        raise forbidden("The approvals pages are for admin and approver groups.")


async def approvals_page(request: web.Request) -> web.Response:
    _require(request)
    broker = console_of(request).runtime.approvals
    now = time.time()
    # Only the requests this person may see (ApprovalBroker.may_see): an approver of one
    # team does not read another team's statements.
    session = current()
    admin = access(request).admin

    def visible(r: ApprovalRequest) -> bool:
        return broker.may_see(r, session.subject, session.groups, admin=admin)

    pending = [r for r in broker.pending() if visible(r)]
    history = [r for r in broker.history() if visible(r)][:HISTORY_SHOWN]
    cards = join(_card(request, r, now) for r in pending) if pending else ""
    body = Markup(
        f'<p class="muted">{len(pending)} pending · <a href="{PAGE}">refresh</a></p>'
        f'<section id="pending">{cards or Markup("<p>No request is waiting.</p>")}</section>'
        f'<h2>Decided</h2><section id="history">{_history(history)}'
        "</section>"
    )
    return render(request, "Pending approvals", body, active="approvals")


def _card(request: web.Request, r: ApprovalRequest, now: float) -> Markup:
    session = current()
    broker = console_of(request).runtime.approvals
    statement = r.statement[:MAX_STATEMENT_CHARS]
    cut = " (cut)" if len(r.statement) > MAX_STATEMENT_CHARS else ""
    what = "result paused at a limit" if r.kind == "limit" else "statement held for review"
    facts = [
        ("requester", r.subject),
        ("target", r.target),
        ("policy", r.policy),
        ("why", f"{what}: {r.reason}"),
    ]
    if r.kind == "limit":
        facts.append(("so far", f"{r.rows} rows, {r.bytes} bytes"))
    facts += [
        ("age", age(r.created_at, now)),
        ("time left", span(r.expires_at - now)),
        ("approvers", ", ".join(sorted(r.approvers))),
    ]
    dl = join(Markup(f"<dt>{h(k)}</dt><dd>{h(v)}</dd>") for k, v in facts)
    problem = broker.may_decide(r, session.subject, session.groups)
    if problem is not None:
        actions = Markup(f'<p class="why">{h(problem)}</p>')
    else:
        actions = _actions(r, session.csrf)
    return Markup(
        f'<article class="card approval" id="{h(r.id)}" data-requester="{h(r.subject)}">'
        f"<h3>{h(r.id)}</h3>"
        f'<dl class="facts">{dl}</dl>'
        f'<div>statement{h(cut)}:</div><pre class="statement">{h(statement)}</pre>'
        f"{actions}</article>"
    )


def _actions(r: ApprovalRequest, csrf: str) -> Markup:
    base = f"{PAGE}/{h(r.id)}"
    scope = ""
    if r.kind == "limit":
        # "session" lifts the limit for the rest of the session (docs/limits.md).
        scope = Markup(
            '<select name="scope" aria-label="scope">'
            '<option value="statement" selected>this statement</option>'
            '<option value="session">raise session budget</option></select>'
        )
    return Markup(
        '<div class="actions">'
        f'<form method="post" action="{base}/approve">{csrf_field(csrf)}{scope}'
        '<input type="text" name="reason" placeholder="reason (optional)" '
        f'maxlength="{MAX_REASON}" aria-label="approval reason">'
        '<button type="submit" class="approve">Approve</button></form>'
        f'<form method="post" action="{base}/deny">{csrf_field(csrf)}'
        '<input type="text" name="reason" placeholder="reason (optional)" '
        f'maxlength="{MAX_REASON}" aria-label="denial reason">'
        '<button type="submit" class="deny">Deny</button></form>'
        "</div>"
    )


def _history(requests: list[ApprovalRequest]) -> Markup:
    if not requests:
        return Markup("<p>No decisions yet.</p>")
    rows = [
        (
            r.id,
            r.state.replace("_", " "),
            r.subject,
            r.target,
            r.reason,
            r.decided_by or "-",
            r.decision_reason or "-",
            r.scope if r.state == "approved" else "-",
            when(r.decided_at),
        )
        for r in requests
    ]
    return table(
        ("id", "outcome", "requester", "target", "why", "by", "reason", "scope", "at"),
        rows,
        "history",
    )


async def approve(request: web.Request) -> web.Response:
    return await _decide(request, approve=True)


async def deny(request: web.Request) -> web.Response:
    return await _decide(request, approve=False)


async def _decide(request: web.Request, *, approve: bool) -> web.Response:
    _require(request)
    session = current()
    form = await request.post()
    reason = str(form.get("reason") or "")[:MAX_REASON]
    scope = str(form.get("scope") or "statement") if approve else "statement"
    request_id = request.match_info["id"]
    broker = console_of(request).runtime.approvals
    try:
        decided = broker.decide_as_viewer(
            request_id,
            subject=session.subject,
            groups=session.groups,
            approve=approve,
            reason=reason,
            scope=scope,
            admin=access(request).admin,
        )
    except ApprovalError as exc:
        session.flash("error", exc.message)
    else:
        verb = "Approved" if decided.approved else "Denied"
        extra = " for the rest of the session" if decided.scope == "session" else ""
        session.flash("ok", f"{verb} {decided.id} ({decided.subject}){extra}.")
    return see_other(PAGE)
