"""`gateway run --config FILE`: run the gateway until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the gateway")
    p.add_argument("--config", "-c", required=True, help="path to gateway.toml")
    p.add_argument("--log-format", choices=["json", "text"], help="override gateway.log_format")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gateway import logs
    from gateway.config import ConfigError, load_config
    from gateway.lifecycle import RevocationError
    from gateway.server import run_event_loop, serve

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{args.config}: {line}", file=sys.stderr)
        return 2
    logs.configure(config.gateway.log_level, args.log_format or config.gateway.log_format)
    try:
        run_event_loop(serve(config, config_path=Path(args.config)))
    except (ConfigError, RevocationError) as exc:
        # Found only when starting: a secret that cannot be read, a damaged revocation list.
        # The gateway refuses to start (fail closed) with the reason, not a traceback.
        for line in getattr(exc, "errors", None) or [str(exc)]:
            print(f"{args.config}: {line}", file=sys.stderr)
        return 2
    return 0
