"""The Docker fallback: a database container through testcontainers (optional dependency).

Used only when neither a DSN nor local server binaries are available and a Docker engine
answers. testcontainers is imported inside functions so that the package works without it.

Containers differ from local servers in three ways that the callers rely on:
- the TLS material is mounted read-only at /gw-in and copied by a small shell preamble to a
  directory owned by the server user, because PostgreSQL refuses a key file it does not own
  (or that root owns with mode 0600) and MariaDB runs as `mysql` inside the image;
- the host port is chosen by us and bound explicitly, so `restart()` keeps the address that
  tests reconnect to (a random `-P` mapping may change across a container restart);
- SQL is run by the client binary inside the container, reading a file from the read-write
  mount /gw-io, so no client binaries are needed on the host.
"""

from __future__ import annotations

import contextlib
import shlex
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.embedded.common import ServerStartError

__all__ = ["ContainerHandle", "docker_host"]


def docker_host() -> str:
    """The address on which published container ports appear (localhost for a local engine)."""
    from testcontainers.core.docker_client import DockerClient

    client = DockerClient()
    try:
        host: str = client.host()
    finally:
        client.client.close()
    return host


class ContainerHandle:
    """One started container plus the host directories mounted into it."""

    def __init__(
        self,
        *,
        image: str,
        env: Mapping[str, str],
        preamble: str,
        command: Sequence[str],
        container_port: int,
        host_port: int,
        tls_dir: Path,
        io_dir: Path,
    ) -> None:
        from testcontainers.core.container import DockerContainer

        script = f"set -e; {preamble}; exec {shlex.join(command)}"
        container: Any = DockerContainer(image)
        for key, value in env.items():
            container.with_env(key, value)
        if docker_host() in ("localhost", "127.0.0.1"):
            # A local engine: publish on loopback only, like the local servers (docker-py
            # takes an (ip, port) tuple; testcontainers' with_bind_ports types only a port).
            container.ports[f"{container_port}/tcp"] = ("127.0.0.1", host_port)
        else:
            container.with_bind_ports(container_port, host_port)
        container.with_volume_mapping(str(tls_dir), "/gw-in", "ro")
        container.with_volume_mapping(str(io_dir), "/gw-io", "rw")
        container.with_kwargs(entrypoint=["sh", "-c", script])
        self._container = container
        self.io_dir = io_dir
        self.host_port = host_port
        container.start()

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin_text: str | None = None,
    ) -> tuple[int, str, str]:
        """Run a command in the container; stdin (if any) is passed as a file on /gw-io."""
        command = list(argv)
        staged: Path | None = None
        if stdin_text is not None:
            staged = self.io_dir / f"stdin-{uuid.uuid4().hex}.sql"
            staged.write_text(stdin_text)
            staged.chmod(0o644)
            command = ["sh", "-c", f"exec {shlex.join(command)} < /gw-io/{staged.name}"]
        try:
            wrapped = self._container.get_wrapped_container()
            result = wrapped.exec_run(command, environment=dict(env or {}), demux=True)
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        out, err = result.output
        return (
            int(result.exit_code),
            (out or b"").decode(errors="replace"),
            (err or b"").decode(errors="replace"),
        )

    def wait_until(self, argv: Sequence[str], env: Mapping[str, str], timeout: float) -> None:
        """Poll a readiness command inside the container (the entrypoint's init server only
        listens on a socket, so a TCP probe from inside tells the final server is up)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            code, out, err = self.exec(argv, env=env)
            if code == 0:
                return
            last = (out + err).strip()
            time.sleep(0.5)
        raise ServerStartError(
            f"container did not become ready within {timeout:.0f}s: {last}\n{self.logs()}"
        )

    def logs(self, lines: int = 40) -> str:
        with contextlib.suppress(Exception):
            text: bytes = self._container.get_wrapped_container().logs(tail=lines)
            return text.decode(errors="replace")
        return "(no container logs)"

    def restart(self) -> None:
        self._container.get_wrapped_container().restart(timeout=30)

    def stop(self) -> None:
        self._container.stop()
