"""The effective policy of a set of PolicySpecs, and decisions on statement facts (pure).

Rules this module enforces:

* Union semantics: allowed classes are the union of every policy's ``allow`` (plus
  ``transaction``), deny rules and review entries are unions too.
* Order of precedence for one statement: a deny rule (built-in, then custom) > a class that
  is not allowed > review (class, built-in, custom) > allow. Deny always wins.
* A multi-statement text is decided statement by statement; the first denied statement
  decides for the whole text (nothing is sent), else the first one needing review.
* Messages name rules and classes only, never anything from the statement text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.policy.facts import Name, StatementFacts, TableRef
from gateway.policy.spec import PolicySpec, RuleSpec, expand_allow, parse_table_pattern
from gateway.policy.vocabulary import BUILTIN_RULES, CLASS_ORDER, CLASSES

__all__ = ["CLASSIFIER_VERSION", "CompiledRule", "Decision", "EffectivePolicy"]

# Bumped whenever classification changes what a policy means; part of the digest.
CLASSIFIER_VERSION: Final = 3
_PG_NAMEDATALEN: Final = 63  # PostgreSQL truncates identifiers to 63 bytes


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # "allow" | "deny" | "review"
    rule: str | None  # what decided, e.g. "deny:drop_database", "class:ddl not allowed"
    message: str  # client-facing; never echoes the statement
    classes: frozenset[str]  # classes of the statement(s)


def refused_beyond(decision: Decision, classes: frozenset[str]) -> bool:
    """Whether ``decision`` refuses more than ``classes`` not being allowed: by a deny rule,
    a review, or a class outside ``classes``. For what a client does without a statement
    (startup settings, choosing a database, listing a table's fields): it is decided as the
    statement it stands for, but never needed that statement's class."""
    if decision.action == "allow":
        return False
    return not ((decision.rule or "").startswith("class:") and decision.classes <= classes)


# --------------------------------------------------------------------------- names


def _pg_fold(text: str) -> str:
    # PostgreSQL folds unquoted identifiers to lower case (ASCII only) and truncates every
    # identifier to 63 bytes, so a longer spelling still reaches the table.
    encoded = text.encode("utf-8")
    if len(encoded) > _PG_NAMEDATALEN:
        text = encoded[:_PG_NAMEDATALEN].decode("utf-8", errors="ignore")
    return text


def canonical(name: Name, dialect: str) -> str:
    text, quoted = name
    if dialect == "mysql":
        # Table names are case-insensitive on some servers (lower_case_table_names), so
        # compare them that way everywhere: matching more is the safe side for a rule.
        return text.casefold()
    if not quoted:
        text = text.translate(_ASCII_LOWER)
    return _pg_fold(text)


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class _NameMatcher:
    __slots__ = ("exact", "loose")

    def __init__(self, name: Name, dialect: str) -> None:
        self.exact = canonical(name, dialect)
        self.loose = name[0].casefold() if not name[1] else None

    def matches(self, name: Name, dialect: str) -> bool:
        if canonical(name, dialect) == self.exact:
            return True
        # An unquoted name in the statement and in the rule: also compare with full Unicode
        # case folding (PostgreSQL only folds ASCII); matching more is the safe side.
        return self.loose is not None and not name[1] and name[0].casefold() == self.loose


class _TableMatcher:
    __slots__ = ("schema", "table")

    def __init__(self, pattern: str, dialect: str) -> None:
        parsed = parse_table_pattern(pattern)
        if parsed is None:
            raise ValueError(f"malformed table pattern {pattern!r}")
        first, second = parsed
        self.schema: _NameMatcher | None
        self.table: _NameMatcher | None
        if second is None:
            self.schema, self.table = None, _NameMatcher(first, dialect)
        elif second == ("*", False):
            self.schema, self.table = _NameMatcher(first, dialect), None
        else:
            self.schema, self.table = _NameMatcher(first, dialect), _NameMatcher(second, dialect)

    def matches(self, ref: TableRef, dialect: str) -> bool:
        schema, table = ref
        if self.table is not None and not self.table.matches(table, dialect):
            return False
        if self.schema is None:
            return True
        if schema is None:
            # Unqualified: it may resolve into this schema through search_path / USE.
            return self.table is not None
        return self.schema.matches(schema, dialect)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    spec: RuleSpec
    dialect: str
    classes: frozenset[str]
    kinds: frozenset[str]
    tables: tuple[_TableMatcher, ...]
    functions: frozenset[str]
    schemas: tuple[_NameMatcher, ...]

    @classmethod
    def compile(cls, spec: RuleSpec, dialect: str) -> CompiledRule:
        for c in spec.classes:
            if c not in CLASSES:
                raise ValueError(f"rule {spec.name!r}: unknown class {c!r}")
        if not (spec.classes or spec.kinds or spec.tables or spec.functions or spec.schemas):
            raise ValueError(f"rule {spec.name!r} has no matcher")
        return cls(
            spec=spec,
            dialect=dialect,
            classes=frozenset(spec.classes),
            kinds=frozenset(k.upper() for k in spec.kinds),
            tables=tuple(_TableMatcher(t, dialect) for t in spec.tables),
            functions=frozenset(f.strip().strip('"').casefold() for f in spec.functions),
            schemas=tuple(_NameMatcher(_schema_name(s), dialect) for s in spec.schemas),
        )

    def matches(self, facts: StatementFacts) -> bool:
        if self.classes and not self.classes & facts.classes:
            return False
        if self.kinds and facts.kind not in self.kinds:
            return False
        dialect = self.dialect
        if self.tables and not any(
            m.matches(ref, dialect) for m in self.tables for ref in facts.tables
        ):
            return False
        if self.functions and not self.functions & facts.functions:
            return False
        return not self.schemas or any(
            m.matches(name, dialect) for m in self.schemas for name in facts.schemas
        )


def _schema_name(text: str) -> Name:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('""', '"'), True
    return text, False


# --------------------------------------------------------------------------- policy


def _first_class(classes: Iterable[str]) -> str:
    present = set(classes)
    return next(c for c in CLASS_ORDER if c in present)


class EffectivePolicy:
    """The union of a session's policies for one target, ready to decide."""

    __slots__ = (
        "allowed",
        "deny_builtins",
        "deny_rules",
        "dialect",
        "digest",
        "review_builtins",
        "review_classes",
        "review_rules",
    )

    def __init__(self, specs: Sequence[PolicySpec], dialect: str) -> None:
        self.dialect = dialect
        allow: list[str] = []
        deny_builtins: set[str] = set()
        review_classes: set[str] = set()
        review_builtins: set[str] = set()
        deny_rules: list[CompiledRule] = []
        review_rules: list[CompiledRule] = []
        for spec in specs:
            for item in spec.allow:
                if item != "*" and item not in CLASSES:
                    raise ValueError(f"policy {spec.name!r}: unknown class {item!r} in allow")
            allow.extend(spec.allow)
            rules = {rule.name: rule for rule in spec.rules}
            for item in spec.deny:
                if item in BUILTIN_RULES:
                    deny_builtins.add(item)
                elif item in rules:
                    deny_rules.append(CompiledRule.compile(rules[item], dialect))
                else:
                    raise ValueError(f"policy {spec.name!r}: unknown rule {item!r} in deny")
            for item in spec.review:
                if item in CLASSES:
                    review_classes.add(item)
                elif item in BUILTIN_RULES:
                    review_builtins.add(item)
                elif item in rules:
                    review_rules.append(CompiledRule.compile(rules[item], dialect))
                else:
                    raise ValueError(f"policy {spec.name!r}: unknown entry {item!r} in review")
        self.allowed = expand_allow(allow)
        self.deny_builtins = frozenset(deny_builtins)
        self.deny_rules = tuple(deny_rules)
        self.review_classes = frozenset(review_classes)
        self.review_builtins = frozenset(review_builtins)
        self.review_rules = tuple(review_rules)
        self.digest = self._digest()

    def _digest(self) -> str:
        def rule_doc(rule: CompiledRule) -> dict[str, object]:
            s = rule.spec
            return {
                "name": s.name,
                "classes": sorted(s.classes),
                "kinds": sorted(s.kinds),
                "tables": sorted(s.tables),
                "functions": sorted(s.functions),
                "schemas": sorted(s.schemas),
            }

        doc = {
            "classifier": CLASSIFIER_VERSION,
            "dialect": self.dialect,
            "allow": sorted(self.allowed),
            "deny": sorted(self.deny_builtins),
            "deny_rules": sorted((rule_doc(r) for r in self.deny_rules), key=_json),
            "review": sorted(self.review_classes | self.review_builtins),
            "review_rules": sorted((rule_doc(r) for r in self.review_rules), key=_json),
        }
        return hashlib.sha256(_json(doc).encode()).hexdigest()

    # ----------------------------------------------------------------------- decisions

    def judge(self, facts: StatementFacts) -> tuple[str, str, str] | None:
        """(action, rule, reason) for one statement, or None when it is allowed."""
        hit = facts.builtins & self.deny_builtins
        if hit:
            name = min(hit)
            return "deny", f"deny:{name}", f'rule "{name}"'
        for rule in self.deny_rules:
            if rule.matches(facts):
                return "deny", f"rule:{rule.spec.name}", f'rule "{rule.spec.name}"'
        missing = facts.classes - self.allowed
        if missing:
            cls = _first_class(missing)
            if cls == "unknown":
                reason = 'the gateway could not classify it, and class "unknown" is not allowed'
            else:
                reason = f'class "{cls}" is not allowed'
            return "deny", f"class:{cls} not allowed", reason
        review = facts.classes & self.review_classes
        if review:
            cls = _first_class(review)
            return "review", f"review:{cls}", f'rule "{cls}"'
        hit = facts.builtins & self.review_builtins
        if hit:
            name = min(hit)
            return "review", f"review:{name}", f'rule "{name}"'
        for rule in self.review_rules:
            if rule.matches(facts):
                return "review", f"rule:{rule.spec.name}", f'rule "{rule.spec.name}"'
        return None

    def decide(self, statements: Sequence[StatementFacts]) -> Decision:
        classes: frozenset[str] = frozenset().union(*(f.classes for f in statements))
        total = len(statements)
        review: tuple[int, str, str] | None = None
        for index, facts in enumerate(statements, 1):
            verdict = self.judge(facts)
            if verdict is None:
                continue
            action, rule, reason = verdict
            if action == "deny":
                subject = _subject(index, total)
                return Decision(
                    "deny", rule, f"{subject} denied by gateway policy ({reason})", classes
                )
            if review is None:
                review = (index, rule, reason)
        if review is not None:
            index, rule, reason = review
            subject = _subject(index, total)
            return Decision(
                "review",
                rule,
                f"{subject} requires approval ({reason})",
                classes,
            )
        if not statements:
            return Decision("allow", "allow:empty", "statement allowed", classes)
        shown = "+".join(c for c in reversed(CLASS_ORDER) if c in classes)
        return Decision("allow", f"allow:{shown}", "statement allowed", classes)


def _subject(index: int, total: int) -> str:
    return "statement" if total == 1 else f"statement {index} of {total}"


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
