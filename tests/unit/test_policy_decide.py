"""Decisions: union of policies, deny over allow, review, unknown, built-in and custom rules,
SQL-level PREPARE / EXECUTE per session, fast-path function calls, digests."""

from __future__ import annotations

import pytest

from gateway.policy import (
    BUILTIN_RULES,
    CLASSES,
    Decision,
    PolicyEngine,
    PolicySpec,
    RuleSpec,
    SessionPolicy,
)


def session(*specs: PolicySpec, dialect: str = "postgres") -> SessionPolicy:
    return PolicyEngine.build(specs, dialect).session()


def spec(
    allow: tuple[str, ...] = (),
    deny: tuple[str, ...] = (),
    review: tuple[str, ...] = (),
    rules: tuple[RuleSpec, ...] = (),
    name: str = "p",
) -> PolicySpec:
    return PolicySpec(name=name, allow=allow, deny=deny, review=review, rules=rules)


def check(s: SessionPolicy, sql: str) -> tuple[str, str | None]:
    d = s.check_query(sql)
    return d.action, d.rule


# --------------------------------------------------------------------------- model


def test_public_vocabulary() -> None:
    assert {
        "read",
        "write",
        "ddl",
        "dcl",
        "transaction",
        "session",
        "privilege",
        "export",
        "import",
        "file",
        "dynamic",
        "admin",
        "unknown",
    } == CLASSES
    for name in (
        "drop_database",
        "drop_table",
        "truncate",
        "delete_without_where",
        "update_without_where",
        "copy_to_stdout",
        "copy_program",
        "file_access",
        "alter_system",
    ):
        assert name in BUILTIN_RULES


def test_allowed_class() -> None:
    s = session(spec(allow=("read",)))
    d = s.check_query("SELECT * FROM t WHERE id = 1")
    assert d == Decision("allow", "allow:read", "statement allowed", frozenset({"read"}))


def test_class_not_allowed() -> None:
    s = session(spec(allow=("read",)))
    d = s.check_query("DELETE FROM t WHERE id = 1")
    assert d.action == "deny"
    assert d.rule == "class:write not allowed"
    assert d.message == 'statement denied by gateway policy (class "write" is not allowed)'
    assert d.classes == {"write"}


def test_union_of_policies() -> None:
    s = session(spec(allow=("read",), name="a"), spec(allow=("write",), name="b"))
    assert check(s, "SELECT 1")[0] == "allow"
    assert check(s, "INSERT INTO t VALUES (1)")[0] == "allow"
    assert check(s, "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d") == (
        "allow",
        "allow:read+write",
    )
    assert check(s, "DROP TABLE t") == ("deny", "class:ddl not allowed")


def test_deny_is_a_union_and_wins_over_any_allow() -> None:
    strict = spec(allow=("read",), deny=("drop_table",), name="strict")
    broad = spec(allow=("*",), name="broad")
    s = session(strict, broad)
    assert check(s, "DROP TABLE t") == ("deny", "deny:drop_table")
    assert check(s, "DROP VIEW v") == ("allow", "allow:ddl")


def test_deny_message_names_the_rule() -> None:
    s = session(spec(allow=("*",), deny=("drop_database",)))
    d = s.check_query("DROP DATABASE prod")
    assert d.message == 'statement denied by gateway policy (rule "drop_database")'


def test_every_class_needs_allowing_but_transaction() -> None:
    s = session(spec(allow=()))
    for sql in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT a", "START TRANSACTION"):
        assert check(s, sql) == ("allow", "allow:transaction")
    for sql, cls in (
        ("SELECT 1", "read"),
        ("SET work_mem = '1MB'", "session"),
        ("SET ROLE admin", "privilege"),
        ("VACUUM", "admin"),
        ("DO $$ BEGIN END $$", "dynamic"),
        ("GRANT SELECT ON t TO u", "dcl"),
        ("COPY t FROM STDIN", "import"),
    ):
        assert check(s, sql) == ("deny", f"class:{cls} not allowed"), sql


def test_transaction_can_be_denied_by_a_rule() -> None:
    rule = RuleSpec("no-tx", classes=("transaction",))
    s = session(spec(allow=("read",), deny=("no-tx",), rules=(rule,)))
    assert check(s, "BEGIN") == ("deny", "rule:no-tx")


