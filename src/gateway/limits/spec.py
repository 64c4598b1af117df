"""The result limits that apply to one session: the policies' limits combined.

Several policies can apply to one identity on one target (docs/policy.md). Their limits
combine the way masks do, strictest first: each limit is the smallest any of them sets, the
action at a limit is the strictest any of them names (error > truncate > approval), and the
approvers of a pause are every group that any "approval" policy names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ..config import Policy

UNLIMITED: Final = 1 << 62
_STRICTNESS: Final = {"error": 0, "truncate": 1, "approval": 2}


@dataclass(frozen=True, slots=True)
class LimitSpec:
    max_rows: int | None = None
    max_bytes: int | None = None
    session_max_rows: int | None = None
    session_max_bytes: int | None = None
    window_max_rows: int | None = None
    window_max_bytes: int | None = None
    window: float = 3600.0
    on_limit: str = "error"  # "error" | "truncate" | "approval"
    approvers: frozenset[str] = frozenset()
    approval_timeout: float = 300.0
    # Names of the policies that set limits, for messages and approval requests.
    policy: str = ""

    @property
    def windowed(self) -> bool:
        return self.window_max_rows is not None or self.window_max_bytes is not None


def _smallest(values: Sequence[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def build_limit_spec(policies: Sequence[Policy]) -> LimitSpec | None:
    """The combined limits of the policies; None when none of them limits anything."""
    limiting = [
        p
        for p in policies
        if any(
            v is not None
            for v in (
                p.max_rows,
                p.max_bytes,
                p.session_max_rows,
                p.session_max_bytes,
                p.window_max_rows,
                p.window_max_bytes,
            )
        )
    ]
    if not limiting:
        return None
    on_limit = min((p.on_limit for p in limiting), key=_STRICTNESS.__getitem__)
    approving = [p for p in limiting if p.on_limit == "approval"]
    windowed = [p for p in limiting if p.window_max_rows or p.window_max_bytes]
    return LimitSpec(
        max_rows=_smallest([p.max_rows for p in limiting]),
        max_bytes=_smallest([p.max_bytes for p in limiting]),
        session_max_rows=_smallest([p.session_max_rows for p in limiting]),
        session_max_bytes=_smallest([p.session_max_bytes for p in limiting]),
        window_max_rows=_smallest([p.window_max_rows for p in limiting]),
        window_max_bytes=_smallest([p.window_max_bytes for p in limiting]),
        # The longest window of the policies that set a windowed limit: the strictest.
        window=max((p.window for p in windowed), default=3600.0),
        on_limit=on_limit,
        approvers=frozenset(g for p in approving for g in p.approvers),
        approval_timeout=min((p.approval_timeout for p in approving), default=300.0),
        policy=",".join(p.name for p in limiting),
    )
