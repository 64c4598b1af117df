"""Settings the policy's lexer depends on cannot be changed in ways it cannot read
(found in review: expressions naming a character set, UPDATE pg_settings)."""

from __future__ import annotations

import pytest

from gateway.policy import PolicyEngine, PolicySpec

CONTRACTOR = PolicySpec(name="c", allow=("read", "session", "transaction", "write"))


def decide(sql: str, dialect: str) -> tuple[str, frozenset[str]]:
    d = PolicyEngine.build([CONTRACTOR], dialect).session().check_query(sql)
    return d.action, d.classes


@pytest.mark.parametrize(
    "sql",
    [
        "SET character_set_client = concat('sj','is')",
        "SET character_set_client = 'sj' 'is'",
        "SET character_set_client = _utf8mb4'sjis'",
        "SET character_set_client = lower('SJIS')",
        "SET NAMES 'sj' 'is'",
        "SET NAMES sjis",
        "SET @@session.character_set_client = big5",
    ],
)
def test_mysql_charset_values_that_cannot_be_read_for_certain_are_privilege(sql: str) -> None:
    action, classes = decide(sql, "mysql")
    assert action == "deny" and "privilege" in classes


@pytest.mark.parametrize(
    "sql",
    [
        "SET NAMES utf8mb4",
        "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin'",
        "SET character_set_client = utf8mb4, autocommit = 1",
        "SET character_set_client = 'latin1'",
    ],
)
def test_mysql_plain_safe_charsets_are_session(sql: str) -> None:
    assert decide(sql, "mysql") == ("allow", frozenset({"session"}))


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
        "UPDATE pg_catalog.PG_SETTINGS SET setting = 'SJIS' WHERE name = 'client_encoding'",
        "WITH u AS (UPDATE pg_settings SET setting = 'x' RETURNING 1) SELECT 1",
    ],
)
def test_pg_settings_writes_are_privilege(sql: str) -> None:
    action, classes = decide(sql, "postgres")
    assert action == "deny" and "privilege" in classes and "write" in classes


def test_ordinary_updates_stay_write() -> None:
    assert decide("UPDATE settings SET a = 1 WHERE b = 2", "postgres") == (
        "allow",
        frozenset({"write"}),
    )
