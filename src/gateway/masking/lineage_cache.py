"""Statement lineage, cached per target: parsed once per statement shape, not per execution.

The key is the literal-stripped fingerprint of the text (the policy lexer's), so ``WHERE id =
1`` and ``WHERE id = 2`` share one analysis: which columns an output derives from does not
depend on literal values. Texts without a fingerprint are keyed by themselves. Entries name
the catalog version and search path they were computed with; a reloaded catalog makes them
miss.

In front of it, a cheaper key: the text's skeleton (every ASCII digit turned into 0, one C
call; the policy engine's fast key), for texts whose digits all sit in plain number
literals (``skeleton_eligible``), which read the same to the lexer whatever the digit
values and so have one fingerprint. Computing the fingerprint costs about 1.8 µs per
statement, the skeleton 0.1 µs, and a statement with masks active is looked up here twice
(the policy check and the result plan of every execution of a simple query with new
literals).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Final, TypeVar

from ..policy.lexer import LexError, fingerprint, lex, skeleton, skeleton_eligible
from ..policy.lineage import LineageCatalog, StatementLineage, statement_lineage

__all__ = ["LineageCache"]

_MAX_ENTRIES: Final = 4096
_MAX_TEXT: Final = 64 * 1024  # longer texts are analysed but not cached
# Texts of one fingerprint checked for a skeleton entry, at most: one per count of digits
# in their numbers (id = 7, id = 4711, ...); texts that are not eligible (string literals,
# digits in names) stop being lexed for it after that many.
_SKELETON_TRIES: Final = 8

_Key = tuple[str, int, tuple[str, ...]]
_K = TypeVar("_K")
_V = TypeVar("_V")


class LineageCache:
    __slots__ = ("_by_skeleton", "_data", "_tries", "dialect", "misses")

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self._data: OrderedDict[_Key, tuple[StatementLineage, ...]] = OrderedDict()
        self._by_skeleton: OrderedDict[
            tuple[bytes, int, tuple[str, ...]], tuple[StatementLineage, ...]
        ] = OrderedDict()
        self._tries: OrderedDict[_Key, int] = OrderedDict()
        self.misses = 0

    def lineage(
        self, text: str, catalog: LineageCatalog, search_path: tuple[str, ...] | None = None
    ) -> tuple[StatementLineage, ...]:
        """Lineage of every statement in ``text``; ``search_path`` overrides the catalog's
        (MySQL: the session's current database)."""
        path = catalog.search_path if search_path is None else search_path
        if len(text) > _MAX_TEXT:
            self.misses += 1
            return self._analyse(text, catalog, path)
        sk = skeleton(text)
        if sk is not None:
            found = self._by_skeleton.get((sk, catalog.version, path))
            if found is not None:
                return found
        key = (fingerprint(text, self.dialect) or text, catalog.version, path)
        data = self._data
        found = data.get(key)
        if found is None:
            self.misses += 1
            found = self._analyse(text, catalog, path)
            _put(data, key, found)
        if sk is not None and self._try_skeleton(key, text):
            _put(self._by_skeleton, (sk, catalog.version, path), found)
        return found

    def _analyse(
        self, text: str, catalog: LineageCatalog, path: tuple[str, ...]
    ) -> tuple[StatementLineage, ...]:
        if path != catalog.search_path:
            catalog = replace(catalog, search_path=path)
        return statement_lineage(text, self.dialect, catalog)

    def _try_skeleton(self, key: _Key, text: str) -> bool:
        """Whether ``text`` may be filed under its skeleton (lexed to check, a bounded
        number of times per fingerprint)."""
        tries = self._tries.get(key, 0)
        if tries >= _SKELETON_TRIES:
            return False
        _put(self._tries, key, tries + 1)
        try:
            return skeleton_eligible(text, lex(text, self.dialect))
        except LexError:
            return False


def _put(cache: OrderedDict[_K, _V], key: _K, value: _V) -> None:
    """Insert, dropping the oldest entry past the bound."""
    cache[key] = value
    if len(cache) > _MAX_ENTRIES:
        cache.popitem(last=False)
