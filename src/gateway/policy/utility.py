"""Statements classified from their tokens: everything but queries and DML.

sqlglot parses most utility statements only as an opaque ``Command`` (or not at all), so
these are recognised by their leading keywords, from the lexer's tokens, in the grammar
positions the servers use. Each recogniser only accepts shapes whose effect its leading
keywords decide (the server rejects any other continuation); statements that wrap another
statement (EXPLAIN, PREPARE, COPY (query), DECLARE CURSOR, CREATE TABLE AS) classify the
wrapped part recursively. Function calls anywhere add their classes (common.build).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from gateway.policy.common import (
    Recurse,
    build,
    harvest_names,
    is_string,
    literal_tokens,
    pg_setting_classes,
    search_path_schemas,
)
from gateway.policy.facts import Name, StatementFacts, merge_facts, unknown_facts
from gateway.policy.lexer import (
    COMMA,
    DOT,
    LPAREN,
    NUMBER,
    QIDENT,
    RPAREN,
    STRING,
    VAR,
    WORD,
    XSTRING,
    Stmt,
)
from gateway.policy.vocabulary import (
    ADMIN_DDL_OBJECTS,
    DCL_OBJECTS,
    KINDS,
    MYSQL_LEXER_MODES,
    MYSQL_UNSAFE_CHARSETS,
)

# Words that start a statement EXPLAIN / ANALYZE / PREPARE may wrap.
STATEMENT_STARTS: Final[frozenset[str]] = frozenset(
    {"SELECT", "WITH", "TABLE", "VALUES", "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"}
)


def unknown(stmt: Stmt) -> StatementFacts:
    tables, schemas = harvest_names(stmt)
    facts = build(stmt, "UNKNOWN", {"unknown"}, tables=tables, schemas=schemas)
    return unknown_facts(facts.tables, facts.functions, facts.schemas)


def canonical_statement_name(stmt: Stmt, i: int) -> str | None:
    """A prepared statement's name as the server compares it."""
    ident = stmt.ident(i)
    if ident is None:
        return None
    text, quoted = ident
    if stmt.dialect == "mysql":
        return text.casefold()
    return text if quoted else text.lower()


# --------------------------------------------------------------------------- wrappers


def explain_pg(stmt: Stmt, recurse: Recurse) -> StatementFacts:
    i = 1
    analyze = False
    if stmt.kind(1) == LPAREN:
        close = stmt.matching_paren(1)
        if close < 0:
            return unknown(stmt)
        options = _explain_pg_options(stmt, 2, close)
        if options is None:
            return unknown(stmt)
        # An option name is an identifier ("analyze" and U&"analyze" are ANALYZE). Any
        # ANALYZE option counts, whatever its value: "(ANALYZE off)" is rare, and reading
        # it as on can only deny more. So does a name the gateway does not know: the
        # server either rejects it or knows something the gateway does not.
        analyze = any(name not in _PG_EXPLAIN_PLAN_ONLY for name in options)
        i = close + 1
    else:
        while stmt.kw(i) in ("ANALYZE", "ANALYSE", "VERBOSE"):
            analyze = analyze or stmt.kw(i) != "VERBOSE"
            i += 1
    return _explained(stmt, stmt.sub(i), analyze, recurse)


# EXPLAIN options (PostgreSQL 13-18) that do not run the statement.
_PG_EXPLAIN_PLAN_ONLY: Final[frozenset[str]] = frozenset(
    {
        "verbose",
        "costs",
        "settings",
        "generic_plan",
        "buffers",
        "wal",
        "timing",
        "summary",
        "memory",
        "format",
        "serialize",
    }
)


def _explain_pg_options(stmt: Stmt, start: int, close: int) -> list[str] | None:
    """The option names of ``EXPLAIN (name [value], ...)`` between ``start`` and ``close``.

    Names as the server compares them: an unquoted one ASCII-lowercased, a quoted one (U&
    ones are decoded by the lexer) as written. None for a list that is not name [value],
    ... (a parenthesis, an empty item, an item that does not start with a name).
    """
    names: list[str] = []
    item_start = True
    for j in range(start, close):
        kind = stmt.kind(j)
        if kind in (LPAREN, RPAREN):
            return None
        if kind == COMMA:
            if item_start:
                return None
            item_start = True
            continue
        if item_start:
            ident = stmt.ident(j)
            if ident is None:
                return None
            text, quoted = ident
            names.append(text if quoted else _ascii_lower(text))
            item_start = False
    if item_start:  # "()" or a trailing comma
        return None
    return names


