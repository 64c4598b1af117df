"""The protocol-neutral half of result limits and approvals for one session.

The drivers decide *where* in their wire protocol a result is cut, paused or held; this
module decides nothing about bytes. It owns the session's limits, the one approval
request the session may wait on at a time, the wording of what the client is told, and
the record of every step: a ``ctl`` frame in the session recording, a line in the
``gateway.audit`` log and one in the audit log file (steps on the approver's side are
logged by the broker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..approvals import ApprovalRequest
from ..limits import Budget, SessionLimits

if TYPE_CHECKING:
    from ..approvals import ApprovalBroker
    from ..audit import SessionAudit
    from ..identity import Identity
    from ..recording import SessionRecording

audit = logging.getLogger("gateway.audit")

LIMIT_SQLSTATE = "54000"  # program_limit_exceeded
CANCELED_SQLSTATE = "57014"  # query_canceled


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


class LimitControl:
    __slots__ = (
        "audit",
        "broker",
        "identity",
        "limits",
        "pending",
        "pending_callback",
        "recording",
        "review_approvers",
        "review_timeout",
        "session_id",
        "target",
    )

    def __init__(
        self,
        *,
        limits: SessionLimits | None,
        broker: ApprovalBroker,
        session_id: str,
        identity: Identity,
        target: str,
        recording: SessionRecording | None,
        review_approvers: frozenset[str],
        review_timeout: float,
        audit: SessionAudit | None = None,
    ) -> None:
        self.audit = audit
        self.limits = limits
        self.broker = broker
        self.session_id = session_id
        self.identity = identity
        self.target = target
        self.recording = recording
        self.review_approvers = review_approvers
        self.review_timeout = review_timeout
        # The request this session waits on (at most one: the stream is stopped).
        self.pending: ApprovalRequest | None = None
        self.pending_callback: Callable[[ApprovalRequest], None] | None = None

    # -- steps ---------------------------------------------------------------------------

    def event(self, kind: str, **detail: object) -> None:
        """One step, recorded in the session file and the audit log."""
        text = {k: str(v) for k, v in detail.items() if v is not None}
        if self.recording is not None:
            self.recording.control(kind, text)
        if self.audit is not None:
            self.audit.event(kind, **text)
        audit.info(
            kind.replace("_", " "),
            extra={
                "event": kind,
                "session_id": self.session_id,
                "subject": self.identity.subject,
                "target": self.target,
                **text,
            },
        )

    def limit_reached(self, action: str, limit: str, budget: Budget) -> None:
        self.event(
            "limit_reached",
            action=action,
            limit=limit,
            rows=budget.rows,
            bytes=budget.bytes,
            session_rows=self.limits.rows if self.limits else None,
            policy=self.limits.spec.policy if self.limits else None,
        )

    # -- approvals -----------------------------------------------------------------------

    def request_limit_approval(
        self,
        statement: str,
        limit: str,
        budget: Budget,
        on_decision: Callable[[ApprovalRequest], None],
    ) -> ApprovalRequest:
        assert self.limits is not None
        spec = self.limits.spec
        return self._open(
            "limit",
            statement,
            spec.policy,
            spec.approvers,
            spec.approval_timeout,
            limit,
            budget.rows,
            budget.bytes,
            on_decision,
        )

    def request_review(
        self, statement: str, rule: str, on_decision: Callable[[ApprovalRequest], None]
    ) -> ApprovalRequest:
        return self._open(
            "review",
            statement,
            rule,
            self.review_approvers,
            self.review_timeout,
            rule,
            0,
            0,
            on_decision,
        )

    def _open(
        self,
        kind: str,
        statement: str,
        policy: str,
        approvers: frozenset[str],
        timeout: float,
        reason: str,
        rows: int,
        nbytes: int,
        on_decision: Callable[[ApprovalRequest], None],
    ) -> ApprovalRequest:
        def decided(request: ApprovalRequest) -> None:
            self.pending = None
            self.pending_callback = None
            self.event(
                "approval_" + request.state,
                approval_id=request.id,
                by=request.decided_by,
                reason=request.decision_reason or None,
                scope=request.scope if request.approved else None,
            )
            on_decision(request)

        request = self.broker.open(
            kind="limit" if kind == "limit" else "review",
            session_id=self.session_id,
            subject=self.identity.subject,
            groups=self.identity.groups,
            target=self.target,
            statement=statement,
            policy=policy,
            approvers=approvers,
            timeout=timeout,
            reason=reason,
            rows=rows,
            nbytes=nbytes,
            on_decision=decided,
            on_event=lambda step, detail: self.event("approval_" + step, **detail),
        )
        self.pending = request
        self.pending_callback = on_decision
        self.event(
            "approval_requested",
            approval_id=request.id,
            request_kind=kind,
            reason=reason,
            rows=rows or None,
            bytes=nbytes or None,
            approvers=",".join(sorted(approvers)),
            timeout=_duration(timeout),
        )
        if self.audit is not None and kind == "limit":
            # Written with the paused statement's audit line (the running one: the next
            # to finish). Set after the event, which first reports the statements that
            # finished before (a driver may hold them back to report in batches). A held
            # statement's request is named by its reviewed rule instead: statements sent
            # before it may finish while it waits.
            self.audit.approval_id = request.id
        return request

    def withdraw(self, why: str) -> ApprovalRequest | None:
        """The session stops waiting (it ended): the request is dropped, nobody is told."""
        request, self.pending = self.pending, None
        self.pending_callback = None
        if request is None:
            return None
        self.broker.withdraw(request.id, why)
        self.event("approval_withdrawn", approval_id=request.id, reason=why)
        return request

    def cancel(self, why: str) -> bool:
        """The client cancelled while waiting: the request is withdrawn and the session
        proceeds as if it had been denied. False when nothing was waiting."""
        callback = self.pending_callback
        request = self.withdraw(why)
        if request is None or callback is None:
            return False
        callback(request)
        return True

    # -- what the client is told ------------------------------------------------------------

    def policy_name(self) -> str:
        return self.limits.spec.policy if self.limits is not None else ""

    @staticmethod
    def exceeded_message(limit: str, budget: Budget, policy: str) -> str:
        return (
            f"result stopped by the gateway: limit {limit} of policy {policy!r} reached "
            f"after {budget.rows} rows"
        )

    @staticmethod
    def truncated_message(limit: str, budget: Budget, policy: str) -> str:
        return (
            f"result truncated by the gateway to {budget.rows} rows: limit {limit} of "
            f"policy {policy!r}"
        )

    @staticmethod
    def paused_message(request: ApprovalRequest) -> str:
        return (
            f"result paused by the gateway after {request.rows} rows (limit {request.reason}): "
            f"waiting for approval of request {request.id} "
            f"(up to {_duration(request.expires_at - request.created_at)})"
        )

    @staticmethod
    def held_message(request: ApprovalRequest) -> str:
        return (
            f"statement held by the gateway for review ({request.reason}): waiting for "
            f"approval of request {request.id} "
            f"(up to {_duration(request.expires_at - request.created_at)})"
        )

    @staticmethod
    def outcome_message(request: ApprovalRequest, what: str) -> str:
        """Why a paused result or a held statement was stopped."""
        if request.state == "timed_out":
            return f"{what} stopped by the gateway: approval request {request.id} timed out"
        if request.state == "withdrawn":
            return f"canceling statement due to user request (approval request {request.id})"
        reason = f": {request.decision_reason}" if request.decision_reason else ""
        return (
            f"{what} stopped by the gateway: approval request {request.id} denied by "
            f"{request.decided_by}{reason}"
        )
