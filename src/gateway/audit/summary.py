"""``gateway audit summary``: who read how much, what was refused, what fired.

Reads audit log lines (docs/audit-log.md) and, optionally, session recordings' summaries
(rows and bytes per identity, for periods the audit log does not cover). Pure: it takes
lines and summaries in and returns a ``Summary``; the command does the I/O.
Unreadable lines are counted, never fatal (a log cut mid-line by a crash still reads).
"""

from __future__ import annotations

import calendar
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

_decode = msgspec.json.Decoder(dict[str, Any]).decode


@dataclass
class IdentityTotals:
    subject: str
    statements: int = 0
    rows: int = 0
    bytes: int = 0
    denied: int = 0
    sessions: int = 0


@dataclass
class Summary:
    identities: dict[str, IdentityTotals] = field(default_factory=dict)
    denied: list[dict[str, Any]] = field(default_factory=list)
    approvals: Counter[str] = field(default_factory=Counter)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    logins_refused: Counter[str] = field(default_factory=Counter)
    lines: int = 0
    unreadable: int = 0

    def identity(self, subject: str) -> IdentityTotals:
        totals = self.identities.get(subject)
        if totals is None:
            totals = self.identities[subject] = IdentityTotals(subject)
        return totals

    def top(self, key: str, n: int = 10) -> list[IdentityTotals]:
        return sorted(self.identities.values(), key=lambda t: (-getattr(t, key), t.subject))[:n]


def line_time(line: dict[str, Any]) -> float | None:
    """Seconds since the epoch of a line's ``time`` (``YYYY-MM-DDTHH:MM:SS.mmmZ``)."""
    text = line.get("time")
    if not isinstance(text, str) or len(text) < 19:
        return None
    try:
        base = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    frac = text[20:-1] if text.endswith("Z") and len(text) > 20 else ""
    return base + (int(frac) / 10 ** len(frac) if frac.isdigit() else 0.0)


def summarize_lines(raw_lines: Iterable[bytes], since: float | None = None) -> Summary:
    summary = Summary()
    for raw in raw_lines:
        if not raw.strip():
            continue
        try:
            line = _decode(raw)
        except msgspec.DecodeError:
            summary.unreadable += 1
            continue
        if since is not None:
            at = line_time(line)
            if at is not None and at < since:
                continue
        summary.lines += 1
        add_line(summary, line)
    return summary


def add_line(summary: Summary, line: dict[str, Any]) -> None:
    event = line.get("event")
    subject = str(line.get("subject") or "")
    if event == "statement":
        totals = summary.identity(subject)
        totals.statements += 1
        totals.rows += int(line.get("rows") or 0)
        totals.bytes += int(line.get("bytes") or 0)
        if line.get("decision") != "allow":
            totals.denied += 1
            summary.denied.append(line)
    elif event == "session_start":
        summary.identity(subject).sessions += 1
    elif event == "alert":
        summary.alerts.append(line)
    elif event == "login_refused":
        summary.logins_refused[str(line.get("reason") or "other")] += 1
    elif isinstance(event, str) and event.startswith("approval_"):
        summary.approvals[event.removeprefix("approval_")] += 1


def add_recordings(summary: Summary, sessions: Iterable[Any]) -> None:
    """Totals from recordings (``SessionSummary`` objects) for identities the audit log
    did not mention: the recordings are authoritative where the two overlap."""
    from_log = set(summary.identities)
    for s in sessions:
        if s.subject in from_log:
            continue
        totals = summary.identity(s.subject)
        totals.sessions += 1
        totals.statements += s.statements
        totals.rows += s.rows
        totals.bytes += s.bytes_to_client
        totals.denied += s.denied


def render(summary: Summary, top: int = 10) -> str:
    out: list[str] = []
    out.append(f"Top identities by rows (of {len(summary.identities)}):")
    out.extend(_table(summary.top("rows", top)))
    out.append("")
    out.append("Top identities by bytes:")
    out.extend(_table(summary.top("bytes", top)))
    out.append("")
    denied = Counter(
        (str(d.get("subject") or ""), str(d.get("rule") or "?")) for d in summary.denied
    )
    out.append(f"Denied statements: {len(summary.denied)}")
    for (subject, rule), n in denied.most_common(top):
        out.append(f"  {n:>6}  {subject}  {rule}")
    out.append("")
    out.append(
        "Approvals: "
        + (", ".join(f"{k} {v}" for k, v in sorted(summary.approvals.items())) or "none")
    )
    out.append(
        "Logins refused: "
        + (", ".join(f"{k} {v}" for k, v in sorted(summary.logins_refused.items())) or "none")
    )
    out.append("")
    out.append(f"Alerts fired: {len(summary.alerts)}")
    for a in summary.alerts:
        who = a.get("subject") or a.get("client_host") or "?"
        extra = f" table={a['table']}" if a.get("table") else ""
        out.append(
            f"  {a.get('time', '?')}  {a.get('rule')}  {who}  "
            f"count={a.get('count')}/{a.get('threshold')}{extra}"
        )
    if summary.unreadable:
        out.append("")
        out.append(f"({summary.unreadable} unreadable line(s) skipped)")
    return "\n".join(out) + "\n"


def _table(rows: list[IdentityTotals]) -> list[str]:
    lines = [f"  {'rows':>10} {'bytes':>12} {'stmts':>7} {'denied':>6}  identity"]
    for t in rows:
        lines.append(f"  {t.rows:>10} {t.bytes:>12} {t.statements:>7} {t.denied:>6}  {t.subject}")
    return lines
