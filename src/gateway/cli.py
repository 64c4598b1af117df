"""Command-line entry point: ``gateway <command>``.

Each command lives in its own module under ``gateway.commands`` and exposes
``register(subparsers)``; heavy imports happen inside the command function so
``gateway sessions ...`` starts fast.
"""

from __future__ import annotations

import argparse
import sys

from gateway import __version__
from gateway.commands import (
    approvals,
    audit,
    check_config,
    demo,
    keys,
    lifecycle,
    run,
    sessions,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Layer-7 database access gateway (PostgreSQL, MySQL/MariaDB)"
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, check_config, demo, keys, sessions, approvals, lifecycle, audit):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
