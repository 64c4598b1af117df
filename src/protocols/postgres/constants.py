"""PostgreSQL v3 protocol constants.

Spec: PostgreSQL manual, "Frontend/Backend Protocol", sections "Message Flow" and
"Message Formats" (protocol-flow.html, protocol-message-formats.html).
"""

from __future__ import annotations

from enum import IntEnum

# Untyped first-packet codes (Message Formats: StartupMessage, SSLRequest, ...).
PROTOCOL_3_0 = 196608  # 3 << 16
PROTOCOL_3_2 = 196610  # 3 << 16 | 2 (PostgreSQL 18)
PROTOCOL_2_0 = 131072
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

# A TLS record starts with content type 22 (handshake): PG17 "direct SSL".
TLS_HANDSHAKE_BYTE = 0x16

HEADER_SIZE = 5  # type byte + int32 length (length counts itself, not the type)


class Frontend(IntEnum):
    """Typed messages sent by the client (Message Formats)."""

    QUERY = ord("Q")
    PARSE = ord("P")
    BIND = ord("B")
    DESCRIBE = ord("D")
    EXECUTE = ord("E")
    SYNC = ord("S")
    FLUSH = ord("H")
    CLOSE = ord("C")
    TERMINATE = ord("X")
    FUNCTION_CALL = ord("F")
    COPY_DATA = ord("d")
    COPY_DONE = ord("c")
    COPY_FAIL = ord("f")
    PASSWORD = ord("p")  # also SASLInitialResponse / SASLResponse / GSSResponse


class Backend(IntEnum):
    """Typed messages sent by the server (Message Formats)."""

    AUTHENTICATION = ord("R")
    BACKEND_KEY_DATA = ord("K")
    PARAMETER_STATUS = ord("S")
    READY_FOR_QUERY = ord("Z")
    ROW_DESCRIPTION = ord("T")
    DATA_ROW = ord("D")
    COMMAND_COMPLETE = ord("C")
    ERROR_RESPONSE = ord("E")
    NOTICE_RESPONSE = ord("N")
    NOTIFICATION_RESPONSE = ord("A")
    EMPTY_QUERY_RESPONSE = ord("I")
    PARSE_COMPLETE = ord("1")
    BIND_COMPLETE = ord("2")
    CLOSE_COMPLETE = ord("3")
    PARAMETER_DESCRIPTION = ord("t")
    NO_DATA = ord("n")
    PORTAL_SUSPENDED = ord("s")
    COPY_IN_RESPONSE = ord("G")
    COPY_OUT_RESPONSE = ord("H")
    COPY_BOTH_RESPONSE = ord("W")
    COPY_DATA = ord("d")
    COPY_DONE = ord("c")
    FUNCTION_CALL_RESPONSE = ord("V")
    NEGOTIATE_PROTOCOL_VERSION = ord("v")


class AuthRequest(IntEnum):
    """Int32 code inside an Authentication ('R') message."""

    OK = 0
    KERBEROS_V5 = 2
    CLEARTEXT_PASSWORD = 3
    MD5_PASSWORD = 5
    GSS = 7
    GSS_CONTINUE = 8
    SSPI = 9
    SASL = 10
    SASL_CONTINUE = 11
    SASL_FINAL = 12


class TransactionStatus(IntEnum):
    """ReadyForQuery status byte."""

    IDLE = ord("I")
    IN_TRANSACTION = ord("T")
    FAILED = ord("E")


class SqlState:
    """SQLSTATE codes the gateway itself emits (Appendix A, "Error Codes")."""

    PROTOCOL_VIOLATION = "08P01"
    CONNECTION_FAILURE = "08006"
    CONNECTION_EXCEPTION = "08000"
    FEATURE_NOT_SUPPORTED = "0A000"
    INVALID_AUTHORIZATION = "28000"
    INVALID_PASSWORD = "28P01"
    INSUFFICIENT_PRIVILEGE = "42501"
    TOO_MANY_CONNECTIONS = "53300"
    PROGRAM_LIMIT_EXCEEDED = "54000"
    QUERY_CANCELED = "57014"
    ADMIN_SHUTDOWN = "57P01"
    CANNOT_CONNECT_NOW = "57P03"
    INTERNAL_ERROR = "XX000"
