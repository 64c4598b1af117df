"""Column lineage for masking: which source columns' values can reach each output column.

Rules this module enforces:

* The text is split by our own lexer (``lexer.split_statements``) and every tree comes from
  ``sqlast.parse_statement``, which refuses a parse whose token spans disagree with our lexer:
  lineage is never read from a tree built on a misread quote or comment. View definitions
  from the catalog go through the same path.
* Derived means "any column referenced in the expression": aliases, casts, concatenation,
  substrings, hashes, CASE conditions as well as results, window PARTITION BY / ORDER BY,
  aggregate FILTER and WITHIN GROUP clauses all flow into the output. The only exception is
  ``count(...)``: its arguments are read but reveal no value.
* Whole rows flow as all their columns: ``SELECT *``, ``t.*``, a table name used as a value
  (``row_to_json(c)``, ``json_agg(c)``, ``hstore(c)``, ``c``), ``ROW(c.*)``.
* Subqueries: a scalar subquery (or ``ARRAY(subquery)``) carries its outputs; ``EXISTS``,
  ``IN``, ``ANY`` and ``ALL`` carry every column the subquery reads (conservative).
* Names resolve like the server does: PostgreSQL folds unquoted identifiers to lower case
  (ASCII only) and compares exactly; MySQL compares column names case-insensitively and
  table names exactly first, then case-insensitively (more matches only ever add sources).
  Unqualified tables: first schema of ``search_path`` that has the table; PostgreSQL also
  finds ``pg_catalog`` tables the catalog lists, and any unlisted ``pg_*`` name. Tables in
  pg_catalog / information_schema / mysql / performance_schema / sys are harmless: they hold
  no user data, so their unlisted columns resolve to no source (but a name not found there is
  still looked up in outer queries, where it may be a masked column).
* Failing closed: a statement the module cannot follow gets ``outputs=None`` and
  ``unresolved=True`` (so does a ``*`` whose width it cannot know, a view it cannot expand,
  a system table that holds copies of user values: ``VALUE_BEARING``). A reference it
  cannot resolve (unknown table or column, a function that is not a known built-in of the
  dialect) sets ``unresolved=True`` and contributes no source: the caller must then treat
  outputs, reads and writes as incomplete, that is as "lineage not established".
  ``statement_lineage`` never raises.
* Views expand recursively from ``catalog.views`` (depth ``MAX_VIEW_DEPTH``; a cycle is
  unknown). A view column carries its own (schema, view, column) as well as the base columns
  under it, so a mask set on either applies.
* Values written somewhere (INSERT .. SELECT, UPDATE SET, CREATE TABLE AS, SELECT INTO,
  MERGE, data-modifying CTEs) are reported in ``writes``; values stored where the catalog has
  no table (MySQL user variables via ``INTO @x`` / ``:=`` / ``SET @x = (...)``, settings via
  ``set_config``, sequences via ``setval``, ``pg_notify`` payloads, large objects, files via
  ``COPY ... TO`` a file or program) are written to the pseudo-table ``UNTRACKED``: a caller
  that refuses masked values flowing into unmasked tables refuses those as well.

Known gaps (documented, not handled):

* Values inferred through filters and counts (``WHERE ssn LIKE '1%'``, ``GROUP BY ssn``,
  ``ORDER BY ssn LIMIT 1``): ``reads`` has the column, ``outputs`` do not.
* Values the server echoes in error messages (a failed cast quotes its input) or notices
  (DO blocks, functions); triggers, rules, user-defined casts and operators.
* A user function that overloads a built-in name (``lower(customers)`` in a schema on the
  search path) is taken for the built-in.
* ``writes`` name target tables, not columns: ``UPDATE customers SET name = ssn`` is a write
  of ssn into customers. DDL that moves values between columns (``ALTER ... USING``,
  generated columns) only sets ``unresolved``; ``RENAME COLUMN`` is not seen at all.
* A view listed in ``catalog.tables`` without its text in ``catalog.views`` is taken for a
  table (materialized views belong in ``views`` too, so their columns lead to their bases).
  Rows of inheritance children and partitions count as the parent's columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, TypeVar

from sqlglot import exp

from gateway.policy.lexer import DOT, LPAREN, QIDENT, VAR, WORD, Stmt, Tok, lex, split_statements
from gateway.policy.sqlast import parse_statement

__all__ = [
    "HARMLESS_SCHEMAS",
    "MAX_VIEW_DEPTH",
    "SHAPED",
    "UNTRACKED",
    "VALUE_BEARING",
    "LineageCatalog",
    "SourceColumn",
    "StatementLineage",
    "statement_lineage",
]

SourceColumn = tuple[str, str, str]  # (schema, table, column) exactly as stored in the catalog
TableKey = tuple[str, str]
Sources = frozenset[SourceColumn]

# Where values go that the catalog has no table for (see the module rules).
UNTRACKED: Final[TableKey] = ("", "<untracked>")
# Columns whose values decide how many rows a result has, rather than what they hold: the
# arguments of a function in FROM (generate_series(1, x) yields x rows), LIMIT and OFFSET.
# A count(*), or the row count itself, then carries the value.
SHAPED: Final[TableKey] = ("", "<result shape>")
HARMLESS_SCHEMAS: Final[frozenset[str]] = frozenset(
    {"pg_catalog", "information_schema", "mysql", "performance_schema", "sys"}
)
# System tables and views that do hold copies of user values (planner statistics, statement
# texts with their literals, locked index keys, large objects, logs): never harmless; read
# like an unknown table.
VALUE_BEARING: Final[frozenset[tuple[str, str]]] = frozenset(
    [
        *(
            ("pg_catalog", t)
            for t in (
                "pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic",
                "pg_statistic_ext_data", "pg_stat_activity", "pg_largeobject", "pg_locks",
            )
        ),
        *(("information_schema", t) for t in ("column_statistics", "processlist")),
        *(
            ("performance_schema", t)
            for t in (
                "events_statements_current", "events_statements_history",
                "events_statements_history_long", "events_statements_summary_by_digest",
                "prepared_statements_instances", "threads", "processlist", "data_locks",
            )
        ),
        *(("mysql", t) for t in ("general_log", "slow_log", "column_stats")),
        *(
            ("sys", t)
            for t in (
                "processlist", "session", "x$processlist", "x$session", "innodb_lock_waits",
                "x$innodb_lock_waits",
            )
        ),
    ]
)  # fmt: skip
MAX_VIEW_DEPTH: Final = 8
_MAX_STATEMENT_DEPTH: Final = 8  # EXPLAIN ANALYZE DECLARE ... nesting
_MAX_RECURSION_ROUNDS: Final = 16

_EMPTY: Final[Sources] = frozenset()


@dataclass(frozen=True, slots=True)
class LineageCatalog:
    """What the gateway knows of the database (loaded on a side connection; immutable snapshot).

    PostgreSQL view texts are read against ``search_path``: load them with
    ``pg_get_viewdef`` under the same search_path (an empty one makes every name qualified).
    A ``$user`` entry in ``search_path`` is skipped (expand it to the user name when loading).
    """

    # (schema, table) -> column names in order (tables, views, matviews, foreign tables)
    tables: Mapping[tuple[str, str], tuple[str, ...]]
    # (schema, view) -> its defining SELECT (PostgreSQL pg_get_viewdef / MySQL VIEW_DEFINITION)
    views: Mapping[tuple[str, str], str]
    # PostgreSQL: schemas for unqualified names, in order; MySQL: (current database,) or ()
    search_path: tuple[str, ...]
    version: int = 0  # bumps on every reload (callers cache by it)


@dataclass(frozen=True, slots=True)
class StatementLineage:
    # Per output column, the source columns whose values can flow into it; None = unknown.
    # () for statements that return no rows, or rows that carry no table data (DDL, SET,
    # SHOW, DESCRIBE, PREPARE, DECLARE, CREATE TABLE AS). None with unresolved False: the
    # column count is unknown (EXPLAIN, a * over a harmless system table) but every source
    # that can reach an output is in ``reads``.
    outputs: tuple[frozenset[SourceColumn], ...] | None
    # Every source column read anywhere (select list, WHERE, JOIN, subqueries, view bodies).
    reads: frozenset[SourceColumn]
    # Every resolved (schema, table) read, views and the tables under them included.
    tables: frozenset[tuple[str, str]]
    # Some table, column or function could not be resolved: outputs, reads and writes are
    # then incomplete.
    unresolved: bool
    # (target table, source columns whose values are written into it); UNTRACKED for
    # variables, settings, files and other places outside the catalog.
    writes: tuple[tuple[tuple[str, str], frozenset[SourceColumn]], ...] = ()


_UNKNOWN: Final = StatementLineage(None, frozenset(), frozenset(), True)
_NO_DATA: Final = StatementLineage((), frozenset(), frozenset(), False)


def statement_lineage(
    sql: str, dialect: str, catalog: LineageCatalog
) -> tuple[StatementLineage, ...]:
    """One entry per statement in sql, in order, the same split as lexer.split_statements
    (empty statements dropped). Never raises: anything unparseable, unsupported or surprising
    gives outputs=None, unresolved=True for that statement (one such entry for a text the
    lexer cannot split)."""
    if dialect not in ("postgres", "mysql"):
        return (_UNKNOWN,)
    try:
        statements = split_statements(lex(sql, dialect), dialect)
        index = _catalog_index(catalog, dialect)
    except Exception:
        return (_UNKNOWN,)
    return tuple(_statement_safely(stmt, index, 0) for stmt in statements)


# --------------------------------------------------------------------------- catalog index


class _Index:
    """Name lookups over one catalog for one dialect (built once per catalog object)."""

    __slots__ = ("by_folded", "catalog", "dialect", "search_path")

    def __init__(self, catalog: LineageCatalog, dialect: str) -> None:
        self.catalog = catalog
        self.dialect = dialect
        self.search_path = tuple(s for s in catalog.search_path if not s.startswith("$"))
        # MySQL: table names match exactly first, then case-insensitively.
        self.by_folded: dict[TableKey, list[TableKey]] = {}
        if dialect == "mysql":
            for key in (*catalog.tables, *catalog.views):
                folded = (key[0].casefold(), key[1].casefold())
                bucket = self.by_folded.setdefault(folded, [])
                if key not in bucket:
                    bucket.append(key)

    def find(self, schema: str, name: str) -> TableKey | None:
        key = (schema, name)
        if key in self.catalog.tables or key in self.catalog.views:
            return key
        if self.dialect == "mysql":
            bucket = self.by_folded.get((schema.casefold(), name.casefold()))
            if bucket:
                return bucket[0]
        return None

    def columns(self, key: TableKey) -> tuple[str, ...] | None:
        return self.catalog.tables.get(key)


_INDEXES: dict[tuple[int, str], tuple[LineageCatalog, _Index]] = {}
_MAX_INDEXES: Final = 8


def _catalog_index(catalog: LineageCatalog, dialect: str) -> _Index:
    # Keyed by identity; the entry holds the catalog itself, so the id cannot be reused
    # while the entry lives.
    key = (id(catalog), dialect)
    hit = _INDEXES.get(key)
    if hit is not None and hit[0] is catalog:
        return hit[1]
    index = _Index(catalog, dialect)
    if len(_INDEXES) >= _MAX_INDEXES:
        _INDEXES.pop(next(iter(_INDEXES)))
    _INDEXES[key] = (catalog, index)
    return index


# --------------------------------------------------------------------------- statements


class _Unknown(Exception):
    """Lineage cannot be established for the statement under analysis."""


def _statement_safely(stmt: Stmt, index: _Index, depth: int) -> StatementLineage:
    try:
        return _statement(stmt, index, depth)
    except Exception:
        return _UNKNOWN


_NO_DATA_WORDS: Final[frozenset[str]] = frozenset(
    {
        "ALTER", "ANALYZE", "ANALYSE", "BEGIN", "CHECKPOINT", "CLOSE", "CLUSTER", "COMMENT",
        "COMMIT", "DEALLOCATE", "DISCARD", "DROP", "END", "ABORT", "GRANT", "IMPORT", "LISTEN",
        "LOAD", "LOCK", "MOVE", "NOTIFY", "PREPARE", "REASSIGN", "REFRESH", "REINDEX",
        "RELEASE", "RESET", "REVOKE", "ROLLBACK", "SAVEPOINT", "SECURITY", "SET", "SHOW",
        "START", "TRUNCATE", "UNLISTEN", "VACUUM",
    }
)  # fmt: skip
_MYSQL_NO_DATA_WORDS: Final[frozenset[str]] = frozenset(
    {
        "BINLOG", "CACHE", "CHANGE", "CHECK", "CHECKSUM", "CLONE", "FLUSH", "HELP", "INSTALL",
        "KILL", "OPTIMIZE", "PURGE", "RENAME", "REPAIR", "RESTART", "SHUTDOWN", "STOP",
        "UNINSTALL", "UNLOCK", "USE", "XA",
    }
)  # fmt: skip
_QUERY_WORDS: Final[frozenset[str]] = frozenset(
    {"SELECT", "WITH", "VALUES", "TABLE", "(", "INSERT", "UPDATE", "DELETE"}
)
_STATEMENT_STARTS: Final[frozenset[str]] = frozenset(
    {"SELECT", "WITH", "TABLE", "VALUES", "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"}
)


def _statement(stmt: Stmt, index: _Index, depth: int) -> StatementLineage:
    if depth > _MAX_STATEMENT_DEPTH or not len(stmt):
        return _UNKNOWN
    first = "(" if stmt.kind(0) == LPAREN else stmt.kw(0)
    pg = stmt.dialect == "postgres"
    if first in _QUERY_WORDS or (pg and first == "MERGE"):
        return _query_statement(stmt, first, index)
    if first == "EXPLAIN" or (not pg and first in ("DESCRIBE", "DESC")):
        return _explain(stmt, index, depth)
    if first == "CREATE":
        return _create(stmt, index, depth)
    if first == "ALTER" and _alter_moves_values(stmt):
        return StatementLineage((), frozenset(), frozenset(), True)
    if pg:
        if first == "DECLARE":
            return _declare(stmt, index, depth)
        if first == "COPY":
            return _copy(stmt, index, depth)
        if first in ("FETCH", "MOVE", "EXECUTE", "CALL", "DO"):
            # rows, a row count (MOVE n) or notices from a query the gateway does not see
            return _UNKNOWN
        if first in _NO_DATA_WORDS:
            return _NO_DATA
        return _UNKNOWN
    if first == "REPLACE":
        return _query_statement(_with_head(stmt, "INSERT"), "INSERT", index)
    if first == "ANALYZE" and stmt.kw(1) not in ("TABLE", "TABLES", "NO_WRITE_TO_BINLOG", "LOCAL"):
        return _explain(stmt, index, depth)  # MariaDB ANALYZE <statement>
    if first in ("DO", "SET"):
        return _mysql_assignments(stmt, index)
    if first == "HANDLER":
        return _UNKNOWN if stmt.find_kw(frozenset({"READ"})) >= 0 else _NO_DATA
    if first in ("EXECUTE", "CALL"):
        return _UNKNOWN
    if first == "SHOW" and stmt.find_kw(frozenset({"PROCESSLIST", "ENGINE"})) >= 0:
        return _UNKNOWN  # other sessions' statement texts, literals included
    if first in _NO_DATA_WORDS or first in _MYSQL_NO_DATA_WORDS:
        return _NO_DATA
    return _UNKNOWN


def _alter_moves_values(stmt: Stmt) -> bool:
    """ALTER ... TYPE ... USING expr, or a generated column (GENERATED ... / MySQL AS (...)):
    the server copies values from other columns, which this module does not trace."""
    for i in range(len(stmt)):
        word = stmt.kw(i)
        if word in ("USING", "GENERATED") or (word == "AS" and stmt.kind(i + 1) == LPAREN):
            return True
    return False


def _with_head(stmt: Stmt, word: str) -> Stmt:
    """``stmt`` with its first token replaced by ``word`` (offsets shifted to match)."""
    head = stmt.toks[0]
    shift = len(word) - (head.end - head.start)
    toks = [Tok(WORD, 0, len(word))]
    toks.extend(Tok(t.kind, t.start + shift, t.end + shift) for t in stmt.toks[1:])
    return Stmt(word + stmt.text[head.end :], toks, stmt.dialect)


def _query_statement(stmt: Stmt, first: str, index: _Index) -> StatementLineage:
    root = parse_statement(stmt, first)
    if root is None:
        return _UNKNOWN
    an = _Analyzer(index, stmt.text)
    if not _functions_known(stmt, root):
        an.unresolved = True
    outputs: list[_Col] | None
    try:
        if isinstance(root, exp.Select) and root.args.get("into") is not None:
            outputs = an.select_into(root)
        elif isinstance(root, (exp.Insert, exp.Update, exp.Delete, exp.Merge)):
            outputs = an.dml(root, None, {})
        else:
            an.root = root
            outputs = an.query(root, None, {})
    except _Unknown:
        return an.result(None, unresolved=True)
    return an.result(outputs)


def _explain(stmt: Stmt, index: _Index, depth: int) -> StatementLineage:
    i = 1
    analyze = False
    if stmt.dialect == "postgres":
        if stmt.kind(1) == LPAREN:
            close = stmt.matching_paren(1)
            if close < 0:
                return _UNKNOWN
            analyze = any(stmt.kw(j) in ("ANALYZE", "ANALYSE") for j in range(2, close))
            i = close + 1
        else:
            while stmt.kw(i) in ("ANALYZE", "ANALYSE", "VERBOSE"):
                analyze = analyze or stmt.kw(i) != "VERBOSE"
                i += 1
    else:
        while True:
            word = stmt.kw(i)
            if word == "ANALYZE":
                analyze = True
                i += 1
            elif word in ("EXTENDED", "PARTITIONS"):
                i += 1
            elif word == "FORMAT" and stmt.raw(i + 1) == "=":
                i += 3
            elif word == "INTO" and stmt.kind(i + 1) == VAR:
                i += 2
            else:
                break
        if stmt.kw(0) == "ANALYZE":
            analyze = True
        if not (stmt.kw(i) in _STATEMENT_STARTS or stmt.kind(i) == LPAREN):
            # DESCRIBE t, EXPLAIN t, EXPLAIN FOR CONNECTION n: metadata, no data
            return _NO_DATA
    if i >= len(stmt):
        return _UNKNOWN
    inner = _statement_safely(stmt.sub(i), index, depth + 1)
    # The plan (EXPLAIN ANALYZE VERBOSE especially) can show values: no output lineage.
    return StatementLineage(
        None, inner.reads, inner.tables, inner.unresolved, inner.writes if analyze else ()
    )


def _declare(stmt: Stmt, index: _Index, depth: int) -> StatementLineage:
    cursor = stmt.find_kw(frozenset({"CURSOR"}), 1)
    start = stmt.find_kw(frozenset({"FOR"}), cursor + 1) if cursor > 0 else -1
    if start < 0 or start + 1 >= len(stmt):
        return _UNKNOWN
    inner = _statement_safely(stmt.sub(start + 1), index, depth + 1)
    # DECLARE returns no rows; FETCH does (and is unknown).
    return StatementLineage((), inner.reads, inner.tables, inner.unresolved, inner.writes)


_CREATE_MODIFIERS: Final[frozenset[str]] = frozenset(
    {"TEMP", "TEMPORARY", "GLOBAL", "LOCAL", "UNLOGGED", "RECURSIVE"}
)
_QUERY_STARTS: Final[frozenset[str]] = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})


def _create(stmt: Stmt, index: _Index, depth: int) -> StatementLineage:
    i = 1
    temporary = False
    while True:
        word = stmt.kw(i)
        if word == "OR" and stmt.kw(i + 1) == "REPLACE":
            i += 2
        elif word in _CREATE_MODIFIERS:
            temporary = temporary or word in ("TEMP", "TEMPORARY")
            i += 1
        else:
            break
    if stmt.kw(i) == "TABLE":
        i += 1
    elif stmt.kws(i, 2) == ("MATERIALIZED", "VIEW"):
        i += 2
    else:
        return _NO_DATA  # CREATE VIEW stores a query, not values; other objects hold none
    if stmt.kws(i, 3) == ("IF", "NOT", "EXISTS"):
        i += 3
    name: list[str] = []
    while (ident := stmt.ident(i)) is not None:
        name.append(_fold_name(ident[0], ident[1], stmt.dialect))
        if stmt.kind(i + 1) != DOT:
            break
        i += 2
    if not name:
        return _UNKNOWN
    start = _create_query_start(stmt, i + 1)
    if start < 0:
        return _NO_DATA  # CREATE TABLE t (...) / LIKE: no rows copied
    stop = _with_data_suffix(stmt, start)
    inner = _statement_safely(stmt.sub(start, stop), index, depth + 1)
    schema = name[-2] if len(name) > 1 else ""
    if not schema:
        if temporary and stmt.dialect == "postgres":
            schema = "pg_temp"
        elif index.search_path:
            schema = index.search_path[0]
    copied = _union(inner.outputs) if inner.outputs is not None else inner.reads
    writes = ((schema, name[-1]), copied), *inner.writes
    return StatementLineage((), inner.reads, inner.tables, inner.unresolved, writes)


def _create_query_start(stmt: Stmt, after: int) -> int:
    as_index = stmt.find_kw(frozenset({"AS"}), after)
    if as_index >= 0:
        nxt = as_index + 1
        if stmt.kw(nxt) in _QUERY_STARTS | {"EXECUTE"} or stmt.kind(nxt) == LPAREN:
            return nxt
    if stmt.dialect == "mysql":
        return stmt.find_kw(frozenset({"SELECT", "WITH"}), after)
    return -1


def _with_data_suffix(stmt: Stmt, start: int) -> int | None:
    """Where PostgreSQL's trailing ``WITH [NO] DATA`` starts (None if there is none)."""
    n = len(stmt)
    if n - start > 2 and stmt.kws(n - 2, 2) == ("WITH", "DATA"):
        return n - 2
    if n - start > 3 and stmt.kws(n - 3, 3) == ("WITH", "NO", "DATA"):
        return n - 3
    return None


