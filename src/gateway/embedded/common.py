"""Helpers shared by the throwaway PostgreSQL and MariaDB servers.

The embedded servers exist for two callers: the test harness (tests/conftest.py) and
`gateway demo`. Both need the same guarantees: free ports only (system services may already
own 5432/3306), temporary directories that the unprivileged server user can reach, and no
server left running when the Python process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Self

__all__ = [
    "EmbeddedServerError",
    "ServerDir",
    "ServerStartError",
    "ServerUnavailable",
    "docker_engine_problem",
    "find_tool",
    "free_port",
    "log_tail",
    "register_cleanup",
    "run",
    "running_as_root",
    "service_user",
    "unregister_cleanup",
]


class EmbeddedServerError(RuntimeError):
    """Base class for every failure of the embedded servers."""


class ServerUnavailable(EmbeddedServerError):
    """No way to obtain a server: no DSN, no local binaries, no Docker engine.

    The message always says what to install; the harness turns it into a test failure
    (never a skip) so a machine without databases cannot pass CI by running nothing.
    """


class ServerStartError(EmbeddedServerError):
    """A server was found but did not come up; the message carries the tail of its log."""


def running_as_root() -> bool:
    return os.geteuid() == 0


def service_user(name: str) -> pwd.struct_passwd:
    """The system account a server must run as when we are root (initdb refuses root)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServerUnavailable(
            f"running as root but the system user {name!r} does not exist; the server "
            f"refuses to run as root. Install the distribution package (it creates the "
            f"user) or run the tests as an unprivileged user."
        ) from None


def _searchable_by_others(path: Path) -> bool:
    """True when a different, unprivileged user can reach `path` (o+x on it and every parent)."""
    return all(d.exists() and d.stat().st_mode & stat.S_IXOTH for d in [path, *path.parents])


@dataclass
class ServerDir:
    """The private directory of one embedded server, and how to remove it.

    When we run as root the server runs as its own system user, which must be able to walk
    to its files. pytest's /tmp/pytest-of-<user> is 0700 and pytest resets it to 0700 at the
    start of every run, including a concurrent one, so loosening it would be both intrusive
    and racy. Instead the directory then lives in the system temporary directory (sticky,
    world-searchable) and `base_dir` gets a symlink to it, so logs are still found there.
    """

    path: Path
    link: Path | None = None
    extra: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, base_dir: Path | None, prefix: str, *, foreign_user: bool) -> ServerDir:
        if base_dir is None:
            path = Path(tempfile.mkdtemp(prefix=prefix))
            link = None
        else:
            base_dir.mkdir(parents=True, exist_ok=True)
            if not foreign_user or _searchable_by_others(base_dir):
                path, link = Path(tempfile.mkdtemp(prefix=prefix, dir=base_dir)), None
            else:
                path = Path(tempfile.mkdtemp(prefix=prefix))
                link = base_dir / path.name
                link.symlink_to(path, target_is_directory=True)
        # Search-only for others: the server user enters its own subdirectories.
        path.chmod(0o711)
        return cls(path, link)

    def short_dir(self, prefix: str) -> Path:
        """A short extra directory, for unix sockets when `path` is too deep for sun_path."""
        extra = Path(tempfile.mkdtemp(prefix=prefix))
        extra.chmod(0o755)
        self.extra.append(extra)
        return extra

    def remove(self) -> None:
        for directory in [self.path, *self.extra]:
            shutil.rmtree(directory, ignore_errors=True)
        if self.link is not None:
            with contextlib.suppress(OSError):
                self.link.unlink()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; never a well-known port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def run(
    argv: Sequence[str],
    *,
    as_user: pwd.struct_passwd | None = None,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run a command, optionally as another system user via runuser, capturing output.

    stdin is always given (input or /dev/null) so a tool never waits on the terminal.
    The caller checks returncode: failures carry stderr that belongs in the error message.
    """
    full = list(argv)
    if as_user is not None:
        full = ["runuser", "-u", as_user.pw_name, "--", *full]
    merged = dict(os.environ)
    if env:
        merged.update(env)
    return subprocess.run(
        full,
        input=input_text if input_text is not None else "",
        capture_output=True,
        text=True,
        env=merged,
        # The server user cannot enter root's home; a cwd it can read avoids warnings.
        cwd=str(cwd) if cwd is not None else "/",
        timeout=timeout,
        check=False,
    )


# --- exit safety -------------------------------------------------------------------------------
# A test run that crashes (or a Ctrl-C in `gateway demo`) must not leave servers behind. Every
# started server registers its stop function; atexit stops what is still registered.
_cleanups: dict[int, Callable[[], None]] = {}
_cleanup_lock = threading.Lock()


def register_cleanup(key: int, stop: Callable[[], None]) -> None:
    with _cleanup_lock:
        _cleanups[key] = stop


def unregister_cleanup(key: int) -> None:
    with _cleanup_lock:
        _cleanups.pop(key, None)


class _Restartable(Protocol):
    def restart(self) -> None: ...

    def stop(self) -> None: ...


class ControlledServer:
    """Lifecycle shared by the embedded servers; their control backend (local
    binaries, Docker, an external server) does the work. A mixin for dataclasses
    that define ``log_file`` and ``_control``."""

    log_file: Path | None
    _control: _Restartable | None

    def adopt(self, ready: Callable[[], None] | None = None) -> Self:
        """Register the server for clean-up at exit, then wait for it with ``ready``;
        a server that never becomes ready is stopped (and removed) before the error
        propagates."""
        register_cleanup(id(self), self.stop)
        if ready is not None:
            try:
                ready()
            except BaseException:
                self.stop()
                raise
        return self

    def restart(self) -> None:
        """Stop and start again on the same host and port; live sessions drop."""
        if self._control is not None:
            self._control.restart()

    def stop(self) -> None:
        """Stop and delete the temporary directory; safe to call twice."""
        if self._control is not None:
            self._control.stop()
        unregister_cleanup(id(self))

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_file, lines) if self.log_file else "(no local log)"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run_cleanups() -> None:
    with _cleanup_lock:
        pending = list(_cleanups.values())
        _cleanups.clear()
    for stop in pending:
        with contextlib.suppress(Exception):
            stop()


atexit.register(_run_cleanups)


def docker_engine_problem() -> str | None:
    """None when a Docker engine answers through testcontainers' client, else the reason."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        # The usual case on CI machines without Docker: answer without opening anything.
        return "no Docker engine (DOCKER_HOST is unset and /var/run/docker.sock is absent)"
    try:
        from testcontainers.core.docker_client import DockerClient
    except ImportError:
        return "testcontainers is not installed (pip install 'db-gateway[docker]')"
    problem = None
    try:
        client = DockerClient(timeout=3)
        try:
            client.client.ping()
        finally:
            client.client.close()
    except Exception as exc:  # docker raises DockerException for every kind of absence
        problem = f"no Docker engine answered ({exc.__class__.__name__}: {exc})"
    if problem is not None:
        # A failed docker client leaves a half-open socket to the garbage collector (the
        # exception's traceback held it until now); reap it quietly here, so it cannot
        # surface later as a ResourceWarning inside an unrelated test.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    return problem


def find_tool(names: Sequence[str], extra_dirs: Sequence[Path] = ()) -> Path | None:
    """The first of `names` found on PATH, then in `extra_dirs` (sbin is not on every PATH)."""
    for name in names:
        hit = shutil.which(name)
        if hit is not None:
            return Path(hit)
    for directory in extra_dirs:
        for name in names:
            candidate = directory / name
            if os.access(candidate, os.X_OK):
                return candidate
    return None
