"""sqlglot, confined: parse one query or DML statement and read its facts from the AST.

Rules this module enforces:

* A parse result is used only when sqlglot and our lexer agree on which characters of the
  statement are code (not comments or whitespace), token for token span. If they disagree,
  one of them misread a quote or a comment, and an AST built on a misreading is how a
  hidden statement gets through: the statement is ``unknown`` instead.
* Only real statement nodes are accepted, and only the ones its first keyword promises: sqlglot
  happily reads ``CHECKPOINT`` as a column and ``DEALLOCATE p`` as an alias, and falls back
  to an opaque ``Command`` for what it does not know.
* Every exception from sqlglot is the caller's ``unknown``; none escapes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Final

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel
from sqlglot.tokenizer_core import Token, TokenType

from gateway.policy.facts import Name, TableRef
from gateway.policy.lexer import Stmt

__all__ = ["QueryFacts", "parse_statement", "query_facts"]


class _DropCommandFallbackWarnings(logging.Filter):
    # sqlglot logs "'<statement text>' contains unsupported syntax. Falling back to parsing
    # as a 'Command'." That would copy statement text (and any secret literal in it) into
    # the gateway's logs once per distinct statement; the fallback is handled here anyway.
    def filter(self, record: logging.LogRecord) -> bool:
        return "Falling back to parsing as a 'Command'" not in record.getMessage()


logging.getLogger("sqlglot").addFilter(_DropCommandFallbackWarnings())

_DIALECTS: Final[dict[str, Dialect]] = {
    "postgres": Dialect.get_or_raise("postgres"),
    "mysql": Dialect.get_or_raise("mysql"),
}

# First keyword -> statement node types it may produce.
_QUERY_TYPES: Final[tuple[type[object], ...]] = (exp.Query, exp.Values)
_DML_TYPES: Final[tuple[type[object], ...]] = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
)
_EXPECTED: Final[dict[str, tuple[type[object], ...]]] = {
    "SELECT": _QUERY_TYPES,
    "TABLE": _QUERY_TYPES,
    "VALUES": _QUERY_TYPES,
    "(": _QUERY_TYPES,
    "WITH": _QUERY_TYPES + _DML_TYPES,
    "INSERT": (exp.Insert,),
    "UPDATE": (exp.Update,),
    "DELETE": (exp.Delete,),
    "MERGE": (exp.Merge,),
}


def parse_statement(stmt: Stmt, first: str) -> exp.Expr | None:
    """The AST of ``stmt`` if sqlglot parses it into what ``first`` promises, else None."""
    expected = _EXPECTED.get(first)
    if expected is None:
        return None
    dialect = _DIALECTS[stmt.dialect]
    try:
        tokens = dialect.tokenize(stmt.text)
        if not _same_code_spans(stmt, tokens):
            return None
        if stmt.dialect == "postgres":
            _array_types_known(tokens)
        trees = dialect.parser(error_level=ErrorLevel.RAISE).parse(tokens, stmt.text)
    except Exception:
        return None
    if len(trees) != 1:
        return None
    root = trees[0]
    if not isinstance(root, expected):
        return None
    return root


# PostgreSQL types sqlglot does not know as types: "oid[]" then reads as a subscript with
# nothing in it and the parse fails (asyncpg's type introspection casts $1::oid[]). The type
# itself decides no class, so the name is read as a known type instead.
_TYPES_UNKNOWN_TO_SQLGLOT: Final = frozenset(
    {"oid", "regclass", "regtype", "regproc", "regprocedure", "regoper", "regoperator",
     "regnamespace", "regrole", "regconfig", "regdictionary", "regcollation"}
)  # fmt: skip


def _array_types_known(tokens: list[Token]) -> None:
    """Turn ``oid`` in ``oid[]`` (empty brackets: a type, never a subscript) into a type."""
    for i in range(len(tokens) - 2):
        tok = tokens[i]
        if (
            tokens[i + 1].token_type == TokenType.L_BRACKET
            and tokens[i + 2].token_type == TokenType.R_BRACKET
            and tok.text.lower() in _TYPES_UNKNOWN_TO_SQLGLOT
        ):
            tok.token_type = TokenType.INT


def _same_code_spans(stmt: Stmt, tokens: Sequence[object]) -> bool:
    size = len(stmt.text)
    ours = bytearray(size)
    theirs = bytearray(size)
    for tok in stmt.toks:
        ours[tok.start : tok.end] = b"\x01" * (tok.end - tok.start)
    text = stmt.text
    for token in tokens:
        start: int = getattr(token, "start")  # noqa: B009 (sqlglot.tokens.Token is untyped)
        end: int = getattr(token, "end") + 1  # noqa: B009 (inclusive end)
        if start < 0 or end > size or end <= start:
            return False
        raw = text[start:end]
        if raw.startswith("/*+"):
            continue  # MySQL optimizer hint: a comment to our lexer, a hint to sqlglot
        if raw[0].isalpha() and raw[-1].isalpha() and _HAS_SPACE(raw):
            # sqlglot merges keyword pairs ("ORDER BY", "PARTITION BY") into one token
            # that spans the whitespace between them; that whitespace is not code.
            for offset, ch in enumerate(raw):
                if ch not in _SPACES:
                    theirs[start + offset] = 1
        else:
            theirs[start:end] = b"\x01" * (end - start)
    return ours == theirs


_SPACES: Final = frozenset(" \t\n\r\f\v")
_HAS_SPACE: Final = re.compile(r"[ \t\n\r\f\v]").search


class QueryFacts:
    """What the AST of a query or DML statement says (functions come from the tokens)."""

    __slots__ = ("builtins", "classes", "kind", "schemas", "tables")

    def __init__(self) -> None:
        self.kind = ""
        self.classes: set[str] = set()
        self.builtins: set[str] = set()
        self.tables: set[TableRef] = set()
        self.schemas: set[Name] = set()


def _name(ident: exp.Expr | None) -> Name | None:
    if isinstance(ident, exp.Identifier):
        return str(ident.this), bool(ident.args.get("quoted"))
    return None


def _weak_where(node: exp.Expr) -> bool:
    """No WHERE, or a WHERE that references no column at all (WHERE 1=1, WHERE true)."""
    where = node.args.get("where")
    if not isinstance(where, exp.Expr):
        return True
    return next(where.find_all(exp.Column), None) is None


def query_facts(root: exp.Expr, dialect: str) -> QueryFacts:
    facts = QueryFacts()
    if isinstance(root, exp.Insert):
        facts.kind = "INSERT"
    elif isinstance(root, exp.Update):
        facts.kind = "UPDATE"
    elif isinstance(root, exp.Delete):
        facts.kind = "DELETE"
    elif isinstance(root, exp.Merge):
        facts.kind = "MERGE"
    elif isinstance(root, exp.Values):
        facts.kind = "VALUES"
        facts.classes.add("read")
    else:
        facts.kind = "SELECT"
        facts.classes.add("read")

    for node in root.walk():
        if isinstance(node, exp.Table):
            table = _name(node.args.get("this"))
            schema = _name(node.args.get("db"))
            if table is not None:
                facts.tables.add((schema, table))
            if schema is not None:
                facts.schemas.add(schema)
        elif isinstance(node, _DML_TYPES):
            facts.classes.add("write")
            # MERGE's WHEN ... THEN UPDATE/DELETE are bounded by the MERGE's ON condition.
            if isinstance(node.parent, exp.When):
                continue
            if isinstance(node, exp.Delete) and _weak_where(node):
                facts.builtins.add("delete_without_where")
            elif isinstance(node, exp.Update) and _weak_where(node):
                facts.builtins.add("update_without_where")
        elif isinstance(node, exp.Select) and dialect == "postgres":
            into = node.args.get("into")
            if isinstance(into, exp.Into):
                # SELECT ... INTO new_table creates and fills a table (CREATE TABLE AS).
                facts.classes.update(("ddl", "write"))
                if node is root:
                    facts.kind = "SELECT INTO"
                    facts.classes.discard("read")
    return facts