def test_star_does_not_include_unknown() -> None:
    s = session(spec(allow=("*",)))
    d = s.check_query("FROBNICATE the database")
    assert (d.action, d.rule) == ("deny", "class:unknown not allowed")
    assert "could not classify" in d.message
    assert check(s, "SELECT 'open")[1] == "class:unknown not allowed"
    s2 = session(spec(allow=("*", "unknown")))
    assert check(s2, "FROBNICATE the database")[0] == "allow"


def test_unknown_alone_in_a_mixed_string_denies_it() -> None:
    s = session(spec(allow=("*",)))
    assert check(s, "SELECT 1; FROBNICATE; SELECT 2") == ("deny", "class:unknown not allowed")


def test_copy_needs_export_and_read() -> None:
    s = session(spec(allow=("read",)))
    assert check(s, "COPY t TO STDOUT") == ("deny", "class:export not allowed")
    s = session(spec(allow=("read", "export")))
    assert check(s, "COPY t TO STDOUT")[0] == "allow"
    s = session(spec(allow=("read", "export"), deny=("copy_to_stdout",)))
    assert check(s, "COPY t TO STDOUT") == ("deny", "deny:copy_to_stdout")
    s = session(spec(allow=("*",), deny=("copy_program",)))
    assert check(s, "COPY t FROM PROGRAM 'id'") == ("deny", "deny:copy_program")
    assert check(s, "COPY t FROM STDIN")[0] == "allow"


def test_file_access_rule() -> None:
    s = session(spec(allow=("*",), deny=("file_access",)))
    assert check(s, "SELECT pg_read_file('/etc/passwd')") == ("deny", "deny:file_access")
    assert check(s, "COPY t TO '/tmp/x'") == ("deny", "deny:file_access")
    assert check(s, "SELECT 1")[0] == "allow"


def test_class_denial_prefers_the_most_specific_class() -> None:
    s = session(spec(allow=()))
    assert check(s, "SELECT pg_read_file('x')") == ("deny", "class:file not allowed")


@pytest.mark.parametrize(
    ("sql", "action"),
    [
        ("DELETE FROM t", "deny"),
        ("DELETE FROM t WHERE 1=1", "deny"),
        ("delete from t where id = 7", "allow"),
        ("UPDATE t SET a = 1", "deny"),
        ("UPDATE t SET a = 1 WHERE id = 7", "allow"),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "deny"),
        ("EXPLAIN ANALYZE DELETE FROM t", "deny"),
        ("EXPLAIN DELETE FROM t", "allow"),
        ("PREPARE p AS DELETE FROM t", "deny"),
        ("TRUNCATE t", "deny"),
    ],
)
def test_where_rules(sql: str, action: str) -> None:
    s = session(
        spec(
            allow=("read", "write"),
            deny=("delete_without_where", "update_without_where", "truncate"),
        )
    )
    assert check(s, sql)[0] == action


def test_multi_statement_names_the_first_offender() -> None:
    s = session(spec(allow=("read",), deny=("drop_database",)))
    d = s.check_query("SELECT 1; DROP TABLE t; DROP DATABASE d")
    assert d.action == "deny"
    assert d.rule == "class:ddl not allowed"
    assert d.message.startswith("statement 2 of 3 denied by gateway policy")
    assert d.classes == {"read", "ddl"}


def test_messages_never_echo_the_statement() -> None:
    s = session(spec(allow=("read",)))
    d = s.check_query("UPDATE users SET password = 'hunter2-secret' WHERE name = 'alice'")
    assert "hunter2" not in d.message and "alice" not in d.message and "users" not in d.message


# --------------------------------------------------------------------------- review


def test_review_class() -> None:
    s = session(spec(allow=("read", "ddl"), review=("ddl",)))
    d = s.check_query("CREATE TABLE t (a int)")
    assert d.action == "review"
    assert d.rule == "review:ddl"
    assert d.message == 'statement requires approval (rule "ddl")'
    assert check(s, "SELECT 1")[0] == "allow"


def test_deny_wins_over_review_and_review_over_allow() -> None:
    s = session(spec(allow=("*",), deny=("drop_table",), review=("ddl", "truncate")))
    assert check(s, "DROP TABLE t") == ("deny", "deny:drop_table")
    assert check(s, "DROP VIEW v") == ("review", "review:ddl")
    assert check(s, "TRUNCATE t") == ("review", "review:truncate")
    assert check(s, "SELECT 1")[0] == "allow"


