"""SQL-level prepared statements the server did not create: the session's map of names
follows the server, not the gateway's own decisions (a reviewer-approved body kept under a
name must not be reachable through a later PREPARE of that name that failed)."""

from __future__ import annotations

import pytest

from gateway.policy.engine import PolicyEngine, SessionPolicy
from gateway.policy.spec import PolicySpec


@pytest.mark.parametrize(
    ("dialect", "prepare", "execute"),
    [
        ("mysql", "PREPARE p FROM 'SELECT 1'", "EXECUTE p"),
        ("mysql", "SELECT * FROM missing; PREPARE p FROM 'SELECT 1'", "EXECUTE p"),
        ("postgres", "PREPARE p AS SELECT 1", "EXECUTE p"),
    ],
)
def test_a_prepare_the_server_failed_is_forgotten(dialect: str, prepare: str, execute: str) -> None:
    policy = SessionPolicy(PolicyEngine.build([PolicySpec(name="p", allow=("read",))], dialect))
    assert policy.check_query(prepare).action == "allow"
    assert policy.check_query(execute).action == "allow"  # the gateway believes p is SELECT 1
    policy.statement_failed(prepare)  # the server refused it: p may be anything (or nothing)
    decision = policy.check_query(execute)
    assert decision.action == "deny" and "unknown" in (decision.rule or "")


def test_a_failed_text_without_prepared_names_changes_nothing() -> None:
    policy = SessionPolicy(PolicyEngine.build([PolicySpec(name="p", allow=("read",))], "mysql"))
    policy.check_query("PREPARE p FROM 'SELECT 1'")
    policy.statement_failed("SELECT * FROM missing")
    assert policy.check_query("EXECUTE p").action == "allow"
    policy.statement_failed("DEALLOCATE PREPARE p")
    assert policy.check_query("EXECUTE p").action == "deny"
