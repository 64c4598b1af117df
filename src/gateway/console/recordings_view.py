"""The recordings pages: a paged list, and one session replayed as a timeline.

File reading and verification (``recordings.py``) run in the console's own worker threads
(``Console.files``). Recorded values are attacker-controlled (statement texts, rows); they
are escaped like everything else.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from ..recording.render import format_bytes, format_duration, outcome_parts
from .app import access, console_of, forbidden, render
from .html import Markup, h, join, table, when
from .recordings import (
    MAX_ENTRIES,
    MAX_TEXT_CHARS,
    PER_PAGE,
    EventEntry,
    Listed,
    StatementEntry,
    Timeline,
    shorten,
    shown_params,
)

PAGE: Final = "/console/recordings"
OPEN_ROWS: Final = 20  # results with more recorded rows start folded


def _require(request: web.Request) -> None:
    if not access(request).recordings:
        raise forbidden("Recordings are for admin and auditor groups.")


async def recordings_page(request: web.Request) -> web.Response:
    _require(request)
    try:
        number = max(1, int(request.query.get("page", "1")))
    except ValueError:
        number = 1
    index = console_of(request).recordings
    files = console_of(request).files
    listed, total = await asyncio.get_running_loop().run_in_executor(files, index.page, number)
    rows = [_row(item) for item in listed]
    pages = max(1, -(-total // PER_PAGE))
    pager = join(
        [
            Markup(f'<a href="{PAGE}?page={number - 1}">newer</a>') if number > 1 else "",
            Markup(f'<span class="muted">page {number} of {pages}</span>'),
            Markup(f'<a href="{PAGE}?page={number + 1}">older</a>') if number < pages else "",
        ]
    )
    body = Markup(
        f'<p class="muted">{total} recording(s) in {h(index.session_dir)}</p>'
        + table(
            ("session", "user", "target", "start", "duration", "statements", "rows", "status"),
            rows,
            "recordings",
        )
        + f'<div class="pager">{pager}</div>'
    )
    return render(request, "Recordings", body, active="recordings")


def _row(item: Listed) -> list[object]:
    s, v = item.summary, item.verification
    link = Markup(f'<a href="{PAGE}/{h(s.file_id)}">{h(s.file_id)}</a>')
    status = Markup(f'<span class="badge {h(v.tone)}" title="{h(v.message)}">{h(v.label)}</span>')
    if s.problem:
        status = Markup(f"{status} {h(s.problem)}")
    return [
        link,
        s.subject or "-",
        s.target or "-",
        when(s.started_at),
        format_duration(s.duration),
        s.statements,
        s.rows,
        status,
    ]


async def recording_page(request: web.Request) -> web.Response:
    _require(request)
    file_id = request.match_info["id"]
    index = console_of(request).recordings
    loop = asyncio.get_running_loop()
    files = console_of(request).files
    timeline = await loop.run_in_executor(files, index.timeline, file_id)
    path = index.path_of(file_id)
    if timeline is None or path is None:
        raise web.HTTPNotFound(reason="No such recording")
    verification = await loop.run_in_executor(files, index.verification, path)
    badge = Markup(
        f'<span class="badge {h(verification.tone)}">{h(verification.label)}</span> '
        f"{h(verification.message)}"
    )
    body = Markup(
        _header(timeline, badge)
        + Markup(f'<ol class="timeline">{join(_entry(e) for e in timeline.entries)}</ol>')
        + _footer(timeline)
    )
    return render(request, f"Recording {file_id}", body, active="recordings")


def _header(t: Timeline, badge: Markup) -> Markup:
    s = t.start
    if s is None:
        return Markup(f'<p class="flash error">No start frame. {h(t.problem or "")}</p>')
    facts = [
        ("session", s.session_id),
        ("user", s.subject),
        ("groups", ", ".join(s.groups) or "-"),
        ("target", f"{s.target} ({s.protocol}) as {s.upstream_user}"),
        ("client", s.client_address),
        ("TLS", s.tls.get("version", "none") if s.tls else "none"),
        ("started", when(s.started_at)),
        ("gateway", s.gateway_version),
        ("policy digest", s.policy_digest),
        ("token", s.token_id or "-"),
    ]
    dl = join(Markup(f"<dt>{h(k)}</dt><dd>{h(v)}</dd>") for k, v in facts)
    return Markup(
        f'<section class="card"><dl class="facts">{dl}<dt>integrity</dt><dd>{badge}</dd></dl>'
        "</section>"
    )


def _footer(t: Timeline) -> Markup:
    notes: list[str] = []
    if t.cut:
        notes.append(
            f"Only the first {MAX_ENTRIES} statements and events are shown; "
            f"`gateway sessions replay {t.file_id}` shows them all."
        )
    if t.unknown_frames:
        notes.append(f"{t.unknown_frames} frame(s) of a type this version does not know.")
    if t.truncation:
        notes.append(t.truncation)
    if t.problem:
        notes.append(f"Reading stopped: {t.problem}")
    if t.end is not None:
        e = t.end
        start = t.start.started_at if t.start is not None else e.ended_at
        notes.append(
            f"Ended {when(e.ended_at)} after {format_duration(e.ended_at - start)}: {e.reason}; "
            f"{e.statements} statements, {e.rows} rows, {format_bytes(e.bytes_to_client)} "
            f"to the client, {e.denied} denied."
        )
    else:
        notes.append("No end frame: the session crashed, was cut off, or is still open.")
    return Markup(
        '<section id="end">' + join(Markup(f"<p>{h(n)}</p>") for n in notes) + "</section>"
    )


def _entry(e: StatementEntry | EventEntry) -> Markup:
    if isinstance(e, EventEntry):
        detail = ", ".join(f"{k}={v}" for k, v in e.detail.items())
        return Markup(
            f'<li class="event" data-kind="{h(e.kind)}"><span class="when">+{e.offset:.3f}s</span> '
            f"<strong>{h(e.kind.replace('_', ' '))}</strong> {h(detail)}</li>"
        )
    s = e.stmt
    decision = Markup(f'<span class="badge {h(s.decision)}">{h(s.decision)}</span>')
    rule = f" [{s.rule}]" if s.rule else ""
    name = f" {s.name}" if s.name else ""
    params = shown_params(s.params)
    shown_params_html = (
        Markup(f"<div>params: <code>{h(', '.join(params))}</code></div>") if params else ""
    )
    error = e.done is not None and e.done.error is not None
    return Markup(
        f'<li class="statement{" error" if error else ""}" id="stmt-{s.stmt}">'
        f'<span class="when">+{e.offset:.3f}s · #{s.stmt} · {h(s.path)}{h(name)}</span> '
        f"{decision}{h(rule)}"
        f'<pre class="statement">{h(s.text)}</pre>{shown_params_html}{_result(e)}'
        f'<div class="outcome">{h(_outcome(e))}</div></li>'
    )


def _result(e: StatementEntry) -> Markup:
    if e.columns is None and e.result is None:
        return Markup("")
    columns = e.columns or []  # none described: a COPY TO STDOUT's data
    masked = [f"{c.name} ({c.masked})" for c in columns if c.masked]
    note = Markup(f'<div class="muted">masked: {h(", ".join(masked))}</div>' if masked else "")
    r = e.result
    if r is None:
        return note
    if r.problem is not None:
        return Markup(f'{note}<p class="muted">{h(r.problem)}</p>')
    headers = (
        [f"{c.name} [{c.masked}]" if c.masked else c.name for c in columns]
        if e.columns is not None
        else r.headers
    )
    rows = [["NULL" if v is None else v for v in row] for row in r.rows]
    more = (
        Markup(f'<p class="muted">{e.rows_hidden} more recorded row(s) not shown.</p>')
        if e.rows_hidden
        else ""
    )
    # Long results start folded so the timeline stays readable (no script: <details>).
    shown = len(r.rows) + e.rows_hidden
    open_attr = " open" if shown <= OPEN_ROWS else ""
    return Markup(
        f"{note}<details{open_attr}><summary>{shown} row"
        f"{'' if shown == 1 else 's'} recorded</summary>"
        + table(headers, rows, "result")
        + more
        + "</details>"
    )


def _outcome(e: StatementEntry) -> str:
    d = e.done
    if d is None:
        return "no result recorded (the session ended first)"
    return " · ".join(outcome_parts(d, lambda message: shorten(message, MAX_TEXT_CHARS)))
