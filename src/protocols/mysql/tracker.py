"""Command phase, server side: the ``ResponseTracker`` that knows where each
server response ends, and the events it reports.

Spec: page_protocol_command_phase, page_protocol_com_* pages,
page_protocol_com_query_response, page_protocol_com_stmt_prepare_response,
page_protocol_binary_resultset; MariaDB KB "Result Set Packets" and "COM_STMT_EXECUTE".

Rules the tracker enforces (one instance per upstream connection):

* Commands are answered in order; ``start()`` queues a command, its response is
  tracked packet by packet, and ``ResponseComplete`` marks the end. Commands with
  no response (COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA) complete at once.
* A response is OK, ERR, a LOCAL INFILE request (only after a COM_QUERY the caller
  flagged as LOAD DATA LOCAL, with CLIENT_LOCAL_FILES negotiated, PROTOCOLS.md 3.7),
  or a result set: column count [+ metadata_follows], column definitions, [EOF unless
  CLIENT_DEPRECATE_EOF], rows, then EOF / OK-with-0xFE-header, or ERR at any point.
* OK and terminators with SERVER_MORE_RESULTS_EXISTS chain another result
  (multi-statements, CALL); ERR always ends the response.
* A COM_STMT_EXECUTE that opened a cursor ends after the metadata with
  SERVER_STATUS_CURSOR_EXISTS; the rows come through COM_STMT_FETCH (binary rows +
  terminator). Observed on MariaDB 10.11: classic mode sends defs + EOF(status
  CURSOR_EXISTS); DEPRECATE_EOF mode sends defs + OK(0xFE, CURSOR_EXISTS).
* MARIADB_CLIENT_CACHE_METADATA: a column count with metadata_follows = 0 is
  followed directly by the EOF (classic) or the rows (DEPRECATE_EOF);
  ``ResultSetStarted.columns`` is then ``None`` and the caller uses its cache.
* COM_STATISTICS answers with a bare string; COM_SET_OPTION and COM_DEBUG with EOF.
* COM_CHANGE_USER is an authentication exchange: AuthSwitchRequest / AuthMoreData
  are surfaced as ``AuthExchange`` until OK or ERR.
* Anything else from the server is a violation (errno 1835): the connection is
  then terminal.

The tracker does not check sequence ids (the framing layer does) and never sees
rows one by one on the hot path: the driver collapses row runs with
``PacketScanner.next_row_run()`` while ``in_rows`` and reports them via ``rows(n)``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import PeerViolation, UsageError
from .commands import ClientCommand, StmtExecuteHeader
from .constants import (
    AUTH_MORE_DATA_HEADER,
    EOF_HEADER,
    ERR_HEADER,
    LOCAL_INFILE_HEADER,
    OK_HEADER,
    Capability,
    Command,
    ErrorCode,
    ServerStatus,
)
from .handshake import HANDSHAKE_ERROR
from .packets import (
    Buffer,
    ErrPacket,
    OkPacket,
    ProgressReport,
    is_progress_report,
    is_terminator,
    malformed,
    parse_eof_packet,
    parse_err_packet,
    parse_local_infile_request,
    parse_ok_packet,
    parse_progress_report,
    parse_terminator,
)
from .resultset import (
    ColumnDefinition41,
    StmtPrepareOk,
    parse_column_count,
    parse_column_definition41,
    parse_stmt_prepare_ok,
)

NOT_ALLOWED = int(ErrorCode.ER_NOT_ALLOWED_COMMAND)

# -- response events ---------------------------------------------------------------------------


# The events built for every response (a result set's start and end, an OK, the end of
# the response) are NamedTuples: immutable like the frozen dataclasses of the rarer ones,
# and a fraction of their construction cost on the hot path.
class ResultSetStarted(NamedTuple):
    command: int
    column_count: int
    columns: tuple[ColumnDefinition41, ...] | None  # None: omitted (MariaDB CACHE_METADATA)
    binary: bool


@dataclass(frozen=True, slots=True)
class RowsReceived:
    count: int


class ResultSetEnded(NamedTuple):
    """End of one result set; ``ok`` comes from the EOF or OK(0xFE) terminator."""

    ok: OkPacket
    rows: int

    @property
    def cursor_open(self) -> bool:
        return bool(self.ok.status_flags & _CURSOR_EXISTS) and not (
            self.ok.status_flags & _LAST_ROW_SENT
        )


class OkReceived(NamedTuple):
    ok: OkPacket


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    err: ErrPacket

    @property
    def errno(self) -> int:
        return self.err.errno

    @property
    def sqlstate(self) -> str:
        return self.err.sqlstate

    @property
    def message(self) -> bytes:
        return self.err.message


@dataclass(frozen=True, slots=True)
class LocalInfileRequested:
    filename: bytes


@dataclass(frozen=True, slots=True)
class StatementPrepared:
    ok: StmtPrepareOk
    params: tuple[ColumnDefinition41, ...]
    columns: tuple[ColumnDefinition41, ...]


@dataclass(frozen=True, slots=True)
class StatisticsReceived:
    text: bytes


@dataclass(frozen=True, slots=True)
class AuthExchange:
    """COM_CHANGE_USER: an AuthSwitchRequest (0xFE) or AuthMoreData (0x01) from the server."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class ProgressReported:
    report: ProgressReport


