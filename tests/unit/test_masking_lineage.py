"""Column lineage for masking (gateway.policy.lineage) against a demo-like catalog.

Each case asserts the exact source columns of every output column, in both dialects where
the syntax exists. Names in the expectations are "table.column" in schema public, or
"schema.table.column".
"""

# ruff: noqa: E501  (one case per line reads better than the formatter's layout)
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.lexer import lex, split_statements
from gateway.policy.lineage import (
    SHAPED,
    UNTRACKED,
    LineageCatalog,
    SourceColumn,
    StatementLineage,
    statement_lineage,
)

CUSTOMERS = ("id", "name", "email", "ssn", "card_number", "phone", "created_at")
ORDERS = ("id", "customer_id", "amount", "status", "created_at")
EVENTS = ("id", "customer_id", "kind", "payload", "created_at")
TABLES: dict[tuple[str, str], tuple[str, ...]] = {
    ("public", "customers"): CUSTOMERS,
    ("public", "orders"): ORDERS,
    ("public", "events"): EVENTS,
    ("public", "customer_contacts"): ("id", "name", "email"),
    ("billing", "accounts"): ("id", "customer_id", "iban"),
}
PG_VIEW = " SELECT customers.id,\n    customers.name,\n    customers.email\n   FROM customers;"
MY_VIEW = (
    "select `public`.`customers`.`id` AS `id`,`public`.`customers`.`name` AS `name`,"
    "`public`.`customers`.`email` AS `email` from `public`.`customers`"
)
CATALOGS = {
    "postgres": LineageCatalog(TABLES, {("public", "customer_contacts"): PG_VIEW}, ("public",)),
    "mysql": LineageCatalog(TABLES, {("public", "customer_contacts"): MY_VIEW}, ("public",)),
}
BOTH = ("postgres", "mysql")
PG = ("postgres",)
MY = ("mysql",)


def col(name: str) -> SourceColumn:
    parts = name.split(".")
    if len(parts) == 2:
        return ("public", parts[0], parts[1])
    schema, table, column = parts
    return (schema, table, column)


def S(*names: str) -> frozenset[SourceColumn]:
    return frozenset(col(n) for n in names)


NONE: frozenset[SourceColumn] = frozenset()
ALL_CUSTOMERS = S(*(f"customers.{c}" for c in CUSTOMERS))
STAR_CUSTOMERS = [S(f"customers.{c}") for c in CUSTOMERS]
STAR_ORDERS = [S(f"orders.{c}") for c in ORDERS]


def one(sql: str, dialect: str, catalog: LineageCatalog | None = None) -> StatementLineage:
    result = statement_lineage(sql, dialect, catalog or CATALOGS[dialect])
    assert len(result) == 1, result
    return result[0]


def outputs(sql: str, dialect: str) -> list[frozenset[SourceColumn]]:
    lineage = one(sql, dialect)
    assert lineage.outputs is not None, lineage
    assert not lineage.unresolved, lineage
    return list(lineage.outputs)


Case = tuple[tuple[str, ...], str, list[frozenset[SourceColumn]]]

