"""Errors raised by the codecs.

``PeerViolation``: the other side broke the protocol. It carries the code the
gateway should answer with (a SQLSTATE for PostgreSQL, an errno for MySQL) so
the driver can reply in the protocol's own terms before closing. After a
framing violation the connection is terminal: we never try to resynchronise.

``UsageError``: we called the API wrongly (a bug on our side, never the peer's).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class for codec errors."""


class PeerViolation(ProtocolError):
    def __init__(self, message: str, code: str | int = "08P01") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class MessageTooLarge(PeerViolation):
    """A declared message length exceeds the configured maximum.

    Raised from the header alone, before any of the body is buffered.
    """

    def __init__(self, length: int, limit: int, code: str | int = "08P01") -> None:
        super().__init__(f"message of {length} bytes exceeds the limit of {limit} bytes", code)
        self.length = length
        self.limit = limit


class UsageError(ProtocolError):
    pass