class ResponseComplete(NamedTuple):
    command: int
    status_flags: int | None  # of the final OK/EOF; None after ERR or without a status


ResponseEvent = (
    ResultSetStarted
    | RowsReceived
    | ResultSetEnded
    | OkReceived
    | ErrorReceived
    | LocalInfileRequested
    | StatementPrepared
    | StatisticsReceived
    | AuthExchange
    | ProgressReported
    | ResponseComplete
)


# -- response tracker --------------------------------------------------------------------------

# States of the command at the head of the queue.
(
    _FIRST,  # OK / ERR / column count / LOCAL INFILE
    _COLUMNS,  # column definitions
    _COLUMNS_EOF,  # EOF after the column definitions (classic mode)
    _ROWS,
    _INFILE,  # client is sending the file; nothing from the server
    _PREPARE_FIRST,  # COM_STMT_PREPARE_OK / ERR
    _PREPARE_PARAMS,
    _PREPARE_PARAMS_EOF,
    _PREPARE_COLUMNS,
    _PREPARE_COLUMNS_EOF,
    _FIELD_LIST,  # column definitions until EOF
    _SIMPLE,  # OK / ERR (EOF accepted for COM_SET_OPTION / COM_DEBUG)
    _STATISTICS,
    _AUTH,  # COM_CHANGE_USER: OK / ERR / auth switch / more data
    _AUTH_CLIENT,  # waiting for the client's auth reply
) = range(15)
_PREPARE_DONE = -1
_COLUMN_DEFS = 512  # parsed column definitions kept per tracker
_CACHED_COLUMN_DEF = 1024  # longer definition packets (huge names) are parsed every time
# Plain ints for the hot path: ``int & IntFlag`` dispatches to IntFlag.__rand__ and runs
# Python-level enum code (~0.5 µs per test, several per statement).
_CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)
_LAST_ROW_SENT = int(ServerStatus.LAST_ROW_SENT)
_MORE_RESULTS = int(ServerStatus.MORE_RESULTS_EXISTS)
_DEPRECATE_EOF = int(Capability.CLIENT_DEPRECATE_EOF)
_LOCAL_FILES = int(Capability.CLIENT_LOCAL_FILES)
_CLIENT_PROGRESS = int(Capability.MARIADB_CLIENT_PROGRESS)

_NO_RESPONSE = frozenset(
    {Command.COM_QUIT, Command.COM_STMT_CLOSE, Command.COM_STMT_SEND_LONG_DATA}
)
_EOF_REPLY = frozenset({Command.COM_SET_OPTION, Command.COM_DEBUG})
_RESULT_COMMANDS = frozenset({Command.COM_QUERY, Command.COM_STMT_EXECUTE})


@dataclass(slots=True)
class _Pending:
    command: int
    local_infile: bool
    cursor: bool