# fmt: off
CASES: list[Case] = [
    # plain column, alias, *, t.*
    (BOTH, "SELECT ssn FROM customers", [S("customers.ssn")]),
    (BOTH, "SELECT ssn AS x, c.name n FROM customers c", [S("customers.ssn"), S("customers.name")]),
    (BOTH, "SELECT * FROM customers", STAR_CUSTOMERS),
    (BOTH, "SELECT o.*, c.name FROM orders o JOIN customers c ON c.id = o.customer_id", [*STAR_ORDERS, S("customers.name")]),
    (BOTH, "SELECT c.* FROM customers AS c WHERE c.id = 1", STAR_CUSTOMERS),
    (BOTH, "SELECT *, ssn FROM customers", [*STAR_CUSTOMERS, S("customers.ssn")]),
    # concatenation, casts, substrings, hashes
    (PG, "SELECT name || ' ' || ssn FROM customers", [S("customers.name", "customers.ssn")]),
    (BOTH, "SELECT concat(name, '-', ssn), concat_ws(',', phone, email) FROM customers", [S("customers.name", "customers.ssn"), S("customers.phone", "customers.email")]),
    (PG, "SELECT ssn::text, CAST(ssn AS varchar(11)), (ssn)::bytea FROM customers", [S("customers.ssn")] * 3),
    (MY, "SELECT CAST(ssn AS CHAR(11)), CONVERT(ssn, CHAR) FROM customers", [S("customers.ssn")] * 2),
    (BOTH, "SELECT substring(ssn, 1, 3), right(ssn, 4), left(card_number, 4), md5(ssn), upper(lower(email)) FROM customers", [S("customers.ssn")] * 2 + [S("customers.card_number"), S("customers.ssn"), S("customers.email")]),
    (PG, "SELECT substring(ssn FROM 1 FOR 3), overlay(card_number PLACING 'x' FROM 1 FOR 12) FROM customers", [S("customers.ssn"), S("customers.card_number")]),
    # CASE: the condition flows, not only the results
    (BOTH, "SELECT CASE WHEN ssn LIKE '1%' THEN 'a' ELSE 'b' END FROM customers", [S("customers.ssn")]),
    (BOTH, "SELECT CASE status WHEN 'paid' THEN amount END FROM orders", [S("orders.status", "orders.amount")]),
    (MY, "SELECT IF(ssn LIKE '1%', 'a', 'b'), IFNULL(phone, email) FROM customers", [S("customers.ssn"), S("customers.phone", "customers.email")]),
    (BOTH, "SELECT coalesce(phone, email, 'none'), nullif(name, '') FROM customers", [S("customers.phone", "customers.email"), S("customers.name")]),
    # scalar subqueries (correlated too), EXISTS / IN carry what the subquery reads
    (BOTH, "SELECT o.id, (SELECT c.ssn FROM customers c WHERE c.id = o.customer_id) FROM orders o", [S("orders.id"), S("customers.ssn")]),
    (BOTH, "SELECT (SELECT max(o.amount) FROM orders o WHERE o.customer_id = c.id), (SELECT c.ssn) FROM customers c", [S("orders.amount"), S("customers.ssn")]),
    (BOTH, "SELECT EXISTS (SELECT 1 FROM customers WHERE ssn = '1'), id IN (SELECT customer_id FROM orders) FROM customers", [S("customers.ssn"), S("customers.id", "orders.customer_id")]),
    (PG, "SELECT ARRAY(SELECT ssn FROM customers)", [S("customers.ssn")]),
    # derived tables, CTEs, recursive CTEs
    (BOTH, "SELECT s.x FROM (SELECT ssn AS x, name FROM customers) AS s", [S("customers.ssn")]),
    (BOTH, "SELECT * FROM (SELECT name, ssn FROM customers) AS s", [S("customers.name"), S("customers.ssn")]),
    (PG, "SELECT b FROM (SELECT ssn, name FROM customers) AS s(a, b)", [S("customers.name")]),
    (BOTH, "WITH t AS (SELECT ssn, name FROM customers) SELECT name, ssn FROM t", [S("customers.name"), S("customers.ssn")]),
    (BOTH, "WITH t (a, b) AS (SELECT ssn, name FROM customers) SELECT b, a FROM t", [S("customers.name"), S("customers.ssn")]),
    (BOTH, "WITH a AS (SELECT ssn FROM customers), b AS (SELECT ssn AS x FROM a) SELECT x FROM b", [S("customers.ssn")]),
    (BOTH, "WITH t AS (SELECT email FROM customers) SELECT (SELECT max(email) FROM t)", [S("customers.email")]),
    (BOTH, "WITH RECURSIVE r (n, v) AS (SELECT 1, ssn FROM customers UNION ALL SELECT n + 1, v FROM r WHERE n < 3) SELECT n, v FROM r", [NONE, S("customers.ssn")]),
    (BOTH, "WITH RECURSIVE r (n, v, w) AS (SELECT 1, name, email FROM customers UNION ALL SELECT n + 1, w, ssn FROM r JOIN customers ON customers.id = r.n) SELECT v, w FROM r", [S("customers.name", "customers.email", "customers.ssn"), S("customers.email", "customers.ssn")]),
    # set operations: output i is the union of branch i
    (BOTH, "SELECT ssn FROM customers UNION SELECT status FROM orders", [S("customers.ssn", "orders.status")]),
    (BOTH, "SELECT id, name FROM customers UNION ALL SELECT id, status FROM orders ORDER BY 1", [S("customers.id", "orders.id"), S("customers.name", "orders.status")]),
    (BOTH, "SELECT email FROM customers INTERSECT SELECT kind FROM events", [S("customers.email", "events.kind")]),
    # views expand from the catalog (the view's own columns are sources as well)
    (BOTH, "SELECT name FROM customer_contacts", [S("customer_contacts.name", "customers.name")]),
    (BOTH, "SELECT * FROM customer_contacts cc", [S("customer_contacts.id", "customers.id"), S("customer_contacts.name", "customers.name"), S("customer_contacts.email", "customers.email")]),
    # whole rows and JSON / string / array aggregates
    (PG, "SELECT row_to_json(c), to_json(c), to_jsonb(c), json_agg(c), jsonb_agg(c) FROM customers c", [ALL_CUSTOMERS] * 5),
    (PG, "SELECT c, ROW(c.*), hstore(c), to_jsonb(c.*) FROM customers c", [ALL_CUSTOMERS] * 4),
    (PG, "SELECT row_to_json(customers) FROM customers", [ALL_CUSTOMERS]),
    (PG, "SELECT json_build_object('s', c.ssn, 'n', name), jsonb_build_object('p', phone) FROM customers c", [S("customers.ssn", "customers.name"), S("customers.phone")]),
    (PG, "SELECT string_agg(email, ','), array_agg(phone), json_object_agg(name, ssn) FROM customers", [S("customers.email"), S("customers.phone"), S("customers.name", "customers.ssn")]),
    (PG, "SELECT customer_id, string_agg(status, ',' ORDER BY created_at) FROM orders GROUP BY customer_id", [S("orders.customer_id"), S("orders.status", "orders.created_at")]),
    (MY, "SELECT JSON_OBJECT('s', ssn, 'n', name), JSON_ARRAYAGG(phone), JSON_OBJECTAGG(name, ssn) FROM customers", [S("customers.ssn", "customers.name"), S("customers.phone"), S("customers.name", "customers.ssn")]),
    (MY, "SELECT GROUP_CONCAT(email SEPARATOR ','), GROUP_CONCAT(DISTINCT ssn ORDER BY id) FROM customers", [S("customers.email"), S("customers.ssn", "customers.id")]),
    (MY, "SELECT JSON_ARRAY(ssn, name) FROM customers", [S("customers.ssn", "customers.name")]),
    # aggregates: counts reveal no value, every other aggregate derives from its arguments
    (BOTH, "SELECT count(*), count(ssn), count(DISTINCT ssn), max(ssn), min(name) FROM customers", [NONE, NONE, NONE, S("customers.ssn"), S("customers.name")]),
    (BOTH, "SELECT status, count(*), sum(amount), avg(amount) FROM orders GROUP BY status", [S("orders.status"), NONE, S("orders.amount"), S("orders.amount")]),
    (PG, "SELECT count(*) FILTER (WHERE ssn LIKE '1%') FROM customers", [S("customers.ssn")]),
    (PG, "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM orders", [S("orders.amount")]),
    # window functions: arguments, PARTITION BY and ORDER BY flow
    (BOTH, "SELECT id, sum(amount) OVER (PARTITION BY customer_id), rank() OVER (ORDER BY status) FROM orders", [S("orders.id"), S("orders.amount", "orders.customer_id"), S("orders.status")]),
    (BOTH, "SELECT lag(ssn) OVER (ORDER BY id), count(*) OVER (PARTITION BY name) FROM customers", [S("customers.ssn", "customers.id"), S("customers.name")]),
    (BOTH, "SELECT row_number() OVER w FROM orders WINDOW w AS (PARTITION BY customer_id)", [S("orders.customer_id")]),
    # joins: unqualified names resolved by the catalog; USING / NATURAL merge columns
    (BOTH, "SELECT name, amount, status, iban FROM customers c JOIN orders o ON o.customer_id = c.id JOIN billing.accounts a ON a.customer_id = c.id", [S("customers.name"), S("orders.amount"), S("orders.status"), S("billing.accounts.iban")]),
    (BOTH, "SELECT ssn, kind FROM customers LEFT JOIN events ON events.customer_id = customers.id", [S("customers.ssn"), S("events.kind")]),
    (BOTH, "SELECT * FROM orders JOIN events USING (id)", [S("orders.id", "events.id"), *STAR_ORDERS[1:], *[S(f"events.{c}") for c in EVENTS[1:]]]),
    (BOTH, "SELECT * FROM orders NATURAL JOIN events", [S("orders.id", "events.id"), S("orders.customer_id", "events.customer_id"), S("orders.created_at", "events.created_at"), S("orders.amount"), S("orders.status"), S("events.kind"), S("events.payload")]),
    (PG, "SELECT j.* FROM (customers c JOIN orders o ON o.customer_id = c.id) AS j", [*STAR_CUSTOMERS, *STAR_ORDERS]),
    # quoted identifiers, case folding, schema-qualified names
    (PG, 'SELECT "ssn" FROM "customers"', [S("customers.ssn")]),
    (PG, "SELECT SSN FROM Public.CUSTOMERS", [S("customers.ssn")]),
    (MY, "SELECT `SSN`, Name FROM `customers`", [S("customers.ssn"), S("customers.name")]),
    (BOTH, "SELECT a.iban, billing.accounts.customer_id FROM billing.accounts a, billing.accounts", [S("billing.accounts.iban"), S("billing.accounts.customer_id")]),
    (BOTH, "SELECT public.customers.ssn FROM public.customers", [S("customers.ssn")]),
    # LATERAL, VALUES, set-returning and table functions
    (BOTH, "SELECT x.s FROM customers c, LATERAL (SELECT c.ssn AS s) AS x", [S("customers.ssn")]),
    (BOTH, "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS v (x, y)", [NONE, NONE]),
    (PG, "SELECT e.id, j.key, j.value FROM events e, jsonb_each(e.payload) AS j", [S("events.id"), S("events.payload"), S("events.payload")]),
    (PG, "SELECT u, n FROM customers c, unnest(ARRAY[c.ssn, c.phone]) WITH ORDINALITY AS t (u, n)", [S("customers.ssn", "customers.phone"), NONE]),
    (PG, "SELECT g FROM generate_series(1, 3) AS g", [NONE]),
    (PG, "SELECT r.a FROM events e, json_to_record(e.payload) AS r (a int, b text)", [S("events.payload")]),
    (MY, "SELECT jt.a FROM events e, JSON_TABLE(e.payload, '$[*]' COLUMNS (a INT PATH '$.a')) AS jt", [S("events.payload")]),
    # harmless system tables do not shadow outer columns
    (PG, "SELECT relname FROM pg_class", [NONE]),
    (PG, "SELECT (SELECT ssn FROM pg_catalog.pg_class LIMIT 1) FROM customers", [S("customers.ssn")]),
    (MY, "SELECT table_name FROM information_schema.tables", [NONE]),
    # data-modifying CTE (PostgreSQL)
    (PG, "WITH d AS (DELETE FROM customers WHERE id = 1 RETURNING ssn) SELECT ssn FROM d", [S("customers.ssn")]),
    # PostgreSQL TABLE t is SELECT * FROM t; MySQL VALUES ROW(...)
    (PG, "TABLE orders", STAR_ORDERS),
    (MY, "VALUES ROW(1, 'a')", [NONE, NONE]),
    (MY, "SELECT 1, @x, @@version FROM DUAL", [NONE, NONE, NONE]),
]
# fmt: on


