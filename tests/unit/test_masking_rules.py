"""Mask rules and result plans: which columns are masked, and with what (no I/O)."""

from __future__ import annotations

import pytest

from gateway.masking.catalog import UNKNOWN, build_catalog
from gateway.masking.plan import column_masks, detector_rewriter
from gateway.masking.rules import (
    WHOLE_VALUE_REDACT,
    ColumnPattern,
    MaskPolicy,
    MaskSpec,
    column_pattern_problem,
)
from gateway.masking.styles import Style
from gateway.policy.lineage import StatementLineage


def policy(*specs: MaskSpec, **kw: str) -> MaskPolicy:
    return MaskPolicy(list(specs), **kw)


SSN = MaskSpec("p.masks[0]", ("customers.ssn",), (), Style("last4"))
IBAN = MaskSpec("p.masks[1]", ("billing.*.iban",), (), Style("hash", hash_key=b"k" * 16))
DETECT = MaskSpec("p.masks[2]", (), ("email", "credit_card"), Style("redact"))


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [
        ("customers.ssn", True),
        ("*.card_number", True),
        ("billing.*.iban", True),
        ("ssn", False),
        ("a.b.c.d", False),
        ("customers.", False),
        (".ssn", False),
        (" customers.ssn", False),
    ],
)
def test_column_pattern_syntax(pattern: str, ok: bool) -> None:
    assert (column_pattern_problem(pattern) is None) == ok


def test_patterns_match_case_insensitively_and_by_schema() -> None:
    p = ColumnPattern.parse("billing.*.iban")
    assert p.matches("billing", "accounts", "IBAN")
    assert not p.matches("public", "accounts", "iban")
    any_schema = ColumnPattern.parse("Customers.SSN")
    assert any_schema.matches("public", "customers", "ssn")
    assert any_schema.matches("crm", "CUSTOMERS", "ssn")


def test_first_rule_wins_and_union_of_policies() -> None:
    first = MaskSpec("a.masks[0]", ("*.ssn",), (), Style("null"))
    pol = policy(first, SSN)
    mask = pol.column_mask("public", "customers", "ssn")
    assert mask is not None and mask.style.name == "null" and mask.source == "a.masks[0]"
    assert pol.column_mask("public", "customers", "name") is None


def test_whole_value_masks_never_keep_part_of_the_value() -> None:
    pol = policy(SSN)
    mask = pol.column_mask("public", "customers", "ssn")
    assert mask is not None and mask.whole().style.name == "redact"


CATALOG = build_catalog(
    1,
    [
        (100, "public", "customers", 1, "id"),
        (100, "public", "customers", 2, "ssn"),
        (100, "public", "customers", 3, "email"),
    ],
    [],
    ("public",),
)


def lineage(
    *outputs: frozenset[tuple[str, str, str]], unresolved: bool = False
) -> StatementLineage:
    reads = frozenset().union(*outputs) if outputs else frozenset()
    return StatementLineage(
        outputs=tuple(outputs),
        reads=reads,
        tables=frozenset(("public", "customers") for _ in outputs[:1]),
        unresolved=unresolved,
    )


SSN_COL = ("public", "customers", "ssn")
ID_COL = ("public", "customers", "id")


def test_catalog_resolves_sources() -> None:
    assert CATALOG.source(100, 2) == SSN_COL
    assert CATALOG.source(0, 0) is None
    assert CATALOG.source(999, 1) is UNKNOWN
    assert CATALOG.source(100, 9) is UNKNOWN


def test_source_and_lineage_masks() -> None:
    pol = policy(SSN)
    plans = column_masks(
        [ID_COL, SSN_COL, None, None],
        lineage(frozenset({ID_COL}), frozenset({SSN_COL}), frozenset({SSN_COL}), frozenset()),
        pol,
        [False, True, True, True],
    )
    assert plans is not None
    assert plans[0].mask is None
    assert plans[1].mask is not None and plans[1].mask.style.name == "last4"
    assert not plans[1].derived
    # Derived from ssn through an expression: masked as a whole.
    assert plans[2].mask is not None and plans[2].mask.style.name == "redact" and plans[2].derived
    assert plans[3].mask is None


def test_unknown_lineage_and_unknown_tables_mask_everything() -> None:
    pol = policy(SSN)
    plans = column_masks([ID_COL, None], None, pol, [False, False])
    assert plans is not None and all(p.mask is WHOLE_VALUE_REDACT for p in plans)
    unresolved = lineage(frozenset({ID_COL}), frozenset(), unresolved=True)
    plans = column_masks([ID_COL, None], unresolved, pol, [False, False])
    assert plans is not None and all(p.mask is WHOLE_VALUE_REDACT for p in plans)
    known = lineage(frozenset({ID_COL}))
    plans = column_masks([UNKNOWN], known, pol, [False])
    assert plans is not None and plans[0].mask is WHOLE_VALUE_REDACT


def test_nothing_masked_is_pass_through() -> None:
    pol = policy(SSN)
    assert column_masks([ID_COL], lineage(frozenset({ID_COL})), pol, [False]) is None


def test_detectors_only_on_text_columns_not_masked() -> None:
    pol = policy(DETECT)
    plans = column_masks([ID_COL, None], None, pol, [False, True])
    assert plans is not None
    assert not plans[0].detectors and plans[1].detectors


def test_detector_rewriter_keeps_json_valid() -> None:
    pol = policy(DETECT)
    rewrite = detector_rewriter(pol, "utf-8", json_value=True, jsonb_binary=False)
    assert rewrite(b'{"note": "hello"}') == b'{"note": "hello"}'
    out = rewrite(b'{"e": "bob@example.com"}')
    assert out is not None and b"bob@example.com" not in out
    # A card number written as a JSON number cannot be replaced in place.
    assert rewrite(b'{"c": 4111111111111111}') == b'"****"'
    binary = detector_rewriter(pol, "utf-8", json_value=True, jsonb_binary=True)
    out = binary(b'\x01{"e": "bob@example.com"}')
    assert out is not None and out.startswith(b"\x01") and b"bob@" not in out