def _copy(stmt: Stmt, index: _Index, depth: int) -> StatementLineage:
    i = 1
    if stmt.kw(i) == "BINARY":
        i += 1
    if stmt.kind(i) == LPAREN:
        close = stmt.matching_paren(i)
        if close < 0:
            return _UNKNOWN
        inner = _statement_safely(stmt.sub(i + 1, close), index, depth + 1)
        i = close + 1
    else:
        begin = i
        while stmt.ident(i) is not None and stmt.kind(i + 1) == DOT:
            i += 2
        if stmt.ident(i) is None:
            return _UNKNOWN
        table = stmt.text[stmt.toks[begin].start : stmt.toks[i].end]
        i += 1
        columns = "*"
        if stmt.kind(i) == LPAREN:
            close = stmt.matching_paren(i)
            if close < 0:
                return _UNKNOWN
            columns = stmt.text[stmt.toks[i + 1].start : stmt.toks[close - 1].end]
            i = close + 1
        if stmt.kw(i) != "TO":
            return _NO_DATA  # COPY t FROM ...: values from the client
        inner = _statement_safely(_synthetic(f"SELECT {columns} FROM {table}", stmt), index, depth)
    if stmt.kw(i) == "FROM":
        return _NO_DATA
    if stmt.kw(i) != "TO":
        return _UNKNOWN
    if stmt.kw(i + 1) == "STDOUT":
        return inner
    copied = _union(inner.outputs) if inner.outputs is not None else inner.reads
    writes = (UNTRACKED, copied), *inner.writes
    return StatementLineage((), inner.reads, inner.tables, inner.unresolved, writes)


