"""The policy lexer: statement splitting, fingerprints, digit skeletons, `/*!` comments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.lexer import (
    NUMBER,
    STRING,
    LexError,
    fingerprint,
    fingerprint_from_tokens,
    fingerprint_replacements,
    lex,
    skeleton,
    skeleton_eligible,
    split_statements,
)


def statements(sql: str, dialect: str) -> list[str]:
    return [s.text for s in split_statements(lex(sql, dialect), dialect)]


# --------------------------------------------------------------------------- splitting


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1;;; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT ';'; SELECT 2", ["SELECT ';'", "SELECT 2"]),
        ("SELECT 'a\\'; DROP TABLE t; --'", ["SELECT 'a\\'", "DROP TABLE t"]),
        ("SELECT E'a\\'; b'; SELECT 2", ["SELECT E'a\\'; b'", "SELECT 2"]),
        ("SELECT $$;$$; SELECT $x$ ; $y$ ; $x$", ["SELECT $$;$$", "SELECT $x$ ; $y$ ; $x$"]),
        ('SELECT ";" FROM t', ['SELECT ";" FROM t']),
        ("SELECT 1 -- ; DROP\n; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT /* ; /* ; */ ; */ 1", ["SELECT /* ; /* ; */ ; */ 1"]),
        ("CREATE RULE r AS ON INSERT TO t DO (DELETE FROM u; SELECT 1)", None),
        ("", []),
        ("-- nothing", []),
    ],
)
def test_split_postgres(sql: str, expected: list[str] | None) -> None:
    got = statements(sql, "postgres")
    assert got == (expected if expected is not None else [sql])


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 'a\\'; DROP TABLE t; -- '", ["SELECT 'a\\'; DROP TABLE t; -- '"]),
        ('SELECT "a\\"; b"; SELECT 2', ['SELECT "a\\"; b"', "SELECT 2"]),
        ("SELECT 1 # ; DROP TABLE t\n; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1--1; SELECT 2", ["SELECT 1--1", "SELECT 2"]),
        ("SELECT 1 -- ; x\n; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT /* a /* b */ 1; SELECT 2", ["SELECT /* a /* b */ 1", "SELECT 2"]),
        ("SELECT `;`; SELECT 2", ["SELECT `;`", "SELECT 2"]),
        ("/*!50000 SELECT 1; SELECT 2 */", ["SELECT 1", "SELECT 2"]),
        # "--" + DEL starts a comment, like "--" + any other control character
        ("SHOW TABLES --\x7f '\n; DELETE FROM t; -- '", ["SHOW TABLES", "DELETE FROM t"]),
    ],
)
def test_split_mysql(sql: str, expected: list[str]) -> None:
    assert [s.strip() for s in statements(sql, "mysql")] == expected


@pytest.mark.parametrize(
    ("sql", "dialect"),
    [
        ("SELECT 'x", "postgres"),
        ("SELECT E'x\\'", "postgres"),
        ('SELECT "x', "postgres"),
        ("SELECT $a$ x $b$", "postgres"),
        ("SELECT /* /* */", "postgres"),
        ("SELECT 'x\\'", "mysql"),
        ("SELECT `x", "mysql"),
        ("SELECT /* x", "mysql"),
        ("/*!50000 SELECT 1", "mysql"),
        ("/*! /*! */ */", "mysql"),
        ('SELECT U&"\\DBFF" FROM t', "postgres"),
    ],
)
def test_unterminated_is_a_lex_error(sql: str, dialect: str) -> None:
    with pytest.raises(LexError):
        lex(sql, dialect)


def test_executable_comment_markers_are_blanked_in_place() -> None:
    sql = "SELECT 1 /*!50000 , 2 */ FROM t"
    lexed = lex(sql, "mysql")
    assert len(lexed.text) == len(sql)
    assert lexed.text == "SELECT 1          , 2    FROM t"
    assert lexed.exec_spans == [(9, 24)]
    assert lex("/*M!100100 DROP TABLE t */", "mysql").text.split() == ["DROP", "TABLE", "t"]


def test_executable_comment_content_is_lexed_as_code() -> None:
    # a ; inside a string in the comment does not split the statement
    lexed = lex("SELECT /*! 'a;b' */ 1", "mysql")
    assert "'a;b'" in lexed.text
    assert lexed.text.strip().endswith("1")
    assert len(split_statements(lexed, "mysql")) == 1


@pytest.mark.parametrize(
    ("sql", "dialect"),
    [
        # F1: a quote or comment in an executable comment runs over its first */, where a
        # server that skips the comment (newer version, /*M! on MySQL) ends it
        ("SELECT 1 /*!999999 '*/; DELETE FROM t; SELECT 1 /*'*/", "mysql"),
        ("SELECT 1 /*M! '*/; DROP TABLE t; SELECT 1 /*'*/", "mysql"),
        ("SHOW TABLES /*!999999 '*/; GRANT ALL ON *.* TO app; SHOW TABLES /*'*/", "mysql"),
        ("SELECT /*! 'a*/b' */ 1", "mysql"),
        ('SELECT 1 /*!50000 "*/; DROP TABLE t; " */', "mysql"),
        ("SELECT 1 /*!50000 `*/; DROP TABLE t; ` */", "mysql"),
        ("SELECT 1 /*!50000 # */; DROP TABLE t\n*/", "mysql"),
        ("SELECT 1 /*!50000 -- */; DROP TABLE t\n*/", "mysql"),
        ("SELECT 1 /*!50000 /*/ 2 */", "mysql"),
        # F4: version digits the servers read differently (5, or 6 + whitespace, only)
        ("SET sql_mode = /*!500000x414E53495F51554F544553*/", "mysql"),
        ("/*!500000x41*/", "mysql"),
        ("/*!1 SELECT 1 */", "mysql"),
        ("/*!5000 SELECT 1 */", "mysql"),
        ("/*!1234567 SELECT 1 */", "mysql"),
        ("/*M!1000000 SELECT 1 */", "mysql"),
        ("/*!100000*/", "mysql"),
        # F2: "--" + a non-ASCII character: a comment or not depending on the charset
        ("SELECT 1 --\x80 '\n; DELETE FROM t; -- '", "mysql"),
        ("SELECT 1 --\u00e9 x", "mysql"),
        ("SELECT 1 --\u00a0 x", "mysql"),
        # F3: a literal continued on another line stays one literal of the same kind
        ("SET application_name = E'x'\n'\\' , '; DELETE FROM t; --'", "postgres"),
        ("PREPARE TRANSACTION E'x'\n'\\' '; DELETE FROM t; --'", "postgres"),
        ("SELECT 'a'\n'b'", "postgres"),
        ("SELECT 'a'\r'b'", "postgres"),
        ("SELECT 'a' -- c\n'b'", "postgres"),
        ("SELECT 'a'\n-- c\n  'b'", "postgres"),
        ("SELECT E'a'  \n\t'b'", "postgres"),
        ("SELECT U&'a'\n'b'", "postgres"),
        ("SELECT B'1'\n'0'", "postgres"),
        ("SELECT X'1'\n'0'", "postgres"),
        ("SELECT N'a'\n'b'", "postgres"),
        # B: a server that skips an executable comment allows one nested /* */ in it, even
        # inside what looks like a quote, and then ends it at a later */
        ("SELECT 1 /*!99999 '/*' */ , ' */ ; DELETE FROM t; -- '", "mysql"),
        ("SELECT 1 /*M!999999 '/*' */ , ' */ ; DELETE FROM t; -- '", "mysql"),
        ("SELECT 1 /*!50700 `/*` */ , ' */ ; GRANT ALL ON *.* TO x@'%'; -- '", "mysql"),
        ("SELECT 1 /*!50000 \"/*\" */ , ' */ ; DELETE FROM t; -- '", "mysql"),
        ("SELECT 1 /*!/*/ 2 */", "mysql"),
        ("SELECT 1 /*! /* */ 2 */", "mysql"),
        # D: a UESCAPE clause after a U& identifier or string in any but the simple form
        ("EXECUTE p(U&\"pg!005fread!005ffile\" UESCAPE E'!' ('/etc/passwd'))", "postgres"),
        ("EXECUTE p(U&\"set!005fconfig\" /**/ UESCAPE '!' ('role','postgres',false))", "postgres"),
        ("RESET U&\"rol!0065\" /**/ UESCAPE '!'", "postgres"),
        ('RESET U&"session!005fauthorization" UESCAPE $$!$$', "postgres"),
        ("SELECT U&\"d!0061ta\" UESCAPE -- c\n '!'", "postgres"),
        ('SELECT U&"d!0061ta" UESCAPE', "postgres"),
        ("SELECT U&\"d!0061ta\" UESCAPE '!!'", "postgres"),
        ("SELECT U&\"d!0061ta\" UESCAPE U&'!'", "postgres"),
        ("SELECT U&'d!0061ta' UESCAPE E'!'", "postgres"),
        ("SELECT U&'d!0061ta' /**/ UESCAPE '!'", "postgres"),
    ],
)
def test_server_dependent_readings_are_lex_errors(sql: str, dialect: str) -> None:
    with pytest.raises(LexError):
        lex(sql, dialect)


@pytest.mark.parametrize(
    ("sql", "dialect", "count"),
    [
        ("SELECT 1 /*!50000 STRAIGHT_JOIN */", "mysql", 1),
        ("SELECT /*!50000 STRAIGHT_JOIN */ a FROM t", "mysql", 1),
        ("/*!40101 SET NAMES utf8 */", "mysql", 1),
        ("/*!40101 SET @x = 'a;b' */; SELECT 1", "mysql", 2),
        ("/*!SELECT 1*/", "mysql", 1),
        ("/*!500000 SELECT 1 */", "mysql", 1),
        ("/*!500000\tSELECT 1 */", "mysql", 1),
        ("/*M!100100 SELECT 1 */", "mysql", 1),
        ("/*M! SELECT 1 */", "mysql", 1),
        ("SELECT 1 /*!50000 , 2*/ FROM t", "mysql", 1),
        ("SELECT 1 /* '*/ , 2", "mysql", 1),
        ("SELECT 1 -- comment", "mysql", 1),
        ("SELECT 1 --\x7f ; x\n; SELECT 2", "mysql", 2),
        ("SELECT 1--1", "mysql", 1),
        ("SELECT '--\u00e9', `--\u00e9` # --\u00e9", "mysql", 1),
        ("SELECT 'a' 'b'", "postgres", 1),
        ("SELECT E'a\\'b'", "postgres", 1),
        ("SELECT 'a',\n'b'", "postgres", 1),
        ("SELECT 'a'\n, 'b'", "postgres", 1),
        ("SELECT 'a' /* c */\n'b'", "postgres", 1),
        ("SELECT $$a$$\n'b'", "postgres", 1),
        ("SELECT 'a'\nFROM t\nWHERE b = 'c'\n;\n'd'", "postgres", 2),
        ("SELECT /*!50000 STRAIGHT_JOIN */ a FROM t /* /* */", "mysql", 1),
        ("SELECT 1 /*!50000 '*' */", "mysql", 1),
        ("SELECT U&\"d!0061t!+000061\" UESCAPE '!' FROM t", "postgres", 1),
        ("SELECT U&\"d!0061ta\"UESCAPE'!' FROM t", "postgres", 1),
        ("SELECT U&\"d!0061ta\"\n\tUESCAPE\n'!' FROM t", "postgres", 1),
        ("SELECT U&'d!0061ta' UESCAPE '!'", "postgres", 1),
        ("SELECT uescape FROM t WHERE a = 'UESCAPE'", "postgres", 1),
        ('SELECT "x" uescape', "postgres", 1),
    ],
)
def test_unambiguous_neighbours_still_lex(sql: str, dialect: str, count: int) -> None:
    assert len(statements(sql, dialect)) == count


def test_string_continuation_check_is_linear() -> None:
    # a run of dashes after a literal must not make the continuation check backtrack
    with pytest.raises(LexError):
        lex("SELECT 'a' " + "-" * 50_000 + "\n'b'", "postgres")
    assert len(statements("SELECT 'a' " + "-" * 50_000 + "x", "postgres")) == 1


def test_unicode_escaped_identifiers_are_rewritten() -> None:
    assert lex('SELECT U&"d\\0061ta"', "postgres").text == 'SELECT "data"'
    assert lex("SELECT U&\"d!0061ta\" UESCAPE '!'", "postgres").text == 'SELECT "data"'
    assert lex('SELECT U&"\\+000061"', "postgres").text == 'SELECT "a"'
    assert lex('SELECT U&"a""b\\0022"', "postgres").text == 'SELECT "a""b"""'
    sql = "SELECT U&\"d!0061t!+000061\" UESCAPE '!'"
    assert lex(sql, "postgres").text == 'SELECT "data"'
    assert lex("SELECT U&\"d!0061ta\"UeScApE'!'", "postgres").text == 'SELECT "data"'
    # a non-ASCII space is an identifier character: no UESCAPE clause, the default escape
    nbsp = lex("SELECT U&\"d!0061ta\"\u00a0UESCAPE '!'", "postgres")
    assert nbsp.text == "SELECT \"d!0061ta\"\u00a0UESCAPE '!'"