def test_a_class_that_is_not_allowed_is_denied_not_reviewed() -> None:
    s = session(spec(allow=("read",), name="a"), spec(allow=("read",), review=("write",), name="b"))
    assert check(s, "INSERT INTO t VALUES (1)") == ("deny", "class:write not allowed")


def test_review_custom_rule_and_multi_statement() -> None:
    rule = RuleSpec("payroll", tables=("payroll",))
    s = session(spec(allow=("read",), review=("payroll",), rules=(rule,)))
    d = s.check_query("SELECT 1; SELECT * FROM payroll")
    assert (d.action, d.rule) == ("review", "rule:payroll")
    assert d.message.startswith("statement 2 of 2 requires approval")
    # a deny later in the same text still wins
    d = s.check_query("SELECT * FROM payroll; DELETE FROM t WHERE id = 1")
    assert d.action == "deny"


# --------------------------------------------------------------------------- custom rules


def table_rule(*tables: str) -> PolicySpec:
    return spec(allow=("*",), deny=("r",), rules=(RuleSpec("r", tables=tables),))


@pytest.mark.parametrize(
    ("pattern", "sql", "action"),
    [
        ("payroll", "SELECT * FROM payroll", "deny"),
        ("payroll", "SELECT * FROM PAYROLL", "deny"),
        ("payroll", "SELECT * FROM hr.payroll", "deny"),
        ("payroll", 'SELECT * FROM "payroll"', "deny"),
        ("payroll", 'SELECT * FROM "Payroll"', "allow"),  # a different table in PostgreSQL
        ('"Payroll"', 'SELECT * FROM "Payroll"', "deny"),
        ('"Payroll"', "SELECT * FROM Payroll", "allow"),  # folds to payroll
        ("payroll", 'SELECT * FROM U&"p\\0061yroll"', "deny"),
        ("payroll", "SELECT * FROM x WHERE id IN (SELECT id FROM payroll)", "deny"),
        ("payroll", "WITH p AS (SELECT * FROM payroll) SELECT * FROM p", "deny"),
        ("payroll", "SELECT * FROM a JOIN payroll ON true", "deny"),
        ("payroll", "UPDATE payroll SET a = 1 WHERE id = 2", "deny"),
        ("payroll", "DELETE FROM x USING payroll WHERE x.id = payroll.id", "deny"),
        ("payroll", "COPY payroll TO STDOUT", "deny"),
        ("payroll", "COPY (SELECT * FROM payroll) TO STDOUT", "deny"),
        ("payroll", "EXPLAIN SELECT * FROM payroll", "deny"),
        ("payroll", "CREATE VIEW v AS SELECT * FROM payroll", "deny"),
        ("payroll", "LOCK TABLE payroll", "deny"),
        ("payroll", "SELECT * FROM payroll_archive", "allow"),
        ("payroll", "SELECT 'payroll'", "allow"),
        ("payroll", "SELECT payroll FROM t", "allow"),
        ("hr.payroll", "SELECT * FROM hr.payroll", "deny"),
        ("hr.payroll", "SELECT * FROM payroll", "deny"),  # unqualified: may resolve into hr
        ("hr.payroll", "SELECT * FROM public.payroll", "allow"),
        ("hr.*", "SELECT * FROM hr.anything", "deny"),
        ("hr.*", "SELECT * FROM HR.anything", "deny"),
        ("hr.*", "SELECT * FROM public.anything", "allow"),
        ("hr.*", "SELECT * FROM anything", "allow"),
        ("p" * 63, "SELECT * FROM " + "p" * 70, "deny"),  # PostgreSQL truncates to 63 bytes
    ],
)
def test_table_matcher_postgres(pattern: str, sql: str, action: str) -> None:
    s = session(table_rule(pattern))
    assert check(s, sql)[0] == action


