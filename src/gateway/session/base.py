"""What every protocol's session driver offers the runtime.

The runtime (identity, authorization, recording, cancel registry, logs) only
talks to sessions through this interface, so PostgreSQL and MySQL share one
implementation of each feature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..audit import SessionAudit
    from ..identity import Identity
    from ..net.leg import Leg
    from ..runtime import TargetRuntime


class GatewaySession(Protocol):
    session_id: str
    target: TargetRuntime
    client: Leg
    peer: str
    started: float
    identity_subject: str | None
    end_reason: str
    identity: Identity | None  # set once the token is verified
    # The runtime's configuration generation when the session's masks, policy and limits
    # were chosen (after the token was verified); None before.
    policy_generation: int | None

    @property
    def closing(self) -> bool: ...

    audit: SessionAudit | None  # set at login, before the limit control is built

    def cancel_query(self) -> None: ...

    def shutdown(self, reason: str) -> None: ...

    def kill(self, message: str, end_reason: str) -> None:
        """An administrator ended the session (kill switch, revocation): the client is
        told ``message`` with the protocol's error, the running statement is stopped
        upstream, both connections close and the recording ends with ``end_reason``."""
        ...

    def live_info(self) -> dict[str, object]:
        """statements, rows, bytes (to the client) and current_statement, for the admin API."""
        ...

    def summary(self) -> dict[str, object]:
        """Protocol-specific numbers for the session start/end log lines."""
        ...
