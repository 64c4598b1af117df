"""Composition root: listeners, signals, staged graceful shutdown.

This and cli.py are the only modules that choose the event loop (uvloop).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config, ConfigError, read_alerts_webhook_secret, read_webhook_secret
from .net.leg import Leg
from .net.tls import ALPN_POSTGRESQL, ensure_server_certificate, server_context
from .runtime import Runtime, TargetRuntime
from .session.postgres import PgSession

if TYPE_CHECKING:
    from .admin import AdminServer
    from .approvals.notify import WebhookNotifier

log = logging.getLogger("gateway")

_TLS_HANDSHAKE = 0x16


async def _peek_first_byte(sock: socket.socket, timeout: float) -> bytes:
    """Wait until the client sent something and look at its first byte without
    consuming it: 0x16 means a TLS ClientHello (PG17 direct SSL), which must be
    handed to the TLS layer whole."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not fut.done():
            fut.set_result(None)

    fd = sock.fileno()
    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(fut, timeout)
    finally:
        loop.remove_reader(fd)
    try:
        return sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return await _peek_first_byte(sock, timeout)


class Listener:
    """Accepts client connections for one target."""

    def __init__(self, runtime: Runtime, target: TargetRuntime) -> None:
        self.runtime = runtime
        self.target = target
        self.sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.sock is not None
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        cfg = self.target.config
        host, port = cfg.listen_host, cfg.listen_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, port), family=family, backlog=1024)
        self.sock.setblocking(False)
        self._task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        while True:
            try:
                conn, addr = await loop.sock_accept(self.sock)
            except OSError as exc:  # EMFILE and friends: back off, keep serving
                log.error("accept failed", extra={"error": str(exc)})
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self.runtime.spawn(self._handle(conn, f"{addr[0]}:{addr[1]}"))

    async def _handle(self, conn: socket.socket, peer: str) -> None:
        if self.target.config.protocol == "postgres":
            await self._handle_postgres(conn, peer)
        else:
            await self._handle_mysql(conn, peer)

    async def _handle_postgres(self, conn: socket.socket, peer: str) -> None:
        runtime = self.runtime
        loop = asyncio.get_running_loop()
        timeout = runtime.config.gateway.login_timeout
        try:
            first = await _peek_first_byte(conn, timeout)
        except (TimeoutError, OSError):
            conn.close()
            return
        if not first:
            conn.close()
            return
        direct_tls = first[0] == _TLS_HANDSHAKE
        leg = Leg("client")
        try:
            await loop.connect_accepted_socket(
                lambda: leg,
                conn,
                ssl=runtime.server_tls if direct_tls else None,
                ssl_handshake_timeout=timeout if direct_tls else None,
            )
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("client TLS handshake failed", extra={"client": peer, "error": str(exc)})
            conn.close()
            return
        if direct_tls and leg.tls_info().get("alpn") != ALPN_POSTGRESQL:
            # PG17 servers refuse direct TLS without ALPN (protects against
            # cross-protocol attacks); so do we.
            log.info("direct TLS without ALPN postgresql refused", extra={"client": peer})
            leg.abort()
            return
        session = PgSession(runtime, self.target, leg, peer)
        await session.run(direct_tls=direct_tls)

    async def _handle_mysql(self, conn: socket.socket, peer: str) -> None:
        # The MySQL server speaks first (HandshakeV10): no peeking.
        from .session.mysql import MySqlSession

        leg = Leg("client")
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: leg, conn)
        except (OSError, ConnectionError):
            conn.close()
            return
        session = MySqlSession(self.runtime, self.target, leg, peer)
        await session.run()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.sock is not None:
            self.sock.close()


