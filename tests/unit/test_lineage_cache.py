"""LineageCache: one analysis per statement shape (fingerprint, and the skeleton in front of
it), never one shape for texts that differ in more than their literals."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.masking import lineage_cache
from gateway.masking.lineage_cache import LineageCache
from gateway.masking.prepared import UNKNOWN_PREPARED
from gateway.policy.lineage import LineageCatalog

TABLES = {
    ("public", "t1"): ("a", "secret"),
    ("public", "t2"): ("a", "other"),
    ("public", "accounts"): ("aid", "abalance"),
}


def catalog(version: int = 0) -> LineageCatalog:
    return LineageCatalog(TABLES, {}, ("public",), version)


def sources(found: Any) -> list[set[str]]:
    (statement,) = found
    return [{f"{table}.{column}" for _, table, column in out} for out in statement.outputs]


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_number_literals_share_one_analysis(dialect: str) -> None:
    cache = LineageCache(dialect)
    texts = [f"SELECT abalance FROM accounts WHERE aid = {n}" for n in (7, 4711, 8, 1234, 9)]
    found = [cache.lineage(text, catalog()) for text in texts]
    assert cache.misses == 1
    assert all(f is found[0] for f in found)
    assert sources(found[0]) == [{"accounts.abalance"}]
    # The later ones came from the skeleton key: no fingerprint computed for them.
    assert len(cache._by_skeleton) == 2  # one per count of digits seen (7, 4711)


def test_digits_in_names_are_not_literals() -> None:
    cache = LineageCache("postgres")
    one = cache.lineage("SELECT secret FROM t1", catalog())
    two = cache.lineage("SELECT other FROM t2", catalog())
    assert sources(one) == [{"t1.secret"}] and sources(two) == [{"t2.other"}]
    # Same skeleton ("t0"), but not eligible: never filed under it.
    a = cache.lineage("SELECT a FROM t1", catalog())
    b = cache.lineage("SELECT a FROM t2", catalog())
    assert sources(a) == [{"t1.a"}] and sources(b) == [{"t2.a"}]
    assert not cache._by_skeleton


def test_a_text_that_is_not_eligible_is_lexed_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lexed: list[str] = []
    real = lineage_cache.lex

    def counting(text: str, dialect: str) -> Any:
        lexed.append(text)
        return real(text, dialect)

    monkeypatch.setattr(lineage_cache, "lex", counting)
    cache = LineageCache("postgres")
    for n in range(50):  # one fingerprint, a new string literal (and skeleton) each time
        cache.lineage(f"SELECT a FROM t1 WHERE secret = 'v{n}'", catalog())
    assert cache.misses == 1
    # (+1: on the miss, whether its strings are plain values, _literal_dependent)
    assert len(lexed) == lineage_cache._SKELETON_TRIES + 1
    assert not cache._by_skeleton


def test_a_reloaded_catalog_or_another_search_path_misses() -> None:
    cache = LineageCache("postgres")
    cache.lineage("SELECT a FROM t1 WHERE a = 1", catalog(0))
    cache.lineage("SELECT a FROM t1 WHERE a = 2", catalog(1))
    assert cache.misses == 2
    found = cache.lineage("SELECT a FROM t1 WHERE a = 3", catalog(1), ("other",))
    assert cache.misses == 3
    (statement,) = found
    assert statement.unresolved  # t1 is not in schema "other"


# --------------------------------------------------------------------------- string literals
# MySQL reads a string as a name (``AS 'e'``, or just ``'e'`` after an expression): two
# texts that differ only in those strings share a fingerprint, never a lineage.

MY_TABLES = {("app", "customers"): ("id", "name", "email", "ssn")}


def my_catalog() -> LineageCatalog:
    return LineageCatalog(MY_TABLES, {}, ("app",))


@pytest.mark.parametrize("alias", ["AS ", ""], ids=["as", "bare"])
def test_string_aliases_are_never_shared_through_the_fingerprint(alias: str) -> None:
    cache = LineageCache("mysql")
    outer = "SELECT concat(e,'') AS v FROM (SELECT lower(ssn) {a}'{x}', lower(name) {a}'{y}' "
    outer += "FROM customers WHERE id={n}) t"
    first = cache.lineage(outer.format(a=alias, x="n", y="e", n=5), my_catalog())
    swapped = cache.lineage(outer.format(a=alias, x="e", y="n", n=7), my_catalog())
    assert sources(first) == [{"customers.name"}]
    assert sources(swapped) == [{"customers.ssn"}]
    # Both orders, and texts that differ only in numbers still share their analysis.
    again = cache.lineage(outer.format(a=alias, x="n", y="e", n=8), my_catalog())
    assert sources(again) == [{"customers.name"}]
    assert cache.lineage(outer.format(a=alias, x="e", y="n", n=9), my_catalog()) is swapped


def test_string_table_and_cte_names_are_keyed_by_text() -> None:
    cache = LineageCache("mysql")
    a = cache.lineage("SELECT x.ssn FROM customers 'x', customers 'y'", my_catalog())
    b = cache.lineage("SELECT x.ssn FROM customers 'y', customers 'x'", my_catalog())
    assert sources(a) == sources(b) == [{"customers.ssn"}]
    assert cache.misses == 2


def test_strings_that_are_values_still_share_one_analysis() -> None:
    cache = LineageCache("mysql")
    for value in ("a", "b", "c"):
        found = cache.lineage(
            f"SELECT name, email->>'$.x' FROM customers WHERE name = '{value}'", my_catalog()
        )
        assert sources(found) == [{"customers.name"}, {"customers.email"}]
    assert cache.misses == 1
    assert not cache._by_text


def test_empty_string_aliases_do_not_make_a_shared_entry() -> None:
    # ''-aliases read like the fingerprint itself: the text must still not be shared.
    cache = LineageCache("mysql")
    text = "SELECT v FROM (SELECT lower(ssn) AS '{x}', lower(name) AS '{y}' FROM customers) t"
    cache.lineage(text.format(x="", y="v"), my_catalog())
    cache.lineage(text.format(x="", y=""), my_catalog())
    found = cache.lineage(text.format(x="v", y=""), my_catalog())
    assert sources(found) == [{"customers.ssn"}]


# --------------------------------------------------------------------------- SQL-level PREPARE
# Its lineage is the prepared statement's: what EXECUTE will write is seen at PREPARE.

PG_TABLES = {
    ("public", "customers"): ("id", "name", "email", "ssn"),
    ("public", "orders"): ("id", "status", "customer_id"),
}


def pg_catalog() -> LineageCatalog:
    return LineageCatalog(PG_TABLES, {}, ("public",))


def writes(found: Any) -> list[tuple[str, set[str]]]:
    (statement,) = found
    return [(t, {f"{c[1]}.{c[2]}" for c in cols}) for (_, t), cols in statement.writes]


@pytest.mark.parametrize(
    ("dialect", "sql", "expected"),
    [
        (
            "postgres",
            "PREPARE p AS SELECT set_config('my.x', email, false) FROM customers WHERE id=1",
            [("<untracked>", {"customers.email"})],
        ),
        (
            "postgres",
            "PREPARE x AS UPDATE orders SET status = (SELECT email FROM customers WHERE id=1) "
            "WHERE id=1",
            [("orders", {"customers.email"})],
        ),
        (
            "postgres",
            "PREPARE q (int, text) AS INSERT INTO orders (status) SELECT ssn FROM customers "
            "WHERE id = $1",
            [("orders", {"customers.ssn"})],
        ),
        (
            "mysql",
            "PREPARE s FROM 'SELECT email INTO @v FROM customers WHERE id=1'",
            [("<untracked>", {"customers.email"})],
        ),
        (
            "mysql",
            "PREPARE s2 FROM 'SELECT @w := ssn FROM customers WHERE id=1'",
            [("<untracked>", {"customers.ssn"})],
        ),
        ("mysql", "PREPARE s3 FROM 'SELECT name FROM customers WHERE id = ?'", []),
        ("postgres", "PREPARE s3 AS SELECT name FROM customers WHERE id = $1", []),
    ],
)
def test_prepare_carries_the_writes_of_its_body(
    dialect: str, sql: str, expected: list[tuple[str, set[str]]]
) -> None:
    found = LineageCache(dialect).lineage(
        sql, pg_catalog() if dialect == "postgres" else my_catalog()
    )
    assert writes(found) == expected
    assert found[0].outputs == ()  # PREPARE itself returns no rows


def test_mysql_prepare_bodies_are_keyed_by_text() -> None:
    cache = LineageCache("mysql")
    harmless = cache.lineage("PREPARE s FROM 'SELECT name FROM customers'", my_catalog())
    leaky = cache.lineage("PREPARE s FROM 'SELECT email INTO @v FROM customers'", my_catalog())
    assert writes(harmless) == []
    assert writes(leaky) == [("<untracked>", {"customers.email"})]


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("mysql", "PREPARE s FROM @sql"),
        ("mysql", "PREPARE s FROM 'SELECT 1; SELECT 2'"),
        ("mysql", "PREPARE s FROM 'SELEC email FROM customers'"),
        ("mysql", "PREPARE s FROM X'53454c454354'"),
        ("postgres", "PREPARE p AS"),
        ("postgres", "PREPARE p AS FROBNICATE customers"),
        ("postgres", "PREPARE p AS EXECUTE q"),
    ],
)
def test_prepare_of_a_body_not_followed_is_unknown_prepared(dialect: str, sql: str) -> None:
    found = LineageCache(dialect).lineage(
        sql, pg_catalog() if dialect == "postgres" else my_catalog()
    )
    assert found == (UNKNOWN_PREPARED,)


def test_prepare_transaction_is_not_a_prepared_statement() -> None:
    found = LineageCache("postgres").lineage("PREPARE TRANSACTION 'gid-1'", pg_catalog())
    assert found[0].outputs == () and not found[0].writes and not found[0].unresolved
