"""A throwaway MariaDB configured like production: password users over TCP, TLS on.

Where the server comes from, in order (docs/testing.md):
1. GATEWAY_TEST_MYSQL_DSN (mysql://user:password@host:port/db?ssl-ca=/path): an existing
   server; nothing is started or stopped. The user must be able to create users/databases.
2. Local binaries: mariadb-install-db + mariadbd (+ the mariadb client for SQL). Started with
   --no-defaults so no system my.cnf leaks in; under root with --user=mysql.
3. Docker through testcontainers (image mariadb:10.11), when an engine answers.
4. Otherwise ServerUnavailable, whose message says what to install.

MariaDB has no caching_sha2_password (a MySQL 8 plugin); password users here use
mysql_native_password (or ed25519 when asked).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.embedded import common
from gateway.embedded.certs import make_ca_and_server_cert
from gateway.embedded.common import EmbeddedServerError, ServerStartError, ServerUnavailable

__all__ = [
    "ENV_DSN",
    "MariaDBServer",
    "my_quote_ident",
    "my_quote_literal",
    "start_mariadb",
]

ENV_DSN = "GATEWAY_TEST_MYSQL_DSN"
ENV_IMAGE = "GATEWAY_TEST_MYSQL_IMAGE"
_DEFAULT_IMAGE = "mariadb:10.11"
_START_TIMEOUT = 60.0
# sbin is not on every user's PATH, and Homebrew keeps everything in one bin.
_EXTRA_DIRS = tuple(
    Path(p)
    for p in (
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/opt/homebrew/bin",
        "/usr/local/mysql/bin",
    )
)
_INSTALL_HINT = (
    "Install MariaDB (Debian/Ubuntu: `apt-get install mariadb-server mariadb-client`, which "
    "provides mariadb-install-db, mariadbd and mariadb; macOS: `brew install mariadb`), or "
    "start a Docker engine and install the extra (`pip install 'db-gateway[docker]'`), or point "
    f"{ENV_DSN} at an existing server (mysql://user:password@host:port/db?ssl-ca=/path/ca.pem)."
)
# Options shared by install-db and the server: install-db passes unknown options to mariadbd,
# and InnoDB's redo log size is fixed at creation, so both must agree.
_INNODB_OPTIONS = (
    "--innodb-log-file-size=16M",
    "--innodb-buffer-pool-size=128M",
    # Throwaway data: no flush per commit, no doublewrite.
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
)


def my_quote_literal(value: str) -> str:
    # Backslash is an escape character unless NO_BACKSLASH_ESCAPES is set (it is not here).
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def my_quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class _Control(Protocol):
    def client(self, sql: str, database: str | None) -> tuple[int, str, str]: ...

    def restart(self) -> None: ...

    def stop(self) -> None: ...


def _write_client_file(path: Path, options: dict[str, str]) -> None:
    """A [client] option file: keeps the password off argv (visible in ps)."""
    lines = ["[client]", *(f"{k}={v}" for k, v in options.items())]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def _run_client(
    client: Path, options_file: Path, sql: str, database: str | None
) -> tuple[int, str, str]:
    # --defaults-file must come first and is the only option file read (no ~/.my.cnf).
    argv = [str(client), f"--defaults-file={options_file}", "--batch", "--skip-column-names"]
    if database:
        argv.append(database)
    proc = common.run(argv, input_text=sql)
    return proc.returncode, proc.stdout, proc.stderr


@dataclass
class _ExternalControl:
    client_path: Path | None
    options_file: Path

    def client(self, sql: str, database: str | None) -> tuple[int, str, str]:
        if self.client_path is None:
            raise ServerUnavailable(
                f"{ENV_DSN} is set but no mariadb/mysql client was found; install it "
                "(Debian/Ubuntu: `apt-get install mariadb-client`)."
            )
        return _run_client(self.client_path, self.options_file, sql, database)

    def restart(self) -> None:
        raise EmbeddedServerError(f"the server from {ENV_DSN} is not ours to restart")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.options_file.unlink()
            self.options_file.parent.rmdir()


@dataclass
class _LocalControl:
    mariadbd: Path
    client_path: Path
    server_args: list[str]
    server_dir: common.ServerDir
    log_file: Path
    options_file: Path
    process: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    def client(self, sql: str, database: str | None) -> tuple[int, str, str]:
        return _run_client(self.client_path, self.options_file, sql, database)

    def start(self) -> None:
        # Own session: a Ctrl-C aimed at the test run or `gateway demo` must not reach the
        # server before our cleanup decides how to stop it.
        self.process = subprocess.Popen(
            [str(self.mariadbd), *self.server_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=str(self.server_dir.path),
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"mariadbd exited with {self.process.returncode} during start\n"
                    f"--- {self.log_file} ---\n{common.log_tail(self.log_file)}"
                )
            code, _, err = self.client("SELECT 1", None)
            if code == 0:
                return
            last = err.strip()
            time.sleep(0.1)
        self._kill()
        raise ServerStartError(
            f"mariadbd did not accept connections within {_START_TIMEOUT:.0f}s ({last})\n"
            f"--- {self.log_file} ---\n{common.log_tail(self.log_file)}"
        )

    def _shutdown(self, sig_kill: bool) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        if sig_kill:
            process.kill()
        else:
            process.terminate()  # SIGTERM: clean shutdown, like an operator restart
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)

    def _kill(self) -> None:
        self._shutdown(sig_kill=True)

    def restart(self) -> None:
        self._shutdown(sig_kill=False)
        self.start()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        # SIGKILL: the data directory is deleted next, so a clean InnoDB shutdown buys nothing.
        self._kill()
        self.server_dir.remove()


@dataclass
class _DockerControl:
    handle: Any  # ContainerHandle (docker.py is an optional import)
    base_dir: Path
    password: str

    def client(self, sql: str, database: str | None) -> tuple[int, str, str]:
        argv = ["mariadb", "-h127.0.0.1", "-uroot", "--batch", "--skip-column-names"]
        if database:
            argv.append(database)
        result: tuple[int, str, str] = self.handle.exec(
            argv, env={"MYSQL_PWD": self.password}, stdin_text=sql
        )
        return result

    def ready(self) -> None:
        self.handle.wait_until(
            ["mariadb", "-h127.0.0.1", "-uroot", "-e", "SELECT 1"],
            env={"MYSQL_PWD": self.password},
            timeout=120,
        )

    def restart(self) -> None:
        self.handle.restart()
        self.ready()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


@dataclass
class MariaDBServer(common.ControlledServer):
    """A running MariaDB reachable over TCP; `origin` says where it came from."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    ca_file: Path | None
    origin: str  # "local" | "docker" | "env"
    data_dir: Path | None = None
    socket: Path | None = None
    log_file: Path | None = None
    # Every user created through create_user, name -> password.
    users: dict[str, str] = field(default_factory=dict, repr=False)
    _control: _Control | None = field(default=None, repr=False)

    def connect_kwargs(
        self, user: str | None = None, database: str | None = None
    ) -> dict[str, Any]:
        """host/port/user/password(/database) for PyMySQL-style connect(); TLS is the
        caller's choice (PyMySQL: ssl_ca=str(server.ca_file), ssl_verify_identity=True)."""
        user = user or self.user
        password = self.password if user == self.user else self.users[user]
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": password,
        }
        if database is not None:
            kwargs["database"] = database
        return kwargs

    def sql(self, statement: str, database: str | None = None) -> str:
        """Run SQL as the admin user with the mariadb client; return stdout (tab-separated,
        no column names). The client stops at the first error and we raise with stderr."""
        if self._control is None:
            raise EmbeddedServerError("server has no control backend")
        code, out, err = self._control.client(statement, database)
        if code != 0:
            raise EmbeddedServerError(f"mariadb client failed ({code}): {err.strip()}")
        return out

    def create_user(
        self,
        name: str,
        password: str,
        plugin: str = "mysql_native_password",
        grant_all_on: str | None = None,
        *,
        require_ssl: bool = False,
    ) -> None:
        """CREATE USER name@'%' authenticated by `plugin`; optionally GRANT ALL ON
        `grant_all_on` (a database name, or "*" for every database)."""
        if plugin == "caching_sha2_password":
            raise EmbeddedServerError("MariaDB has no caching_sha2_password (MySQL 8 only)")
        account = f"{my_quote_literal(name)}@'%'"
        if plugin == "ed25519":
            # ed25519 ships as a plugin that is not loaded by default.
            loaded = self.sql(
                "SELECT COUNT(*) FROM information_schema.plugins WHERE plugin_name='ed25519'"
            )
            if loaded.strip() == "0":
                self.sql("INSTALL SONAME 'auth_ed25519';")
        statements: list[str] = []
        statements.append(
            f"CREATE USER {account} IDENTIFIED VIA {plugin} "
            f"USING PASSWORD({my_quote_literal(password)})"
            f"{' REQUIRE SSL' if require_ssl else ''};"
        )
        if grant_all_on is not None:
            target = "*.*" if grant_all_on == "*" else f"{my_quote_ident(grant_all_on)}.*"
            statements.append(f"GRANT ALL PRIVILEGES ON {target} TO {account};")
        self.sql("\n".join(statements))
        self.users[name] = password

    def create_database(self, name: str) -> None:
        self.sql(
            f"CREATE DATABASE {my_quote_ident(name)} "
            "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
        )


