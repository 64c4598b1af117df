"""`gateway sessions list|show|replay|export|verify`: the auditors' tools; and
`gateway sessions live|kill`, the administrators' view of live sessions (admin API,
gateway.commands.lifecycle).

Only argument parsing lives here; the work (and every heavy import: msgspec,
cryptography) happens in ``gateway.recording.cli`` when a command actually runs.
Exit statuses: docs/auditing.md.
"""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from gateway.recording.cli import run

    return run(args)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="session directory (default: session_dir of --config, else ./sessions)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="gateway config file to take session_dir (and keys) from"
    )


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "sessions",
        help="list, show, replay, export and verify session recordings; live sessions",
        description="Auditors' tools for session recordings (docs/auditing.md).",
    )
    commands = parser.add_subparsers(dest="sessions_command", required=True, metavar="COMMAND")

    p = commands.add_parser("list", help="one line per session")
    _common(p)
    p.add_argument("--user", help="only sessions of this user (identity subject)")
    p.add_argument("--target", help="only sessions to this target")
    p.add_argument(
        "--since", help="only sessions started since: a duration (2h, 30m, 7d) or ISO time"
    )
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.set_defaults(func=_run)

    p = commands.add_parser("show", help="the timeline of one session")
    _common(p)
    p.add_argument("id", help="session id, unique prefix of one, or a .gwrec file")
    p.add_argument("--full", action="store_true", help="do not shorten statement texts")
    p.set_defaults(func=_run)

    p = commands.add_parser("replay", help="re-play a session in the terminal, results as tables")
    _common(p)
    p.add_argument("id", help="session id, unique prefix of one, or a .gwrec file")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="time scale: 2 = twice as fast, 0 = no delays (default 1)",
    )
    p.add_argument(
        "--max-gap",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="cap any single recorded pause at this many seconds (default 10)",
    )
    p.set_defaults(func=_run)

    p = commands.add_parser("export", help="every frame as one JSON object per line")
    _common(p)
    p.add_argument("id", help="session id, unique prefix of one, or a .gwrec file")
    p.add_argument("--format", choices=["jsonl"], default="jsonl", help="output format (jsonl)")
    p.set_defaults(func=_run)

    p = commands.add_parser(
        "verify",
        help="check hash chains, signatures and that each file holds its named session",
        description="Exit status: 0 intact, 1 altered/invalid (or named after another "
        "session), 2 usage error, 3 ended without an end frame, 4 truncated inside a frame "
        "(worst of all files), 5 --all found no recordings.",
    )
    _common(p)
    p.add_argument("ids", nargs="*", metavar="ID", help="session ids, prefixes or files")
    p.add_argument("--all", action="store_true", help="verify every recording in the directory")
    p.add_argument("--key", metavar="PUBFILE", help="the recorder's public key (PEM)")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="gateway state_dir holding recording_ed25519.pub.pem",
    )
    p.add_argument("--progress-every", type=int, default=64 << 20, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)

    from .lifecycle import register_sessions

    register_sessions(commands)
