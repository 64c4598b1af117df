"""A throwaway PostgreSQL configured like production: scram-sha-256 over TCP, ssl=on.

Where the server comes from, in order (docs/testing.md):
1. GATEWAY_TEST_PG_DSN: an existing server; nothing is started or stopped. The DSN's role
   must be able to create roles and databases for the fixtures to work.
2. Local binaries: initdb/pg_ctl/postgres on PATH or in /usr/lib/postgresql/<v>/bin, newest
   version first. Under root they run as the `postgres` system user via runuser, because
   initdb and postgres refuse to run as root.
3. Docker through testcontainers, when installed and an engine answers.
4. Otherwise ServerUnavailable, whose message says what to install.

The server listens only on 127.0.0.1 on a port the OS picked, keeps its unix socket inside
its own temporary directory, and trades durability for speed (fsync=off): it is thrown away.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.embedded import common
from gateway.embedded.certs import make_ca_and_server_cert
from gateway.embedded.common import (
    EmbeddedServerError,
    ServerStartError,
    ServerUnavailable,
)

__all__ = [
    "ENV_DSN",
    "PostgresServer",
    "find_postgres_bin_dir",
    "pg_quote_ident",
    "pg_quote_literal",
    "start_postgres",
]

ENV_DSN = "GATEWAY_TEST_PG_DSN"
ENV_IMAGE = "GATEWAY_TEST_PG_IMAGE"
_DEFAULT_IMAGE = "postgres:16-alpine"
_SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
_START_TIMEOUT = 60
_INSTALL_HINT = (
    "Install PostgreSQL server binaries (Debian/Ubuntu: `apt-get install postgresql`, which puts "
    "initdb/pg_ctl/postgres in /usr/lib/postgresql/<version>/bin; macOS: `brew install "
    "postgresql@16`), or start a Docker engine and install the extra "
    "(`pip install 'db-gateway[docker]'`), or point "
    f"{ENV_DSN} at an existing server (postgresql://user:password@host:port/dbname)."
)


def pg_quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def pg_quote_literal(value: str) -> str:
    # standard_conforming_strings is on (the default since 9.1): only quotes need doubling.
    return "'" + value.replace("'", "''") + "'"


def _conninfo_value(value: str) -> str:
    """Quote a libpq key=value value when needed (libpq: 'Connection Strings')."""
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _conninfo(params: dict[str, str]) -> str:
    return " ".join(f"{k}={_conninfo_value(v)}" for k, v in params.items())


# --- how the server is controlled (local processes, a container, or nothing) -----------------


class _Control(Protocol):
    def psql(
        self, argv: list[str], conninfo: dict[str, str], password: str, sql: str
    ) -> tuple[int, str, str]: ...

    def reload(self) -> None: ...

    def restart(self) -> None: ...

    def stop(self) -> None: ...


def _local_psql(
    psql: Path, argv: list[str], conninfo: dict[str, str], password: str, sql: str
) -> tuple[int, str, str]:
    proc = common.run(
        [str(psql), *argv, "-d", _conninfo(conninfo)],
        input_text=sql,
        env={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "gateway-harness"},
    )
    return proc.returncode, proc.stdout, proc.stderr


@dataclass
class _ExternalControl:
    """A server we did not start: SQL goes through a local psql; no lifecycle."""

    psql_path: Path | None

    def psql(
        self, argv: list[str], conninfo: dict[str, str], password: str, sql: str
    ) -> tuple[int, str, str]:
        if self.psql_path is None:
            raise ServerUnavailable(
                f"{ENV_DSN} is set but no psql client was found; install it "
                "(Debian/Ubuntu: `apt-get install postgresql-client`)."
            )
        return _local_psql(self.psql_path, argv, conninfo, password, sql)

    def reload(self) -> None:
        raise EmbeddedServerError(f"the server from {ENV_DSN} is not ours to reload")

    def restart(self) -> None:
        raise EmbeddedServerError(f"the server from {ENV_DSN} is not ours to restart")

    def stop(self) -> None:
        pass


@dataclass
class _LocalControl:
    bin_dir: Path
    server_dir: common.ServerDir
    data_dir: Path
    log_file: Path
    run_as: pwd.struct_passwd | None
    stopped: bool = False

    def _pg_ctl(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        return common.run(argv, as_user=self.run_as, cwd=self.server_dir.path, timeout=timeout)

    def psql(
        self, argv: list[str], conninfo: dict[str, str], password: str, sql: str
    ) -> tuple[int, str, str]:
        return _local_psql(self.bin_dir / "psql", argv, conninfo, password, sql)

    def _start_or_restart(self, *action: str) -> None:
        # -w waits until the postmaster reports "ready" in postmaster.pid; -l sends the
        # postmaster's output to the log, so no pipe of ours is inherited by the server.
        wait = ["-l", str(self.log_file), "-w", "-t", str(_START_TIMEOUT)]
        proc = self._pg_ctl(*wait, *action, timeout=_START_TIMEOUT + 30)
        if proc.returncode != 0:
            raise ServerStartError(
                f"pg_ctl {action[-1]} failed ({proc.returncode}): {proc.stderr.strip()}\n"
                f"--- {self.log_file} ---\n{common.log_tail(self.log_file)}"
            )

    def start(self) -> None:
        self._start_or_restart("start")

    def reload(self) -> None:
        proc = self._pg_ctl("reload")
        if proc.returncode != 0:
            raise EmbeddedServerError(f"pg_ctl reload failed: {proc.stderr.strip()}")

    def restart(self) -> None:
        # -m fast: sessions are terminated (clients see 57P01 admin_shutdown), like an
        # operator restarting the database under a live gateway session.
        self._start_or_restart("-m", "fast", "restart")

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            # -m immediate: the data is thrown away, so skip the shutdown checkpoint.
            proc = self._pg_ctl("-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
            if proc.returncode != 0 and pid_file.exists():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    pid = int(pid_file.read_text().splitlines()[0])
                    os.kill(pid, signal.SIGQUIT)  # SIGQUIT: PostgreSQL's immediate shutdown
        self.server_dir.remove()


@dataclass
class _DockerControl:
    handle: Any  # ContainerHandle; typed loosely so docker.py stays an optional import
    base_dir: Path
    password: str

    def psql(
        self, argv: list[str], conninfo: dict[str, str], password: str, sql: str
    ) -> tuple[int, str, str]:
        inside = {**conninfo, "host": "127.0.0.1", "port": "5432"}
        result: tuple[int, str, str] = self.handle.exec(
            ["psql", *argv, "-d", _conninfo(inside)],
            env={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"},
            stdin_text=sql,
        )
        return result

    def _ready(self) -> None:
        self.handle.wait_until(
            ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres"],
            env={},
            timeout=120,
        )

    def reload(self) -> None:
        code, _, err = self.psql(
            ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"],
            {"user": "postgres", "dbname": "postgres", "sslmode": "disable"},
            self.password,
            "SELECT pg_reload_conf()",
        )
        if code != 0:
            raise EmbeddedServerError(f"reload failed: {err.strip()}")

    def restart(self) -> None:
        self.handle.restart()
        self._ready()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


# --- the public object -----------------------------------------------------------------------


@dataclass
class PostgresServer(common.ControlledServer):
    """A running PostgreSQL reachable over TCP; `origin` says where it came from."""

    host: str
    port: int
    superuser: str
    password: str = field(repr=False)
    ca_file: Path | None
    bin_dir: Path | None
    data_dir: Path | None
    origin: str  # "local" | "docker" | "env"
    ssl: bool = True
    log_file: Path | None = None
    socket_dir: Path | None = None
    default_sslmode: str = "require"
    # Every role created through create_role, name -> password, so fixtures can hand out
    # credentials without a second bookkeeping structure.
    roles: dict[str, str] = field(default_factory=dict, repr=False)
    _control: _Control | None = field(default=None, repr=False)

    # -- connection strings --

    def dsn(self, dbname: str = "postgres", **kw: str) -> str:
        """libpq key=value connection string; defaults: superuser, sslmode=require (if ssl).

        `user=` picks a role created with create_role and fills in its password. For
        sslmode=verify-ca/verify-full the CA file is added as sslrootcert.
        """
        user = kw.pop("user", self.superuser)
        params: dict[str, str] = {
            "host": self.host,
            "port": str(self.port),
            "user": user,
            "dbname": dbname,
        }
        password = kw.pop("password", None)
        if password is None:
            password = self.password if user == self.superuser else self.roles.get(user)
        if password is not None:
            params["password"] = password
        params["sslmode"] = kw.pop("sslmode", self.default_sslmode)
        if params["sslmode"] in ("verify-ca", "verify-full") and self.ca_file is not None:
            params["sslrootcert"] = str(self.ca_file)
        params.update(kw)
        return _conninfo(params)

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        """postgresql:// URI form (some tools, e.g. asyncpg's dsn=, prefer it)."""
        from urllib.parse import quote

        user = user or self.superuser
        password = self.password if user == self.superuser else self.roles.get(user, "")
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:"
            f"{self.port}/{quote(dbname, safe='')}?sslmode={self.default_sslmode}"
        )

    # -- SQL through psql --

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL as the superuser with psql over TCP; return stdout: rows, tab-separated.

        ON_ERROR_STOP=1: the first error aborts and raises with psql's stderr. Statements
        run one by one (not in one implicit transaction), so CREATE DATABASE works.
        """
        if self._control is None:
            raise EmbeddedServerError("server has no control backend")
        # Tab-separated like the mariadb client's batch mode, so callers parse both alike.
        argv = ["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        conninfo = {
            "host": self.host,
            "port": str(self.port),
            "user": self.superuser,
            "dbname": dbname,
            "sslmode": "require" if self.ssl else self.default_sslmode,
        }
        code, out, err = self._control.psql(argv, conninfo, self.password, sql)
        if code != 0:
            raise EmbeddedServerError(f"psql failed ({code}) on {dbname!r}: {err.strip()}")
        return out

    def create_role(
        self,
        name: str,
        password: str,
        *,
        superuser: bool = False,
        login: bool = True,
        createdb: bool = False,
        password_encryption: str | None = None,
    ) -> None:
        """CREATE ROLE with a password; `password_encryption="md5"` stores an md5 hash so the
        md5 authentication path can be exercised (scram is the server default)."""
        attrs = [
            "SUPERUSER" if superuser else "NOSUPERUSER",
            "LOGIN" if login else "NOLOGIN",
            "CREATEDB" if createdb else "NOCREATEDB",
        ]
        prefix = ""
        if password_encryption is not None:
            prefix = f"SET password_encryption = {pg_quote_literal(password_encryption)};\n"
        self.psql(
            f"{prefix}CREATE ROLE {pg_quote_ident(name)} {' '.join(attrs)} "
            f"PASSWORD {pg_quote_literal(password)};\n"
        )
        self.roles[name] = password

    def create_database(self, name: str, owner: str | None = None) -> None:
        owner_clause = f" OWNER {pg_quote_ident(owner)}" if owner else ""
        self.psql(f"CREATE DATABASE {pg_quote_ident(name)}{owner_clause};\n")

    # -- lifecycle --

    def reload(self) -> None:
        """Re-read postgresql.conf and pg_hba.conf (pg_ctl reload)."""
        if self._control is not None:
            self._control.reload()


# --- discovery --------------------------------------------------------------------------------


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    try:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        ).stdout
    except OSError:
        return (-1,)
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        return (-1,)
    return tuple(int(g) for g in match.groups() if g is not None)


def find_postgres_bin_dir(extra: Iterable[Path] = ()) -> Path | None:
    """The newest directory that holds initdb, pg_ctl and postgres together.

    Candidates: where PATH's initdb really lives (symlinks resolved: pg_ctl finds postgres
    next to its own real path), /usr/lib/postgresql/*/bin, and `extra`.
    """
    candidates: list[Path] = list(extra)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    candidates.extend(Path("/usr/lib/postgresql").glob("*/bin"))
    usable = {
        c.resolve()
        for c in candidates
        if all(os.access(c / tool, os.X_OK) for tool in _SERVER_TOOLS)
    }
    if not usable:
        return None
    return max(usable, key=_version_key)