# --- discovery --------------------------------------------------------------------------------


def _find_client() -> Path | None:
    return common.find_tool(("mariadb", "mysql"), _EXTRA_DIRS)


def _find_local() -> tuple[Path, Path, Path] | None:
    install = common.find_tool(("mariadb-install-db", "mysql_install_db"), _EXTRA_DIRS)
    server = common.find_tool(("mariadbd", "mysqld"), _EXTRA_DIRS)
    client = _find_client()
    if install is None or server is None or client is None:
        return None
    return install, server, client


# --- DSN from the environment -----------------------------------------------------------------


def _from_env(dsn: str) -> MariaDBServer:
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mariadb"):
        raise EmbeddedServerError(f"{ENV_DSN} must look like mysql://user:password@host:port/db")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    ca = query.get("ssl-ca") or query.get("ssl_ca")
    user = unquote(parts.username or "root")
    password = unquote(parts.password or "")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 3306
    base = Path(tempfile.mkdtemp(prefix="gateway-mysql-env-"))
    options = {
        "host": host,
        "port": str(port),
        "user": user,
        "password": password,
        "protocol": "tcp",
    }
    if ca:
        options |= {"ssl-ca": ca, "ssl-verify-server-cert": "1"}
    _write_client_file(base / "client.cnf", options)
    return MariaDBServer(
        host=host,
        port=port,
        user=user,
        password=password,
        ca_file=Path(ca) if ca else None,
        origin="env",
        _control=_ExternalControl(_find_client(), base / "client.cnf"),
    )


