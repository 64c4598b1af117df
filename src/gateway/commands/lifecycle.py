"""`gateway revoke`, `gateway revocations list|remove` and `gateway sessions live|kill`:
the administrators' client of the admin API's lifecycle routes (docs/operations.md,
"Revocation and the kill switch").

The HTTP client, the token options and the output helpers are the approvals command's
(``gateway.commands.approvals``). Exit statuses: 0 ok, 1 the API refused (its message is
printed), 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .approvals import (
    OK,
    AdminClient,
    CommandError,
    _clean,
    _common,
    _dump,
    _quote,
    format_age,
)

CURRENT_HEAD = 48


# -- arguments ----------------------------------------------------------------------------


def register(sub: Any) -> None:
    """``revoke`` and ``revocations`` (``sessions live|kill`` register via sessions.py)."""
    p = sub.add_parser(
        "revoke",
        help="revoke a subject, token id or group, ending its live sessions (admin API)",
        description="Refuse new logins of an identity and end its live sessions at once "
        "(docs/operations.md).",
    )
    _common(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--subject", help="the identity's subject (the user claim)")
    who.add_argument("--token-id", help="one token, by its jti claim")
    who.add_argument("--group", help="every member of this group")
    p.add_argument("--expires-in", metavar="DURATION", help="e.g. 1h, 30m (default: permanent)")
    p.add_argument("--reason", default="", help="why (the ended sessions' clients are told)")
    p.set_defaults(func=revoke_main)

    p = sub.add_parser(
        "revocations",
        help="list or remove revocations (admin API)",
        description="Revocations in force (docs/operations.md).",
    )
    commands = p.add_subparsers(dest="revocations_command", required=True, metavar="COMMAND")
    q = commands.add_parser("list", help="the revocations in force, one line each")
    _common(q)
    q.set_defaults(func=revocations_main)
    q = commands.add_parser("remove", help="lift a revocation")
    _common(q)
    q.add_argument("id", help="revocation id (rev_...)")
    q.set_defaults(func=revocations_main)


def register_sessions(commands: Any) -> None:
    """``gateway sessions live`` and ``gateway sessions kill`` (added to sessions.py's parser)."""
    p = commands.add_parser("live", help="the live sessions, with their numbers (admin API)")
    _common(p)
    p.set_defaults(func=sessions_main)
    p = commands.add_parser("kill", help="end a live session now (admin API)")
    _common(p)
    p.add_argument("id", help="live session id")
    p.add_argument("--reason", default="", help="why (the session's client is told)")
    p.set_defaults(func=sessions_main)


# -- running ------------------------------------------------------------------------------


def _run(prefix: str, args: argparse.Namespace, body: Any) -> int:
    try:
        body(AdminClient.from_args(args))
    except CommandError as exc:
        print(f"gateway {prefix}: {exc.message}", file=sys.stderr)
        return exc.status
    return OK


def revoke_main(args: argparse.Namespace) -> int:
    def run(client: AdminClient) -> None:
        kind, value = next(
            (k, v)
            for k, v in (
                ("subject", args.subject),
                ("token_id", args.token_id),
                ("group", args.group),
            )
            if v is not None
        )
        body = {kind: value, "reason": args.reason}
        if args.expires_in:
            body["expires_in"] = args.expires_in
        data = client.call("POST", "/api/revocations", body)
        if args.json:
            print(_dump(data))
            return
        ended = data.get("sessions_ended") or []
        print(
            f"{_clean(str(data.get('id')))}: {kind} {_clean(value)} revoked "
            f"({_until(data.get('expires_at'))}); {len(ended)} live session(s) ended"
        )

    return _run("revoke", args, run)


def revocations_main(args: argparse.Namespace) -> int:
    def run(client: AdminClient) -> None:
        if args.revocations_command == "list":
            data = client.call("GET", "/api/revocations")
            print(_dump(data) if args.json else format_revocations(data))
        else:
            data = client.call("DELETE", f"/api/revocations/{_quote(args.id)}")
            print(_dump(data) if args.json else f"{_clean(str(data.get('id')))}: removed")

    return _run("revocations", args, run)


def sessions_main(args: argparse.Namespace) -> int:
    def run(client: AdminClient) -> None:
        if args.sessions_command == "live":
            data = client.call("GET", "/api/sessions")
            print(_dump(data) if args.json else format_sessions(data))
        else:
            path = f"/api/sessions/{_quote(args.id)}/kill"
            data = client.call("POST", path, {"reason": args.reason})
            print(_dump(data) if args.json else f"{_clean(str(data.get('session_id')))}: killed")

    return _run("sessions", args, run)


# -- output -------------------------------------------------------------------------------


def _until(expires_at: Any) -> str:
    if not expires_at:
        return "permanent"
    return "until " + time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(expires_at)))


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)), r[-1]])
        for r in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def format_revocations(data: dict[str, Any]) -> str:
    items: list[dict[str, Any]] = data.get("revocations", [])
    if not items:
        return "no revocations in force"
    now = float(data.get("now") or time.time())
    rows = [
        [
            _clean(str(r.get("id", ""))),
            _clean(str(r.get("kind", ""))),
            _clean(str(r.get("value", ""))),
            _clean(str(r.get("revoked_by", ""))),
            format_age(now - float(r.get("created_at") or now)),
            format_age(float(r["expires_at"]) - now) if r.get("expires_at") else "never",
            _clean(str(r.get("reason", ""))),
        ]
        for r in items
    ]
    return _table(["ID", "KIND", "VALUE", "BY", "AGE", "EXPIRES IN", "REASON"], rows)


def format_sessions(data: dict[str, Any]) -> str:
    items: list[dict[str, Any]] = data.get("sessions", [])
    if not items:
        return "no live sessions"
    now = float(data.get("now") or time.time())
    rows = []
    for s in items:
        current = " ".join(_clean(str(s.get("current_statement") or "")).split())
        if len(current) > CURRENT_HEAD:
            current = current[: CURRENT_HEAD - 1] + "\u2026"
        rows.append(
            [
                _clean(str(s.get("session_id", ""))),
                _clean(str(s.get("subject", ""))),
                _clean(str(s.get("target", ""))),
                _clean(str(s.get("client", ""))),
                format_age(now - float(s.get("since") or now)),
                str(s.get("statements", 0)),
                str(s.get("rows", 0)),
                str(s.get("bytes", 0)),
                current or "-",
            ]
        )
    header = ["ID", "SUBJECT", "TARGET", "CLIENT", "AGE", "STMTS", "ROWS", "BYTES", "RUNNING"]
    return _table(header, rows)
