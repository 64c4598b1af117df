"""Helpers shared by the statement classifiers: function scan, name harvest, facts builder.

Function calls are found in the token stream (a name followed by ``(``), not in the AST:
the tokens show what the client wrote, whatever sqlglot maps a function to, and they work
for statements sqlglot cannot parse. Over-matching (a table called like a dangerous function)
only ever adds classes, which is the fail-closed direction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from gateway.policy.facts import Name, StatementFacts, TableRef
from gateway.policy.lexer import DOT, LPAREN, NUMBER, QIDENT, STRING, WORD, XSTRING, Stmt
from gateway.policy.vocabulary import (
    FUNCTION_BUILTINS,
    FUNCTION_CLASSES,
    FUNCTION_PREFIX_CLASSES,
    PG_PRIVILEGE_SETTINGS,
)

__all__ = ["Recurse", "Scan", "build", "harvest_names", "pg_setting_classes", "scan_functions"]

Recurse = Callable[[Stmt], StatementFacts]

# Keywords that are followed by "(" without being function calls; kept out of the
# ``functions`` facts so custom rules on function names do not match them.
_NOT_FUNCTIONS: Final[frozenset[str]] = frozenset(
    [
        "all",
        "and",
        "any",
        "array",
        "as",
        "between",
        "by",
        "case",
        "cast",
        "check",
        "columns",
        "cube",
        "default",
        "distinct",
        "else",
        "except",
        "exists",
        "fields",
        "filter",
        "for",
        "foreign",
        "from",
        "group",
        "grouping",
        "having",
        "in",
        "index",
        "insert",
        "intersect",
        "into",
        "is",
        "join",
        "key",
        "lateral",
        "like",
        "limit",
        "lines",
        "not",
        "of",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "over",
        "partition",
        "primary",
        "range",
        "references",
        "returning",
        "rollup",
        "row",
        "rows",
        "select",
        "set",
        "sets",
        "some",
        "table",
        "then",
        "to",
        "union",
        "unique",
        "using",
        "values",
        "when",
        "where",
        "window",
        "with",
        "within",
    ]
)
_PG_SAFE_ENCODINGS: Final[frozenset[str]] = frozenset(
    {"utf8", "utf-8", "unicode", "default", "sql_ascii"}
)
_PG_TRUE: Final[frozenset[str]] = frozenset({"on", "true", "yes", "1", "t", "y"})


class Scan:
    __slots__ = ("builtins", "classes", "functions", "literal_dependent", "schemas")

    def __init__(self) -> None:
        self.functions: set[str] = set()
        self.classes: set[str] = set()
        self.builtins: set[str] = set()
        self.schemas: set[Name] = set()
        self.literal_dependent = False


def scan_functions(stmt: Stmt) -> Scan:
    """Every ``name(`` in the statement, with the classes its name implies."""
    scan = Scan()
    toks = stmt.toks
    for i in range(len(toks) - 1):
        if toks[i + 1].kind != LPAREN or toks[i].kind not in (WORD, QIDENT):
            if stmt.kws(i, 3) == ("NEXT", "VALUE", "FOR"):
                # MariaDB's NEXT VALUE FOR s is nextval(s) without the parentheses.
                scan.functions.add("nextval")
                scan.classes.update(FUNCTION_CLASSES["nextval"])
            continue
        ident = stmt.ident(i)
        assert ident is not None
        name = ident[0].casefold()
        if i >= 2 and toks[i - 1].kind == DOT:
            schema = stmt.ident(i - 2)
            if schema is not None:
                scan.schemas.add(schema)
        if name not in _NOT_FUNCTIONS or ident[1]:
            scan.functions.add(name)
        classes = FUNCTION_CLASSES.get(name)
        if classes is not None:
            scan.classes.update(classes)
            scan.builtins.update(FUNCTION_BUILTINS.get(name, ()))
        for prefix, prefix_classes in FUNCTION_PREFIX_CLASSES:
            if name.startswith(prefix):
                scan.classes.update(prefix_classes)
        if name == "set_config":
            _scan_set_config(stmt, i + 2, scan)
    if "file" in scan.classes:
        scan.builtins.add("file_access")
    return scan


def _scan_set_config(stmt: Stmt, arg: int, scan: Scan) -> None:
    """set_config('name', value, is_local): the class depends on the setting's name."""
    setting = stmt.string_value(arg)
    if setting is None or stmt.kind(arg + 1) != ",":
        scan.classes.add("privilege")  # computed name: it could be "role"
        return
    scan.literal_dependent = True
    name = setting.strip().casefold()
    value_tok = arg + 2
    value = stmt.string_value(value_tok) if stmt.kind(value_tok + 1) in (",", ")") else None
    scan.classes.update(pg_setting_classes(name, None if value is None else [value]))
    if name == "search_path":
        if value is None:
            scan.classes.add("privilege")  # unseen schemas
        else:
            scan.schemas.update(search_path_schemas(value))


def pg_setting_classes(name: str, values: list[str] | None) -> set[str]:
    """Classes of setting PostgreSQL parameter ``name`` (lower case) to ``values``.

    ``values`` is None when the value is not visible (an expression or parameter).
    """
    if name in PG_PRIVILEGE_SETTINGS:
        return {"privilege"}
    if name == "standard_conforming_strings":
        # off makes '\'' an escape: the server and this lexer would split text differently.
        if values is None or not all(v.strip().casefold() in _PG_TRUE for v in values):
            return {"privilege"}
    elif name == "client_encoding" and (
        values is None or not all(v.strip().casefold() in _PG_SAFE_ENCODINGS for v in values)
    ):
        return {"privilege"}
    return {"session"}


def search_path_schemas(value: str) -> set[Name]:
    out: set[Name] = set()
    for part in value.split(","):
        part = part.strip()
        if len(part) >= 2 and part[0] == part[-1] == '"':
            out.add((part[1:-1].replace('""', '"'), True))
        elif part:
            out.add((part, False))
    return out


def harvest_names(stmt: Stmt, start: int = 0) -> tuple[set[TableRef], set[Name]]:
    """Every identifier chain in the statement as a possible table (schema.table, table).

    Used where there is no AST: it over-matches (keywords and column names count), so table
    and schema rules still see every object such a statement could touch.
    """
    tables: set[TableRef] = set()
    schemas: set[Name] = set()
    toks = stmt.toks
    i = start
    n = len(toks)
    while i < n:
        if toks[i].kind not in (WORD, QIDENT):
            i += 1
            continue
        chain: list[Name] = []
        j = i
        while True:
            ident = stmt.ident(j)
            if ident is None:
                break
            chain.append(ident)
            if j + 2 < n and toks[j + 1].kind == DOT and toks[j + 2].kind in (WORD, QIDENT):
                j += 2
                continue
            break
        i = j + 1
        if len(chain) == 1:
            tables.add((None, chain[0]))
        else:
            schema = chain[-2]
            tables.add((schema, chain[-1]))
            schemas.add(schema)
            # a.b might also be schema a itself, e.g. "GRANT ... ON SCHEMA a"
            tables.add((None, chain[-1]))
    return tables, schemas


def literal_tokens(stmt: Stmt, start: int = 0, stop: int | None = None) -> bool:
    """Whether tokens start:stop hold a literal the fingerprint would replace."""
    end = len(stmt.toks) if stop is None else stop
    return any(stmt.toks[j].kind in (STRING, NUMBER) for j in range(start, end))


def build(
    stmt: Stmt,
    kind: str,
    classes: Iterable[str],
    *,
    builtins: Iterable[str] = (),
    tables: Iterable[TableRef] | None = None,
    schemas: Iterable[Name] = (),
    literal_dependent: bool = False,
    prepare: str | None = None,
    body: StatementFacts | None = None,
    execute: str | None = None,
    deallocate: str | None = None,
) -> StatementFacts:
    """Facts for ``stmt``: the given ones plus its function calls; without an AST's
    ``tables``, every name the statement mentions."""
    scan = scan_functions(stmt)
    all_classes = set(classes) | scan.classes
    all_builtins = set(builtins) | scan.builtins
    if "file" in all_classes:
        all_builtins.add("file_access")
    all_schemas = set(schemas) | scan.schemas
    if tables is None:
        harvested, harvested_schemas = harvest_names(stmt)
        all_tables = harvested
        all_schemas |= harvested_schemas
    else:
        all_tables = set(tables)
    return StatementFacts(
        kind=kind,
        classes=frozenset(all_classes),
        builtins=frozenset(all_builtins),
        tables=frozenset(all_tables),
        functions=frozenset(scan.functions),
        schemas=frozenset(all_schemas),
        literal_dependent=literal_dependent or scan.literal_dependent,
        prepare=prepare,
        body=body,
        execute=execute,
        deallocate=deallocate,
    )


def is_string(stmt: Stmt, i: int) -> bool:
    return stmt.kind(i) in (STRING, XSTRING)