# --------------------------------------------------------------------------- fingerprint


@pytest.mark.parametrize(
    ("sql", "dialect", "expected"),
    [
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
            "postgres",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 0;",
        ),
        (
            "SELECT * FROM t1 WHERE a = 'x''y' AND b = 1.5e3 AND c IN (1, -2, .5)",
            "postgres",
            "SELECT * FROM t1 WHERE a = '' AND b = 0 AND c IN (0, -0, 0)",
        ),
        # identifiers, quoted identifiers, parameters, comments and dollar quotes stay
        (
            'SELECT "col 1", t2.c3, $1 FROM t4 -- note 5\n/* 6 */ WHERE x = $$7$$',
            "postgres",
            'SELECT "col 1", t2.c3, $1 FROM t4 -- note 5\n/* 6 */ WHERE x = $$7$$',
        ),
        (
            "SELECT E'1', B'101', X'1F', N'2', U&'3'",
            "postgres",
            "SELECT E'1', B'101', X'1F', N'2', U&'3'",
        ),
        ("SELECT 'a\\', 1", "postgres", "SELECT '', 0"),
        ("SELECT 1_000, 0x1F, a1", "postgres", "SELECT 1_000, 0x1F, a1"),
        (
            "SELECT * FROM t WHERE a = 'it\\'s' AND b = \"q\" AND c = 3",
            "mysql",
            "SELECT * FROM t WHERE a = '' AND b = \"q\" AND c = 0",
        ),
        ("SELECT 1 /*!50000 , 'x', 2 */", "mysql", "SELECT 0 /*!50000 , 'x', 2 */"),
        ("/*!40101 SET @x = 'a' */; SELECT 1", "mysql", "/*!40101 SET @x = 'a' */; SELECT 0"),
        ("SELECT `a1`, @v2, 3abc, x'41' # 4\n", "mysql", "SELECT `a1`, @v2, 3abc, x'41' # 4\n"),
        ("SELECT 1--2", "mysql", "SELECT 0--0"),
        ("SELECT 1 -- 2", "mysql", "SELECT 0 -- 2"),
        ("SELECT 1 --\x7f 2", "mysql", "SELECT 0 --\x7f 2"),
    ],
)
def test_fingerprint(sql: str, dialect: str, expected: str) -> None:
    assert fingerprint(sql, dialect) == expected
    assert fingerprint_from_tokens(sql, lex(sql, dialect), dialect) == expected


