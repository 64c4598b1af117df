"""Classify statement text into StatementFacts, one per statement, failing closed.

Rules this module enforces:

* The text is split by our own lexer (lexer.py), never by sqlglot alone, and a text the lexer
  cannot close is one ``unknown`` statement.
* Queries and DML (SELECT, WITH, VALUES, TABLE, INSERT, UPDATE, DELETE, MERGE) must be
  parsed by sqlglot in the target dialect (sqlast.py): that is where data-modifying CTEs,
  SELECT INTO and missing WHERE clauses are found. If sqlglot cannot parse one, it is
  ``unknown``.
* Utility statements are recognised from their leading keywords (utility.py); a leading
  keyword this module does not list is ``unknown``.
* Any exception while classifying a statement makes that statement ``unknown``; nothing
  escapes ``classify_text``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Final

from gateway.policy import utility as u
from gateway.policy.common import build
from gateway.policy.facts import StatementFacts, unknown_facts
from gateway.policy.lexer import (
    COMMA,
    LPAREN,
    STRING,
    Lexed,
    LexError,
    Stmt,
    lex,
    split_statements,
)
from gateway.policy.sqlast import parse_statement, query_facts

__all__ = ["MAX_DEPTH", "classify_lexed", "classify_statement", "classify_text"]

# Wrappers nest (EXPLAIN ANALYZE EXECUTE, PREPARE ... AS EXPLAIN ...); deeper is unknown.
MAX_DEPTH: Final = 8

Handler = Callable[[Stmt, int], StatementFacts]


def classify_text(text: str, dialect: str) -> tuple[StatementFacts, ...]:
    """Facts for every statement in ``text`` (empty for a text with no statement)."""
    try:
        lexed = lex(text, dialect)
    except LexError:
        return (unknown_facts(),)
    except Exception:
        return (unknown_facts(),)
    return classify_lexed(lexed, dialect)


def classify_lexed(lexed: Lexed, dialect: str) -> tuple[StatementFacts, ...]:
    try:
        statements = split_statements(lexed, dialect)
    except Exception:
        return (unknown_facts(),)
    return tuple(classify_statement(stmt) for stmt in statements)


def classify_statement(stmt: Stmt, depth: int = 0) -> StatementFacts:
    try:
        if depth > MAX_DEPTH or not len(stmt):
            return u.unknown(stmt)
        first = "(" if stmt.kind(0) == LPAREN else stmt.kw(0)
        table = _PG if stmt.dialect == "postgres" else _MYSQL
        handler = table.get(first)
        if handler is None:
            return u.unknown(stmt)
        return _settings_writes(handler(stmt, depth))
    except Exception:
        try:
            return u.unknown(stmt)
        except Exception:
            return unknown_facts()


def _settings_writes(facts: StatementFacts) -> StatementFacts:
    # UPDATE pg_settings runs set_config on every matched row: a write that changes
    # session settings (role-like ones, or those the gateway's reading of SQL depends
    # on), so it is "privilege" as well, like set_config itself.
    if "write" in facts.classes and any(
        (table[1][0] if table[1][1] else table[1][0].lower()) == "pg_settings"
        for table in facts.tables
    ):
        return replace(facts, classes=facts.classes | {"privilege"})
    return facts


def _recurse(depth: int) -> Callable[[Stmt], StatementFacts]:
    return lambda inner: classify_statement(inner, depth + 1)


# --------------------------------------------------------------------------- queries, DML


def _query(stmt: Stmt, depth: int) -> StatementFacts:
    first = "(" if stmt.kind(0) == LPAREN else stmt.kw(0)
    if stmt.dialect == "mysql" and u.has_into_outfile(stmt):
        return u.outfile_mysql(stmt)
    root = parse_statement(stmt, first)
    if root is None:
        return u.unknown(stmt)
    facts = query_facts(root, stmt.dialect)
    return build(
        stmt,
        facts.kind,
        facts.classes,
        builtins=facts.builtins,
        tables=facts.tables,
        schemas=facts.schemas,
    )


def _replace_mysql(stmt: Stmt, depth: int) -> StatementFacts:
    # REPLACE [INTO] t ...: an INSERT that deletes conflicting rows first. sqlglot reads it
    # only as a Command; the class does not depend on anything inside it.
    return build(stmt, "REPLACE", {"write"})


# --------------------------------------------------------------------------- helpers


def _fixed(kind: str, *classes: str, builtins: tuple[str, ...] = ()) -> Handler:
    """A statement whose class its leading keyword decides."""

    def handler(stmt: Stmt, depth: int) -> StatementFacts:
        return build(stmt, kind, classes, builtins=builtins)

    return handler


def _first_word_kind(*classes: str) -> Handler:
    def handler(stmt: Stmt, depth: int) -> StatementFacts:
        return build(stmt, stmt.kw(0), classes)

    return handler


# What may follow a transaction statement's first word: its modes and noise words
# (PostgreSQL BEGIN/START TRANSACTION modes, AND [NO] CHAIN; MySQL WITH CONSISTENT
# SNAPSHOT, [NO] RELEASE), commas between modes. A name (SAVEPOINT, ROLLBACK TO, RELEASE)
# or a transaction id (COMMIT/ROLLBACK PREPARED) ends the statement.
_TRANSACTION_WORDS: Final = frozenset(
    [
        "WORK",
        "TRANSACTION",
        "ISOLATION",
        "LEVEL",
        "SERIALIZABLE",
        "REPEATABLE",
        "READ",
        "COMMITTED",
        "UNCOMMITTED",
        "WRITE",
        "ONLY",
        "NOT",
        "DEFERRABLE",
        "AND",
        "NO",
        "CHAIN",
        "RELEASE",
        "WITH",
        "CONSISTENT",
        "SNAPSHOT",
    ]
)


def _transaction_tail_ok(stmt: Stmt) -> bool:
    """Whether everything after the first word is what a transaction statement takes.
    Anything else (MariaDB ``BEGIN NOT ATOMIC <statements> END``, a compound statement
    that runs what it holds) is not a transaction statement: unknown."""
    i, n = 1, len(stmt)
    while i < n:
        word = stmt.kw(i)
        if word in ("SAVEPOINT", "TO") or (stmt.kw(0) in ("SAVEPOINT", "RELEASE") and i == 1):
            # ROLLBACK [WORK] TO [SAVEPOINT] name; SAVEPOINT name; RELEASE [SAVEPOINT] name
            j = i + 1 if word in ("SAVEPOINT", "TO") else i
            if stmt.kw(j) == "SAVEPOINT":
                j += 1
            return stmt.ident(j) is not None and j + 1 == n
        if word == "PREPARED":  # COMMIT PREPARED 'id' / ROLLBACK PREPARED 'id'
            return stmt.kind(i + 1) == STRING and i + 2 == n
        if word not in _TRANSACTION_WORDS and stmt.kind(i) != COMMA:
            return False
        i += 1
    return True


def _transaction(stmt: Stmt, depth: int) -> StatementFacts:
    words = [stmt.kw(i) for i in range(min(len(stmt), 4))]
    first = words[0]
    kind = first
    if not _transaction_tail_ok(stmt) and not (first == "START" and words[1:2] != ["TRANSACTION"]):
        return u.unknown(stmt)
    if first in ("START", "BEGIN"):
        if first == "START" and (len(words) < 2 or words[1] != "TRANSACTION"):
            return _start_mysql(stmt, depth) if stmt.dialect == "mysql" else u.unknown(stmt)
        kind = "BEGIN"
    elif first in ("COMMIT", "END"):
        kind = "COMMIT PREPARED" if "PREPARED" in words[1:2] else "COMMIT"
    elif first in ("ROLLBACK", "ABORT"):
        if "PREPARED" in words[1:2]:
            kind = "ROLLBACK PREPARED"
        elif "TO" in words[1:3]:
            kind = "ROLLBACK TO SAVEPOINT"
        else:
            kind = "ROLLBACK"
    elif first == "RELEASE":
        kind = "RELEASE SAVEPOINT"
    return build(stmt, kind, {"transaction"}, tables=())


def _start_mysql(stmt: Stmt, depth: int) -> StatementFacts:
    # START REPLICA / SLAVE / GROUP_REPLICATION
    return build(stmt, "ADMIN", {"admin"})


def _truncate(stmt: Stmt, depth: int) -> StatementFacts:
    return build(stmt, "TRUNCATE", {"write"}, builtins=("truncate",))


def _show(stmt: Stmt, depth: int) -> StatementFacts:
    if stmt.dialect == "mysql" and (
        stmt.kw(1) == "GRANTS" or (stmt.kw(1) == "CREATE" and stmt.kw(2) == "USER")
    ):
        # MariaDB shows the account's password hash ("IDENTIFIED BY PASSWORD '*...'"), and
        # every gateway session shares the gateway's own account: its credential.
        return build(stmt, "SHOW GRANTS", {"admin"})
    return build(stmt, "SHOW", {"read"})


def _discard_pg(stmt: Stmt, depth: int) -> StatementFacts:
    everything = stmt.kw(1) == "ALL"
    return build(stmt, "DISCARD", {"session"}, tables=(), deallocate="*" if everything else None)


def _rename_mysql(stmt: Stmt, depth: int) -> StatementFacts:
    if stmt.kw(1) == "USER":
        return build(stmt, "RENAME USER", {"dcl"})
    if stmt.kw(1) in ("TABLE", "TABLES"):
        return build(stmt, "RENAME TABLE", {"ddl"})
    return u.unknown(stmt)


def _import(stmt: Stmt, depth: int) -> StatementFacts:
    if stmt.dialect == "postgres" and stmt.kws(1, 2) == ("FOREIGN", "SCHEMA"):
        return build(stmt, "IMPORT FOREIGN SCHEMA", {"ddl"})
    if stmt.dialect == "mysql" and stmt.kw(1) == "TABLE":
        return build(stmt, "ADMIN", {"admin"})  # IMPORT TABLE FROM '<server file>'
    return u.unknown(stmt)


def _security_pg(stmt: Stmt, depth: int) -> StatementFacts:
    if stmt.kw(1) == "LABEL":
        return build(stmt, "SECURITY LABEL", {"ddl"})
    return u.unknown(stmt)


def _refresh_pg(stmt: Stmt, depth: int) -> StatementFacts:
    if stmt.kws(1, 2) == ("MATERIALIZED", "VIEW"):
        return build(stmt, "REFRESH MATERIALIZED VIEW", {"write"})
    return u.unknown(stmt)


def _reassign_pg(stmt: Stmt, depth: int) -> StatementFacts:
    if stmt.kw(1) == "OWNED":
        return build(stmt, "REASSIGN OWNED", {"dcl"})
    return u.unknown(stmt)


def _kill_mysql(stmt: Stmt, depth: int) -> StatementFacts:
    return build(stmt, "KILL", {"admin"}, builtins=("kill",))


def _do_mysql(stmt: Stmt, depth: int) -> StatementFacts:
    # MySQL's DO evaluates expressions and discards the result: a SELECT without rows.
    return build(stmt, "DO", {"read"})


def _unlock_mysql(stmt: Stmt, depth: int) -> StatementFacts:
    return build(stmt, "UNLOCK", {"session"}, tables=())


def _admin_word(kind: str) -> Handler:
    return _fixed(kind, "admin")


_SHARED: Final[dict[str, Handler]] = {
    "SELECT": _query,
    "WITH": _query,
    "VALUES": _query,
    "TABLE": _query,
    "(": _query,
    "INSERT": _query,
    "UPDATE": _query,
    "DELETE": _query,
    "BEGIN": _transaction,
    "START": _transaction,
    "COMMIT": _transaction,
    "ROLLBACK": _transaction,
    "SAVEPOINT": _transaction,
    "RELEASE": _transaction,
    "CREATE": lambda s, d: u.ddl(s, _recurse(d)),
    "ALTER": lambda s, d: u.ddl(s, _recurse(d)),
    "DROP": lambda s, d: u.ddl(s, _recurse(d)),
    "GRANT": _fixed("GRANT", "dcl"),
    "REVOKE": _fixed("REVOKE", "dcl"),
    "TRUNCATE": _truncate,
    "SHOW": _show,
    "LOCK": _fixed("LOCK", "write"),
    "CALL": _fixed("CALL", "dynamic"),
    "EXECUTE": lambda s, d: u.execute_stmt(s),
    "DEALLOCATE": lambda s, d: u.deallocate_stmt(s, 1),
    "IMPORT": _import,
}

_PG: Final[dict[str, Handler]] = {
    **_SHARED,
    "MERGE": _query,
    "END": _transaction,
    "ABORT": _transaction,
    "EXPLAIN": lambda s, d: u.explain_pg(s, _recurse(d)),
    "PREPARE": lambda s, d: u.prepare_pg(s, _recurse(d)),
    "DECLARE": lambda s, d: u.declare_pg(s, _recurse(d)),
    "COPY": lambda s, d: u.copy_pg(s, _recurse(d)),
    "DO": _fixed("DO", "dynamic"),
    "SET": lambda s, d: u.set_pg(s),
    "RESET": lambda s, d: u.reset_pg(s),
    "DISCARD": _discard_pg,
    "LISTEN": _fixed("LISTEN", "session"),
    "UNLISTEN": _fixed("UNLISTEN", "session"),
    "NOTIFY": _fixed("NOTIFY", "write"),
    "FETCH": _first_word_kind("read"),
    "MOVE": _first_word_kind("read"),
    "CLOSE": _first_word_kind("read"),
    "COMMENT": _fixed("COMMENT", "ddl"),
    "SECURITY": _security_pg,
    "REFRESH": _refresh_pg,
    "REASSIGN": _reassign_pg,
    "VACUUM": _admin_word("VACUUM"),
    "ANALYZE": _admin_word("ANALYZE"),
    "ANALYSE": _admin_word("ANALYZE"),
    "CLUSTER": _admin_word("CLUSTER"),
    "REINDEX": _admin_word("REINDEX"),
    "CHECKPOINT": _admin_word("CHECKPOINT"),
    "LOAD": _admin_word("LOAD"),
}

_MYSQL: Final[dict[str, Handler]] = {
    **_SHARED,
    "REPLACE": _replace_mysql,
    "XA": _fixed("XA", "transaction"),
    "EXPLAIN": lambda s, d: u.explain_mysql(s, _recurse(d)),
    "DESCRIBE": lambda s, d: u.explain_mysql(s, _recurse(d)),
    "DESC": lambda s, d: u.explain_mysql(s, _recurse(d)),
    "ANALYZE": lambda s, d: u.analyze_mysql(s, _recurse(d)),
    "PREPARE": lambda s, d: u.prepare_mysql(s, _recurse(d)),
    "DO": _do_mysql,
    "SET": lambda s, d: u.set_mysql(s),
    "USE": lambda s, d: u.use_mysql(s),
    "HANDLER": lambda s, d: u.handler_mysql(s),
    "LOAD": lambda s, d: u.load_mysql(s),
    "HELP": _fixed("HELP", "read"),
    "UNLOCK": _unlock_mysql,
    "RENAME": _rename_mysql,
    "KILL": _kill_mysql,
    "STOP": _admin_word("ADMIN"),
    "RESET": _admin_word("RESET"),
    "FLUSH": _admin_word("FLUSH"),
    "PURGE": _admin_word("ADMIN"),
    "CHANGE": _admin_word("ADMIN"),
    "INSTALL": _admin_word("ADMIN"),
    "UNINSTALL": _admin_word("ADMIN"),
    "SHUTDOWN": _admin_word("SHUTDOWN"),
    "RESTART": _admin_word("RESTART"),
    "OPTIMIZE": _admin_word("ADMIN"),
    "REPAIR": _admin_word("ADMIN"),
    "CHECK": _admin_word("ADMIN"),
    "CHECKSUM": _admin_word("ADMIN"),
    "CACHE": _admin_word("ADMIN"),
    "BINLOG": _admin_word("ADMIN"),
    "CLONE": _admin_word("ADMIN"),
}
