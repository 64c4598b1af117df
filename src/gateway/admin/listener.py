"""The admin API's listener: HTTPS with the gateway's certificate, plain HTTP only when
``[admin] allow_plaintext`` is set and the address is a loopback one."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import Config, ConfigError, parse_listen
from .api import build_app

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("gateway.admin")

# Requests in flight get this long to finish when the gateway stops.
SHUTDOWN_TIMEOUT = 2.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminServer:
    def __init__(self, runner: web.AppRunner, address: tuple[str, int], tls: bool) -> None:
        self._runner = runner
        self.address = address
        self.tls = tls

    @property
    def url(self) -> str:
        """The base URL (``https://host:port``) of the bound address."""
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_admin(runtime: Runtime, config: Config) -> AdminServer:
    """Start the admin API on ``[admin] listen`` (port 0: any free port)."""
    admin = config.admin
    if admin is None:
        raise ValueError("the configuration has no [admin] section")
    host, port = parse_listen(admin.listen)
    if admin.allow_plaintext and not is_loopback(host):
        raise ConfigError(
            [f"admin.allow_plaintext: plain HTTP is only allowed on a loopback address, not {host}"]
        )
    tls = None if admin.allow_plaintext else runtime.server_tls
    runner = web.AppRunner(
        build_app(runtime, config),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=tls, backlog=128)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    server = AdminServer(runner, (str(bound[0]), int(bound[1])), tls is not None)
    log.info("admin API listening", extra={"event": "admin_listening", "url": server.url})
    return server
