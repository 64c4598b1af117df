"""`gateway check-config FILE` (or `--config FILE`): validate a config without starting anything.

Exit status: 0 valid, 1 invalid (every error printed, one per line, to stderr), 2 the file
cannot be read or is not TOML (with line and column when known).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("check-config", help="validate a config file and report every error")
    parser.add_argument("file", metavar="FILE", nargs="?", help="the TOML config file")
    # As every other command takes it.
    parser.add_argument("--config", dest="config", metavar="FILE", help="the same, as an option")
    parser.set_defaults(func=check_config_command)


def check_config_command(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, ConfigFileError, load_config

    if (args.file is None) == (args.config is None):
        print("give the config file once: FILE or --config FILE", file=sys.stderr)
        return 2
    args.file = args.file or args.config

    try:
        config = load_config(args.file)
    except ConfigFileError as exc:
        print(exc, file=sys.stderr)  # already names the file (and line/column)
        return 2
    except ConfigError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        count = len(exc.errors)
        print(f"{args.file}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    print(f"OK: {len(config.targets)} targets, {len(config.policies)} policies")
    return 0
