"""The engine's caches (exact text, digit skeleton, fingerprint) and its fail-closed edges."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.policy import PolicyEngine, PolicySpec, RuleSpec, sqlast
from gateway.policy import classify as classify_module
from gateway.policy import engine as engine_module

RULES = (
    RuleSpec("payroll", tables=("hr.payroll",)),
    RuleSpec("hr", schemas=("hr",)),
)
POLICY = PolicySpec(
    name="p",
    allow=("read", "write", "session", "transaction"),
    deny=("delete_without_where", "payroll", "hr"),
    rules=RULES,
)


def build(**kwargs: Any) -> PolicyEngine:
    return PolicyEngine.build([POLICY], "postgres", **kwargs)


class Counter:
    """Counts cold-path classifications."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = engine_module.classify_lexed

        def counting(*args: Any) -> Any:
            self.calls += 1
            return real(*args)

        monkeypatch.setattr(engine_module, "classify_lexed", counting)


def test_exact_hit_returns_the_same_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter(monkeypatch)
    s = build().session()
    first = s.check_query("SELECT * FROM t WHERE a = 'x'")
    assert s.check_query("SELECT * FROM t WHERE a = 'x'") is first
    assert counter.calls == 1


def test_new_number_literals_share_one_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter(monkeypatch)
    engine = build()
    s = engine.session()
    for aid in (12345, 54321, 99999, 7, 1234567):
        d = s.check_query(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid};")
        assert (d.action, d.rule) == ("allow", "allow:read")
    assert counter.calls == 1
    assert engine.cache_sizes[1] >= 1  # skeleton entries


def test_new_string_literals_share_one_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter(monkeypatch)
    s = build().session()
    for email in ("a@x.org", "b@y.org", "it''s@z.org"):
        assert s.check_query(f"SELECT * FROM users WHERE email = '{email}'").action == "allow"
    assert counter.calls == 1


def test_literal_dependent_statements_are_not_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter(monkeypatch)
    engine = build()
    s = engine.session()
    assert s.check_query("SELECT set_config('work_mem', '1MB', false)").action == "allow"
    d = s.check_query("SELECT set_config('role', 'admin', false)")
    assert (d.action, d.rule) == ("deny", "class:privilege not allowed")
    assert s.check_query("SET search_path = 'public'").action == "allow"
    assert s.check_query("SET search_path = 'hr'").rule == "rule:hr"
    assert counter.calls == 4
    assert engine.cache_sizes[2] == 0  # nothing filed under a fingerprint


def test_digits_in_identifiers_are_never_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    rule = RuleSpec("t2", tables=("t2",))
    engine = PolicyEngine.build(
        [PolicySpec(name="p", allow=("read",), deny=("t2",), rules=(rule,))], "postgres"
    )
    s = engine.session()
    assert s.check_query("SELECT * FROM t1 WHERE a = 1").action == "allow"
    assert s.check_query("SELECT * FROM t2 WHERE a = 1").action == "deny"
    assert s.check_query('SELECT * FROM "t2" WHERE a = 2').action == "deny"
    assert s.check_query("SELECT * FROM t2 WHERE a = 3").action == "deny"


def test_caches_are_bounded() -> None:
    engine = build(max_entries=16)
    s = engine.session()
    for i in range(200):
        s.check_query(f"SELECT c{i} FROM t{i} WHERE a = {i}")
    assert all(size <= 16 for size in engine.cache_sizes)
    small = build(max_cached_chars=200)
    s = small.session()
    for i in range(200):
        s.check_query(f"SELECT c{i} FROM table_with_a_long_name_{i} WHERE a = 'x'")
    assert len(small._exact) <= 10
    assert small._exact.chars <= 200


def test_huge_texts_are_not_parsed() -> None:
    s = build(max_parse_chars=100).session()
    d = s.check_query("SELECT 1 WHERE 'x' = '" + "x" * 200 + "'")
    assert d.rule == "class:unknown not allowed"