# --- local binaries ---------------------------------------------------------------------------


def _install_db(install: Path, data_dir: Path, run_as: pwd.struct_passwd | None, cwd: Path) -> None:
    argv = [
        str(install),
        "--no-defaults",
        f"--datadir={data_dir}",
        # 'normal': root@localhost starts with no password (we set one right away) instead
        # of unix_socket auth, which would tie the admin login to the OS root account.
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--skip-name-resolve",
        *_INNODB_OPTIONS,
    ]
    if run_as is not None:
        argv.append(f"--user={run_as.pw_name}")
    proc = common.run(argv, cwd=cwd, timeout=180)
    if proc.returncode != 0:
        raise ServerStartError(
            f"mariadb-install-db failed ({proc.returncode}):\n"
            f"{(proc.stdout + proc.stderr).strip()[-3000:]}"
        )


def _server_args(
    data_dir: Path,
    socket: Path,
    pid_file: Path,
    tmp_dir: Path,
    port: int,
    tls: tuple[Path, Path, Path] | None,
    run_as: pwd.struct_passwd | None,
    log_file: Path,
) -> list[str]:
    args = [
        "--no-defaults",  # must be first: no /etc/mysql/my.cnf, no ~/.my.cnf
        f"--datadir={data_dir}",
        f"--socket={socket}",
        f"--pid-file={pid_file}",
        f"--tmpdir={tmp_dir}",
        f"--log-error={log_file}",
        f"--port={port}",
        "--bind-address=127.0.0.1",
        # Host names never resolve: accounts match 127.0.0.1/'%', and no DNS stalls.
        "--skip-name-resolve",
        "--max-allowed-packet=64M",  # 16 MiB+ payload tests need more than the default
        "--performance-schema=off",
        "--max-connections=200",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci",
        "--skip-log-bin",
        *_INNODB_OPTIONS,
    ]
    if tls is not None:
        ca, cert, key = tls
        args += [f"--ssl-ca={ca}", f"--ssl-cert={cert}", f"--ssl-key={key}"]
    if run_as is not None:
        args.append(f"--user={run_as.pw_name}")
    return args


