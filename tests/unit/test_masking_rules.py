"""Mask rules and result plans: which columns are masked, and with what (no I/O)."""

from __future__ import annotations

import pytest

from gateway.masking.catalog import UNKNOWN, build_catalog
from gateway.masking.detectors import CustomDetector
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
    rewrite = detector_rewriter(pol, "utf-8", json_value=True, jsonb_binary=False).whole
    assert rewrite(b'{"note": "hello"}') == b'{"note": "hello"}'
    out = rewrite(b'{"e": "bob@example.com"}')
    assert out is not None and b"bob@example.com" not in out
    # A card number written as a JSON number cannot be replaced in place.
    assert rewrite(b'{"c": 4111111111111111}') == b'"****"'
    binary = detector_rewriter(pol, "utf-8", json_value=True, jsonb_binary=True).whole
    out = binary(b'\x01{"e": "bob@example.com"}')
    assert out is not None and out.startswith(b"\x01") and b"bob@" not in out


# The detector rewriter's two forms: ``whole`` (any value; the MySQL path and non-UTF-8
# clients) and ``screened`` behind the byte screen (the PostgreSQL rows rewriter, UTF-8).
# They must give the same bytes for every value and every style, including the shortcut
# for a whole-value finding with a constant style.
MIXED = policy(
    MaskSpec("p.masks[0]", (), ("email",), Style("redact")),
    MaskSpec("p.masks[1]", (), ("ssn",), Style("fixed", value="<ssn>")),
    MaskSpec("p.masks[2]", (), ("credit_card",), Style("null")),
    MaskSpec("p.masks[3]", (), ("phone", "iban", "secret"), Style("last4")),
)
VALUES = [
    b"bob@example.com",
    b"write to bob@example.com today",
    b"123-45-6789",
    b"ssn 123-45-6789",
    b"4111 1111 1111 1111",
    b"4111 1111 1111 1112",
    b"+1 (415) 555-2671",
    b"DE89 3704 0044 0532 0130 00",
    b"a@b.co and 123-45-6789",
    b"Customer 7",
    b"order 7 shipped on 2024-05-08, ref ORD-7",
    b'{"e": "bob@example.com"}',
    b'"bob@example.com"',
    b"\xff\xfe 123-45-6789",  # not UTF-8: decoded with surrogateescape
    b"",
]


@pytest.mark.parametrize(
    ("json_value", "jsonb_binary"),
    [(False, False), (True, False), (True, True)],
    ids=["text", "json", "jsonb-binary"],
)
@pytest.mark.parametrize("value", [*VALUES, b"07700 900123", b"x 020 7946 0958"])
def test_the_screened_detector_rewriter_matches_the_whole_one(
    value: bytes, json_value: bool, jsonb_binary: bool
) -> None:
    from protocols.postgres.rows import (
        ScreenedValue,
        build_data_row,
        iter_data_rows,
        rewrite_data_rows,
    )

    if jsonb_binary:
        value = b"\x01" + value  # jsonb's binary form: a version byte, then the text
    detect = detector_rewriter(MIXED, "utf-8", json_value=json_value, jsonb_binary=jsonb_binary)
    assert detect.screen is not None
    screened = ScreenedValue(detect.whole, detect.screened, *detect.screen)
    hits = screened.hits(value)
    assert (detect.screened([value], [hits])[0] if hits else value) == detect.whole(value)
    row = build_data_row([value, b"x"])
    out = rewrite_data_rows(row, 0, len(row), [(0, screened)])
    assert list(iter_data_rows(bytes(out))) == [[detect.whole(value), b"x"]]


def test_detector_rewriter_styles_of_whole_and_partial_findings() -> None:
    whole = detector_rewriter(MIXED, "utf-8", json_value=False, jsonb_binary=False).whole
    assert whole(b"bob@example.com") == b"****"
    assert whole(b"mail bob@example.com") == b"mail ****"
    assert whole(b"123-45-6789") == b"<ssn>"
    assert whole(b"4111 1111 1111 1111") is None  # null style: the whole value is NULL
    assert whole(b"4111 1111 1111 1112") == b"4111 1111 1111 1112"  # fails Luhn
    assert whole(b"+1 (415) 555-2671").endswith(b"2671")  # type: ignore[union-attr]


def test_no_byte_screen_for_other_encodings() -> None:
    # The screen reads UTF-8 bytes; a client in another encoding is screened in Python.
    assert detector_rewriter(MIXED, "latin-1", json_value=False, jsonb_binary=False).screen is None
    assert detector_rewriter(MIXED, "utf_8", json_value=False, jsonb_binary=False).screen


def test_custom_detectors_run_on_every_value() -> None:
    # A custom regex has no pre-filter: no byte screen, and ``whole`` runs it on values the
    # built-in pre-filter finds nothing in.
    pol = MaskPolicy(
        [MaskSpec("p.masks[0]", (), ("ticket", "email"), Style("redact"))],
        [CustomDetector("ticket", r"TCK-[0-9]{4}")],
    )
    detect = detector_rewriter(pol, "utf-8", json_value=False, jsonb_binary=False)
    assert detect.screen is None
    assert detect.whole(b"see TCK-1234") == b"see ****"
    assert detect.whole(b"TCK-1234") == b"****"
    assert detect.whole(b"mail bob@example.com") == b"mail ****"
    assert detect.whole(b"nothing here") == b"nothing here"