@pytest.mark.parametrize(
    ("pattern", "sql", "action"),
    [
        ("payroll", "SELECT * FROM `Payroll`", "deny"),  # lower_case_table_names
        ("hr.payroll", "SELECT * FROM HR.PAYROLL", "deny"),
        ("hr.*", "SELECT * FROM `hr`.`x`", "deny"),
        ("payroll", "REPLACE INTO payroll VALUES (1)", "deny"),
        ("payroll", "HANDLER payroll OPEN", "deny"),
        ("payroll", "SELECT * FROM payroll INTO OUTFILE '/tmp/x'", "deny"),
        ("payroll", "SELECT * FROM other", "allow"),
    ],
)
def test_table_matcher_mysql(pattern: str, sql: str, action: str) -> None:
    s = session(table_rule(pattern), dialect="mysql")
    assert check(s, sql)[0] == action


def test_schema_matcher() -> None:
    rule = RuleSpec("hr", schemas=("hr",))
    s = session(spec(allow=("*",), deny=("hr",), rules=(rule,)))
    assert check(s, "SELECT * FROM hr.payroll") == ("deny", "rule:hr")
    assert check(s, "SET search_path TO hr, public") == ("deny", "rule:hr")
    assert check(s, "SELECT set_config('search_path', 'hr', false)") == ("deny", "rule:hr")
    assert check(s, "DROP SCHEMA hr CASCADE") == ("deny", "rule:hr")
    assert check(s, "SELECT hr.calc(1)") == ("deny", "rule:hr")
    assert check(s, "SELECT * FROM public.t")[0] == "allow"
    my = session(spec(allow=("*",), deny=("hr",), rules=(rule,)), dialect="mysql")
    assert check(my, "USE hr") == ("deny", "rule:hr")
    assert check(my, "SELECT * FROM HR.t") == ("deny", "rule:hr")


def test_function_matcher() -> None:
    rule = RuleSpec("no-dump", functions=("pg_dump_rows", "LOWER"))
    s = session(spec(allow=("*",), deny=("no-dump",), rules=(rule,)))
    assert check(s, "SELECT pg_dump_rows()") == ("deny", "rule:no-dump")
    assert check(s, "SELECT x.Lower(a) FROM t") == ("deny", "rule:no-dump")
    assert check(s, "SELECT upper(a) FROM t")[0] == "allow"
    assert check(s, "SELECT 'lower(a)'")[0] == "allow"


def test_kind_and_class_matchers_combine() -> None:
    rules = (
        RuleSpec("no-drop-tables", kinds=("DROP TABLE",)),
        RuleSpec("payroll-writes", classes=("write",), tables=("payroll",)),
    )
    s = session(spec(allow=("*",), deny=("no-drop-tables", "payroll-writes"), rules=rules))
    assert check(s, "DROP TABLE x") == ("deny", "rule:no-drop-tables")
    assert check(s, "DROP VIEW x")[0] == "allow"
    assert check(s, "UPDATE payroll SET a = 1 WHERE id = 1") == ("deny", "rule:payroll-writes")
    assert check(s, "SELECT * FROM payroll")[0] == "allow"
    assert check(s, "INSERT INTO other SELECT * FROM payroll") == ("deny", "rule:payroll-writes")


def test_rules_see_through_explain_analyze_and_prepare() -> None:
    rule = RuleSpec("no-delete", kinds=("DELETE",))
    s = session(spec(allow=("*",), deny=("no-delete",), rules=(rule,)))
    assert check(s, "EXPLAIN ANALYZE DELETE FROM t WHERE id = 1") == ("deny", "rule:no-delete")
    assert check(s, "PREPARE p AS DELETE FROM t WHERE id = $1") == ("deny", "rule:no-delete")
    assert check(s, "EXPLAIN DELETE FROM t WHERE id = 1")[0] == "allow"


# --------------------------------------------------------------------------- PREPARE/EXECUTE


def test_prepare_then_execute() -> None:
    s = session(spec(allow=("read",)))
    assert check(s, "PREPARE q AS SELECT * FROM t WHERE id = $1") == ("allow", "allow:read")
    assert check(s, "EXECUTE q(1)") == ("allow", "allow:read")
    assert check(s, "EXECUTE Q(2)") == ("allow", "allow:read")  # names fold
    assert s.prepared_names == {"q"}


def test_execute_of_an_unknown_name_is_unknown() -> None:
    s = session(spec(allow=("*",)))
    assert check(s, "EXECUTE nothing") == ("deny", "class:unknown not allowed")


