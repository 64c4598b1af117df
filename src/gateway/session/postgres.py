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
import re
import time
from collections.abc import Callable
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
    build_command_complete,
    build_error_response,
    build_negotiate_protocol_version,
    build_notice_response,
    build_ready_for_query,
    first_packet_length,
    parse_first_packet,
    startup_options,
)
from protocols.postgres.pump import ReadPump
from protocols.postgres.rows import rewrite_data_rows, skip_data_rows, split_data_rows
from protocols.postgres.tracker import Execution, QueryTracker

from ..approvals import ApprovalRequest
from ..limits import DRAINING, OPEN, PAUSED, STOPPED, Budget, Cut, SessionLimits
from ..masking.plan import ResultPlan
from ..net.leg import Leg, LegClosed
from ..policy import Decision, refused_beyond
from .errors import LoginRefused
from .leg_pair import LegPair
from .limit_control import CANCELED_SQLSTATE, LIMIT_SQLSTATE, LimitControl
from .pg_masking import NO_MASK, PgMasking
from .pg_policy import CHECKED_TYPES, INSUFFICIENT_PRIVILEGE, PgPolicyGate, statement_text
from .pg_recording import PgRecordingObserver
from .pg_upstream import UpstreamConnection, UpstreamError, connect_upstream, send_cancel

if TYPE_CHECKING:
    from ..audit import SessionAudit
    from ..identity import Identity
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
_IDLE = ord("I")  # ReadyForQuery's status outside a transaction block
# Portals with a per-result budget at once (one transaction's, plus WITH HOLD cursors').
_PORTAL_BUDGETS = 4096
# Messages that end one statement's result (CommandComplete, PortalSuspended,
# ErrorResponse, EmptyQueryResponse).
_RESULT_END = frozenset(b"CsEI")
# SQL-level statements that create or drop names in the protocol's namespaces: prepared
# statements (PREPARE, DEALLOCATE, DISCARD) and portals (DECLARE, CLOSE, DISCARD). Found
# anywhere in a text, words in literals included: a false match only makes the tracker
# forget names (fail closed), a missed one would let its records drift from the server's.
_RENAMES = re.compile(rb"(?i)\b(prepare|deallocate|discard|declare|close)\b")
_STATEMENT_WORDS = frozenset({b"prepare", b"deallocate", b"discard"})
_PORTAL_WORDS = frozenset({b"declare", b"close", b"discard"})
# Startup parameters never forwarded upstream: the gateway picks user/database,
# and _pq_.* protocol options are answered with NegotiateProtocolVersion.
_NOT_FORWARDED = frozenset({"user", "database", "replication"})
# A setting name as the server looks it up (case-folded; custom ones are dotted).
_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_$]*(?:\.[a-z_][a-z0-9_$]*)*")
_SESSION_ONLY = frozenset({"session"})
# Settings the gateway checks from the server's ParameterStatus once logged in (the policy
# gate refuses a session whose reading of SQL they would change): not decided twice.
_READ_AFTER_LOGIN = frozenset({"client_encoding", "standard_conforming_strings"})


