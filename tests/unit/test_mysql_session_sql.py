"""The MySQL driver's little lexer: statement splitting, KILL mapping, LOAD DATA LOCAL."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.session.mysql_sql import (
    KillRefused,
    KillStatement,
    find_kill,
    is_load_data_local,
    statement_texts,
)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (b"SELECT 1", [b"SELECT 1"]),
        (b"SELECT 1;", [b"SELECT 1"]),
        (b"SELECT 1; SELECT 2", [b"SELECT 1", b"SELECT 2"]),
        (b"SELECT 'a;b'; SELECT \"c;d\"", [b"SELECT 'a;b'", b'SELECT "c;d"']),
        (b"SELECT 'it''s;'; DO 1", [b"SELECT 'it''s;'", b"DO 1"]),
        (b"SELECT 'x\\';' ; DO 1", [b"SELECT 'x\\';'", b"DO 1"]),
        (b"SELECT `a;b` FROM t; DO 1", [b"SELECT `a;b` FROM t", b"DO 1"]),
        (b"SELECT 1 -- ; not a split\n; DO 2", [b"SELECT 1", b"DO 2"]),
        (b"SELECT 1 # ; comment\n; DO 2", [b"SELECT 1", b"DO 2"]),
        (b"SELECT /* ; */ 1; DO 2", [b"SELECT /* ; */ 1", b"DO 2"]),
        (b"  ;;  ", []),
        (b"SELECT 'unterminated; DO 1", [b"SELECT 'unterminated; DO 1"]),
    ],
)
def test_statement_texts(sql: bytes, expected: list[bytes]) -> None:
    assert statement_texts(sql) == expected


def test_no_backslash_escapes_mode() -> None:
    sql = b"SELECT 'x\\'; DO 1"
    assert statement_texts(sql) == [sql]
    assert statement_texts(sql, backslash_escapes=False) == [b"SELECT 'x\\'", b"DO 1"]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (b"KILL 5", KillStatement(None, False, 5)),
        (b"kill query 12;", KillStatement(None, True, 12)),
        (b"KILL CONNECTION 7", KillStatement(None, False, 7)),
        (b"KILL HARD QUERY 9", KillStatement(b"HARD", True, 9)),
        (b"/* c */ KILL SOFT 3", KillStatement(b"SOFT", False, 3)),
        (b"/*!KILL QUERY 4 */", KillStatement(None, True, 4)),
        (b"SELECT * FROM kills", None),
        (b"SELECT 'KILL QUERY 1'", None),
        (b"SELECT killer FROM t", None),
    ],
)
def test_find_kill(sql: bytes, expected: KillStatement | None) -> None:
    assert find_kill(sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        b"KILL USER gateway",
        b"KILL QUERY ID 77",
        b"KILL @x",
        b"KILL 1 + 1",
        b"SELECT 1; KILL 5",
        b"SELECT 'x\\'; KILL USER gateway; -- '",  # hidden if backslashes do not escape
        b"/*M!100000 KILL USER gateway */",
        b"PREPARE s FROM 'KILL USER gateway'",
        b"EXECUTE IMMEDIATE 'kill user gateway'",
    ],
)
def test_kill_forms_that_are_refused(sql: bytes) -> None:
    with pytest.raises(KillRefused):
        find_kill(sql)


def test_kill_render() -> None:
    assert KillStatement(b"HARD", True, 9).render(123) == b"KILL HARD QUERY 123"
    assert KillStatement(None, False, 9).render(5) == b"KILL CONNECTION 5"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (b"LOAD DATA LOCAL INFILE '/x' INTO TABLE t", True),
        (b"load data low_priority local infile 'x' into table t", True),
        (b"LOAD DATA CONCURRENT LOCAL INFILE 'x' INTO TABLE t", True),
        (b"LOAD XML LOCAL INFILE 'x' INTO TABLE t", True),
        (b"SELECT 1; LOAD DATA LOCAL INFILE 'x' INTO TABLE t", True),
        (b"LOAD DATA INFILE '/x' INTO TABLE t", False),
        (b"SELECT 'LOAD DATA LOCAL INFILE'", False),
        (b"SELECT load FROM t", False),
    ],
)
def test_is_load_data_local(sql: bytes, expected: bool) -> None:
    assert is_load_data_local(sql) is expected


@given(st.binary(max_size=300))
def test_lexer_never_fails(sql: bytes) -> None:
    texts = statement_texts(sql)
    assert all(t and t in sql for t in texts)
    with contextlib.suppress(KillRefused):
        find_kill(sql)
    is_load_data_local(sql)


def test_large_literals_are_lexed_quickly() -> None:
    import time

    sql = b"INSERT INTO t VALUES ('" + b"a" * (16 << 20) + b"'); KILL 5"
    started = time.monotonic()
    with pytest.raises(KillRefused):
        find_kill(sql)
    assert time.monotonic() - started < 2.0
