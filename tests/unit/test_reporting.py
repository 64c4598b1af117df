"""The observers report finished statements in batches: in order, when a batch fills or
its delay passes, before any event of the session, and fail closed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.session.mysql_recording import Exchange, MyRecordingObserver
from gateway.session.pg_recording import PgRecordingObserver
from gateway.session.reporting import BATCH, DELAY
from protocols.mysql.constants import Command
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

    def statements(self, items: list[tuple[Any, ...]]) -> None:
        for item in items:
            self.statement(*item)

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
    obs.reporting.schedule = later
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
    assert [delay for delay, _ in later.calls] == [DELAY]  # one timer per batch
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
    for i in range(BATCH):
        run(obs, f"SELECT {i}")
    assert [text for _, text in audit.lines] == [f"SELECT {i}" for i in range(BATCH)]
    later.run()  # the batch's timer finds nothing left
    assert len(audit.lines) == BATCH


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
    obs.reporting.fail = failures.append
    run(obs, "SELECT 1")
    audit.broken = True
    later.run()  # on the loop: logged, and the driver is told to end the session
    assert [str(exc) for exc in failures] == ["disk on fire"]


def test_without_a_loop_each_is_reported_at_once() -> None:
    obs, audit, _ = observer()
    obs.reporting.schedule = None
    run(obs, "SELECT 1")
    assert audit.lines == [("statement", "SELECT 1")]
    audit.broken = True
    with pytest.raises(RuntimeError):
        run(obs, "SELECT 2")


def test_executions_without_text_are_labelled_each_by_their_own_fields() -> None:
    """Cursors' and fast-path calls' executions carry no text: each is labelled from its
    own portal or path, not from a label cached for another one."""
    obs, audit, later = observer()
    for ex in (
        Execution("function", None),
        Execution("cursor", None, portal=b"c1"),
        Execution("cursor", None, portal=b"c2"),
        Execution("function", None),
    ):
        obs.execution_started(ex)
        obs.execution_finished(ex)
    later.run()
    assert audit.lines == [
        ("statement", "<fast-path function call>"),
        ("statement", "<execute portal b'c1'>"),
        ("statement", "<execute portal b'c2'>"),
        ("statement", "<fast-path function call>"),
    ]


def my_observer() -> tuple[MyRecordingObserver, AuditLines, Later]:
    audit = AuditLines()
    obs = MyRecordingObserver(None, 0, audit)  # type: ignore[arg-type]
    later = Later()
    obs.reporting.schedule = later
    return obs, audit, later


def my_query(obs: MyRecordingObserver, sql: str) -> None:
    ex = Exchange(Command.COM_QUERY)
    obs.query_started(ex, sql.encode())
    ex.rows = 1
    obs.result_finished(ex)


def test_mysql_results_are_reported_after_the_delay_in_order() -> None:
    obs, audit, later = my_observer()
    my_query(obs, "SELECT 1")
    my_query(obs, "SELECT 2")
    assert audit.lines == [] and obs.statements == 2 and obs.rows_total == 2
    later.run()
    assert audit.lines == [("statement", "SELECT 1"), ("statement", "SELECT 2")]


def test_mysql_change_user_reports_to_the_previous_identity_first() -> None:
    obs, first, _ = my_observer()
    my_query(obs, "SELECT 1")
    second = AuditLines()
    obs.set_audit(second)  # type: ignore[arg-type]
    my_query(obs, "SELECT 2")
    obs.session_ended("client quit")
    assert first.lines == [("statement", "SELECT 1")]
    assert second.lines == [("statement", "SELECT 2")]
    second.event("approval_requested")  # the new identity's events flush too
    assert second.lines[-1] == ("event", "approval_requested")


class Items:
    """Stands in for SessionAudit, keeping every argument it is given."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []
        self.before_event: Callable[[], None] | None = None

    def statements(self, items: list[tuple[Any, ...]]) -> None:
        self.items.extend(items)


_EXECUTION = st.tuples(
    st.sampled_from(["simple", "extended", "prepared", "cursor"]),
    st.sampled_from([b"SELECT 1", b"SELECT $1", None]),
    st.sampled_from([None, b"s1"]),
    st.sampled_from([None, ("57014", "canceled"), ("", "")]),
    st.booleans(),  # skipped
    st.sampled_from([None, "no mask", "masked"]),
    st.integers(0, 5),
    st.booleans(),  # reported (decided) or not
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_EXECUTION, max_size=8), st.booleans())
def test_batched_audit_arguments_are_those_of_each_execution(
    executions: list[tuple[Any, ...]], labelled_before: bool
) -> None:
    """The observer's batch (its inline common case included) gives the audit what
    ``_audit_args`` gives for each execution, in order."""
    from gateway.masking.plan import ColumnPlan, ResultPlan
    from gateway.session.pg_masking import NO_MASK

    audit = Items()
    obs = PgRecordingObserver(None, 0, "rule", audit)  # type: ignore[arg-type]
    done = []
    for path, text, name, error, skipped, masked, rows, decided in executions:
        ex = Execution(path, text, name)
        obs.execution_started(ex)
        ex.rows, ex.bytes, ex.error, ex.skipped = rows, rows * 7, error, skipped
        if masked == "no mask":
            ex.mask_plan = NO_MASK
        elif masked == "masked":
            column = ColumnPlan(None, True, "public.customers.email", False)
            ex.mask_plan = ResultPlan(rewriters=(), columns=(column,))
        if not decided:
            ex.decided = None
        if labelled_before:
            obs._label(ex)
        ex.finished = ex.started + 0.001 * rows
        done.append(ex)
    offset_before = time.time() - time.monotonic()
    obs._report(done)
    offset_after = time.time() - time.monotonic()
    expected = [
        obs._audit_args(ex, None, ex.finished - ex.started, ex.finished + offset_before)
        for ex in done
        if ex.decided is not None
    ]
    assert len(audit.items) == len(expected)
    for got, want in zip(audit.items, expected, strict=True):
        assert got[:-1] == want[:-1]
        # The wall-clock time: the same offset, taken once per batch.
        assert want[-1] - 0.01 <= got[-1] <= want[-1] + (offset_after - offset_before) + 0.01


def test_failed_and_skipped_executions_are_told_to_the_policy() -> None:
    """The statement policy forgets SQL-level PREPAREs the server may not have run: the
    observer tells it the text of every execution that failed or was skipped."""
    obs, _, _ = observer()
    told: list[bytes] = []
    obs.failed = told.append
    for error, skipped in ((("42P05", "exists"), False), (None, True), (None, False)):
        ex = Execution("simple", b"PREPARE p AS SELECT 1")
        obs.execution_started(ex)
        ex.error = error
        ex.skipped = skipped
        obs.execution_finished(ex)
    assert told == [b"PREPARE p AS SELECT 1"] * 2