def test_explain_execute_names_its_statement_as_execute_does() -> None:
    """EXPLAIN EXECUTE evaluates the arguments (their function classes count) and names a
    prepared statement: one the session never prepared is unknown."""
    s = session(spec(allow=("read",)))
    assert check(s, "EXPLAIN EXECUTE nothing(1)") == ("deny", "class:unknown not allowed")
    assert check(s, "PREPARE q AS SELECT * FROM t WHERE id = $1") == ("allow", "allow:read")
    assert check(s, "EXPLAIN EXECUTE q(1)") == ("allow", "allow:read")
    assert check(s, "EXPLAIN EXECUTE q(nextval('s'))") == ("deny", "class:write not allowed")


def test_a_denied_prepare_is_not_remembered() -> None:
    s = session(spec(allow=("read",)))
    assert check(s, "PREPARE d AS DELETE FROM t") == ("deny", "class:write not allowed")
    assert check(s, "EXECUTE d") == ("deny", "class:unknown not allowed")
    assert s.prepared_names == frozenset()


def test_prepare_allowed_only_if_its_body_is() -> None:
    s = session(spec(allow=("read", "write"), deny=("truncate",)))
    assert check(s, "PREPARE x AS TRUNCATE t") == ("deny", "deny:truncate")


def test_prepare_and_execute_in_one_string() -> None:
    s = session(spec(allow=("read", "write")))
    d = s.check_query("PREPARE w AS INSERT INTO t VALUES ($1); EXECUTE w(1); EXECUTE w(2)")
    assert (d.action, d.classes) == ("allow", {"write"})
    assert s.prepared_names == {"w"}
    read_only = session(spec(allow=("read",)))
    d = read_only.check_query("PREPARE w AS INSERT INTO t VALUES (1); EXECUTE w")
    assert d.action == "deny" and read_only.prepared_names == frozenset()


def test_execute_is_judged_as_its_body() -> None:
    s = session(spec(allow=("read", "write"), name="a"))
    s.check_query("PREPARE ins AS INSERT INTO t VALUES ($1)")
    d = s.check_query("EXECUTE ins(5)")
    assert (d.action, d.classes) == ("allow", {"write"})
    assert check(s, "EXECUTE ins(pg_read_file('/etc/passwd'))") == (
        "deny",
        "class:file not allowed",
    )
    assert check(s, "EXPLAIN ANALYZE EXECUTE ins(1)") == ("allow", "allow:write")


def test_deallocate_discard_and_reset() -> None:
    s = session(spec(allow=("read", "session")))
    s.check_query("PREPARE a AS SELECT 1")
    s.check_query("PREPARE b AS SELECT 2")
    assert check(s, "DEALLOCATE a")[0] == "allow"
    assert s.prepared_names == {"b"}
    assert check(s, "EXECUTE a") == ("deny", "class:unknown not allowed")
    assert check(s, "DISCARD ALL")[0] == "allow"
    assert s.prepared_names == frozenset()
    s.check_query("PREPARE c AS SELECT 3")
    assert check(s, "DEALLOCATE ALL; PREPARE d AS SELECT 4")[0] == "allow"
    assert s.prepared_names == {"d"}
    s.reset()
    assert s.prepared_names == frozenset()
    assert check(s, "EXECUTE d") == ("deny", "class:unknown not allowed")


def test_sessions_do_not_share_prepared_names() -> None:
    engine = PolicyEngine.build([spec(allow=("read",))], "postgres")
    one, two = engine.session(), engine.session()
    one.check_query("PREPARE p AS SELECT 1")
    assert check(one, "EXECUTE p")[0] == "allow"
    assert check(two, "EXECUTE p") == ("deny", "class:unknown not allowed")


def test_same_execute_text_is_decided_per_session() -> None:
    engine = PolicyEngine.build([spec(allow=("read", "write"))], "postgres")
    reader, writer = engine.session(), engine.session()
    reader.check_query("PREPARE p AS SELECT 1")
    writer.check_query("PREPARE p AS INSERT INTO t VALUES (1)")
    assert reader.check_query("EXECUTE p").classes == {"read"}
    assert writer.check_query("EXECUTE p").classes == {"write"}
    assert reader.check_query("EXECUTE p").classes == {"read"}


