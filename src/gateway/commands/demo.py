"""`gateway demo`: the product running on an embedded default.

Starts a throwaway PostgreSQL (local binaries, else Docker through
testcontainers, else a message saying what to install), seeds a fake customer
schema with PII, writes a dev signing key, JWKS and config, starts the gateway
and prints tokens and ready-to-paste commands. When MariaDB's binaries are
installed it also starts a throwaway MariaDB with the same schema behind a
second target, ``app-mysql``, and prints a ready ``mariadb`` command. Ctrl-C
stops and removes everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEMO_ISSUER = "https://gateway.local/dev"
DEMO_AUDIENCE = "db-gateway"
PASSWORD_ENV = "GATEWAY_DEMO_PG_PASSWORD"
MY_PASSWORD_ENV = "GATEWAY_DEMO_MY_PASSWORD"


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the gateway on a throwaway, seeded database")
    p.add_argument("--port", type=int, default=6432, help="gateway listen port (default 6432)")
    p.add_argument(
        "--mysql-port",
        type=int,
        default=3307,
        help="gateway listen port of the MariaDB target (default 3307)",
    )
    p.add_argument(
        "--admin-port",
        type=int,
        default=8081,
        help="admin API and web console port, plain HTTP on 127.0.0.1 (default 8081)",
    )
    p.add_argument(
        "--no-mysql", action="store_true", help="do not start MariaDB even if it is installed"
    )
    p.add_argument("--dir", help="work directory (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the work directory on exit")
    p.add_argument("--token-ttl", default="8h", help="lifetime of the printed tokens (default 8h)")
    p.set_defaults(func=main)


def _config_text(
    work: Path,
    port: int,
    pg_port: int,
    ca_file: Path | None,
    mysql: _MySqlTarget | None = None,
    admin_port: int = 8081,
) -> str:
    ca = f'tls_ca_file = "{ca_file}"\n' if ca_file else ""
    tls = "verify-full" if ca_file else "require"
    targets = ["app-pg"]
    mysql_target = ""
    if mysql is not None:
        targets.append("app-mysql")
        my_ca = f'tls_ca_file = "{mysql.ca_file}"\n' if mysql.ca_file else ""
        my_tls = "verify-full" if mysql.ca_file else "require"
        mysql_target = f"""
[[targets]]
name = "app-mysql"
protocol = "mysql"
listen = "127.0.0.1:{mysql.listen_port}"
host = "{mysql.host}"
port = {mysql.port}
database = "app"
user = "gateway"
password_env = "{MY_PASSWORD_ENV}"
tls = "{my_tls}"
{my_ca}"""
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

# The admin API and the web console (docs/console.md). Plain HTTP is allowed only because
# it listens on the loopback address.
[admin]
listen = "127.0.0.1:{admin_port}"
groups = ["dba"]
allow_plaintext = true

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
{ca}{mysql_target}
[[policies]]
name = "contractors"
groups = ["contractors"]
targets = {json.dumps(targets)}
allow = ["read", "session", "transaction"]
record_rows = 100
# A result past 10,000 rows pauses until a dba approves the rest (docs/limits.md).
max_rows = 10000
on_limit = "approval"
approvers = ["dba"]
approval_timeout = "5m"

# Contractors never see raw PII (docs/masking.md): by source column, by lineage (derived
# columns), and by content anywhere else (events.payload holds cards, emails and phones).
[[policies.masks]]
columns = ["customers.ssn", "customers.card_number"]
style = "last4"

[[policies.masks]]
columns = ["customers.email"]
style = "email"

[[policies.masks]]
columns = ["customers.phone"]
style = "redact"

[[policies.masks]]
detectors = ["credit_card", "ssn", "email", "phone"]
style = "redact"

[[policies]]
name = "dba"
groups = ["dba"]
targets = ["*"]
allow = ["*"]
deny = ["drop_database"]
"""


@dataclass
class _MySqlTarget:
    host: str
    port: int
    ca_file: Path | None
    listen_port: int


