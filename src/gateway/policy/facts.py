"""What the classifier learned about one statement: the input to every decision.

Facts are plain, immutable and independent of any policy or session, so one result is
shared by every session through the engine's caches. Session state (SQL-level prepared
statements) is referenced by name (``execute``, ``prepare``, ``deallocate``) and resolved by
the SessionPolicy at decision time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

__all__ = ["Name", "StatementFacts", "TableRef", "merge_facts", "unknown_facts"]

# An identifier as written: (text, quoted). Quoting matters for PostgreSQL name folding.
Name = tuple[str, bool]
# (schema or None, table)
TableRef = tuple[Name | None, Name]

_EMPTY_STR: Final[frozenset[str]] = frozenset()


@dataclass(frozen=True, slots=True)
class StatementFacts:
    kind: str
    classes: frozenset[str]
    builtins: frozenset[str] = _EMPTY_STR  # built-in rule names this statement triggers
    tables: frozenset[TableRef] = frozenset()
    functions: frozenset[str] = _EMPTY_STR  # called function names, casefolded
    schemas: frozenset[Name] = frozenset()
    # The classes depend on a literal value (set_config('role', ...), SET sql_mode = '...',
    # PREPARE s FROM '...'): never share this result through the literal-stripped fingerprint.
    literal_dependent: bool = False
    # SQL-level prepared statements (resolved per session).
    prepare: str | None = None  # PREPARE <prepare>; ``body`` holds the prepared statement
    body: StatementFacts | None = field(default=None, compare=True)
    execute: str | None = None  # EXECUTE <execute>: the prepared body's facts are added
    deallocate: str | None = None  # DEALLOCATE <name>, "*" for ALL / DISCARD ALL

    @property
    def stateful(self) -> bool:
        return self.prepare is not None or self.execute is not None or self.deallocate is not None


def merge_facts(
    outer: StatementFacts, inner: StatementFacts, *, kind: str | None = None
) -> StatementFacts:
    """``outer`` extended by what ``inner`` contributes (for wrappers such as EXPLAIN ANALYZE)."""
    return replace(
        outer,
        kind=kind if kind is not None else outer.kind,
        classes=outer.classes | inner.classes,
        builtins=outer.builtins | inner.builtins,
        tables=outer.tables | inner.tables,
        functions=outer.functions | inner.functions,
        schemas=outer.schemas | inner.schemas,
        literal_dependent=outer.literal_dependent or inner.literal_dependent,
        execute=outer.execute if outer.execute is not None else inner.execute,
    )


def unknown_facts(
    tables: frozenset[TableRef] = frozenset(),
    functions: frozenset[str] = _EMPTY_STR,
    schemas: frozenset[Name] = frozenset(),
) -> StatementFacts:
    return StatementFacts(
        kind="UNKNOWN",
        classes=frozenset({"unknown"}),
        tables=tables,
        functions=functions,
        schemas=schemas,
    )
