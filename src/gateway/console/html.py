"""HTML building blocks of the console: one layout, small helpers, one stylesheet.

Rules this module keeps:

* Every value that reaches a page goes through ``h()`` (``html.escape`` with quotes):
  statement texts, subjects, reasons and recorded rows are attacker-controlled. Helpers
  take plain values and escape them; only ``Markup`` (HTML built here) is inserted as is.
* No inline script or style: the Content-Security-Policy is ``default-src 'self'`` and the
  stylesheet is served from ``/console/static/console.css``.
* Layouts fit a phone: a viewport meta tag, cards that wrap, tables inside horizontally
  scrollable boxes so the page itself never scrolls sideways.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final


class Markup(str):
    """HTML built by this package from escaped parts; inserted without escaping."""

    __slots__ = ()


def h(value: object) -> Markup:
    """Escape a value for an HTML text node or a quoted attribute."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[str]) -> Markup:
    return Markup("".join(p if isinstance(p, Markup) else h(p) for p in parts))


def csrf_field(token: str) -> Markup:
    return Markup(f'<input type="hidden" name="csrf" value="{h(token)}">')


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float | None) -> str:
    """A short duration: 42s, 3m05s, 2h10m."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def age(epoch: float, now: float | None = None) -> str:
    return span((time.time() if now is None else now) - epoch)


NAV: Final = (
    ("approvals", "/console/approvals", "Approvals"),
    ("sessions", "/console/sessions", "Live sessions"),
    ("recordings", "/console/recordings", "Recordings"),
)


def page(
    title: str,
    body: str,
    *,
    active: str = "",
    subject: str | None = None,
    csrf: str | None = None,
    sections: frozenset[str] = frozenset(),
    flashes: Iterable[tuple[str, str]] = (),
) -> str:
    """A whole document. ``sections``: the nav entries this user may open."""
    nav = ""
    if subject is not None:
        links = join(
            Markup(
                f'<a href="{href}"{" aria-current=page" if key == active else ""}>{h(label)}</a>'
            )
            for key, href, label in NAV
            if key in sections
        )
        signout = (
            Markup(
                '<form method="post" action="/console/logout" class="inline">'
                f'{csrf_field(csrf)}<button type="submit" class="link">Sign out</button></form>'
            )
            if csrf
            else ""
        )
        nav = (
            f'<nav><span class="brand">db-gateway</span>{links}'
            f'<span class="who">{h(subject)}</span>{signout}</nav>'
        )
    notes = join(
        Markup(f'<p class="flash {h(kind)}" role="status">{h(text)}</p>') for kind, text in flashes
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{h(title)} · db-gateway console</title>"
        '<link rel="stylesheet" href="/console/static/console.css">'
        f"</head><body>{nav}<main><h1>{h(title)}</h1>{notes}{body}</main></body></html>\n"
    )


def table(headers: Iterable[str], rows: Iterable[Iterable[object]], cls: str = "") -> Markup:
    """A table in a horizontally scrollable box; cells are escaped unless Markup."""
    head = join(Markup(f"<th>{h(x)}</th>") for x in headers)
    body = join(
        Markup("<tr>" + join(Markup(f"<td>{h(c)}</td>") for c in row) + "</tr>") for row in rows
    )
    klass = f' class="{h(cls)}"' if cls else ""
    return Markup(
        f'<div class="scroll"><table{klass}><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


STYLESHEET: Final = """
:root { --fg:#1b1f24; --muted:#5b6570; --line:#d5dbe1; --bg:#f6f8fa; --card:#fff;
        --ok:#1a7f37; --bad:#b42318; --warn:#9a6700; --accent:#0b57d0; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin:0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
nav { display:flex; flex-wrap:wrap; gap:.25rem .9rem; align-items:center; padding:.6rem 1rem;
      background:#24292f; color:#fff; }
nav a { color:#dbe4ee; text-decoration:none; }
nav a[aria-current] { color:#fff; font-weight:600; text-decoration:underline; }
nav .brand { font-weight:700; margin-right:.5rem; }
nav .who { margin-left:auto; color:#c9d1d9; overflow-wrap:anywhere; }
nav button.link { color:#dbe4ee; }
main { max-width: 70rem; margin: 0 auto; padding: 1rem; }
h1 { font-size:1.35rem; margin:.2rem 0 1rem; }
h2 { font-size:1.1rem; margin:1.5rem 0 .6rem; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px;
        padding:.8rem 1rem; margin:0 0 1rem; }
.card h3 { font-size:1rem; margin:0 0 .4rem; overflow-wrap:anywhere; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:.15rem .8rem; margin:.4rem 0; }
dl.facts dt { color:var(--muted); }
dl.facts dd { margin:0; overflow-wrap:anywhere; min-width:0; }
pre, code { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { white-space:pre-wrap; overflow-wrap:anywhere; background:var(--bg);
      border:1px solid var(--line); border-radius:6px; padding:.5rem .6rem; margin:.4rem 0;
      max-height:20rem; overflow:auto; }
.scroll { max-width:100%; overflow-x:auto; }
table { border-collapse:collapse; background:var(--card); font-size:14px; }
th, td { border:1px solid var(--line); padding:.3rem .5rem; text-align:left; vertical-align:top; }
th { background:#eef1f4; white-space:nowrap; }
/* break-word, not anywhere: a column is at least as wide as its longest word (ids, addresses
   stay readable) and the table scrolls inside .scroll on a phone instead of squeezing. */
td { overflow-wrap:break-word; max-width:40rem; }
form { margin:.4rem 0; }
form.inline { display:inline; margin:0; }
.actions { display:flex; flex-wrap:wrap; gap:.6rem; }
.actions form { flex:1 1 16rem; display:flex; flex-wrap:wrap; gap:.4rem; align-items:center;
                border:1px solid var(--line); border-radius:6px; padding:.5rem; margin:0; }
input[type=text], select, textarea { font:inherit; padding:.4rem .5rem;
        border:1px solid var(--line); border-radius:6px; max-width:100%; }
input[type=text] { flex:1 1 10rem; min-width:0; }
textarea { width:100%; min-height:8rem; }
button { font:inherit; padding:.45rem .9rem; border-radius:6px; border:1px solid var(--line);
         background:#fff; cursor:pointer; }
button.approve { background:var(--ok); border-color:var(--ok); color:#fff; }
button.deny, button.kill { background:var(--bad); border-color:var(--bad); color:#fff; }
button.link { background:none; border:none; padding:0; text-decoration:underline; }
.flash { padding:.5rem .8rem; border-radius:6px; border:1px solid var(--line); background:#fff; }
.flash.error { border-color:var(--bad); color:var(--bad); }
.flash.ok { border-color:var(--ok); color:var(--ok); }
.why { color:var(--warn); font-weight:600; }
.muted { color:var(--muted); }
.badge { display:inline-block; padding:0 .4rem; border-radius:4px; font-size:12px;
         border:1px solid var(--line); }
.badge.deny, .badge.bad { color:var(--bad); border-color:var(--bad); }
.badge.allow, .badge.ok { color:var(--ok); border-color:var(--ok); }
.badge.warn { color:var(--warn); border-color:var(--warn); }
ol.timeline { list-style:none; padding:0; margin:0; }
ol.timeline > li { background:var(--card); border:1px solid var(--line); border-radius:8px;
                   padding:.6rem .8rem; margin:0 0 .7rem; }
ol.timeline .when { color:var(--muted); font-size:13px; }
ol.timeline li.event { background:#fffbe6; }
ol.timeline li.error .outcome { color:var(--bad); }
.pager { display:flex; gap:1rem; margin:1rem 0; }
details > summary { cursor:pointer; color:var(--accent); margin:.3rem 0; }
"""
