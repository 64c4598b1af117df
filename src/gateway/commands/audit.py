"""`gateway audit summary`: top identities, denied attempts, approvals and alerts.

Reads the audit log (``--audit-log``, else ``[audit] path`` of ``--config``, else
``<state_dir>/audit.log``) and, with ``--dir``, the session recordings for identities
the log does not mention. Exit status 0, or 2 when there is nothing to read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _summary(args: argparse.Namespace) -> int:
    from gateway.audit.summary import add_recordings, render, summarize_lines
    from gateway.recording.cli import UsageProblem, parse_since

    try:
        since = parse_since(args.since) if args.since else None
    except UsageProblem as exc:
        print(f"gateway audit summary: {exc}", file=sys.stderr)
        return 2
    log_path, session_dir = _paths(args)
    if log_path is None and session_dir is None:
        print("gateway audit summary: no audit log (use --audit-log or --config)", file=sys.stderr)
        return 2
    if log_path is not None and log_path.exists():
        with open(log_path, "rb") as f:
            summary = summarize_lines(f, since)
    elif session_dir is None:
        print(f"gateway audit summary: {log_path}: no such file", file=sys.stderr)
        return 2
    else:
        summary = summarize_lines([], since)
    if session_dir is not None:
        from gateway.recording.summary import summarize

        sessions = []
        for path in sorted(session_dir.glob("*.gwrec")):
            s = summarize(path)
            if s is None:
                continue
            if since is not None and (s.started_at or 0) < since:
                continue
            sessions.append(s)
        add_recordings(summary, sessions)
    sys.stdout.write(render(summary, args.top))
    return 0


def _paths(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    log_path = Path(args.audit_log) if args.audit_log else None
    session_dir = Path(args.dir) if args.dir else None
    if args.config and log_path is None:
        from gateway.config import load_config

        config = load_config(args.config)
        if config.audit.path not in (None, "-"):
            log_path = Path(str(config.audit.path))
        elif config.audit.path is None:
            log_path = Path(config.gateway.state_dir) / "audit.log"
    return log_path, session_dir


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "audit",
        help="summaries of the audit log",
        description="Reports over the audit log (docs/audit-log.md).",
    )
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "summary", help="top identities by rows and bytes, denied attempts, approvals, alerts"
    )
    p.add_argument("--since", help="only since: a duration (24h, 30m, 7d) or an ISO time")
    p.add_argument("--audit-log", metavar="FILE", help="the audit log file to read")
    p.add_argument(
        "--dir", metavar="SESSION_DIR", help="also read session recordings in this directory"
    )
    p.add_argument("--config", metavar="FILE", help="take the audit log path from this config")
    p.add_argument("--top", type=int, default=10, help="identities per table (default 10)")
    p.set_defaults(func=_summary)