def _start_mysql(work: Path, listen_port: int) -> tuple[Any, _MySqlTarget] | None:
    """A seeded throwaway MariaDB when its binaries are installed, else None (the demo
    goes on with PostgreSQL only)."""
    from gateway.embedded.common import ServerUnavailable, find_tool
    from gateway.embedded.mariadb import start_mariadb
    from gateway.embedded.seed import seed_mariadb

    dirs = [Path(d) for d in ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/bin")]
    if find_tool(("mariadbd", "mysqld"), dirs) is None or find_tool(("mariadb",), dirs) is None:
        say("[demo] MariaDB is not installed: skipping the MySQL target")
        return None
    say("[demo] starting a throwaway MariaDB ...")
    try:
        server = start_mariadb(base_dir=work / "mariadb", ssl=True)
    except (ServerUnavailable, OSError) as exc:
        say(f"[demo] cannot start MariaDB, skipping the MySQL target: {exc}")
        return None
    try:
        password = secrets.token_urlsafe(24)
        server.create_database("app")
        server.create_user("gateway", password, grant_all_on="app")
        say("[demo] seeding the MariaDB copy of the demo schema ...")
        seed_mariadb(server, "app")
    except BaseException:
        server.stop()
        raise
    os.environ[MY_PASSWORD_ENV] = password
    return server, _MySqlTarget(server.host, server.port, server.ca_file, listen_port)


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
    my_server = None
    mysql: _MySqlTarget | None = None
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
        if not args.no_mysql:
            started = _start_mysql(work, args.mysql_port)
            if started is not None:
                my_server, mysql = started
        key = generate_signing_key(work / "keys", overwrite=True)
        config_path = work / "gateway.toml"
        config_path.write_text(
            _config_text(work, args.port, server.port, server.ca_file, mysql, args.admin_port)
        )
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
            print(_banner(work, args.port, contractor, admin, mysql, args.admin_port), flush=True)

        run_event_loop(serve(config, on_ready=ready, config_path=config_path))
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        say("[demo] stopping and cleaning up ...")
        if my_server is not None:
            my_server.stop()
        if server is not None:
            server.stop()
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.keep:
            say(f"[demo] left {work} in place (it was given with --dir)")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _banner(
    work: Path,
    port: int,
    contractor: str,
    admin: str,
    mysql: _MySqlTarget | None = None,
    admin_port: int = 8081,
) -> str:
    conn = f"host=127.0.0.1 port={port} dbname=app sslmode=require"
    mysql_part = ""
    if mysql is not None:
        cli = f"mariadb --ssl -h 127.0.0.1 -P {mysql.listen_port}"
        mysql_part = f"""
MariaDB (target app-mysql, the same schema) on 127.0.0.1:{mysql.listen_port}:
  {cli} -u bob@example.com -p"$(cat {work / "token-contractor.jwt"})" app
  {cli} -u alice@example.com -p"$(cat {work / "token-admin.jwt"})" app
"""
    return f"""
================================ gateway demo ================================
The gateway listens on 127.0.0.1:{port} in front of a throwaway PostgreSQL
seeded with fake customers (name, email, ssn, card_number, phone), orders
and a 200,000-row events table. Sessions are recorded to {work / "sessions"}.

Restricted user bob@example.com (group contractors: may read, not change anything;
try  DELETE FROM orders;  and see it refused with the rule that fired; PII is masked:
try  SELECT name, email, ssn, card_number FROM customers LIMIT 5;):
  PGPASSWORD="$(cat {work / "token-contractor.jwt"})" psql "{conn} user=bob@example.com"

Results past 10,000 rows wait for a dba's approval: as bob, try  SELECT * FROM events;
then approve it in the web console http://127.0.0.1:{admin_port}/console/ (sign in with
alice's token below), or with
  uv run gateway approvals list --url http://127.0.0.1:{admin_port} \\
      --token-file {work / "token-admin.jwt"}

Admin alice@example.com (group dba: everything but DROP DATABASE; approves):
  PGPASSWORD="$(cat {work / "token-admin.jwt"})" psql "{conn} user=alice@example.com"
{mysql_part}
Tokens (the JWT is the password):
  contractors: {contractor}
  dba:         {admin}

Recordings: uv run gateway sessions list --dir {work / "sessions"}
Press Ctrl-C to stop; everything started here is stopped and removed.
==============================================================================
"""
