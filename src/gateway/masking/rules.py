"""Which mask applies to a source column or a text value, for one session.

Rules this module enforces:

* A session's masks are the union of the ``[[policies.masks]]`` of every policy that lets its
  identity reach the target: like statement policy, the strictest reading wins, so a member of
  both a restricted and an unrestricted group is masked.
* Column patterns are ``table.column`` (any schema) or ``schema.table.column``; ``*`` and
  ``?`` are globs. Names compare case-insensitively: a pattern that matches more columns
  masks more, never less.
* A column that more than one rule matches gets the first rule's style, in policy order.
* Output columns masked "as a whole" (derived through an expression, or of a statement whose
  lineage is unknown) never keep part of the value: styles that reveal part of the input
  (``last4``, ``keep_last``, ``email``) become ``redact`` there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final

from .detectors import CustomDetector, DetectorSet, compile_detectors
from .styles import Style

__all__ = [
    "WHOLE_VALUE_REDACT",
    "ColumnPattern",
    "Mask",
    "MaskPolicy",
    "MaskSpec",
    "column_pattern_problem",
]

_PATTERN_HELP: Final = (
    'expected "table.column" or "schema.table.column" ("*" matches any name), got '
)
# Styles that keep part of the original value: not used when a whole derived value is masked.
_PARTIAL_STYLES: Final = frozenset({"last4", "keep_last", "email"})


def column_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid column pattern, or None."""
    parts = pattern.split(".")
    if len(parts) not in (2, 3) or any(not p.strip() for p in parts):
        return _PATTERN_HELP + repr(pattern)
    if pattern.strip() != pattern:
        return f"column pattern {pattern!r} has leading or trailing spaces"
    return None


@dataclass(frozen=True, slots=True)
class ColumnPattern:
    schema: str | None  # None: any schema
    table: str
    column: str

    @classmethod
    def parse(cls, pattern: str) -> ColumnPattern:
        problem = column_pattern_problem(pattern)
        if problem:
            raise ValueError(problem)
        parts = [p.casefold() for p in pattern.split(".")]
        if len(parts) == 2:
            return cls(None, parts[0], parts[1])
        return cls(parts[0], parts[1], parts[2])

    def matches(self, schema: str, table: str, column: str) -> bool:
        if self.schema is not None and not fnmatchcase(schema.casefold(), self.schema):
            return False
        return fnmatchcase(table.casefold(), self.table) and fnmatchcase(
            column.casefold(), self.column
        )


@dataclass(frozen=True, slots=True)
class Mask:
    """A style and where it came from (``policy.masks[i]``, recorded with masked columns)."""

    style: Style
    source: str

    def whole(self) -> Mask:
        """This mask for a value masked as a whole (see the module docstring)."""
        if self.style.name in _PARTIAL_STYLES:
            return Mask(Style("redact"), self.source)
        return self


WHOLE_VALUE_REDACT: Final = Mask(Style("redact"), "gateway:unknown-lineage")


@dataclass(frozen=True, slots=True)
class MaskSpec:
    """One configured mask rule, already read from the config."""

    source: str  # "policy-name.masks[i]"
    columns: tuple[str, ...]
    detectors: tuple[str, ...]
    style: Style


class MaskPolicy:
    """The masks of one session (shared by every session with the same policies)."""

    __slots__ = (
        "_column_cache",
        "column_rules",
        "detector_masks",
        "detectors",
        "on_unknown_lineage",
        "on_unmaskable",
    )

    def __init__(
        self,
        specs: Sequence[MaskSpec],
        custom_detectors: Sequence[CustomDetector] = (),
        *,
        on_unknown_lineage: str = "mask",
        on_unmaskable: str = "null",
    ) -> None:
        rules: list[tuple[ColumnPattern, Mask]] = []
        detector_masks: dict[str, Mask] = {}
        for spec in specs:
            mask = Mask(spec.style, spec.source)
            rules.extend((ColumnPattern.parse(p), mask) for p in spec.columns)
            for name in spec.detectors:
                detector_masks.setdefault(name, mask)
        self.column_rules: tuple[tuple[ColumnPattern, Mask], ...] = tuple(rules)
        self.detector_masks = detector_masks
        self.detectors: DetectorSet | None = (
            compile_detectors(list(detector_masks), custom_detectors) if detector_masks else None
        )
        self.on_unknown_lineage = on_unknown_lineage
        self.on_unmaskable = on_unmaskable
        self._column_cache: dict[tuple[str, str, str], Mask | None] = {}

    @property
    def active(self) -> bool:
        return bool(self.column_rules) or self.detectors is not None

    @property
    def has_column_rules(self) -> bool:
        return bool(self.column_rules)

    def column_mask(self, schema: str, table: str, column: str) -> Mask | None:
        """The mask of a source column, or None (cached: called once per result column)."""
        key = (schema, table, column)
        cache = self._column_cache
        if key in cache:
            return cache[key]
        found = None
        for pattern, mask in self.column_rules:
            if pattern.matches(schema, table, column):
                found = mask
                break
        if len(cache) > 100_000:
            cache.clear()  # bounded: a catalog with more columns than this re-matches
        cache[key] = found
        return found

    def any_masked(self, columns: Iterable[tuple[str, str, str]]) -> Mask | None:
        """The first mask among source columns ``(schema, table, column)``, or None."""
        for schema, table, column in columns:
            mask = self.column_mask(schema, table, column)
            if mask is not None:
                return mask
        return None
