"""Statement lineage, cached per target: parsed once per statement shape, not per execution.

The key is the literal-stripped fingerprint of the text (the policy lexer's), so ``WHERE id =
1`` and ``WHERE id = 2`` share one analysis: which columns an output derives from does not
depend on literal values. Texts without a fingerprint are keyed by themselves. Entries name
the catalog version and search path they were computed with; a reloaded catalog makes them
miss.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Final

from ..policy.lexer import fingerprint
from ..policy.lineage import LineageCatalog, StatementLineage, statement_lineage

__all__ = ["LineageCache"]

_MAX_ENTRIES: Final = 4096
_MAX_TEXT: Final = 64 * 1024  # longer texts are analysed but not cached


class LineageCache:
    __slots__ = ("_data", "dialect", "misses")

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self._data: OrderedDict[tuple[str, int, tuple[str, ...]], tuple[StatementLineage, ...]]
        self._data = OrderedDict()
        self.misses = 0

    def lineage(
        self, text: str, catalog: LineageCatalog, search_path: tuple[str, ...] | None = None
    ) -> tuple[StatementLineage, ...]:
        """Lineage of every statement in ``text``; ``search_path`` overrides the catalog's
        (MySQL: the session's current database)."""
        path = catalog.search_path if search_path is None else search_path
        key_text = fingerprint(text, self.dialect) if len(text) <= _MAX_TEXT else None
        key = (key_text or text, catalog.version, path)
        data = self._data
        found = data.get(key)
        if found is not None:
            return found
        self.misses += 1
        if path != catalog.search_path:
            catalog = replace(catalog, search_path=path)
        result = statement_lineage(text, self.dialect, catalog)
        if len(text) <= _MAX_TEXT:
            data[key] = result
            if len(data) > _MAX_ENTRIES:
                data.popitem(last=False)
        return result