@pytest.mark.parametrize(
    ("dialect", "sql", "expected"),
    [(d, sql, expected) for dialects, sql, expected in CASES for d in dialects],
)
def test_output_sources(dialect: str, sql: str, expected: list[frozenset[SourceColumn]]) -> None:
    assert outputs(sql, dialect) == expected


# --------------------------------------------------------------------------- reads, tables


@pytest.mark.parametrize("dialect", BOTH)
def test_reads_cover_filters_and_joins(dialect: str) -> None:
    lineage = one(
        "SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.id "
        "WHERE c.ssn LIKE '1%' ORDER BY o.amount",
        dialect,
    )
    assert lineage.outputs == (S("customers.name"),)
    assert lineage.reads == S(
        "customers.name", "customers.id", "customers.ssn", "orders.customer_id", "orders.amount"
    )
    assert lineage.tables == {("public", "customers"), ("public", "orders")}


@pytest.mark.parametrize("dialect", BOTH)
def test_count_star_reads_nothing(dialect: str) -> None:
    lineage = one("SELECT count(*) FROM customers", dialect)
    assert lineage.outputs == (NONE,)
    assert lineage.reads == NONE
    assert lineage.tables == {("public", "customers")}


@pytest.mark.parametrize("dialect", BOTH)
def test_view_tables_and_reads(dialect: str) -> None:
    lineage = one("SELECT name FROM customer_contacts", dialect)
    assert lineage.tables == {("public", "customer_contacts"), ("public", "customers")}
    assert col("customers.email") in lineage.reads  # the view body reads it
    assert col("customers.ssn") not in lineage.reads