def _find_psql() -> Path | None:
    hit = shutil.which("psql")
    if hit:
        return Path(hit)
    bin_dir = find_postgres_bin_dir()
    if bin_dir and (bin_dir / "psql").exists():
        return bin_dir / "psql"
    return None


# --- DSN from the environment -----------------------------------------------------------------


def _parse_dsn(dsn: str) -> dict[str, str]:
    """libpq URI or key=value string -> parameters (enough of libpq's grammar for a DSN)."""
    if dsn.startswith(("postgresql://", "postgres://")):
        from urllib.parse import parse_qsl, unquote, urlsplit

        parts = urlsplit(dsn)
        params: dict[str, str] = {}
        if parts.hostname:
            params["host"] = parts.hostname
        if parts.port:
            params["port"] = str(parts.port)
        if parts.username:
            params["user"] = unquote(parts.username)
        if parts.password is not None:
            params["password"] = unquote(parts.password)
        if parts.path.strip("/"):
            params["dbname"] = unquote(parts.path.lstrip("/"))
        params.update(parse_qsl(parts.query))
        return params
    params = {}
    pattern = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")
    pos = 0
    while pos < len(dsn.rstrip()):
        match = pattern.match(dsn, pos)
        if match is None:
            raise EmbeddedServerError(f"cannot parse {ENV_DSN} near {dsn[pos : pos + 20]!r}")
        key, value = match.group(1), match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[key] = value
        pos = match.end()
    return params


