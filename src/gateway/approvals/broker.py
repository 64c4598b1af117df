"""Just-in-time approval requests: opened by a session, decided by a person.

A session opens a request when a result reaches a limit with ``on_limit = "approval"``
(the stream is paused) or when a statement needs ``review`` (it is held before it is sent).
The broker keeps pending requests, enforces who may decide (a member of a group the request
names in ``approvers``, never the requester), expires requests at their timeout and keeps a
bounded history. It never blocks: the session is told of the outcome through the
``on_decision`` callback it passed, on the event loop.

Every step is written to the ``gateway.audit`` log as one structured line (the audit log of
docs/operations.md); the session records the same steps in its recording.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

audit = logging.getLogger("gateway.audit")

Kind = Literal["limit", "review"]
State = Literal["pending", "approved", "denied", "timed_out", "withdrawn"]
Scope = Literal["statement", "session"]
SCOPES: Final = ("statement", "session")
# Statement text shown to approvers and sent to webhooks is cut here (a bulk INSERT can be
# megabytes); the recording keeps the whole text.
MAX_STATEMENT_CHARS: Final = 4000


class ApprovalError(Exception):
    """A decision that cannot be taken; ``status`` is the HTTP status the API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class ApprovalRequest:
    id: str
    kind: Kind
    session_id: str
    subject: str
    groups: tuple[str, ...]
    target: str
    statement: str
    policy: str
    approvers: frozenset[str]
    created_at: float
    expires_at: float
    # Why the request was opened: the limit that was reached ("max_rows=100") or the review
    # rule ("review:ddl").
    reason: str
    rows: int = 0
    bytes: int = 0
    state: State = "pending"
    decided_by: str | None = None
    decided_at: float | None = None
    decision_reason: str = ""
    scope: Scope = "statement"
    # Set by the broker; called once when the request leaves "pending" by a decision or a
    # timeout (not when the session withdraws it).
    on_decision: Callable[[ApprovalRequest], None] | None = field(default=None, repr=False)
    # Steps after opening (notified, notify_failed) reported to the session for its recording.
    on_event: Callable[[str, dict[str, str]], None] | None = field(default=None, repr=False)
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def approved(self) -> bool:
        return self.state == "approved"

    def to_json(self) -> dict[str, Any]:
        """The request as the admin API and webhooks show it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "session_id": self.session_id,
            "requester": self.subject,
            "groups": list(self.groups),
            "target": self.target,
            "statement": self.statement[:MAX_STATEMENT_CHARS],
            "statement_truncated": len(self.statement) > MAX_STATEMENT_CHARS,
            "policy": self.policy,
            "reason": self.reason,
            "approvers": sorted(self.approvers),
            "rows_so_far": self.rows,
            "bytes_so_far": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "decision_reason": self.decision_reason,
            "scope": self.scope,
        }


class ApprovalBroker:
    """Pending requests and recent history of one gateway process."""

    def __init__(
        self,
        *,
        history: int = 1000,
        notify: Callable[[ApprovalRequest], None] | None = None,
        clock: Callable[[], float] = time.time,
        approver_groups: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self._pending: OrderedDict[str, ApprovalRequest] = OrderedDict()
        self._history: deque[ApprovalRequest] = deque(maxlen=history)
        self.notify = notify
        self._clock = clock
        # The approver groups of the running configuration (every policy's approvers).
        # A request keeps the approvers it was opened with, but a group a reload removed
        # from every policy no longer decides it: who may decide is judged when deciding.
        self._approver_groups = approver_groups
        self.counters: dict[str, int] = {
            "opened": 0,
            "approved": 0,
            "denied": 0,
            "timed_out": 0,
            "withdrawn": 0,
        }

    # -- sessions ---------------------------------------------------------------------

    def open(
        self,
        *,
        kind: Kind,
        session_id: str,
        subject: str,
        groups: Iterable[str],
        target: str,
        statement: str,
        policy: str,
        approvers: Iterable[str],
        timeout: float,
        reason: str,
        rows: int = 0,
        nbytes: int = 0,
        on_decision: Callable[[ApprovalRequest], None],
        on_event: Callable[[str, dict[str, str]], None] | None = None,
    ) -> ApprovalRequest:
        now = self._clock()
        request = ApprovalRequest(
            id="apr_" + secrets.token_hex(8),
            kind=kind,
            session_id=session_id,
            subject=subject,
            groups=tuple(groups),
            target=target,
            statement=statement,
            policy=policy,
            approvers=frozenset(approvers),
            created_at=now,
            expires_at=now + timeout,
            reason=reason,
            rows=rows,
            bytes=nbytes,
            on_decision=on_decision,
            on_event=on_event,
        )
        self._pending[request.id] = request
        request._timer = asyncio.get_running_loop().call_later(timeout, self._expire, request.id)
        self.counters["opened"] += 1
        self._audit("approval_requested", request)
        if self.notify is not None:
            self.notify(request)
        return request

    def withdraw(self, request_id: str, reason: str) -> None:
        """The session no longer waits (it ended, or its client cancelled): drop the request
        without calling back. A request already decided is left as it is."""
        request = self._pending.pop(request_id, None)
        if request is None:
            return
        self._finish(request, "withdrawn", None, reason)
        # The session is gone: a notifier finishing later must not report to it, and the
        # history must not keep it alive.
        request.on_decision = request.on_event = None
        self.counters["withdrawn"] += 1
        self._audit("approval_withdrawn", request)

    # -- approvers --------------------------------------------------------------------

    def pending(self) -> list[ApprovalRequest]:
        return list(self._pending.values())

    def history(self) -> list[ApprovalRequest]:
        """Decided, timed-out and withdrawn requests, newest first."""
        return list(reversed(self._history))

    def get(self, request_id: str) -> ApprovalRequest | None:
        request = self._pending.get(request_id)
        if request is not None:
            return request
        return next((r for r in self._history if r.id == request_id), None)

    @staticmethod
    def may_see(
        request: ApprovalRequest, subject: str, groups: Iterable[str], *, admin: bool
    ) -> bool:
        """Whether an identity may see a request (its statement text, requester, reason):
        administrators see every request, approvers those of their approver groups, and a
        requester their own. Other approvers do not: the statement text may hold literal
        values, and another team's requests are not theirs to read."""
        if admin or subject == request.subject:
            return True
        return not request.approvers.isdisjoint(groups)

    def find(
        self, request_id: str, subject: str, groups: Iterable[str], *, admin: bool
    ) -> ApprovalRequest | None:
        """A request (pending or decided) if it exists and the caller may see it."""
        request = self.get(request_id)
        if request is None or not self.may_see(request, subject, groups, admin=admin):
            return None
        return request

    def decide_as_viewer(
        self,
        request_id: str,
        *,
        subject: str,
        groups: Iterable[str],
        admin: bool,
        approve: bool,
        reason: str = "",
        scope: str = "statement",
    ) -> ApprovalRequest:
        """``decide`` for the admin API and the web console, where people see only some
        requests (``may_see``): one they may not see answers 404 like an unknown id (the
        attempt is still audited as a refused decision)."""
        groups = list(groups)
        found = self.get(request_id)
        if found is not None and not self.may_see(found, subject, groups, admin=admin):
            _refused_decision(request_id, subject, "not an approver of this request")
            raise ApprovalError(404, f"no approval request {request_id}")
        return self.decide(
            request_id,
            subject=subject,
            groups=groups,
            approve=approve,
            reason=reason,
            scope=scope,
        )

    def may_decide(
        self, request: ApprovalRequest, subject: str, groups: Iterable[str]
    ) -> str | None:
        """Why this identity may not decide the request (None: it may)."""
        if subject == request.subject:
            return "you cannot approve or deny your own request"
        approvers = request.approvers
        if self._approver_groups is not None:
            approvers = approvers & self._approver_groups()
        if approvers.isdisjoint(groups):
            if not approvers:
                return "no group may decide this request any more (the configuration changed)"
            return "only members of the approver groups may decide this request: " + ", ".join(
                sorted(approvers)
            )
        return None

    def decide(
        self,
        request_id: str,
        *,
        subject: str,
        groups: Iterable[str],
        approve: bool,
        reason: str = "",
        scope: str = "statement",
    ) -> ApprovalRequest:
        """Approve or deny a pending request. Raises ApprovalError (404 unknown, 409 no
        longer pending, 403 not allowed to decide, 400 bad scope)."""
        request = self._pending.get(request_id)
        if request is None:
            if self.get(request_id) is not None:
                raise ApprovalError(409, f"request {request_id} is no longer pending")
            raise ApprovalError(404, f"no approval request {request_id}")
        problem = self.may_decide(request, subject, groups)
        if problem is not None:
            _refused_decision(request.id, subject, problem)
            raise ApprovalError(403, problem)
        if scope not in SCOPES:
            raise ApprovalError(400, f"scope must be one of {', '.join(SCOPES)}")
        del self._pending[request_id]
        request.scope = scope  # type: ignore[assignment]
        self._finish(request, "approved" if approve else "denied", subject, reason)
        self.counters[request.state] += 1
        self._audit("approval_" + request.state, request)
        self._call_back(request)
        return request

    # -- internals --------------------------------------------------------------------

    def _expire(self, request_id: str) -> None:
        request = self._pending.pop(request_id, None)
        if request is None:
            return
        self._finish(request, "timed_out", None, "no decision before the approval timeout")
        self.counters["timed_out"] += 1
        self._audit("approval_timed_out", request)
        self._call_back(request)

    def _finish(self, request: ApprovalRequest, state: State, by: str | None, reason: str) -> None:
        if request._timer is not None:
            request._timer.cancel()
            request._timer = None
        request.state = state
        request.decided_by = by
        request.decided_at = self._clock()
        request.decision_reason = reason
        self._history.append(request)

    @staticmethod
    def _call_back(request: ApprovalRequest) -> None:
        callback, request.on_decision = request.on_decision, None
        request.on_event = None
        if callback is not None:
            callback(request)

    @staticmethod
    def _audit(event: str, request: ApprovalRequest) -> None:
        audit.info(
            event.replace("_", " "),
            extra={
                "event": event,
                "approval_id": request.id,
                "kind": request.kind,
                "session_id": request.session_id,
                "subject": request.subject,
                "target": request.target,
                "policy": request.policy,
                "reason": request.reason,
                "rows": request.rows,
                "bytes": request.bytes,
                "decided_by": request.decided_by,
                "decision_reason": request.decision_reason,
                "scope": request.scope,
            },
        )


def _refused_decision(request_id: str, subject: str, detail: str) -> None:
    audit.info(
        "approval decision refused",
        extra={
            "event": "approval_decision_refused",
            "approval_id": request_id,
            "subject": subject,
            "detail": detail,
        },
    )
