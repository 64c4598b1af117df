"""The MySQL / MariaDB session driver: one instance per client connection.

Login phase (coroutine, rare): the gateway greets the client first (HandshakeV10
mirroring the target's version, capabilities and charset, with a gateway-assigned
connection id and caching_sha2_password as the default plugin); TLS through
SSLRequest; the JWT arrives as the cleartext password of caching_sha2_password's
"perform full authentication" (or mysql_clear_password when the client starts
with it); target authorization, upstream login with the stored credentials and
the client's end-to-end capabilities, recording start, then the server's OK is
passed on with the client's sequence id.

Streaming phase (callbacks, the hot path): client packets are split with a
``PacketScanner``, the command byte is looked at once per command (the few that
need it are parsed), and every complete packet is forwarded as one slice per
read. Server packets are followed with the ``ResponseTracker`` one command at a
time; runs of row packets are collapsed by ``next_row_run`` (a header read per
row) and attributed to the exchange at the head of the FIFO. Sequence ids pass
through unchanged except where the gateway answers itself (refused commands,
statements the policy refused (mysql_policy.py), KILL ownership errors,
COM_CHANGE_USER, a refused LOCAL INFILE request), where they are computed from the
client's command.

KILL [QUERY|CONNECTION] n and COM_PROCESS_KILL carry the gateway's connection id:
they are rewritten to the upstream thread id after checking that the same
identity owns that session on the same target (else ERR 1095 / 1094).
``SELECT CONNECTION_ID()`` returns the upstream id (documented).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

from protocols.errors import MessageTooLarge, PeerViolation
from protocols.mysql.auth import ClientPasswordExchange
from protocols.mysql.commands import StatementRegistry, parse_com_change_user
from protocols.mysql.constants import (
    CACHING_SHA2_PASSWORD,
    EOF_HEADER,
    LOCAL_INFILE_HEADER,
    MAX_PACKET_PAYLOAD,
    REFUSED_COMMANDS,
    Capability,
    Command,
    CursorType,
    ErrorCode,
    ServerStatus,
)
from protocols.mysql.framing import (
    PacketScanner,
    build_packets,
    count_physical_packets,
    join_payload,
)
from protocols.mysql.handshake import (
    HandshakeResponse41,
    HandshakeV10,
    build_handshake_v10,
    is_ssl_request,
    parse_handshake_response41,
    parse_ssl_request,
)
from protocols.mysql.packets import ErrPacket, OkPacket, build_err_packet, build_terminator
from protocols.mysql.resultset import (
    parse_stmt_execute_header,
    rewrite_row_packets,
    skip_row_packets,
    split_row_packets,
)
from protocols.mysql.tracker import (
    NOT_ALLOWED,
    AuthExchange,
    ErrorReceived,
    LocalInfileRequested,
    OkReceived,
    ResponseComplete,
    ResponseEvent,
    ResponseTracker,
    ResultSetEnded,
    ResultSetStarted,
    RowsReceived,
    StatementPrepared,
)

from ..approvals import ApprovalRequest
from ..limits import DRAINING, OPEN, PAUSED, STOPPED, Budget, Cut, SessionLimits
from ..masking.plan import ResultPlan
from ..net.leg import Leg, LegClosed
from ..policy import Decision, refused_beyond
from .errors import AccessRevoked, LoginRefused
from .leg_pair import LegPair
from .limit_control import LimitControl
from .my_masking import MyMasking
from .mysql_caps import END_TO_END, REQUIRED_FROM_CLIENT, advertised_capabilities
from .mysql_policy import (
    ACCESS_DENIED_SQLSTATE,
    ER_TABLEACCESS_DENIED_ERROR,
    MyPolicyGate,
    sql_mode_problem,
)
from .mysql_recording import Exchange, MyRecordingObserver
from .mysql_sql import KillRefused, KillStatement, find_kill, is_load_data_local
from .mysql_tls import start_server_tls
from .mysql_upstream import (
    LoginRequest,
    UpstreamConnection,
    UpstreamError,
    change_user,
    connect_upstream,
    kill_query,
    probe_target,
    read_packet,
)

if TYPE_CHECKING:
    from protocols.mysql.resultset import ColumnDefinition41

    from ..audit import SessionAudit
    from ..identity import Identity
    from ..runtime import Runtime, TargetRuntime

log = logging.getLogger("gateway.session")

_MAX_LOGIN_PACKET = 64 * 1024
_STATUS_AUTOCOMMIT = int(ServerStatus.AUTOCOMMIT)
_IN_TRANSACTION = int(ServerStatus.IN_TRANS)
# Plain ints on the hot path: IntFlag arithmetic runs Python-level enum code.
_LOCAL_FILES = int(Capability.CLIENT_LOCAL_FILES)
_PROTOCOL_41 = int(Capability.CLIENT_PROTOCOL_41)
ER_NOT_SUPPORTED_YET = 1235
_CURSOR_FLAGS = int(CursorType.READ_ONLY | CursorType.FOR_UPDATE)
_HEADER_MAX = MAX_PACKET_PAYLOAD + 4

_COM_QUERY = int(Command.COM_QUERY)
_COM_STMT_EXECUTE = int(Command.COM_STMT_EXECUTE)
_COM_STMT_PREPARE = int(Command.COM_STMT_PREPARE)
_COM_STMT_CLOSE = int(Command.COM_STMT_CLOSE)
_COM_STMT_FETCH = int(Command.COM_STMT_FETCH)
_COM_STMT_RESET = int(Command.COM_STMT_RESET)
_COM_STMT_SEND_LONG_DATA = int(Command.COM_STMT_SEND_LONG_DATA)
_COM_QUIT = int(Command.COM_QUIT)
_COM_CHANGE_USER = int(Command.COM_CHANGE_USER)
_COM_RESET_CONNECTION = int(Command.COM_RESET_CONNECTION)
_COM_PROCESS_KILL = int(Command.COM_PROCESS_KILL)
_COM_INIT_DB = int(Command.COM_INIT_DB)
_COM_FIELD_LIST = int(Command.COM_FIELD_LIST)
_RESULT_COMMANDS = frozenset({_COM_QUERY, _COM_STMT_EXECUTE, _COM_STMT_FETCH})
# Forwarded unchanged and tracked (their replies need no gateway attention).
_PASS_THROUGH = frozenset(
    int(c)
    for c in (
        Command.COM_PING,
        Command.COM_STATISTICS,
        Command.COM_SET_OPTION,
        Command.COM_FIELD_LIST,
        Command.COM_INIT_DB,
        Command.COM_RESET_CONNECTION,
    )
)
_KNOWN_COMMANDS = frozenset(int(c) for c in Command)
_CURSOR_COLUMNS_MAX = 256
_REFUSED = frozenset(int(c) for c in REFUSED_COMMANDS) | {int(Command.COM_STMT_BULK_EXECUTE)}

ER_DBACCESS_DENIED_ERROR = 1044
ER_NO_SUCH_THREAD = 1094
ER_KILL_DENIED = 1095
ER_CONNECTION_KILLED = 1927
ER_SERVER_SHUTDOWN = 1053
CR_CONN_HOST_ERROR = 2003
# Result limits (docs/approvals.md): a stopped result ends with ER_UNKNOWN_ERROR; a
# client's own cancel of a paused result with the server's "query interrupted".
ER_UNKNOWN_ERROR = int(ErrorCode.ER_UNKNOWN_ERROR)
ER_QUERY_INTERRUPTED = 1317
_MORE_RESULTS = int(ServerStatus.MORE_RESULTS_EXISTS)
_CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)
_LAST_ROW_SENT = int(ServerStatus.LAST_ROW_SENT)
# MariaDB/MySQL drop a connection whose writes block longer than net_write_timeout
# (default 60 s): a result paused for approval blocks the server on TCP for as long as
# the approvers take, so the gateway raises it by this much over approval_timeout.
_WRITE_TIMEOUT_MARGIN = 60


class _HoldForReview(Exception):
    """A statement needs an approver before it is sent (raised out of ``_command``)."""

    def __init__(self, sql: bytes, decision: Decision) -> None:
        super().__init__(decision.rule)
        self.sql = sql
        self.decision = decision


class _Refused(LoginRefused):
    """A MySQL login refusal: errno + SQLSTATE + message for the client."""

    def __init__(self, errno: int, sqlstate: str, message: str, log_detail: str) -> None:
        super().__init__(sqlstate, message, log_detail)
        self.errno = errno


def _quoted(name: bytes) -> bytes:
    """A MySQL identifier in backquotes (backquotes in it doubled)."""
    return b"`" + name.replace(b"`", b"``") + b"`"


def _use_statement(database: bytes) -> bytes:
    """``USE `database```: what COM_INIT_DB does, as a statement."""
    return b"USE " + _quoted(database)


# The classes a command without a statement never needed (COM_INIT_DB is USE: session;
# COM_FIELD_LIST is SHOW COLUMNS: read): only deny rules and other classes refuse it.
_COMMAND_CLASSES = frozenset({"session", "read"})


def _command_refused(decision: Decision) -> bool:
    """Whether the policy refuses a database choice or field list (login, COM_INIT_DB,
    COM_CHANGE_USER, COM_FIELD_LIST) decided as the statement it stands for."""
    return refused_beyond(decision, _COMMAND_CLASSES)


def _new_scramble() -> bytes:
    # Printable, never NUL: part 2 of the scramble is NUL-terminated on the wire.
    return bytes(0x21 + secrets.randbelow(0x7F - 0x21) for _ in range(20))


def _err(errno: int, sqlstate: str, message: str, seq: int) -> bytes:
    return build_packets(build_err_packet(errno, sqlstate, message), seq)[0]


class MySqlSession(LegPair):
    """One client connection and, after login, its upstream connection."""

    def __init__(self, runtime: Runtime, target: TargetRuntime, client: Leg, peer: str) -> None:
        self.runtime = runtime
        self.target = target
        self.client = client
        self.peer = peer
        self.session_id = runtime.new_session_id()
        self.connection_id = runtime.registry.new_connection_id(self)
        self.upstream: UpstreamConnection | None = None
        self.tracker: ResponseTracker | None = None
        self.observer: MyRecordingObserver | None = None
        self.audit: SessionAudit | None = None
        self.policy_gate: MyPolicyGate | None = None
        self.masking: MyMasking | None = None
        self.statements = StatementRegistry()
        self.identity_subject: str | None = None
        self.policy_generation: int | None = None
        self.identity: Identity | None = None
        self.started = time.time()
        self.end_reason = "client closed"
        self.tls_active = False
        self.capabilities = 0
        self.charset = 45
        self.client_user = ""
        self._login_seq = 0
        self._exchanges: deque[Exchange] = deque()
        self._init_teardown()
        self._change_user: tuple[bytes, int] | None = None  # deferred COM_CHANGE_USER
        # The SET of net_write_timeout (a COM_QUERY packet) while results may pause.
        self._write_timeout: bytes | None = None
        self._change_user_task: asyncio.Task[None] | None = None
        self._upstream_ended = False
        # Result limits and approvals (docs/approvals.md).
        self.limits: SessionLimits | None = None
        self.control: LimitControl | None = None
        self._budget: Budget | None = None  # the result at the head of the response
        # A cursor's budget (by statement id) carries over its COM_STMT_FETCH batches.
        self._cursor_budgets: dict[str, Budget] = {}
        # The column definitions of each statement's latest COM_STMT_EXECUTE result, by
        # statement id: they describe its cursor's fetched rows (the prepare's may differ:
        # a parameter in the select list has no type until it is bound).
        self._cursor_columns: dict[str, tuple[ColumnDefinition41, ...]] = {}
        # The exchange a limit stopped: the rest of its response is dropped, then the
        # ERR (errno, SQLSTATE, message) is sent, or nothing after a truncation.
        self._limited: Exchange | None = None
        self._limited_err: tuple[int, str, str] | None = None
        self._paused = False  # a result waits for approval: server bytes stay queued
        self._paused_seq = 0  # ... and the sequence id the client expects next
        self._reviewing = False  # a command waits for review: client bytes stay queued
        max_size = runtime.config.gateway.max_message_size
        self._client_scanner = PacketScanner(max_size, expected_seq=0)
        self._server_scanner = PacketScanner(max_size)

    # ================================================================ login phase

    async def run(self) -> None:
        runtime = self.runtime
        try:
            await asyncio.wait_for(self._login(), runtime.config.gateway.login_timeout)
        except _Refused as exc:
            self._refuse(exc)
            return
        except LoginRefused as exc:
            self._refuse(_Refused(1045, "28000", exc.message, exc.log_detail))
            return
        except TimeoutError:
            self._refuse(_Refused(1043, "08S01", "Bad handshake: login timed out", "login timeout"))
            return
        except PeerViolation as exc:
            errno = exc.code if isinstance(exc.code, int) else int(ErrorCode.ER_HANDSHAKE_ERROR)
            sqlstate = "28000" if errno == 1045 else "08S01"
            message = exc.message if errno == 1045 else f"Bad handshake: {exc.message}"
            self._refuse(_Refused(errno, sqlstate, message, f"protocol violation: {exc}"))
            return
        except (LegClosed, ConnectionError):
            self.client.abort()
            self._release()
            return
        except BaseException:
            self.client.abort()
            self._release()
            raise
        await self._done

    async def _login(self) -> None:
        runtime = self.runtime
        client = self.client
        target = self.target
        try:
            info = await probe_target(target.upstream)
        except UpstreamError as exc:
            raise _Refused(
                CR_CONN_HOST_ERROR,
                "08S01",
                f'could not connect to target "{target.name}"',
                exc.detail,
            ) from None
        scramble = _new_scramble()
        advertised = advertised_capabilities(info)
        greeting = HandshakeV10(
            info.server_version,
            self.connection_id,
            scramble,
            advertised,
            info.charset,
            _STATUS_AUTOCOMMIT,
            CACHING_SHA2_PASSWORD,
        )
        client.write(build_packets(build_handshake_v10(greeting), 0)[0])
        self._login_seq = 1
        seq, payload = await read_packet(client, 1, _MAX_LOGIN_PACKET)
        self._login_seq = seq + 1
        if is_ssl_request(payload):
            parse_ssl_request(payload)
            await start_server_tls(
                client, runtime.server_tls, timeout=runtime.config.gateway.login_timeout
            )
            self.tls_active = True
            seq, payload = await read_packet(client, seq + 1, _MAX_LOGIN_PACKET)
            self._login_seq = seq + 1
        response = parse_handshake_response41(payload)
        self.client_user = response.username.decode("utf-8", "replace")[:256]
        missing = REQUIRED_FROM_CLIENT & ~response.capabilities
        if missing:
            raise _Refused(
                int(ErrorCode.ER_NOT_SUPPORTED_AUTH_MODE),
                "08004",
                "Client does not support authentication protocol requested by server; "
                "consider upgrading the client",
                f"client lacks capabilities {missing:#x}",
            )
        if not self.tls_active and not runtime.config.tls.allow_plaintext:
            raise _Refused(
                1045,
                "28000",
                "Access denied: the gateway requires TLS (connect with --ssl / ssl_mode=REQUIRED)",
                "plaintext login refused",
            )
        self.capabilities = int(response.capabilities & advertised)  # plain int: hot path
        self.charset = response.charset

        # The JWT: caching_sha2_password full authentication, or mysql_clear_password.
        token = await self._read_password(response, scramble, self._login_seq)
        identity = await self._authorize(token)
        del token
        self._check_database(identity, response.database)

        self.masking = await self._session_masking(identity, response.database)

        upstream = await self._connect_upstream(response, identity)
        self.upstream = upstream
        try:
            recording = runtime.open_recording(self, identity)
        except Exception as exc:  # RecordingUnavailable and disk errors: fail closed
            upstream.leg.close()
            raise _Refused(
                int(ErrorCode.ER_UNKNOWN_ERROR),
                "HY000",
                "session recording is unavailable; the gateway refuses new sessions",
                f"recording unavailable: {exc}",
            ) from None
        self.audit = runtime.session_audit(self, target, identity)
        self.observer = MyRecordingObserver(
            recording, runtime.record_rows(target, identity), self.audit
        )
        self.observer.reporting.schedule = asyncio.get_running_loop().call_later
        self.observer.reporting.fail = self._reporting_failed
        self.observer.unfinished = self._unfinished
        self.policy_gate = MyPolicyGate(
            runtime.session_policy(target, identity),
            self.observer,
            self.session_id,
            response.charset,
            self.masking,
        )
        self.control = runtime.limit_control(self, target, identity, recording)
        self.limits = self.control.limits
        self.policy_gate.reviewable = bool(self.control.review_approvers)
        await self._raise_write_timeout(upstream)
        self.tracker = ResponseTracker(self.capabilities)
        if recording is not None:
            recording.set_flow_control(
                lambda: upstream.leg.pause_reading("recorder"),
                lambda: upstream.leg.resume_reading("recorder"),
            )
        # The server's own OK (status flags, session state) with the client's sequence id.
        client.write(build_packets(upstream.ok_payload, self._login_seq)[0])
        runtime.registry.add(self)
        runtime.session_started(self, identity)
        self._arm_expiry(identity.expires_at)
        self._start_streaming(upstream.leg)

    async def _raise_write_timeout(self, upstream: UpstreamConnection) -> None:
        """``SET SESSION net_write_timeout`` on the upstream connection before any client
        traffic, when results of this session may pause for approval, so that the server
        does not drop it while paused (it blocks writing to us for as long as the
        approvers take). COM_RESET_CONNECTION and COM_CHANGE_USER reset it to the global
        value: it is raised again after each (``self._write_timeout``)."""
        limits = self.limits
        if limits is None or limits.spec.on_limit != "approval":
            self._write_timeout = None
            return
        seconds = int(limits.spec.approval_timeout) + _WRITE_TIMEOUT_MARGIN
        sql = b"SET SESSION net_write_timeout = %d" % seconds
        self._write_timeout = build_packets(bytes((_COM_QUERY,)) + sql, 0)[0]
        upstream.leg.write(self._write_timeout)
        _, payload = await read_packet(upstream.leg, 1, _MAX_LOGIN_PACKET)
        if payload[:1] != b"\x00":
            log.warning(
                "could not raise net_write_timeout upstream",
                extra={"session_id": self.session_id, "target": self.target.name},
            )

    async def _read_password(self, response: HandshakeResponse41, scramble: bytes, seq: int) -> str:
        exchange = ClientPasswordExchange(
            scramble,
            tls_active=self.tls_active,
            allow_plaintext=self.runtime.config.tls.allow_plaintext,
        )
        limit = self.runtime.config.auth.max_token_size + 1024
        out = exchange.start(response)
        while out is not None:
            framed, seq = build_packets(out, seq)
            self.client.write(framed)
            # While the client's reply (seq) is awaited, the next packet it reads is seq + 1.
            self._login_seq = (seq + 1) & 0xFF
            got, payload = await read_packet(self.client, seq, limit)
            seq = (got + 1) & 0xFF
            self._login_seq = seq
            out = exchange.receive(payload)
        password = exchange.password or b""
        return password.decode("utf-8", "replace")

    def _access_denied(self, detail: str) -> _Refused:
        host = self.peer.rsplit(":", 1)[0]
        return _Refused(
            1045,
            "28000",
            f"Access denied for user '{self.client_user}'@'{host}' (using password: YES)",
            detail,
        )

    async def _authorize(self, token: str) -> Identity:
        runtime = self.runtime
        if not token:
            raise self._access_denied("empty password (no token)")
        try:
            identity = await runtime.authenticate(token, self.client_user)
        except AccessRevoked as exc:
            raise _Refused(1045, exc.sqlstate, exc.message, exc.log_detail) from None
        except LoginRefused as exc:
            raise self._access_denied(exc.log_detail) from None
        self.identity_subject = identity.subject
        # See the PostgreSQL driver: a reload from here to the start ends the session.
        self.policy_generation = runtime.generation
        if not runtime.target_allowed(self.target, identity):
            raise self._access_denied(
                f"no policy allows groups {list(identity.groups)} on target {self.target.name}"
            )
        self.identity = identity
        return identity

    async def _session_masking(
        self, identity: Identity, database: bytes | None
    ) -> MyMasking | None:
        """The masks of this identity's session (None without masks), resolved against
        the target's catalog; a session with masks cannot start without it."""
        runtime, target = self.runtime, self.target
        mask_policy = runtime.mask_policy(target, identity)
        if mask_policy is None:
            return None
        try:
            catalog = await runtime.masking_catalog(target)
        except LoginRefused as exc:
            raise _Refused(
                int(ErrorCode.ER_UNKNOWN_ERROR), "HY000", exc.message, exc.log_detail
            ) from None
        return MyMasking(
            mask_policy,
            catalog,
            runtime.lineage_cache(target),
            (database or target.upstream.database.encode()).decode("utf-8", "surrogateescape"),
        )

    def _check_database(self, identity: Identity, database: bytes | None) -> None:
        """A database named at login or in COM_CHANGE_USER is decided as ``USE`` it
        (schema rules: ``tables = ["hr.*"]``, ``schemas = ["hr"]``); refused as the server
        refuses a database the user may not use."""
        if not database:
            return
        name = database.decode("utf-8", "surrogateescape")
        policy = self.runtime.session_policy(self.target, identity)
        decision = policy.check_query(_use_statement(database).decode("utf-8", "surrogateescape"))
        if _command_refused(decision):
            raise _Refused(
                ER_DBACCESS_DENIED_ERROR,
                "42000",
                f"Access denied to database '{name}' by the gateway's policy",
                f"database {name!r} refused ({decision.rule})",
            )

    async def _connect_upstream(
        self, response: HandshakeResponse41, identity: Identity
    ) -> UpstreamConnection:
        target = self.target
        database = response.database or target.upstream.database.encode()
        attrs = self._connect_attrs(response.connect_attrs, identity)
        request = LoginRequest(
            capabilities=self.capabilities,
            charset=response.charset,
            max_packet_size=response.max_packet_size or (1 << 24),
            database=database,
            connect_attrs=attrs,
        )
        try:
            upstream = await connect_upstream(target.upstream, request)
        except UpstreamError as exc:
            log.warning(
                "upstream login failed",
                extra={"session_id": self.session_id, "target": target.name, "detail": exc.detail},
            )
            if exc.errno == int(ErrorCode.ER_BAD_DB_ERROR):
                name = database.decode("utf-8", "replace")
                raise _Refused(
                    exc.errno, "42000", f"Unknown database '{name}'", exc.detail
                ) from None
            if exc.errno == int(ErrorCode.ER_DBACCESS_DENIED_ERROR):
                name = database.decode("utf-8", "replace")
                raise _Refused(
                    exc.errno, "42000", f"Access denied to database '{name}'", exc.detail
                ) from None
            raise _Refused(
                CR_CONN_HOST_ERROR,
                "08S01",
                f'could not connect to target "{target.name}"',
                exc.detail,
            ) from None
        mismatch = (upstream.capabilities ^ self.capabilities) & END_TO_END
        if mismatch:
            upstream.leg.close()
            raise _Refused(
                CR_CONN_HOST_ERROR,
                "08S01",
                f'could not connect to target "{target.name}"',
                f"target capabilities differ from the probe: {mismatch:#x}",
            )
        problem = sql_mode_problem(upstream.sql_mode)
        if problem is not None:
            # The server's own default (global sql_mode, init_connect): the gateway
            # would read statements differently from the server. Fail closed.
            upstream.leg.close()
            raise _Refused(ER_NOT_SUPPORTED_YET, "42000", problem, problem)
        return upstream

    def _connect_attrs(
        self, client_attrs: tuple[tuple[bytes, bytes], ...], identity: Identity
    ) -> tuple[tuple[bytes, bytes], ...]:
        """The client's connection attributes plus who is behind this session (visible
        to the DBA in performance_schema.session_connect_attrs)."""
        return (
            *client_attrs,
            (b"gateway_session_id", self.session_id.encode()),
            (b"gateway_subject", identity.subject.encode("utf-8", "replace")[:256]),
        )

    def _refuse(self, exc: _Refused) -> None:
        self.runtime.login_refused(
            self.target,
            exc.sqlstate,
            session_id=self.session_id,
            client=self.peer,
            detail=exc.log_detail,
            subject=self.identity_subject,
            errno=exc.errno,
        )
        if not self.client.closed:
            if self._login_seq == 0:
                # Instead of a greeting: no SQLSTATE before capabilities are known.
                payload = build_err_packet(exc.errno, message=exc.message, protocol_41=False)
                self.client.write(build_packets(payload, 0)[0])
            else:
                self.client.write(_err(exc.errno, exc.sqlstate, exc.message, self._login_seq))
            self.client.close()
        self._release()

    def _release(self) -> None:
        self.runtime.registry.release_connection_id(self.connection_id)

    def _arm_expiry(self, expires_at: float | None) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        if expires_at is None:
            return
        # One timer per session, on the loop's clock (no polling).
        loop = asyncio.get_running_loop()
        delay = max(0.0, expires_at + self.runtime.expiry_grace - time.time())
        self._expiry_timer = loop.call_at(
            loop.time() + delay,
            self._end_now,
            ER_CONNECTION_KILLED,
            "70100",
            "session ended: token expired",
            "token expired",
        )

    # ============================================================ streaming phase

    # -- client -> server ------------------------------------------------------------

    def _client_data(self, data: bytes) -> None:
        try:
            self._client_scanner.feed(data)
        except MessageTooLarge as exc:
            self._client_violation(exc, "oversized client packet")
            return
        except PeerViolation as exc:
            self._client_violation(exc, "client protocol violation")
            return
        if self._reviewing:
            return  # a held command waits for its review; what follows waits behind it
        self._pump_client()

    def _client_violation(self, exc: PeerViolation, reason: str) -> None:
        errno = exc.code if isinstance(exc.code, int) else int(ErrorCode.ER_MALFORMED_PACKET)
        if isinstance(exc, MessageTooLarge):
            message = "Got a packet bigger than 'max_allowed_packet' bytes"
            sqlstate = "08S01"
        else:
            message = exc.message
            sqlstate = "08S01"
        self.terminate(errno, sqlstate, message, reason, force_error=True)

    def _pump_client(self) -> None:
        """Forward every complete client packet upstream (one write), handling the
        commands that need the gateway."""
        scanner = self._client_scanner
        tracker = self.tracker
        upstream = self.upstream
        assert tracker is not None and upstream is not None
        buf = scanner.buffer
        pieces: list[bytes | memoryview] = []
        seg_start = seg_end = -1
        quit_after = False
        try:
            while not self._closing and self._change_user is None:
                if tracker.awaiting_client:
                    # LOCAL INFILE data: its sequence ids continue the response's.
                    entry = scanner.next_packet()
                    if entry is None:
                        break
                    start, stop = entry
                    tracker.client_packet(memoryview(buf)[start + 4 : stop])
                    if seg_end != start:
                        if seg_start >= 0:
                            pieces.append(memoryview(buf)[seg_start:seg_end])
                        seg_start = start
                    seg_end = stop
                    continue
                scanner.expected_seq = 0
                entry = scanner.next_packet()
                if entry is None:
                    break
                start, stop = entry
                if stop - start == 4:
                    raise PeerViolation("empty command packet", int(ErrorCode.ER_MALFORMED_PACKET))
                try:
                    replacement = self._command(buf, start, stop)
                except _HoldForReview as held:
                    # The command and everything after it wait in the scanner.
                    scanner.unread(memoryview(buf)[start:stop])
                    self._hold_for_review(held.sql, held.decision)
                    break
                if replacement is None:  # forward unchanged
                    if seg_end != start:
                        if seg_start >= 0:
                            pieces.append(memoryview(buf)[seg_start:seg_end])
                        seg_start = start
                    seg_end = stop
                else:
                    if seg_start >= 0:
                        pieces.append(memoryview(buf)[seg_start:seg_end])
                    seg_start = seg_end = -1
                    if replacement:
                        pieces.append(replacement)
                if buf[start + 4] == _COM_QUIT:
                    quit_after = True
                    break
        except MessageTooLarge as exc:
            self._client_violation(exc, "oversized client packet")
            return
        except PeerViolation as exc:
            self._client_violation(exc, "client protocol violation")
            return
        if seg_start >= 0:
            if not pieces and seg_start == 0 and seg_end == len(buf):
                pieces.append(buf)
            else:
                pieces.append(memoryview(buf)[seg_start:seg_end])
        if pieces:
            upstream.leg.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        if quit_after:
            self.end_reason = "client quit"
            self._close_both()
        elif self._change_user is not None and not self._exchanges:
            self._begin_change_user()

    def _command(self, buf: bytes, start: int, stop: int) -> bytes | None:
        """Look at one client command. None: forward unchanged; bytes: forward these
        instead (b"": nothing, the gateway answered)."""
        cmd = buf[start + 4]
        tracker = self.tracker
        observer = self.observer
        gate = self.policy_gate
        assert tracker is not None and observer is not None and gate is not None
        big = stop - start > _HEADER_MAX
        if cmd == _COM_QUERY:
            sql = join_payload(buf, start, stop)[1:] if big else buf[start + 5 : stop]
            reply, decision, kill = self._screen(sql, "simple", buf, start, stop)
            if reply is not None:
                return reply
            if kill is not None:
                return self._kill(kill, buf, start, stop, sql, decision.rule)
            local = bool(self.capabilities & _LOCAL_FILES) and is_load_data_local(sql)
            ex = Exchange(cmd)
            ex.rule = decision.rule
            ex.classes = decision.classes
            if self.masking is not None:
                ex.mask_sql = bytes(sql)
                self.masking.statement_sent(ex.mask_sql)
            if big:
                ex.first_seq = count_physical_packets(memoryview(buf)[start:stop]) & 0xFF
            tracker.start(_COM_QUERY, local_infile=local)
            self._exchanges.append(ex)
            observer.query_started(ex, sql)
            return None
        if cmd == _COM_STMT_EXECUTE:
            payload = join_payload(buf, start, stop) if big else buf[start + 4 : stop]
            stmt_id, flags, _ = parse_stmt_execute_header(payload)
            self._cursor_budgets.pop(str(stmt_id), None)
            ex = Exchange(cmd)
            if self.masking is not None:
                prepared = self.statements.get(stmt_id)
                ex.mask_sql = prepared.sql if prepared is not None else None
            self._exchanges.append(ex)
            tracker.start(
                _COM_STMT_EXECUTE,
                cursor=bool(flags & _CURSOR_FLAGS),
            )
            if observer.recording is not None:
                self._record_execute(ex, stmt_id, payload)
            else:
                # Not recorded, still audited: the statement's text and rule, not its
                # parameters (decoded only for the recording).
                ex.name = str(stmt_id)
                observer.execute_started(ex, self.statements.get(stmt_id), None)
            return None
        if cmd == _COM_FIELD_LIST:
            # Decided as the SHOW COLUMNS it is: a table rule covers its column metadata.
            table = bytes(buf[start + 5 : stop]).split(b"\x00", 1)[0]
            show = b"SHOW COLUMNS FROM " + _quoted(table)
            if _command_refused(gate.policy.check_query(show.decode("utf-8", "surrogateescape"))):
                decision = gate.check(show, "simple")  # recorded and logged as a refusal
                return self._refuse_statement(decision.message, buf, start, stop)
        if cmd == _COM_INIT_DB:
            # Decided as the USE statement it is (schema rules must not be skipped by
            # switching databases with the command instead of the statement).
            use = _use_statement(bytes(buf[start + 5 : stop]))
            if _command_refused(gate.policy.check_query(use.decode("utf-8", "surrogateescape"))):
                decision = gate.check(use, "simple")  # recorded and logged as a refusal
                return self._refuse_statement(decision.message, buf, start, stop)
        if cmd in _PASS_THROUGH:
            tracker.start(cmd)
            self._exchanges.append(Exchange(cmd))
            if cmd == _COM_RESET_CONNECTION:
                # The server drops prepared statements and SQL-level PREPAREd ones.
                self.statements.clear()
                self._cursor_columns.clear()
                observer.statements_closed()
                gate.reset()
                observer.control("reset_connection", {})
                if self._write_timeout is not None:
                    # The reset puts net_write_timeout back to the global value: raise
                    # it again, pipelined right behind the reset, before any command of
                    # the client's.
                    tracker.start(_COM_QUERY)
                    internal = Exchange(_COM_QUERY)
                    internal.swallow = internal.internal = True
                    self._exchanges.append(internal)
                    return bytes(buf[start:stop]) + self._write_timeout
            elif cmd == _COM_INIT_DB:
                if self.masking is not None:
                    self.masking.init_db(bytes(buf[start + 5 : stop]))
                schema = buf[start + 5 : stop].decode("utf-8", "replace")
                observer.control("init_db", {"schema": schema})
            return None
        if cmd == _COM_STMT_PREPARE:
            sql = join_payload(buf, start, stop)[1:] if big else buf[start + 5 : stop]
            reply, decision, kill = self._screen(sql, "prepared", buf, start, stop)
            if reply is not None:
                return reply
            if kill is not None:
                return self._local_error(
                    ER_KILL_DENIED,
                    "HY000",
                    "KILL cannot be prepared through the gateway; send it as a plain query",
                    buf,
                    start,
                    stop,
                )
            ex = Exchange(cmd)
            ex.text = sql
            ex.rule = decision.rule
            ex.classes = decision.classes
            tracker.start(cmd)
            self._exchanges.append(ex)
            self.statements.prepare_sent()
            return None
        if cmd in (_COM_STMT_CLOSE, _COM_STMT_RESET, _COM_STMT_FETCH):
            if stop - start < 9:
                raise PeerViolation(
                    "statement command too short", int(ErrorCode.ER_MALFORMED_PACKET)
                )
            stmt_id = int.from_bytes(buf[start + 5 : start + 9], "little")
            if cmd != _COM_STMT_FETCH:
                self._cursor_budgets.pop(str(stmt_id), None)
                self._cursor_columns.pop(str(stmt_id), None)
            if cmd == _COM_STMT_CLOSE:
                self.statements.close(stmt_id)
                observer.statements_closed(stmt_id)
                tracker.start(cmd)  # no response
                return None
            ex = Exchange(cmd)
            tracker.start(cmd)
            self._exchanges.append(ex)
            if cmd == _COM_STMT_RESET:
                self.statements.reset(stmt_id)
            else:
                prepared = self.statements.get(stmt_id)
                observer.fetch_started(ex, prepared)
                if ex.name is None:
                    ex.name = str(stmt_id)  # the cursor's budget key
                if self.masking is not None:
                    # Fetched rows come without column definitions: those of the execute
                    # that opened the cursor describe them, in the binary protocol (not the
                    # prepare's: a parameter's column has no type, and so no width, until
                    # it is bound). Unknown (never executed here): refused, not guessed.
                    ex.mask_plan = self.masking.plan(
                        prepared.sql if prepared is not None else None,
                        0,
                        self._cursor_columns.get(str(stmt_id)) or None,
                        True,
                    )
            return None
        if cmd == _COM_STMT_SEND_LONG_DATA:
            if stop - start < 11:
                raise PeerViolation(
                    "COM_STMT_SEND_LONG_DATA too short", int(ErrorCode.ER_MALFORMED_PACKET)
                )
            stmt = self.statements.get(int.from_bytes(buf[start + 5 : start + 9], "little"))
            param = int.from_bytes(buf[start + 9 : start + 11], "little")
            if stmt is not None and param < stmt.num_params:
                size = len(join_payload(buf, start, stop)) - 7 if big else stop - start - 11
                stmt.long_data[param] = stmt.long_data.get(param, 0) + size
            return None  # no response
        if cmd == _COM_QUIT:
            tracker.start(cmd)
            return None
        if cmd == _COM_CHANGE_USER:
            payload = join_payload(buf, start, stop)
            self._change_user = (payload, count_physical_packets(memoryview(buf)[start:stop]))
            self.client.pause_reading("change-user")
            return b""
        if cmd == _COM_PROCESS_KILL:
            if stop - start != 9:
                raise PeerViolation(
                    "COM_PROCESS_KILL must be 5 bytes", int(ErrorCode.ER_MALFORMED_PACKET)
                )
            conn_id = int.from_bytes(buf[start + 5 : stop], "little")
            return self._kill(KillStatement(None, False, conn_id), buf, start, stop, None)
        if cmd in _REFUSED:
            name = Command(cmd).name
            return self._local_error(
                int(ErrorCode.ER_NOT_ALLOWED_COMMAND),
                "42000",
                f"{name} is not allowed through the gateway",
                buf,
                start,
                stop,
            )
        if cmd in _KNOWN_COMMANDS:
            # Known but not needing the gateway (none left today): forward, tracked.
            tracker.start(cmd)
            self._exchanges.append(Exchange(cmd))
            return None
        return self._local_error(
            int(ErrorCode.ER_UNKNOWN_COM_ERROR), "08S01", "Unknown command", buf, start, stop
        )

    def _record_execute(self, ex: Exchange, stmt_id: int, payload: bytes) -> None:
        observer = self.observer
        assert observer is not None
        stmt = self.statements.get(stmt_id)
        sizes = dict(stmt.long_data) if stmt is not None else {}
        parsed = None
        try:
            result = self.statements.execute(payload, stmt_id)  # header read by _command
            parsed = result[1] if result is not None else None
        except PeerViolation:
            parsed = None  # the server answers the malformed packet with its own ERR
        ex.name = str(stmt_id)
        observer.execute_started(ex, stmt, parsed, sizes)

    def _reply_seq(self, buf: bytes, start: int, stop: int) -> int:
        if stop - start <= _HEADER_MAX:
            return 1
        return count_physical_packets(memoryview(buf)[start:stop]) & 0xFF

    def _local_error(
        self, errno: int, sqlstate: str, message: str, buf: bytes, start: int, stop: int
    ) -> bytes:
        """Answer a command with the gateway's own ERR, in order with pipelined replies."""
        reply = _err(errno, sqlstate, message, self._reply_seq(buf, start, stop))
        if self.observer is not None:
            self.observer.control("refused", {"errno": str(errno), "message": message})
        return self._reply_locally(reply, buf[start + 4])

    def _screen(
        self, sql: bytes, path: str, buf: bytes, start: int, stop: int
    ) -> tuple[bytes | None, Decision, KillStatement | None]:
        """The policy decision on a statement text, then the KILL check: (the gateway's
        reply if it answers the command itself, the decision, a KILL to map). Decided
        before anything else looks at the text: a refused statement never reaches the
        server (and a refused KILL is not mapped)."""
        gate = self.policy_gate
        assert gate is not None
        decision = gate.check(sql, path)
        if decision.action == "review" and gate.reviewable:
            raise _HoldForReview(bytes(sql), decision)
        if decision.action != "allow":
            return self._refuse_statement(decision.message, buf, start, stop), decision, None
        try:
            kill = find_kill(sql)
        except KillRefused as exc:
            reply = self._local_error(ER_KILL_DENIED, "HY000", str(exc), buf, start, stop)
            return reply, decision, None
        return None, decision, kill

    def _refuse_statement(self, message: str, buf: bytes, start: int, stop: int) -> bytes:
        """Answer a statement the policy refused (the gate recorded and logged it) with
        ERR 1142, as the server answers a statement on a table the user may not use."""
        payload = build_err_packet(
            ER_TABLEACCESS_DENIED_ERROR,
            ACCESS_DENIED_SQLSTATE,
            message,
            protocol_41=bool(self.capabilities & _PROTOCOL_41),
        )
        reply = build_packets(payload, self._reply_seq(buf, start, stop))[0]
        return self._reply_locally(reply, buf[start + 4])

    def _reply_locally(self, reply: bytes, cmd: int) -> bytes:
        """Send a gateway-made reply now when nothing is in flight, else queue it behind
        the pending exchanges (``_server_data`` sends it when they complete). The
        command never goes upstream: the response tracker is not told about it."""
        if not self._exchanges:
            self.client.write(reply)
        else:
            ex = Exchange(cmd)
            ex.local_reply = reply
            self._exchanges.append(ex)
        return b""

    def _kill(
        self,
        kill: KillStatement,
        buf: bytes,
        start: int,
        stop: int,
        sql: bytes | None,
        rule: str | None = None,
    ) -> bytes:
        """Map a KILL of a gateway connection id to the upstream thread id."""
        victim = self._find_session(kill.connection_id)
        if victim is None:
            return self._local_error(
                ER_NO_SUCH_THREAD,
                "HY000",
                f"Unknown thread id: {kill.connection_id}",
                buf,
                start,
                stop,
            )
        if victim.identity_subject != self.identity_subject:
            return self._local_error(
                ER_KILL_DENIED,
                "HY000",
                f"You are not owner of thread {kill.connection_id}",
                buf,
                start,
                stop,
            )
        assert victim.upstream is not None
        if kill.query and victim.control is not None:
            # A result paused for approval or a statement held for review: the request
            # is withdrawn and the waiting client gets its "query interrupted".
            victim.control.cancel("canceled by KILL QUERY")
        thread_id = victim.upstream.thread_id
        if self.observer is not None:
            self.observer.control(
                "kill",
                {
                    "connection_id": str(kill.connection_id),
                    "upstream_thread_id": str(thread_id),
                    "session_id": victim.session_id,
                    "query_only": "yes" if kill.query else "no",
                },
            )
        ex = Exchange(buf[start + 4])
        ex.rule = rule
        tracker = self.tracker
        assert tracker is not None
        tracker.start(buf[start + 4])
        self._exchanges.append(ex)
        if sql is None:  # COM_PROCESS_KILL
            payload = bytes((_COM_PROCESS_KILL,)) + thread_id.to_bytes(4, "little")
        else:
            text = kill.render(thread_id)
            payload = bytes((_COM_QUERY,)) + text
            if self.observer is not None:
                self.observer.query_started(ex, sql)
        return build_packets(payload, 0)[0]

    def _find_session(self, connection_id: int) -> MySqlSession | None:
        """The live MySQL session on this target with that gateway connection id (or,
        failing that, that upstream thread id, as CONNECTION_ID() reports it)."""
        registry = self.runtime.registry
        found = registry.find_by_connection_id(connection_id)
        if isinstance(found, MySqlSession) and found.upstream is not None:
            return found if found.target.name == self.target.name else None
        for session in registry.sessions.values():
            if (
                isinstance(session, MySqlSession)
                and session.upstream is not None
                and session.target.name == self.target.name
                and session.upstream.thread_id == connection_id
            ):
                return session
        return None

    # -- server -> client ------------------------------------------------------------

    def _server_data(self, data: bytes) -> None:
        scanner = self._server_scanner
        try:
            scanner.feed(data)
        except PeerViolation as exc:
            self._server_violation(exc)
            return
        if self._paused:
            return  # a result waits for approval: this stays queued behind it
        buf = scanner.buffer
        tracker = self.tracker
        observer = self.observer
        exchanges = self._exchanges
        limits = self.limits
        assert tracker is not None and observer is not None
        recording = observer.recording is not None
        pieces: list[bytes | memoryview] = []
        seg_start = seg_end = -1
        try:
            while True:
                if tracker.in_rows:
                    start, stop, count = scanner.next_row_run()
                    if count:
                        ex = exchanges[0]
                        tracker.rows(count)
                        ex.rows += count
                        if ex.swallow:
                            continue
                        plan = ex.mask_plan
                        if isinstance(plan, ResultPlan):
                            masked = self._mask_rows(ex, plan, buf, start, stop)
                            if seg_start >= 0:
                                pieces.append(memoryview(buf)[seg_start:seg_end])
                            seg_start = seg_end = -1
                            if masked is not None and limits is not None:
                                cut = limits.take(
                                    self._budget or self._new_budget(ex), count, len(masked)
                                )
                                if cut is not None:
                                    if self._limit(
                                        ex, cut, masked, 0, len(masked), buf, start, stop, pieces
                                    ):
                                        break  # paused for approval
                                    continue
                            if masked is not None:
                                pieces.append(masked)
                                ex.bytes += len(masked)
                                if recording:
                                    observer.rows(ex, masked, 0, len(masked), count)
                            continue
                        if limits is not None:
                            cut = limits.take(
                                self._budget or self._new_budget(ex), count, stop - start
                            )
                            if cut is not None:
                                if seg_start >= 0:
                                    pieces.append(memoryview(buf)[seg_start:seg_end])
                                seg_start = seg_end = -1
                                if self._limit(ex, cut, buf, start, stop, buf, start, stop, pieces):
                                    break  # paused for approval
                                continue
                        ex.bytes += stop - start
                        if recording:
                            observer.rows(ex, buf, start, stop, count)
                        if seg_end != start:
                            if seg_start >= 0:
                                pieces.append(memoryview(buf)[seg_start:seg_end])
                            seg_start = start
                        seg_end = stop
                        continue
                entry = scanner.next_packet()
                if entry is None:
                    break
                start, stop = entry
                payload = (
                    buf[start + 4 : stop]
                    if stop - start <= _HEADER_MAX
                    else scanner.payload(start, stop)
                )
                if not exchanges:
                    if payload[:1] != b"\xff":
                        raise PeerViolation("server sent a packet with no command in flight")
                    # The server ends an idle session with an ERR of its own (1927
                    # connection killed, 1053 shutdown): pass it on, then close.
                    if seg_start >= 0:
                        pieces.append(memoryview(buf)[seg_start:seg_end])
                    seg_start = seg_end = -1
                    pieces.append(memoryview(buf)[start:stop])
                    self._upstream_ended = True
                    break
                ex = exchanges[0]
                try:
                    events = tracker.receive(payload)
                except PeerViolation as exc:
                    if payload[:1] != bytes((LOCAL_INFILE_HEADER,)) or exc.code != NOT_ALLOWED:
                        raise
                    self._refuse_local_infile(ex, buf[start + 3])
                    if seg_start >= 0:
                        pieces.append(memoryview(buf)[seg_start:seg_end])
                    seg_start = seg_end = -1
                    continue
                scrubbed = None
                if self.masking is not None and not ex.swallow and payload[:1] == b"\xff":
                    scrubbed = self.masking.scrub_err(payload, ex.mask_sql)
                if ex.swallow or scrubbed is not None:
                    if seg_start >= 0:
                        pieces.append(memoryview(buf)[seg_start:seg_end])
                    seg_start = seg_end = -1
                    if scrubbed is not None:  # same sequence id, values hidden
                        pieces.append(build_packets(scrubbed, buf[start + 3])[0])
                else:
                    ex.bytes += stop - start
                    if seg_end != start:
                        if seg_start >= 0:
                            pieces.append(memoryview(buf)[seg_start:seg_end])
                        seg_start = start
                    seg_end = stop
                for ev in events:
                    if self._event(ev, ex, buf, start, stop):
                        # The exchange is complete: gateway replies queued behind it follow.
                        if ex.internal:
                            pass
                        elif ex.swallow and ex is self._limited:
                            error = self._limited_err
                            self._limited = self._limited_err = None
                            if error is not None:
                                pieces.append(_err(*error, ex.sent_seq))
                        elif ex.swallow:
                            pieces.append(
                                _err(
                                    int(ErrorCode.ER_NOT_ALLOWED_COMMAND),
                                    "42000",
                                    ex.swallow
                                    if isinstance(ex.swallow, str)
                                    else "LOAD DATA LOCAL INFILE request refused by the "
                                    "gateway: the statement did not ask for a local file",
                                    ex.sent_seq,
                                )
                            )
                        while exchanges and exchanges[0].local_reply is not None:
                            if seg_start >= 0:
                                pieces.append(memoryview(buf)[seg_start:seg_end])
                                seg_start = seg_end = -1
                            reply = exchanges.popleft().local_reply
                            assert reply is not None
                            pieces.append(reply)
        except PeerViolation as exc:
            self._server_violation(exc)
            return
        if seg_start >= 0:
            if not pieces and seg_start == 0 and seg_end == len(buf):
                pieces.append(buf)
            else:
                pieces.append(memoryview(buf)[seg_start:seg_end])
        if pieces:
            self.client.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        if self._upstream_ended:
            self.end_reason = "the database ended the session"
            self._close_both()
        elif self._change_user is not None and not exchanges and not self._closing:
            self._begin_change_user()

    def _event(self, ev: ResponseEvent, ex: Exchange, buf: bytes, start: int, stop: int) -> bool:
        """Handle one tracker event; True when the head exchange completed (popped)."""
        observer = self.observer
        assert observer is not None
        if not isinstance(ev, (ResultSetStarted, RowsReceived)):
            self._budget = None  # the result ended: the next one has its own budget
        if isinstance(ev, ResponseComplete):
            if ex.stmt is not None:
                observer.result_finished(ex)
            self._exchanges.popleft()
            return True
        if isinstance(ev, StatementPrepared):
            self.statements.add(ex.text, ev.ok, ev.params, ev.columns)
            observer.prepared(ev.ok.statement_id, ex.rule, ex.classes)
            return False
        if isinstance(ev, (OkReceived, ResultSetEnded)):
            if ev.ok.session_state_changes:
                gate = self.policy_gate
                assert gate is not None
                gate.server_ok(ev.ok)
            ex.mask_results += 1
            masking = self.masking
            if masking is not None and not ev.ok.more_results:
                masking.statement_done(in_transaction=bool(ev.ok.status_flags & _IN_TRANSACTION))
            # The result's plan goes once its audit line has read it (what was masked);
            # the next result of the statement gets its own.
            if not ex.swallow:
                self._result_event(ev, ex, observer)
            ex.mask_plan = None
            return False
        if ex.swallow:
            return False
        if isinstance(ev, ResultSetStarted):
            if ex.command == _COM_STMT_EXECUTE and ex.name is not None:
                cursors = self._cursor_columns
                if ev.columns is None:  # not described: its fetches are refused
                    cursors.pop(ex.name, None)
                else:
                    if len(cursors) >= _CURSOR_COLUMNS_MAX and ex.name not in cursors:
                        cursors.clear()  # bounded; a fetch of a forgotten cursor is refused
                    cursors[ex.name] = ev.columns
            if self.masking is not None:
                ex.mask_plan = self.masking.plan(
                    ex.mask_sql, ex.mask_results, ev.columns, ev.binary
                )
            observer.result_described(ex, ev.columns, ev.binary)
        elif isinstance(ev, ErrorReceived):
            if ex.command == _COM_STMT_PREPARE:
                self.statements.prepare_failed()
            if ex.command in _RESULT_COMMANDS:
                observer.result_finished(ex, err=ev.err)
            if ex.text is not None and ex.command in (_COM_QUERY, _COM_STMT_PREPARE):
                # A SQL-level PREPARE / DEALLOCATE in it may not have run.
                gate = self.policy_gate
                assert gate is not None
                gate.statement_failed(ex.text)
        elif isinstance(ev, RowsReceived):
            ex.rows += ev.count
            if observer.recording is not None:
                observer.rows(ex, buf, start, stop, ev.count)
        elif isinstance(ev, LocalInfileRequested):
            # The client streams the file with sequence ids continuing the response's.
            self._client_scanner.expected_seq = (buf[start + 3] + 1) & 0xFF
            observer.control("local_infile", {})
        elif isinstance(ev, AuthExchange):
            raise PeerViolation("authentication exchange outside COM_CHANGE_USER")
        return False

    def _result_event(
        self, ev: OkReceived | ResultSetEnded, ex: Exchange, observer: MyRecordingObserver
    ) -> None:
        """A result's end (its EOF/OK terminator) or a statement's OK, to the observer."""
        if isinstance(ev, ResultSetEnded):
            observer.result_finished(ex, ok=ev.ok, more=ev.ok.more_results and not ev.cursor_open)
        elif ex.command in _RESULT_COMMANDS:
            observer.result_finished(ex, ok=ev.ok, more=ev.ok.more_results)

    def _mask_rows(
        self, ex: Exchange, plan: ResultPlan, buf: bytes, start: int, stop: int
    ) -> bytes | None:
        """A run of row packets, masked; None when the result is refused instead (its ERR
        follows once the server completes the result, with this first row's sequence id)."""
        refusal = plan.refusal
        if refusal is None:
            try:
                return bytes(
                    rewrite_row_packets(
                        buf, start, stop, plan.column_count, plan.rewriters, plan.types
                    )
                )
            except PeerViolation as exc:
                refusal = f"result refused by the gateway: it cannot be masked ({exc.message})"
        ex.swallow = refusal
        ex.sent_seq = buf[start + 3]
        log.info(
            "result refused by masking",
            extra={"session_id": self.session_id, "target": self.target.name},
        )
        return None

    # =============================================================== limits

    def _new_budget(self, ex: Exchange) -> Budget:
        """The budget of the result whose rows arrive now: a fresh one per result, except
        that the batches of one cursor (COM_STMT_FETCH) share the statement's."""
        budget: Budget | None = None
        if ex.command == _COM_STMT_FETCH and ex.name is not None:
            budget = self._cursor_budgets.get(ex.name)
            if budget is None:
                # Not evicted: a forgotten budget would start a stopped cursor afresh. One
                # per prepared statement at most (dropped when it is executed again, reset
                # or closed), so the server's max_prepared_stmt_count bounds them.
                budget = self._cursor_budgets[ex.name] = Budget(ex.name)
        if budget is None:
            budget = Budget(ex)
        self._budget = budget
        return budget

    def _limit(
        self,
        ex: Exchange,
        cut: Cut,
        rows: bytes,
        rs: int,
        re: int,
        buf: bytes,
        start: int,
        stop: int,
        pieces: list[bytes | memoryview],
    ) -> bool:
        """A run of rows (``rows[rs:re]``, masked or ``buf[start:stop]`` itself) crosses a
        limit: the rows that fit go out (credited), then ``on_limit`` decides. True when
        the result is paused for approval (the rest of the read is put back)."""
        limits, control, budget = self.limits, self.control, self._budget
        observer = self.observer
        assert limits is not None and control is not None and budget is not None
        assert observer is not None
        pos, sent = split_row_packets(rows, rs, re, cut.rows, cut.bytes)
        limits.credit(budget, sent, pos - rs)
        count = ex.rows  # ex.rows already counts the whole run: keep only what is sent
        ex.rows = count - _row_count(buf, start, stop) + sent
        if sent:
            pieces.append(memoryview(rows)[rs:pos])
            ex.bytes += pos - rs
            if observer.recording is not None:
                observer.rows(ex, rows, rs, pos, sent)
        # The first row not sent, in the server's bytes: its sequence id is the one the
        # client expects next (for the gateway's terminator or ERR).
        held = pos if rows is buf else skip_row_packets(buf, start, sent)
        next_seq = buf[held + 3]
        limit = cut.reached(sent)
        policy = control.policy_name()
        action = limits.spec.on_limit
        control.limit_reached(action, limit, budget)
        if action == "approval":
            budget.state = PAUSED
            request = control.request_limit_approval(
                _statement(ex),
                limit,
                budget,
                lambda r: self._limit_decided(ex, budget, next_seq, r),
            )
            budget.request = request.id
            # The database is not read from (TCP backpressure) until the decision; MySQL
            # has no asynchronous notice, so the client just waits for more rows.
            self._server_scanner.unread(memoryview(buf)[held:stop])
            self._paused = True
            self._paused_seq = next_seq
            assert self.upstream is not None
            self.upstream.leg.pause_reading("approval")
            return True
        if action == "truncate":
            # The rows so far and the terminator the client expects; MySQL has no notice
            # channel: a warning count of 1 says so (SHOW WARNINGS does not list it), the
            # recording and the audit log have the details.
            budget.state = DRAINING
            status = self.tracker.last_status if self.tracker is not None else 0
            status &= ~(_MORE_RESULTS | _CURSOR_EXISTS)
            if ex.command == _COM_STMT_FETCH:
                status |= _LAST_ROW_SENT
            ok = OkPacket(status_flags=status, warnings=1, header=EOF_HEADER)
            pieces.append(build_packets(build_terminator(ok, self.capabilities), next_seq)[0])
            control.event("truncated", detail=control.truncated_message(limit, budget, policy))
            observer.result_finished(ex, ok=ok)
            self._stop_exchange(ex, None, next_seq, "limit")
            return False
        budget.state = STOPPED
        message = control.exceeded_message(limit, budget, policy)
        self._stop_exchange(ex, (ER_UNKNOWN_ERROR, "HY000", message), next_seq, "limit")
        return False

    def _stop_exchange(
        self, ex: Exchange, error: tuple[int, str, str] | None, seq: int, why: str
    ) -> None:
        """Drop the rest of this response (the gateway's ERR, if any, follows it with
        sequence id ``seq``) and kill the statement upstream."""
        if error is not None and self.observer is not None:
            # Before ``swallow`` is set: the rows sent so far count as sent.
            self.observer.result_finished(
                ex, err=ErrPacket(error[0], error[1], error[2].encode("utf-8", "replace"))
            )
        ex.swallow = True
        ex.sent_seq = seq
        self._limited = ex
        self._limited_err = error
        if ex.command != _COM_STMT_FETCH:  # a fetch reads a materialized cursor
            self._kill_upstream(why)

    def _kill_upstream(self, why: str) -> None:
        """KILL QUERY on a side connection. Both legs wait until it is delivered: the
        client must not get the end of this response (and send its next command) before
        the kill, or a late kill could interrupt that next command."""
        up = self.upstream
        if up is None:
            return
        client, leg = self.client, up.leg
        client.pause_reading("kill")
        leg.pause_reading("kill")

        async def kill() -> None:
            try:
                await kill_query(self.target.upstream, up.thread_id)
            finally:
                client.resume_reading("kill")
                leg.resume_reading("kill")

        self.runtime.spawn(kill())
        if self.control is not None:
            self.control.event("upstream_cancel", reason=why)

    def _limit_decided(
        self, ex: Exchange, budget: Budget, seq: int, request: ApprovalRequest
    ) -> None:
        """An approver (or the timeout, or the client's cancel) decided a paused result."""
        if self._closing or budget.state != PAUSED:
            return
        upstream, limits, control = self.upstream, self.limits, self.control
        assert upstream is not None and limits is not None and control is not None
        self._paused = False
        if request.approved:
            budget.state = OPEN
            if request.scope == "session":
                limits.lifted = True
            else:
                budget.lifted = True
            control.event("resumed", approval_id=request.id)
        else:
            budget.state = STOPPED
            message = control.outcome_message(request, "result")
            if request.state == "withdrawn":
                error = (ER_QUERY_INTERRUPTED, "70100", message)
            else:
                error = (ER_UNKNOWN_ERROR, "HY000", message)
            self._stop_exchange(ex, error, seq, "approval " + request.state)
            control.event("aborted", approval_id=request.id)
        # The held part of the read goes through the normal path, then reading resumes.
        self._server_data(b"")
        upstream.leg.resume_reading("approval")

    def _hold_for_review(self, sql: bytes, decision: Decision) -> None:
        """A statement needs an approver: it and what the client sent after it wait in
        the client scanner, the client is not read from, the approvers are asked. MySQL
        has no asynchronous notice: the client just waits for its reply."""
        control = self.control
        assert control is not None
        self._reviewing = True
        self.client.pause_reading("review")
        control.request_review(
            sql.decode("utf-8", errors="replace"),
            decision.rule or "review",
            lambda r: self._review_decided(sql, decision, r),
        )

    def _review_decided(self, sql: bytes, decision: Decision, request: ApprovalRequest) -> None:
        if self._closing:
            return
        gate, control = self.policy_gate, self.control
        assert gate is not None and control is not None
        if request.approved:
            gate.reviewed[sql] = Decision(
                "allow",
                f"{decision.rule} approved:{request.id}",
                "statement allowed",
                decision.classes,
            )
        else:
            gate.reviewed[sql] = Decision(
                "deny",
                f"{decision.rule} {request.state}:{request.id}",
                control.outcome_message(request, "statement"),
                decision.classes,
            )
        self._reviewing = False
        self._client_data(b"")
        self.client.resume_reading("review")

    def _refuse_local_infile(self, ex: Exchange, fb_seq: int) -> None:
        """The server asked for a client file the client's statement did not name
        (PROTOCOLS.md 3.7): answer it with an empty file ourselves, drop the rest of
        the response, and tell the client its command failed."""
        upstream = self.upstream
        assert upstream is not None
        upstream.leg.write(build_packets(b"", (fb_seq + 1) & 0xFF)[0])
        ex.swallow = True
        ex.sent_seq = fb_seq
        log.warning(
            "unsolicited LOCAL INFILE request refused",
            extra={"session_id": self.session_id, "target": self.target.name},
        )
        if self.observer is not None:
            self.observer.control("local_infile_refused", {})
            self.observer.result_finished(
                ex,
                err=ErrPacket(
                    int(ErrorCode.ER_NOT_ALLOWED_COMMAND),
                    "42000",
                    b"unsolicited LOCAL INFILE request",
                ),
            )

    def _server_violation(self, exc: PeerViolation) -> None:
        log.warning(
            "upstream protocol violation",
            extra={"session_id": self.session_id, "detail": str(exc)},
        )
        self.terminate(
            int(ErrorCode.ER_NET_READ_ERROR),
            "08S01",
            "the database sent an invalid packet",
            "upstream protocol violation",
        )

    # ============================================================== COM_CHANGE_USER

    def _begin_change_user(self) -> None:
        if self._change_user_task is not None or self._change_user is None:
            return
        payload, packets = self._change_user
        self._change_user_task = asyncio.get_running_loop().create_task(
            self._do_change_user(payload, (packets) & 0xFF)
        )

    async def _do_change_user(self, payload: bytes, seq: int) -> None:
        """Re-authenticate with a new JWT (the same caching_sha2 full-auth trick as at
        login), check the identity may use the target, then reset the upstream session
        with COM_CHANGE_USER and the stored credentials."""
        client = self.client
        upstream = self.upstream
        assert upstream is not None
        # Both legs back to handshake mode: bytes after the command wait in the leg.
        client.on_data = None
        client.buffer.feed(self._client_scanner.take_pending())
        upstream.leg.on_data = None
        client.resume_reading("change-user")
        runtime = self.runtime
        previous = self.identity_subject
        try:
            try:
                request = parse_com_change_user(payload, self.capabilities)
                self.client_user = request.username.decode("utf-8", "replace")[:256]
                # Always start with an AuthSwitchRequest (with a fresh scramble) to
                # caching_sha2_password, as MariaDB servers do: libmysqlclient's
                # change-user path gives up on a bare "perform full authentication"
                # reply to COM_CHANGE_USER, and every client handles the switch.
                response = HandshakeResponse41(
                    self.capabilities,
                    0,
                    request.charset or self.charset,
                    request.username,
                    request.auth_response,
                    request.database,
                    b"",
                )
                self._login_seq = seq
                token = await asyncio.wait_for(
                    self._read_password(response, _new_scramble(), seq),
                    runtime.config.gateway.login_timeout,
                )
                identity = await self._authorize(token)
                del token
                self._check_database(identity, request.database)
                # The new identity's masks (never the previous identity's: they may be
                # laxer), resolved before the upstream session changes.
                masking = await self._session_masking(identity, request.database)
            except (LoginRefused, PeerViolation, TimeoutError) as exc:
                refused = (
                    exc
                    if isinstance(exc, _Refused)
                    else self._access_denied(f"COM_CHANGE_USER refused: {exc}")
                )
                log.info(
                    "COM_CHANGE_USER refused",
                    extra={"session_id": self.session_id, "detail": refused.log_detail},
                )
                if self.observer is not None:
                    self.observer.control("change_user_refused", {"user": self.client_user})
                self.end_reason = "COM_CHANGE_USER refused"
                self.client.write(
                    _err(refused.errno, refused.sqlstate, refused.message, self._login_seq)
                )
                self._close_both()
                return
            database = request.database or self.target.upstream.database.encode()
            attrs = self._connect_attrs(request.connect_attrs, identity)
            try:
                ok = await change_user(
                    upstream,
                    self.target.upstream,
                    database=database,
                    charset=request.charset or self.charset,
                    connect_attrs=attrs,
                )
            except UpstreamError as exc:
                log.warning(
                    "upstream COM_CHANGE_USER failed",
                    extra={"session_id": self.session_id, "detail": exc.detail},
                )
                if exc.errno == int(ErrorCode.ER_BAD_DB_ERROR):
                    message = f"Unknown database '{database.decode('utf-8', 'replace')}'"
                    errno, sqlstate = exc.errno, "42000"
                else:
                    errno, sqlstate = CR_CONN_HOST_ERROR, "08S01"
                    message = f'could not reset the session on target "{self.target.name}"'
                self.end_reason = "upstream COM_CHANGE_USER failed"
                self.client.write(_err(errno, sqlstate, message, self._login_seq))
                self._close_both()
                return
            self.statements.clear()
            self._cursor_columns.clear()
            if request.charset:
                self.charset = request.charset
            # A new identity: its own audit attribution, masks, limits and review approvers.
            self.masking = masking
            self.audit = runtime.session_audit(self, self.target, identity)
            recording = None
            if self.observer is not None:
                self.observer.set_audit(self.audit)
                recording = self.observer.recording
            self.control = runtime.limit_control(self, self.target, identity, recording)
            self.limits = self.control.limits
            self._budget = None
            self._cursor_budgets.clear()
            await self._raise_write_timeout(upstream)
            if self.policy_gate is not None:
                # Its own policy (a fresh engine session, so no SQL-level state
                # survives, as on the server); the client charset is the one this
                # command named (or stays).
                self.policy_gate.policy = runtime.session_policy(self.target, identity)
                self.policy_gate.masking = masking
                self.policy_gate.reviewable = bool(self.control.review_approvers)
                self.policy_gate.collation(self.charset)
            if self.observer is not None:
                self.observer.statements_closed()
            if self.observer is not None:
                self.observer.control(
                    "change_user",
                    {
                        "subject": identity.subject,
                        "previous_subject": previous or "",
                        "user": self.client_user,
                    },
                )
            if self.policy_generation != runtime.generation:
                # A reload while the identity changed: its masks may be the old file's
                # and its policy the new one's (see Runtime.session_started).
                self._end_now(
                    ER_CONNECTION_KILLED,
                    "70100",
                    "the gateway's configuration was reloaded during COM_CHANGE_USER; "
                    "reconnect to work under the new one",
                    "configuration reload during COM_CHANGE_USER",
                )
                return
            self._arm_expiry(identity.expires_at)
            self.client.write(build_packets(ok, self._login_seq)[0])
        except (LegClosed, ConnectionError):
            self._close_both()
            return
        finally:
            self._change_user = None
            self._change_user_task = None
        if self._closing:
            return
        upstream.leg.start_streaming(self._server_data)
        client.start_streaming(self._client_data)

    # ================================================================== teardown

    def summary(self) -> dict[str, object]:
        up = self.upstream
        return {
            "connection_id": self.connection_id,
            "upstream_thread_id": up.thread_id if up else None,
            "upstream_auth": up.auth_method if up else None,
            "statements": self.observer.statements if self.observer else 0,
            "bytes_to_client": self.client.bytes_out,
        }

    def live_info(self) -> dict[str, object]:
        observer = self.observer
        rows = observer.rows_total if observer is not None else 0
        ex = self._exchanges[0] if self._exchanges else None
        if ex is not None:
            rows += ex.rows  # the running statement's rows so far
        return {
            "statements": observer.statements if observer is not None else 0,
            "rows": rows,
            "bytes": self.client.bytes_out,
            "current_statement": _statement(ex) if ex is not None else None,
        }

    def kill(self, message: str, end_reason: str) -> None:
        """An administrator ended the session: ERR 1927 (70100)."""
        self._end_now(ER_CONNECTION_KILLED, "70100", message, end_reason)

    def _end_now(self, errno: int, sqlstate: str, message: str, end_reason: str) -> None:
        """End the session whatever it is doing (kill switch, revocation, token expiry):
        an ERR where the client can read one (between commands; before the first packet
        of its response; in place of the next row of a result paused for approval), else
        the connection just closes (a response cannot be cut into mid-packet-stream);
        KILL QUERY upstream for a running statement, COM_QUIT, both connections closed."""
        if self._closing:
            return
        seq: int | None = None
        ex = self._exchanges[0] if self._exchanges else None
        if ex is None:
            seq = self._between_commands_seq()
        elif self._paused:
            seq = self._paused_seq
        elif not ex.result_index and not ex.bytes and not ex.rows and not ex.swallow:
            seq = ex.first_seq
        up = self.upstream
        if up is not None:
            if ex is not None:
                self.runtime.spawn(kill_query(self.target.upstream, up.thread_id))
            if not up.leg.closed:
                up.leg.write(build_packets(bytes((Command.COM_QUIT,)), 0)[0])
        self.end_reason = end_reason
        self._withdraw_now()
        if seq is not None and not self.client.closed:
            self.client.write(_err(errno, sqlstate, message, seq))
        self._close_both()

    def _withdraw_now(self) -> None:
        """A request waiting for an approver goes now, not when both connections have
        closed (a client not reading can hold its close for seconds): nobody may approve
        a statement of a session that is ending."""
        if self.control is not None:
            self.control.withdraw("session ended: " + self.end_reason)

    def cancel_query(self) -> None:
        """Kill the running statement upstream (KILL QUERY on a new connection)."""
        if self.control is not None and self.control.cancel("canceled by the client"):
            return  # a paused result or a held statement: stopped as if denied
        up = self.upstream
        if up is None or not self._exchanges:
            return
        self.runtime.spawn(kill_query(self.target.upstream, up.thread_id))
        if self.observer is not None:
            self.observer.control("cancel", {"source": "gateway"})

    def _unfinished(self) -> deque[Exchange]:
        """The exchanges sent and not yet answered (the observer's running hook)."""
        return self._exchanges

    def _reporting_failed(self, exc: BaseException) -> None:
        # Statements could not be audited or recorded: fail closed, as a kill would.
        self._end_now(
            ER_UNKNOWN_ERROR,
            "HY000",
            "the gateway could not record this session's statements",
            f"recording failed: {type(exc).__name__}",
        )

    def terminate(
        self, errno: int, sqlstate: str, message: str, reason: str, *, force_error: bool = False
    ) -> None:
        """End the session. An ERR is sent when the client is between commands (it
        reads it as the answer to its next one) or when its own packet was refused;
        mid-response the client sees the connection close."""
        if self._closing:
            return
        self.end_reason = reason
        self._withdraw_now()
        if not self.client.closed and (force_error or not self._exchanges):
            self.client.write(_err(errno, sqlstate, message, self._between_commands_seq()))
        self._close_both()

    def _between_commands_seq(self) -> int:
        """The sequence id of an ERR sent while no command's response is under way: 1, read
        as the answer to the client's next command; inside a COM_CHANGE_USER's
        authentication exchange, the id of the next packet the client will read there."""
        return self._login_seq if self._change_user_task is not None else 1

    def shutdown(self, reason: str) -> None:
        """Graceful shutdown's last step (the drain grace is over): end it like a kill, so
        that a statement still running is killed on the server too."""
        self._end_now(ER_SERVER_SHUTDOWN, "08S01", "the gateway is shutting down", reason)

    def _client_lost(self, exc: BaseException | None) -> None:
        self.end_reason = "client disconnected" if exc is None else f"client connection lost: {exc}"
        up = self.upstream
        # A client that vanishes mid-query would leave the server running it to the
        # end: kill the query first, then close.
        if up is not None and self._exchanges and self.tracker is not None and self.tracker.busy:
            self.runtime.spawn(kill_query(self.target.upstream, up.thread_id))
        self._close_both()

    def _upstream_lost(self, exc: BaseException | None) -> None:
        self.end_reason = "database closed the connection"
        self._close_both()

    def _release_registrations(self) -> None:
        if self._change_user_task is not None:
            self._change_user_task.cancel()
        if self.observer is not None:
            self.observer.interrupted(self._exchanges)
        self.runtime.registry.remove(self, None)
        self._release()
        if self.control is not None:
            self.control.withdraw("session ended: " + self.end_reason)


def _row_count(buf: bytes, start: int, stop: int) -> int:
    """Rows in a run of framed row packets (16 MiB continuations are one row)."""
    return split_row_packets(buf, start, stop, 1 << 62, 1 << 62)[1]


def _statement(ex: Exchange) -> str:
    """The statement text of an exchange, as approvers see it."""
    text = ex.text if ex.text is not None else ex.mask_sql
    if text is not None:
        return text.decode("utf-8", errors="replace")
    if ex.command == _COM_STMT_FETCH:
        return f"<fetch from prepared statement {ex.name}>"
    return f"<execution of prepared statement {ex.name}>" if ex.name else "<execution>"
