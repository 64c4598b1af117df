"""Statement lineage, cached per target: parsed once per statement shape, not per execution.

The key is the literal-stripped fingerprint of the text (the policy lexer's), so ``WHERE id =
1`` and ``WHERE id = 2`` share one analysis: which columns an output derives from does not
depend on literal values. Texts without a fingerprint are keyed by themselves. Entries name
the catalog version and search path they were computed with; a reloaded catalog makes them
miss.

Except where a string literal's value can change the lineage: MySQL takes strings as names
(``SELECT lower(ssn) AS 'e'``, ``... lower(ssn) 'e'``, ``FROM t 'x'``), so ``... AS 'e', ...
AS 'n'`` and the same with the aliases swapped share a fingerprint but not a lineage; and a
MySQL ``PREPARE s FROM '...'`` body is a string. A text is filed under its fingerprint only if
every string the fingerprint strips is a plain value in the AST (``_literal_dependent``);
otherwise its fingerprint is marked, and it and every text of that shape are keyed by their
exact text. Whether a string token is read as a name depends on the tokens around it, which
the fingerprint keeps, not on its value, so the mark holds for the whole shape.

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

from ..policy.lexer import (
    LPAREN,
    STRING,
    LexError,
    Stmt,
    fingerprint,
    lex,
    skeleton,
    skeleton_eligible,
    split_statements,
)
from ..policy.lineage import LineageCatalog, StatementLineage, statement_lineage
from ..policy.sqlast import parse_statement
from .prepared import prepared_body, with_prepared_bodies

__all__ = ["LineageCache"]

_MAX_ENTRIES: Final = 4096
_MAX_TEXT: Final = 64 * 1024  # longer texts are analysed but not cached
# Texts of one fingerprint checked for a skeleton entry, at most: one per count of digits
# in their numbers (id = 7, id = 4711, ...); texts that are not eligible (string literals,
# digits in names) stop being lexed for it after that many.
_SKELETON_TRIES: Final = 8

_Key = tuple[str, int, tuple[str, ...]]
# Filed under a fingerprint whose texts are keyed by exact text (see above). A unique tuple
# (compared by identity) that reads as "unknown" if it ever escaped.
_BY_TEXT: Final[tuple[StatementLineage, ...]] = (
    StatementLineage(None, frozenset(), frozenset(), True),
)
_K = TypeVar("_K")
_V = TypeVar("_V")


class LineageCache:
    __slots__ = ("_by_skeleton", "_by_text", "_data", "_tries", "dialect", "misses")

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self._data: OrderedDict[_Key, tuple[StatementLineage, ...]] = OrderedDict()
        self._by_skeleton: OrderedDict[
            tuple[bytes, int, tuple[str, ...]], tuple[StatementLineage, ...]
        ] = OrderedDict()
        self._tries: OrderedDict[_Key, int] = OrderedDict()
        # Texts whose lineage may depend on a string literal, by exact text (a separate
        # map: an exact text can equal another text's fingerprint).
        self._by_text: OrderedDict[_Key, tuple[StatementLineage, ...]] = OrderedDict()
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
        fp = fingerprint(text, self.dialect)
        key = (fp or text, catalog.version, path)
        data = self._data
        found = data.get(key)
        if found is _BY_TEXT:
            key = (text, catalog.version, path)
            found = self._by_text.get(key)
            if found is None:
                self.misses += 1
                found = self._analyse(text, catalog, path)
                _put(self._by_text, key, found)
        elif found is None:
            self.misses += 1
            found = self._analyse(text, catalog, path)
            # (Without a quote there is no string; fp == text does not say so: AS '' keeps.)
            if fp is not None and "'" in text and _literal_dependent(text, self.dialect):
                _put(data, key, _BY_TEXT)
                key = (text, catalog.version, path)
                _put(self._by_text, key, found)
            else:
                _put(data, key, found)
        if sk is not None and self._try_skeleton(key, text):
            _put(self._by_skeleton, (sk, catalog.version, path), found)
        return found

    def _analyse(
        self, text: str, catalog: LineageCatalog, path: tuple[str, ...]
    ) -> tuple[StatementLineage, ...]:
        if path != catalog.search_path:
            catalog = replace(catalog, search_path=path)
        found = statement_lineage(text, self.dialect, catalog)
        return with_prepared_bodies(text, self.dialect, catalog, found)

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


def _literal_dependent(text: str, dialect: str) -> bool:
    """Whether the lineage of ``text`` may depend on the value of a string literal the
    fingerprint strips (when unsure: yes)."""
    try:
        statements = split_statements(lex(text, dialect), dialect)
    except LexError:
        return True
    return any(_statement_literal_dependent(stmt, nested=False) for stmt in statements)


def _statement_literal_dependent(stmt: Stmt, *, nested: bool) -> bool:
    strings = {t.start for t in stmt.toks if t.kind == STRING}
    if not strings:
        return False
    first = "(" if stmt.kind(0) == LPAREN else stmt.kw(0)
    if first == "PREPARE" and stmt.dialect == "postgres" and not nested:
        body = prepared_body(stmt)
        return (
            not isinstance(body, Stmt)
            or body is stmt
            or _statement_literal_dependent(body, nested=True)
        )
    # Only query and DML statements are checked on their AST; anything else holding a
    # string (MySQL PREPARE ... FROM '...' included) is keyed by its text.
    root = parse_statement(stmt, first)
    if root is None:
        return True
    # Walked by node key: only policy/ imports sqlglot (tests/unit/test_layering.py).
    for node in root.walk():
        if node.key != "identifier":
            continue
        start = node.meta.get("start") if node.meta else None
        # A string token read as a name ('e' as an alias, a table or CTE name); or a name
        # sqlglot made up without a position (PIVOT ... IN ('x') names columns by strings).
        if start is None or start in strings:
            return True
    return False


def _put(cache: OrderedDict[_K, _V], key: _K, value: _V) -> None:
    """Insert, dropping the oldest entry past the bound."""
    cache[key] = value
    if len(cache) > _MAX_ENTRIES:
        cache.popitem(last=False)
