"""What every protocol's session driver offers the runtime.

The runtime (identity, authorization, recording, cancel registry, logs) only
talks to sessions through this interface, so PostgreSQL and MySQL share one
implementation of each feature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..audit import SessionAudit
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
    audit: SessionAudit | None  # set at login, before the limit control is built

    def cancel_query(self) -> None: ...

    def shutdown(self, reason: str) -> None: ...

    def summary(self) -> dict[str, object]:
        """Protocol-specific numbers for the session start/end log lines."""
        ...