class Gateway:
    """The running gateway: build, start, stop in stages."""

    def __init__(self, config: Config, *, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path  # what SIGHUP re-reads
        self.listeners: list[Listener] = []
        self.runtime: Runtime | None = None
        self.admin: AdminServer | None = None
        self.notifier: WebhookNotifier | None = None
        self.alert_notifier: WebhookNotifier | None = None

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """Where the admin API listens (None without an [admin] section)."""
        return self.admin.address if self.admin is not None else None

    async def start(self) -> None:
        from .auth.jwt import TokenVerifier

        cfg = self.config
        # Secrets first: a missing one fails startup (ConfigError) before anything runs.
        webhook_secret = read_webhook_secret(cfg)
        alerts_secret = read_alerts_webhook_secret(cfg)
        state_dir = Path(cfg.gateway.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        cert, key = ensure_server_certificate(cfg.tls.cert_file, cfg.tls.key_file, state_dir)
        server_tls = server_context(cert, key, min_version=cfg.tls.min_version)
        verifier = TokenVerifier(cfg.auth)
        await verifier.start()
        recorder = None
        if cfg.recording.enabled:
            from .recording import Recorder

            recorder = Recorder(
                Path(cfg.gateway.session_dir),
                signing_key_path=Path(cfg.recording.signing_key_file)
                if cfg.recording.signing_key_file
                else state_dir / "recording_ed25519.pem",
                fsync_interval=cfg.recording.fsync_interval,
                on_failure=cfg.recording.on_failure,
                max_buffer=cfg.recording.max_buffer,
            )
            await recorder.start()
        self.runtime = Runtime(cfg, verifier=verifier, recorder=recorder, server_tls=server_tls)
        self.runtime.config_path = self.config_path
        await self.runtime.audit.start()
        for target in self.runtime.targets.values():
            listener = Listener(self.runtime, target)
            await listener.start()
            self.listeners.append(listener)
        if cfg.admin is not None or cfg.approvals.webhook_url is not None:
            from .admin import start_admin, webhook_notifier

            if cfg.admin is not None:
                self.admin = await start_admin(self.runtime, cfg)
            self.notifier = webhook_notifier(
                cfg, webhook_secret, admin_url=self.admin.url if self.admin else None
            )
            self.runtime.approvals.notify = self.notifier
        if cfg.alerts.webhook_url is not None:
            from .admin import alerts_notifier

            self.alert_notifier = alerts_notifier(cfg, alerts_secret)
            self.runtime.audit.notify = self.alert_notifier.send
        self.runtime.accepting = True
        log.info(
            "gateway ready",
            extra={
                "event": "ready",
                "listeners": {
                    lst.target.name: "{}:{}".format(*lst.address) for lst in self.listeners
                },
                "admin": "{}:{}".format(*self.admin.address) if self.admin else None,
                "admin_url": self.admin.url if self.admin else None,
                "recording": recorder is not None,
            },
        )

    def sighup(self) -> None:
        """Reopen the audit log, then hot-reload the configuration file; a rejected file
        is logged with every error and changes nothing."""
        runtime = self.runtime
        if runtime is None or not runtime.accepting:
            log.warning("SIGHUP ignored: the gateway is starting or stopping")
            return
        runtime.audit.reopen()
        try:
            runtime.reload_config()
        except ConfigError as exc:
            log.error(
                "configuration reload rejected; the running configuration stays in force",
                extra={"event": "config_reload_rejected", "errors": exc.errors},
            )
        except Exception:
            log.exception("configuration reload failed; the running configuration stays")

    async def stop(self) -> None:
        """Stop accepting, let sessions finish for the grace period, then close them."""
        for listener in self.listeners:
            listener.close()
        runtime = self.runtime
        if runtime is None:
            return
        runtime.accepting = False  # readiness fails while sessions drain
        # Approvers can still decide while sessions drain; the API closes with them below.
        grace = self.config.gateway.shutdown_grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if runtime.registry.sessions:
            log.info(
                "draining sessions", extra={"sessions": len(runtime.registry), "grace_s": grace}
            )
        while runtime.registry.sessions and loop.time() < deadline:
            await asyncio.sleep(0.1)
        for session in list(runtime.registry.sessions.values()):
            session.shutdown("gateway shutdown")
        deadline = loop.time() + 5.0
        while runtime.registry.sessions and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
        if self.notifier is not None:
            runtime.approvals.notify = None
            await self.notifier.close()
            self.notifier = None
        if self.alert_notifier is not None:
            runtime.audit.notify = None
            await self.alert_notifier.close()
            self.alert_notifier = None
        await runtime.audit.close()
        if runtime.recorder is not None:
            await runtime.recorder.close()
        await runtime.verifier.close()
        log.info("gateway stopped", extra={"event": "stopped"})


async def serve(
    config: Config,
    *,
    on_ready: Callable[[Gateway], None] | None = None,
    config_path: Path | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully; SIGHUP reloads ``config_path``."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config, config_path=config_path)
    # Installed before start: SIGHUP's default action would kill the process.
    loop.add_signal_handler(signal.SIGHUP, gateway.sighup)
    try:
        await gateway.start()
        tune_gc()
        if on_ready is not None:
            on_ready(gateway)
        await stop.wait()
        log.info("shutdown requested", extra={"event": "shutdown"})
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await gateway.stop()


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path (measured: docs/performance.md).

    With CPython's default thresholds (700, 10, 10) a young collection runs every few
    hundred allocations of container objects, i.e. every few dozen statements, and the
    older generations walk everything loaded at start (sqlglot, the configuration, the
    policy engine): ~15% of the gateway's CPU per statement with recording on. Objects
    alive once the listeners are up are moved out of the collector's sight (gc.freeze)
    and young collections run 70 times less often. Only reference cycles wait for the
    collector; everything else is still freed at once by reference counting.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run_event_loop(main: object) -> None:
    """Run a coroutine on uvloop (the one place the loop is chosen)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)  # type: ignore[arg-type]
