"""Row plans: which columns of one result are masked, and how (decided once per result).

Rules this module enforces (issue 6, PROTOCOLS.md 2.8):

* A column is masked when its **source** is a masked column (PostgreSQL: RowDescription table
  OID + attnum through the catalog; MySQL: ColumnDefinition schema/org_table/org_name), or
  when the statement's **lineage** says its value derives from one (masked as a whole), or,
  when lineage cannot be established for a statement that may read a masked column, always
  (``WHOLE_VALUE_REDACT``). A source table the catalog does not know is masked too.
* Columns left unmasked that carry text go through the **content detectors**, if any.
* Every replacement is valid for the column's type and format (``pg_values``/``my_values``);
  a type that cannot carry a masked value becomes NULL, or the result is refused when the
  policy says ``on_unmaskable = "deny"``.
* No mask applies: the plan is None and rows take the pass-through path untouched.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from ..policy.lineage import SourceColumn, StatementLineage
from .catalog import UNKNOWN
from .detectors import ByteScreen, Finding, run_plans
from .rules import WHOLE_VALUE_REDACT, Mask, MaskPolicy
from .styles import REDACTED, Style, text_masker

__all__ = [
    "JSON_OIDS",
    "TEXT_LIKE_OIDS",
    "ColumnPlan",
    "DetectorRewriter",
    "ResultPlan",
    "column_masks",
    "detector_rewriter",
]

ValueRewriter = Callable[[bytes], "bytes | None"]

# PostgreSQL types whose text and binary forms are the same character data (pg_type.dat).
TEXT_LIKE_OIDS: Final = frozenset({25, 1043, 1042, 19, 705})
JSON_OIDS: Final = frozenset({114, 3802})
_JSON_REDACTED: Final = json.dumps(REDACTED).encode()


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """What one output column gets: a mask (by source, lineage or unknown lineage) or the
    detectors; ``source`` is ``schema.table.column`` when known (for the recording)."""

    mask: Mask | None
    detectors: bool
    source: str | None
    derived: bool  # masked as a whole because of lineage (or unknown lineage)


@dataclass(slots=True)
class ResultPlan:
    rewriters: tuple[tuple[int, ValueRewriter], ...]
    columns: tuple[ColumnPlan, ...]
    refusal: str | None = None  # the result must not be sent (why, for the client)
    unknown_sources: bool = False  # a source table the catalog does not know: reload it
    recorded: object = None  # the recording's column metadata, built once by the driver
    # MySQL: the result's column count, and its column types for binary-protocol rows.
    column_count: int = 0
    types: tuple[int, ...] | None = None


def _lineage_outputs(
    lineage: StatementLineage | None, count: int
) -> tuple[frozenset[SourceColumn], ...] | None:
    """Per-column lineage, or None when it is unknown and may hide a masked column."""
    if lineage is None:
        return None
    outputs = lineage.outputs
    if outputs is not None and not lineage.unresolved:
        if len(outputs) == count:
            return outputs
        if not lineage.reads and not lineage.tables:
            return (frozenset(),) * count  # SHOW and the like: reads no table data
        return None
    # Outputs unknown (EXPLAIN, FETCH, a user function...): fail closed.
    return None


def column_masks(
    sources: Sequence[SourceColumn | object | None],
    lineage: StatementLineage | None,
    policy: MaskPolicy,
    text_columns: Sequence[bool],
) -> tuple[ColumnPlan, ...] | None:
    """The mask of every output column, or None when nothing is masked or detected.

    ``sources``: per column, its source column, None (computed), or ``catalog.UNKNOWN``.
    ``text_columns``: per column, whether the detectors can read it.
    """
    count = len(sources)
    outputs = _lineage_outputs(lineage, count) if policy.has_column_rules else None
    detectors = policy.detectors is not None
    plans: list[ColumnPlan] = []
    any_mask = False
    for i, src in enumerate(sources):
        mask: Mask | None = None
        derived = False
        name: str | None = None
        if src is UNKNOWN:
            if policy.has_column_rules:
                mask, derived = WHOLE_VALUE_REDACT, True
        elif isinstance(src, tuple):
            schema, table, column = src
            name = f"{schema}.{table}.{column}"
            mask = policy.column_mask(schema, table, column)
        if mask is None and policy.has_column_rules:
            if outputs is None:
                mask, derived = WHOLE_VALUE_REDACT, True
            else:
                found = policy.any_masked(outputs[i])
                if found is not None:
                    mask, derived = found.whole(), True
        use_detectors = mask is None and detectors and text_columns[i]
        any_mask = any_mask or mask is not None or use_detectors
        plans.append(ColumnPlan(mask, use_detectors, name, derived))
    return tuple(plans) if any_mask else None


# ---------------------------------------------------------------------------- detectors


@lru_cache(maxsize=64)
def _masker(style: Style) -> Callable[[str], str | None]:
    return text_masker(style)


def _constant_text(style: Style, codec: str) -> bytes | None:
    """What a constant style makes of any value, encoded; None for other styles."""
    if style.name not in ("redact", "fixed"):
        return None
    text = _masker(style)("")
    return None if text is None else text.encode(codec, "surrogateescape")


@dataclass(frozen=True, slots=True)
class DetectorRewriter:
    """Content detectors over one text column's values, in the two forms callers need."""

    whole: ValueRewriter  # any value
    # A batch of values with their pre-filter bits already known (``DetectorSet.hits``, or
    # a byte screen): a list of results, one per value.
    screened: Callable[[list[bytes], list[int]], list[bytes | None]]
    # The byte screen that gives those bits without decoding, when values are UTF-8 and the
    # set has one; None: every value goes through ``whole``.
    screen: ByteScreen | None