def _from_env(dsn: str) -> PostgresServer:
    params = _parse_dsn(dsn)
    sslmode = params.get("sslmode", "prefer")
    root = params.get("sslrootcert")
    return PostgresServer(
        host=params.get("host", "127.0.0.1"),
        port=int(params.get("port", "5432")),
        superuser=params.get("user", "postgres"),
        password=params.get("password", os.environ.get("PGPASSWORD", "")),
        ca_file=Path(root) if root else None,
        bin_dir=None,
        data_dir=None,
        origin="env",
        ssl=sslmode != "disable",
        default_sslmode=sslmode,
        _control=_ExternalControl(_find_psql()),
    )


# --- local binaries ---------------------------------------------------------------------------


def _hba_text(auth_method: str, extra_hba: Sequence[str], address: str) -> str:
    lines = [
        "# Written by gateway.embedded.postgres. First match wins: extra lines come first.",
        *extra_hba,
        "local all all trust",
        # One `host` line covers TLS and plain TCP: tests of the gateway's upstream
        # tls=disable path need plain TCP, and the password check is the same.
        f"host all all {address} {auth_method}",
    ]
    return "\n".join(lines) + "\n"


def _conf_text(
    *, port: int, socket_dir: str, ssl: bool, cert: str, key: str, ca: str, listen: str
) -> str:
    settings = {
        "listen_addresses": f"'{listen}'",
        "port": str(port),
        "unix_socket_directories": f"'{socket_dir}'",
        # The socket takes logins without a password (pg_hba "local ... trust", for the
        # harness's own psql): only the server's OS user (and root) may open it.
        "unix_socket_permissions": "0700",
        # Benchmarks run 8-16 clients plus pgbouncer and the gateway's own connections.
        "max_connections": "200",
        "shared_buffers": "32MB",
        # Throwaway data: durability costs seconds per test session and buys nothing.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "password_encryption": "'scram-sha-256'",
        "ssl": "on" if ssl else "off",
        "timezone": "'UTC'",
        "lc_messages": "'C'",
        "log_line_prefix": "'%m [%p] %q%u@%d '",
    }
    if ssl:
        settings |= {
            "ssl_cert_file": f"'{cert}'",
            "ssl_key_file": f"'{key}'",
            "ssl_ca_file": f"'{ca}'",
        }
    body = "\n".join(f"{k} = {v}" for k, v in settings.items())
    return f"\n# --- gateway.embedded.postgres ---\n{body}\n"