def _synthetic(text: str, like: Stmt) -> Stmt:
    statements = split_statements(lex(text, like.dialect), like.dialect)
    if len(statements) != 1:
        raise _Unknown
    return statements[0]


def _mysql_assignments(stmt: Stmt, index: _Index) -> StatementLineage:
    """MySQL ``SET @x = (SELECT ...)`` / ``DO @x := ...``: values stored in variables."""
    if stmt.kw(0) == "SET" and not any(
        t.kind == LPAREN or (t.kind == WORD and stmt.kw(j) == "SELECT")
        for j, t in enumerate(stmt.toks)
    ):
        return _NO_DATA  # literals and names only: nothing read
    as_select = _with_head(stmt, "SELECT")
    root = parse_statement(as_select, "SELECT")
    if not isinstance(root, exp.Select) or root.args.get("from_") is not None:
        return StatementLineage((), frozenset(), frozenset(), True)
    an = _Analyzer(index, as_select.text)
    if not _functions_known(as_select, root):
        an.unresolved = True
    try:
        outputs = an.query(root, None, {})
    except _Unknown:
        return StatementLineage((), frozenset(an.reads), frozenset(an.tables), True)
    stored = _union(s for _, s in outputs) if outputs is not None else frozenset(an.reads)
    an.write(UNTRACKED, stored)
    return an.result([])


def _union(sets: Iterable[frozenset[SourceColumn]] | None) -> Sources:
    out: set[SourceColumn] = set()
    for s in sets or ():
        out |= s
    return frozenset(out)


def _fold_name(text: str, quoted: bool, dialect: str) -> str:
    # PostgreSQL folds unquoted identifiers to lower case, ASCII letters only.
    if dialect == "postgres" and not quoted:
        return text.translate(_ASCII_LOWER)
    return text


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# --------------------------------------------------------------------------- functions


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that can precede "(" without being a function call.
_NOT_FUNCTIONS: Final[frozenset[str]] = _words(
    """
    against all and any array as asc between both by case cast check collate columns conflict
    constraint cross cube default delete desc distinct do else end escape except exclude exists
    fields filter first following for foreign from full include insert next overlaps primary
    references repeatable tablesample update bernoulli system
    group grouping groups having ilike in index inner intersect interval into is join key
    lateral leading left like limit lines materialized member natural nested not null nulls
    of offset on only or order ordinality outer over partition path preceding range recursive
    returning right rollup row rows select set sets similar some straight_join table then to
    trailing unbounded union unique using values when where window with within zone
    """
)
# Type names: a type modifier list ("numeric(10,2)") or a type-named cast function.
_TYPE_NAMES: Final[frozenset[str]] = _words(
    """
    bigint binary bit bool boolean bpchar bytea char character date datetime dec decimal
    double enum float float4 float8 inet int int2 int4 int8 integer interval json jsonb
    mediumint money name nchar numeric nvarchar precision real smallint text time timestamp
    timestamptz timetz tinyint uuid varbinary varbit varchar varying year signed unsigned
    """
)
_SHARED_FUNCTIONS: Final[frozenset[str]] = _words(
    """
    abs acos ascii asin atan atan2 avg bit_and bit_length bit_or bit_xor ceil ceiling
    char_length character_length coalesce concat concat_ws convert cos cot count cume_dist
    current_date current_role current_time current_timestamp current_user degrees dense_rank
    exp extract first_value floor greatest json_array json_arrayagg json_object
    json_objectagg json_table json_value lag last_value lead least left length ln localtime
    localtimestamp log log10 lower lpad ltrim max md5 min mod now nth_value ntile nullif
    octet_length percent_rank pi position power radians rank regexp_instr regexp_like
    regexp_replace regexp_substr repeat replace reverse right round row_number rpad rtrim
    session_user sign sin sqrt stddev stddev_pop stddev_samp substr substring sum tan trim
    upper var_pop var_samp variance version any_value pow
    """
)
_PG_FUNCTIONS: Final[frozenset[str]] = _words(
    """
    age array_agg array_append array_cat array_dims array_fill array_length array_lower
    array_position array_positions array_prepend array_remove array_replace array_to_json
    array_to_string array_upper array_ndims btrim cardinality cbrt chr clock_timestamp
    col_description convert_from convert_to corr covar_pop covar_samp crypt
    current_catalog current_database current_query current_schema current_schemas
    current_setting date_bin date_part date_trunc decode digest div encode every factorial
    format format_type gcd gen_random_uuid generate_series generate_subscripts grouping
    has_column_privilege has_database_privilege has_schema_privilege has_table_privilege
    hmac hstore inet_client_addr inet_server_addr initcap isfinite json_agg json_array_elements
    json_array_elements_text json_array_length json_build_array json_build_object json_each
    json_each_text json_exists json_extract_path json_extract_path_text json_object_agg
    json_object_keys json_populate_record json_populate_recordset json_query json_scalar
    json_serialize json_strip_nulls json_to_record json_to_recordset json_typeof jsonb_agg
    jsonb_array_elements jsonb_array_elements_text jsonb_array_length jsonb_build_array
    jsonb_build_object jsonb_each jsonb_each_text jsonb_exists jsonb_extract_path
    jsonb_extract_path_text jsonb_insert jsonb_object jsonb_object_agg jsonb_object_keys
    jsonb_path_exists jsonb_path_match jsonb_path_query jsonb_path_query_array
    jsonb_path_query_first jsonb_populate_record jsonb_populate_recordset jsonb_pretty
    jsonb_set jsonb_set_lax jsonb_strip_nulls jsonb_to_record jsonb_to_recordset
    jsonb_typeof justify_days justify_hours justify_interval lastval lcm make_date
    make_interval make_time make_timestamp make_timestamptz mode nextval currval normalize
    num_nonnulls num_nulls obj_description overlay percentile_cont percentile_disc
    pg_backend_pid pg_column_size pg_get_viewdef pg_notify pg_relation_size pg_size_pretty
    pg_sleep pg_table_size pg_total_relation_size pg_typeof quote_ident quote_literal
    quote_nullable random range_agg regexp_count regexp_match regexp_matches
    regexp_split_to_array regexp_split_to_table regr_avgx regr_avgy regr_count
    regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy row_to_json scale
    set_config setval sha224 sha256 sha384 sha512 split_part starts_with
    statement_timestamp string_agg string_to_array string_to_table strpos timeofday
    timezone to_char to_date to_hex to_json to_jsonb to_number to_regclass to_timestamp
    to_tsquery to_tsvector plainto_tsquery websearch_to_tsquery ts_rank ts_headline
    transaction_timestamp translate trim_array trunc txid_current unistr unnest
    width_bucket bool_and bool_or xmlagg xmlconcat xmlelement xmlforest lo_from_bytea
    lo_put lowrite pg_logical_emit_message merge_action int4range int8range numrange tsrange
    tstzrange daterange isempty lower_inc upper_inc lower_inf upper_inf host masklen network
    family abbrev broadcast netmask regclass regtype regproc regprocedure regoper regoperator
    regnamespace regrole regconfig oid xmlparse xmlserialize xmlexists xmlpi xmlroot
    xmlattributes xmlcomment pg_get_userbyid pg_get_expr pg_get_indexdef pg_get_constraintdef
    pg_get_triggerdef pg_get_functiondef pg_get_function_arguments pg_get_function_result
    pg_get_function_identity_arguments pg_get_ruledef pg_get_serial_sequence
    pg_get_statisticsobjdef pg_get_partkeydef pg_get_partition_constraintdef
    pg_table_is_visible pg_type_is_visible pg_function_is_visible pg_collation_is_visible
    pg_opclass_is_visible pg_operator_is_visible pg_ts_config_is_visible
    pg_statistics_obj_is_visible pg_has_role pg_encoding_to_char pg_char_to_encoding
    pg_is_in_recovery pg_postmaster_start_time pg_conf_load_time pg_database_size
    pg_indexes_size pg_tablespace_location pg_my_temp_schema pg_is_other_temp_schema
    pg_trigger_depth pg_listening_channels pg_blocking_pids pg_describe_object
    pg_identify_object pg_relation_filenode pg_relation_filepath pg_partition_root
    pg_partition_tree pg_get_keywords shobj_description has_function_privilege
    has_sequence_privilege has_any_column_privilege has_language_privilege
    has_server_privilege has_tablespace_privilege has_type_privilege array_to_tsvector
    """
)
_MYSQL_FUNCTIONS: Final[frozenset[str]] = _words(
    """
    adddate addtime aes_decrypt aes_encrypt benchmark bin bin_to_uuid char charset
    coercibility collation compress connection_id conv convert_tz crc32 curdate curtime
    database date date_add date_format date_sub datediff day dayname dayofmonth dayofweek
    dayofyear elt export_set field find_in_set format found_rows from_base64 from_days
    from_unixtime get_format get_lock group_concat hex hour if ifnull inet6_aton inet6_ntoa
    inet_aton inet_ntoa insert instr interval is_free_lock is_ipv4 is_ipv6 is_uuid isnull
    json_array_append json_array_insert json_contains json_contains_path json_depth
    json_extract json_insert json_keys json_length json_merge json_merge_patch
    json_merge_preserve json_overlaps json_pretty json_quote json_remove json_replace
    json_schema_valid json_search json_set json_type json_unquote json_valid last_day
    last_insert_id lcase locate log2 make_set makedate maketime match microsecond mid
    minute month monthname oct ord period_add period_diff quarter quote rand
    release_lock row_count schema sec_to_time second sha sha1 sha2 sleep soundex space
    std str_to_date strcmp subdate substring_index subtime sysdate system_user time
    time_format time_to_sec timediff timestamp timestampadd timestampdiff to_base64 to_days
    to_seconds truncate ucase uncompress unhex unix_timestamp utc_date utc_time
    utc_timestamp uuid uuid_short uuid_to_bin values week weekday weekofyear
    weight_string year yearweek user
    """
)
_KNOWN_FUNCTIONS: Final[dict[str, frozenset[str]]] = {
    "postgres": _SHARED_FUNCTIONS | _PG_FUNCTIONS | _TYPE_NAMES,
    "mysql": _SHARED_FUNCTIONS | _MYSQL_FUNCTIONS | _TYPE_NAMES,
}
# Built-ins that store their arguments where a later statement can read them.
_SET_RETURNING_NODES: Final = (exp.Explode, exp.ExplodingGenerateSeries, exp.Unnest)
_STORING_FUNCTIONS: Final[frozenset[str]] = frozenset(
    {"set_config", "setval", "pg_notify", "lo_from_bytea", "lo_put", "lowrite",
     "pg_logical_emit_message",
     # an advisory lock's key is visible to every session in pg_locks (objid): a value
     # passed to one can be read back from there; MariaDB's GET_LOCK name, the same way
     "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
     "pg_try_advisory_lock_shared", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
     "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared", "get_lock",
     # the seed is recoverable from random()'s next values
     "setseed"}
)  # fmt: skip


