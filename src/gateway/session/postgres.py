"""The PostgreSQL session driver: one instance per client connection.

Login phase (coroutine, rare): first-packet dispatch (SSLRequest, GSSENCRequest,
CancelRequest, StartupMessage), the JWT as a cleartext password inside TLS,
target authorization, recording start, upstream connect + login, then the
upstream's ParameterStatus messages and a BackendKeyData carrying the real PID
and the gateway's own secret.

Streaming phase (callbacks, the hot path): each read is scanned for message
boundaries; complete messages are forwarded as one slice with one write; runs
of DataRows cost a header read each and are attributed to the execution at the
head of the tracker's FIFO. Nothing is parsed per row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from protocols.errors import MessageTooLarge, PeerViolation
from protocols.postgres.auth import build_authentication, parse_password_message
from protocols.postgres.constants import (
    AuthRequest,
    SqlState,
)
from protocols.postgres.framing import MessageScanner, splice
from protocols.postgres.messages import (
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    build_backend_key_data,
    build_error_response,
    build_negotiate_protocol_version,
    build_ready_for_query,
    first_packet_length,
    parse_first_packet,
)
from protocols.postgres.rows import rewrite_data_rows
from protocols.postgres.tracker import Execution, QueryTracker

from ..masking.plan import ResultPlan
from ..net.leg import Leg, LegClosed
from .errors import LoginRefused
from .leg_pair import LegPair
from .pg_masking import NO_MASK, PgMasking
from .pg_policy import CHECKED_TYPES, INSUFFICIENT_PRIVILEGE, PgPolicyGate, statement_text
from .pg_recording import PgRecordingObserver
from .pg_upstream import UpstreamConnection, UpstreamError, connect_upstream, send_cancel

if TYPE_CHECKING:
    from ..runtime import Runtime, TargetRuntime

log = logging.getLogger("gateway.session")

# Frontend message types legal after startup (Message Formats).
_FRONTEND_TYPES = frozenset(b"QPBDESHCXFdcf")
_TERMINATE = ord("X")
_COPY_DATA = ord("d")
_DATA_ROW = ord("D")
_PARAMETER_STATUS = ord("S")
_READY_FOR_QUERY = ord("Z")
_BIND = ord("B")
_ERROR = ord("E")
_NOTICE = ord("N")
_NOTIFICATION = ord("A")
# Backend messages the tracker needs to see (everything else is only forwarded).
_TRACKED = frozenset(b"TCZEIsn123G")
# Startup parameters never forwarded upstream: the gateway picks user/database,
# and _pq_.* protocol options are answered with NegotiateProtocolVersion.
_NOT_FORWARDED = frozenset({"user", "database", "replication"})
_MAX_PASSWORD_MESSAGE = 16 * 1024


class PgSession(LegPair):
    """One client connection and, after login, its upstream connection."""

    def __init__(self, runtime: Runtime, target: TargetRuntime, client: Leg, peer: str) -> None:
        self.runtime = runtime
        self.target = target
        self.client = client
        self.peer = peer
        self.session_id = runtime.new_session_id()
        self.upstream: UpstreamConnection | None = None
        self.tracker: QueryTracker | None = None
        self.observer: PgRecordingObserver | None = None
        self.policy_gate: PgPolicyGate | None = None
        self.masking: PgMasking | None = None
        # A result was refused (masking): drop server messages up to the next ReadyForQuery.
        self._swallow = False
        self.cancel_key: tuple[int, bytes] | None = None
        self.identity_subject: str | None = None
        self.started = time.time()
        self.end_reason = "client closed"
        self.tls_active = False
        self._init_teardown()
        max_size = runtime.config.gateway.max_message_size
        self._client_scanner = MessageScanner(max_size, collapse_data_rows=False)
        self._server_scanner = MessageScanner(max_size)

    # ================================================================ login phase

    async def run(self, direct_tls: bool) -> None:
        tls_active = direct_tls
        runtime = self.runtime
        try:
            startup = await asyncio.wait_for(
                self._read_startup(tls_active), runtime.config.gateway.login_timeout
            )
            if startup is None:
                return  # cancel request handled, or client went away
            await asyncio.wait_for(self._login(startup), runtime.config.gateway.login_timeout)
        except LoginRefused as exc:
            self._refuse(exc)
            return
        except TimeoutError:
            self._refuse(
                LoginRefused(SqlState.PROTOCOL_VIOLATION, "login timed out", "login timeout")
            )
            return
        except PeerViolation as exc:
            self._refuse(LoginRefused(str(exc.code), exc.message, f"protocol violation: {exc}"))
            return
        except (LegClosed, ConnectionError):
            self.client.abort()
            return
        await self._done

    async def _read_startup(self, tls_active: bool) -> StartupMessage | None:
        client = self.client
        while True:
            header = await client.read_exactly(4)
            length = first_packet_length(header)
            packet = header + await client.read_exactly(length - 4)
            first = parse_first_packet(packet)
            if isinstance(first, SSLRequest):
                if tls_active:
                    raise PeerViolation("SSLRequest received over TLS")
                if client.buffer:
                    # Bytes pipelined after SSLRequest would be read as if they had
                    # come over TLS (CVE-2021-23214): refuse.
                    raise PeerViolation("received unencrypted data after SSL request")
                client.write(b"S")
                await client.start_tls(self.runtime.server_tls, server_side=True)
                tls_active = True
                self.tls_active = True
                continue
            if isinstance(first, GSSENCRequest):
                # We do not do GSSAPI encryption; clients then try SSLRequest on the
                # same socket (libpq gssencmode=prefer, Npgsql 10).
                client.write(b"N")
                continue
            if isinstance(first, CancelRequest):
                # Cancel packets carry no credential but the secret: TLS is not
                # required for them (libpq < 17 sends them in plaintext).
                self.runtime.handle_cancel(first.process_id, first.secret_key)
                client.close()
                return None
            self.tls_active = tls_active
            return first

    async def _login(self, startup: StartupMessage) -> None:
        runtime = self.runtime
        client = self.client
        params = startup.parameters
        if not self.tls_active and not runtime.config.tls.allow_plaintext:
            raise LoginRefused(
                SqlState.INVALID_AUTHORIZATION,
                "the gateway requires TLS: connect with sslmode=require",
                "plaintext login refused",
            )
        if params.get("replication", "false").lower() not in ("false", "off", "no", "0"):
            raise LoginRefused(
                SqlState.FEATURE_NOT_SUPPORTED,
                "replication connections are not supported by the gateway",
                "replication refused",
            )
        if "user" not in params:
            raise LoginRefused(
                SqlState.INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
                "no user",
            )
        unknown_options = sorted(k for k in params if k.startswith("_pq_."))
        if startup.version & 0xFFFF or unknown_options:
            # We speak 3.0 only: say so, and that we ignored the _pq_ options.
            client.write(build_negotiate_protocol_version(0, unknown_options))

        # Authentication: the JWT arrives as a cleartext password, inside TLS.
        client.write(build_authentication(AuthRequest.CLEARTEXT_PASSWORD))
        mtype, body = await client.read_typed_message(_MAX_PASSWORD_MESSAGE)
        if mtype != ord("p"):
            raise PeerViolation(f"expected password message, got {chr(mtype)!r}")
        token = parse_password_message(body, _MAX_PASSWORD_MESSAGE)
        identity = await runtime.authenticate(token, params["user"])
        del token
        self.identity_subject = identity.subject
        if not runtime.target_allowed(self.target, identity):
            raise LoginRefused(
                SqlState.INVALID_AUTHORIZATION,
                f'access to target "{self.target.name}" is not allowed for this identity',
                f"no policy allows groups {list(identity.groups)} on target {self.target.name}",
            )

        mask_policy = runtime.mask_policy(self.target, identity)
        if mask_policy is not None:
            # Before the upstream login: a session with masks cannot start without the
            # catalog its masks are resolved against (raises LoginRefused).
            self.masking = PgMasking(
                mask_policy,
                await runtime.masking_catalog(self.target),
                runtime.lineage_cache(self.target),
            )

        # Upstream login before the client hears AuthenticationOk: if the target
        # is down the client gets one clear error, not a half-open session.
        forwarded = {
            k: v for k, v in params.items() if k not in _NOT_FORWARDED and not k.startswith("_pq_.")
        }
        try:
            upstream = await connect_upstream(
                self.target.upstream, forwarded, runtime.config.gateway.max_message_size
            )
        except UpstreamError as exc:
            log.warning(
                "upstream login failed",
                extra={
                    "session_id": self.session_id,
                    "target": self.target.name,
                    "detail": exc.detail,
                },
            )
            # Errors about the client's own startup options are safe and useful to
            # pass on; anything about the stored credentials is not.
            if exc.sqlstate in ("22023", "42704", "3D000", "0A000"):
                raise LoginRefused(
                    exc.sqlstate, exc.detail.split(": ", 1)[-1], exc.detail
                ) from None
            raise LoginRefused(
                SqlState.CONNECTION_FAILURE,
                f'could not connect to target "{self.target.name}"',
                exc.detail,
            ) from None
        self.upstream = upstream

        try:
            recording = runtime.open_recording(self, identity)
        except Exception as exc:  # RecordingUnavailable and disk errors: fail closed
            upstream.leg.close()
            raise LoginRefused(
                SqlState.CANNOT_CONNECT_NOW,
                "session recording is unavailable; the gateway refuses new sessions",
                f"recording unavailable: {exc}",
            ) from None

        self.observer = PgRecordingObserver(
            recording,
            runtime.record_rows(self.target, identity),
            runtime.allow_rule(self.target, identity),
        )
        self.tracker = QueryTracker(self.observer)
        self.policy_gate = PgPolicyGate(
            runtime.session_policy(self.target, identity),
            self.observer,
            self.session_id,
            self.masking,
        )
        if self.masking is not None:
            self.observer.planner = self.masking.plan
        for message in upstream.startup_messages:
            if message[0] == _PARAMETER_STATUS:
                self.policy_gate.parameter_status(message[5:])
        unchecked = self.policy_gate.unchecked_reason()
        if unchecked is not None:
            # Set by the client (startup parameters, options) or by the server's
            # defaults for this role or database: refused before the session starts.
            upstream.leg.close()
            if recording is not None:
                recording.end("login refused: " + unchecked)
            raise LoginRefused(SqlState.FEATURE_NOT_SUPPORTED, unchecked, unchecked)
        if recording is not None:
            recording.set_flow_control(
                lambda: upstream.leg.pause_reading("recorder"),
                lambda: upstream.leg.resume_reading("recorder"),
            )

        out = [build_authentication(AuthRequest.OK), *upstream.startup_messages]
        if upstream.process_id is not None and upstream.secret_key is not None:
            secret = runtime.registry.new_cancel_key(self, upstream.process_id)
            self.cancel_key = (upstream.process_id, secret)
            out.append(build_backend_key_data(upstream.process_id, secret))
        # If the target sent no BackendKeyData (e.g. RDS Proxy) we send none:
        # a zero-length key would be a protocol violation.
        out.append(build_ready_for_query(ord("I")))
        client.write(b"".join(out))
        runtime.registry.add(self)
        runtime.session_started(self, identity)
        self._arm_expiry(identity.expires_at)
        self._start_streaming(upstream.leg)

    def _refuse(self, exc: LoginRefused) -> None:
        log.info(
            "login refused",
            extra={
                "session_id": self.session_id,
                "client": self.peer,
                "target": self.target.name,
                "sqlstate": exc.sqlstate,
                "detail": exc.log_detail,
                "subject": self.identity_subject,
            },
        )
        self.runtime.login_refused(self.target, exc.sqlstate)
        if not self.client.closed:
            self.client.write(build_error_response(exc.sqlstate, exc.message, severity="FATAL"))
            self.client.close()

    def _arm_expiry(self, expires_at: float | None) -> None:
        if expires_at is None:
            return
        grace = self.runtime.config.gateway.token_expiry_grace
        delay = max(0.0, expires_at + grace - time.time())
        self._expiry_timer = asyncio.get_running_loop().call_later(
            delay,
            self.terminate,
            SqlState.INVALID_AUTHORIZATION,
            "session ended: the access token expired",
            "token expired",
        )

    # ============================================================ streaming phase

    def _client_data(self, data: bytes) -> None:
        try:
            buf, end, entries = self._client_scanner.feed(data)
        except MessageTooLarge as exc:
            self.terminate(
                SqlState.PROGRAM_LIMIT_EXCEEDED,
                f"message too large: {exc.message}",
                "oversized client message",
            )
            return
        except PeerViolation as exc:
            self.terminate(SqlState.PROTOCOL_VIOLATION, exc.message, "client protocol violation")
            return
        if not entries:
            return
        tracker = self.tracker
        gate = self.policy_gate
        assert tracker is not None and gate is not None
        terminate_at = -1
        # Refused messages are replaced in the forwarded stream: (start, stop, replacement).
        edits: list[tuple[int, int, bytes]] | None = None
        try:
            for mtype, start, stop, _ in entries:
                if mtype == _COPY_DATA:
                    continue
                if mtype not in _FRONTEND_TYPES:
                    raise PeerViolation(f"invalid frontend message type {mtype!r}")
                if mtype == _TERMINATE:
                    terminate_at = stop
                    break
                body = buf[start + 5 : stop]
                if mtype in CHECKED_TYPES:
                    name, text = statement_text(mtype, body)
                    refusal = gate.check(mtype, name, text)
                    if refusal is not None:
                        replacement, error = refusal
                        tracker.deny(mtype, name, text, error)
                        if edits is None:
                            edits = []
                        edits.append((start, stop, replacement))
                    elif text is None:  # FunctionCall
                        tracker.frontend(mtype, body)
                    elif name is None:
                        tracker.query(text)
                    else:
                        tracker.parse(name, text)
                    continue
                if mtype == _BIND and gate.privileged_statements:
                    gate.bind(body)
                tracker.frontend(mtype, body)
        except PeerViolation as exc:
            self.terminate(SqlState.PROTOCOL_VIOLATION, exc.message, "client protocol violation")
            return
        upstream = self.upstream
        assert upstream is not None
        if terminate_at >= 0:
            end = terminate_at
        if edits is not None:
            upstream.leg.write(splice(buf, end, edits))
        else:
            upstream.leg.write(buf if end == len(buf) else memoryview(buf)[:end])
        if terminate_at >= 0:
            self.end_reason = "client terminated"
            self._close_both()

    def _server_data(self, data: bytes) -> None:
        try:
            buf, end, entries = self._server_scanner.feed(data)
        except PeerViolation as exc:
            log.warning(
                "upstream protocol violation",
                extra={"session_id": self.session_id, "detail": str(exc)},
            )
            self.terminate(
                SqlState.PROTOCOL_VIOLATION,
                "the database sent an invalid message",
                "upstream protocol violation",
            )
            return
        if not entries:
            return
        tracker = self.tracker
        observer = self.observer
        assert tracker is not None and observer is not None
        recording = observer.recording is not None
        masking = self.masking
        swallow = self._swallow
        # Result bytes per execution are its DataRow and CopyData bytes; CopyData (one
        # message per row in COPY TO STDOUT) is summed here and credited once.
        copy_bytes = 0
        # Messages replaced in the forwarded stream: the server's errors for refused
        # messages, masked rows, scrubbed errors; b"" drops a message.
        edits: list[tuple[int, int, bytes]] | None = None
        for mtype, start, stop, count in entries:
            replacement: bytes | None = None
            if mtype == _DATA_ROW:
                ex = tracker.head_execution()
                if ex is not None:
                    ex.rows += count
                    if masking is not None and not swallow:
                        plan = ex.mask_plan
                        if plan is None:
                            plan = masking.plan(ex) or NO_MASK
                        if isinstance(plan, ResultPlan):
                            if plan.refusal is not None:
                                replacement = self._refuse_result(ex, plan.refusal)
                                swallow = True
                            else:
                                masked = bytes(rewrite_data_rows(buf, start, stop, plan.rewriters))
                                replacement = masked
                                if recording:
                                    observer.rows(ex, masked, 0, len(masked), count)
                        elif recording:
                            observer.rows(ex, buf, start, stop, count)
                    elif recording and not swallow:
                        observer.rows(ex, buf, start, stop, count)
            elif mtype in _TRACKED:
                if copy_bytes:
                    self._credit_copy_bytes(copy_bytes)
                    copy_bytes = 0
                if mtype == _ERROR:
                    error = tracker.head_denial()
                    if error is not None:
                        assert isinstance(error, bytes)
                        replacement = error
                    elif masking is not None and not swallow:
                        replacement = masking.scrub_error(
                            mtype, buf[start + 5 : stop], tracker.head_execution()
                        )
                tracker.backend(mtype, buf[start + 5 : stop])
                if mtype == _READY_FOR_QUERY:
                    swallow = False
                    if not tracker.busy():
                        gate = self.policy_gate
                        if gate is not None:
                            gate.privilege_in_flight = False
                        if masking is not None:
                            masking.ready_for_query(tracker.status)
            elif mtype == _COPY_DATA:
                if recording:
                    copy_bytes += stop - start
            elif mtype == _PARAMETER_STATUS:
                gate = self.policy_gate
                if gate is not None:
                    unchecked = gate.parameter_status(buf[start + 5 : stop])
                    if unchecked is not None:
                        # A statement (allowed as "privilege") changed a setting the
                        # policy's reading of SQL depends on: end the session.
                        self.terminate(SqlState.FEATURE_NOT_SUPPORTED, unchecked, unchecked)
                        return
            elif masking is not None and not swallow:
                if mtype == _NOTICE:
                    replacement = masking.scrub_error(
                        mtype, buf[start + 5 : stop], tracker.head_execution()
                    )
                elif mtype == _NOTIFICATION:
                    replacement = masking.scrub_notification(buf[start + 5 : stop])
            if swallow and replacement is None and mtype != _READY_FOR_QUERY:
                replacement = b""
            if replacement is not None:
                if edits is None:
                    edits = []
                edits.append((start, stop, replacement))
        self._swallow = swallow
        if copy_bytes:
            self._credit_copy_bytes(copy_bytes)
        if edits is not None:
            self.client.write(splice(buf, end, edits))
        else:
            self.client.write(buf if end == len(buf) else memoryview(buf)[:end])

    def _refuse_result(self, ex: Execution, message: str) -> bytes:
        """A result masking cannot send: its error replaces the rows, and the driver drops
        the server's messages up to ReadyForQuery (the client expects nothing else after
        an ErrorResponse)."""
        ex.error = (INSUFFICIENT_PRIVILEGE, message)
        log.info(
            "result refused by masking",
            extra={"session_id": self.session_id, "target": self.target.name},
        )
        return build_error_response(INSUFFICIENT_PRIVILEGE, message)

    def _credit_copy_bytes(self, n: int) -> None:
        ex = self.tracker.head_execution() if self.tracker is not None else None
        if ex is not None and self.observer is not None:
            self.observer.add_bytes(ex, n)

    # ================================================================== teardown

    def summary(self) -> dict[str, object]:
        up = self.upstream
        return {
            "upstream_pid": up.process_id if up else None,
            "upstream_auth": up.auth_method if up else None,
            "statements": self.observer.statements if self.observer else 0,
            "bytes_to_client": self.client.bytes_out,
        }

    def cancel_query(self) -> None:
        """A client CancelRequest matched this session: forward it upstream now."""
        up = self.upstream
        tracker = self.tracker
        if up is None or tracker is None or not tracker.busy():
            return  # nothing running: a late cancel must not hit the next query
        if up.process_id is None or up.secret_key is None:
            return
        self.runtime.spawn(send_cancel(self.target.upstream, up.process_id, up.secret_key, up.tls))
        if self.observer is not None and self.observer.recording is not None:
            self.observer.recording.control("cancel", {"source": "client"})

    def terminate(self, sqlstate: str, message: str, reason: str) -> None:
        """End the session with a FATAL error to the client (between messages)."""
        if self._closing:
            return
        self.end_reason = reason
        if not self.client.closed:
            self.client.write(build_error_response(sqlstate, message, severity="FATAL"))
        self._close_both()

    def shutdown(self, reason: str) -> None:
        self.terminate(
            SqlState.ADMIN_SHUTDOWN, "terminating connection: the gateway is shutting down", reason
        )

    def _client_lost(self, exc: BaseException | None) -> None:
        self.end_reason = "client disconnected" if exc is None else f"client connection lost: {exc}"
        tracker = self.tracker
        up = self.upstream
        # A client that vanishes mid-query would leave the backend running it to
        # completion (pgbouncer#79): cancel first, then close.
        if (
            tracker is not None
            and tracker.busy()
            and up is not None
            and up.process_id is not None
            and up.secret_key is not None
        ):
            self.runtime.spawn(
                send_cancel(self.target.upstream, up.process_id, up.secret_key, up.tls)
            )
        self._close_both()

    def _upstream_lost(self, exc: BaseException | None) -> None:
        self.end_reason = "database closed the connection"
        if not self.client.closed:
            # The server usually sent its own FATAL (57P01 ...), already forwarded;
            # add ours so a client mid-query gets an error rather than a bare EOF.
            self.client.write(
                build_error_response(
                    SqlState.CONNECTION_FAILURE,
                    "the connection to the database was lost",
                    severity="FATAL",
                )
            )
        self._close_both()

    def _release_registrations(self) -> None:
        self.runtime.registry.remove(self, self.cancel_key)
