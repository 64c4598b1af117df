"""Policy specs (the statement part of a [[policies]] entry) and their validation.

Rules this module enforces:

* Every problem is reported, each with the key path of the offending value
  (``policies[0].rules[1].kinds[0]``), so an operator fixes a whole file in one pass.
* Names are checked against the vocabulary (vocabulary.py) with a close-match suggestion.
* A rule that can never fire is an error, not a silent no-op: a rule without matchers,
  a kind that never has the rule's classes, a rule nobody references, and a deny or review
  entry whose classes this policy does not allow (such statements are denied by class
  before the rule is consulted).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Final

from gateway.policy.vocabulary import (
    ALWAYS_ALLOWED,
    BUILTIN_RULE_CLASSES,
    BUILTIN_RULES,
    CLASS_ORDER,
    CLASSES,
    KINDS,
    STAR_CLASSES,
)

__all__ = [
    "PolicySpec",
    "RuleSpec",
    "parse_table_pattern",
    "rule_possible_classes",
    "spec_from_mapping",
    "validate_policy",
]

RULE_KEYS: Final[tuple[str, ...]] = ("name", "classes", "kinds", "tables", "functions", "schemas")
MATCHER_KEYS: Final[tuple[str, ...]] = RULE_KEYS[1:]
_RULE_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PART: Final = r'(?:"(?:[^"]|"")+"|[^".\s*]+)'
_TABLE_PATTERN_RE: Final = re.compile(rf"({_PART})(?:\.(\*|{_PART}))?")
_PLAIN_NAME_RE: Final = re.compile(_PART)


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A custom rule: it matches a statement when every matcher given matches."""

    name: str
    classes: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()  # statement kinds, see vocabulary.KINDS and docs/policy.md
    tables: tuple[str, ...] = ()  # "schema.table", "table", "schema.*"
    functions: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """The statement part of one [[policies]] entry, as plain values."""

    name: str
    allow: tuple[str, ...]  # classes; "*" = every class except "unknown"
    deny: tuple[str, ...] = ()  # built-in rule names or custom rule names
    review: tuple[str, ...] = ()  # classes, built-in rule names or custom rule names
    rules: tuple[RuleSpec, ...] = ()


def spec_from_mapping(name: str, raw: Mapping[str, object]) -> PolicySpec:
    """A PolicySpec from a raw [[policies]] table that ``validate_policy`` accepted."""

    def strings(value: object) -> tuple[str, ...]:
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        return ()

    rules: list[RuleSpec] = []
    raw_rules = raw.get("rules")
    if isinstance(raw_rules, list | tuple):
        for item in raw_rules:
            if isinstance(item, Mapping):
                rules.append(
                    RuleSpec(
                        name=str(item.get("name", "")),
                        classes=strings(item.get("classes")),
                        kinds=strings(item.get("kinds")),
                        tables=strings(item.get("tables")),
                        functions=strings(item.get("functions")),
                        schemas=strings(item.get("schemas")),
                    )
                )
    return PolicySpec(
        name=name,
        allow=strings(raw.get("allow")),
        deny=strings(raw.get("deny")),
        review=strings(raw.get("review")),
        rules=tuple(rules),
    )


def parse_table_pattern(pattern: str) -> tuple[tuple[str, bool], tuple[str, bool] | None] | None:
    """``"s.t"`` -> ((s, q), (t, q)); ``"t"`` -> ((t, q), None)... see docstring below.

    Returns (first, second) where second is None for a bare table name and ("*", False)
    for ``schema.*``; each part is (text, quoted). None if the pattern is malformed.
    """
    m = _TABLE_PATTERN_RE.fullmatch(pattern.strip())
    if m is None:
        return None
    first = _part(m.group(1))
    if m.group(2) is None:
        return first, None
    if m.group(2) == "*":
        return first, ("*", False)
    return first, _part(m.group(2))


def _part(text: str) -> tuple[str, bool]:
    if text.startswith('"'):
        return text[1:-1].replace('""', '"'), True
    return text, False


def rule_possible_classes(rule: RuleSpec) -> frozenset[str]:
    """The classes a statement matched by ``rule`` can have."""
    possible = frozenset(CLASSES)
    if rule.kinds:
        by_kind: set[str] = set()
        for kind in rule.kinds:
            by_kind |= KINDS.get(kind, frozenset())
        possible &= by_kind
    if rule.classes:
        possible &= frozenset(rule.classes)
    return possible


def expand_allow(allow: Sequence[str]) -> frozenset[str]:
    allowed: set[str] = set(ALWAYS_ALLOWED)
    for item in allow:
        if item == "*":
            allowed |= STAR_CLASSES
        elif item in CLASSES:
            allowed.add(item)
    return frozenset(allowed)