@pytest.mark.parametrize(
    ("sql", "dialect"),
    [
        ("SELECT 'open", "postgres"),
        ("SELECT /* a /* nested */ b */ 1", "postgres"),
        ("SELECT $$open", "postgres"),
        ("SELECT typE'x'", "postgres"),
        ("SELECT a$b$ FROM t", "postgres"),
        ("SELECT 'open", "mysql"),
        ("SELECT `open", "mysql"),
        ("SELECT 1 --\u00e9 '", "mysql"),
        ("SELECT 1 /*!99999 '/*' */ , ' */ ; DELETE FROM t; -- '", "mysql"),
        ("SELECT 1 /*!/*/ 2 */", "mysql"),
    ],
)
def test_no_fingerprint_when_unsure(sql: str, dialect: str) -> None:
    assert fingerprint(sql, dialect) is None


def test_fingerprint_never_alters_executable_comments() -> None:
    sql = "/*!50000 DROP TABLE t1 */"
    assert fingerprint(sql, "mysql") == sql
    assert fingerprint("/*!50000 DROP TABLE t2 */", "mysql") != fingerprint(sql, "mysql")


_TEMPLATES = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
    "UPDATE pgbench_accounts SET abalance = abalance + {} WHERE aid = {};",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({}, {}, {}, {}, now());",
    "SELECT * FROM t2 WHERE a = {} AND b IN ({}, {}) LIMIT {}",
    "SELECT {} /* v1 */, 'x' -- {}\n",
]


