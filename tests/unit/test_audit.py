"""Unit tests of the audit pieces: fingerprints, window counters, alert rules, the
buffered writer (reopen after rotation) and the summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.audit.alerts import Alert, AlertEngine, WindowCounter
from gateway.audit.fingerprint import fingerprint_of, normalize, redact
from gateway.audit.service import client_host, refusal_category, timestamp, timestamp_bytes
from gateway.audit.summary import line_time, render, summarize_lines
from gateway.audit.writer import AuditWriter
from gateway.config import parse_config

BASE = """
[auth]
issuer = "https://idp.example.com"
audience = "gw"
jwks_file = "jwks.json"

[[targets]]
name = "t"
protocol = "postgres"
listen = "127.0.0.1:0"
host = "db"
port = 5432
database = "app"
user = "gw"
"""


def config(extra: str = "", tmp: Path | None = None) -> Any:
    return parse_config(BASE + extra, tmp or Path("/tmp"))


# -- fingerprints ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "SELECT * FROM t WHERE id = 1",
            "SELECT * FROM t WHERE id = 22",
        ),
        ("SELECT * FROM t WHERE a IN (1, 2, 3)", "SELECT * FROM t WHERE a IN (7)"),
        ("INSERT INTO t VALUES (1, 'a'), (2, 'b')", "INSERT INTO t VALUES (3, 'c')"),
        ("SELECT  'x'\n FROM t", "SELECT 'yy' FROM t;"),
    ],
)
def test_same_shape_same_fingerprint(a: str, b: str) -> None:
    assert normalize(a, "postgres")[0] == normalize(b, "postgres")[0]


# Fragments with digits in every place a digit can be: number literals (plain, decimal,
# exponent, hex), identifiers, quoted names, strings, dollar quotes, parameters, comments.
_FRAGMENTS = st.sampled_from(
    [
        "SELECT ", "* ", "FROM ", "t ", "t1 ", "WHERE ", "id ", "= ", "< ", ", ", "(", ") ",
        "1 ", "42 ", "3.14 ", "1e5 ", "0x1F ", ".5 ", "7. ", "'a1' ", "'x' ", "E'\\12' ",
        '"c2" ', "`b3` ", "$1 ", "$$ 9 $$ ", "$q1$ 5 $q1$ ", "-- 12\n", "/* 3 */ ", "AND ",
        "IN (1, 2) ", "LIMIT 10 ", "x_9 ", "a1b ", "U&\"d\\0061\" ", "B'101' ", "N'7' ",
    ]
)  # fmt: skip


@settings(max_examples=300)
@given(
    parts=st.lists(_FRAGMENTS, min_size=1, max_size=14),
    digits=st.lists(st.sampled_from("0123456789"), min_size=40, max_size=40),
    dialect=st.sampled_from(["postgres", "mysql"]),
)
def test_the_skeleton_cache_gives_what_a_fresh_lex_gives(
    parts: list[str], digits: list[str], dialect: str
) -> None:
    # Two texts that differ only in their digits (the same skeleton): after the first
    # fills the caches, the second must get exactly what redacting it from scratch gives.
    first = "".join(parts)
    it = iter(digits * 10)
    second = "".join(next(it) if ch.isdigit() else ch for ch in first)
    normalize(first, dialect)
    expected_redacted = redact(second, dialect)
    assert normalize(second, dialect) == (fingerprint_of(expected_redacted), expected_redacted)


def test_different_shapes_differ_and_literals_are_redacted() -> None:
    fp1, text1 = normalize("SELECT * FROM t1 WHERE x = 'secret'", "postgres")
    fp2, _ = normalize("SELECT * FROM t2 WHERE x = 'secret'", "postgres")
    assert fp1 != fp2
    assert text1 == "SELECT * FROM t1 WHERE x = ?"
    assert len(fp1) == 16 and int(fp1, 16) >= 0


@pytest.mark.parametrize(
    ("text", "dialect", "expected"),
    [
        ("SELECT E'a\\'b', $$x$$, B'101', 1.5e3", "postgres", "SELECT ?, ?, ?, ?"),
        ("SELECT \"col\" FROM t WHERE v = '1'", "postgres", 'SELECT "col" FROM t WHERE v = ?'),
        (
            'SELECT `col` FROM t WHERE v = "str" AND w = 0x1F',
            "mysql",
            "SELECT `col` FROM t WHERE v = ? AND w = ?",
        ),
        ("SELECT 'it\\'s'", "mysql", "SELECT ?"),
        ("SELECT $1, $2", "postgres", "SELECT $1, $2"),
    ],
)
def test_redaction(text: str, dialect: str, expected: str) -> None:
    assert normalize(text, dialect)[1] == expected


def test_the_fingerprint_cache_does_not_keep_large_texts() -> None:
    """Bulk loads send large, always different texts (multi-row INSERTs): caching them
    would hold thousands of them (GBs) for nothing. Only short texts repeat."""
    from gateway.audit import fingerprint

    big = "INSERT INTO t VALUES " + ", ".join(f"({i}, 'v{i}')" for i in range(20_000))
    fp, redacted = normalize(big, "postgres")
    assert redacted.startswith("INSERT INTO t VALUES (?, ?), (?, ?)")
    assert normalize(big.replace("'v1'", "'w1'"), "postgres")[0] == fp
    assert all(len(text) <= fingerprint.MAX_CACHED_TEXT for text, _ in fingerprint._cache)


def test_unlexable_text_is_not_shown() -> None:
    _, text = normalize("SELECT 'unterminated secret", "postgres")
    assert "secret" not in text and text.startswith("<unparsed statement")


# -- windows and alerts ------------------------------------------------------------------------


def test_window_counter_slides() -> None:
    w = WindowCounter(10)
    assert w.add("a", 1, now=0) == 1
    assert w.add("a", 2, now=5) == 3
    assert w.add("b", 1, now=5) == 1
    assert w.add("a", 1, now=10.5) == 3  # the event at 0 left the window
    assert w.total("a", now=15.5) == 1
    assert w.total("a", now=100) == 0
    assert w.total("zzz") == 0


def test_window_counter_memory_does_not_grow_with_the_event_rate() -> None:
    # A client refused as fast as it can send: one slice entry per 1/64 of the window.
    w = WindowCounter(600)
    for i in range(200_000):
        w.add("mallory", 1, now=1000 + i * 0.001)  # 1,000 events a second for 200 s
    slices, total = w._keys["mallory"]
    assert len(slices) <= 65 and total[0] == 200_000
    assert w.total("mallory", now=1200) == 200_000
    assert w.total("mallory", now=1000 + 600 + 200 + 600 / 64 + 1) == 0


def engine(extra: str, tmp_path: Path) -> tuple[AlertEngine, list[Alert]]:
    fired: list[Alert] = []
    return AlertEngine(config(extra), fired.append, state_dir=tmp_path), fired


def test_large_results_fire_once_per_cooldown(tmp_path: Path) -> None:
    eng, fired = engine("[alerts]\nlarge_result_rows = 100\nlarge_results = 3\n", tmp_path)
    for _ in range(10):
        eng.statement("thief", "t", "allow", 500)
    eng.statement("normal", "t", "allow", 5)
    assert [(a.rule, a.key, a.count) for a in fired] == [("large_results", "thief", 3)]
    eng.section = config(
        "[alerts]\ncooldown = 0\nlarge_result_rows = 100\nlarge_results = 3\n"
    ).alerts
    eng.statement("thief", "t", "allow", 500)
    assert len(fired) == 2


def test_small_results_and_other_identities_do_not_fire(tmp_path: Path) -> None:
    eng, fired = engine("[alerts]\nlarge_result_rows = 100\nlarge_results = 2\n", tmp_path)
    for who in ("a", "b", "c"):
        eng.statement(who, "t", "allow", 150)
    for _ in range(50):
        eng.statement("a", "t", "allow", 10)
    assert fired == []


def test_denied_rows_approvals_auth_rules(tmp_path: Path) -> None:
    eng, fired = engine(
        "[alerts]\ndenied = 2\nrows = 1000\napproval_requests = 2\nauth_failures = 2\n", tmp_path
    )
    eng.statement("x", "t", "deny", 0)
    eng.statement("x", "t", "deny", 0)
    eng.statement("y", "t", "allow", 600)
    eng.statement("y", "t", "allow", 600)
    eng.approval_requested("z", "t")
    eng.approval_requested("z", "t")
    eng.auth_failure("10.0.0.9", "t", "token_invalid")
    eng.auth_failure("10.0.0.8", "t", "token_invalid")
    eng.auth_failure("10.0.0.9", "t", "token_invalid")
    assert [(a.rule, a.key) for a in fired] == [
        ("denied", "x"),
        ("rows", "y"),
        ("approval_requests", "z"),
        ("auth_failures", "10.0.0.9"),
    ]
    assert fired[-1].to_json()["client_host"] == "10.0.0.9"


def test_zero_turns_a_rule_off_and_reconfigure_swaps_thresholds(tmp_path: Path) -> None:
    eng, fired = engine("[alerts]\ndenied = 0\n", tmp_path)
    for _ in range(100):
        eng.statement("x", "t", "deny", 0)
    assert fired == []
    eng.reconfigure(config("[alerts]\ndenied = 1\n"))
    eng.statement("x", "t", "deny", 0)
    assert [a.rule for a in fired] == ["denied"]


def test_first_access_state_is_saved_from_a_snapshot_in_order(tmp_path: Path) -> None:
    """The file is written in a worker thread while the event loop records more first
    accesses: the thread must write a copy taken on the loop (iterating the live sets
    from another thread can fail mid-way), and an older copy must never overwrite a
    newer one (two saves in flight)."""
    saves: list[Any] = []
    extra = '[alerts]\nsensitive_tables = ["cards", "salaries"]\n'
    eng = AlertEngine(config(extra), lambda a: None, state_dir=tmp_path, save=saves.append)
    eng.statement("ann", "t", "allow", 1, lambda: ["cards"])
    eng.statement("ann", "t", "allow", 1, lambda: ["salaries"])
    eng.first_access.seen["zed"] = {"cards"}  # changed after both saves were queued
    saves[1]()
    saves[0]()  # the older save runs last: it must not win
    state = json.loads((tmp_path / "alerts_first_access.json").read_text())
    assert state == {"ann": ["cards", "salaries"]}


def test_tables_read_are_cached_per_analysis_and_match_a_fresh_walk() -> None:
    from gateway.audit.service import _tables_of, tables_read
    from gateway.policy.engine import PolicyEngine
    from gateway.policy.spec import PolicySpec

    engine = PolicyEngine.build([PolicySpec(name="p", allow=("*",))], "postgres")
    texts = [
        "SELECT * FROM public.customers c JOIN orders o ON o.cid = c.id",
        "SELECT ssn FROM customers WHERE id = 1",
        "SELECT ssn FROM customers WHERE id = 2",  # same shape: the same Analysis object
        "SELECT 1",
    ]
    for text in texts * 2:
        analysis = engine.analyse(text)
        assert _tables_of(analysis) == tuple(tables_read(analysis))
    assert set(_tables_of(engine.analyse(texts[0]))) >= {"customers", "public.customers", "orders"}
    assert _tables_of(engine.analyse("SELECT 1")) == ()


def test_sensitive_tables_read_are_cached_per_analysis_and_watched_set() -> None:
    from gateway.audit.service import _sensitive_read
    from gateway.policy.engine import PolicyEngine
    from gateway.policy.spec import PolicySpec

    engine = PolicyEngine.build([PolicySpec(name="p", allow=("*",))], "postgres")
    join = engine.analyse("SELECT * FROM public.customers c JOIN orders o ON o.cid = c.id")
    watched = frozenset({"customers", "cards"})
    for _ in range(2):  # the second call is served from the cache, with the same answer
        assert _sensitive_read(join, watched) == ("customers",)
        assert _sensitive_read(engine.analyse("SELECT 1"), watched) == ()
    # A reloaded configuration brings a new watched set: the cached answer is not reused.
    assert set(_sensitive_read(join, frozenset({"orders", "public.customers"}))) == {
        "orders",
        "public.customers",
    }
    assert _sensitive_read(join, frozenset()) == ()


def test_a_session_names_only_sensitive_tables_to_the_alerts(tmp_path: Path) -> None:
    from gateway.audit import AuditService
    from gateway.identity import Identity
    from gateway.policy.engine import PolicyEngine
    from gateway.policy.spec import PolicySpec

    svc = AuditService(
        config(
            f'[gateway]\nstate_dir = "{tmp_path}"\n[audit]\nenabled = false\n'
            '[alerts]\nsensitive_tables = ["cards"]\n',
            tmp_path,
        )
    )
    fired: list[Alert] = []
    svc.alerts._fire = fired.append  # what the service does with an alert is tested elsewhere
    svc.alerts._save = lambda fn: fn()  # no event loop here: save the state inline
    engine = PolicyEngine.build([PolicySpec(name="p", allow=("*",))], "postgres")
    audit = svc.session(
        "s1", Identity(subject="ann", issuer="i"), "t", "postgres", "c", engine.analyse
    )
    for text in ("SELECT * FROM orders", "SELECT n FROM cards", "SELECT n FROM cards"):
        audit.statement(text, "simple", "allow", "r", frozenset({"read"}), 1, 10, 0.001)
    assert [(a.rule, a.detail["table"]) for a in fired] == [("first_sensitive_access", "cards")]


def test_statement_durations_in_milliseconds_match_rounding() -> None:
    from gateway.audit.service import _milliseconds

    for seconds in (0.0, 0.0001234, 0.00065, 0.0123456, 1.5, 3.0000004, 86_400.123456):
        assert _milliseconds(seconds) == pytest.approx(round(seconds * 1000, 3), abs=1e-9)
    assert json.dumps(_milliseconds(0.0001234)) == "0.123"


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=40),
    path=st.sampled_from(["simple", "prepared", "extended", "text"]),
    action=st.sampled_from(["allow", "deny"]),
    rule=st.none() | st.text(max_size=12),
    cls=st.text(min_size=1, max_size=12),
    rows=st.integers(0, 10**12),
    nbytes=st.integers(0, 10**15),
    duration=st.floats(0, 10**6, allow_nan=False) | st.sampled_from([0.0, 1e-9, 4.9e-7, 5e-7]),
    redact_literals=st.booleans(),
    repeat=st.booleans(),
)
def test_a_statement_line_from_cached_parts_is_the_encoded_line(
    text: str,
    path: str,
    action: str,
    rule: str | None,
    cls: str,
    rows: int,
    nbytes: int,
    duration: float,
    redact_literals: bool,
    repeat: bool,
) -> None:
    """SessionAudit._line (the session's fields encoded once, the statement's parts once
    per shape and shared by sessions) gives, byte for byte, what encoding the whole
    StatementLine gives, for each of two sessions, and it is one JSON object per line."""
    from gateway.audit import AuditService
    from gateway.audit.service import _milliseconds
    from gateway.identity import Identity

    svc = AuditService(config("[audit]\nenabled = false\n"))
    svc.redact = redact_literals
    ann = Identity(subject='ann "the" \\ admin', issuer="i", groups=("dba", "ops\n"))
    bob = Identity(subject="bob", issuer="i")
    now = time.time()
    for sid, ident in (("s-1", ann), ("s-2", bob)):
        audit = svc.session(sid, ident, "t", "postgres", "10.0.0.1:5", None)
        for _ in range(2 if repeat else 1):  # the second time from the cached parts
            fast = audit._line(now, text, path, action, rows, nbytes, duration, rule, cls)
        reference = audit._encoded(
            timestamp(now), text, path, action, rows, nbytes, _milliseconds(duration), rule, cls,
            None, None, None,
        )  # fmt: skip
        assert fast == reference and fast.endswith(b"}\n")
        assert json.loads(fast)["subject"] == ident.subject


_BATCH_ITEM = st.tuples(
    st.sampled_from(
        ["SELECT 1", "SELECT 2", "SELECT n FROM cards WHERE id = $1", "UPDATE t SET a = 1"]
    ),
    st.sampled_from(["simple", "prepared", "extended"]),
    st.sampled_from(["allow", "allow", "allow", "deny"]),
    st.sampled_from([None, "r", "needs review approved:apr_7"]),
    st.sampled_from([frozenset({"read"}), frozenset({"write"}), frozenset()]),
    st.integers(0, 30),
    st.integers(0, 10**6),
    st.floats(0, 100, allow_nan=False),
    st.sampled_from([None, None, None, "57014"]),
    st.sampled_from([None, None, None, ["email"]]),
    st.floats(1.7e9, 1.7e9 + 5, allow_nan=False),
)


_SIMPLE = ("SELECT 1", "simple", "allow", None, frozenset({"read"}), 1, 10, 0.1, None, None, 1.7e9)


@settings(max_examples=300, deadline=None)
@example(  # two texts redacted alike, literals kept: each line has its own text
    items=[_SIMPLE, ("SELECT 2", *_SIMPLE[1:])],
    approval_first=False,
    alerts="",
    sensitive=False,
    max_buffer=None,
    redact_literals=False,
)
@given(
    items=st.lists(_BATCH_ITEM, max_size=12),
    approval_first=st.booleans(),
    alerts=st.sampled_from(["", "rows = 40\n", "large_result_rows = 20\nlarge_results = 2\n"]),
    sensitive=st.booleans(),
    max_buffer=st.sampled_from([None, 600]),
    redact_literals=st.booleans(),
)
def test_a_batch_of_statements_is_one_statement_call_per_item(
    items: list[Any],
    approval_first: bool,
    alerts: str,
    sensitive: bool,
    max_buffer: int | None,
    redact_literals: bool,
) -> None:
    """SessionAudit.statements (the observers' batches) gives the log lines and alerts, in
    order, and the metrics that calling ``statement`` for each item gives."""
    from gateway.audit import AuditService
    from gateway.identity import Identity
    from gateway.policy.engine import PolicyEngine
    from gateway.policy.spec import PolicySpec

    extra = "[alerts]\n" + alerts + ('sensitive_tables = ["cards"]\n' if sensitive else "")
    engine = PolicyEngine.build([PolicySpec(name="p", allow=("*",))], "postgres")
    outcomes = []
    for batch in (False, True):
        svc = AuditService(config(extra))
        svc.redact = redact_literals
        assert svc.writer is not None
        if max_buffer is not None:
            svc.writer.max_buffer = max_buffer
        # An alert as a line of its own (the service's has the time of day): its place
        # among the statement lines is checked too.
        writer = svc.writer
        svc.alerts._fire = lambda a, w=writer: w.write(f"alert {a.rule} {a.key}\n".encode())
        svc.alerts._save = lambda fn: None
        audit = svc.session(
            "s1", Identity(subject="ann", issuer="i"), "t", "postgres", "c", engine.analyse
        )
        if approval_first:
            audit.approval_id = "apr_1"
        if batch:
            audit.statements(items)
        else:
            for item in items:
                audit.statement(*item)
        tally = svc.metrics.tally("t")
        outcomes.append(
            (
                svc.writer._buf,
                svc.writer.dropped,
                tally.statements,
                (tally.rows, tally.bytes, tally.errors, tally.buckets),
                pytest.approx(tally.latency_sum),
            )
        )
    assert outcomes[0] == outcomes[1]
    lines, dropped = outcomes[0][:2]
    assert sum(not line.startswith(b"alert") for line in lines) + dropped >= len(items)


def test_a_failing_item_keeps_what_the_batch_did_before_it() -> None:
    """An item that raises (here a duration no line can hold) leaves the lines and the
    metrics of the items before it, as one ``statement`` call per item does."""
    from gateway.audit import AuditService
    from gateway.identity import Identity

    ok = ("SELECT 1", "prepared", "allow", "r", frozenset({"read"}), 2, 10, 0.001, None, None, 1e9)
    bad = (*ok[:7], float("inf"), *ok[8:])
    outcomes = []
    for batch in (False, True):
        svc = AuditService(config())
        assert svc.writer is not None
        audit = svc.session("s1", Identity(subject="ann", issuer="i"), "t", "postgres", "c", None)
        with pytest.raises(OverflowError):
            if batch:
                audit.statements([ok, ok, bad])
            else:
                for item in (ok, ok, bad):
                    audit.statement(*item)
        tally = svc.metrics.tally("t")
        outcomes.append((list(svc.writer._buf), tally.statements, tally.rows, tally.bytes))
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0][0]) == 2


def test_first_sensitive_access_survives_restarts(tmp_path: Path) -> None:
    extra = """
[alerts]
sensitive_tables = ["public.cards"]

[[policies]]
name = "p"
groups = ["g"]
targets = ["t"]
allow = ["read"]
masks = [{ columns = ["customers.email"], style = "redact" }]
"""
    fired: list[Alert] = []
    eng = AlertEngine(config(extra), fired.append, state_dir=tmp_path)
    assert eng.sensitive == {"public.cards", "customers"}
    eng.statement("ann", "t", "allow", 1, lambda: ["cards", "public.cards"])
    eng.statement("ann", "t", "allow", 1, lambda: ["cards", "public.cards"])
    eng.statement("ann", "t", "allow", 1, lambda: ["orders"])
    eng.statement("bob", "t", "allow", 1, lambda: ["customers"])
    assert [(a.key, a.detail["table"]) for a in fired] == [
        ("ann", "public.cards"),
        ("bob", "customers"),
    ]
    again: list[Alert] = []
    eng2 = AlertEngine(config(extra), again.append, state_dir=tmp_path)
    eng2.statement("ann", "t", "allow", 1, lambda: ["public.cards"])
    assert again == []
    assert json.loads((tmp_path / "alerts_first_access.json").read_text())["ann"] == [
        "public.cards"
    ]


# -- small helpers ------------------------------------------------------------------------------


def test_unreachable_target_counts_as_an_upstream_error(tmp_path: Path) -> None:
    from gateway.audit import AuditService

    svc = AuditService(config(f'[gateway]\nstate_dir = "{tmp_path}"\n[audit]\nenabled = false\n'))
    svc.login_refused("t", "08006", "10.0.0.1:5", "connection refused", None)
    svc.login_refused("t", "28P01", "10.0.0.1:5", "token rejected: token expired", None)
    text = svc.metrics.render().decode()
    assert 'gateway_upstream_errors_total{target="t"} 1.0' in text
    assert 'reason="upstream_unavailable"' in text and 'reason="token_expired"' in text


def test_refusal_categories_and_hosts() -> None:
    assert refusal_category("token rejected: token expired") == "token_expired"
    assert refusal_category("token rejected: malformed token") == "token_invalid"
    assert refusal_category("no policy allows groups ['x'] on target t") == "not_allowed"
    assert refusal_category("recording unavailable: disk full") == "recording_unavailable"
    assert client_host("127.0.0.1:5432") == "127.0.0.1"
    assert client_host("[::1]:5432") == "::1"
    stamp = timestamp(1_700_000_000.25)
    assert stamp == "2023-11-14T22:13:20.250Z"
    assert line_time({"time": stamp}) == pytest.approx(1_700_000_000.25)


@given(st.lists(st.integers(1_600_000_000_000, 1_600_000_003_000), min_size=1, max_size=30))
def test_timestamps_cached_per_millisecond_match_a_fresh_format(millis: list[int]) -> None:
    # Any order of calls (same millisecond, next second, back again) gives the text a fresh
    # formatting gives: the per-second and per-millisecond caches never serve a stale part.
    import time as _time

    for milli in millis:
        now = milli / 1000 + 0.0004  # inside the millisecond, not on its edge
        sec = milli // 1000
        expected = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(sec)) + f".{milli % 1000:03d}Z"
        assert timestamp(now) == expected
        assert timestamp_bytes(now) == expected.encode()


# -- the writer ----------------------------------------------------------------------------


async def test_writer_buffers_and_reopens_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    writer = AuditWriter(str(path), flush_interval=60)
    await writer.start()
    writer.write(b'{"n":1}\n')
    assert path.read_bytes() == b""  # nothing written on the caller's path
    await writer.flush()
    assert path.read_bytes() == b'{"n":1}\n'
    path.rename(tmp_path / "audit.log.1")
    writer.write(b'{"n":2}\n')
    writer.reopen()
    await writer.flush()
    writer.write(b'{"n":3}\n')
    await writer.close()
    assert (tmp_path / "audit.log.1").read_bytes() == b'{"n":1}\n'
    assert path.read_bytes() == b'{"n":2}\n{"n":3}\n'


async def test_writer_drops_beyond_max_buffer(tmp_path: Path) -> None:
    writer = AuditWriter(str(tmp_path / "a.log"), flush_interval=60, max_buffer=10)
    await writer.start()
    for _ in range(5):
        writer.write(b"12345678\n")
    assert writer.dropped == 3
    await writer.close()
    assert (tmp_path / "a.log").read_bytes().count(b"\n") == 2


# -- the summary ---------------------------------------------------------------------------


def test_summary_orders_identities_and_lists_alerts() -> None:
    def stmt(subject: str, rows: int, decision: str = "allow") -> bytes:
        return json.dumps(
            {
                "time": "2030-01-01T00:00:00.000Z",
                "event": "statement",
                "subject": subject,
                "rows": rows,
                "bytes": rows * 10,
                "decision": decision,
                "rule": "class:write not allowed" if decision == "deny" else "allow:read",
            }
        ).encode()

    lines = [
        stmt("small", 5),
        stmt("big", 5000),
        stmt("big", 10),
        stmt("small", 0, "deny"),
        b'{"time":"2030-01-01T00:00:01.000Z","event":"alert","rule":"large_results",'
        b'"subject":"big","count":3,"threshold":3}',
        b'{"time":"2030-01-01T00:00:01.000Z","event":"approval_approved","subject":"big"}',
        b'{"time":"2000-01-01T00:00:00.000Z","event":"statement","subject":"old","rows":9999999}',
        b"{not json",
    ]
    summary = summarize_lines(lines, since=1_000_000_000.0 + 10 * 365 * 86400)
    assert [t.subject for t in summary.top("rows")] == ["big", "small"]
    assert summary.identities["big"].bytes == 50100
    assert summary.identities["small"].denied == 1
    assert summary.approvals["approved"] == 1 and summary.unreadable == 1
    text = render(summary)
    assert text.splitlines()[2].endswith("big")
    assert "large_results  big  count=3/3" in text
    assert "old" not in text


async def test_writer_keeps_lines_while_the_disk_is_full_and_never_raises(tmp_path: Path) -> None:
    """Disk full (/dev/full: every write fails with ENOSPC): sessions are not stopped, so
    the writer must not raise; the lines wait (up to max_buffer, then new ones are dropped
    and counted) and go out in order once writing works again."""
    path = tmp_path / "audit.log"
    writer = AuditWriter(str(path), flush_interval=60, max_buffer=40)
    await writer.start()
    writer.write(b'{"n":1}\n')
    await writer.flush()
    writer.path = "/dev/full"
    writer.reopen()
    writer.write(b'{"n":2}\n')
    await writer.flush()  # fails: kept
    assert not writer.healthy and writer.errors == 1
    for n in range(3, 9):
        writer.write(b'{"n":%d}\n' % n)
    await writer.flush()
    assert writer.dropped > 0 and not writer.healthy
    writer.path = str(path)
    writer.reopen()
    await writer.flush()
    assert writer.healthy
    written = [json.loads(x)["n"] for x in path.read_text().splitlines()]
    assert written == list(range(1, 1 + len(written))) and len(written) + writer.dropped == 8
    await writer.close()


async def test_writer_close_on_a_full_disk_does_not_raise(tmp_path: Path) -> None:
    # A graceful stop closes the audit log before the recordings are signed: a failing
    # audit log must not stop that.
    writer = AuditWriter("/dev/full", flush_interval=60)
    await writer.start()
    writer.write(b'{"n":1}\n')
    await writer.close()
    assert writer.errors == 1