def detector_rewriter(
    policy: MaskPolicy, codec: str, *, json_value: bool, jsonb_binary: bool
) -> DetectorRewriter:
    """Content detectors over one text column's values (``codec``: the client encoding).

    A found span is replaced by its detector's style; a ``null`` style makes the whole value
    NULL. In a JSON column the result must still be JSON: if replacing spans broke it (a
    card number written as a JSON number), the whole value becomes the string "****".
    """
    detectors = policy.detectors
    assert detectors is not None
    masks = {name: _masker(mask.style) for name, mask in policy.detector_masks.items()}
    nulls = {name for name, mask in policy.detector_masks.items() if mask.style.name == "null"}
    plans = detectors.plans
    substitute = detectors.substitute
    builtin_hits = detectors.hits
    # A finding that is the whole value, by a detector with a constant style (redact, fixed),
    # becomes these bytes without building any text: the usual case in a column of PII.
    constants = tuple(
        None
        if json_value or jsonb_binary or policy.detector_masks[name].style.name == "null"
        else _constant_text(policy.detector_masks[name].style, codec)
        for name in detectors.names
    )

    class _Null(Exception):
        pass

    def replace(span: str, name: str) -> str:
        if name in nulls:
            raise _Null
        out = masks[name](span)
        return REDACTED if out is None else out

    # jsonb's binary form is a version byte, then the text: the byte stays as it is.
    skip = 1 if jsonb_binary else 0

    def rewrite(prefix: bytes, text: str, found: list[Finding]) -> bytes | None:
        """One value with findings, in general (the usual case is handled inline)."""
        try:
            new = substitute(text, found, replace)
        except _Null:
            return None
        if json_value:
            try:
                json.loads(new)
            except ValueError:
                return prefix + _JSON_REDACTED
        return prefix + new.encode(codec, "surrogateescape")

    def apply(values: list[bytes], texts: list[str], hits: list[int]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for i, found in enumerate(run_plans([plans[h] for h in hits], texts)):
            if not found:
                out.append(values[i])
                continue
            if len(found) == 1:
                start, stop, rank = found[0]
                if start == 0 and stop == len(texts[i]):
                    constant = constants[rank]
                    if constant is not None:
                        out.append(constant)
                        continue
            out.append(rewrite(values[i][:skip], texts[i], found))
        return out

    def screened(values: list[bytes], hits: list[int]) -> list[bytes | None]:
        if skip:
            texts = [v[skip:].decode(codec, "surrogateescape") for v in values]
        else:  # no slice per value on the usual path
            texts = [v.decode(codec, "surrogateescape") for v in values]
        return apply(values, texts, hits)

    def whole(value: bytes) -> bytes | None:
        text = value[skip:].decode(codec, "surrogateescape")
        hits = builtin_hits(text)
        if not plans[hits]:  # the usual case: no pattern to run (custom ones always run)
            return value
        return apply([value], [text], [hits])[0]

    # The screen reads the value's bytes as UTF-8 (a jsonb version byte in front changes
    # none of its verdicts: it is no digit, letter or token character).
    utf8 = codecs.lookup(codec).name == "utf-8"
    return DetectorRewriter(whole, screened, detectors.screen if utf8 else None)
