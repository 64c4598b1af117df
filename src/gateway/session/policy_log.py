"""The log line for a statement the policy refused, shared by both protocol drivers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..policy import Decision

log = logging.getLogger("gateway.policy")


def log_refusal(session_id: str, decision: Decision, path: str) -> None:
    # The statement text is not logged: literals in it may be sensitive. The
    # recording has it; the log says which session, which rule and which classes.
    log.info(
        "statement refused",
        extra={
            "session_id": session_id,
            "action": decision.action,
            "rule": decision.rule,
            "classes": sorted(decision.classes),
            "path": path,
        },
    )