@given(
    template=st.sampled_from(_TEMPLATES),
    a=st.lists(st.integers(min_value=0, max_value=10**12), min_size=5, max_size=5),
    b=st.lists(st.integers(min_value=0, max_value=10**12), min_size=5, max_size=5),
    dialect=st.sampled_from(["postgres", "mysql"]),
)
def test_numeric_literals_do_not_change_the_fingerprint(
    template: str, a: list[int], b: list[int], dialect: str
) -> None:
    first = template.format(*a)
    second = template.format(*b)
    # numbers inside comments are kept, so compare texts differing only outside them
    if "--" in template:
        second = template.format(b[0], a[1])
    assert fingerprint(first, dialect) == fingerprint(second, dialect)
    assert fingerprint(first, dialect) is not None


_FRAGMENTS = [
    "SELECT",
    " ",
    "\n",
    "a",
    "t1",
    "x$y",
    "1",
    "23",
    "4.5",
    ".6",
    "7e8",
    "'s'",
    "'it''s'",
    "'a\\'",
    "E'e\\'q'",
    "$$d'$$",
    "$t$ 1 $t$",
    '"q 1"',
    "`b 2`",
    "-- c 3\n",
    "# h 4\n",
    "/* k 5 */",
    "/*! 6 */",
    ";",
    ",",
    "(",
    ")",
    ".",
    "-",
    "+",
    "@",
    "@v",
    "$1",
    "?",
    "=",
    "::",
    "N'n'",
    "x'41'",
    "_utf8'u'",
    "U&'u'",
    "--\x7f",
    "--\u00e9",
    "/*!99999 '*/",
    "/*!500000x1*/",
]


