"""MySQL / MariaDB client/server protocol constants.

Spec: MySQL dev docs ``page_protocol_basics`` (capability flags, status flags,
column types) and the ``page_protocol_com_*`` pages; MariaDB knowledge base
"clientserver-protocol" (extended capabilities, extended metadata).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

HEADER_SIZE = 4  # 3-byte little-endian payload length + 1-byte sequence id
# A physical packet of this length is continued in the next one (page_protocol_basic_packets).
MAX_PACKET_PAYLOAD = 0xFFFFFF

# First payload byte of server replies (page_protocol_basic_response_packets).
OK_HEADER = 0x00
EOF_HEADER = 0xFE
ERR_HEADER = 0xFF
LOCAL_INFILE_HEADER = 0xFB
AUTH_MORE_DATA_HEADER = 0x01  # page_protocol_connection_phase_packets_protocol_auth_more_data
AUTH_SWITCH_HEADER = 0xFE  # page_protocol_connection_phase_packets_protocol_auth_switch_request
NULL_VALUE = 0xFB  # NULL in a text row (page_protocol_com_query_response_text_resultset_row)

PROTOCOL_VERSION_10 = 10
SCRAMBLE_LENGTH = 20
# "MariaDB progress report": an ERR packet with this errno inside a response
# (MariaDB KB "ERR_Packet", only with MARIADB_CLIENT_PROGRESS).
PROGRESS_REPORT_ERRNO = 0xFFFF


class Capability(IntFlag):
    """Capability flags (page_protocol_basic_capabilities; MariaDB KB "Connection").

    The low 32 bits are the MySQL flags; bits 32..63 are MariaDB's extended
    capabilities, sent in the last 4 reserved bytes of HandshakeV10 and of the
    HandshakeResponse41 filler, only when bit 0 (CLIENT_MYSQL) is cleared.
    """

    CLIENT_LONG_PASSWORD = 1 << 0  # MariaDB: CLIENT_MYSQL
    CLIENT_FOUND_ROWS = 1 << 1
    CLIENT_LONG_FLAG = 1 << 2
    CLIENT_CONNECT_WITH_DB = 1 << 3
    CLIENT_NO_SCHEMA = 1 << 4
    CLIENT_COMPRESS = 1 << 5
    CLIENT_ODBC = 1 << 6
    CLIENT_LOCAL_FILES = 1 << 7
    CLIENT_IGNORE_SPACE = 1 << 8
    CLIENT_PROTOCOL_41 = 1 << 9
    CLIENT_INTERACTIVE = 1 << 10
    CLIENT_SSL = 1 << 11
    CLIENT_IGNORE_SIGPIPE = 1 << 12
    CLIENT_TRANSACTIONS = 1 << 13
    CLIENT_RESERVED = 1 << 14
    CLIENT_SECURE_CONNECTION = 1 << 15  # a.k.a. CLIENT_RESERVED2
    CLIENT_MULTI_STATEMENTS = 1 << 16
    CLIENT_MULTI_RESULTS = 1 << 17
    CLIENT_PS_MULTI_RESULTS = 1 << 18
    CLIENT_PLUGIN_AUTH = 1 << 19
    CLIENT_CONNECT_ATTRS = 1 << 20
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    CLIENT_SESSION_TRACK = 1 << 23
    CLIENT_DEPRECATE_EOF = 1 << 24
    CLIENT_OPTIONAL_RESULTSET_METADATA = 1 << 25
    CLIENT_ZSTD_COMPRESSION_ALGORITHM = 1 << 26
    CLIENT_QUERY_ATTRIBUTES = 1 << 27
    MULTI_FACTOR_AUTHENTICATION = 1 << 28
    CLIENT_CAPABILITY_EXTENSION = 1 << 29
    CLIENT_SSL_VERIFY_SERVER_CERT = 1 << 30
    CLIENT_REMEMBER_OPTIONS = 1 << 31
    # MariaDB extended capabilities (MariaDB KB "Connection", "Capabilities").
    MARIADB_CLIENT_PROGRESS = 1 << 32
    MARIADB_CLIENT_COM_MULTI = 1 << 33
    MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1 << 34
    MARIADB_CLIENT_EXTENDED_METADATA = 1 << 35
    MARIADB_CLIENT_CACHE_METADATA = 1 << 36
    MARIADB_CLIENT_BULK_UNIT_RESULTS = 1 << 37


CLIENT_MYSQL = Capability.CLIENT_LONG_PASSWORD
MARIADB_CAPABILITIES_MASK = 0xFFFFFFFF << 32


class ServerStatus(IntFlag):
    """Server status flags in OK/EOF packets (page_protocol_basic_ok_packet, SERVER_STATUS_*)."""

    IN_TRANS = 0x0001
    AUTOCOMMIT = 0x0002
    MORE_RESULTS_EXISTS = 0x0008
    QUERY_NO_GOOD_INDEX_USED = 0x0010
    QUERY_NO_INDEX_USED = 0x0020
    CURSOR_EXISTS = 0x0040
    LAST_ROW_SENT = 0x0080
    DB_DROPPED = 0x0100
    NO_BACKSLASH_ESCAPES = 0x0200
    METADATA_CHANGED = 0x0400
    QUERY_WAS_SLOW = 0x0800
    PS_OUT_PARAMS = 0x1000
    IN_TRANS_READONLY = 0x2000
    SESSION_STATE_CHANGED = 0x4000


class Command(IntEnum):
    """Command bytes (page_protocol_command_phase, enum_server_command; MariaDB KB)."""

    COM_SLEEP = 0x00
    COM_QUIT = 0x01
    COM_INIT_DB = 0x02
    COM_QUERY = 0x03
    COM_FIELD_LIST = 0x04
    COM_CREATE_DB = 0x05
    COM_DROP_DB = 0x06
    COM_REFRESH = 0x07
    COM_SHUTDOWN = 0x08
    COM_STATISTICS = 0x09
    COM_PROCESS_INFO = 0x0A
    COM_CONNECT = 0x0B
    COM_PROCESS_KILL = 0x0C
    COM_DEBUG = 0x0D
    COM_PING = 0x0E
    COM_TIME = 0x0F
    COM_DELAYED_INSERT = 0x10
    COM_CHANGE_USER = 0x11
    COM_BINLOG_DUMP = 0x12
    COM_TABLE_DUMP = 0x13
    COM_CONNECT_OUT = 0x14
    COM_REGISTER_SLAVE = 0x15
    COM_STMT_PREPARE = 0x16
    COM_STMT_EXECUTE = 0x17
    COM_STMT_SEND_LONG_DATA = 0x18
    COM_STMT_CLOSE = 0x19
    COM_STMT_RESET = 0x1A
    COM_SET_OPTION = 0x1B
    COM_STMT_FETCH = 0x1C
    COM_DAEMON = 0x1D
    COM_BINLOG_DUMP_GTID = 0x1E
    COM_RESET_CONNECTION = 0x1F
    COM_CLONE = 0x20
    COM_STMT_BULK_EXECUTE = 0xFA  # MariaDB only


# Replication, clone and server-administration commands a gateway refuses
# (PROTOCOLS.md 3.5): they bypass statement-level policy entirely.
REFUSED_COMMANDS = frozenset(
    {
        # FLUSH / RESET MASTER / RESET SLAVE with no statement text to decide (send
        # FLUSH as a statement: the policy decides it as admin).
        Command.COM_REFRESH,
        Command.COM_DEBUG,
        Command.COM_BINLOG_DUMP,
        Command.COM_BINLOG_DUMP_GTID,
        Command.COM_REGISTER_SLAVE,
        Command.COM_TABLE_DUMP,
        Command.COM_CLONE,
        Command.COM_SHUTDOWN,
        Command.COM_CONNECT,
        Command.COM_CONNECT_OUT,
        Command.COM_DAEMON,
        Command.COM_DELAYED_INSERT,
        Command.COM_SLEEP,
        Command.COM_TIME,
        Command.COM_CREATE_DB,
        Command.COM_DROP_DB,
        Command.COM_PROCESS_INFO,
    }
)


class ColumnType(IntEnum):
    """Column / parameter types (page_protocol_com_query_response_text_resultset_column_definition,
    enum_field_types)."""

    MYSQL_TYPE_DECIMAL = 0x00
    MYSQL_TYPE_TINY = 0x01
    MYSQL_TYPE_SHORT = 0x02
    MYSQL_TYPE_LONG = 0x03
    MYSQL_TYPE_FLOAT = 0x04
    MYSQL_TYPE_DOUBLE = 0x05
    MYSQL_TYPE_NULL = 0x06
    MYSQL_TYPE_TIMESTAMP = 0x07
    MYSQL_TYPE_LONGLONG = 0x08
    MYSQL_TYPE_INT24 = 0x09
    MYSQL_TYPE_DATE = 0x0A
    MYSQL_TYPE_TIME = 0x0B
    MYSQL_TYPE_DATETIME = 0x0C
    MYSQL_TYPE_YEAR = 0x0D
    MYSQL_TYPE_NEWDATE = 0x0E
    MYSQL_TYPE_VARCHAR = 0x0F
    MYSQL_TYPE_BIT = 0x10
    MYSQL_TYPE_TIMESTAMP2 = 0x11
    MYSQL_TYPE_DATETIME2 = 0x12
    MYSQL_TYPE_TIME2 = 0x13
    MYSQL_TYPE_TYPED_ARRAY = 0x14
    MYSQL_TYPE_VECTOR = 0xF2
    MYSQL_TYPE_INVALID = 0xF3
    MYSQL_TYPE_BOOL = 0xF4
    MYSQL_TYPE_JSON = 0xF5
    MYSQL_TYPE_NEWDECIMAL = 0xF6
    MYSQL_TYPE_ENUM = 0xF7
    MYSQL_TYPE_SET = 0xF8
    MYSQL_TYPE_TINY_BLOB = 0xF9
    MYSQL_TYPE_MEDIUM_BLOB = 0xFA
    MYSQL_TYPE_LONG_BLOB = 0xFB
    MYSQL_TYPE_BLOB = 0xFC
    MYSQL_TYPE_VAR_STRING = 0xFD
    MYSQL_TYPE_STRING = 0xFE
    MYSQL_TYPE_GEOMETRY = 0xFF


class ColumnFlag(IntFlag):
    """Column definition flags
    (page_protocol_com_query_response_text_resultset_column_definition)."""

    NOT_NULL = 0x0001
    PRI_KEY = 0x0002
    UNIQUE_KEY = 0x0004
    MULTIPLE_KEY = 0x0008
    BLOB = 0x0010
    UNSIGNED = 0x0020
    ZEROFILL = 0x0040
    BINARY = 0x0080
    ENUM = 0x0100
    AUTO_INCREMENT = 0x0200
    TIMESTAMP = 0x0400
    SET = 0x0800
    NO_DEFAULT_VALUE = 0x1000
    ON_UPDATE_NOW = 0x2000
    NUM = 0x8000


# COM_STMT_EXECUTE parameter type byte 2: the "unsigned" flag (page_protocol_com_stmt_execute).
PARAM_UNSIGNED_FLAG = 0x80


class CursorType(IntFlag):
    """COM_STMT_EXECUTE flags byte (page_protocol_com_stmt_execute, enum_cursor_type)."""

    NO_CURSOR = 0x00
    READ_ONLY = 0x01
    FOR_UPDATE = 0x02
    SCROLLABLE = 0x04
    PARAMETER_COUNT_AVAILABLE = 0x08  # MySQL 8 with CLIENT_QUERY_ATTRIBUTES


class Charset(IntEnum):
    """Collation ids used in handshakes and column definitions (information_schema.COLLATIONS)."""

    BIG5_CHINESE_CI = 1
    LATIN1_SWEDISH_CI = 8
    ASCII_GENERAL_CI = 11
    UTF8MB3_GENERAL_CI = 33
    UTF8MB4_GENERAL_CI = 45
    UTF8MB4_BIN = 46
    LATIN1_BIN = 47
    BINARY = 63
    UTF8MB3_BIN = 83
    UTF8MB4_UNICODE_CI = 224
    UTF8MB4_0900_AI_CI = 255  # MySQL 8 default


class SetOption(IntEnum):
    """COM_SET_OPTION argument (page_protocol_com_set_option, enum_mysql_set_option)."""

    MYSQL_OPTION_MULTI_STATEMENTS_ON = 0
    MYSQL_OPTION_MULTI_STATEMENTS_OFF = 1


class SessionTrackType(IntEnum):
    """Session state change types in OK packets (page_protocol_basic_ok_packet,
    enum_session_state_type)."""

    SESSION_TRACK_SYSTEM_VARIABLES = 0x00
    SESSION_TRACK_SCHEMA = 0x01
    SESSION_TRACK_STATE_CHANGE = 0x02
    SESSION_TRACK_GTIDS = 0x03
    SESSION_TRACK_TRANSACTION_CHARACTERISTICS = 0x04
    SESSION_TRACK_TRANSACTION_STATE = 0x05


class ExtendedMetadataKey(IntEnum):
    """MariaDB extended column metadata entry keys (MariaDB KB "Result Set Packets")."""

    TYPE_NAME = 0x00  # e.g. b"json", b"uuid", b"inet6", b"point"
    FORMAT_NAME = 0x01  # e.g. b"json"


class ErrorCode(IntEnum):
    """Server error numbers the gateway emits or checks (MySQL "Server Error Message Reference")."""

    ER_CON_COUNT_ERROR = 1040
    ER_HANDSHAKE_ERROR = 1043
    ER_DBACCESS_DENIED_ERROR = 1044
    ER_ACCESS_DENIED_ERROR = 1045
    ER_NO_DB_ERROR = 1046
    ER_UNKNOWN_COM_ERROR = 1047
    ER_BAD_DB_ERROR = 1049
    ER_PARSE_ERROR = 1064
    ER_QUERY_INTERRUPTED = 1317
    ER_NET_PACKET_TOO_LARGE = 1153
    ER_NET_READ_ERROR_FROM_PIPE = 1154
    ER_NET_FCNTL_ERROR = 1155
    ER_NET_PACKETS_OUT_OF_ORDER = 1156
    ER_NET_UNCOMPRESS_ERROR = 1157
    ER_NET_READ_ERROR = 1158
    ER_NET_READ_INTERRUPTED = 1159
    ER_NET_ERROR_ON_WRITE = 1160
    ER_NET_WRITE_INTERRUPTED = 1161
    ER_NOT_SUPPORTED_YET = 1235
    ER_NOT_ALLOWED_COMMAND = 1148
    ER_WRONG_ARGUMENTS = 1210
    ER_TABLEACCESS_DENIED_ERROR = 1142
    ER_SPECIFIC_ACCESS_DENIED_ERROR = 1227
    ER_NOT_SUPPORTED_AUTH_MODE = 1251
    ER_UNKNOWN_STMT_HANDLER = 1243
    ER_MALFORMED_PACKET = 1835
    ER_SECURE_TRANSPORT_REQUIRED = 3159
    ER_UNKNOWN_ERROR = 1105


# Auth plugin names (page_protocol_connection_phase_authentication_methods).
MYSQL_NATIVE_PASSWORD = b"mysql_native_password"
CACHING_SHA2_PASSWORD = b"caching_sha2_password"
MYSQL_CLEAR_PASSWORD = b"mysql_clear_password"
SHA256_PASSWORD = b"sha256_password"
CLIENT_ED25519 = b"client_ed25519"

# caching_sha2_password AuthMoreData status bytes (page_caching_sha2_authentication_exchanges).
CACHING_SHA2_REQUEST_PUBLIC_KEY = 0x02
CACHING_SHA2_FAST_AUTH_SUCCESS = 0x03
CACHING_SHA2_PERFORM_FULL_AUTHENTICATION = 0x04