# --------------------------------------------------------------------------- resolution


def test_search_path_order() -> None:
    tables = {**TABLES, ("billing", "customers"): ("id", "tax_id")}
    first_billing = LineageCatalog(tables, {}, ("billing", "public"))
    first_public = LineageCatalog(tables, {}, ("public", "billing"))
    for dialect in BOTH:
        assert one("SELECT * FROM customers", dialect, first_billing).outputs == (
            S("billing.customers.id"),
            S("billing.customers.tax_id"),
        )
        assert one("SELECT * FROM customers", dialect, first_public).outputs == tuple(
            STAR_CUSTOMERS
        )
    # accounts is only in billing: unresolved while billing is not on the path
    assert one("SELECT iban FROM accounts", "postgres").unresolved
    with_billing = replace(CATALOGS["postgres"], search_path=("public", "billing"))
    lineage = one("SELECT iban FROM accounts", "postgres", with_billing)
    assert lineage.outputs == (S("billing.accounts.iban"),) and not lineage.unresolved


def test_pg_catalog_listed_first_wins_over_search_path() -> None:
    tables = {**TABLES, ("pg_catalog", "pg_foo"): ("a",), ("public", "pg_foo"): ("a",)}
    lineage = one("SELECT a FROM pg_foo", "postgres", LineageCatalog(tables, {}, ("public",)))
    assert lineage.outputs == (frozenset({("pg_catalog", "pg_foo", "a")}),)


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgres", 'SELECT "SSN" FROM customers'),
        ("postgres", 'SELECT ssn FROM "Customers"'),
        ("postgres", "SELECT c.nope FROM customers c"),
        ("postgres", "SELECT x.ssn FROM customers c"),
        ("mysql", "SELECT nope FROM customers"),
        ("postgres", "SELECT x FROM nope"),
        ("mysql", "SELECT x FROM nope"),
        ("postgres", "SELECT c.ssn, n.x FROM customers c JOIN nope n ON true"),
        ("postgres", "SELECT row_number() OVER w FROM orders"),
    ],
)
def test_unresolved_reference(dialect: str, sql: str) -> None:
    lineage = one(sql, dialect)
    assert lineage.unresolved


