"""`gateway demo`: the product running on an embedded default.

Starts a throwaway PostgreSQL (local binaries, else Docker through
testcontainers, else a message saying what to install), seeds a fake customer
schema with PII, writes a dev signing key, JWKS and config, starts the gateway
and prints tokens and ready-to-paste commands. Ctrl-C stops and removes
everything it started.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

DEMO_ISSUER = "https://gateway.local/dev"
DEMO_AUDIENCE = "db-gateway"
PASSWORD_ENV = "GATEWAY_DEMO_PG_PASSWORD"


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the gateway on a throwaway, seeded database")
    p.add_argument("--port", type=int, default=6432, help="gateway listen port (default 6432)")
    p.add_argument("--dir", help="work directory (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the work directory on exit")
    p.add_argument("--token-ttl", default="8h", help="lifetime of the printed tokens (default 8h)")
    p.set_defaults(func=main)


def _config_text(work: Path, port: int, pg_port: int, ca_file: Path | None) -> str:
    ca = f'tls_ca_file = "{ca_file}"\n' if ca_file else ""
    tls = "verify-full" if ca_file else "require"
    return f"""# Written by `gateway demo`. Every key is documented in docs/configuration.md.
[gateway]
state_dir = "{work / "state"}"
session_dir = "{work / "sessions"}"

[auth]
issuer = "{DEMO_ISSUER}"
audience = "{DEMO_AUDIENCE}"
jwks_file = "{work / "keys" / "jwks.json"}"
user_claim = "sub"
groups_claim = "groups"

[[targets]]
name = "app-pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
host = "127.0.0.1"
port = {pg_port}
database = "app"
user = "gateway"
password_env = "{PASSWORD_ENV}"
tls = "{tls}"
{ca}
[[policies]]
name = "contractors"
groups = ["contractors"]
targets = ["app-pg"]
record_rows = 100

[[policies]]
name = "dba"
groups = ["dba"]
targets = ["*"]
"""


def main(args: argparse.Namespace) -> int:
    from gateway import logs
    from gateway.config import ConfigError, load_config, parse_duration
    from gateway.embedded.common import ServerUnavailable
    from gateway.embedded.postgres import start_postgres
    from gateway.embedded.seed import seed_postgres
    from gateway.keys import generate_signing_key, mint_token
    from gateway.server import run_event_loop, serve

    work = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None
    try:
        say(f"[demo] work directory: {work}")
        say("[demo] starting a throwaway PostgreSQL ...")
        try:
            server = start_postgres(base_dir=work / "postgres", ssl=True)
        except ServerUnavailable as exc:
            say(f"[demo] cannot start PostgreSQL: {exc}")
            return 1
        password = secrets.token_urlsafe(24)
        server.create_role("gateway", password, login=True)
        server.create_database("app", owner="gateway")
        say("[demo] seeding the demo schema (customers with fake PII, orders, 200,000 events) ...")
        seed_postgres(server, dbname="app", owner="gateway")
        key = generate_signing_key(work / "keys", overwrite=True)
        config_path = work / "gateway.toml"
        config_path.write_text(_config_text(work, args.port, server.port, server.ca_file))
        os.environ[PASSWORD_ENV] = password
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            say("[demo] generated config is invalid (a bug):\n" + str(exc))
            return 1
        ttl = parse_duration(args.token_ttl)
        contractor = mint_token(
            key, "bob@example.com", ["contractors"], ttl, audience=DEMO_AUDIENCE, issuer=DEMO_ISSUER
        )
        admin = mint_token(
            key, "alice@example.com", ["dba"], ttl, audience=DEMO_AUDIENCE, issuer=DEMO_ISSUER
        )
        (work / "token-contractor.jwt").write_text(contractor + "\n")
        (work / "token-admin.jwt").write_text(admin + "\n")
        logs.configure("info", "text")

        def ready(_gateway: object) -> None:
            print(_banner(work, args.port, contractor, admin), flush=True)

        run_event_loop(serve(config, on_ready=ready))
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        say("[demo] stopping and cleaning up ...")
        if server is not None:
            server.stop()
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.keep:
            say(f"[demo] left {work} in place (it was given with --dir)")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _banner(work: Path, port: int, contractor: str, admin: str) -> str:
    conn = f"host=127.0.0.1 port={port} dbname=app sslmode=require"
    return f"""
================================ gateway demo ================================
The gateway listens on 127.0.0.1:{port} in front of a throwaway PostgreSQL
seeded with fake customers (name, email, ssn, card_number, phone), orders
and a 200,000-row events table. Sessions are recorded to {work / "sessions"}.

Restricted user bob@example.com (group contractors):
  PGPASSWORD="$(cat {work / "token-contractor.jwt"})" psql "{conn} user=bob@example.com"

Admin alice@example.com (group dba):
  PGPASSWORD="$(cat {work / "token-admin.jwt"})" psql "{conn} user=alice@example.com"

Tokens (the JWT is the password):
  contractors: {contractor}
  dba:         {admin}

Recordings: uv run gateway sessions list --dir {work / "sessions"}
Press Ctrl-C to stop; everything started here is stopped and removed.
==============================================================================
"""
