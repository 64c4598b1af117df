"""Masking's statement checks on SQL-level PREPARE: the prepared statement is judged as if
sent directly (its writes of masked values are refused), and a body the gateway cannot see
or follow is refused while column masks apply."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.masking.lineage_cache import LineageCache
from gateway.masking.rules import MaskPolicy, MaskSpec
from gateway.masking.styles import Style
from gateway.policy import Decision
from gateway.policy.lineage import LineageCatalog
from gateway.session.masking_common import MaskingSession

TABLES = {
    ("public", "customers"): ("id", "name", "email", "ssn"),
    ("public", "orders"): ("id", "status", "customer_id"),
}
ALLOWED = Decision("allow", None, "", frozenset({"read"}))


class _Catalog:
    def __init__(self, lineage: LineageCatalog) -> None:
        self.snapshot = SimpleNamespace(lineage=lineage)

    def current(self) -> Any:
        return self.snapshot


def session(dialect: str, *, on_unknown_lineage: str = "mask", columns: bool = True) -> Any:
    spec = MaskSpec(
        "contractors.masks[0]",
        ("customers.ssn", "customers.email") if columns else (),
        () if columns else ("email",),
        Style("redact"),
    )
    policy = MaskPolicy([spec], on_unknown_lineage=on_unknown_lineage)
    schema = "public" if dialect == "postgres" else "app"
    tables = {(schema, t): cols for (_, t), cols in TABLES.items()}
    catalog = _Catalog(LineageCatalog(tables, {}, (schema,)))
    return MaskingSession(policy, catalog, LineageCache(dialect))  # type: ignore[arg-type]


def rule(dialect: str, sql: str, **kw: Any) -> str | None:
    refusal = session(dialect, **kw).check_statement(sql, ALLOWED)
    return None if refusal is None else refusal.rule


# The reviewer's statements (confirmed against real servers), and their direct forms.
LEAKS = [
    (
        "postgres",
        "PREPARE p AS SELECT set_config('my.x', email, false) FROM customers WHERE id=1",
        "SELECT set_config('my.x', email, false) FROM customers WHERE id=1",
    ),
    (
        "postgres",
        "PREPARE x AS UPDATE orders SET status = (SELECT email FROM customers WHERE id=1) "
        "WHERE id=1",
        "UPDATE orders SET status = (SELECT email FROM customers WHERE id=1) WHERE id=1",
    ),
    (
        "mysql",
        "PREPARE s FROM 'SELECT email INTO @v FROM customers WHERE id=1'",
        "SELECT email INTO @v FROM customers WHERE id=1",
    ),
    (
        "mysql",
        "PREPARE s2 FROM 'SELECT @w := ssn FROM customers WHERE id=1'",
        "SELECT @w := ssn FROM customers WHERE id=1",
    ),
]


@pytest.mark.parametrize(("dialect", "prepared", "direct"), LEAKS)
def test_prepare_is_refused_like_its_direct_form(dialect: str, prepared: str, direct: str) -> None:
    assert rule(dialect, direct) == "masking:copies_masked"
    assert rule(dialect, prepared) == "masking:copies_masked"
    # Also when it shares a text with other statements.
    assert rule(dialect, f"SELECT 1; {prepared}") == "masking:copies_masked"


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgres", "PREPARE p AS SELECT name FROM customers WHERE id = $1"),
        ("postgres", "PREPARE p (int) AS SELECT ssn FROM customers WHERE id = $1"),
        ("postgres", "PREPARE p AS SELECT set_config('my.x', name, false) FROM customers"),
        ("postgres", "PREPARE TRANSACTION 'gid-1'"),
        ("mysql", "PREPARE s FROM 'SELECT ssn FROM customers WHERE id = ?'"),
        ("mysql", "PREPARE s FROM 'SELECT name INTO @v FROM customers WHERE id = 1'"),
    ],
)
def test_prepare_of_a_body_without_copies_is_allowed(dialect: str, sql: str) -> None:
    # Reading masked columns is fine: EXECUTE's rows are masked like any result.
    assert rule(dialect, sql) is None


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("mysql", "PREPARE s FROM @sql"),
        ("mysql", "PREPARE s FROM 'SELEC email INTO @v FROM customers'"),
        ("mysql", "PREPARE s FROM 'SELECT 1; SELECT email INTO @v FROM customers'"),
        ("postgres", "PREPARE p AS FROBNICATE customers"),
    ],
)
def test_prepare_of_an_unknown_body_is_refused_while_column_masks_apply(
    dialect: str, sql: str
) -> None:
    assert rule(dialect, sql) == "masking:unknown_prepared"
    assert rule(dialect, sql, on_unknown_lineage="deny") == "masking:unknown_prepared"
    # Detectors only: no column masks, nothing a copy could move out of a mask.
    assert rule(dialect, sql, columns=False) is None


def test_prepare_of_a_body_of_unknown_lineage_follows_on_unknown_lineage() -> None:
    sql = "PREPARE p AS SELECT my_udf(name) FROM customers"
    assert rule("postgres", sql) is None
    assert rule("postgres", sql, on_unknown_lineage="deny") == "masking:unknown_lineage"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT ssn FROM customers WHERE id=1 INTO @x",
        "SELECT ssn FROM customers WHERE id=1 INTO @x, @y",
        "(SELECT ssn FROM customers WHERE id=1) INTO @x",
        "SELECT ssn FROM customers UNION SELECT name FROM customers INTO @x",
    ],
)
@pytest.mark.parametrize("mode", ["mask", "deny"])
def test_a_store_in_variables_the_lineage_cannot_follow_is_refused(sql: str, mode: str) -> None:
    """MySQL's INTO @x after FROM (or on a union) is not followed by the lineage: what it
    stores is unknown, and reading the variable back has nothing to mask by."""
    assert rule("mysql", sql, on_unknown_lineage=mode) == "masking:unknown_store"


def test_stores_the_lineage_follows_keep_their_own_rules() -> None:
    assert rule("mysql", "SELECT ssn INTO @x FROM customers WHERE id=1") == "masking:copies_masked"
    assert rule("mysql", "SELECT name INTO @x FROM customers WHERE id=1") is None
    assert rule("mysql", "SELECT @x") is None
    assert rule("mysql", "SELECT 'into @x' FROM customers") is None  # a string, not a store