def _start_local(
    bin_dir: Path,
    *,
    base_dir: Path | None,
    ssl: bool,
    auth_method: str,
    password: str,
    port: int | None,
    extra_hba: Sequence[str],
) -> PostgresServer:
    run_as = common.service_user("postgres") if common.running_as_root() else None
    server_dir = common.ServerDir.create(base_dir, "gateway-pg-", foreign_user=run_as is not None)
    base = server_dir.path
    data_dir, tls_dir, pwfile = base / "data", base / "tls", base / "pwfile"
    log_file = data_dir / "server.log"
    control = _LocalControl(bin_dir, server_dir, data_dir, log_file, run_as)
    try:
        # sun_path holds 107 bytes and ".s.PGSQL.65535.lock" must fit after the directory.
        socket_dir = base / "run" if len(str(base)) <= 76 else server_dir.short_dir("gwpg-")
        data_dir.mkdir(mode=0o700)
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        socket_dir.chmod(0o700)  # a short_dir is made 0755
        ca_file, cert, key = make_ca_and_server_cert(tls_dir, ("localhost", "127.0.0.1"))
        tls_dir.chmod(0o755)
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if run_as is not None:
            for owned in (data_dir, socket_dir, key, pwfile):
                os.chown(owned, run_as.pw_uid, run_as.pw_gid)
        _initdb(bin_dir, data_dir, pwfile, run_as, base)
        port = port or common.free_port()
        conf = _conf_text(
            port=port,
            socket_dir=str(socket_dir),
            ssl=ssl,
            cert=str(cert),
            key=str(key),
            ca=str(ca_file),
            listen="127.0.0.1",
        )
        with (data_dir / "postgresql.conf").open("a") as fh:
            fh.write(conf)
        (data_dir / "pg_hba.conf").write_text(_hba_text(auth_method, extra_hba, "127.0.0.1/32"))
        control.start()
        _set_superuser_password(bin_dir, socket_dir, port, password)
    except BaseException:
        control.stop()
        raise
    server = PostgresServer(
        host="127.0.0.1",
        port=port,
        superuser="postgres",
        password=password,
        ca_file=ca_file if ssl else None,
        bin_dir=bin_dir,
        data_dir=data_dir,
        origin="local",
        ssl=ssl,
        log_file=log_file,
        socket_dir=socket_dir,
        default_sslmode="require" if ssl else "disable",
        _control=control,
    )
    return server.adopt()