@pytest.mark.parametrize("dialect", BOTH)
def test_unknown_table_star_is_unknown(dialect: str) -> None:
    lineage = one("SELECT * FROM nope", dialect)
    assert lineage.outputs is None and lineage.unresolved


@pytest.mark.parametrize("dialect", BOTH)
def test_unknown_table_does_not_hide_known_columns(dialect: str) -> None:
    lineage = one("SELECT c.ssn, x FROM customers c, nope", dialect)
    assert lineage.unresolved
    assert lineage.outputs is not None and lineage.outputs[0] == S("customers.ssn")


@pytest.mark.parametrize(
    ("dialect", "sql", "expected"),
    [
        ("postgres", "SELECT my_func(ssn) FROM customers", [S("customers.ssn")]),
        ("postgres", "SELECT public.lower(name) FROM customers", [S("customers.name")]),
        ("postgres", 'SELECT "LOWER"(name) FROM customers', [S("customers.name")]),
        ("postgres", "SELECT lcase(name) FROM customers", [S("customers.name")]),
        ("postgres", "SELECT table_to_xml('customers', true, false, '')", [NONE]),
        ("mysql", "SELECT my_func(ssn) FROM customers", [S("customers.ssn")]),
        ("mysql", "SELECT mydb.f(name) FROM customers", [S("customers.name")]),
        ("mysql", "SELECT `lower`(name) FROM customers", [S("customers.name")]),
        ("mysql", "SELECT string_agg(name, ',') FROM customers", [S("customers.name")]),
    ],
)
def test_unknown_function_is_unresolved_but_keeps_argument_sources(
    dialect: str, sql: str, expected: list[frozenset[SourceColumn]]
) -> None:
    lineage = one(sql, dialect)
    assert lineage.unresolved
    assert lineage.outputs is not None and list(lineage.outputs) == expected


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgres", "SELECT pg_catalog.lower(name), pg_catalog.format('%s', ssn) FROM customers"),
        (
            "postgres",
            "SELECT date_trunc('day', created_at), extract(year FROM created_at), now() FROM orders",
        ),
        ("postgres", "SELECT amount::numeric(10, 2), round(amount, 2) FROM orders"),
        ("postgres", "INSERT INTO orders (id, status) VALUES (1, 'x') ON CONFLICT (id) DO NOTHING"),
        ("mysql", "SELECT DATE_FORMAT(created_at, '%Y'), IFNULL(status, 'x') FROM orders"),
        ("mysql", "SELECT id FROM orders USE INDEX (PRIMARY) WHERE MATCH (status) AGAINST ('x')"),
    ],
)
def test_known_builtins_are_not_unresolved(dialect: str, sql: str) -> None:
    assert not one(sql, dialect).unresolved


def test_value_bearing_system_tables_are_unknown() -> None:
    for dialect, sql in [
        ("postgres", "SELECT most_common_vals FROM pg_stats WHERE attname = 'ssn'"),
        ("postgres", "SELECT query FROM pg_catalog.pg_stat_activity"),
        ("mysql", "SELECT lock_data FROM performance_schema.data_locks"),
        ("mysql", "SELECT histogram FROM information_schema.COLUMN_STATISTICS"),
        ("postgres", "SELECT objid FROM pg_locks"),
    ]:
        lineage = one(sql, dialect)
        assert lineage.outputs is None and lineage.unresolved, sql
    # Other sessions' statement texts (literals included); a cursor's row count.
    for dialect, sql in [
        ("mysql", "SHOW FULL PROCESSLIST"),
        ("mysql", "SHOW PROCESSLIST"),
        ("mysql", "SHOW ENGINE INNODB STATUS"),
        ("postgres", "MOVE ALL IN c"),
    ]:
        assert one(sql, dialect).outputs is None, sql


def test_harmless_star_has_unknown_width_but_is_resolved() -> None:
    lineage = one("SELECT * FROM pg_catalog.pg_class", "postgres")
    assert lineage.outputs is None and not lineage.unresolved
    assert lineage.tables == {("pg_catalog", "pg_class")}


# --------------------------------------------------------------------------- views


