"""A snapshot of a target's tables and columns, as masking needs it.

PostgreSQL names a result column's source by table OID and attribute number
(RowDescription); the snapshot turns those into ``schema.table.column`` for the column
rules. Lineage needs every table's column list (to expand ``*`` and whole-row references)
and every view's definition. The snapshot is loaded on a side connection
(``session/catalog_loader.py``), is immutable, and is replaced whole on reload, so a session
planning a result never sees half of an update.

A table the snapshot does not know (created since the last load) is not a table without
masks: ``source`` says ``UNKNOWN`` and the caller masks the column (fail closed) and asks for
a reload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ..policy.lineage import LineageCatalog, SourceColumn

__all__ = ["UNKNOWN", "Catalog", "build_catalog"]


class _Unknown:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()


@dataclass(frozen=True, slots=True)
class Catalog:
    version: int
    # PostgreSQL: table OID -> (schema, table, {attnum: column}). Empty for MySQL.
    relations: Mapping[int, tuple[str, str, Mapping[int, str]]]
    lineage: LineageCatalog
    # (schema, table) of every relation that has at least one column some rule could match
    # is decided per policy; this is just the column lists, for that check.
    columns: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def source(self, table_oid: int, attnum: int) -> SourceColumn | _Unknown | None:
        """The source column of a RowDescription field: None for a computed column (OID 0
        or a system column), UNKNOWN for a table this snapshot does not know."""
        if table_oid == 0 or attnum <= 0:
            return None
        rel = self.relations.get(table_oid)
        if rel is None:
            return UNKNOWN
        name = rel[2].get(attnum)
        if name is None:
            return UNKNOWN  # a column added since the snapshot
        return (rel[0], rel[1], name)


def build_catalog(
    version: int,
    columns: Iterable[tuple[int, str, str, int, str]],
    views: Iterable[tuple[str, str, str]],
    search_path: tuple[str, ...],
) -> Catalog:
    """A snapshot from catalog rows: ``(table_oid, schema, table, attnum, column)`` in
    attnum order per table (MySQL: OID 0 and the ordinal position), and
    ``(schema, view, definition)``."""
    relations: dict[int, tuple[str, str, dict[int, str]]] = {}
    tables: dict[tuple[str, str], list[str]] = {}
    for oid, schema, table, attnum, column in columns:
        if oid:
            rel = relations.get(oid)
            if rel is None:
                rel = relations[oid] = (schema, table, {})
            rel[2][attnum] = column
        tables.setdefault((schema, table), []).append(column)
    frozen = {key: tuple(cols) for key, cols in tables.items()}
    lineage = LineageCatalog(
        tables=frozen,
        views={(s, v): d for s, v, d in views},
        search_path=search_path,
        version=version,
    )
    return Catalog(version=version, relations=relations, lineage=lineage, columns=frozen)