def _initdb(
    bin_dir: Path, data_dir: Path, pwfile: Path, run_as: pwd.struct_passwd | None, cwd: Path
) -> None:
    argv = [
        str(bin_dir / "initdb"),
        f"--pgdata={data_dir}",
        "--username=postgres",
        f"--pwfile={pwfile}",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",  # throwaway cluster: skip the final fsync of every file
    ]
    proc = common.run(argv, as_user=run_as, cwd=cwd, timeout=180)
    pwfile.unlink()
    if proc.returncode != 0:
        raise ServerStartError(f"initdb failed ({proc.returncode}):\n{proc.stderr.strip()}")


def _set_superuser_password(bin_dir: Path, socket_dir: Path, port: int, password: str) -> None:
    """Set the password again over the trusted unix socket: initdb hashed it with its
    compiled-in default (md5 before PostgreSQL 14); now the verifier is SCRAM everywhere."""
    argv = [
        str(bin_dir / "psql"),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        f"--host={socket_dir}",
        f"--port={port}",
        "--username=postgres",
        "--dbname=postgres",
        "--file=-",
    ]
    sql = f"ALTER ROLE postgres PASSWORD {pg_quote_literal(password)};\n"
    proc = common.run(argv, input_text=sql)
    if proc.returncode != 0:
        raise ServerStartError(f"could not set the superuser password: {proc.stderr.strip()}")


# --- Docker -----------------------------------------------------------------------------------