def _start_local(
    install: Path,
    mariadbd: Path,
    client: Path,
    *,
    base_dir: Path | None,
    ssl: bool,
    password: str,
    port: int | None,
) -> MariaDBServer:
    run_as = common.service_user("mysql") if common.running_as_root() else None
    server_dir = common.ServerDir.create(
        base_dir, "gateway-mysql-", foreign_user=run_as is not None
    )
    base = server_dir.path
    control: _LocalControl | None = None
    try:
        data_dir, run_dir, tmp_dir = base / "data", base / "run", base / "tmp"
        # sun_path holds 107 bytes; fall back to a short directory for deep base paths.
        if len(str(run_dir / "mysqld.sock")) > 100:
            run_dir = server_dir.short_dir("gwmy-")
        socket = run_dir / "mysqld.sock"
        for d in (data_dir, run_dir, tmp_dir):
            d.mkdir(mode=0o755, exist_ok=True)
        tls = make_ca_and_server_cert(base / "tls", ("localhost", "127.0.0.1")) if ssl else None
        if run_as is not None:
            for d in (data_dir, run_dir, tmp_dir):
                os.chown(d, run_as.pw_uid, run_as.pw_gid)
            if tls is not None:
                os.chown(tls[2], run_as.pw_uid, run_as.pw_gid)
        if tls is not None:
            (base / "tls").chmod(0o755)
        _install_db(install, data_dir, run_as, base)

        port = port or common.free_port()
        log_file = data_dir / "error.log"
        options_file = base / "client.cnf"
        # Before the password exists the client logs in over the socket with none.
        _write_client_file(
            options_file, {"user": "root", "socket": str(socket), "protocol": "socket"}
        )
        server_args = _server_args(
            data_dir, socket, run_dir / "mariadbd.pid", tmp_dir, port, tls, run_as, log_file
        )
        control = _LocalControl(mariadbd, client, server_args, server_dir, log_file, options_file)
        control.start()
        _secure(control, password)
        _write_client_file(
            options_file,
            {"user": "root", "password": password, "socket": str(socket), "protocol": "socket"},
        )
    except BaseException:
        if control is not None:
            control.stop()
        server_dir.remove()
        raise
    server = MariaDBServer(
        host="127.0.0.1",
        port=port,
        user="root",
        password=password,
        ca_file=tls[0] if tls else None,
        origin="local",
        data_dir=data_dir,
        socket=socket,
        log_file=log_file,
        _control=control,
    )
    return server.adopt()