@settings(max_examples=600)
@given(
    parts=st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=14),
    dialect=st.sampled_from(["postgres", "mysql"]),
)
def test_fast_fingerprint_only_replaces_literals(parts: list[str], dialect: str) -> None:
    """The safety property of the one-pass fingerprint, checked against the full lexer.

    Every '' it writes replaces exactly one standard string literal, and every 0 lies inside
    one number literal; everything else is kept byte for byte. So two texts with one
    fingerprint differ only in literal values, whatever the text (a disagreement on
    anything else could let two different statements share a cached decision).
    """
    sql = "".join(parts)
    changes = fingerprint_replacements(sql, dialect)
    try:
        lexed = lex(sql, dialect)
    except LexError:
        return
    if changes is None or lexed.text != sql:
        return
    strings = {(t.start, t.end) for t in lexed.tokens if t.kind == STRING}
    numbers = [(t.start, t.end) for t in lexed.tokens if t.kind == NUMBER]
    for start, end, replacement in changes:
        if replacement == "''":
            assert (start, end) in strings, (sql, start, end)
        else:
            assert replacement == "0"
            assert any(a <= start and end <= b for a, b in numbers), (sql, start, end)


_PLAIN_FRAGMENTS = [f for f in _FRAGMENTS if not any(ch in f for ch in ".eE")] + ["SELECT"]


@settings(max_examples=300)
@given(
    parts=st.lists(st.sampled_from(_PLAIN_FRAGMENTS), min_size=1, max_size=14),
    dialect=st.sampled_from(["postgres", "mysql"]),
)
def test_fast_fingerprint_equals_the_rebuilt_one(parts: list[str], dialect: str) -> None:
    """Without odd number spellings ("a4.5e-23"), the one-pass fingerprint and the one
    rebuilt from the tokens agree, so results are shared through the fingerprint cache."""
    sql = "".join(parts)
    fast = fingerprint(sql, dialect)
    try:
        lexed = lex(sql, dialect)
    except LexError:
        return
    rebuilt = fingerprint_from_tokens(sql, lexed, dialect)
    if fast is not None and rebuilt is not None:
        assert fast == rebuilt


# --------------------------------------------------------------------------- skeleton


@pytest.mark.parametrize(
    ("sql", "eligible"),
    [
        ("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", True),
        ("SELECT * FROM t WHERE a = 1.5 AND b = 2e3", True),
        ("SELECT * FROM t1 WHERE a = 1", False),  # digit in an identifier
        ("SELECT * FROM t WHERE a = '1'", False),  # digit in a string
        ("SELECT 1 -- 2", False),  # digit in a comment
        ("SELECT $1", False),  # digit in a parameter
        ("SELECT 0x1F", False),
        ("SELECT $a1$ x $a1$", False),
    ],
)
def test_skeleton_eligibility(sql: str, eligible: bool) -> None:
    assert skeleton_eligible(sql, lex(sql, "postgres")) is eligible


def test_skeleton_keeps_everything_but_digit_values() -> None:
    assert skeleton("SELECT 12 FROM t WHERE é = 3") == skeleton("SELECT 99 FROM t WHERE é = 0")
    assert skeleton("SELECT 1") != skeleton("SELECT 10")
    assert skeleton("SELECT '\ud800'") is None