def _start_docker(
    *, ssl: bool, auth_method: str, password: str, port: int | None, extra_hba: Sequence[str]
) -> PostgresServer:
    from gateway.embedded.docker import ContainerHandle, docker_host

    base = Path(tempfile.mkdtemp(prefix="gateway-pg-docker-"))
    base.chmod(0o755)
    tls_dir, io_dir = base / "tls", base / "io"
    io_dir.mkdir(mode=0o777)
    io_dir.chmod(0o777)  # the container's user differs from ours
    host = docker_host()
    ca_file, _, _ = make_ca_and_server_cert(tls_dir, sorted({"localhost", "127.0.0.1", host}))
    # Connections reach the container from the Docker bridge, not from 127.0.0.1.
    hba_extra = [line.replace("127.0.0.1/32", "all") for line in extra_hba]
    (tls_dir / "pg_hba.conf").write_text(_hba_text(auth_method, hba_extra, "all"))
    host_port = port or common.free_port()
    image = os.environ.get(ENV_IMAGE, _DEFAULT_IMAGE)
    command = [
        "docker-entrypoint.sh",
        "postgres",
        "-c",
        f"ssl={'on' if ssl else 'off'}",
        "-c",
        "ssl_cert_file=/gw/server.crt",
        "-c",
        "ssl_key_file=/gw/server.key",
        "-c",
        "hba_file=/gw/pg_hba.conf",
        "-c",
        "password_encryption=scram-sha-256",
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=32MB",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
    ]
    try:
        handle = ContainerHandle(
            image=image,
            env={
                "POSTGRES_PASSWORD": password,
                "POSTGRES_INITDB_ARGS": "--auth-host=scram-sha-256 --auth-local=trust",
            },
            preamble=(
                "mkdir -p /gw && cp /gw-in/* /gw/ && chown -R postgres /gw && "
                "chmod 600 /gw/server.key"
            ),
            command=command,
            container_port=5432,
            host_port=host_port,
            tls_dir=tls_dir,
            io_dir=io_dir,
        )
    except Exception as exc:
        shutil.rmtree(base, ignore_errors=True)
        raise ServerStartError(f"could not start {image} with Docker: {exc}") from exc
    control = _DockerControl(handle=handle, base_dir=base, password=password)
    server = PostgresServer(
        host=host,
        port=host_port,
        superuser="postgres",
        password=password,
        ca_file=ca_file if ssl else None,
        bin_dir=None,
        data_dir=None,
        origin="docker",
        ssl=ssl,
        default_sslmode="require" if ssl else "disable",
        _control=control,
    )
    return server.adopt(control._ready)


# --- entry point ------------------------------------------------------------------------------


def start_postgres(
    *,
    base_dir: Path | None = None,
    ssl: bool = True,
    auth_method: str = "scram-sha-256",
    superuser_password: str | None = None,
    port: int | None = None,
    extra_hba: Sequence[str] = (),
) -> PostgresServer:
    """Start (or find) a PostgreSQL server; see the module docstring for the order.

    `extra_hba` lines go before the default ones (first match wins), e.g.
    ``"host all gw_md5 127.0.0.1/32 md5"``. The caller stops the server (or uses `with`);
    an atexit hook stops it otherwise.
    """
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        return _from_env(dsn)
    password = superuser_password or secrets.token_urlsafe(18)
    bin_dir = find_postgres_bin_dir()
    if bin_dir is not None:
        return _start_local(
            bin_dir,
            base_dir=base_dir,
            ssl=ssl,
            auth_method=auth_method,
            password=password,
            port=port,
            extra_hba=extra_hba,
        )
    problem = common.docker_engine_problem()
    if problem is None:
        return _start_docker(
            ssl=ssl, auth_method=auth_method, password=password, port=port, extra_hba=extra_hba
        )
    raise ServerUnavailable(
        "No PostgreSQL server for the embedded harness: "
        f"{ENV_DSN} is not set; initdb/pg_ctl/postgres were not found on PATH or in "
        f"/usr/lib/postgresql/*/bin; Docker is not usable ({problem}). {_INSTALL_HINT}"
    )
