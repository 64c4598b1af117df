from __future__ import annotations


class LoginRefused(Exception):
    """A login ends with this SQLSTATE and client-facing message.

    ``log_detail`` is for the gateway's log only: it may say which check failed,
    while the client learns nothing that helps an attacker.
    """

    def __init__(self, sqlstate: str, message: str, log_detail: str) -> None:
        super().__init__(log_detail)
        self.sqlstate = sqlstate
        self.message = message
        self.log_detail = log_detail


class AccessRevoked(LoginRefused):
    """The identity is revoked (docs/operations.md): refused with a clear message."""

    def __init__(self, log_detail: str) -> None:
        super().__init__("28000", "access revoked by an administrator", log_detail)
