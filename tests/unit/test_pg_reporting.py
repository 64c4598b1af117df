"""PgRecordingObserver reports finished executions in batches: in order, when a batch
fills or its delay passes, before any event of the session, and fails closed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.session.pg_recording import _DONE_BATCH, _DONE_DELAY, PgRecordingObserver
from protocols.postgres.tracker import Execution


class AuditLines:
    """Stands in for SessionAudit: the observer's only calls into it."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, ...]] = []
        self.finished_at: list[float] = []
        self.before_event: Callable[[], None] | None = None
        self.broken = False

    def statement(self, text: str, path: str, action: str, *rest: Any) -> None:
        if self.broken:
            raise RuntimeError("disk on fire")
        self.lines.append(("statement", text))
        self.finished_at.append(rest[-1])

    def event(self, kind: str) -> None:
        if self.before_event is not None:
            self.before_event()
        self.lines.append(("event", kind))


class Later:
    """Stands in for loop.call_later: runs the callbacks when told."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> None:
        self.calls.append((delay, callback))

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for _, callback in calls:
            callback()


def observer() -> tuple[PgRecordingObserver, AuditLines, Later]:
    audit = AuditLines()
    obs = PgRecordingObserver(None, 0, "rule", audit)  # type: ignore[arg-type]
    later = Later()
    obs.schedule = later
    return obs, audit, later


def run(obs: PgRecordingObserver, text: str) -> Execution:
    ex = Execution("simple", text.encode())
    obs.execution_started(ex)
    ex.rows = 1
    obs.execution_finished(ex)
    return ex


def test_reported_after_the_delay_in_order() -> None:
    obs, audit, later = observer()
    run(obs, "SELECT 1")
    run(obs, "SELECT 2")
    assert audit.lines == []  # held back...
    assert obs.statements == 2 and obs.rows_total == 2  # ...but counted at once
    assert [delay for delay, _ in later.calls] == [_DONE_DELAY]  # one timer per batch
    finished = time.time()
    time.sleep(0.1)
    later.run()
    assert audit.lines == [("statement", "SELECT 1"), ("statement", "SELECT 2")]
    # Stamped with when they finished, not when they were reported.
    assert all(abs(at - finished) < 0.05 for at in audit.finished_at)
    later.run()
    assert len(audit.lines) == 2  # reported once


def test_a_full_batch_is_reported_at_once() -> None:
    obs, audit, later = observer()
    for i in range(_DONE_BATCH):
        run(obs, f"SELECT {i}")
    assert [text for _, text in audit.lines] == [f"SELECT {i}" for i in range(_DONE_BATCH)]
    later.run()  # the batch's timer finds nothing left
    assert len(audit.lines) == _DONE_BATCH


def test_statements_come_before_a_later_event() -> None:
    obs, audit, _ = observer()
    run(obs, "SELECT 1")
    audit.event("limit_reached")
    assert audit.lines == [("statement", "SELECT 1"), ("event", "limit_reached")]


def test_the_session_end_reports_what_is_held() -> None:
    obs, audit, _ = observer()
    run(obs, "SELECT 1")
    obs.session_ended("client terminated")
    assert audit.lines == [("statement", "SELECT 1")]


def test_a_failure_to_report_ends_the_session() -> None:
    obs, audit, later = observer()
    failures: list[BaseException] = []
    obs.fail = failures.append
    run(obs, "SELECT 1")
    audit.broken = True
    later.run()  # on the loop: logged, and the driver is told to end the session
    assert [str(exc) for exc in failures] == ["disk on fire"]


def test_without_a_loop_each_is_reported_at_once() -> None:
    obs, audit, _ = observer()
    obs.schedule = None
    run(obs, "SELECT 1")
    assert audit.lines == [("statement", "SELECT 1")]
    audit.broken = True
    with pytest.raises(RuntimeError):
        run(obs, "SELECT 2")
