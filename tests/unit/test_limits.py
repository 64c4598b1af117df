"""Result limits: combining policies, the per-identity rolling window, per-run checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.limits import (
    UNLIMITED,
    Budget,
    LimitSpec,
    RollingUsage,
    SessionLimits,
    UsageWindows,
    build_limit_spec,
)
from gateway.limits.usage import BUCKETS

BASE = """
[auth]
issuer = "https://idp.example.com/"
audience = "gw"
jwks_file = "jwks.json"

[admin]
listen = "127.0.0.1:0"

[[targets]]
name = "t"
protocol = "postgres"
listen = "127.0.0.1:6432"
host = "db"
port = 5432
database = "app"
user = "gw"
"""


def policies(*bodies: str) -> list:
    text = BASE + "".join(
        f'\n[[policies]]\nname = "p{i}"\ngroups = ["g"]\ntargets = ["t"]\nallow = ["read"]\n{b}'
        for i, b in enumerate(bodies)
    )
    return parse_config(text, Path("/etc")).policies


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_limits_means_no_spec() -> None:
    assert build_limit_spec(policies("", "")) is None


def test_policies_combine_strictest_first() -> None:
    spec = build_limit_spec(
        policies(
            'max_rows = 500\non_limit = "approval"\napprovers = ["a"]\napproval_timeout = "2m"\n',
            'max_rows = 100\nmax_bytes = "1MB"\non_limit = "truncate"\n',
            'session_max_rows = 9000\non_limit = "approval"\napprovers = ["b"]\n',
            "",  # no limits: does not take part
        )
    )
    assert spec is not None
    assert (spec.max_rows, spec.max_bytes, spec.session_max_rows) == (100, 10**6, 9000)
    assert spec.on_limit == "truncate"  # truncate is stricter than approval
    assert spec.approvers == frozenset({"a", "b"})
    assert spec.approval_timeout == 120.0
    assert spec.policy == "p0,p1,p2"
    error = build_limit_spec(policies("max_rows = 5\n", 'max_rows = 9\non_limit = "truncate"\n'))
    assert error is not None and error.on_limit == "error"


def test_a_run_that_fits_is_credited_everywhere() -> None:
    window = RollingUsage(3600)
    limits = SessionLimits(LimitSpec(max_rows=10, session_max_rows=25), window)
    budget = Budget()
    assert limits.take(budget, 10, 400) is None
    assert (budget.rows, budget.bytes, limits.rows, window.used()) == (10, 400, 10, (10, 400))
    cut = limits.take(budget, 1, 40)
    assert cut is not None and (cut.rows, cut.bytes) == (0, UNLIMITED)
    assert cut.reached(0) == "max_rows=10"
    assert budget.rows == 10  # nothing credited for a run that does not fit


def test_the_tightest_limit_binds() -> None:
    limits = SessionLimits(LimitSpec(max_rows=100, session_max_rows=30, max_bytes=1000), None)
    limits.credit(Budget(), 20, 100)  # an earlier statement
    budget = Budget()
    cut = limits.take(budget, 50, 500)
    assert cut is not None
    assert (cut.rows, cut.bytes) == (10, 1000)
    assert cut.reached(10) == "session_max_rows=30"
    # Bytes ran out before the rows did.
    assert cut.reached(4) == "max_bytes=1000"


def test_lifted_budgets_still_count() -> None:
    limits = SessionLimits(LimitSpec(max_rows=1), None)
    budget = Budget()
    budget.lifted = True
    assert limits.take(budget, 50, 10) is None
    assert limits.rows == 50
    limits.lifted = True
    assert limits.take(Budget(), 50, 10) is None
    assert limits.rows == 100


def test_the_window_forgets_old_usage() -> None:
    clock = Clock()
    window = RollingUsage(600, clock)
    window.add(100, 1000)
    clock.now += 300
    window.add(50, 500)
    assert window.used() == (150, 1500)
    clock.now += 301  # the first add is now older than the window
    assert window.used() == (50, 500)
    clock.now += 10 * 600  # far later: everything gone, no negative totals
    assert window.used() == (0, 0)
    window.add(1, 1)
    assert window.used() == (1, 1)


def test_window_precision_is_one_bucket() -> None:
    clock = Clock()
    window = RollingUsage(60, clock)
    window.add(7, 0)
    clock.now += 60 - 60 / BUCKETS - 0.001
    assert window.used() == (7, 0)


def test_window_limits_are_shared_by_an_identitys_sessions() -> None:
    windows = UsageWindows()
    spec = LimitSpec(window_max_rows=100)
    first = SessionLimits(spec, windows.for_identity("alice", 3600))
    second = SessionLimits(spec, windows.for_identity("alice", 3600))
    other = SessionLimits(spec, windows.for_identity("bob", 3600))
    assert first.take(Budget(), 80, 0) is None
    cut = second.take(Budget(), 30, 0)
    assert cut is not None and cut.rows == 20 and cut.reached(20) == "window_max_rows=100"
    assert other.take(Budget(), 100, 0) is None


@pytest.mark.parametrize("rows", [0, 1, 5])
def test_budget_defaults(rows: int) -> None:
    budget = Budget(rows)
    assert (budget.key, budget.rows, budget.lifted, budget.request) == (rows, 0, False, None)


_limit = st.one_of(st.none(), st.integers(0, 50))


@given(
    spec=st.builds(
        LimitSpec,
        max_rows=_limit,
        max_bytes=_limit,
        session_max_rows=_limit,
        session_max_bytes=_limit,
        window_max_rows=_limit,
        window_max_bytes=_limit,
    ),
    used=st.lists(st.integers(0, 60), min_size=6, max_size=6),
    rows=st.integers(0, 30),
    nbytes=st.integers(0, 30),
    with_window=st.booleans(),
)
def test_the_fast_fit_check_agrees_with_room(
    spec: LimitSpec, used: list[int], rows: int, nbytes: int, with_window: bool
) -> None:
    # take() credits a run on its fast path without building a Cut: that must never let
    # through a run room() (the limits' full reading) would cut, and take() must decide
    # exactly as room() does, crediting the statement, the session and the window alike.
    window = RollingUsage(3600.0) if with_window else None
    limits = SessionLimits(spec, window)
    budget = Budget()
    budget.rows, budget.bytes, limits.rows, limits.bytes = used[:4]
    if window is not None:
        window.add(used[4], used[5])
    cut = limits.room(budget)
    fits = rows <= cut.rows and nbytes <= cut.bytes
    before = (budget.rows, budget.bytes, limits.rows, limits.bytes)
    window_before = window.used() if window is not None else (0, 0)
    taken = limits.take(budget, rows, nbytes)
    if window is not None:
        added = (rows, nbytes) if fits else (0, 0)
        assert window.used() == (window_before[0] + added[0], window_before[1] + added[1])
    if fits:
        assert taken is None
        assert (budget.rows, budget.bytes, limits.rows, limits.bytes) == (
            before[0] + rows,
            before[1] + nbytes,
            before[2] + rows,
            before[3] + nbytes,
        )
    else:
        assert taken == cut
        assert (budget.rows, budget.bytes, limits.rows, limits.bytes) == before