def _functions_known(stmt: Stmt, root: exp.Expr) -> bool:
    """Whether every ``name(`` in the statement is a known built-in of the dialect.

    Read from the tokens (what the client wrote, whatever sqlglot maps a name to), minus
    the names the tree shows are identifiers (``INSERT INTO t (a)``, ``AS s(a, b)``). A user
    function may read any table inside, masked columns included.
    """
    dialect = stmt.dialect
    identifiers = {
        node.meta["start"]
        for node in root.walk()
        if isinstance(node, exp.Identifier)
        and "start" in node.meta
        and not isinstance(node.parent, exp.Func)
    }
    known = _KNOWN_FUNCTIONS[dialect]
    toks = stmt.toks
    for i in range(len(toks) - 1):
        tok = toks[i]
        if toks[i + 1].kind != LPAREN or tok.kind not in (WORD, QIDENT):
            continue
        if tok.start in identifiers:
            continue
        ident = stmt.ident(i)
        assert ident is not None
        text, quoted = ident
        if quoted:
            if dialect == "mysql":
                return False  # a quoted name is a stored function, not a built-in
            name = text
        else:
            name = text.translate(_ASCII_LOWER)  # builtin names are ASCII: no Unicode folding
            if name in _NOT_FUNCTIONS:
                continue
        if i >= 2 and toks[i - 1].kind == DOT:
            schema = stmt.ident(i - 2)
            if dialect == "mysql" or schema is None:
                return False
            if _fold_name(schema[0], schema[1], dialect) != "pg_catalog":
                return False
        if name not in known:
            return False
    return True


# --------------------------------------------------------------------------- relations

_Col = tuple[str, Sources]  # (output name, sources)
_Ctes = dict[str, list[_Col] | None]  # CTE name (compared as a column name) -> its columns


class _Rel:
    """One FROM item as the query sees it."""

    __slots__ = ("base", "columns", "keys", "name", "schema", "wild")

    def __init__(
        self,
        name: str | None,
        columns: list[_Col] | None,
        *,
        wild: Sources | None = None,
        schema: str | None = None,
        base: TableKey | None = None,
    ) -> None:
        self.name = name  # alias, or the table's name (None for unnamed items)
        self.schema = schema  # for schema.table.column references to an unaliased table
        self.columns = columns  # None: columns not known
        self.wild = wild  # columns unknown: sources of any column (None: unknown -> unresolved)
        self.base = base  # catalog (schema, table) behind it, for UPDATE targets
        self.keys: dict[str, list[int]] | None = None


class _Scope:
    """One query level: its FROM items, and the level it is nested in (correlation)."""

    __slots__ = ("ctes", "generator", "outputs", "parent", "rels", "star", "windows")

    def __init__(self, parent: _Scope | None, ctes: _Ctes) -> None:
        self.parent = parent
        # A FROM item here makes rows rather than reading them (a function, VALUES, the
        # recursive CTE in its own recursive term): a condition here that reads a column
        # picks the generated rows that match its value (SHAPED).
        self.generator = False
        self.ctes = ctes  # CTEs visible here (and in subqueries of its expressions)
        self.rels: list[_Rel] = []
        self.star: list[_Col] | None = []  # what SELECT * expands to; None = unknown
        self.outputs: dict[str, Sources] = {}  # output names (ORDER BY / GROUP BY aliases)
        self.windows: dict[str, Sources] = {}  # WINDOW w AS (...): what OVER w adds


_SRF_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "json_each": ("key", "value"),
    "jsonb_each": ("key", "value"),
    "json_each_text": ("key", "value"),
    "jsonb_each_text": ("key", "value"),
    "json_array_elements": ("value",),
    "jsonb_array_elements": ("value",),
    "json_array_elements_text": ("value",),
    "jsonb_array_elements_text": ("value",),
    **{
        name: (name,)
        for name in (
            "generate_series",
            "generate_subscripts",
            "json_object_keys",
            "jsonb_object_keys",
            "regexp_matches",
            "regexp_split_to_table",
            "string_to_table",
            "jsonb_path_query",
        )
    },
}
# Functions that return a set of rows whose number depends on their arguments (in a select
# list as in FROM): their arguments shape the result (SHAPED). Those whose columns are
# known above, and more.
_SET_RETURNING: Final[frozenset[str]] = frozenset(_SRF_COLUMNS) | {
    "unnest", "json_to_recordset", "jsonb_to_recordset", "json_populate_recordset",
    "jsonb_populate_recordset", "ts_stat", "ts_debug", "pg_get_keywords",
}  # fmt: skip

# Select arguments read for their columns only; arguments that carry no columns.
_CLAUSES: Final = ("where", "group", "having", "qualify", "order", "limit", "offset", "distinct")
_INERT: Final[frozenset[str]] = frozenset(
    {"kind", "hint", "locks", "operation_modifiers", "options"}
)
_SELECT_PARTS: Final[frozenset[str]] = frozenset(
    {"with_", "from_", "joins", "windows", "expressions"}
)
_T = TypeVar("_T")


