"""LineageCache: one analysis per statement shape (fingerprint, and the skeleton in front of
it), never one shape for texts that differ in more than their literals."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.masking import lineage_cache
from gateway.masking.lineage_cache import LineageCache
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
    assert len(lexed) == lineage_cache._SKELETON_TRIES
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