_CORPUS = [
    "SELECT * FROM t WHERE id = 1",
    "SELECT * FROM hr.payroll WHERE id = 2",
    "SELECT * FROM payroll",
    "DELETE FROM t",
    "DELETE FROM t WHERE id = 3",
    "UPDATE t SET a = 'x' WHERE id = 4",
    "INSERT INTO t VALUES (5, 'y')",
    "SET search_path TO hr",
    "SET work_mem = '64MB'",
    "SELECT set_config('role', 'x', false)",
    "SELECT set_config('work_mem', '1MB', false)",
    "BEGIN",
    "COMMIT",
    "DROP TABLE t",
    "SELECT 'a\\'; DROP TABLE t; --'",
    "SELECT 1; DROP TABLE t",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "EXPLAIN ANALYZE DELETE FROM t WHERE id = 6",
    "COPY t TO STDOUT",
    "garbage",
    "SELECT 'open",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT * FROM t WHERE x = 7 /* 8 */ AND y = 'z'",
]


def _variants(sql: str, rng: random.Random) -> list[str]:
    out = [sql]
    out.append("".join(str(rng.randint(0, 9)) if ch.isdigit() else ch for ch in sql))
    out.append(sql.replace("'x'", "'other'").replace("'y'", "'q''q'"))
    return out


def test_cached_decisions_equal_uncached_ones() -> None:
    rng = random.Random(5)
    texts = [v for sql in _CORPUS for v in _variants(sql, rng)]
    shared = build().session()
    order = texts * 3
    rng.shuffle(order)
    for sql in order:
        fresh = build().session().check_query(sql)
        assert shared.check_query(sql) == fresh, sql


def test_mysql_cache_keeps_executable_comments_apart() -> None:
    engine = PolicyEngine.build([PolicySpec(name="p", allow=("read",))], "mysql")
    s = engine.session()
    assert s.check_query("SELECT 1 /* 2 */").action == "allow"
    assert s.check_query("SELECT 1 /*!50000 , LOAD_FILE('/x') */").action == "deny"
    assert s.check_query("SELECT 2 /*!50000 , LOAD_FILE('/y') */").action == "deny"
    assert s.check_query("SELECT 3 /* 2 */").action == "allow"


# --------------------------------------------------------------------------- fail closed


def test_sqlglot_failure_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def tokenize(self, sql: str) -> list[object]:
            raise RuntimeError("boom")

    monkeypatch.setattr(sqlast, "_DIALECTS", {"postgres": Broken(), "mysql": Broken()})
    everything = PolicyEngine.build([PolicySpec(name="p", allow=("*",))], "postgres")
    d = everything.session().check_query("SELECT 1")
    assert (d.action, d.rule) == ("deny", "class:unknown not allowed")


def test_classifier_failure_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setitem(classify_module._PG, "DROP", explode)
    s = PolicyEngine.build([PolicySpec(name="p", allow=("*",))], "postgres").session()
    assert s.check_query("DROP TABLE t").rule == "class:unknown not allowed"
    monkeypatch.setattr(engine_module, "classify_lexed", explode)
    assert s.check_query("SELECT 42").rule == "class:unknown not allowed"


def test_engine_failure_is_a_deny(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = PolicyEngine.build([PolicySpec(name="p", allow=("*", "unknown"))], "postgres")
    s = engine.session()

    def explode(self: PolicyEngine, sql: str) -> Any:
        raise MemoryError

    monkeypatch.setattr(PolicyEngine, "analyse", explode)
    d = s.check_query("SELECT 'never seen'")
    assert (d.action, d.rule) == ("deny", "error:internal")


@pytest.mark.parametrize(
    "sql",
    [
        "",
        "\x00",
        "SELECT '\ud800'",
        "SELECT " + "(" * 5000,
        "'" * 1001,
        "/*" * 1000,
        "$$" * 1000 + "x",
        "SELECT 1" + ";" * 10000,
        "é" * 1000,
    ],
)
def test_odd_inputs_never_raise(sql: str) -> None:
    for dialect in ("postgres", "mysql"):
        s = PolicyEngine.build([PolicySpec(name="p", allow=("read",))], dialect).session()
        d = s.check_query(sql)
        assert d.action in ("allow", "deny")