def test_mysql_prepare_execute() -> None:
    s = session(spec(allow=("read", "session")), dialect="mysql")
    assert check(s, "PREPARE s1 FROM 'SELECT * FROM t WHERE id = ?'")[0] == "allow"
    assert check(s, "EXECUTE s1 USING @id") == ("allow", "allow:read")
    assert check(s, "PREPARE s2 FROM 'DELETE FROM t'") == ("deny", "class:write not allowed")
    assert check(s, "PREPARE s3 FROM @sql") == ("deny", "class:dynamic not allowed")
    assert check(s, "DEALLOCATE PREPARE s1")[0] == "allow"
    assert check(s, "EXECUTE s1") == ("deny", "class:unknown not allowed")
    dyn = session(spec(allow=("read", "dynamic")), dialect="mysql")
    dyn.check_query("PREPARE s3 FROM @sql")
    assert check(dyn, "EXECUTE s3") == ("allow", "allow:dynamic")


# --------------------------------------------------------------------------- fast path, digest


def test_function_call_is_dynamic() -> None:
    assert session(spec(allow=("read",))).check_function_call().action == "deny"
    assert session(spec(allow=("read",))).check_function_call().rule == "class:dynamic not allowed"
    assert session(spec(allow=("dynamic",))).check_function_call().action == "allow"
    assert session(spec(allow=("*",))).check_function_call().action == "allow"


def test_digest_is_stable_and_order_independent() -> None:
    rules = (RuleSpec("r", tables=("payroll",)), RuleSpec("s", kinds=("DROP TABLE",)))
    a = spec(allow=("read", "write"), deny=("r", "s", "truncate"), rules=rules, name="a")
    b = spec(allow=("write", "read"), deny=("truncate", "s", "r"), rules=rules[::-1], name="b")
    pg = PolicyEngine.build([a], "postgres")
    assert len(pg.digest) == 64
    assert pg.digest == PolicyEngine.build([b], "postgres").digest
    assert pg.digest != PolicyEngine.build([a], "mysql").digest
    assert pg.digest != PolicyEngine.build([spec(allow=("read",))], "postgres").digest


def test_build_rejects_what_validation_would() -> None:
    with pytest.raises(ValueError, match="unknown class"):
        PolicyEngine.build([spec(allow=("reed",))], "postgres")
    with pytest.raises(ValueError, match="unknown rule"):
        PolicyEngine.build([spec(allow=("read",), deny=("nope",))], "postgres")
    with pytest.raises(ValueError, match="dialect"):
        PolicyEngine.build([spec(allow=("read",))], "oracle")
    with pytest.raises(ValueError, match="no matcher"):
        PolicyEngine.build([spec(allow=("read",), deny=("x",), rules=(RuleSpec("x"),))], "postgres")


# --------------------------------------------------------------------------- reviewed bypasses

READ_ONLY = spec(
    allow=("read",),
    deny=("delete_without_where", "update_without_where", "drop_table", "file_access", "kill"),
    name="read",
)
READ_SESSION = spec(allow=("read", "session"), name="read+session")