class ResponseTracker:
    """Follows server responses, one command at a time (see the module docstring)."""

    __slots__ = (
        "_column_count",
        "_column_defs",
        "_columns",
        "_current",
        "_params",
        "_prepare_ok",
        "_queue",
        "_rows",
        "_state",
        "capabilities",
        "last_status",
    )

    def __init__(self, capabilities: int) -> None:
        # Capabilities in force on this hop (decide EOF vs OK terminators, OK layout,
        # MariaDB metadata extensions).
        self.capabilities = int(capabilities)
        self.last_status = 0  # status flags of the last OK/EOF seen
        self._queue: deque[_Pending] = deque()
        self._current: _Pending | None = None
        self._state = _FIRST
        self._column_count = 0
        self._columns: list[ColumnDefinition41] = []
        self._params: list[ColumnDefinition41] = []
        self._prepare_ok: StmtPrepareOk | None = None
        self._rows = 0
        # Parsed column definitions by packet: a prepared statement's result is described
        # again on every execution, byte for byte the same (the parse is ~7 lenenc reads).
        self._column_defs: dict[bytes, ColumnDefinition41] = {}

    # -- queries -------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A command is waiting for (the rest of) its response."""
        return self._current is not None

    @property
    def complete(self) -> bool:
        return self._current is None

    @property
    def command(self) -> int | None:
        """The command whose response is being tracked."""
        return None if self._current is None else self._current.command

    @property
    def in_rows(self) -> bool:
        """Rows are expected next: collapse them with ``PacketScanner.next_row_run``."""
        return self._state == _ROWS and self._current is not None

    @property
    def awaiting_client(self) -> bool:
        """The exchange waits for client packets (LOCAL INFILE data, auth reply)."""
        return self._current is not None and self._state in (_INFILE, _AUTH_CLIENT)

    @property
    def rows_in_result(self) -> int:
        return self._rows

    # -- inputs --------------------------------------------------------------------------------

    def start(self, command: int, *, local_infile: bool = False, cursor: bool = False) -> bool:
        """Register a command sent to the server; returns False if it expects no response.

        ``local_infile``: a COM_QUERY the caller classified as LOAD DATA LOCAL (only
        then is a 0xFB reply honoured). ``cursor``: a COM_STMT_EXECUTE with a cursor flag.
        """
        if command in _NO_RESPONSE:
            return False
        if local_infile and command != Command.COM_QUERY:
            raise UsageError("local_infile applies to COM_QUERY only")
        pending = _Pending(command, local_infile, cursor)
        if self._current is None:
            self._begin(pending)
        else:
            self._queue.append(pending)
        return True

    def start_packet(self, cmd: ClientCommand, *, local_infile: bool = False) -> bool:
        """``start`` from a parsed command."""
        cursor = isinstance(cmd, StmtExecuteHeader) and cmd.opens_cursor
        return self.start(cmd.command, local_infile=local_infile, cursor=cursor)

    def rows(self, count: int) -> None:
        """Account ``count`` row packets forwarded as one run (hot path)."""
        self._rows += count

    def client_packet(self, payload: Buffer) -> None:
        """A client packet inside the exchange: LOCAL INFILE data (an empty packet ends
        the file) or an auth reply during COM_CHANGE_USER."""
        if self._current is None or self._state not in (_INFILE, _AUTH_CLIENT):
            raise PeerViolation("unexpected client packet inside a response", NOT_ALLOWED)
        if self._state == _INFILE:
            if not payload:
                self._state = _FIRST
        else:
            self._state = _AUTH

    def _column_definition(self, payload: Buffer) -> ColumnDefinition41:
        if type(payload) is not bytes or len(payload) > _CACHED_COLUMN_DEF:
            return parse_column_definition41(payload, self.capabilities)
        defs = self._column_defs
        found = defs.get(payload)
        if found is None:
            found = parse_column_definition41(payload, self.capabilities)
            if len(defs) >= _COLUMN_DEFS:
                defs.clear()  # bounded; what repeats comes back
            defs[payload] = found
        return found

    def receive(self, payload: Buffer) -> list[ResponseEvent]:
        """One logical server packet -> events."""
        current = self._current
        if current is None:
            raise malformed("server packet with no command in flight")
        if not payload:
            raise malformed("empty packet in a response")
        state = self._state
        first = payload[0]
        if state == _ROWS:
            if first == ERR_HEADER:
                return self._error(payload)
            if is_terminator(payload):
                ok = parse_terminator(payload, self.capabilities)
                out: list[ResponseEvent] = [ResultSetEnded(ok, self._rows)]
                return self._after_result(ok.status_flags, out)
            self._rows += 1
            return [RowsReceived(1)]
        if state == _FIRST:
            return self._first(payload, current)
        if state == _COLUMNS:
            if first == ERR_HEADER:
                return self._error(payload)
            self._columns.append(self._column_definition(payload))
            if len(self._columns) < self._column_count:
                return []
            if self.capabilities & _DEPRECATE_EOF:
                self._state = _ROWS
                return [self._result_set_started(current)]
            self._state = _COLUMNS_EOF
            return []
        if state == _COLUMNS_EOF:
            if first == ERR_HEADER:
                return self._error(payload)
            eof = parse_eof_packet(payload)
            self.last_status = eof.status_flags
            started = self._result_set_started(current)
            if eof.status_flags & _CURSOR_EXISTS:
                # Cursor opened: no rows now, they come through COM_STMT_FETCH.
                ok = OkPacket(
                    status_flags=eof.status_flags, warnings=eof.warnings, header=EOF_HEADER
                )
                return self._after_result(eof.status_flags, [started, ResultSetEnded(ok, 0)])
            self._state = _ROWS
            return [started]
        if state == _SIMPLE:
            return self._simple(payload, current)
        if _PREPARE_FIRST <= state <= _PREPARE_COLUMNS_EOF:
            return self._prepare(payload, state)
        if state == _FIELD_LIST:
            if first == ERR_HEADER:
                return self._error(payload)
            if is_terminator(payload):
                status = self._terminator_status(payload)
                return self._finish([], status)
            self._columns.append(parse_column_definition41(payload, self.capabilities))
            return []
        if state == _STATISTICS:
            if first == ERR_HEADER:
                return self._error(payload)
            return self._finish([StatisticsReceived(bytes(payload))], None)
        if state == _AUTH:
            if first == OK_HEADER:
                ok = parse_ok_packet(payload, self.capabilities)
                self.last_status = ok.status_flags
                return self._finish([OkReceived(ok)], ok.status_flags)
            if first == ERR_HEADER:
                return self._error(payload)
            if first in (EOF_HEADER, AUTH_MORE_DATA_HEADER):
                self._state = _AUTH_CLIENT
                return [AuthExchange(bytes(payload))]
            raise PeerViolation("unexpected packet in COM_CHANGE_USER exchange", HANDSHAKE_ERROR)
        raise malformed("server packet while the client is sending (LOCAL INFILE / auth)")

    # -- internals -----------------------------------------------------------------------------

    def _begin(self, pending: _Pending) -> None:
        self._current = pending
        self._rows = 0
        self._columns = []
        self._params = []
        self._prepare_ok = None
        cmd = pending.command
        if cmd in _RESULT_COMMANDS:
            self._state = _FIRST
        elif cmd == Command.COM_STMT_FETCH:
            self._state = _ROWS
        elif cmd == Command.COM_STMT_PREPARE:
            self._state = _PREPARE_FIRST
        elif cmd == Command.COM_FIELD_LIST:
            self._state = _FIELD_LIST
        elif cmd == Command.COM_STATISTICS:
            self._state = _STATISTICS
        elif cmd == Command.COM_CHANGE_USER:
            self._state = _AUTH
        else:
            self._state = _SIMPLE

    def _first(self, payload: Buffer, current: _Pending) -> list[ResponseEvent]:
        first = payload[0]
        if first == OK_HEADER:
            ok = parse_ok_packet(payload, self.capabilities)
            return self._after_result(ok.status_flags, [OkReceived(ok)])
        if first == ERR_HEADER:
            return self._error(payload)
        if first == LOCAL_INFILE_HEADER:
            if not (current.local_infile and self.capabilities & _LOCAL_FILES):
                # A malicious or confused server must not read client files
                # (sysown/proxysql#833, PROTOCOLS.md 3.7).
                raise PeerViolation("unsolicited LOCAL INFILE request", NOT_ALLOWED)
            self._state = _INFILE
            return [LocalInfileRequested(parse_local_infile_request(payload))]
        if first == EOF_HEADER:
            raise malformed("EOF where a response was expected")
        count, follows = parse_column_count(payload, self.capabilities)
        self._column_count = count
        self._columns = []
        self._rows = 0
        if follows:
            self._state = _COLUMNS
            return []
        if self.capabilities & _DEPRECATE_EOF:
            self._state = _ROWS
            return [self._result_set_started(current, omitted=True)]
        self._state = _COLUMNS_EOF
        return []

    def _result_set_started(self, current: _Pending, *, omitted: bool = False) -> ResultSetStarted:
        omitted = omitted or not self._columns
        return ResultSetStarted(
            current.command,
            self._column_count,
            None if omitted else tuple(self._columns),
            current.command == Command.COM_STMT_EXECUTE,
        )

    def _simple(self, payload: Buffer, current: _Pending) -> list[ResponseEvent]:
        first = payload[0]
        if first == OK_HEADER:
            ok = parse_ok_packet(payload, self.capabilities)
            self.last_status = ok.status_flags
            return self._finish([OkReceived(ok)], ok.status_flags)
        if first == ERR_HEADER:
            return self._error(payload)
        if first == EOF_HEADER and current.command in _EOF_REPLY and is_terminator(payload):
            return self._finish([], self._terminator_status(payload))
        raise malformed(f"unexpected reply 0x{first:02x} to command 0x{current.command:02x}")

    def _terminator_status(self, payload: Buffer) -> int:
        status = parse_terminator(payload, self.capabilities).status_flags
        self.last_status = status
        return status

    def _prepare(self, payload: Buffer, state: int) -> list[ResponseEvent]:
        first = payload[0]
        if first == ERR_HEADER:
            return self._error(payload)
        deprecate_eof = bool(self.capabilities & _DEPRECATE_EOF)
        if state == _PREPARE_FIRST:
            ok = parse_stmt_prepare_ok(payload)
            self._prepare_ok = ok
            self._params = []
            self._columns = []
            return self._prepare_next()
        if state in (_PREPARE_PARAMS_EOF, _PREPARE_COLUMNS_EOF):
            parse_eof_packet(payload)
            if state == _PREPARE_PARAMS_EOF:
                self._state = _PREPARE_COLUMNS
            else:
                self._state = _PREPARE_DONE
            return self._prepare_next()
        col = parse_column_definition41(payload, self.capabilities)
        ok_ = self._prepare_ok
        assert ok_ is not None
        if state == _PREPARE_PARAMS:
            self._params.append(col)
            if len(self._params) == ok_.num_params:
                self._state = _PREPARE_COLUMNS if deprecate_eof else _PREPARE_PARAMS_EOF
                return self._prepare_next() if deprecate_eof else []
            return []
        self._columns.append(col)
        if len(self._columns) == ok_.num_columns:
            self._state = _PREPARE_DONE if deprecate_eof else _PREPARE_COLUMNS_EOF
            return self._prepare_next() if deprecate_eof else []
        return []

    def _prepare_next(self) -> list[ResponseEvent]:
        """Advance past empty sections; finish when params and columns are done."""
        ok = self._prepare_ok
        assert ok is not None
        if self._state == _PREPARE_FIRST:
            self._state = _PREPARE_PARAMS
        if self._state == _PREPARE_PARAMS and ok.num_params == 0:
            self._state = _PREPARE_COLUMNS
        if self._state == _PREPARE_COLUMNS and ok.num_columns == 0:
            self._state = _PREPARE_DONE
        if self._state == _PREPARE_DONE:
            event = StatementPrepared(ok, tuple(self._params), tuple(self._columns))
            return self._finish([event], None)
        return []

    def _error(self, payload: Buffer) -> list[ResponseEvent]:
        if self.capabilities & _CLIENT_PROGRESS and is_progress_report(payload):
            return [ProgressReported(parse_progress_report(payload))]
        return self._finish([ErrorReceived(parse_err_packet(payload))], None)

    def _after_result(self, status: int, out: list[ResponseEvent]) -> list[ResponseEvent]:
        self.last_status = status
        if status & _MORE_RESULTS:
            self._state = _FIRST
            self._columns = []
            self._column_count = 0
            self._rows = 0
            return out
        return self._finish(out, status)

    def _finish(self, out: list[ResponseEvent], status: int | None) -> list[ResponseEvent]:
        current = self._current
        assert current is not None
        out.append(ResponseComplete(current.command, status))
        self._current = None
        self._state = _FIRST
        if self._queue:
            self._begin(self._queue.popleft())
        return out
