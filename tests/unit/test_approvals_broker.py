"""ApprovalBroker on a real event loop: open, decide, expire, withdraw, who may decide."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway.approvals import ApprovalBroker, ApprovalError, ApprovalRequest
from gateway.approvals.broker import MAX_STATEMENT_CHARS


class Outcomes:
    """Records every on_decision / on_event call of the requests it opened."""

    def __init__(self) -> None:
        self.decided: list[ApprovalRequest] = []
        self.events: list[tuple[str, dict[str, str]]] = []
        self.resolved = asyncio.Event()

    def on_decision(self, request: ApprovalRequest) -> None:
        self.decided.append(request)
        self.resolved.set()

    def on_event(self, kind: str, detail: dict[str, str]) -> None:
        self.events.append((kind, detail))


def open_request(
    broker: ApprovalBroker,
    outcomes: Outcomes,
    *,
    subject: str = "alice",
    approvers: tuple[str, ...] = ("dba",),
    timeout: float = 60.0,
    kind: Any = "limit",
    statement: str = "SELECT * FROM customers",
) -> ApprovalRequest:
    return broker.open(
        kind=kind,
        session_id="s-1",
        subject=subject,
        groups=["analysts"],
        target="app-pg",
        statement=statement,
        policy="analysts",
        approvers=approvers,
        timeout=timeout,
        reason="max_rows=100",
        rows=100,
        nbytes=4096,
        on_decision=outcomes.on_decision,
        on_event=outcomes.on_event,
    )


async def test_open_lists_the_request_as_pending() -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    request = open_request(broker, outcomes)
    assert request.id.startswith("apr_")
    assert broker.pending() == [request]
    assert broker.get(request.id) is request
    assert broker.history() == []
    shown = request.to_json()
    assert shown["state"] == "pending"
    assert shown["requester"] == "alice"
    assert shown["rows_so_far"] == 100 and shown["bytes_so_far"] == 4096
    assert shown["approvers"] == ["dba"]
    assert broker.counters["opened"] == 1
    broker.withdraw(request.id, "test over")


async def test_notify_is_called_with_the_new_request() -> None:
    seen: list[ApprovalRequest] = []
    broker, outcomes = ApprovalBroker(notify=seen.append), Outcomes()
    request = open_request(broker, outcomes)
    assert seen == [request]
    broker.withdraw(request.id, "test over")


async def test_approve_calls_back_once_with_scope_and_moves_to_history() -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    request = open_request(broker, outcomes)
    decided = broker.decide(
        request.id, subject="bob", groups=["dba"], approve=True, reason="ok", scope="session"
    )
    assert decided is request
    assert outcomes.decided == [request]
    assert request.approved and request.state == "approved"
    assert (request.decided_by, request.decision_reason, request.scope) == ("bob", "ok", "session")
    assert request.decided_at is not None
    assert broker.pending() == [] and broker.history() == [request]
    # Callbacks are dropped once used: the session is told exactly once.
    assert request.on_decision is None and request.on_event is None
    assert broker.counters["approved"] == 1


async def test_deny_records_the_reason() -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    request = open_request(broker, outcomes)
    broker.decide(request.id, subject="bob", groups=["dba"], approve=False, reason="too much")
    assert outcomes.decided == [request]
    assert request.state == "denied" and not request.approved
    assert request.decision_reason == "too much"
    assert broker.counters["denied"] == 1


async def test_timeout_calls_back_on_the_loop() -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    request = open_request(broker, outcomes, timeout=0.05)
    await asyncio.wait_for(outcomes.resolved.wait(), 2.0)
    assert outcomes.decided == [request]
    assert request.state == "timed_out" and request.decided_by is None
    assert broker.pending() == [] and broker.history() == [request]
    assert broker.counters["timed_out"] == 1
    with pytest.raises(ApprovalError) as info:
        broker.decide(request.id, subject="bob", groups=["dba"], approve=True)
    assert info.value.status == 409


async def test_decision_cancels_the_timer() -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    request = open_request(broker, outcomes, timeout=0.05)
    broker.decide(request.id, subject="bob", groups=["dba"], approve=True)
    await asyncio.sleep(0.1)
    assert [r.state for r in outcomes.decided] == ["approved"]
    assert broker.counters["timed_out"] == 0


async def test_requester_may_not_decide_even_as_an_approver() -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    request = open_request(broker, outcomes, subject="alice")
    with pytest.raises(ApprovalError) as info:
        broker.decide(request.id, subject="alice", groups=["dba"], approve=True)
    assert info.value.status == 403
    assert "own request" in info.value.message
    assert broker.pending() == [request] and outcomes.decided == []
    broker.withdraw(request.id, "test over")


async def test_non_approver_may_not_decide(caplog: pytest.LogCaptureFixture) -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    request = open_request(broker, outcomes, approvers=("dba", "security"))
    with (
        caplog.at_level(logging.INFO, logger="gateway.audit"),
        pytest.raises(ApprovalError) as info,
    ):
        broker.decide(request.id, subject="carol", groups=["analysts"], approve=True)
    assert info.value.status == 403
    assert "dba, security" in info.value.message
    refused = [r for r in caplog.records if getattr(r, "event", "") == "approval_decision_refused"]
    assert len(refused) == 1 and refused[0].subject == "carol"  # type: ignore[attr-defined]
    assert request.state == "pending"
    broker.withdraw(request.id, "test over")


async def test_unknown_request_is_404_and_decided_request_is_409() -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    with pytest.raises(ApprovalError) as info:
        broker.decide("apr_nope", subject="bob", groups=["dba"], approve=True)
    assert info.value.status == 404
    request = open_request(broker, outcomes)
    broker.decide(request.id, subject="bob", groups=["dba"], approve=False)
    with pytest.raises(ApprovalError) as info:
        broker.decide(request.id, subject="dave", groups=["dba"], approve=True)
    assert info.value.status == 409
    assert request.state == "denied" and len(outcomes.decided) == 1


async def test_bad_scope_is_400_and_leaves_the_request_pending() -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    request = open_request(broker, outcomes)
    with pytest.raises(ApprovalError) as info:
        broker.decide(request.id, subject="bob", groups=["dba"], approve=True, scope="forever")
    assert info.value.status == 400
    assert request.state == "pending"
    broker.withdraw(request.id, "test over")


async def test_withdraw_does_not_call_back() -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    request = open_request(broker, outcomes, timeout=0.05)
    broker.withdraw(request.id, "client cancelled")
    await asyncio.sleep(0.1)  # the timer is cancelled too
    assert outcomes.decided == []
    assert request.state == "withdrawn" and request.decision_reason == "client cancelled"
    # A notifier finishing after the withdrawal finds no session to report to.
    assert request.on_decision is None and request.on_event is None
    assert broker.counters == {
        "opened": 1,
        "approved": 0,
        "denied": 0,
        "timed_out": 0,
        "withdrawn": 1,
    }
    with pytest.raises(ApprovalError) as info:
        broker.decide(request.id, subject="bob", groups=["dba"], approve=True)
    assert info.value.status == 409
    broker.withdraw(request.id, "again")  # a second withdrawal is a no-op
    assert broker.counters["withdrawn"] == 1


async def test_history_is_newest_first_and_bounded() -> None:
    broker, outcomes = ApprovalBroker(history=2), Outcomes()
    first, second, third = (open_request(broker, outcomes) for _ in range(3))
    assert broker.pending() == [first, second, third]  # oldest first
    broker.decide(second.id, subject="bob", groups=["dba"], approve=True)
    broker.decide(first.id, subject="bob", groups=["dba"], approve=False)
    broker.withdraw(third.id, "session ended")
    assert broker.history() == [third, first]
    assert broker.get(second.id) is None  # fell out of the bounded history


async def test_counters_and_audit_lines(caplog: pytest.LogCaptureFixture) -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        a = open_request(broker, outcomes)
        b = open_request(broker, outcomes, kind="review")
        broker.decide(a.id, subject="bob", groups=["dba"], approve=True)
        broker.decide(b.id, subject="bob", groups=["dba"], approve=False, reason="no")
    events = [getattr(r, "event", None) for r in caplog.records if r.name == "gateway.audit"]
    assert events == [
        "approval_requested",
        "approval_requested",
        "approval_approved",
        "approval_denied",
    ]
    last = caplog.records[-1]
    assert last.approval_id == b.id and last.decided_by == "bob"  # type: ignore[attr-defined]
    assert last.kind == "review"  # type: ignore[attr-defined]
    assert broker.counters["opened"] == 2
    assert broker.counters["approved"] == 1 and broker.counters["denied"] == 1


async def test_long_statement_is_cut_in_json() -> None:
    broker, outcomes = ApprovalBroker(), Outcomes()
    request = open_request(broker, outcomes, statement="x" * (MAX_STATEMENT_CHARS + 10))
    shown = request.to_json()
    assert len(shown["statement"]) == MAX_STATEMENT_CHARS and shown["statement_truncated"]
    broker.withdraw(request.id, "test over")


async def test_injected_clock_sets_created_and_expiry() -> None:
    broker, outcomes = ApprovalBroker(clock=lambda: 1000.0), Outcomes()
    request = open_request(broker, outcomes, timeout=30.0)
    assert (request.created_at, request.expires_at) == (1000.0, 1030.0)
    broker.withdraw(request.id, "test over")