class _Analyzer:
    """Walks one statement's tree (and the view bodies it expands), accumulating facts."""

    def __init__(self, index: _Index, text: str) -> None:
        self.index = index
        self.dialect = index.dialect
        self.text = text  # the text the tree under analysis was parsed from
        self.root: exp.Expr | None = None  # the top query (the one SELECT INTO may sit on)
        self.reads: set[SourceColumn] = set()
        self.tables: set[TableKey] = set()
        self.unresolved = False
        self.writes: dict[TableKey, set[SourceColumn]] = {}
        self.expanding: tuple[TableKey, ...] = ()
        self.expanded: dict[TableKey, list[_Col]] = {}
        self.recursing: set[str] = set()  # recursive CTEs whose recursive term is analysed

    def result(self, outputs: list[_Col] | None, *, unresolved: bool = False) -> StatementLineage:
        return StatementLineage(
            tuple(s for _, s in outputs) if outputs is not None else None,
            frozenset(self.reads),
            frozenset(self.tables),
            self.unresolved or unresolved,
            tuple((key, frozenset(src)) for key, src in self.writes.items()),
        )

    def write(self, target: TableKey, sources: Iterable[SourceColumn]) -> None:
        self.writes.setdefault(target, set()).update(sources)

    def shaped(self, sources: Sources) -> None:
        """Columns that decide how many rows come back (see SHAPED); none: nothing noted."""
        if sources:
            self.write(SHAPED, sources)

    def collect(self, fn: Callable[[], _T]) -> tuple[_T, Sources]:
        """fn() and the source columns read while it ran."""
        saved = self.reads
        self.reads = set()
        try:
            value = fn()
        finally:
            inner = self.reads
            saved |= inner
            self.reads = saved
        return value, frozenset(inner)

    # ----------------------------------------------------------------- names

    def fold(self, ident: object) -> str:
        if isinstance(ident, exp.Identifier):
            return _fold_name(str(ident.this), bool(ident.args.get("quoted")), self.dialect)
        if isinstance(ident, str):
            return _fold_name(ident, False, self.dialect)
        raise _Unknown

    def key(self, name: str) -> str:
        """How column names compare (MySQL: case-insensitively)."""
        return name.casefold() if self.dialect == "mysql" else name

    def same_table(self, a: str, b: str) -> bool:
        return a == b or (self.dialect == "mysql" and a.casefold() == b.casefold())

    # ----------------------------------------------------------------- queries

    def query(self, node: exp.Expr, parent: _Scope | None, ctes: _Ctes) -> list[_Col] | None:
        if isinstance(node, exp.Subquery):
            ctes = self.with_(node.args.get("with_"), parent, ctes)
            out = self.query(node.this, parent, ctes)
            self.modifiers(node, out, parent, ctes, ("this", "alias", "with_"))
            return out
        if isinstance(node, exp.Select):
            return self.select(node, parent, ctes)
        if isinstance(node, exp.SetOperation):
            return self.set_operation(node, parent, ctes)
        if isinstance(node, exp.Values):
            return self.values(node, parent, ctes)
        if isinstance(node, (exp.Insert, exp.Update, exp.Delete, exp.Merge)):
            return self.dml(node, parent, ctes)
        raise _Unknown

    def select(self, node: exp.Select, parent: _Scope | None, ctes: _Ctes) -> list[_Col] | None:
        ctes = self.with_(node.args.get("with_"), parent, ctes)
        scope = _Scope(parent, ctes)
        frm = node.args.get("from_")
        if frm is not None:
            star = self.add_item(frm.this, scope, ctes)
            for join in node.args.get("joins") or ():
                star = self.add_join(join, scope, ctes, star)
            scope.star = star
        elif node.args.get("joins"):
            raise _Unknown
        for window in node.args.get("windows") or ():
            name = self.key(self.fold(window.this))
            scope.windows[name] = self.generic(window, scope, skip="this")
        outputs: list[_Col] | None = []
        for item in node.expressions:
            cols = self.select_item(item, scope)
            if cols is None or outputs is None:
                outputs = None
            else:
                outputs.extend(cols)
        if outputs is not None:
            for name, sources in outputs:
                scope.outputs.setdefault(self.key(name), sources)
        for arg, value in node.args.items():
            if value is None or value is False or value == []:
                continue
            if arg in _CLAUSES:
                read = self.expr(value, scope)
                if arg in ("limit", "offset") or (
                    scope.generator and arg in ("where", "having", "qualify")
                ):
                    self.shaped(read)
            elif arg == "into":
                if node is not self.root:
                    raise _Unknown
            elif arg not in _INERT and arg not in _SELECT_PARTS:
                raise _Unknown
        return outputs

    def select_into(self, node: exp.Select) -> list[_Col]:
        """SELECT ... INTO t (PostgreSQL: a new table) / INTO @x, ... (MySQL variables)."""
        self.root = node
        into = node.args["into"]
        outputs, read = self.collect(lambda: self.select(node, None, {}))
        stored = _union(s for _, s in outputs) if outputs is not None else read
        if outputs is None:
            self.unresolved = True
        targets = [into.this, *into.expressions]
        for target in targets:
            if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
                key = self.new_table(target)
                if into.args.get("temporary") and target.args.get("db") is None:
                    key = ("pg_temp", key[1])
                self.write(key, stored)
            else:
                self.write(UNTRACKED, stored)  # @variables, OUTFILE, DUMPFILE
        return []  # no rows to the client

    def new_table(self, node: exp.Table) -> TableKey:
        name = self.fold(node.this)
        db = node.args.get("db")
        if db is not None:
            return self.fold(db), name
        path = self.index.search_path
        return (path[0] if path else ""), name

    def select_item(self, item: exp.Expr, scope: _Scope) -> list[_Col] | None:
        if isinstance(item, exp.Star):
            if any(item.args.get(a) for a in item.args):
                raise _Unknown  # * EXCEPT / REPLACE / RENAME
            if not scope.rels:
                raise _Unknown
            star = scope.star
            for rel in scope.rels:
                self.read_rel(rel)
            return list(star) if star is not None else None
        if isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
            rels = self.find_rels(item, scope)
            if not rels:
                self.unresolved = True
                return None
            out: list[_Col] = []
            for rel in rels:
                self.read_rel(rel)
                if rel.columns is None:
                    return None
                out.extend(rel.columns)
            return out
        if isinstance(item, exp.Dot) and isinstance(item.expression, exp.Star):
            self.expr(item.this, scope)
            return None  # (composite).*: the column count is the type's
        name = self.output_name(item)
        target = item.this if isinstance(item, exp.Alias) else item
        return [(name, self.expr(target, scope))]

    def output_name(self, item: exp.Expr) -> str:
        if isinstance(item, exp.Alias):
            return self.fold(item.args.get("alias"))
        while isinstance(item, (exp.Cast, exp.Paren)):
            item = item.this
        if isinstance(item, exp.Column) and isinstance(item.this, exp.Identifier):
            return self.fold(item.this)
        if isinstance(item, exp.Anonymous):
            return str(item.name).lower()
        if isinstance(item, exp.Func):
            meta = item.meta
            if "start" in meta and "end" in meta:
                return self.text[meta["start"] : meta["end"] + 1].lower()
        return "?column?"

    def set_operation(
        self, node: exp.SetOperation, parent: _Scope | None, ctes: _Ctes
    ) -> list[_Col] | None:
        ctes = self.with_(node.args.get("with_"), parent, ctes)
        if node.args.get("by_name") or node.args.get("side") or node.args.get("on"):
            raise _Unknown
        left = self.query(node.this, parent, ctes)
        right = self.query(node.expression, parent, ctes)
        out: list[_Col] | None = None
        if left is not None and right is not None:
            if len(left) != len(right):
                raise _Unknown
            out = [(name, ls | rs) for (name, ls), (_, rs) in zip(left, right, strict=True)]
        known = ("this", "expression", "with_", "distinct", "kind", "side")
        self.modifiers(node, out, parent, ctes, known)
        return out

    def modifiers(
        self,
        node: exp.Expr,
        out: list[_Col] | None,
        parent: _Scope | None,
        ctes: _Ctes,
        known: tuple[str, ...],
    ) -> None:
        """ORDER BY / LIMIT on a parenthesised query or a set operation: reads only."""
        scope = _Scope(parent, ctes)
        scope.rels.append(_Rel(None, out))
        for arg, value in node.args.items():
            if value is None or value is False or value == [] or arg in known:
                continue
            if arg in ("order", "limit", "offset"):
                read = self.expr(value, scope)
                if arg != "order":
                    self.shaped(read)
            elif arg not in _INERT:
                raise _Unknown

    def values(self, node: exp.Values, parent: _Scope | None, ctes: _Ctes) -> list[_Col]:
        scope = _Scope(parent, ctes)
        columns: list[Sources] | None = None
        for row in node.expressions:
            items = list(row.expressions) if isinstance(row, exp.Tuple) else [row]
            if (
                len(items) == 1
                and isinstance(items[0], exp.Anonymous)
                and str(items[0].name).upper() == "ROW"
            ):
                items = list(items[0].expressions)  # MySQL VALUES ROW(...)
            sources = [self.expr(item, scope) for item in items]
            if columns is None:
                columns = sources
            elif len(columns) != len(sources):
                raise _Unknown
            else:
                columns = [a | b for a, b in zip(columns, sources, strict=True)]
        for arg in ("order", "limit", "offset"):
            if node.args.get(arg) is not None:
                read = self.expr(node.args[arg], scope)
                if arg != "order":
                    self.shaped(read)
        if node.args.get("pivots"):
            raise _Unknown
        if columns is None:
            raise _Unknown
        if self.dialect == "mysql":
            return [(f"column_{i}", s) for i, s in enumerate(columns)]
        return [(f"column{i + 1}", s) for i, s in enumerate(columns)]

    def with_(self, node: exp.Expr | None, parent: _Scope | None, ctes: _Ctes) -> _Ctes:
        if node is None:
            return ctes
        if node.args.get("search") or node.args.get("cycle") or node.args.get("udfs"):
            raise _Unknown
        ctes = dict(ctes)
        recursive = bool(node.args.get("recursive"))
        for cte in node.expressions:
            if not isinstance(cte, exp.CTE):
                raise _Unknown
            alias = cte.args.get("alias")
            if not isinstance(alias, exp.TableAlias):
                raise _Unknown
            name = self.key(self.fold(alias.this))
            names = [self.fold(c) for c in alias.columns]
            if recursive:
                out = self.recursive_cte(name, cte.this, names, parent, ctes)
            else:
                out = self.query(cte.this, parent, ctes)
            ctes[name] = _rename(out, names)
        return ctes

    def recursive_cte(
        self, name: str, body: exp.Expr, names: list[str], parent: _Scope | None, ctes: _Ctes
    ) -> list[_Col] | None:
        anchor = body
        while isinstance(anchor, exp.SetOperation):
            anchor = anchor.this
        if anchor is body:
            return self.query(body, parent, ctes)
        first = self.query(anchor, parent, ctes)
        current = _rename(first, names)
        if current is None:
            return None
        read: Sources = _EMPTY
        self.recursing.add(self.key(name))
        try:
            for _ in range(_MAX_RECURSION_ROUNDS):
                trial = dict(ctes)
                trial[name] = current

                def run(trial: _Ctes = trial) -> list[_Col] | None:
                    return self.query(body, parent, trial)

                out, read = self.collect(run)
                if out is None or len(out) != len(current):
                    return None
                merged = [(n, s | o) for (n, s), (_, o) in zip(current, out, strict=True)]
                if merged == current:
                    return current
                current = merged
        finally:
            self.recursing.discard(self.key(name))
        # No fixed point within the bound: every column carries all the CTE reads.
        everything = read | _union(s for _, s in current)
        return [(n, everything) for n, _ in current]

    # ----------------------------------------------------------------- FROM

    def add_item(self, node: exp.Expr, scope: _Scope, ctes: _Ctes) -> list[_Col] | None:
        """Add a FROM item (and the joins nested in it) to scope; returns its * columns."""
        if isinstance(node, exp.Table) and node.args.get("joins"):
            star = self.add_single(node, scope, ctes)
            for join in node.args["joins"]:
                star = self.add_join(join, scope, ctes, star)
            return star
        if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Table):
            # A parenthesised join: (a JOIN b ON ...) [AS j]
            alias = node.args.get("alias")
            if alias is None:
                return self.add_item(node.this, scope, ctes)
            inner = _Scope(scope.parent, ctes)
            star = self.add_item(node.this, inner, ctes)
            columns = _rename(star, [self.fold(c) for c in alias.columns])
            scope.rels.append(_Rel(self.fold(alias.this), columns))
            return columns
        return self.add_single(node, scope, ctes)

    def add_join(
        self, join: exp.Expr, scope: _Scope, ctes: _Ctes, left: list[_Col] | None
    ) -> list[_Col] | None:
        if not isinstance(join, exp.Join):
            raise _Unknown
        for arg in ("match_condition", "nearest", "directed", "pivots", "global_"):
            if join.args.get(arg):
                raise _Unknown
        before = len(scope.rels)
        right = self.add_item(join.this, scope, ctes)
        new_rels = scope.rels[before:]
        using = join.args.get("using")
        method = str(join.args.get("method") or "").upper()
        names: list[str] | None = None
        if using:
            names = [self.fold(u.this if isinstance(u, exp.Column) else u) for u in using]
        elif method == "NATURAL":
            if left is None or right is None:
                names = None
                left = None  # the merged column list is unknown
            else:
                right_keys = {self.key(n) for n, _ in right}
                names = []
                for n, _ in left:
                    if self.key(n) in right_keys and n not in names:
                        names.append(n)
        if names is not None and left is not None and right is not None:
            merged = self.merge_using(left, right, names)
            for _, sources in merged[: len(names)]:
                self.reads.update(sources)  # the join condition reads them
            result: list[_Col] | None = merged
        elif names is not None or method == "NATURAL":
            result = None
            for rel in new_rels:
                self.read_rel(rel)
        else:
            result = left + right if left is not None and right is not None else None
        on = join.args.get("on")
        if on is not None:
            read = self.expr(on, scope)
            if scope.generator:
                self.shaped(read)  # which generated rows join
        if join.args.get("expressions"):
            raise _Unknown
        return result

    def merge_using(self, left: list[_Col], right: list[_Col], names: list[str]) -> list[_Col]:
        keys = [self.key(n) for n in names]
        merged: list[_Col] = []
        for name, key in zip(names, keys, strict=True):
            sources = _union(s for n, s in left + right if self.key(n) == key)
            merged.append((name, sources))
        merged.extend(c for c in left if self.key(c[0]) not in keys)
        merged.extend(c for c in right if self.key(c[0]) not in keys)
        return merged

    def add_single(self, node: exp.Expr, scope: _Scope, ctes: _Ctes) -> list[_Col] | None:
        rel = self.relation(node, scope, ctes)
        scope.rels.append(rel)
        return rel.columns

    def relation(self, node: exp.Expr, scope: _Scope, ctes: _Ctes) -> _Rel:
        if isinstance(node, exp.Table):
            return self.table(node, scope, ctes)
        if isinstance(node, exp.Subquery):
            out = self.query(node, scope.parent, ctes)  # not LATERAL: no sibling items
            return self.aliased(node.args.get("alias"), out, None)
        if isinstance(node, exp.Lateral):
            if node.args.get("view") or node.args.get("cross_apply") is not None:
                raise _Unknown
            inner = node.this
            if isinstance(inner, exp.Subquery):
                out = self.query(inner, scope, ctes)
                return self.aliased(node.args.get("alias") or inner.args.get("alias"), out, None)
            if isinstance(inner, exp.Func):
                return self.function(inner, node.args.get("alias"), scope, node)
            raise _Unknown
        if isinstance(node, exp.Values):
            scope.generator = True
            out = self.values(node, scope.parent, ctes)
            return self.aliased(node.args.get("alias"), out, None)
        if isinstance(node, exp.Unnest):
            return self.function(node, node.args.get("alias"), scope, node)
        raise _Unknown

    def aliased(self, alias: object, out: list[_Col] | None, wild: Sources | None) -> _Rel:
        if isinstance(alias, exp.TableAlias):
            names = [self.fold(c) for c in alias.columns]
            name = self.fold(alias.this) if alias.this is not None else None
            return _Rel(name, _rename(out, names), wild=wild)
        if alias is not None:
            raise _Unknown
        return _Rel(None, out, wild=wild)

    def table(self, node: exp.Table, scope: _Scope, ctes: _Ctes) -> _Rel:
        for arg in ("laterals", "pivots", "system_time", "version", "format", "pattern"):
            if node.args.get(arg):
                raise _Unknown
        for arg in ("when", "changes", "indexed"):
            if node.args.get(arg):
                raise _Unknown
        this = node.this
        alias = node.args.get("alias")
        if node.args.get("rows_from"):
            raise _Unknown
        sample = node.args.get("sample")
        if sample is not None:
            self.shaped(self.generic(sample, scope))  # the share of rows, the seed
        if isinstance(this, exp.Func):
            return self.function(this, alias, scope, node)
        if not isinstance(this, exp.Identifier):
            raise _Unknown
        name = self.fold(this)
        db_node = node.args.get("db")
        db = self.fold(db_node) if db_node is not None else None
        if db is None and self.key(name) in ctes:
            if self.key(name) in self.recursing:
                scope.generator = True  # the recursive term: its conditions bound the rows
            columns = ctes[self.key(name)]
            rel = self.aliased(alias, columns, None) if alias is not None else _Rel(name, columns)
            if rel.name is None:
                rel.name = name
            return rel
        if db is None and self.dialect == "mysql" and name.casefold() == "dual":
            return _Rel(None, [])  # FROM DUAL: no row source at all
        key, columns, wild = self.catalog_table(db, name)
        if alias is not None:
            rel = self.aliased(alias, columns, wild)
            if rel.name is None:
                rel.name = name
        else:
            rel = _Rel(name, columns, wild=wild, schema=key[0] if key else db)
        rel.base = key if key is not None else self.new_table(node)
        return rel

    def catalog_table(
        self, db: str | None, name: str
    ) -> tuple[TableKey | None, list[_Col] | None, Sources | None]:
        """(resolved key, columns, wildcard sources) of a table or view reference."""
        index = self.index
        key: TableKey | None = None
        if db is not None:
            key = index.find(db, name)
        else:
            pg_catalog = ("pg_catalog", name)
            if self.dialect == "postgres" and "pg_catalog" not in index.search_path:
                key = index.find(*pg_catalog)
            for schema in index.search_path:
                if key is not None:
                    break
                key = index.find(schema, name)
            if key is None and self.dialect == "postgres" and name.startswith("pg_"):
                db = "pg_catalog"
        if key is not None:
            self.tables.add(key)
            if self.value_bearing(key[0], key[1]):
                raise _Unknown
            names = index.columns(key)
            if key in index.catalog.views:
                return key, self.view(key, names), None
            assert names is not None  # found: in tables or in views
            return key, [(c, frozenset({(key[0], key[1], c)})) for c in names], None
        if db is not None and self.harmless_schema(db):
            self.tables.add((db, name))
            if self.value_bearing(db, name):
                raise _Unknown
            return (db, name), None, _EMPTY
        self.unresolved = True
        return None, None, None

    def harmless_schema(self, schema: str) -> bool:
        if self.dialect == "mysql":
            return schema.casefold() in HARMLESS_SCHEMAS
        return schema in HARMLESS_SCHEMAS

    def value_bearing(self, schema: str, name: str) -> bool:
        if self.dialect == "mysql":
            return (schema.casefold(), name.casefold()) in VALUE_BEARING
        return (schema, name) in VALUE_BEARING

    def view(self, key: TableKey, names: tuple[str, ...] | None) -> list[_Col]:
        cached = self.expanded.get(key)
        if cached is not None:
            self.reads.update(*(s for _, s in cached))
            return cached
        if key in self.expanding or len(self.expanding) >= MAX_VIEW_DEPTH:
            raise _Unknown
        parsed = _parse_view(self.index.catalog.views[key], self.dialect)
        if parsed is None:
            raise _Unknown
        stmt, root = parsed
        saved_text, saved_root = self.text, self.root
        self.text, self.root = stmt.text, None
        self.expanding = (*self.expanding, key)
        try:
            if not _functions_known(stmt, root):
                self.unresolved = True
            out = self.query(root, None, {})
        finally:
            self.text, self.root = saved_text, saved_root
            self.expanding = self.expanding[:-1]
        if out is None or (names is not None and len(names) != len(out)):
            raise _Unknown
        columns = [
            (n, frozenset({(key[0], key[1], n)}) | sources)
            for n, (_, sources) in zip(names or [n for n, _ in out], out, strict=True)
        ]
        self.expanded[key] = columns
        return columns

    def function(self, func: exp.Func, alias: object, scope: _Scope, holder: exp.Expr) -> _Rel:
        """A function in FROM: its columns carry its arguments (implicitly LATERAL)."""
        scope.generator = True
        names: list[str] | None = None
        ordinality: str | None = "ordinality" if holder.args.get("ordinality") else None
        if isinstance(func, exp.JSONTable):
            sources = self.expr(func.this, scope) | self.expr(func.args.get("path"), scope)
            self.shaped(sources)
            names = self.json_table_columns(func.args.get("schema"))
        else:
            sources = self.expr(func, scope)
            # How many rows it yields depends on its arguments (generate_series(1, x)).
            self.shaped(sources)
            if isinstance(func, exp.Unnest):
                names = ["unnest"] * len(func.expressions)
                offset = func.args.get("offset")
                if isinstance(offset, exp.Identifier):
                    ordinality = self.fold(offset)  # WITH ORDINALITY AS u(a, n): n
                elif offset:
                    ordinality = "ordinality"
            elif self.dialect == "postgres":
                known = _SRF_COLUMNS.get(self.output_name(func))
                names = list(known) if known is not None else None
        table_name: str | None = None
        alias_names: list[str] = []
        if isinstance(alias, exp.TableAlias):
            table_name = self.fold(alias.this) if alias.this is not None else None
            alias_names = [
                self.fold(c.this if isinstance(c, exp.ColumnDef) else c) for c in alias.columns
            ]
        elif alias is not None:
            raise _Unknown
        if names is None and alias_names and ordinality is None:
            names = list(alias_names)  # json_to_record(...) AS r(a int, b text)
        if names is None:
            return _Rel(table_name, None, wild=sources)  # columns unknown: any carries the args
        if len(names) == 1 and table_name and not alias_names and self.dialect == "postgres":
            names = [table_name]  # a scalar function's alias names its column too
        columns = [(n, sources) for n in names]
        if ordinality is not None:
            columns.append((ordinality, _EMPTY))
        return _Rel(table_name, _rename(columns, alias_names), wild=sources)

    def json_table_columns(self, schema: object) -> list[str]:
        if not isinstance(schema, exp.JSONSchema):
            raise _Unknown
        names: list[str] = []
        for col in schema.expressions:
            if not isinstance(col, exp.JSONColumnDef):
                raise _Unknown
            nested = col.args.get("nested_schema")
            if nested is not None:
                names.extend(self.json_table_columns(nested))  # NESTED PATH ... COLUMNS (...)
            else:
                names.append(self.fold(col.this))
        return names

    def read_rel(self, rel: _Rel) -> None:
        if rel.columns is not None:
            for _, sources in rel.columns:
                self.reads.update(sources)
        elif rel.wild is not None:
            self.reads.update(rel.wild)
        else:
            self.unresolved = True

    # ----------------------------------------------------------------- columns

    def find_rels(self, column: exp.Column, scope: _Scope | None) -> list[_Rel]:
        table = column.args.get("table")
        if table is None:
            return []
        name = self.fold(table)
        db_node = column.args.get("db")
        db = self.fold(db_node) if db_node is not None else None
        while scope is not None:
            hits = [rel for rel in scope.rels if self.rel_matches(rel, db, name)]
            if hits:
                return hits
            scope = scope.parent
        return []

    def rel_matches(self, rel: _Rel, db: str | None, name: str) -> bool:
        if rel.name is None or not self.same_table(rel.name, name):
            return False
        if db is None:
            return True
        return rel.schema is not None and self.same_table(rel.schema, db)

    def rel_column(self, rel: _Rel, key: str) -> Sources | None:
        if rel.columns is None:
            return None
        if rel.keys is None:
            keys: dict[str, list[int]] = {}
            for i, (n, _) in enumerate(rel.columns):
                keys.setdefault(self.key(n), []).append(i)
            rel.keys = keys
        hits = rel.keys.get(key)
        if not hits:
            return None
        if len(hits) == 1:
            return rel.columns[hits[0]][1]
        return _union(rel.columns[i][1] for i in hits)

    def column(self, node: exp.Column, scope: _Scope) -> Sources:
        this = node.this
        if isinstance(this, exp.Star):
            rels = self.find_rels(node, scope)
            if not rels:
                self.unresolved = True
                return _EMPTY
            return self.whole_rows(rels)
        if not isinstance(this, exp.Identifier):
            raise _Unknown
        key = self.key(self.fold(this))
        if node.args.get("table") is None:
            found = self.unqualified(key, scope)
            if found is None:
                rels = self.rels_named(self.fold(this), scope)
                if rels:
                    return self.whole_rows(rels)  # a table name used as a value: its row
                self.unresolved = True
                return _EMPTY
            self.reads.update(found)
            return found
        rels = self.find_rels(node, scope)
        if not rels:
            self.unresolved = True  # unknown qualifier (or a composite field)
            return _EMPTY
        out: set[SourceColumn] = set()
        for rel in rels:
            sources = self.rel_column(rel, key)
            if sources is None:
                if rel.columns is None and rel.wild is not None:
                    sources = rel.wild
                else:
                    self.unresolved = True  # unknown column (or t.function notation)
                    continue
            out |= sources
        result = frozenset(out)
        self.reads.update(result)
        return result

    def unqualified(
        self, key: str, scope: _Scope | None, *, silent: bool = False
    ) -> Sources | None:
        """Sources of an unqualified column name, innermost query level first (silent: a
        bare identifier that may not be a column at all; it never sets ``unresolved``)."""
        acc: set[SourceColumn] = set()
        wild = False
        while scope is not None:
            hits = [s for rel in scope.rels if (s := self.rel_column(rel, key)) is not None]
            if hits:
                return frozenset(acc.union(*hits))
            for rel in scope.rels:
                if rel.columns is None:
                    wild = True
                    if rel.wild is None:
                        self.unresolved = self.unresolved or not silent
                    else:
                        acc |= rel.wild
            if not silent and key in scope.outputs:
                return frozenset(acc | scope.outputs[key])
            scope = scope.parent
        return frozenset(acc) if wild else None

    def rels_named(self, name: str, scope: _Scope | None) -> list[_Rel]:
        while scope is not None:
            hits = [r for r in scope.rels if r.name is not None and self.same_table(r.name, name)]
            if hits:
                return hits
            scope = scope.parent
        return []

    def whole_rows(self, rels: list[_Rel]) -> Sources:
        out: set[SourceColumn] = set()
        for rel in rels:
            self.read_rel(rel)
            if rel.columns is not None:
                for _, sources in rel.columns:
                    out |= sources
            elif rel.wild is not None:
                out |= rel.wild
        return frozenset(out)

    # ----------------------------------------------------------------- expressions

    def expr(self, node: object, scope: _Scope) -> Sources:
        if isinstance(node, list):
            return _union(self.expr(item, scope) for item in node)
        if not isinstance(node, exp.Expr):
            return _EMPTY
        if isinstance(node, exp.Column):
            return self.column(node, scope)
        if isinstance(
            node,
            (exp.Literal, exp.Null, exp.Boolean, exp.DataType, exp.Var, exp.Placeholder,
             exp.Parameter, exp.SessionParameter),
        ):  # fmt: skip
            return _EMPTY
        if isinstance(node, exp.Identifier):
            # A bare name inside an expression (a key, a VALUES(col) argument): count it if
            # it names a column, never fail on it.
            found = self.unqualified(self.key(self.fold(node)), scope, silent=True)
            if found:
                self.reads.update(found)
            return found or _EMPTY
        if isinstance(node, exp.Star):
            return self.whole_rows(scope.rels)
        if isinstance(node, (exp.Select, exp.SetOperation, exp.Subquery, exp.Values)):
            return self.subquery_values(node, scope)
        if isinstance(node, exp.Exists):
            return self.subquery_reads(node.this, scope)
        if isinstance(node, (exp.Any, exp.All)) and isinstance(node.this, exp.Query):
            return self.subquery_reads(node.this, scope)
        if isinstance(node, exp.In):
            out = self.generic(node, scope, skip="query")
            query = node.args.get("query")
            return out | self.subquery_reads(query, scope) if query is not None else out
        if isinstance(node, exp.Array) and any(isinstance(e, exp.Query) for e in node.expressions):
            return _union(
                self.subquery_values(e, scope) if isinstance(e, exp.Query) else self.expr(e, scope)
                for e in node.expressions
            )
        if isinstance(node, exp.Count):
            if not isinstance(node.this, exp.Star):
                self.generic(node, scope)  # read, but a count reveals no value
            return _EMPTY
        if isinstance(node, exp.PropertyEQ) and isinstance(node.this, exp.Parameter):
            stored = self.expr(node.expression, scope)  # MySQL @x := expr
            self.write(UNTRACKED, stored)
            return stored
        if isinstance(node, exp.Window):
            out = self.generic(node, scope, skip="alias")
            named = node.args.get("alias")  # OVER w
            if isinstance(named, exp.Identifier):
                key = self.key(self.fold(named))
                level: _Scope | None = scope
                while level is not None and key not in level.windows:
                    level = level.parent
                if level is None:
                    self.unresolved = True
                else:
                    out |= level.windows[key]
            return out
        if isinstance(node, (exp.Table, exp.From, exp.Join, exp.Lateral, exp.Into)):
            raise _Unknown
        out = self.generic(node, scope)
        if isinstance(node, exp.Func):
            name = self.function_name(node)
            if name in _STORING_FUNCTIONS:
                self.write(UNTRACKED, out)
            if name in _SET_RETURNING or isinstance(node, _SET_RETURNING_NODES):
                self.shaped(out)  # as many rows as its arguments say
        return out

    def generic(self, node: exp.Expr, scope: _Scope, skip: str = "") -> Sources:
        out: set[SourceColumn] = set()
        if isinstance(node, exp.Anonymous):
            skip = "this"  # the function's name
        for arg, value in node.args.items():
            if arg == skip or value is None:
                continue
            if isinstance(value, list):
                for item in value:
                    out |= self.expr(item, scope)
            elif isinstance(value, exp.Expr):
                out |= self.expr(value, scope)
        return frozenset(out)

    def function_name(self, node: exp.Func) -> str:
        if isinstance(node, exp.Anonymous):
            return str(node.name).lower()
        meta = node.meta
        if "start" in meta and "end" in meta:
            return self.text[meta["start"] : meta["end"] + 1].lower()
        return ""

    def subquery_values(self, node: exp.Expr, scope: _Scope) -> Sources:
        """A scalar subquery (or ARRAY(subquery)): the values it returns."""
        out, read = self.collect(lambda: self.query(node, scope, scope.ctes))
        if out is None:
            self.unresolved = True
            return read
        return _union(s for _, s in out)

    def subquery_reads(self, node: exp.Expr, scope: _Scope) -> Sources:
        """EXISTS / IN / ANY / ALL: everything the subquery reads (conservative)."""
        out, read = self.collect(lambda: self.query(node, scope, scope.ctes))
        if out is None:
            self.unresolved = True
        return read | _union(s for _, s in out or ())

    # ----------------------------------------------------------------- DML

    def dml(self, node: exp.Expr, parent: _Scope | None, ctes: _Ctes) -> list[_Col] | None:
        """Writes of INSERT / UPDATE / DELETE / MERGE; returns the RETURNING outputs."""
        ctes = self.with_(node.args.get("with_"), parent, ctes)
        if isinstance(node, exp.Insert):
            return self.insert(node, parent, ctes)
        if isinstance(node, exp.Update):
            return self.update(node, parent, ctes)
        if isinstance(node, exp.Delete):
            return self.delete(node, parent, ctes)
        if isinstance(node, exp.Merge):
            return self.merge(node, parent, ctes)
        raise _Unknown

    def target(self, node: exp.Expr, scope: _Scope, ctes: _Ctes) -> _Rel:
        if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
            raise _Unknown
        if node.args.get("joins"):
            raise _Unknown
        before = len(scope.rels)
        self.add_item(node, scope, ctes)
        rel = scope.rels[before]
        if rel.base is None:
            raise _Unknown  # a CTE is not a write target
        return rel

    def insert(self, node: exp.Insert, parent: _Scope | None, ctes: _Ctes) -> list[_Col] | None:
        for arg in ("is_function", "overwrite", "alternative", "where", "by_name", "stored"):
            if node.args.get(arg):
                raise _Unknown
        for arg in ("partition", "settings", "source", "using"):
            if node.args.get(arg):
                raise _Unknown
        this = node.this
        names: list[str] | None = None
        if isinstance(this, exp.Schema):
            names = [
                self.fold(c.this if isinstance(c, exp.Column) else c) for c in this.expressions
            ]
            this = this.this
        scope = _Scope(parent, ctes)
        rel = self.target(this, scope, ctes)
        target = rel.base
        if target is None:
            raise _Unknown
        source = node.args.get("expression")
        per_column: dict[str, Sources] = {}
        written: Sources = _EMPTY
        if source is not None:
            out, read = self.collect(lambda: self.query(source, parent, ctes))
            if out is None:
                self.unresolved = True
                written = read
            else:
                written = _union(s for _, s in out)
                if names is None and rel.columns is not None:
                    names = [n for n, _ in rel.columns]
                if names is not None and len(names) >= len(out):
                    for n, (_, s) in zip(names, out, strict=False):
                        per_column[self.key(n)] = per_column.get(self.key(n), _EMPTY) | s
        self.write(target, written)
        # Column by column when the source lines up with the target's columns; otherwise
        # any inserted value may land in any column.
        spread = written if source is not None and not per_column else _EMPTY

        def inserted(key: str) -> Sources:
            return spread | per_column.get(key, _EMPTY)

        conflict = node.args.get("conflict")
        if conflict is not None:
            # ON CONFLICT ... DO UPDATE SET a = excluded.b / ON DUPLICATE KEY UPDATE a = VALUES(b)
            excluded = _Rel(
                "excluded",
                None
                if rel.columns is None
                else [(n, inserted(self.key(n))) for n, _ in rel.columns],
                wild=written,
            )
            cscope = _Scope(parent, ctes)
            cscope.rels.extend((rel, excluded))
            for item in conflict.args.get("expressions") or ():
                self.assignment(item, cscope, rel, per_column)
            for arg in ("conflict_keys", "index_predicate", "where", "constraint"):
                if conflict.args.get(arg) is not None:
                    self.expr(conflict.args[arg], cscope)
        return self.returning(node, scope, rel, inserted)

    def assignment(
        self, item: exp.Expr, scope: _Scope, default: _Rel, per_column: dict[str, Sources]
    ) -> Sources:
        """``col = expr`` of UPDATE SET / ON CONFLICT / ON DUPLICATE KEY; records the write."""
        if not isinstance(item, exp.EQ):
            raise _Unknown
        stored = self.expr(item.expression, scope)
        lhs = item.this
        columns = list(lhs.expressions) if isinstance(lhs, exp.Tuple) else [lhs]
        for col in columns:
            if not isinstance(col, exp.Column) or not isinstance(col.this, exp.Identifier):
                raise _Unknown
            rel = default
            if col.args.get("table") is not None:
                hits = self.find_rels(col, scope)
                if len(hits) != 1 or hits[0].base is None:
                    raise _Unknown
                rel = hits[0]
            elif self.dialect == "mysql":
                owners = [
                    r for r in scope.rels
                    if r.base is not None and self.rel_column(r, self.key(self.fold(col.this)))
                    is not None
                ]  # fmt: skip
                if len(owners) == 1:
                    rel = owners[0]
            if rel.base is None:
                raise _Unknown
            self.write(rel.base, stored)
            if rel is default:
                key = self.key(self.fold(col.this))
                per_column[key] = per_column.get(key, _EMPTY) | stored
        return stored

    def returning(
        self, node: exp.Expr, scope: _Scope, rel: _Rel, added: Callable[[str], Sources]
    ) -> list[_Col] | None:
        """RETURNING: the target's columns carry their stored sources plus what was written."""
        ret = node.args.get("returning")
        if ret is None:
            return []
        if not isinstance(ret, exp.Returning) or ret.args.get("into"):
            raise _Unknown
        view = _Rel(rel.name, None, wild=rel.wild, schema=rel.schema, base=rel.base)
        if rel.columns is not None:
            view.columns = [(n, s | added(self.key(n))) for n, s in rel.columns]
        elif rel.wild is not None:
            view.wild = rel.wild | added("")
        rscope = _Scope(scope.parent, scope.ctes)
        rscope.rels = [view if r is rel else r for r in scope.rels]
        rscope.star = view.columns
        outputs: list[_Col] | None = []
        for item in ret.expressions:
            cols = self.select_item(item, rscope)
            if cols is None or outputs is None:
                outputs = None
            else:
                outputs.extend(cols)
        return outputs

    def update(self, node: exp.Update, parent: _Scope | None, ctes: _Ctes) -> list[_Col] | None:
        if node.args.get("options") or node.args.get("hint"):
            raise _Unknown
        scope = _Scope(parent, ctes)
        this = node.this
        if isinstance(this, exp.Table) and this.args.get("joins"):
            self.add_item(this, scope, ctes)  # MySQL: UPDATE a JOIN b ... SET
            rel = scope.rels[0]
        else:
            rel = self.target(this, scope, ctes)
        frm = node.args.get("from_")
        if frm is not None:
            self.add_item(frm.this, scope, ctes)
        per_column: dict[str, Sources] = {}
        for item in node.expressions:
            self.assignment(item, scope, rel, per_column)
        for arg in ("where", "order", "limit"):
            if node.args.get(arg) is not None:
                self.expr(node.args[arg], scope)
        return self.returning(node, scope, rel, lambda n: per_column.get(n, _EMPTY))

    def delete(self, node: exp.Delete, parent: _Scope | None, ctes: _Ctes) -> list[_Col] | None:
        if node.args.get("cluster") or node.args.get("hint"):
            raise _Unknown
        scope = _Scope(parent, ctes)
        this = node.this
        if isinstance(this, exp.Table) and this.args.get("joins"):
            self.add_item(this, scope, ctes)
            rel = scope.rels[0]
        else:
            rel = self.target(this, scope, ctes)
        for item in node.args.get("using") or ():
            self.add_item(item, scope, ctes)
        for arg in ("where", "order", "limit"):
            if node.args.get(arg) is not None:
                self.expr(node.args[arg], scope)
        return self.returning(node, scope, rel, lambda n: _EMPTY)

    def merge(self, node: exp.Merge, parent: _Scope | None, ctes: _Ctes) -> list[_Col] | None:
        if node.args.get("using_cond"):
            raise _Unknown
        scope = _Scope(parent, ctes)
        rel = self.target(node.this, scope, ctes)
        target = rel.base
        if target is None:
            raise _Unknown
        self.add_item(node.args["using"], scope, ctes)
        self.expr(node.args.get("on"), scope)
        per_column: dict[str, Sources] = {}
        written: set[SourceColumn] = set()
        whens = node.args.get("whens")
        for when in whens.expressions if whens is not None else ():
            if not isinstance(when, exp.When):
                raise _Unknown
            if when.args.get("condition") is not None:
                self.expr(when.args["condition"], scope)
            then = when.args.get("then")
            if isinstance(then, exp.Update):
                for item in then.expressions:
                    written |= self.assignment(item, scope, rel, per_column)
            elif isinstance(then, exp.Insert):
                values = then.args.get("expression")
                stored = self.expr(values, scope) if values is not None else _EMPTY
                self.write(target, stored)
                written |= stored
            elif not isinstance(then, (exp.Delete, exp.Var)):
                raise _Unknown
        everything = frozenset(written)
        return self.returning(node, scope, rel, lambda n: everything)


def _rename(columns: list[_Col] | None, names: list[str]) -> list[_Col] | None:
    """Column aliases rename the first columns; more aliases than columns is an error."""
    if columns is None or not names:
        return columns
    if len(names) > len(columns):
        raise _Unknown
    return [(names[i], s) if i < len(names) else (n, s) for i, (n, s) in enumerate(columns)]


@lru_cache(maxsize=256)
def _parse_view(text: str, dialect: str) -> tuple[Stmt, exp.Expr] | None:
    """A view definition parsed the same guarded way as statements (trees are not mutated)."""
    try:
        statements = split_statements(lex(text, dialect), dialect)
    except Exception:
        return None
    if len(statements) != 1:
        return None
    stmt = statements[0]
    first = "(" if stmt.kind(0) == LPAREN else stmt.kw(0)
    if first not in ("SELECT", "WITH", "VALUES", "TABLE", "("):
        return None
    root = parse_statement(stmt, first)
    if root is None or not isinstance(root, (exp.Query, exp.Values)):
        return None
    return stmt, root