def test_view_cycle_and_depth_are_unknown() -> None:
    views = {("public", "v1"): "SELECT a FROM v2", ("public", "v2"): "SELECT a FROM v1"}
    tables = {**TABLES, ("public", "v1"): ("a",), ("public", "v2"): ("a",)}
    cycle = LineageCatalog(tables, views, ("public",))
    lineage = one("SELECT a FROM v1", "postgres", cycle)
    assert lineage.outputs is None and lineage.unresolved

    chain = {("public", f"w{i}"): f"SELECT ssn FROM w{i + 1}" for i in range(12)}
    chain[("public", "w12")] = "SELECT ssn FROM customers"
    deep_tables = {**TABLES, **{key: ("ssn",) for key in chain}}
    deep = LineageCatalog(deep_tables, chain, ("public",))
    assert one("SELECT ssn FROM w0", "postgres", deep).outputs is None
    shallow = one("SELECT ssn FROM w8", "postgres", deep)
    assert shallow.outputs is not None and col("customers.ssn") in shallow.outputs[0]


def test_unparseable_view_is_unknown() -> None:
    views = {("public", "v"): "SELECT ssn FROM customers WHERE ("}
    catalog = LineageCatalog({**TABLES, ("public", "v"): ("ssn",)}, views, ("public",))
    lineage = one("SELECT ssn FROM v", "postgres", catalog)
    assert lineage.outputs is None and lineage.unresolved


def test_view_calling_a_user_function_is_unresolved() -> None:
    views = {("public", "v"): "SELECT secret_of(id) AS s FROM customers"}
    catalog = LineageCatalog({**TABLES, ("public", "v"): ("s",)}, views, ("public",))
    lineage = one("SELECT s FROM v", "postgres", catalog)
    assert lineage.unresolved


# --------------------------------------------------------------------------- statements


@pytest.mark.parametrize("dialect", BOTH)
def test_multi_statement_alignment_with_split(dialect: str) -> None:
    sql = "SELECT ssn FROM customers; ; SELECT 1;BEGIN;SELECT name FROM customers -- done"
    result = statement_lineage(sql, dialect, CATALOGS[dialect])
    assert len(result) == len(split_statements(lex(sql, dialect), dialect)) == 4
    assert [r.outputs for r in result] == [
        (S("customers.ssn"),),
        (NONE,),
        (),
        (S("customers.name"),),
    ]


@pytest.mark.parametrize("dialect", BOTH)
def test_empty_text_has_no_statements(dialect: str) -> None:
    assert statement_lineage("  -- nothing\n ;; ", dialect, CATALOGS[dialect]) == ()


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgres", "SET search_path = public"),
        ("postgres", "SHOW search_path"),
        ("postgres", "BEGIN"),
        ("postgres", "CREATE INDEX i ON customers (ssn)"),
        ("postgres", "CREATE VIEW v AS SELECT ssn FROM customers"),
        ("postgres", "PREPARE p AS SELECT ssn FROM customers"),
        ("postgres", "DEALLOCATE ALL"),
        ("mysql", "SET NAMES utf8mb4"),
        ("mysql", "SET @x = 1"),
        ("mysql", "SHOW TABLES"),
        ("mysql", "DESCRIBE customers"),
        ("mysql", "USE public"),
        ("mysql", "HANDLER customers OPEN"),
    ],
)
def test_statements_without_data(dialect: str, sql: str) -> None:
    assert one(sql, dialect) == StatementLineage((), frozenset(), frozenset(), False)


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgres", "EXPLAIN SELECT ssn FROM customers"),
        ("postgres", "EXPLAIN (ANALYZE, VERBOSE) SELECT ssn FROM customers"),
        ("postgres", "FETCH 10 FROM cur"),
        ("postgres", "EXECUTE p(1)"),
        ("postgres", "CALL proc()"),
        ("postgres", "DO $$ BEGIN RAISE NOTICE 'x'; END $$"),
        ("mysql", "EXPLAIN SELECT ssn FROM customers"),
        ("mysql", "EXPLAIN ANALYZE SELECT ssn FROM customers"),
        ("mysql", "EXECUTE s"),
        ("mysql", "CALL p()"),
        ("mysql", "HANDLER customers READ FIRST"),
        ("postgres", "SELEC ssn FROM customers"),
        ("postgres", "SELECT ssn FROM customers WHERE ("),
        ("postgres", "SELECT 'unterminated"),
        ("mysql", "SELECT ssn FROM customers INTO @x"),
        ("mysql", "SELECT ssn INTO OUTFILE '/tmp/x' FROM customers"),
        ("mysql", "FROBNICATE everything"),
    ],
)
def test_unknown_outputs(dialect: str, sql: str) -> None:
    assert one(sql, dialect).outputs is None