def _secure(control: _LocalControl, password: str) -> None:
    """Drop anonymous users and host-name accounts; give root a password on every route.

    An anonymous ''@'localhost' would out-rank 'user'@'%' for logins (more specific host
    wins), and 'root'@'<hostname>' entries are dead weight under --skip-name-resolve.
    """
    code, out, err = control.client("SELECT user, host FROM mysql.user", None)
    if code != 0:
        raise ServerStartError(f"could not list accounts: {err.strip()}")
    keep_hosts = {"localhost", "127.0.0.1"}
    statements = []
    for line in out.splitlines():
        user, _, host = line.partition("\t")
        if user == "mariadb.sys":
            continue
        if user == "" or host not in keep_hosts:
            statements.append(f"DROP USER {my_quote_literal(user)}@{my_quote_literal(host)};")
    literal = my_quote_literal(password)
    for host in sorted(keep_hosts):
        statements.append(
            f"CREATE USER IF NOT EXISTS 'root'@'{host}';"
            f"ALTER USER 'root'@'{host}' IDENTIFIED VIA mysql_native_password "
            f"USING PASSWORD({literal});"
            f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{host}' WITH GRANT OPTION;"
        )
    statements.append("FLUSH PRIVILEGES;")
    code, _, err = control.client("\n".join(statements), None)
    if code != 0:
        raise ServerStartError(f"could not secure the accounts: {err.strip()}")


# --- Docker -----------------------------------------------------------------------------------


def _start_docker(*, ssl: bool, password: str, port: int | None) -> MariaDBServer:
    from gateway.embedded.docker import ContainerHandle, docker_host

    base = Path(tempfile.mkdtemp(prefix="gateway-mysql-docker-"))
    base.chmod(0o755)
    tls_dir, io_dir = base / "tls", base / "io"
    io_dir.mkdir()
    io_dir.chmod(0o777)  # the container's user differs from ours
    host = docker_host()
    ca_file, _, _ = make_ca_and_server_cert(tls_dir, sorted({"localhost", "127.0.0.1", host}))
    host_port = port or common.free_port()
    image = os.environ.get(ENV_IMAGE, _DEFAULT_IMAGE)
    command = [
        "docker-entrypoint.sh",
        "mariadbd",
        "--skip-name-resolve",
        "--max-allowed-packet=64M",
        "--performance-schema=off",
        "--max-connections=200",
    ]
    if ssl:
        command += ["--ssl-ca=/gw/ca.crt", "--ssl-cert=/gw/server.crt", "--ssl-key=/gw/server.key"]
    try:
        handle = ContainerHandle(
            image=image,
            env={"MARIADB_ROOT_PASSWORD": password, "MARIADB_ROOT_HOST": "%"},
            preamble=(
                "mkdir -p /gw && cp /gw-in/* /gw/ && chown -R mysql /gw && chmod 600 /gw/server.key"
            ),
            command=command,
            container_port=3306,
            host_port=host_port,
            tls_dir=tls_dir,
            io_dir=io_dir,
        )
    except Exception as exc:
        shutil.rmtree(base, ignore_errors=True)
        raise ServerStartError(f"could not start {image} with Docker: {exc}") from exc
    control = _DockerControl(handle=handle, base_dir=base, password=password)
    server = MariaDBServer(
        host=host,
        port=host_port,
        user="root",
        password=password,
        ca_file=ca_file if ssl else None,
        origin="docker",
        _control=control,
    )
    return server.adopt(control.ready)


# --- entry point ------------------------------------------------------------------------------


def start_mariadb(
    *,
    base_dir: Path | None = None,
    ssl: bool = True,
    root_password: str | None = None,
    port: int | None = None,
) -> MariaDBServer:
    """Start (or find) a MariaDB server; see the module docstring for the order.

    The admin account is root (mysql_native_password, reachable over TCP from 127.0.0.1).
    The caller stops the server (or uses `with`); an atexit hook stops it otherwise.
    """
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        return _from_env(dsn)
    password = root_password or secrets.token_urlsafe(18)
    local = _find_local()
    if local is not None:
        install, mariadbd, client = local
        return _start_local(
            install, mariadbd, client, base_dir=base_dir, ssl=ssl, password=password, port=port
        )
    problem = common.docker_engine_problem()
    if problem is None:
        return _start_docker(ssl=ssl, password=password, port=port)
    raise ServerUnavailable(
        "No MariaDB server for the embedded harness: "
        f"{ENV_DSN} is not set; mariadb-install-db/mariadbd/mariadb were not found on PATH or "
        f"in /usr/sbin, /usr/bin; Docker is not usable ({problem}). {_INSTALL_HINT}"
    )
