"""Command phase, client side: command packets and prepared-statement bookkeeping.

Spec: page_protocol_command_phase and the page_protocol_com_* pages; MariaDB KB
"COM_STMT_EXECUTE". The server side of the command phase (where each response
ends) is ``tracker.ResponseTracker``.

* ``parse_command`` parses the logical payload of a client command; COM_QUERY is
  plain SQL because CLIENT_QUERY_ATTRIBUTES is never negotiated; an unknown command
  byte is ``PeerViolation`` errno 1047.
* ``StatementRegistry`` remembers, per upstream connection, what a COM_STMT_EXECUTE
  needs to be parsed: the parameter count, the types bound by the previous execute
  (``new_params_bound_flag = 0`` reuses them, sysown/proxysql#3585) and which
  parameters were sent with COM_STMT_SEND_LONG_DATA (absent from the execute packet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import PeerViolation, UsageError
from .constants import (
    Capability,
    Command,
    CursorType,
    ErrorCode,
)
from .packets import (
    Buffer,
    build_lenenc_int,
    build_lenenc_string,
    malformed,
    read_fixed_string,
    read_lenenc_int,
    read_lenenc_string,
    read_nul_string,
    read_uint1,
    read_uint2,
    read_uint4,
)
from .resultset import (
    ColumnDefinition41,
    StmtExecute,
    StmtPrepareOk,
    parse_com_stmt_execute,
    parse_stmt_execute_header,
)

UNKNOWN_COMMAND = int(ErrorCode.ER_UNKNOWN_COM_ERROR)
LAST_PREPARED_STATEMENT = 0xFFFFFFFF  # MariaDB: "the statement just prepared"

# -- client commands ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    command: ClassVar[int] = Command.COM_QUERY
    sql: bytes


@dataclass(frozen=True, slots=True)
class InitDb:
    command: ClassVar[int] = Command.COM_INIT_DB
    schema: bytes


@dataclass(frozen=True, slots=True)
class FieldList:
    command: ClassVar[int] = Command.COM_FIELD_LIST
    table: bytes
    wildcard: bytes


@dataclass(frozen=True, slots=True)
class ProcessKill:
    command: ClassVar[int] = Command.COM_PROCESS_KILL
    connection_id: int


@dataclass(frozen=True, slots=True)
class SetOption:
    command: ClassVar[int] = Command.COM_SET_OPTION
    option: int  # constants.SetOption


@dataclass(frozen=True, slots=True)
class Refresh:
    command: ClassVar[int] = Command.COM_REFRESH
    subcommand: int


@dataclass(frozen=True, slots=True)
class ChangeUser:
    command: ClassVar[int] = Command.COM_CHANGE_USER
    username: bytes
    auth_response: bytes
    database: bytes
    charset: int | None = None
    auth_plugin_name: bytes | None = None
    connect_attrs: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class StmtPrepare:
    command: ClassVar[int] = Command.COM_STMT_PREPARE
    sql: bytes


@dataclass(frozen=True, slots=True)
class StmtExecuteHeader:
    """COM_STMT_EXECUTE up to the parameters; ``StatementRegistry.execute`` parses the rest."""

    command: ClassVar[int] = Command.COM_STMT_EXECUTE
    statement_id: int
    flags: int
    iteration_count: int

    @property
    def opens_cursor(self) -> bool:
        return bool(self.flags & (CursorType.READ_ONLY | CursorType.FOR_UPDATE))


@dataclass(frozen=True, slots=True)
class StmtSendLongData:
    command: ClassVar[int] = Command.COM_STMT_SEND_LONG_DATA
    statement_id: int
    param_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StmtClose:
    command: ClassVar[int] = Command.COM_STMT_CLOSE
    statement_id: int


@dataclass(frozen=True, slots=True)
class StmtReset:
    command: ClassVar[int] = Command.COM_STMT_RESET
    statement_id: int


@dataclass(frozen=True, slots=True)
class StmtFetch:
    command: ClassVar[int] = Command.COM_STMT_FETCH
    statement_id: int
    num_rows: int


@dataclass(frozen=True, slots=True)
class SimpleCommand:
    """A command without arguments: COM_QUIT, COM_PING, COM_STATISTICS, COM_DEBUG,
    COM_RESET_CONNECTION, COM_PROCESS_INFO ..."""

    command: int


@dataclass(frozen=True, slots=True)
class RawCommand:
    """A known command the codec does not parse (replication, COM_STMT_BULK_EXECUTE ...)."""

    command: int
    body: bytes


ClientCommand = (
    Query
    | InitDb
    | FieldList
    | ProcessKill
    | SetOption
    | Refresh
    | ChangeUser
    | StmtPrepare
    | StmtExecuteHeader
    | StmtSendLongData
    | StmtClose
    | StmtReset
    | StmtFetch
    | SimpleCommand
    | RawCommand
)

_NO_ARGUMENTS = frozenset(
    {
        Command.COM_QUIT,
        Command.COM_PING,
        Command.COM_STATISTICS,
        Command.COM_DEBUG,
        Command.COM_RESET_CONNECTION,
        Command.COM_PROCESS_INFO,
        Command.COM_TIME,
        Command.COM_SLEEP,
        Command.COM_CONNECT,
        Command.COM_DELAYED_INSERT,
        Command.COM_DAEMON,
    }
)
_KNOWN = frozenset(int(c) for c in Command)


def _parse_u32_command(payload: Buffer, name: str) -> int:
    if len(payload) != 5:
        raise malformed(f"{name} must be 5 bytes")
    return read_uint4(payload, 1)[0]


def parse_com_change_user(payload: Buffer, capabilities: int) -> ChangeUser:
    """COM_CHANGE_USER: user NUL, auth response (1-byte length with SECURE_CONNECTION,
    else NUL-terminated), schema NUL, then if more data: charset(2), plugin NUL
    (PLUGIN_AUTH), connect attrs (CONNECT_ATTRS)."""
    user, pos = read_nul_string(payload, 1)
    if capabilities & Capability.CLIENT_SECURE_CONNECTION:
        n, pos = read_uint1(payload, pos)
        auth, pos = read_fixed_string(payload, pos, n)
    else:
        auth, pos = read_nul_string(payload, pos)
    database, pos = read_nul_string(payload, pos)
    size = len(payload)
    charset: int | None = None
    plugin: bytes | None = None
    attrs: list[tuple[bytes, bytes]] = []
    if pos < size:
        charset, pos = read_uint2(payload, pos)
    if capabilities & Capability.CLIENT_PLUGIN_AUTH and pos < size:
        plugin, pos = read_nul_string(payload, pos)
    if capabilities & Capability.CLIENT_CONNECT_ATTRS and pos < size:
        total, pos = read_lenenc_int(payload, pos)
        end = pos + total
        if end > size:
            raise malformed("COM_CHANGE_USER connect attributes overrun the packet")
        while pos < end:
            key, pos = read_lenenc_string(payload, pos)
            value, pos = read_lenenc_string(payload, pos)
            attrs.append((key, value))
        if pos != end:
            raise malformed("COM_CHANGE_USER connect attributes overrun their block")
    if pos != size:
        raise malformed("trailing bytes after COM_CHANGE_USER")
    return ChangeUser(user, auth, database, charset, plugin, tuple(attrs))


def build_com_change_user(cmd: ChangeUser, capabilities: int) -> bytes:
    parts = [bytes((Command.COM_CHANGE_USER,)), cmd.username, b"\x00"]
    if capabilities & Capability.CLIENT_SECURE_CONNECTION:
        if len(cmd.auth_response) > 255:
            raise UsageError("COM_CHANGE_USER auth response longer than 255 bytes")
        parts += (bytes((len(cmd.auth_response),)), cmd.auth_response)
    else:
        parts += (cmd.auth_response, b"\x00")
    parts += (cmd.database, b"\x00")
    has_plugin = bool(capabilities & Capability.CLIENT_PLUGIN_AUTH)
    has_attrs = bool(capabilities & Capability.CLIENT_CONNECT_ATTRS)
    if cmd.charset is not None or has_plugin or has_attrs:
        parts.append((cmd.charset or 0).to_bytes(2, "little"))
    if has_plugin:
        parts += (cmd.auth_plugin_name or b"", b"\x00")
    if has_attrs:
        block = b"".join(
            build_lenenc_string(k) + build_lenenc_string(v) for k, v in cmd.connect_attrs
        )
        parts += (build_lenenc_int(len(block)), block)
    return b"".join(parts)


def parse_command(payload: Buffer, capabilities: int = 0) -> ClientCommand:
    """Parse a client command packet (the logical payload, command byte first).

    COM_QUERY is parsed as plain SQL: CLIENT_QUERY_ATTRIBUTES is never negotiated.
    An unknown command byte is ``PeerViolation`` errno 1047 (ER_UNKNOWN_COM_ERROR).
    """
    if not payload:
        raise malformed("empty command packet")
    if capabilities & Capability.CLIENT_QUERY_ATTRIBUTES:
        raise UsageError("CLIENT_QUERY_ATTRIBUTES is not supported")
    cmd = payload[0]
    if cmd not in _KNOWN:
        raise PeerViolation(f"unknown command 0x{cmd:02x}", UNKNOWN_COMMAND)
    if cmd == Command.COM_QUERY:
        return Query(bytes(payload[1:]))
    if cmd == Command.COM_STMT_EXECUTE:
        return StmtExecuteHeader(*parse_stmt_execute_header(payload))
    if cmd == Command.COM_STMT_CLOSE:
        return StmtClose(_parse_u32_command(payload, "COM_STMT_CLOSE"))
    if cmd == Command.COM_STMT_PREPARE:
        return StmtPrepare(bytes(payload[1:]))
    if cmd == Command.COM_INIT_DB:
        return InitDb(bytes(payload[1:]))
    if cmd == Command.COM_STMT_SEND_LONG_DATA:
        if len(payload) < 7:
            raise malformed("COM_STMT_SEND_LONG_DATA too short")
        stmt_id, pos = read_uint4(payload, 1)
        param_id, pos = read_uint2(payload, pos)
        return StmtSendLongData(stmt_id, param_id, bytes(payload[pos:]))
    if cmd == Command.COM_STMT_RESET:
        return StmtReset(_parse_u32_command(payload, "COM_STMT_RESET"))
    if cmd == Command.COM_STMT_FETCH:
        if len(payload) != 9:
            raise malformed("COM_STMT_FETCH must be 9 bytes")
        stmt_id, pos = read_uint4(payload, 1)
        return StmtFetch(stmt_id, read_uint4(payload, pos)[0])
    if cmd == Command.COM_PROCESS_KILL:
        return ProcessKill(_parse_u32_command(payload, "COM_PROCESS_KILL"))
    if cmd == Command.COM_SET_OPTION:
        if len(payload) != 3:
            raise malformed("COM_SET_OPTION must be 3 bytes")
        return SetOption(read_uint2(payload, 1)[0])
    if cmd == Command.COM_CHANGE_USER:
        return parse_com_change_user(payload, capabilities)
    if cmd == Command.COM_FIELD_LIST:
        table, pos = read_nul_string(payload, 1)
        return FieldList(table, bytes(payload[pos:]))
    if cmd == Command.COM_REFRESH:
        if len(payload) != 2:
            raise malformed("COM_REFRESH must be 2 bytes")
        return Refresh(payload[1])
    if cmd in _NO_ARGUMENTS:
        return SimpleCommand(cmd)
    return RawCommand(cmd, bytes(payload[1:]))


# -- prepared statements -----------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class PreparedStatement:
    statement_id: int
    sql: bytes | None
    num_params: int
    num_columns: int
    params: tuple[ColumnDefinition41, ...] = ()
    columns: tuple[ColumnDefinition41, ...] = ()
    # (type, unsigned) pairs bound by the last execute with new_params_bound_flag = 1
    param_types: tuple[tuple[int, bool], ...] | None = None
    # parameter index -> bytes received through COM_STMT_SEND_LONG_DATA since the last execute
    long_data: dict[int, int] = field(default_factory=dict)


class StatementRegistry:
    """Per-connection prepared statements: what an execute packet needs to be parsed.

    Statement ids are per upstream connection and passed through unchanged.
    """

    __slots__ = ("_last", "_preparing", "_statements")

    def __init__(self) -> None:
        self._statements: dict[int, PreparedStatement] = {}
        self._last: int | None = None
        # COM_STMT_PREPAREs sent and not answered: while there are any, "the statement
        # just prepared" (LAST_PREPARED_STATEMENT) is one whose answer has not arrived.
        self._preparing = 0

    def __len__(self) -> int:
        return len(self._statements)

    def add(
        self,
        sql: bytes | None,
        ok: StmtPrepareOk,
        params: tuple[ColumnDefinition41, ...] = (),
        columns: tuple[ColumnDefinition41, ...] = (),
    ) -> PreparedStatement:
        stmt = PreparedStatement(
            ok.statement_id, sql, ok.num_params, ok.num_columns, params, columns
        )
        self._statements[ok.statement_id] = stmt
        self._last = ok.statement_id
        self._preparing = max(0, self._preparing - 1)
        return stmt

    def prepare_sent(self) -> None:
        """A COM_STMT_PREPARE went to the server: until it answers, the last prepared
        statement is unknown (the server forgets its last one when a prepare fails)."""
        self._last = None
        self._preparing += 1

    def prepare_failed(self) -> None:
        self._preparing = max(0, self._preparing - 1)

    def get(self, statement_id: int) -> PreparedStatement | None:
        """The statement, or None if unknown. LAST_PREPARED_STATEMENT sent behind a prepare
        not answered yet (pipelined) names that new statement: unknown here, not the
        previous one."""
        if statement_id == LAST_PREPARED_STATEMENT:
            if self._preparing or self._last is None:
                return None
            statement_id = self._last
        return self._statements.get(statement_id)

    def execute(
        self, payload: Buffer, statement_id: int | None = None
    ) -> tuple[PreparedStatement, StmtExecute] | None:
        """Parse COM_STMT_EXECUTE with the statement's remembered types and long data;
        ``statement_id``: the packet's, when the caller has read its header already.

        Returns None for an unknown statement id (the server answers ERR 1243).
        """
        if statement_id is None:
            statement_id, _, _ = parse_stmt_execute_header(payload)
        stmt = self.get(statement_id)
        if stmt is None:
            return None
        ex = parse_com_stmt_execute(
            payload, stmt.num_params, stmt.param_types, stmt.long_data.keys()
        )
        stmt.param_types = ex.param_types if stmt.num_params else ()
        stmt.long_data.clear()
        return stmt, ex

    def send_long_data(self, cmd: StmtSendLongData) -> None:
        stmt = self.get(cmd.statement_id)
        if stmt is not None and cmd.param_id < stmt.num_params:
            stmt.long_data[cmd.param_id] = stmt.long_data.get(cmd.param_id, 0) + len(cmd.data)

    def reset(self, statement_id: int) -> None:
        """COM_STMT_RESET: long data is discarded; bound types stay."""
        stmt = self.get(statement_id)
        if stmt is not None:
            stmt.long_data.clear()

    def close(self, statement_id: int) -> None:
        self._statements.pop(statement_id, None)
        if self._last == statement_id:
            self._last = None

    def clear(self) -> None:
        """COM_RESET_CONNECTION / COM_CHANGE_USER drop every statement."""
        self._statements.clear()
        self._last = None
        self._preparing = 0