# --------------------------------------------------------------------------- validation


def _suggest(value: str, options: Sequence[str]) -> str:
    close = get_close_matches(value, list(options), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _known(options: Sequence[str]) -> str:
    return ", ".join(options)


def _string_list(
    raw: Mapping[str, object], key: str, path: str, errors: list[tuple[str, str]]
) -> list[tuple[int, str]] | None:
    """(index, value) pairs of a list of strings; None (with an error) if it is not one."""
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        errors.append((f"{path}.{key}", f"expected a list of strings, got {_type(value)}"))
        return None
    out: list[tuple[int, str]] = []
    for j, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            errors.append((f"{path}.{key}[{j}]", "expected a non-empty string"))
            continue
        out.append((j, item))
    return out


def _type(value: object) -> str:
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


_CLASS_LIST: Final = _known(CLASS_ORDER)
_BUILTIN_LIST: Final = _known(sorted(BUILTIN_RULES))


def validate_policy(spec_like: Mapping[str, object], key: str) -> list[tuple[str, str]]:
    """Validation errors for one raw [[policies]] table as (key path, message).

    Looks at ``allow``, ``deny``, ``review`` and ``rules``; other keys belong to config.py.
    """
    errors: list[tuple[str, str]] = []

    # allow
    allow: list[str] = []
    if "allow" not in spec_like:
        errors.append(
            (
                f"{key}.allow",
                'required: list the statement classes this policy allows, e.g. ["read"] '
                '("*" = every class except unknown)',
            )
        )
    else:
        items = _string_list(spec_like, "allow", key, errors)
        for j, item in items or []:
            if item != "*" and item not in CLASSES:
                errors.append(
                    (
                        f"{key}.allow[{j}]",
                        f'unknown statement class "{item}"{_suggest(item, CLASS_ORDER)}; '
                        f'known: {_CLASS_LIST}, or "*"',
                    )
                )
            else:
                allow.append(item)
    allowed = expand_allow(allow)

    # rules
    rules, rule_paths = _validate_rules(spec_like, key, errors)
    rule_names = {rule.name for rule in rules}

    referenced: set[str] = set()
    # deny
    for j, item in _string_list(spec_like, "deny", key, errors) or []:
        path = f"{key}.deny[{j}]"
        if item in BUILTIN_RULES:
            _check_live(BUILTIN_RULE_CLASSES[item], allowed, item, path, errors)
        elif item in rule_names:
            referenced.add(item)
            rule = next(r for r in rules if r.name == item)
            _check_live(rule_possible_classes(rule), allowed, item, path, errors)
        elif item in CLASSES:
            errors.append(
                (
                    path,
                    f'"{item}" is a statement class; deny takes rule names. To forbid the '
                    f"class, leave it out of allow (or deny a custom rule with "
                    f'classes = ["{item}"])',
                )
            )
        else:
            names = sorted(BUILTIN_RULES) + sorted(rule_names)
            errors.append(
                (
                    path,
                    f'unknown rule "{item}"{_suggest(item, names)}; built-in rules: '
                    f"{_BUILTIN_LIST}; custom rules are defined in [[policies.rules]]",
                )
            )

    # review
    for j, item in _string_list(spec_like, "review", key, errors) or []:
        path = f"{key}.review[{j}]"
        if item in CLASSES:
            if item not in allowed:
                errors.append(
                    (
                        path,
                        f'review of class "{item}" can never apply: this policy does not '
                        f"allow that class, so such statements are denied before review; "
                        f'add "{item}" to allow or remove it here',
                    )
                )
        elif item in BUILTIN_RULES:
            _check_live(BUILTIN_RULE_CLASSES[item], allowed, item, path, errors)
        elif item in rule_names:
            referenced.add(item)
            rule = next(r for r in rules if r.name == item)
            _check_live(rule_possible_classes(rule), allowed, item, path, errors)
        else:
            names = list(CLASS_ORDER) + sorted(BUILTIN_RULES) + sorted(rule_names)
            errors.append(
                (
                    path,
                    f'unknown class or rule "{item}"{_suggest(item, names)}; review takes '
                    f"statement classes ({_CLASS_LIST}), built-in rules ({_BUILTIN_LIST}) "
                    f"or custom rule names",
                )
            )

    for rule in rules:
        if rule.name not in referenced:
            errors.append(
                (
                    rule_paths[rule.name],
                    f'rule "{rule.name}" can never fire: it is not referenced from deny or review',
                )
            )
    return errors


def _check_live(
    possible: frozenset[str],
    allowed: frozenset[str],
    name: str,
    path: str,
    errors: list[tuple[str, str]],
) -> None:
    if possible & allowed:
        return
    shown = ", ".join(c for c in CLASS_ORDER if c in possible) or "none"
    errors.append(
        (
            path,
            f'rule "{name}" can never fire in this policy: it only matches statements of '
            f"class {shown}, which this policy does not allow (they are denied by class "
            f"already); remove it, or allow the class",
        )
    )


def _validate_rules(
    spec_like: Mapping[str, object], key: str, errors: list[tuple[str, str]]
) -> tuple[list[RuleSpec], dict[str, str]]:
    raw_rules = spec_like.get("rules")
    if raw_rules is None:
        return [], {}
    if not isinstance(raw_rules, list | tuple):
        errors.append((f"{key}.rules", f"expected a list of tables, got {_type(raw_rules)}"))
        return [], {}
    rules: list[RuleSpec] = []
    paths: dict[str, str] = {}
    for i, raw in enumerate(raw_rules):
        path = f"{key}.rules[{i}]"
        if not isinstance(raw, Mapping):
            errors.append((path, f"expected a table, got {_type(raw)}"))
            continue
        for extra in sorted(set(raw) - set(RULE_KEYS)):
            keys = ", ".join(RULE_KEYS)
            errors.append(
                (f"{path}.{extra}", f"unknown key{_suggest(str(extra), RULE_KEYS)}; known: {keys}")
            )
        name = raw.get("name")
        if not isinstance(name, str) or not _RULE_NAME_RE.fullmatch(name):
            errors.append(
                (
                    f"{path}.name",
                    "required: a name of letters, digits, '_', '.', '-' (referenced from "
                    "deny or review)",
                )
            )
            name = None
        elif name in BUILTIN_RULES:
            errors.append((f"{path}.name", f'"{name}" is a built-in rule name; pick another'))
            name = None
        elif name in paths:
            errors.append((f"{path}.name", f'duplicate rule name "{name}"'))
            name = None

        matchers = {k: _string_list(raw, k, path, errors) for k in MATCHER_KEYS}
        if not any(raw.get(k) for k in MATCHER_KEYS):
            errors.append(
                (
                    path,
                    "rule has no matcher: give at least one of classes, kinds, tables, "
                    "functions, schemas (an empty rule would match every statement)",
                )
            )
        classes = _check_items(matchers["classes"], path, "classes", errors, _check_class)
        kinds = _check_items(matchers["kinds"], path, "kinds", errors, _check_kind)
        tables = _check_items(matchers["tables"], path, "tables", errors, _check_table)
        functions = _check_items(matchers["functions"], path, "functions", errors, _check_name)
        schemas = _check_items(matchers["schemas"], path, "schemas", errors, _check_name)
        if classes and kinds:
            for j, kind in enumerate(kinds):
                if not KINDS[kind] & set(classes):
                    can = ", ".join(c for c in CLASS_ORDER if c in KINDS[kind])
                    errors.append(
                        (
                            f"{path}.kinds[{j}]",
                            f'kind "{kind}" never has class {", ".join(classes)} (it can '
                            f"have: {can}), so this rule can never match it",
                        )
                    )
        if name is not None:
            # Recorded even when a matcher is bad, so references to it do not fail too.
            paths[name] = f"{path}.name"
            rules.append(
                RuleSpec(
                    name,
                    tuple(classes),
                    tuple(kinds),
                    tuple(tables),
                    tuple(functions),
                    tuple(schemas),
                )
            )
    return rules, paths


def _check_items(
    items: list[tuple[int, str]] | None,
    path: str,
    key: str,
    errors: list[tuple[str, str]],
    check: object,
) -> list[str]:
    assert callable(check)
    good: list[str] = []
    for j, item in items or []:
        message = check(item)
        if message:
            errors.append((f"{path}.{key}[{j}]", message))
        else:
            good.append(item)
    return good


def _check_class(item: str) -> str | None:
    if item in CLASSES:
        return None
    return f'unknown statement class "{item}"{_suggest(item, CLASS_ORDER)}; known: {_CLASS_LIST}'


def _check_kind(item: str) -> str | None:
    if item in KINDS:
        return None
    return (
        f'unknown statement kind "{item}"{_suggest(item.upper(), sorted(KINDS))}; see '
        f'docs/policy.md for the list (upper case, e.g. "SELECT", "DROP TABLE")'
    )


def _check_table(item: str) -> str | None:
    if parse_table_pattern(item) is not None:
        return None
    return f'malformed table pattern "{item}"; use "table", "schema.table" or "schema.*"'


def _check_name(item: str) -> str | None:
    if _PLAIN_NAME_RE.fullmatch(item.strip()):
        return None
    return f'malformed name "{item}"; give one unqualified name (quote it if it has dots)'
