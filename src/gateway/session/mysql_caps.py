"""Which MySQL capability flags the gateway offers clients and mirrors upstream
(PROTOCOLS.md 3.3: hop-by-hop vs end-to-end flags)."""

from __future__ import annotations

from protocols.mysql.constants import Capability

from .mysql_upstream import ServerInfo

C = Capability
# Capabilities the gateway implements, offered to clients when the target has them
# too (PROTOCOLS.md 3.3). Not offered: compression, QUERY_ATTRIBUTES (MariaDB lacks
# it), OPTIONAL_RESULTSET_METADATA, MFA, expired-password sandbox mode, and the
# MariaDB COM_MULTI / STMT_BULK_OPERATIONS / CACHE_METADATA / BULK_UNIT_RESULTS.
IMPLEMENTED_CAPABILITIES = int(
    C.CLIENT_LONG_PASSWORD
    | C.CLIENT_FOUND_ROWS
    | C.CLIENT_LONG_FLAG
    | C.CLIENT_CONNECT_WITH_DB
    | C.CLIENT_NO_SCHEMA
    | C.CLIENT_ODBC
    | C.CLIENT_LOCAL_FILES
    | C.CLIENT_IGNORE_SPACE
    | C.CLIENT_PROTOCOL_41
    | C.CLIENT_INTERACTIVE
    | C.CLIENT_SSL
    | C.CLIENT_IGNORE_SIGPIPE
    | C.CLIENT_TRANSACTIONS
    | C.CLIENT_SECURE_CONNECTION
    | C.CLIENT_MULTI_STATEMENTS
    | C.CLIENT_MULTI_RESULTS
    | C.CLIENT_PS_MULTI_RESULTS
    | C.CLIENT_PLUGIN_AUTH
    | C.CLIENT_CONNECT_ATTRS
    | C.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | C.CLIENT_SESSION_TRACK
    | C.CLIENT_DEPRECATE_EOF
    | C.MARIADB_CLIENT_PROGRESS
    | C.MARIADB_CLIENT_EXTENDED_METADATA
)
# Flags that change packet formats or semantics end to end: both hops must agree.
END_TO_END = int(
    C.CLIENT_FOUND_ROWS
    | C.CLIENT_LONG_FLAG
    | C.CLIENT_NO_SCHEMA
    | C.CLIENT_LOCAL_FILES
    | C.CLIENT_IGNORE_SPACE
    | C.CLIENT_PROTOCOL_41
    | C.CLIENT_INTERACTIVE
    | C.CLIENT_MULTI_STATEMENTS
    | C.CLIENT_MULTI_RESULTS
    | C.CLIENT_PS_MULTI_RESULTS
    | C.CLIENT_SESSION_TRACK
    | C.CLIENT_DEPRECATE_EOF
    | C.MARIADB_CLIENT_PROGRESS
    | C.MARIADB_CLIENT_EXTENDED_METADATA
)
REQUIRED_FROM_CLIENT = int(C.CLIENT_PROTOCOL_41 | C.CLIENT_PLUGIN_AUTH | C.CLIENT_SECURE_CONNECTION)


def advertised_capabilities(info: ServerInfo) -> int:
    """What the gateway offers a client in front of this target."""
    caps = info.capabilities & IMPLEMENTED_CAPABILITIES
    caps |= C.CLIENT_SSL | REQUIRED_FROM_CLIENT  # the gateway's own hop
    if info.capabilities & C.CLIENT_LONG_PASSWORD:
        caps &= ~(0xFFFFFFFF << 32)  # a MySQL target: no MariaDB extended capabilities
    return int(caps)
