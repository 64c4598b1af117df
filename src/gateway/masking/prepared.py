"""SQL-level PREPARE, for masking: the lineage of the statement it prepares.

The statement lineage (``policy/lineage.py``) reads ``PREPARE`` as a statement without data:
right for its own result (it has none), but it hides what the body will do once ``EXECUTE``
runs it. ``PREPARE p AS SELECT set_config('my.x', email, false) FROM customers`` then
``EXECUTE p; SHOW my.x`` copies a masked value into a setting the client reads unmasked.

Rules this module enforces:

* A PREPARE gets its body's reads, tables, ``unresolved`` flag and writes (and no outputs:
  PREPARE returns no rows), so every check on writes sees it as it sees the body sent
  directly. PostgreSQL: the statement after ``AS``; MySQL: the string literal after
  ``FROM``, read as a new MySQL text.
* A body the gateway cannot see or follow (MySQL ``PREPARE s FROM @sql``, a body that is not
  exactly one statement, one that does not parse) is ``UNKNOWN_PREPARED``: a write to
  ``PREPARED_BODY`` of unknown values, which the caller refuses while column masks apply.
* PostgreSQL ``PREPARE TRANSACTION 'id'`` (two-phase commit) is left as it was.
"""

from __future__ import annotations

import re
from typing import Final

from ..policy.lexer import LPAREN, STRING, Stmt, lex, split_statements
from ..policy.lineage import LineageCatalog, StatementLineage, statement_lineage

__all__ = ["PREPARED_BODY", "UNKNOWN_PREPARED", "prepared_body", "with_prepared_bodies"]

# Where an unknown prepared body may write (the caller refuses any write to it).
PREPARED_BODY: Final = ("", "<prepared statement>")
UNKNOWN_PREPARED: Final = StatementLineage(
    None, frozenset(), frozenset(), True, ((PREPARED_BODY, frozenset()),)
)
# Texts without the word are left alone without lexing them again.
_MAY_PREPARE: Final = re.compile("prepare", re.IGNORECASE).search


def prepared_body(stmt: Stmt) -> Stmt | str | None:
    """The body of a ``PREPARE`` statement: PostgreSQL a sub-statement, MySQL the text of
    the string literal; None when it cannot be had; ``stmt`` itself for PostgreSQL's
    ``PREPARE TRANSACTION 'id'``, which prepares no statement."""
    if stmt.dialect == "postgres":
        if stmt.kw(1) == "TRANSACTION" and stmt.kind(2) == STRING and len(stmt) == 3:
            return stmt
        if stmt.ident(1) is None:
            return None
        i = 2
        if stmt.kind(i) == LPAREN:  # parameter types
            close = stmt.matching_paren(i)
            if close < 0:
                return None
            i = close + 1
        if stmt.kw(i) != "AS" or i + 1 >= len(stmt):
            return None
        return stmt.sub(i + 1)
    # MySQL: PREPARE name FROM 'text' | "text" | @variable (the last is not visible here).
    if stmt.ident(1) is None or stmt.kw(2) != "FROM" or len(stmt) != 4:
        return None
    return stmt.string_value(3)


def with_prepared_bodies(
    text: str, dialect: str, catalog: LineageCatalog, found: tuple[StatementLineage, ...]
) -> tuple[StatementLineage, ...]:
    """``found`` (``statement_lineage(text, ...)``) with each PREPARE statement's entry
    replaced by its body's lineage (see the module rules)."""
    if _MAY_PREPARE(text) is None:
        return found
    try:
        statements = split_statements(lex(text, dialect), dialect)
    except Exception:
        # The text is already unknown; it may hide a PREPARE, so fail closed.
        return tuple(UNKNOWN_PREPARED for _ in found)
    if len(statements) != len(found):
        return tuple(UNKNOWN_PREPARED for _ in found)  # cannot align: never guess
    out = list(found)
    for n, stmt in enumerate(statements):
        if stmt.kw(0) == "PREPARE":
            out[n] = _prepared(stmt, catalog, found[n])
    return tuple(out)


def _prepared(stmt: Stmt, catalog: LineageCatalog, own: StatementLineage) -> StatementLineage:
    body = prepared_body(stmt)
    if body is stmt:
        return own  # PREPARE TRANSACTION
    if body is None:
        return UNKNOWN_PREPARED
    body_text = body if isinstance(body, str) else body.text
    try:
        inner = statement_lineage(body_text, stmt.dialect, catalog)
        # A body is one statement; servers refuse a PREPARE inside PREPARE, and reading
        # one here would need its own body: unknown.
        first = split_statements(lex(body_text, stmt.dialect), stmt.dialect)[0].kw(0)
    except Exception:
        return UNKNOWN_PREPARED
    if len(inner) != 1 or first == "PREPARE":
        return UNKNOWN_PREPARED
    lineage = inner[0]
    if lineage.outputs is None and lineage.unresolved:
        return UNKNOWN_PREPARED  # not parsed, or not followed: what it writes is unknown
    return StatementLineage((), lineage.reads, lineage.tables, lineage.unresolved, lineage.writes)