def test_explain_reports_what_the_inner_statement_reads() -> None:
    lineage = one("EXPLAIN ANALYZE SELECT ssn FROM customers", "postgres")
    assert lineage.outputs is None
    assert lineage.reads == S("customers.ssn")


def test_fetch_and_execute_are_unresolved() -> None:
    assert one("FETCH ALL FROM cur", "postgres").unresolved
    assert one("EXECUTE p", "postgres").unresolved


# --------------------------------------------------------------------------- writes


@pytest.mark.parametrize(
    ("dialect", "sql", "writes"),
    [
        (
            "postgres",
            "INSERT INTO orders (id, status) SELECT id, ssn FROM customers",
            ((("public", "orders"), S("customers.id", "customers.ssn")),),
        ),
        (
            "mysql",
            "INSERT INTO orders (id, status) SELECT id, ssn FROM customers",
            ((("public", "orders"), S("customers.id", "customers.ssn")),),
        ),
        (
            "mysql",
            "REPLACE INTO orders (status) SELECT ssn FROM customers",
            ((("public", "orders"), S("customers.ssn")),),
        ),
        (
            "postgres",
            "INSERT INTO orders (status) VALUES ('new')",
            ((("public", "orders"), NONE),),
        ),
        (
            "postgres",
            "UPDATE orders SET status = c.ssn FROM customers c WHERE c.id = orders.customer_id",
            ((("public", "orders"), S("customers.ssn")),),
        ),
        (
            "mysql",
            "UPDATE orders o JOIN customers c ON c.id = o.customer_id SET o.status = c.email",
            ((("public", "orders"), S("customers.email")),),
        ),
        (
            "postgres",
            "CREATE TABLE stolen AS SELECT name, ssn FROM customers",
            ((("public", "stolen"), S("customers.name", "customers.ssn")),),
        ),
        (
            "postgres",
            "CREATE TEMP TABLE stolen AS SELECT ssn FROM customers WITH NO DATA",
            ((("pg_temp", "stolen"), S("customers.ssn")),),
        ),
        (
            "postgres",
            "CREATE MATERIALIZED VIEW billing.mv AS SELECT email FROM customers",
            ((("billing", "mv"), S("customers.email")),),
        ),
        (
            "mysql",
            "CREATE TABLE stolen SELECT ssn FROM customers",
            ((("public", "stolen"), S("customers.ssn")),),
        ),
        (
            "postgres",
            "SELECT ssn, name INTO stolen FROM customers",
            ((("public", "stolen"), S("customers.name", "customers.ssn")),),
        ),
        (
            "postgres",
            "MERGE INTO orders o USING customers c ON o.customer_id = c.id "
            "WHEN MATCHED THEN UPDATE SET status = c.ssn "
            "WHEN NOT MATCHED THEN INSERT (customer_id, status) VALUES (c.id, c.email)",
            ((("public", "orders"), S("customers.ssn", "customers.id", "customers.email")),),
        ),
        (
            "postgres",
            "WITH x AS (INSERT INTO orders (status) SELECT ssn FROM customers RETURNING id) SELECT id FROM x",
            ((("public", "orders"), S("customers.ssn")),),
        ),
        # values stored where the catalog has no table
        ("mysql", "SELECT ssn INTO @x FROM customers", ((UNTRACKED, S("customers.ssn")),)),
        (
            "mysql",
            "SET @x = (SELECT ssn FROM customers LIMIT 1)",
            ((UNTRACKED, S("customers.ssn")),),
        ),
        (
            "mysql",
            "DO @x := (SELECT email FROM customers LIMIT 1)",
            ((UNTRACKED, S("customers.email")),),
        ),
        ("postgres", "COPY customers (ssn) TO '/tmp/ssn.csv'", ((UNTRACKED, S("customers.ssn")),)),
        # columns that decide how many rows come back
        (
            "postgres",
            "SELECT count(*) FROM customers c, generate_series(1, length(c.ssn)) g",
            ((SHAPED, S("customers.ssn")),),
        ),
        (
            "postgres",
            "SELECT id FROM customers LIMIT (SELECT length(email) FROM customers LIMIT 1)",
            ((SHAPED, S("customers.email")),),
        ),
        ("postgres", "SELECT id FROM customers LIMIT 10 OFFSET 5", ()),
    ],
)
def test_writes(dialect: str, sql: str, writes: tuple[object, ...]) -> None:
    lineage = one(sql, dialect)
    assert not lineage.unresolved, lineage
    assert lineage.writes == writes


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("mysql", "SELECT @x := ssn FROM customers"),
        ("postgres", "SELECT set_config('app.x', ssn, false) FROM customers"),
        ("postgres", "SELECT pg_notify('ch', ssn) FROM customers"),
    ],
)
def test_values_stored_in_session_state_are_untracked_writes(dialect: str, sql: str) -> None:
    lineage = one(sql, dialect)
    assert lineage.outputs == (S("customers.ssn"),)
    assert lineage.writes == ((UNTRACKED, S("customers.ssn")),)


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgres", "ALTER TABLE customers ALTER COLUMN name TYPE text USING ssn"),
        ("postgres", "ALTER TABLE customers ADD COLUMN c text GENERATED ALWAYS AS (ssn) STORED"),
        ("mysql", "ALTER TABLE customers ADD COLUMN c VARCHAR(20) AS (ssn)"),
    ],
)
def test_ddl_that_copies_values_between_columns_is_unresolved(dialect: str, sql: str) -> None:
    lineage = one(sql, dialect)
    assert lineage.outputs == () and lineage.unresolved