_TERMINATE_MESSAGE = b"X\x00\x00\x00\x04"


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
        self.limits: SessionLimits | None = None
        self.control: LimitControl | None = None
        self.audit: SessionAudit | None = None
        # A portal executed in batches (Execute with a row limit) is one result: its
        # budget carries over while the same Bind's portal is executed again.
        self._portal_budgets: dict[bytes, tuple[object, Budget]] = {}
        # A result was refused (masking): drop server messages up to the next ReadyForQuery.
        self._swallow = False
        self.cancel_key: tuple[int, bytes] | None = None
        self.identity_subject: str | None = None
        self.policy_generation: int | None = None
        self.identity: Identity | None = None
        self.started = time.time()
        self.end_reason = "client closed"
        self.tls_active = False
        self._init_teardown()
        max_size = runtime.config.gateway.max_message_size
        self._client_scanner = MessageScanner(max_size, collapse_data_rows=False)
        self._server_scanner = MessageScanner(max_size)
        self._client_pump: Callable[[bytes], object] | None = None  # set when streaming starts
        self._server_pump: Callable[[bytes], object] | None = None

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

    def _check_startup_settings(self, identity: Identity, forwarded: dict[str, str]) -> None:
        """Startup parameters are settings the server applies at login (``role``,
        ``search_path``, ``options=-c name=value``): each is decided as the ``SET`` it
        stands for, so a setting the policy refuses as a statement (SET ROLE, a search
        path into a denied schema) cannot be had at connect time. Harmless session
        settings (application_name, DateStyle...) pass even where the session class is not
        allowed, as they always did; anything else the policy refuses ends the login."""
        settings: list[tuple[str, str]] = []
        for name, value in forwarded.items():
            if name == "options":
                parsed = startup_options(value)
                if parsed is None:
                    raise LoginRefused(
                        SqlState.INSUFFICIENT_PRIVILEGE,
                        "startup options other than -c name=value are not allowed",
                        "startup options refused",
                    )
                settings.extend(parsed)
            else:
                settings.append((name, value))
        if not settings:
            return
        policy = self.runtime.session_policy(self.target, identity)
        for name, value in settings:
            key = name.lower()
            if key in _READ_AFTER_LOGIN:
                continue
            if not _SETTING_NAME.fullmatch(key):
                raise LoginRefused(
                    SqlState.INSUFFICIENT_PRIVILEGE,
                    f'startup setting "{name[:64]}" is not allowed',
                    "startup setting refused: name",
                )
            quoted = value.replace("'", "''")
            decision = policy.check_query(f"SET {key} = '{quoted}'")
            if not refused_beyond(decision, _SESSION_ONLY):
                continue
            raise LoginRefused(
                SqlState.INSUFFICIENT_PRIVILEGE,
                f'startup setting "{key}" refused by the gateway\'s policy: {decision.message}',
                f"startup setting {key} refused ({decision.rule})",
            )

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
        # A token of up to auth.max_token_size bytes: the message adds its length field
        # (4 bytes) and the password's terminating NUL.
        max_token = runtime.config.auth.max_token_size
        mtype, body = await client.read_typed_message(max_token + 5)
        if mtype != ord("p"):
            raise PeerViolation(f"expected password message, got {chr(mtype)!r}")
        token = parse_password_message(body, max_token)
        identity = await runtime.authenticate(token, params["user"])
        del token
        # Masks, policy and limits are chosen from here on, across awaits: a reload in
        # between ends the session once started (Runtime.session_started).
        self.policy_generation = runtime.generation
        self.identity_subject = identity.subject
        self.identity = identity
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
        self._check_startup_settings(identity, forwarded)
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
                raise LoginRefused(exc.sqlstate, exc.message or exc.detail, exc.detail) from None
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

        self.audit = runtime.session_audit(self, self.target, identity)
        self.observer = PgRecordingObserver(
            recording,
            runtime.record_rows(self.target, identity),
            runtime.allow_rule(self.target, identity),
            self.audit,
        )
        self.tracker = QueryTracker(self.observer)
        self.observer.unfinished = self.tracker.unfinished
        self.observer.reporting.schedule = asyncio.get_running_loop().call_later
        self.observer.reporting.fail = self._reporting_failed
        self.policy_gate = PgPolicyGate(
            runtime.session_policy(self.target, identity),
            self.observer,
            self.session_id,
            self.masking,
        )
        self.observer.failed = self.policy_gate.statement_failed
        if self.masking is not None:
            self.observer.planner = self.masking.plan
        self.control = runtime.limit_control(self, self.target, identity, recording)
        self.limits = self.control.limits
        self.policy_gate.reviewable = bool(self.control.review_approvers)
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
        self.runtime.login_refused(
            self.target,
            exc.sqlstate,
            session_id=self.session_id,
            client=self.peer,
            detail=exc.log_detail,
            subject=self.identity_subject,
        )
        if not self.client.closed:
            self.client.write(build_error_response(exc.sqlstate, exc.message, severity="FATAL"))
            self.client.close()

    def _arm_expiry(self, expires_at: float | None) -> None:
        if expires_at is None:
            return
        # One timer per session, on the loop's clock (no polling).
        loop = asyncio.get_running_loop()
        delay = max(0.0, expires_at + self.runtime.expiry_grace - time.time())
        self._expiry_timer = loop.call_at(
            loop.time() + delay,
            self._end_now,
            SqlState.INVALID_AUTHORIZATION,
            "session ended: token expired",
            "token expired",
        )

    # ============================================================ streaming phase

    # Each read goes to a ReadPump (protocols/postgres/pump.py): one compiled call takes a
    # read the query tracker alone handles (a prepared statement's Bind, Describe,
    # Execute, Sync; its results) from the scanner to the other leg. Everything else
    # comes here: ``_client_messages`` / ``_server_messages`` from the first message the
    # tracker left, ``_client_refused`` / ``_server_refused`` for a stream the scanner
    # refuses.

    def _client_reader(self) -> Callable[[bytes], object]:
        tracker, gate, upstream = self.tracker, self.policy_gate, self.upstream
        assert tracker is not None and gate is not None and upstream is not None
        self._client_pump = ReadPump(
            self._client_scanner,
            tracker,
            upstream.leg.write,
            self._client_messages,
            self._client_refused,
            backend=False,
            # A Bind of a "privilege" statement must reach the policy gate.
            unless=(gate, "privileged_statements"),
        )
        return self._client_pump

    def _server_reader(self) -> Callable[[bytes], object]:
        tracker, gate, observer = self.tracker, self.policy_gate, self.observer
        assert tracker is not None and observer is not None
        self._server_pump = ReadPump(
            self._server_scanner,
            tracker,
            self.client.write,
            self._server_messages,
            self._server_refused,
            backend=True,
            # Masking and limits may rewrite, hold or drop any message (and only they
            # set _swallow); without them the tracker alone handles results.
            run=self.masking is None and self.limits is None,
            rows=observer.rows if observer.recording_rows else None,
            # The loop clears the gate's flag at the next idle ReadyForQuery.
            unless=None if gate is None else (gate, "privilege_in_flight"),
        )
        return self._server_pump

    def _client_data(self, data: bytes) -> None:
        """A read of the client's, or ``b""`` to go on with what the scanner holds."""
        if self._client_pump is not None:
            self._client_pump(data)

    def _server_data(self, data: bytes) -> None:
        if self._server_pump is not None:
            self._server_pump(data)

    def _client_refused(self, exc: Exception) -> None:
        if isinstance(exc, MessageTooLarge):
            self.terminate(
                SqlState.PROGRAM_LIMIT_EXCEEDED,
                f"message too large: {exc.message}",
                "oversized client message",
            )
        elif isinstance(exc, PeerViolation):
            self.terminate(SqlState.PROTOCOL_VIOLATION, exc.message, "client protocol violation")
        else:
            raise exc

    def _client_messages(
        self, buf: bytes, end: int, entries: list[tuple[int, int, int, int]], done: int
    ) -> None:
        """The messages of a read from ``entries[done]`` on (the tracker took those before)."""
        tracker = self.tracker
        gate = self.policy_gate
        assert tracker is not None and gate is not None
        complete = end
        terminate_at = -1
        # Refused messages are replaced in the forwarded stream: (start, stop, replacement).
        edits: list[tuple[int, int, bytes]] | None = None
        # A statement held for review: it and everything after it wait for the decision.
        held: tuple[int, bytes, Decision] | None = None
        try:
            for mtype, start, stop, _ in entries[done:] if done else entries:
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
                    if isinstance(refusal, Decision):
                        assert text is not None
                        held = (start, text, refusal)
                        end = start
                        break
                    if refusal is not None:
                        replacement, error = refusal
                        tracker.deny(mtype, name, text, error)
                        if edits is None:
                            edits = []
                        edits.append((start, stop, replacement))
                    elif text is None:  # FunctionCall
                        tracker.frontend(mtype, body)
                    else:
                        # Only named records can drift (SQL-level names are never empty),
                        # and the tracker holds none in the common case: no search then.
                        named = any(tracker.statements) or any(tracker.portals)
                        renames = _RENAMES.findall(text) if named else None
                        if renames:  # before this Parse's own record: it stays
                            words = {w.lower() for w in renames}
                            tracker.forget_names(
                                not words.isdisjoint(_STATEMENT_WORDS),
                                not words.isdisjoint(_PORTAL_WORDS),
                            )
                        if name is None:
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
        if held is not None:
            self._hold_for_review(buf, complete, *held)
        if edits is not None:
            upstream.leg.write(splice(buf, end, edits))
        elif end:
            upstream.leg.write(buf if end == len(buf) else memoryview(buf)[:end])
        if terminate_at >= 0:
            self.end_reason = "client terminated"
            self._close_both()

    def _server_refused(self, exc: Exception) -> None:
        if not isinstance(exc, PeerViolation):
            raise exc
        log.warning(
            "upstream protocol violation",
            extra={"session_id": self.session_id, "detail": str(exc)},
        )
        self.terminate(
            SqlState.PROTOCOL_VIOLATION,
            "the database sent an invalid message",
            "upstream protocol violation",
        )

    def _server_messages(
        self, buf: bytes, end: int, entries: list[tuple[int, int, int, int]], done: int
    ) -> None:
        """The messages of a read from ``entries[done]`` on (the tracker took those before)."""
        tracker = self.tracker
        observer = self.observer
        assert tracker is not None and observer is not None
        recording = observer.counting  # rows are reported to the recording and the audit
        masking = self.masking
        limits = self.limits
        swallow = self._swallow
        # Result bytes per execution are its DataRow and CopyData bytes. CopyData (one
        # message per row in COPY TO STDOUT) is gathered into runs of adjacent messages
        # forwarded unchanged, each credited (and recorded) once.
        copy_start = copy_stop = copy_rows = 0
        # Messages replaced in the forwarded stream: the server's errors for refused
        # messages, masked rows, scrubbed errors; b"" drops a message.
        edits: list[tuple[int, int, bytes]] | None = None
        # A result paused for approval: what is forwarded ends here, the rest is held.
        hold_at = -1
        complete = end
        for mtype, start, stop, count in entries[done:] if done else entries:
            replacement: bytes | None = None
            if mtype == _DATA_ROW:
                ex = tracker.head_execution()
                if ex is not None and not swallow:
                    rows, rs, re = buf, start, stop  # the rows as the client gets them
                    budget: Budget | None = None
                    if limits is not None:
                        budget = ex.budget  # type: ignore[assignment]
                        if budget is None or budget.key != ex.tag_count:
                            budget = ex.budget = self._new_budget(ex)
                            if budget is None:
                                return  # too many portals to follow: the session ended
                        elif budget.state == DRAINING:
                            edits = _edit(edits, start, stop, b"")
                            continue
                    if masking is not None:
                        plan = ex.mask_plan
                        if plan is None:
                            plan = masking.plan(ex) or NO_MASK
                        if isinstance(plan, ResultPlan):
                            if plan.refusal is not None:
                                ex.rows += count
                                edits = _edit(
                                    edits, start, stop, self._refuse_result(ex, plan.refusal)
                                )
                                swallow = True
                                continue
                            rows = bytes(rewrite_data_rows(buf, start, stop, plan.rewriters))
                            rs, re = 0, len(rows)
                            replacement = rows
                    if budget is not None and limits is not None:
                        cut = limits.take(budget, count, re - rs)
                        if cut is not None:
                            replacement, hold_at, swallow = self._limit(
                                ex, budget, cut, buf, start, rows, rs, re
                            )
                            edits = _edit(edits, start, stop, replacement)
                            if hold_at >= 0:
                                end = stop
                                break
                            continue
                    ex.rows += count
                    if recording:
                        observer.rows(ex, rows, rs, re, count)
                elif ex is not None:
                    ex.rows += count
                else:
                    self._lost_step("rows")
                    return
            elif mtype in _TRACKED:
                if copy_rows:
                    self._credit_copy(buf, copy_start, copy_stop, copy_rows)
                    copy_rows = 0
                if limits is not None and not swallow and mtype in _RESULT_END:
                    ex = tracker.head_execution()
                    budget = ex.budget if ex is not None else None  # type: ignore[assignment]
                    if (
                        isinstance(budget, Budget)
                        and budget.state == DRAINING
                        and ex is not None
                        and budget.key == ex.tag_count
                    ):
                        # The end of a truncated result: the client already has its
                        # CommandComplete (or this is the error of our cancel).
                        replacement = b""
                        budget.state = STOPPED
                if mtype == _ERROR and replacement is None:
                    error = tracker.head_denial()
                    if error is not None:
                        assert isinstance(error, bytes)
                        replacement = error
                    elif masking is not None and not swallow:
                        replacement = masking.scrub_error(
                            mtype, buf[start + 5 : stop], tracker.head_execution()
                        )
                try:
                    tracker.backend(mtype, buf[start + 5 : stop])
                except PeerViolation as exc:  # a COPY FROM STDIN it cannot follow
                    self.terminate(
                        SqlState.PROTOCOL_VIOLATION, exc.message, "client protocol violation"
                    )
                    return
                if mtype == _READY_FOR_QUERY:
                    swallow = False
                    if self._portal_budgets and tracker.status == _IDLE:
                        self._portals_ended()
                    if not tracker.busy():
                        gate = self.policy_gate
                        if gate is not None:
                            gate.privilege_in_flight = False
                        if masking is not None:
                            masking.ready_for_query(tracker.status)
            elif mtype == _COPY_DATA:
                ex = tracker.head_execution()
                if ex is None:
                    self._lost_step("copy data")
                    return
                if limits is not None and not swallow:
                    replacement = self._limit_copy(ex, stop - start)
                    if replacement is not None:
                        swallow = True
                if recording and not swallow:
                    if copy_rows and copy_stop != start:  # a message came between
                        self._credit_copy(buf, copy_start, copy_stop, copy_rows)
                        copy_rows = 0
                    if not copy_rows:
                        copy_start = start
                    copy_stop = stop
                    copy_rows += 1
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
                edits = _edit(edits, start, stop, replacement)
        self._swallow = swallow
        if copy_rows:
            self._credit_copy(buf, copy_start, copy_stop, copy_rows)
        if hold_at >= 0:
            # Paused for approval: the rest of this read waits in the scanner, and the
            # database is not read from (TCP backpressure) until the decision.
            self._server_scanner.unread(memoryview(buf)[hold_at:complete])
        if edits is not None:
            self.client.write(splice(buf, end, edits))
        else:
            self.client.write(buf if end == len(buf) else memoryview(buf)[:end])

    # =============================================================== limits

    def _hold_for_review(
        self, buf: bytes, complete: int, start: int, raw: bytes, decision: Decision
    ) -> None:
        """A statement needs an approver: it and what the client sent after it wait in the
        client scanner, the client is not read from, and the approvers are asked."""
        control = self.control
        assert control is not None
        self._client_scanner.unread(memoryview(buf)[start:complete])
        self.client.pause_reading("review")
        request = control.request_review(
            raw.decode("utf-8", errors="replace"),
            decision.rule or "review",
            lambda r: self._review_decided(raw, decision, r),
        )
        self.client.write(
            build_notice_response("01000", control.held_message(request), severity="WARNING")
        )

    def _review_decided(self, raw: bytes, decision: Decision, request: ApprovalRequest) -> None:
        if self._closing:
            return
        gate = self.policy_gate
        assert gate is not None and self.control is not None
        if request.approved:
            gate.reviewed[raw] = Decision(
                "allow",
                f"{decision.rule} approved:{request.id}",
                "statement allowed",
                decision.classes,
            )
        else:
            gate.reviewed[raw] = Decision(
                "deny",
                f"{decision.rule} {request.state}:{request.id}",
                self.control.outcome_message(request, "statement"),
                decision.classes,
            )
        self._client_data(b"")
        self.client.resume_reading("review")

    def _new_budget(self, ex: Execution) -> Budget | None:
        """The per-result budget of an execution's result. A portal executed in batches
        (Execute with a row limit) is one result across its batches: its budget lives as
        long as the portal, i.e. until a Bind makes a new portal of the name (a new Bind
        record) or the transaction ends (``_portals_ended``). An Execute whose Bind the
        tracker no longer knows (a SQL-level cursor, or names it forgot) continues the
        name's budget. None: more live portals than the gateway follows (session ended)."""
        portal = ex.portal
        if portal is None:
            return Budget(ex.tag_count)
        budgets = self._portal_budgets
        held = budgets.get(portal)
        if held is not None and (ex.bind is None or held[0] is ex.bind):
            return held[1]
        if len(budgets) >= _PORTAL_BUDGETS and portal not in budgets:
            self.terminate(
                SqlState.PROGRAM_LIMIT_EXCEEDED,
                f"more than {_PORTAL_BUDGETS} open portals with row limits in one transaction",
                "too many portals",
            )
            return None
        budget = Budget(ex.tag_count)
        budgets[portal] = (ex.bind, budget)
        return budget

    def _portals_ended(self) -> None:
        """The transaction ended (idle ReadyForQuery): the protocol's portals are gone,
        and with them their budgets. SQL-level cursors' (no Bind) stay: a WITH HOLD
        cursor outlives its transaction."""
        budgets = self._portal_budgets
        for name in [name for name, (bind, _) in budgets.items() if bind is not None]:
            del budgets[name]

    def _limit(
        self,
        ex: Execution,
        budget: Budget,
        cut: Cut,
        buf: bytes,
        start: int,
        rows: bytes,
        rs: int,
        re: int,
    ) -> tuple[bytes, int, bool]:
        """A run of rows crosses a limit: (what replaces the run in the forwarded stream,
        where the held part of the read starts (-1: nothing held), swallow to the next
        ReadyForQuery). The rows that fit are forwarded and credited in every case."""
        limits = self.limits
        control = self.control
        assert limits is not None and control is not None
        pos, sent = split_data_rows(rows, rs, re, cut.rows, cut.bytes)
        limits.credit(budget, sent, pos - rs)
        ex.rows += sent
        observer = self.observer
        if sent and observer is not None and observer.counting:
            observer.rows(ex, rows, rs, pos, sent)
        head = bytes(rows[rs:pos])
        limit = cut.reached(sent)
        policy = control.policy_name()
        action = limits.spec.on_limit
        control.limit_reached(action, limit, budget)
        if action == "approval":
            budget.state = PAUSED
            hold_at = pos if rows is buf else skip_data_rows(buf, start, sent)
            request = control.request_limit_approval(
                _statement(ex), limit, budget, lambda r: self._limit_decided(ex, budget, r)
            )
            budget.request = request.id
            assert self.upstream is not None
            self.upstream.leg.pause_reading("approval")
            notice = build_notice_response(
                "01000", control.paused_message(request), severity="WARNING"
            )
            return head + notice, hold_at, False
        if action == "truncate":
            budget.state = DRAINING
            tracker = self.tracker
            assert tracker is not None
            if tracker.alone(ex):
                self._cancel_upstream("limit")
            notice = build_notice_response(
                "01000", control.truncated_message(limit, budget, policy), severity="WARNING"
            )
            return head + notice + build_command_complete(_tag(ex, budget.rows)), -1, False
        budget.state = STOPPED
        ex.error = (LIMIT_SQLSTATE, control.exceeded_message(limit, budget, policy))
        self._cancel_upstream("limit")
        return head + build_error_response(LIMIT_SQLSTATE, ex.error[1]), -1, True

    def _limit_copy(self, ex: Execution, nbytes: int) -> bytes | None:
        """One CopyData row of COPY ... TO STDOUT against the limits: None if it fits, else
        the ErrorResponse that replaces it. A COPY is always stopped with an error at a
        limit (a truncated or paused COPY has no place in the copy-out sub-protocol)."""
        limits, control = self.limits, self.control
        assert limits is not None and control is not None
        budget = ex.budget
        if not isinstance(budget, Budget) or budget.key != ex.tag_count:
            budget = ex.budget = Budget(ex.tag_count)
        cut = limits.take(budget, 1, nbytes)
        if cut is None:
            return None
        limit = cut.reached(0)
        budget.state = STOPPED
        control.limit_reached("error", limit, budget)
        ex.error = (LIMIT_SQLSTATE, control.exceeded_message(limit, budget, control.policy_name()))
        self._cancel_upstream("limit")
        return build_error_response(LIMIT_SQLSTATE, ex.error[1])

    def _limit_decided(self, ex: Execution, budget: Budget, request: ApprovalRequest) -> None:
        """An approver (or the timeout) decided a paused result."""
        if self._closing or budget.state != PAUSED:
            return
        upstream = self.upstream
        assert upstream is not None and self.limits is not None and self.control is not None
        if request.approved:
            budget.state = OPEN
            if request.scope == "session":
                self.limits.lifted = True
            else:
                budget.lifted = True
            self.control.event("resumed", approval_id=request.id)
        else:
            budget.state = STOPPED
            message = self.control.outcome_message(request, "result")
            # A client's own cancel gets the server's cancel code; a refusal, the limit's.
            code = CANCELED_SQLSTATE if request.state == "withdrawn" else LIMIT_SQLSTATE
            ex.error = (code, message)
            self.client.write(build_error_response(code, message))
            self._swallow = True
            self._cancel_upstream("approval " + request.state)
            self.control.event("aborted", approval_id=request.id)
        # The held part of the read goes through the normal path, then reading resumes.
        self._server_data(b"")
        upstream.leg.resume_reading("approval")

    def _cancel_upstream(self, why: str) -> None:
        """Cancel what the server is running, holding its output back until the cancel
        is delivered: a CancelRequest still in flight when the next query starts would
        cancel that one instead."""
        up = self.upstream
        if up is None or up.process_id is None or up.secret_key is None:
            return
        leg = up.leg
        leg.pause_reading("cancel")
        pid, secret = up.process_id, up.secret_key

        async def cancel() -> None:
            try:
                await send_cancel(self.target.upstream, pid, secret, up.tls)
            finally:
                leg.resume_reading("cancel")

        self.runtime.spawn(cancel())
        if self.control is not None:
            self.control.event("upstream_cancel", reason=why)

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

    def _lost_step(self, what: str) -> None:
        """The server sent result data with no statement of the client's to own it: the
        query tracker no longer follows the server (a sequence it does not model). Masks,
        limits and the recording could not be applied to it, so nothing more is
        forwarded."""
        log.warning(
            "query tracker lost step",
            extra={"session_id": self.session_id, "detail": f"{what} with no statement"},
        )
        self.terminate(
            SqlState.PROTOCOL_VIOLATION,
            "the gateway lost track of the statements on this connection; the session is "
            "ended so that no result reaches the client unchecked",
            "query tracker lost step",
        )

    def _credit_copy(self, buf: bytes, start: int, stop: int, rows: int) -> None:
        """``rows`` adjacent CopyData messages sent to the client unchanged (COPY TO
        STDOUT): the execution's rows and bytes (the audit line, the alerts) and its
        recorded result."""
        ex = self.tracker.head_execution() if self.tracker is not None else None
        if ex is not None and self.observer is not None:
            ex.rows += rows
            self.observer.copy_data(ex, buf, start, stop, rows)

    # ================================================================== teardown

    def summary(self) -> dict[str, object]:
        up = self.upstream
        return {
            "upstream_pid": up.process_id if up else None,
            "upstream_auth": up.auth_method if up else None,
            "statements": self.observer.statements if self.observer else 0,
            "bytes_to_client": self.client.bytes_out,
        }

    def live_info(self) -> dict[str, object]:
        observer, tracker = self.observer, self.tracker
        rows = observer.rows_total if observer is not None else 0
        ex = tracker.head_execution() if tracker is not None else None
        if ex is not None:
            rows += ex.rows  # the running statement's rows so far
        return {
            "statements": observer.statements if observer is not None else 0,
            "rows": rows,
            "bytes": self.client.bytes_out,
            "current_statement": _statement(ex) if ex is not None else None,
        }

    def kill(self, message: str, end_reason: str) -> None:
        """An administrator ended the session: FATAL 57P01 to the client."""
        self._end_now(SqlState.ADMIN_SHUTDOWN, "terminating connection: " + message, end_reason)

    def _end_now(self, sqlstate: str, message: str, end_reason: str) -> None:
        """End the session whatever it is doing (kill switch, revocation, token expiry):
        FATAL to the client (between messages: only whole messages are ever forwarded),
        the running statement cancelled (a closed socket does not stop a backend
        mid-query), Terminate sent upstream, both connections closed. A result paused for
        approval or a statement held for review ends the same way (its request is
        withdrawn on release)."""
        if self._closing:
            return
        self._cancel_running()
        up = self.upstream
        if up is not None and not up.leg.closed:
            up.leg.write(_TERMINATE_MESSAGE)
        self.terminate(sqlstate, message, end_reason)

    def _cancel_running(self) -> None:
        """The session is ending while the backend may still run a statement: cancel it
        (closing the socket does not stop a backend mid-query, pgbouncer#79)."""
        up, tracker = self.upstream, self.tracker
        if (
            up is not None
            and tracker is not None
            and tracker.busy()
            and up.process_id is not None
            and up.secret_key is not None
        ):
            self.runtime.spawn(
                send_cancel(self.target.upstream, up.process_id, up.secret_key, up.tls)
            )

    def cancel_query(self) -> None:
        """A client CancelRequest matched this session: forward it upstream now."""
        if self.control is not None and self.control.cancel("canceled by the client"):
            return  # a paused result or a held statement: stopped as if denied
        up = self.upstream
        tracker = self.tracker
        if up is None or tracker is None or not tracker.busy():
            return  # nothing running: a late cancel must not hit the next query
        if up.process_id is None or up.secret_key is None:
            return
        self.runtime.spawn(send_cancel(self.target.upstream, up.process_id, up.secret_key, up.tls))
        if self.observer is not None and self.observer.recording is not None:
            self.observer.recording.control("cancel", {"source": "client"})

    def _reporting_failed(self, exc: BaseException) -> None:
        # Statements could not be audited or recorded: fail closed, as a kill would.
        self._end_now(
            SqlState.INTERNAL_ERROR,
            "the gateway could not record this session's statements",
            f"recording failed: {type(exc).__name__}",
        )

    def terminate(self, sqlstate: str, message: str, reason: str) -> None:
        """End the session with a FATAL error to the client (between messages)."""
        if self._closing:
            return
        self.end_reason = reason
        if self.control is not None:
            # Now, not when both connections have closed (a client not reading holds its
            # close): nobody may approve a statement of a session that is ending.
            self.control.withdraw("session ended: " + reason)
        if not self.client.closed:
            self.client.write(build_error_response(sqlstate, message, severity="FATAL"))
        self._close_both()

    def shutdown(self, reason: str) -> None:
        """Graceful shutdown's last step (the drain grace is over): end it like a kill, so
        that a statement still running is cancelled on the server too."""
        self._end_now(
            SqlState.ADMIN_SHUTDOWN, "terminating connection: the gateway is shutting down", reason
        )

    def _client_lost(self, exc: BaseException | None) -> None:
        self.end_reason = "client disconnected" if exc is None else f"client connection lost: {exc}"
        self._cancel_running()
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
        if self.observer is not None and self.tracker is not None:
            self.observer.interrupted(self.tracker.unfinished())
        self.runtime.registry.remove(self, self.cancel_key)
        if self.control is not None:
            self.control.withdraw("session ended: " + self.end_reason)
        # The pumps hold bound methods of the session: no cycle outlives it.
        self._client_pump = self._server_pump = None


def _edit(
    edits: list[tuple[int, int, bytes]] | None, start: int, stop: int, replacement: bytes
) -> list[tuple[int, int, bytes]]:
    if edits is None:
        return [(start, stop, replacement)]
    edits.append((start, stop, replacement))
    return edits


def _statement(ex: Execution) -> str:
    """The statement text of an execution, as approvers see it."""
    if ex.text is not None:
        return ex.text.decode("utf-8", errors="replace")
    if ex.path == "cursor":
        return f"<fetch from portal {ex.portal!r}>"
    return f"<{ex.path} execution>"


def _tag(ex: Execution, rows: int) -> str:
    """The CommandComplete tag of a truncated result (FETCH for cursors, else SELECT)."""
    text = (ex.text or b"").lstrip()[:5].upper()
    return f"FETCH {rows}" if ex.path == "cursor" or text == b"FETCH" else f"SELECT {rows}"