@pytest.mark.parametrize(
    ("policy", "dialect", "sql"),
    [
        # F1: executable comments a server skips end at their first */, quotes or not
        (READ_ONLY, "mysql", "SELECT 1 /*!999999 '*/; DELETE FROM t; SELECT 1 /*'*/"),
        (READ_ONLY, "mysql", "SELECT 1 /*M! '*/; DROP TABLE t; SELECT 1 /*'*/"),
        (
            READ_ONLY,
            "mysql",
            "SHOW TABLES /*!999999 '*/; GRANT ALL ON *.* TO app; SHOW TABLES /*'*/",
        ),
        # F2: "--" + DEL (and "--" + non-ASCII) starts a comment on the server
        (READ_ONLY, "mysql", "SHOW TABLES --\x7f '\n; DELETE FROM t; -- '"),
        (READ_ONLY, "mysql", "DO 1 --\x7f '\n; UPDATE t SET a = 1; -- '"),
        (READ_ONLY, "mysql", "SHOW TABLES --\x80 '\n; DELETE FROM t; -- '"),
        # F3: a literal continued on another line keeps the first one's escapes
        (READ_SESSION, "postgres", "SET application_name = E'x'\n'\\' , '; DELETE FROM t; --'"),
        (spec(allow=()), "postgres", "PREPARE TRANSACTION E'x'\n'\\' '; DELETE FROM t; --'"),
        # F4: /*!500000x...*/ is 0x... (a string) to MySQL, a word to a 6-digit reading
        (READ_SESSION, "mysql", "SET sql_mode = /*!500000x414E53495F51554F544553*/"),
        # F5: EXPLAIN ANALYZE FOR SCHEMA db <statement> runs the statement
        (READ_ONLY, "mysql", "EXPLAIN ANALYZE FOR SCHEMA db DELETE t FROM t JOIN u ON t.id = u.id"),
        (READ_ONLY, "mysql", "EXPLAIN ANALYZE FOR DATABASE db UPDATE t SET a = 1 WHERE id = 2"),
        # F6: functions with lasting side effects
        (READ_ONLY, "postgres", "SELECT nextval('orders_id_seq')"),
        (READ_ONLY, "postgres", "SELECT pg_logical_slot_get_changes('slot', NULL, NULL)"),
        (READ_ONLY, "postgres", "SELECT pg_logical_slot_get_binary_changes('slot', NULL, NULL)"),
        (READ_ONLY, "mysql", "SELECT NEXTVAL(s)"),
        (READ_ONLY, "mysql", "SELECT SETVAL(s, 100)"),
        (READ_ONLY, "mysql", "DO NEXT VALUE FOR s"),
        (READ_ONLY, "mysql", "SELECT NEXT VALUE FOR s"),
        # second review, A: EXPLAIN option names are identifiers ("analyze" runs it)
        (READ_ONLY, "postgres", 'EXPLAIN ("analyze") DELETE FROM t'),
        (READ_ONLY, "postgres", 'EXPLAIN (U&"analyze", costs off) DELETE FROM t'),
        (READ_ONLY, "postgres", "EXPLAIN (\"analyze\") SELECT set_config('role','low',false)"),
        (READ_ONLY, "postgres", "EXPLAIN (\"analyze\") SELECT lo_import('/etc/hostname', 4242)"),
        (READ_ONLY, "postgres", 'PREPARE p AS EXPLAIN ("analyze") DELETE FROM t'),
        (READ_ONLY, "postgres", "EXPLAIN (frobnicate) DELETE FROM t"),
        # B: a skipped executable comment allows one nested /* */, even inside a quote
        (READ_ONLY, "mysql", "SELECT 1 /*!99999 '/*' */ , ' */ ; DELETE FROM t; -- '"),
        (READ_ONLY, "mysql", "SELECT 1 /*M!999999 '/*' */ , ' */ ; DELETE FROM t; -- '"),
        (
            READ_ONLY,
            "mysql",
            "SELECT 1 /*!50700 `/*` */ , ' */ ; GRANT ALL ON *.* TO x@'%'; -- '",
        ),
        # C: MariaDB EXECUTE IMMEDIATE runs the text of an expression
        (READ_ONLY, "mysql", "EXECUTE IMMEDIATE 'DELETE FROM t'"),
        (
            READ_ONLY,
            "mysql",
            "PREPARE immediate FROM 'SELECT 1'; EXECUTE IMMEDIATE CONCAT('DROP ', 'TABLE t')",
        ),
        # D: UESCAPE in any but the simple form
        (
            READ_ONLY,
            "postgres",
            "EXECUTE p(U&\"pg!005fread!005ffile\" UESCAPE E'!' ('/etc/passwd'))",
        ),
        (
            READ_ONLY,
            "postgres",
            "EXECUTE p(U&\"set!005fconfig\" /**/ UESCAPE '!' ('role','postgres',false))",
        ),
        (READ_SESSION, "postgres", "RESET U&\"rol!0065\" /**/ UESCAPE '!'"),
        (READ_SESSION, "postgres", 'RESET U&"session!005fauthorization" UESCAPE $$!$$'),
        (READ_SESSION, "postgres", "RESET work_mem role"),
        # E: functions that run SQL text, change state or read server files
        (
            READ_ONLY,
            "postgres",
            "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, plainto_tsquery(''simple'', "
            "pg_read_file(''/etc/passwd''))')",
        ),
        (
            READ_ONLY,
            "postgres",
            "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, "
            "set_config(''role'',''postgres'',false)::tsquery')",
        ),
        (READ_ONLY, "postgres", "SELECT pg_logical_emit_message(false, 'p', 'x')"),
        (READ_ONLY, "postgres", "SELECT brin_summarize_new_values('i'::regclass)"),
        (READ_ONLY, "postgres", "SELECT gin_clean_pending_list('i'::regclass)"),
        (READ_ONLY, "postgres", "SELECT pg_replication_origin_create('o')"),
        (READ_ONLY, "postgres", "SELECT pg_import_system_collations('public')"),
        (READ_ONLY, "postgres", "SELECT pg_stat_reset_subscription_stats(NULL)"),
        (READ_ONLY, "postgres", "SELECT * FROM pg_hba_file_rules()"),
    ],
)
def test_reviewed_bypasses_are_denied(policy: PolicySpec, dialect: str, sql: str) -> None:
    s = session(policy, dialect=dialect)
    for _ in range(2):  # the second time through the caches
        assert s.check_query(sql).action == "deny", sql


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("mysql", "SELECT 1 /*!50000 STRAIGHT_JOIN */"),
        ("mysql", "SELECT /*!50000 STRAIGHT_JOIN */ a FROM t"),
        ("mysql", "/*!40101 SET NAMES utf8 */"),
        ("mysql", "/*!40101 SET @saved = @@session.autocommit */"),
        ("mysql", "SELECT 1 -- comment"),
        ("mysql", "SELECT 1 --\x7f comment"),
        ("mysql", "SELECT 'a' 'b'"),
        ("mysql", "EXPLAIN ANALYZE SELECT * FROM t"),
        ("mysql", "EXPLAIN FOR SCHEMA db SELECT * FROM t"),
        ("mysql", "EXPLAIN ANALYZE FOR SCHEMA db SELECT * FROM t"),
        ("mysql", "SELECT LASTVAL(s)"),
        ("postgres", "SELECT 'a' 'b'"),
        ("postgres", "SELECT E'a\\'b'"),
        ("postgres", "SELECT 'a',\n'b'"),
        ("postgres", "EXPLAIN ANALYZE SELECT * FROM t"),
        ("postgres", "SELECT currval('s')"),
        ("postgres", "SET application_name = 'x'"),
        # second review
        ("postgres", "EXPLAIN (ANALYZE false) SELECT 1"),
        ("postgres", "EXPLAIN (COSTS off) SELECT 1"),
        ("postgres", "EXPLAIN (COSTS off, FORMAT json) DELETE FROM t"),
        ("postgres", 'EXPLAIN ("costs" off) DELETE FROM t'),
        ("postgres", "SELECT U&\"d!0061t!+000061\" UESCAPE '!' FROM t"),
        ("postgres", "RESET work_mem"),
        ("postgres", "RESET myext.setting"),
        ("postgres", "SELECT to_tsquery('a & b')"),
        ("mysql", "SELECT /*!50000 STRAIGHT_JOIN */ a FROM t /* /* */"),
    ],
)
def test_neighbours_of_the_reviewed_bypasses_still_pass(dialect: str, sql: str) -> None:
    s = session(spec(allow=("read", "session")), dialect=dialect)
    for _ in range(2):
        assert s.check_query(sql).action == "allow", sql


