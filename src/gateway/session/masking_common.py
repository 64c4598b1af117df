"""Masking decisions both drivers make the same way, at statement time.

After the statement policy allowed a statement, masking may still refuse it:

* exports (PostgreSQL ``COPY ... TO``, MySQL ``SELECT ... INTO OUTFILE``): their output has no
  column description to plan masks with (PROTOCOLS.md 2.10), so they are refused while any
  mask applies to the session;
* statements that write values of masked columns into a table (``CREATE TABLE AS``,
  ``INSERT ... SELECT``, ``UPDATE ... SET``): reading that table later would show them
  unmasked; SQL-level ``PREPARE`` is judged by the statement it prepares, and refused
  while column masks apply when that statement cannot be seen or followed (MySQL
  ``PREPARE s FROM @sql``): what ``EXECUTE`` would write is unknown;
* with ``on_unknown_lineage = "deny"``: statements whose output columns cannot be traced to
  their sources.

DDL makes the target's catalog reload once it is visible to other connections (after the
statement, outside a transaction block).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ..masking.prepared import PREPARED_BODY
from ..masking.styles import REDACTED
from ..policy import Decision
from ..policy.lexer import OP, VAR, WORD, LexError, lex, split_statements
from ..policy.lineage import SHAPED

if TYPE_CHECKING:
    from ..masking.catalog import Catalog
    from ..masking.lineage_cache import LineageCache
    from ..masking.plan import ResultPlan
    from ..masking.rules import MaskPolicy
    from ..policy.lineage import StatementLineage
    from .catalog_loader import TargetCatalog

__all__ = ["MISS", "NAME_ERRORS", "MaskingSession", "PlanCache", "withheld_message"]


def withheld_message(code: str) -> str:
    """What replaces a server message (error, notice, warning) of a statement that may read
    masked columns. Servers put values in messages in too many ways (quoted, unquoted,
    inside a number: "date out of range: 943298068-01-01") for any part of the text to be
    kept: only the error code stays, which names the kind of error."""
    return (
        f"the database's message is withheld by the gateway: the statement reads masked "
        f"columns (error code {code})"
    )


def _redact_span(span: str, name: str) -> str:
    return REDACTED


_EXPORT_REFUSED: Final = (
    "statement refused by the gateway: masking applies to this session, and an export "
    "(COPY ... TO, SELECT ... INTO OUTFILE) would send values that cannot be masked"
)
_PREPARE_REFUSED: Final = (
    "statement refused by the gateway: masking applies to this session, and the statement "
    "this PREPARE prepares cannot be analysed (it may copy values of masked columns)"
)
_STORE_REFUSED: Final = (
    "statement refused by the gateway: masking applies to this session, and this statement "
    "stores values in variables in a way the gateway cannot follow"
)
# A pre-filter for _stores_in_variables: texts without these are left alone unlexed.
_MAY_STORE: Final = re.compile(r"(?i)\binto\b|:=").search
_SHAPE_REFUSED: Final = (
    "statement refused by the gateway: masking applies to this session, and values of "
    "masked columns would decide how many rows it returns (a function in FROM, LIMIT or "
    "OFFSET), which a count or the row count would then reveal"
)
# COMMIT / END / PREPARE TRANSACTION: errors raised there may come from a cursor's query
# (WITH HOLD) or deferred work over masked columns. A pre-filter: texts without these words
# are not split into statements.
_MAY_END_TRANSACTION: Final = re.compile(r"(?i)\b(?:commit|end|prepare)\b").search
# Errors about a name the client wrote (no such column, table or function): the message
# names only what the statement says, and a typo deserves to be told.
NAME_ERRORS: Final = frozenset({"42703", "42P01", "42883", "1054", "1146", "1305"})
_DDL_REFUSED: Final = (
    "statement refused by the gateway: masking applies to this session, and DDL can move, "
    "rename or compute from masked columns (defaults, triggers, functions, inheritance, "
    "renames) in ways the gateway cannot follow"
)
_FUNCTION_CALL_REFUSED: Final = (
    "fast-path function calls are refused by the gateway while masking applies to this "
    "session: their results carry no column description to mask by"
)


def _deny(rule: str, message: str, classes: frozenset[str]) -> Decision:
    return Decision("deny", rule, message, classes)


_PLAN_CACHE: Final = 512
MISS: Final = object()  # PlanCache.hit: nothing kept (None is a plan: pass through)


class PlanCache:
    """One session's result plans, found by exact key (statement text, result description,
    ...) or else by the lineage the text has: queries with new literals (``WHERE id = 4711``)
    share the lineage analysis of their shape (LineageCache keys it by fingerprint), and so
    the plan built from it. Both levels are bounded (LRU). A plan whose sources the catalog
    does not know is not kept: the catalog reload it asks for will know them."""

    __slots__ = ("_by_key", "_by_lineage")

    def __init__(self) -> None:
        self._by_key: OrderedDict[object, ResultPlan | None] = OrderedDict()
        # Entries keep the lineage tuple they were built from, so its id is not reused
        # while they exist.
        self._by_lineage: OrderedDict[
            object, tuple[tuple[StatementLineage, ...] | None, ResultPlan | None]
        ] = OrderedDict()

    def clear(self) -> None:
        self._by_key.clear()
        self._by_lineage.clear()

    def hit(self, key: object) -> ResultPlan | object | None:
        """The plan kept for ``key``, or ``MISS``."""
        return self._by_key.get(key, MISS)

    def resolve(
        self,
        key: object,
        statements: tuple[StatementLineage, ...] | None,
        rest: tuple[object, ...],
        build: Callable[[], ResultPlan | None],
        invalidate: Callable[[], None],
    ) -> ResultPlan | None:
        """After a miss: the plan kept for the text's lineage ``statements`` (or None) plus
        ``rest`` (what else the plan depends on), else ``build()``; kept under both keys."""
        key2 = (id(statements), *rest)
        entry = self._by_lineage.get(key2)
        if entry is not None and entry[0] is statements:
            # Not filed under ``key`` too: a text that misses its exact key but shares a
            # lineage is, nearly always, a shape seen with other literals, which the next
            # execution will change again (each entry would cost an insert and an eviction).
            return entry[1]
        plan = build()
        if plan is not None and plan.unknown_sources:
            invalidate()
            return plan
        by_key = self._by_key
        by_key[key] = plan
        self._by_lineage[key2] = (statements, plan)
        if len(by_key) > _PLAN_CACHE:
            by_key.popitem(last=False)
        if len(self._by_lineage) > _PLAN_CACHE:
            self._by_lineage.popitem(last=False)
        return plan


class MaskingSession:
    """One session's masking state shared by the protocol drivers' subclasses."""

    __slots__ = ("_last", "_lineage", "catalog", "ddl_seen", "policy")

    def __init__(self, policy: MaskPolicy, catalog: TargetCatalog, lineage: LineageCache) -> None:
        self.policy = policy
        self.catalog = catalog
        self._lineage = lineage
        self.ddl_seen = False
        # The last lineage looked up, with its key: the policy check and the result plan of
        # one statement ask for the same text one after the other.
        self._last: (
            tuple[object, tuple[str, ...] | None, str, tuple[StatementLineage, ...]] | None
        ) = None

    @property
    def search_path(self) -> tuple[str, ...] | None:
        """Schemas unqualified names resolve to (None: the catalog's)."""
        return None

    def _snapshot(self) -> Catalog:
        snapshot = self.catalog.current()
        assert snapshot is not None, "sessions with masks start only after the catalog loaded"
        return snapshot

    def _statements(self, text: str) -> tuple[StatementLineage, ...]:
        catalog = self._snapshot().lineage
        path = self.search_path
        last = self._last
        if last is not None and last[0] is catalog and last[1] == path and last[2] == text:
            return last[3]
        found = self._lineage.lineage(text, catalog, path)
        self._last = (catalog, path, text, found)
        return found

    def check_statement(self, text: str | None, decision: Decision) -> Decision | None:
        """A refusal for a statement the policy allowed (``text`` None: a PostgreSQL
        fast-path FunctionCall), or None."""
        if "ddl" in decision.classes:
            self.ddl_seen = True
            if self.policy.has_column_rules:
                return _deny("masking:ddl", _DDL_REFUSED, decision.classes)
        if text is None:
            return _deny("masking:function_call", _FUNCTION_CALL_REFUSED, decision.classes)
        if "export" in decision.classes:
            return _deny("masking:export", _EXPORT_REFUSED, decision.classes)
        policy = self.policy
        if not policy.has_column_rules:
            return None
        for lineage in self._statements(text):
            for (schema, table), sources in lineage.writes:
                if (schema, table) == PREPARED_BODY:
                    return _deny("masking:unknown_prepared", _PREPARE_REFUSED, decision.classes)
                if (schema, table) == SHAPED:
                    if policy.any_masked(sources) is not None:
                        return _deny("masking:result_shape", _SHAPE_REFUSED, decision.classes)
                    continue
                if policy.any_masked(sources) is not None:
                    return _deny(
                        "masking:copies_masked",
                        "statement refused by the gateway: it writes values of masked "
                        f"columns into {schema}.{table}, where they would not be masked",
                        decision.classes,
                    )
            if (lineage.outputs is None or lineage.unresolved) and _stores_in_variables(
                text, self._lineage.dialect
            ):
                # MySQL SELECT ... FROM t INTO @x (INTO last), or := in a statement the
                # lineage cannot follow: what it stores is unknown, and reading the variable
                # back has no lineage to mask by.
                return _deny("masking:unknown_store", _STORE_REFUSED, decision.classes)
            if policy.on_unknown_lineage == "deny" and (
                lineage.outputs is None or lineage.unresolved
            ):
                return _deny(
                    "masking:unknown_lineage",
                    "statement refused by the gateway: masking applies to this session and "
                    "the columns this statement returns cannot be traced to their sources",
                    decision.classes,
                )
        return None

    def statement_done(self, *, in_transaction: bool) -> None:
        """The server answered everything sent: DDL that is now visible (committed)
        makes the catalog reload."""
        if self.ddl_seen and not in_transaction:
            self.ddl_seen = False
            self.catalog.invalidate()

    def detect(self, text: str) -> str | None:
        """``text`` with detected values redacted (messages, payloads), None if none."""
        detectors = self.policy.detectors
        return None if detectors is None else detectors.redact(text, _redact_span)

    def scrub_message(
        self, message: str, sql: str | None, code: str, name_error: bool = False
    ) -> str | None:
        """A server message (error, warning) with values hidden, or None if unchanged:
        withheld whole when the statement may read a masked column, else detectors. An
        error about a name (``name_error``: no such column, table, function) is kept when
        the statement reads no masked column the gateway can see: then the name is one
        the client wrote (a typo), not a value turned into a name (``ssn::regclass``)."""
        if (
            self.policy.has_column_rules
            and not (name_error and self.is_typo(sql))
            and self.reads_masked(sql)
        ):
            return withheld_message(code)
        return self.detect(message)

    def is_typo(self, sql: str | None) -> bool:
        """An error about a name is the client's own typo when its statement reads no masked
        column the gateway can see (else the name may be a value: ``ssn::regclass``)."""
        return sql is not None and not self.reads_masked(sql, known_only=True)

    def reads_masked(self, text: str | None, *, known_only: bool = False) -> bool:
        """Whether a statement may read a masked column (unknown: yes, unless
        ``known_only``: only the masked columns its lineage shows). A transaction's end may
        run a cursor's query (WITH HOLD cursors are materialised at COMMIT)."""
        if text is None or self._ends_transaction(text):
            return True
        policy = self.policy
        for lineage in self._statements(text):
            if not known_only and (lineage.unresolved or lineage.outputs is None):
                return True
            if policy.any_masked(lineage.reads) is not None:
                return True
        return False

    def _ends_transaction(self, text: str) -> bool:
        """Whether one of the text's statements ends a transaction (COMMIT, END, PREPARE
        TRANSACTION); a text that cannot be split is assumed to."""
        if not _MAY_END_TRANSACTION(text):
            return False
        try:
            lexed = lex(text, self._lineage.dialect)
            statements = split_statements(lexed, self._lineage.dialect)
        except Exception:
            return True
        for stmt in statements:
            first = stmt.kw(0)
            if first in ("COMMIT", "END") or (first == "PREPARE" and stmt.kw(1) == "TRANSACTION"):
                return True
        return False


def masked_names(plan: ResultPlan) -> list[str]:
    """The output columns of a result under a mask (audit log), by source column when
    known. A column that only content detectors screen says so (" (detectors)"): its values
    were replaced where a detector matched, which may be none of them."""
    names = []
    for i, col in enumerate(plan.columns):
        if col.mask is None and not col.detectors:
            continue
        name = col.source or f"column {i + 1}"
        names.append(name if col.mask is not None else name + " (detectors)")
    return names


def _stores_in_variables(text: str, dialect: str) -> bool:
    """Whether ``text`` stores values in MySQL user variables (``INTO @x``, ``@x := ...``);
    True as well when it cannot be lexed (fail closed)."""
    if dialect != "mysql" or not _MAY_STORE(text):
        return False
    try:
        lexed = lex(text, dialect)
    except LexError:
        return True
    tokens = lexed.tokens
    body = lexed.text
    for i, tok in enumerate(tokens):
        word = body[tok.start : tok.end]
        if tok.kind == WORD and word.upper() == "INTO":
            if i + 1 < len(tokens) and tokens[i + 1].kind == VAR:
                return True
        elif tok.kind == OP and word == ":" and i + 1 < len(tokens):
            after = tokens[i + 1]  # ":=" lexes as ":" and "="
            if after.start == tok.end and body[after.start : after.end] == "=":
                return True
    return False
