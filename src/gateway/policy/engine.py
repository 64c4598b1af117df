"""PolicyEngine (shared, cached decisions) and SessionPolicy (per-connection state).

Rules this module enforces:

* Hot path: a statement text seen before costs one dict lookup (``_exact``). A new text
  whose literal-stripped fingerprint was seen before costs one regex pass plus a lookup
  (``_by_fingerprint``). Only a new shape is lexed, split, parsed and classified.
* A result is shared through the fingerprint only if no statement in it depends on a literal
  value (StatementFacts.literal_dependent) and the fast fingerprint agrees with the one
  rebuilt from the full lexer's tokens. Otherwise it is cached by exact text only.
* Caches hold facts, which are independent of sessions. A text with SQL-level PREPARE,
  EXECUTE, DEALLOCATE or DISCARD ALL carries no precomputed decision: each session decides
  it against its own prepared statements, and only an allowed text changes them.
* Both caches are bounded (entries and characters; oldest entries go first).
* Fail closed: an exception while classifying makes the statement ``unknown``; an exception
  anywhere else in ``check_query`` is a deny. Nothing escapes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence, Sized
from dataclasses import dataclass, replace
from typing import Final, Generic, TypeVar

from gateway.policy.classify import classify_lexed
from gateway.policy.decide import Decision, EffectivePolicy
from gateway.policy.facts import StatementFacts, merge_facts, unknown_facts
from gateway.policy.lexer import (
    DIALECTS,
    STRING,
    fingerprint,
    fingerprint_from_tokens,
    lex,
    skeleton,
    skeleton_eligible,
)
from gateway.policy.spec import PolicySpec

__all__ = ["Analysis", "PolicyEngine", "SessionPolicy"]

DEFAULT_MAX_ENTRIES: Final = 8192
DEFAULT_MAX_CACHED_CHARS: Final = 16 * 1024 * 1024  # per cache, keys' characters
MAX_CACHED_TEXT: Final = 64 * 1024  # longer texts are never cache keys
# Texts longer than this are not parsed at all (unknown): sqlglot needs about a second per
# half megabyte, and the gateway's event loop would stall for every session meanwhile.
DEFAULT_MAX_PARSE_CHARS: Final = 1024 * 1024

_ERROR_DECISION: Final = Decision(
    "deny",
    "error:internal",
    "statement denied by gateway policy (internal error while checking it)",
    frozenset({"unknown"}),
)


K = TypeVar("K", bound=Sized)


@dataclass(frozen=True, slots=True)
class Analysis:
    """Facts of every statement in one text, plus the decision when it is session-free."""

    statements: tuple[StatementFacts, ...]
    decision: Decision | None  # None: depends on the session's prepared statements
    literal_dependent: bool
    # Every text with this fingerprint may also be filed under its digit skeleton: the shape
    # has no string literals and no digits outside plain number literals.
    skeleton_ok: bool = False


class _BoundedCache(Generic[K]):
    """A dict bounded by entry count and total key length; evicts oldest first.

    An OrderedDict: popping the oldest entry of a plain dict gets slower and slower as
    deleted slots pile up at its front, and this cache churns under varying literals.
    """

    __slots__ = ("chars", "data", "max_chars", "max_entries")

    def __init__(self, max_entries: int, max_chars: int) -> None:
        self.data: OrderedDict[K, Analysis] = OrderedDict()
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.chars = 0

    def put(self, key: K, value: Analysis) -> None:
        data = self.data
        if key in data:
            return
        data[key] = value
        self.chars += len(key)
        if len(data) > self.max_entries or self.chars > self.max_chars:
            self._evict()

    def _evict(self) -> None:
        data = self.data
        while data and (len(data) > self.max_entries or self.chars > self.max_chars):
            oldest, _ = data.popitem(last=False)
            self.chars -= len(oldest)

    def __len__(self) -> int:
        return len(self.data)


class PolicyEngine:
    """Effective policy for one (set of policies, dialect); shared by every session with
    the same policies; holds the bounded decision caches."""

    __slots__ = (
        "_by_fingerprint",
        "_by_skeleton",
        "_exact",
        "_function_call",
        "_max_parse_chars",
        "dialect",
        "digest",
        "policy",
    )

    def __init__(
        self,
        policy: EffectivePolicy,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_cached_chars: int = DEFAULT_MAX_CACHED_CHARS,
        max_parse_chars: int = DEFAULT_MAX_PARSE_CHARS,
    ) -> None:
        self.policy = policy
        self.dialect = policy.dialect
        self.digest = policy.digest
        self._exact: _BoundedCache[str] = _BoundedCache(max_entries, max_cached_chars)
        self._by_skeleton: _BoundedCache[bytes] = _BoundedCache(max_entries, max_cached_chars)
        self._by_fingerprint: _BoundedCache[str] = _BoundedCache(max_entries, max_cached_chars)
        self._max_parse_chars = max_parse_chars
        # PostgreSQL fast-path FunctionCall names a function by OID with binary arguments:
        # it can run any function (pg_read_file, lo_export...), invisibly. It is "dynamic",
        # like a DO block, and denied unless the policy allows dynamic code.
        self._function_call = policy.decide(
            (StatementFacts(kind="FUNCTION CALL", classes=frozenset({"dynamic"})),)
        )

    @classmethod
    def build(
        cls,
        specs: Sequence[PolicySpec],
        dialect: str,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_cached_chars: int = DEFAULT_MAX_CACHED_CHARS,
        max_parse_chars: int = DEFAULT_MAX_PARSE_CHARS,
    ) -> PolicyEngine:
        """Raises ValueError for an unknown dialect, class or rule name."""
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; expected one of {sorted(DIALECTS)}")
        return cls(
            EffectivePolicy(specs, dialect),
            max_entries=max_entries,
            max_cached_chars=max_cached_chars,
            max_parse_chars=max_parse_chars,
        )

    def session(self) -> SessionPolicy:
        return SessionPolicy(self)

    @property
    def cache_sizes(self) -> tuple[int, int, int]:
        """(exact-text, digit-skeleton, fingerprint) entries, for metrics and tests."""
        return len(self._exact), len(self._by_skeleton), len(self._by_fingerprint)

    # ----------------------------------------------------------------------- analysis

    def analyse(self, sql: str) -> Analysis:
        """Facts for ``sql`` (cached); never raises for any input text."""
        cached = self._exact.data.get(sql)
        if cached is not None:
            return cached
        if len(sql) > MAX_CACHED_TEXT:
            return self._cold(sql, None, None)
        sk = skeleton(sql)
        if sk is not None:
            cached = self._by_skeleton.data.get(sk)
            if cached is not None:
                # Not filed under the exact text: a skeleton hit is a shape seen with
                # other numbers, and the next execution usually brings new ones again (an
                # insert and an eviction for nothing); found again this way, for 0.1 µs.
                return cached
        fp = fingerprint(sql, self.dialect)
        if fp is not None:
            cached = self._by_fingerprint.data.get(fp)
            if cached is not None:
                self._exact.put(sql, cached)
                if sk is not None and cached.skeleton_ok:
                    self._by_skeleton.put(sk, cached)
                return cached
        analysis = self._cold(sql, sk, fp)
        self._exact.put(sql, analysis)
        return analysis

    def _cold(self, sql: str, sk: bytes | None, fp: str | None) -> Analysis:
        if len(sql) > self._max_parse_chars:
            return self._analysis((unknown_facts(),))
        try:
            lexed = lex(sql, self.dialect)
        except Exception:  # LexError, or a bug: either way the text is unknown
            return self._analysis((unknown_facts(),))
        try:
            statements = classify_lexed(lexed, self.dialect)
        except Exception:  # classify_lexed catches per statement; this is belt and braces
            statements = (unknown_facts(),)
        analysis = self._analysis(statements)
        if analysis.literal_dependent:
            return analysis
        skeleton_ok = skeleton_eligible(sql, lexed) and not any(
            tok.kind == STRING for tok in lexed.tokens
        )
        if skeleton_ok:
            analysis = replace(analysis, skeleton_ok=True)
        if sk is not None and skeleton_ok:
            self._by_skeleton.put(sk, analysis)
        if fp is not None and fingerprint_from_tokens(sql, lexed, self.dialect) == fp:
            self._by_fingerprint.put(fp, analysis)
        return analysis

    def _analysis(self, statements: tuple[StatementFacts, ...]) -> Analysis:
        stateful = any(f.stateful for f in statements)
        return Analysis(
            statements=statements,
            decision=None if stateful else self.policy.decide(statements),
            literal_dependent=any(f.literal_dependent for f in statements),
        )


class SessionPolicy:
    """Per-connection state: SQL-level PREPARE names -> facts of their bodies."""

    __slots__ = ("_engine", "_exact", "_prepared")

    def __init__(self, engine: PolicyEngine) -> None:
        self._engine = engine
        self._exact = engine._exact.data  # the hot path reads the dict directly
        self._prepared: dict[str, StatementFacts] = {}

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    @property
    def prepared_names(self) -> frozenset[str]:
        return frozenset(self._prepared)

    def check_query(self, sql: str) -> Decision:
        """Decide a statement text: PostgreSQL simple Query and Parse, MySQL COM_QUERY and
        COM_STMT_PREPARE. The text may hold several statements; one denied statement
        denies all of them. Never raises."""
        try:
            analysis = self._exact.get(sql)
            if analysis is None:
                analysis = self._engine.analyse(sql)
            decision = analysis.decision
            if decision is not None:
                return decision
            return self._decide_stateful(analysis)
        except Exception:
            return _ERROR_DECISION

    def check_function_call(self) -> Decision:
        """Decide a PostgreSQL fast-path FunctionCall (class ``dynamic``)."""
        return self._engine._function_call

    def reset(self) -> None:
        """DISCARD ALL / connection reset: forget SQL-level prepared statements."""
        self._prepared.clear()

    def statement_failed(self, sql: str) -> None:
        """The server answered this text with an error (or skipped it): the SQL-level
        PREPARE / DEALLOCATE it holds may not have run, and the server may still hold an
        older statement under the name (one approved by a reviewer, say). The names it
        touched are forgotten: an EXECUTE of one is then ``unknown`` (fail closed)."""
        if not self._prepared:
            return
        try:
            analysis = self._exact.get(sql)
            if analysis is None:
                analysis = self._engine.analyse(sql)
        except Exception:
            self._prepared.clear()
            return
        for facts in analysis.statements:
            if facts.deallocate == "*":
                self._prepared.clear()
            for name in (facts.prepare, facts.deallocate):
                if name is not None:
                    self._prepared.pop(name, None)

    def _decide_stateful(self, analysis: Analysis) -> Decision:
        # Prepared names are resolved in text order, so "PREPARE p AS ...; EXECUTE p" in one
        # text works; the session map changes only if the whole text is allowed.
        overlay: dict[str, StatementFacts | None] = {}
        cleared = False
        resolved: list[StatementFacts] = []
        for facts in analysis.statements:
            if facts.execute is not None:
                name = facts.execute
                if name in overlay:
                    body = overlay[name]
                else:
                    body = None if cleared else self._prepared.get(name)
                facts = _resolve_execute(facts, body)
            if facts.prepare is not None and facts.body is not None:
                overlay[facts.prepare] = facts.body
            if facts.deallocate == "*":
                overlay.clear()
                cleared = True
            elif facts.deallocate is not None:
                overlay[facts.deallocate] = None
            resolved.append(facts)
        decision = self._engine.policy.decide(resolved)
        if decision.action == "allow":
            if cleared:
                self._prepared.clear()
            for name, body in overlay.items():
                if body is None:
                    self._prepared.pop(name, None)
                else:
                    self._prepared[name] = body
        return decision


def _resolve_execute(facts: StatementFacts, body: StatementFacts | None) -> StatementFacts:
    """EXECUTE name: judged as the prepared statement (unknown if there is none)."""
    if body is None or body.execute is not None:
        unknown = unknown_facts(facts.tables, facts.functions, facts.schemas)
        return replace(merge_facts(unknown, facts, kind="EXECUTE"), execute=None)
    kind = body.kind if facts.kind == "EXECUTE" else facts.kind
    merged = merge_facts(replace(facts, execute=None), body, kind=kind)
    return replace(merged, execute=None)