def test_execute_after_prepare_of_the_reviewed_bypasses() -> None:
    pg = session(spec(allow=("read",)))
    assert check(pg, "PREPARE p(text) AS SELECT $1") == ("allow", "allow:read")
    for sql in (
        "EXECUTE p(U&\"pg!005fread!005ffile\" UESCAPE E'!' ('/etc/passwd'))",
        "EXECUTE p(U&\"set!005fconfig\" /**/ UESCAPE '!' ('role','postgres',false))",
        "EXECUTE p('x') x",
    ):
        assert pg.check_query(sql).action == "deny", sql
    assert check(pg, "EXECUTE p(U&\"d!0061t!+000061\" UESCAPE '!')") == ("allow", "allow:read")
    my = session(spec(allow=("read",)), dialect="mysql")
    assert check(my, "PREPARE immediate FROM 'SELECT 1'") == ("allow", "allow:read")
    assert check(my, "EXECUTE IMMEDIATE 'DELETE FROM t'") == ("deny", "class:dynamic not allowed")
    assert check(my, "EXECUTE `immediate`") == ("allow", "allow:read")
    assert check(my, "PREPARE p FROM 'SELECT 1'") == ("allow", "allow:read")
    assert check(my, "EXECUTE p USING @a") == ("allow", "allow:read")
    assert check(my, "EXECUTE p @a") == ("deny", "class:unknown not allowed")