def _ascii_lower(text: str) -> str:
    """PostgreSQL's downcasing of an unquoted identifier (ASCII letters only)."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _explained(stmt: Stmt, inner_stmt: Stmt, analyze: bool, recurse: Recurse) -> StatementFacts:
    if not len(inner_stmt):
        return unknown(stmt)
    inner = recurse(inner_stmt)
    if "unknown" in inner.classes:
        return inner
    if analyze:
        return inner  # it runs: the statement's own classes and kind
    # Plain EXPLAIN plans the statement, but planning runs code: MariaDB executes derived
    # tables and constant subqueries, PostgreSQL evaluates EXECUTE's arguments and stable
    # functions of constants (selectivity estimates). So it keeps every class its function
    # calls carry (file, write, privilege, dynamic ...) and the rules they hit; only the
    # statement's own kind (a DELETE planned is not a DELETE run) becomes "read". EXPLAIN
    # EXECUTE names its prepared statement as EXECUTE does (unknown if never prepared).
    return build(
        stmt,
        "EXPLAIN",
        {"read"},
        tables=inner.tables,
        schemas=inner.schemas,
        literal_dependent=inner.literal_dependent,
        execute=inner.execute,
    )


def explain_mysql(stmt: Stmt, recurse: Recurse) -> StatementFacts:
    i = 1
    analyze = False
    options = False  # seen something only EXPLAIN <statement> takes
    schema: Name | None = None
    while True:
        word = stmt.kw(i)
        if word in ("EXTENDED", "PARTITIONS"):
            i += 1  # not reserved words: "EXPLAIN extended" may describe a table
            continue
        if word == "ANALYZE":
            analyze = True
            i += 1
        elif word == "FORMAT" and stmt.raw(i + 1) == "=":
            i += 3
        elif word == "INTO" and stmt.kind(i + 1) == VAR:
            i += 2
        elif word == "FOR" and stmt.kw(i + 1) in ("SCHEMA", "DATABASE"):
            # EXPLAIN ... FOR SCHEMA db <statement>: db is only the default schema.
            schema = stmt.ident(i + 2)
            if schema is None:
                return unknown(stmt)
            i += 3
        else:
            break
        options = True
    if stmt.kw(i) == "FOR" and stmt.kw(i + 1) == "CONNECTION" and not analyze:
        return build(stmt, "EXPLAIN", {"read"})
    if stmt.kw(i) in STATEMENT_STARTS or stmt.kind(i) == LPAREN:
        facts = _explained(stmt, stmt.sub(i), analyze, recurse)
        if schema is not None:  # schema rules see the default schema it runs in
            facts = replace(facts, schemas=frozenset(facts.schemas) | {schema})
        return facts
    if options:
        # Options are followed by a statement, never a table: refuse what is not one.
        return unknown(stmt)
    # DESCRIBE t [column]: table metadata
    return build(stmt, "DESCRIBE", {"read"})


def analyze_mysql(stmt: Stmt, recurse: Recurse) -> StatementFacts:
    i = 1
    if stmt.kw(1) in ("TABLE", "TABLES", "NO_WRITE_TO_BINLOG", "LOCAL"):
        return build(stmt, "ANALYZE", {"admin"})
    if stmt.kw(i) == "FORMAT" and stmt.raw(i + 1) == "=":
        i += 3
    if stmt.kw(i) in STATEMENT_STARTS or stmt.kind(i) == LPAREN:
        # MariaDB's ANALYZE <statement> runs the statement and reports on it.
        return _explained(stmt, stmt.sub(i), True, recurse)
    return unknown(stmt)


def prepare_pg(stmt: Stmt, recurse: Recurse) -> StatementFacts:
    if stmt.kw(1) == "TRANSACTION":
        return build(stmt, "PREPARE TRANSACTION", {"transaction"})
    name = canonical_statement_name(stmt, 1)
    i = 2
    if stmt.kind(i) == LPAREN:
        close = stmt.matching_paren(i)
        if close < 0:
            return unknown(stmt)
        i = close + 1
    if name is None or stmt.kw(i) != "AS":
        return unknown(stmt)
    return _prepared(name, recurse(stmt.sub(i + 1)), literal_dependent=False)


def _prepared(name: str, body: StatementFacts, *, literal_dependent: bool) -> StatementFacts:
    # PREPARE is judged as its body (allowed only if the body would be), and remembers it.
    return StatementFacts(
        kind=body.kind,
        classes=body.classes,
        builtins=body.builtins,
        tables=body.tables,
        functions=body.functions,
        schemas=body.schemas,
        literal_dependent=literal_dependent or body.literal_dependent,
        prepare=name,
        body=body,
        execute=body.execute,
    )


def prepare_mysql(stmt: Stmt, recurse: Recurse) -> StatementFacts:
    from gateway.policy.classify import classify_text  # the body is a new text

    name = canonical_statement_name(stmt, 1)
    if name is None or stmt.kw(2) != "FROM" or len(stmt) != 4:
        return unknown(stmt)
    if stmt.kind(3) == VAR:
        # PREPARE s FROM @sql: the text lives in a variable the gateway never sees.
        body = build(stmt, "PREPARE", {"dynamic"})
        return _prepared(name, body, literal_dependent=False)
    text = stmt.string_value(3)
    if text is None:
        return unknown(stmt)
    bodies = classify_text(text, "mysql")
    body = bodies[0] if len(bodies) == 1 else unknown(stmt)
    return _prepared(name, body, literal_dependent=True)


def execute_stmt(stmt: Stmt) -> StatementFacts:
    if stmt.dialect == "mysql" and stmt.kw(1) == "IMMEDIATE":
        # MariaDB's EXECUTE IMMEDIATE <expr> [USING ...] runs the text <expr> evaluates to
        # (a PREPARE'd statement may be called `immediate`: only the quoted name is one).
        return _execute_immediate_mysql(stmt)
    name = canonical_statement_name(stmt, 1)
    if name is None or not _execute_tail_ok(stmt):
        return unknown(stmt)
    own = build(stmt, "EXECUTE", (), tables=())
    return StatementFacts(
        kind="EXECUTE",
        classes=own.classes,
        builtins=own.builtins,
        functions=own.functions,
        literal_dependent=own.literal_dependent,
        execute=name,
    )


def _execute_tail_ok(stmt: Stmt) -> bool:
    """Whether what follows ``EXECUTE name`` is its parameters and nothing else.

    PostgreSQL: ``EXECUTE name [( expr [, ...] )]``; MySQL/MariaDB: ``EXECUTE name [USING
    ...]``. Anything else is another statement the server may parse differently.
    """
    n = len(stmt)
    if n == 2:
        return True
    if stmt.dialect == "postgres":
        return stmt.kind(2) == LPAREN and stmt.matching_paren(2) == n - 1
    return stmt.kw(2) == "USING" and n > 3


def _execute_immediate_mysql(stmt: Stmt) -> StatementFacts:
    n = len(stmt)
    using = stmt.find_kw(frozenset({"USING"}), 2)
    expr_end = using if using >= 0 else n
    if expr_end <= 2 or (using >= 0 and using + 1 >= n):
        return unknown(stmt)  # no expression, or USING with nothing after it
    depth = 0
    for j in range(2, n):
        if stmt.kind(j) == LPAREN:
            depth += 1
        elif stmt.kind(j) == RPAREN:
            depth -= 1
            if depth < 0:
                return unknown(stmt)
    if depth:
        return unknown(stmt)
    # The text is not visible (a literal one may be built from functions, variables,
    # CONCAT): dynamic, whatever it looks like; names in the expression still count.
    return build(stmt, "EXECUTE", {"dynamic"})


def deallocate_stmt(stmt: Stmt, first_name: int) -> StatementFacts:
    i = first_name
    if stmt.kw(i) == "PREPARE":
        i += 1
    if stmt.kw(i) == "ALL" and stmt.dialect == "postgres":
        return build(stmt, "DEALLOCATE", {"session"}, tables=(), deallocate="*")
    name = canonical_statement_name(stmt, i)
    if name is None:
        return unknown(stmt)
    return build(stmt, "DEALLOCATE", {"session"}, tables=(), deallocate=name)


def declare_pg(stmt: Stmt, recurse: Recurse) -> StatementFacts:
    cursor = stmt.find_kw(frozenset({"CURSOR"}), 1)
    query = stmt.find_kw(frozenset({"FOR"}), cursor + 1) if cursor > 0 else -1
    if query < 0:
        return unknown(stmt)
    return recurse(stmt.sub(query + 1))


def copy_pg(stmt: Stmt, recurse: Recurse) -> StatementFacts:
    i = 1
    if stmt.kw(i) == "BINARY":
        i += 1
    inner: StatementFacts | None = None
    tables: set[tuple[Name | None, Name]] = set()
    if stmt.kind(i) == LPAREN:
        close = stmt.matching_paren(i)
        if close < 0:
            return unknown(stmt)
        inner = recurse(stmt.sub(i + 1, close))
        i = close + 1
    else:
        chain: list[Name] = []
        while (ident := stmt.ident(i)) is not None:
            chain.append(ident)
            if stmt.kind(i + 1) != DOT:
                break
            i += 2
        i += 1
        if not chain:
            return unknown(stmt)
        tables.add((chain[-2] if len(chain) > 1 else None, chain[-1]))
        if stmt.kind(i) == LPAREN:
            close = stmt.matching_paren(i)
            if close < 0:
                return unknown(stmt)
            i = close + 1
    direction = stmt.kw(i)
    target = stmt.kw(i + 1)
    classes: set[str] = set()
    builtins: set[str] = set()
    if direction == "TO":
        classes.update(("read", "export"))
    elif direction == "FROM":
        classes.update(("write", "import"))
    else:
        return unknown(stmt)
    if target in ("STDOUT", "STDIN"):
        if (target == "STDOUT") != (direction == "TO"):
            return unknown(stmt)
        if target == "STDOUT":
            builtins.add("copy_to_stdout")
    elif target == "PROGRAM":
        classes.add("file")
        builtins.add("copy_program")
    elif is_string(stmt, i + 1):
        classes.add("file")  # a file on the database server
    else:
        return unknown(stmt)
    facts = build(stmt, "COPY", classes, builtins=builtins, tables=tables)
    if inner is not None:
        if "unknown" in inner.classes:
            return inner
        facts = merge_facts(facts, inner, kind="COPY")
        if direction == "TO" and "read" not in inner.classes:
            # COPY (DELETE ... RETURNING *) TO: the rows come from the DML, not a read
            facts = replace(facts, classes=facts.classes - {"read"})
    return facts


# --------------------------------------------------------------------------- SET / RESET


def set_pg(stmt: Stmt) -> StatementFacts:
    i = 1
    if stmt.kw(i) == "SESSION" and stmt.kw(i + 1) == "AUTHORIZATION":
        return build(stmt, "SET SESSION AUTHORIZATION", {"privilege"}, tables=())
    if stmt.kw(i) == "SESSION" and stmt.kw(i + 1) == "CHARACTERISTICS":
        return build(stmt, "SET", {"session"}, tables=())
    if stmt.kw(i) in ("SESSION", "LOCAL"):
        i += 1
    word = stmt.kw(i)
    if word == "ROLE":
        return build(stmt, "SET ROLE", {"privilege"}, tables=())
    if word == "SESSION" and stmt.kw(i + 1) == "AUTHORIZATION":
        return build(stmt, "SET SESSION AUTHORIZATION", {"privilege"}, tables=())
    if word == "TRANSACTION":
        return build(stmt, "SET TRANSACTION", {"transaction"}, tables=())
    if word == "CONSTRAINTS":
        return build(stmt, "SET CONSTRAINTS", {"transaction"}, tables=())
    if word == "TIME" and stmt.kw(i + 1) == "ZONE":
        return build(stmt, "SET", {"session"}, tables=())
    if word == "NAMES":
        return _set_pg_value(stmt, "client_encoding", i + 1)
    if word == "SCHEMA":
        return _set_pg_value(stmt, "search_path", i + 1)
    # SET name { TO | = } value [, ...]; custom settings are dotted (myapp.tenant)
    parts: list[str] = []
    while (ident := stmt.ident(i)) is not None:
        parts.append(ident[0].lower())
        if stmt.kind(i + 1) != DOT:
            break
        i += 2
    i += 1
    if not parts or i >= len(stmt) or not (stmt.kw(i) == "TO" or stmt.raw(i) == "="):
        return unknown(stmt)
    return _set_pg_value(stmt, ".".join(parts), i + 1)


def _pg_values(stmt: Stmt, start: int) -> list[str] | None:
    """The values of SET name TO v1, v2 as the server reads them; None if not plain."""
    values: list[str] = []
    for j in range(start, len(stmt)):
        kind = stmt.kind(j)
        if kind == COMMA:
            continue
        if kind == STRING:
            values.append(stmt.string_value(j) or "")
        elif kind in (WORD, QIDENT):
            ident = stmt.ident(j)
            assert ident is not None
            values.append(ident[0] if ident[1] else ident[0].lower())
        elif kind == NUMBER:
            values.append(stmt.raw(j))
        else:
            return None  # E'..', operators: a value the gateway does not read
    return values


def _set_pg_value(stmt: Stmt, name: str, start: int) -> StatementFacts:
    values = _pg_values(stmt, start)
    classes = pg_setting_classes(name, values)
    kind = "SET"
    if name == "role":
        kind = "SET ROLE"
    elif name == "session_authorization":
        kind = "SET SESSION AUTHORIZATION"
    schemas: set[Name] = set()
    if name == "search_path":
        if values is None:
            classes = {"privilege"}  # schemas the gateway cannot see
        for j in range(start, len(stmt)):
            if stmt.kind(j) == STRING:
                schemas |= search_path_schemas(stmt.string_value(j) or "")
            elif (ident := stmt.ident(j)) is not None:
                schemas.add(ident)
    return build(
        stmt,
        kind,
        classes,
        tables=(),
        schemas=schemas,
        # the class (or the schemas) depends on a literal the fingerprint would replace
        literal_dependent=_value_sensitive(name) and literal_tokens(stmt, start),
    )


def _value_sensitive(name: str) -> bool:
    return name in (
        "search_path",
        "standard_conforming_strings",
        "client_encoding",
        "sql_mode",
        "character_set_client",
        "names",
    )


def reset_pg(stmt: Stmt) -> StatementFacts:
    # RESET takes exactly one name (dotted for a custom setting) or one of its fixed forms;
    # anything more is a shape the gateway does not read.
    word, n = stmt.kw(1), len(stmt)
    if (word == "ROLE" and n == 2) or (stmt.kws(1, 2) == ("SESSION", "AUTHORIZATION") and n == 3):
        return build(stmt, "RESET", {"privilege"}, tables=())
    if word == "ALL" and n == 2:
        return build(stmt, "RESET", {"session"}, tables=())
    if stmt.kws(1, 2) == ("TIME", "ZONE") and n == 3:
        return build(stmt, "RESET", pg_setting_classes("timezone", ["default"]), tables=())
    if stmt.kws(1, 3) == ("TRANSACTION", "ISOLATION", "LEVEL") and n == 4:
        return build(stmt, "RESET", {"session"}, tables=())
    parts: list[str] = []
    i = 1
    while True:
        ident = stmt.ident(i)
        if ident is None:
            return unknown(stmt)
        parts.append(ident[0].lower())  # setting names compare case-insensitively
        if i + 1 == n:
            break
        if stmt.kind(i + 1) != DOT:
            return unknown(stmt)
        i += 2
    return build(stmt, "RESET", pg_setting_classes(".".join(parts), ["default"]), tables=())


def set_mysql(stmt: Stmt) -> StatementFacts:
    word = stmt.kw(1)
    if word == "ROLE":
        return build(stmt, "SET ROLE", {"privilege"}, tables=())
    if word == "DEFAULT" and stmt.kw(2) == "ROLE":
        return build(stmt, "SET DEFAULT ROLE", {"dcl"}, tables=())
    if word == "PASSWORD":
        return build(stmt, "SET PASSWORD", {"dcl"}, tables=())
    if word == "RESOURCE" and stmt.kw(2) == "GROUP":
        return build(stmt, "SET", {"admin"}, tables=())
    if word in ("NAMES", "CHARSET") or (word == "CHARACTER" and stmt.kw(2) == "SET"):
        start = 2 if word != "CHARACTER" else 3
        return build(
            stmt,
            "SET",
            _mysql_charset_classes(stmt, start, len(stmt)),
            tables=(),
            literal_dependent=literal_tokens(stmt, start),
        )
    if word == "TRANSACTION" or (word in ("SESSION", "LOCAL") and stmt.kw(2) == "TRANSACTION"):
        return build(stmt, "SET TRANSACTION", {"transaction"}, tables=())
    if word == "GLOBAL" and stmt.kw(2) == "TRANSACTION":
        return build(stmt, "SET GLOBAL", {"admin"}, builtins={"set_global"}, tables=())
    classes: set[str] = set()
    builtins: set[str] = set()
    literal_dependent = False
    for start, stop in _split_items(stmt, 1):
        item = _mysql_set_item(stmt, start, stop)
        if item is None:
            return unknown(stmt)
        item_classes, dependent, global_scope = item
        classes |= item_classes
        literal_dependent = literal_dependent or dependent
        if global_scope:
            builtins.add("set_global")
    tables, schemas = harvest_names(stmt, 1)  # SET @x = (SELECT ... FROM t)
    return build(
        stmt,
        "SET GLOBAL" if builtins else "SET",
        classes,
        builtins=builtins,
        tables=tables,
        schemas=schemas,
        literal_dependent=literal_dependent,
    )


def _split_items(stmt: Stmt, start: int) -> list[tuple[int, int]]:
    items: list[tuple[int, int]] = []
    depth = 0
    begin = start
    for j in range(start, len(stmt)):
        kind = stmt.kind(j)
        if kind == LPAREN:
            depth += 1
        elif kind == ")":
            depth -= 1
        elif kind == COMMA and depth == 0:
            items.append((begin, j))
            begin = j + 1
    items.append((begin, len(stmt)))
    return items


_MYSQL_GLOBAL_SCOPES: Final[frozenset[str]] = frozenset({"GLOBAL", "PERSIST", "PERSIST_ONLY"})
_MYSQL_SCOPES: Final[frozenset[str]] = frozenset(
    {"global", "persist", "persist_only", "session", "local"}
)


def _mysql_set_item(stmt: Stmt, start: int, stop: int) -> tuple[set[str], bool, bool] | None:
    """(classes, literal dependent, global scope) of one ``[scope] name = value`` item;
    None if it is not one."""
    j = start
    scope_admin = False
    if stmt.kw(j) in _MYSQL_GLOBAL_SCOPES:
        scope_admin = True
        j += 1
    elif stmt.kw(j) in ("SESSION", "LOCAL"):
        j += 1
    name: str | None = None
    if stmt.kind(j) == VAR:
        var = stmt.raw(j).lower()
        if var.startswith("@@"):
            parts = var[2:].split(".")
            if len(parts) == 1 and parts[0] in _MYSQL_SCOPES and stmt.kind(j + 1) == DOT:
                # "@@global . name": the scope and the name are separate tokens
                parts = [parts[0], (stmt.ident(j + 2) or ("", False))[0].lower()]
                j += 2
            if len(parts) > 2 or (len(parts) == 2 and parts[0] not in _MYSQL_SCOPES):
                # A structured variable (MariaDB's key caches: @@global.hot_cache.
                # key_buffer_size), global whatever it says: not read as a session one.
                return None
            if len(parts) == 2:
                scope_admin = scope_admin or parts[0] in ("global", "persist", "persist_only")
            name = parts[-1]
        else:
            name = None  # user variable
        j += 1
    else:
        ident = stmt.ident(j)
        if ident is None:
            return None
        name = ident[0].lower()
        j += 1
    if stmt.raw(j) == ":" and stmt.raw(j + 1) == "=":
        j += 2
    elif stmt.raw(j) == "=":
        j += 1
    elif not (name in ("names",) or stmt.kw(j) == "TO"):
        return None
    classes: set[str] = {"session"}
    dependent = False
    if scope_admin:
        classes = {"admin"}
    elif name == "sql_log_bin":
        classes = {"admin"}  # stops replication of what follows
    elif name == "sql_mode":
        classes = {_mysql_sql_mode_class(stmt, j, stop)}
        dependent = literal_tokens(stmt, j, stop)
    elif name in ("character_set_client", "character_set_connection", "names"):
        classes = _mysql_charset_classes(stmt, j, stop)
        dependent = literal_tokens(stmt, j, stop)
    return classes, dependent, scope_admin


def _mysql_sql_mode_class(stmt: Stmt, start: int, stop: int) -> str:
    # ANSI_QUOTES turns "..." into identifiers and NO_BACKSLASH_ESCAPES changes where strings
    # end: after either, this gateway would read statements differently from the server.
    if stop - start != 1:
        return "privilege"
    if stmt.kind(start) in (STRING, XSTRING):
        value = stmt.string_value(start)
        if value is None:
            return "privilege"
    elif stmt.kind(start) == WORD:
        value = stmt.raw(start)
    else:
        return "privilege"
    modes = {m.strip().upper() for m in value.split(",")}
    if modes & _MYSQL_LEXER_MODE_SET:
        return "privilege"
    return "session"


_MYSQL_LEXER_MODE_SET: Final[frozenset[str]] = frozenset(MYSQL_LEXER_MODES) | {"ANSI_QUOTES"}


def _mysql_charset_classes(stmt: Stmt, start: int, stop: int) -> set[str]:
    # Multibyte client character sets whose second byte can be 0x5c hide a backslash from
    # a lexer that reads the text as UTF-8. Only a value of exactly one name or string
    # token is read: an expression (concat('sj','is')), adjacent strings ('sj' 'is') or an
    # introducer (_utf8mb4'sjis') could name any character set, so they are refused.
    follower = stmt.kw(start + 1) if start + 1 < stop else ""
    if start + 1 < stop and follower != "COLLATE":
        return {"privilege"}
    kind = stmt.kind(start)
    if kind in (STRING, XSTRING):
        value = stmt.string_value(start)
    elif kind in (WORD, QIDENT):
        value = (stmt.ident(start) or ("", False))[0]
    else:
        return {"privilege"}
    if value is None or value.casefold() in MYSQL_UNSAFE_CHARSETS:
        return {"privilege"}
    return {"session"}


# --------------------------------------------------------------------------- DDL


_MODIFIERS: Final[frozenset[str]] = frozenset(
    {
        "TEMP",
        "TEMPORARY",
        "GLOBAL",
        "LOCAL",
        "UNLOGGED",
        "UNIQUE",
        "CONSTRAINT",
        "RECURSIVE",
        "TRUSTED",
        "PROCEDURAL",
        "ONLINE",
        "OFFLINE",
        "IGNORE",
        "FULLTEXT",
        "SPATIAL",
        "AGGREGATE",
        "UNDEFINED",
    }
)
_TWO_WORD_OBJECTS: Final[dict[tuple[str, str], str]] = {
    ("MATERIALIZED", "VIEW"): "MATERIALIZED VIEW",
    ("FOREIGN", "TABLE"): "FOREIGN TABLE",
    ("DEFAULT", "PRIVILEGES"): "DEFAULT PRIVILEGES",
    ("USER", "MAPPING"): "OTHER",
    ("EVENT", "TRIGGER"): "OTHER",
    ("OWNED", "BY"): "OWNED",
}
_ONE_WORD_OBJECTS: Final[frozenset[str]] = frozenset(
    k.split(" ", 1)[1] for k in KINDS if k.startswith("CREATE ") and " " not in k[7:]
)
_QUERY_STARTS: Final[frozenset[str]] = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})


_SCHEMA_OPTION_WORDS: Final[frozenset[str]] = frozenset({"CASCADE", "RESTRICT", "AUTHORIZATION"})


def _skip_modifiers(stmt: Stmt, i: int) -> int:
    while True:
        word = stmt.kw(i)
        if word == "OR" and stmt.kw(i + 1) in ("REPLACE", "ALTER"):
            i += 2
        elif word in _MODIFIERS:
            i += 1
        elif word in ("DEFINER", "ALGORITHM") and stmt.raw(i + 1) == "=":
            # MySQL: DEFINER = user@host, ALGORITHM = MERGE; skip to the next keyword
            i += 2
            while i < len(stmt) and stmt.kw(i) not in _ONE_WORD_OBJECTS | _MODIFIERS | {
                "SQL",
                "DEFINER",
                "ALGORITHM",
                "OR",
            }:
                i += 1
        elif word == "SQL" and stmt.kw(i + 1) == "SECURITY":
            i += 3
        else:
            return i


def ddl(stmt: Stmt, recurse: Recurse) -> StatementFacts:
    verb = stmt.kw(0)
    i = _skip_modifiers(stmt, 1)
    pair = (stmt.kw(i), stmt.kw(i + 1))
    obj = _TWO_WORD_OBJECTS.get(pair)
    if obj is not None:
        i += 2
    else:
        obj = pair[0]
        i += 1
    if stmt.dialect == "mysql" and obj == "SCHEMA":
        obj = "DATABASE"  # MySQL: SCHEMA is a synonym for DATABASE
    if verb == "ALTER" and obj == "SYSTEM":
        return build(stmt, "ALTER SYSTEM", {"admin"}, builtins={"alter_system"})
    if verb == "ALTER" and obj == "INSTANCE":
        return build(stmt, "ADMIN", {"admin"})
    if verb == "DROP" and obj == "PREPARE":
        return deallocate_stmt(stmt, 2)
    if obj == "DEFAULT PRIVILEGES":
        return build(stmt, "ALTER DEFAULT PRIVILEGES", {"dcl"})
    if obj == "OWNED":
        return build(stmt, "DROP OWNED", {"dcl"})
    if obj in DCL_OBJECTS:
        return build(
            stmt, f"{verb} {obj}", {"dcl"}, builtins={"drop_role"} if verb == "DROP" else ()
        )
    if f"{verb} {obj}" not in KINDS:
        obj = "OTHER"
    kind = f"{verb} {obj}"
    classes = {"ddl"}
    if obj in ADMIN_DDL_OBJECTS:
        classes.add("admin")
    builtins: set[str] = set()
    schemas: set[Name] = set()
    if obj in ("SCHEMA", "DATABASE"):
        if stmt.dialect == "mysql" or obj == "SCHEMA":
            j = i
            while stmt.kw(j) in ("IF", "NOT", "EXISTS"):
                j += 1
            for k in range(j, len(stmt)):
                if stmt.kind(k) in (WORD, QIDENT) and stmt.kw(k) not in _SCHEMA_OPTION_WORDS:
                    ident = stmt.ident(k)
                    assert ident is not None
                    schemas.add(ident)
                elif stmt.kind(k) != COMMA:
                    break
        if verb == "DROP":
            if obj == "DATABASE":
                builtins.add("drop_database")
                if stmt.dialect == "mysql":
                    builtins.add("drop_schema")
            else:
                builtins.add("drop_schema")
    if verb == "DROP" and obj == "TABLE":
        builtins.add("drop_table")
    facts = build(stmt, kind, classes, builtins=builtins, schemas=schemas)
    if verb == "CREATE" and obj in ("TABLE", "MATERIALIZED VIEW", "VIEW"):
        query = _create_query_start(stmt, i)
        if query >= 0:
            end = len(stmt)
            if stmt.kw(query) == "EXECUTE":
                # CREATE TABLE x AS EXECUTE p [(...)] [WITH [NO] DATA]: not EXECUTE's own
                if stmt.kws(end - 2, 2) == ("WITH", "DATA"):
                    end -= 2
                elif stmt.kws(end - 3, 3) == ("WITH", "NO", "DATA"):
                    end -= 3
            inner = recurse(stmt.sub(query, end))
            if "unknown" in inner.classes:
                return unknown(stmt)
            if obj == "VIEW":
                # A view's query does not run now; its objects still matter to rules.
                return merge_facts(
                    facts,
                    StatementFacts(
                        kind=inner.kind,
                        classes=frozenset(),
                        tables=inner.tables,
                        functions=inner.functions,
                        schemas=inner.schemas,
                    ),
                    kind=kind,
                )
            # CREATE TABLE AS / CREATE MATERIALIZED VIEW AS run the query and store its rows.
            facts = merge_facts(facts, inner, kind=kind)
            facts = replace(facts, classes=facts.classes | {"write"})
    return facts


def _create_query_start(stmt: Stmt, after_object: int) -> int:
    """Index where CREATE TABLE/VIEW ... AS <query> (or MySQL's CREATE TABLE ... SELECT)
    starts its query, or -1."""
    as_index = stmt.find_kw(frozenset({"AS"}), after_object)
    if as_index >= 0:
        nxt = as_index + 1
        if stmt.kw(nxt) in _QUERY_STARTS | {"EXECUTE"} or stmt.kind(nxt) == LPAREN:
            return nxt
    if stmt.dialect == "mysql":
        select = stmt.find_kw(frozenset({"SELECT", "WITH"}), after_object)
        if select >= 0:
            return select
    return -1


# --------------------------------------------------------------------------- MySQL


def outfile_mysql(stmt: Stmt) -> StatementFacts:
    return build(
        stmt,
        "SELECT INTO OUTFILE",
        {"read", "export", "file"},
        builtins={"file_access"},
    )


def has_into_outfile(stmt: Stmt) -> bool:
    toks = stmt.toks
    for j in range(len(toks) - 1):
        if stmt.kw(j) == "INTO" and stmt.kw(j + 1) in ("OUTFILE", "DUMPFILE"):
            return True
    return False


def load_mysql(stmt: Stmt) -> StatementFacts:
    if stmt.kw(1) in ("DATA", "XML"):
        return build(
            stmt,
            "LOAD DATA",
            {"write", "import", "file"},
            builtins={"file_access"},
        )
    if stmt.kw(1) == "INDEX":
        return build(stmt, "LOAD", {"admin"})
    return unknown(stmt)


def use_mysql(stmt: Stmt) -> StatementFacts:
    ident = stmt.ident(1)
    if ident is None or len(stmt) != 2:
        return unknown(stmt)
    return build(stmt, "USE", {"session"}, tables=(), schemas={ident})


def handler_mysql(stmt: Stmt) -> StatementFacts:
    if stmt.ident(1) is None:
        return unknown(stmt)
    return build(stmt, "HANDLER", {"read"})