def test_select_into_temp_table() -> None:
    lineage = one("SELECT ssn INTO TEMP stolen FROM customers", "postgres")
    assert lineage.writes == ((("pg_temp", "stolen"), S("customers.ssn")),)


def test_create_table_as_reports_reads_and_no_rows() -> None:
    lineage = one("CREATE TABLE stolen AS SELECT ssn FROM customers", "postgres")
    assert lineage.outputs == ()
    assert lineage.reads == S("customers.ssn")


# --------------------------------------------------------------------------- RETURNING, COPY


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "INSERT INTO orders (id, status) SELECT id, ssn FROM customers RETURNING id, status",
            [S("orders.id", "customers.id"), S("orders.status", "customers.ssn")],
        ),
        (
            "UPDATE orders SET status = c.ssn FROM customers c WHERE c.id = orders.customer_id RETURNING orders.status, amount",
            [S("orders.status", "customers.ssn"), S("orders.amount")],
        ),
        ("DELETE FROM orders WHERE id = 1 RETURNING *", STAR_ORDERS),
        (
            "INSERT INTO orders AS o (id, status) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET status = excluded.status || o.amount RETURNING status",
            [S("orders.status", "orders.amount")],
        ),
        ("COPY (SELECT ssn FROM customers) TO STDOUT", [S("customers.ssn")]),
        (
            "COPY customers (name, ssn) TO STDOUT WITH (FORMAT csv)",
            [S("customers.name"), S("customers.ssn")],
        ),
    ],
)
def test_returning_and_copy_outputs(sql: str, expected: list[frozenset[SourceColumn]]) -> None:
    assert outputs(sql, "postgres") == expected


def test_declare_cursor_reads_but_returns_nothing() -> None:
    lineage = one("DECLARE cur CURSOR WITH HOLD FOR SELECT ssn FROM customers", "postgres")
    assert lineage.outputs == ()
    assert lineage.reads == S("customers.ssn")
    assert not lineage.unresolved


# --------------------------------------------------------------------------- robustness

SQL_WORDS = st.sampled_from(
    [
        "SELECT", "FROM", "WHERE", "JOIN", "ON", "USING", "(", ")", ",", ";", ".", "*", "customers",
        "orders", "c", "ssn", "name", "id", "count", "row_to_json", "WITH", "RECURSIVE", "AS",
        "UNION", "ALL", "VALUES", "INSERT", "INTO", "UPDATE", "SET", "=", "RETURNING", "LATERAL",
        "'x'", "1", "||", "::", "text", "CASE", "WHEN", "THEN", "END", "OVER", "PARTITION", "BY",
        "EXPLAIN", "CREATE", "TABLE", "customer_contacts", "billing", "accounts", "@x", ":=",
        "`ssn`", '"ssn"', "$1", "?", "--", "/*", "*/", "\n",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200), dialect=st.sampled_from(BOTH))
def test_never_raises_on_arbitrary_text(text: str, dialect: str) -> None:
    result = statement_lineage(text, dialect, CATALOGS[dialect])
    assert isinstance(result, tuple)
    assert all(isinstance(r, StatementLineage) for r in result)


@settings(max_examples=400, deadline=None)
@given(words=st.lists(SQL_WORDS, max_size=40), dialect=st.sampled_from(BOTH))
def test_never_raises_on_sql_like_text(words: list[str], dialect: str) -> None:
    text = " ".join(words)
    result = statement_lineage(text, dialect, CATALOGS[dialect])
    try:
        statements = split_statements(lex(text, dialect), dialect)
    except Exception:
        assert len(result) == 1 and result[0].outputs is None and result[0].unresolved
        return
    assert len(result) == len(statements)
    for stmt, r in zip(statements, result, strict=True):
        assert r.outputs is None or all(isinstance(o, frozenset) for o in r.outputs)
        assert all(isinstance(target, tuple) and len(target) == 2 for target, _ in r.writes)
        if r.outputs is None and not r.unresolved:
            # Only a plan, or a * over a harmless system table, is unknown yet resolved.
            assert stmt.kw(0) == "EXPLAIN" or r.tables, stmt.text
