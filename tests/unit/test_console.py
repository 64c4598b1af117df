"""The web console's pieces without a browser: roles, console sessions, escaping, and
recordings read for the timeline (real files written by the real Recorder). The pages
themselves are tested in a real browser in tests/integration/test_console.py."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.console import recordings as console_recordings
from gateway.console import sessions as console_sessions
from gateway.console.html import Markup, h, page, table
from gateway.console.recordings import EventEntry, RecordingIndex, StatementEntry
from gateway.console.sessions import Access, SessionStore
from gateway.recording import ColumnInfo
from protocols.postgres.rows import build_data_row
from tests.unit.test_recording_helpers import (
    make_info,
    new_recorder,
    public_key_file,
    write_sample,
)

CONFIG = """
[auth]
issuer = "https://idp.example.com/"
audience = "db-gateway"
jwks_file = "jwks.json"

[[targets]]
name = "app-pg"
protocol = "postgres"
listen = "127.0.0.1:6432"
host = "db.internal"
port = 5432
database = "app"
user = "gateway"
password_env = "APP_PG_PASSWORD"

[[policies]]
name = "analysts"
groups = ["analysts"]
targets = ["app-pg"]
allow = ["read"]
max_rows = 100
on_limit = "approval"
approvers = ["dba-leads"]

[admin]
listen = "127.0.0.1:8081"
groups = ["gateway-admins"]
auditor_groups = ["auditors"]
"""

SCRIPT = "<script>alert(1)</script>"


def test_roles_follow_the_groups() -> None:
    config = parse_config(textwrap.dedent(CONFIG), Path("/etc/gateway"))
    assert config.admin is not None and config.admin.auditor_groups == ["auditors"]
    admin = Access.of(config, ["gateway-admins"])
    approver = Access.of(config, ["dba-leads", "analysts"])
    auditor = Access.of(config, ["auditors"])
    nobody = Access.of(config, ["analysts"])
    assert admin.kill and admin.approvals and admin.recordings
    assert approver.approvals and not approver.kill and not approver.recordings
    assert auditor.recordings and auditor.sessions and not auditor.approvals and not auditor.kill
    assert not nobody.console and nobody.sections() == frozenset()
    assert approver.sections() == {"approvals", "sessions"}


def test_auditor_groups_default_to_none() -> None:
    text = CONFIG.replace('auditor_groups = ["auditors"]\n', "")
    config = parse_config(textwrap.dedent(text), Path("/etc/gateway"))
    assert config.admin is not None and config.admin.auditor_groups == []
    assert not Access.of(config, ["auditors"]).console


def test_console_session_lives_no_longer_than_its_token() -> None:
    now = [1000.0]
    store = SessionStore(clock=lambda: now[0])
    short = store.create("bob", ["dba-leads"], token_expires_at=1060.0)
    assert short.expires_at == 1060.0
    endless = store.create("bob", ["dba-leads"], token_expires_at=None)
    assert endless.expires_at == 1000.0 + console_sessions.MAX_SESSION
    assert short.id != endless.id and len(short.id) >= 40 and short.csrf != endless.csrf
    assert store.get(short.id) is short
    now[0] = 1060.0
    assert store.get(short.id) is None  # expired and dropped
    assert store.get(endless.id) is endless
    store.drop(endless.id)
    assert store.get(endless.id) is None
    assert store.get(None) is None and store.get("") is None


def test_console_sessions_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_sessions, "MAX_SESSIONS", 3)
    store = SessionStore()
    first, *rest = [store.create(f"u{i}", [], time.time() + 60) for i in range(4)]
    assert len(store) == 3
    assert store.get(first.id) is None
    assert all(store.get(s.id) is s for s in rest)


def test_csrf_token_comparison() -> None:
    session = SessionStore().create("bob", [], None)
    assert session.csrf_ok(session.csrf)
    assert not session.csrf_ok(None)
    assert not session.csrf_ok("")
    assert not session.csrf_ok(session.csrf[:-1])
    assert not session.csrf_ok(session.csrf + "x")


def test_flashes_are_shown_once_and_bounded() -> None:
    session = SessionStore().create("bob", [], None)
    for i in range(8):
        session.flash("ok", str(i))
    assert [t for _, t in session.take_flashes()] == ["3", "4", "5", "6", "7"]
    assert session.take_flashes() == []


def test_everything_is_escaped() -> None:
    assert h(SCRIPT) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert h('" onmouseover="x') == "&quot; onmouseover=&quot;x"
    assert h(None) == ""
    assert h(Markup("<b>ok</b>")) == "<b>ok</b>"
    html = table([SCRIPT], [[SCRIPT, Markup("<i>kept</i>")]])
    assert "<script>" not in html and html.count("&lt;script&gt;") == 2 and "<i>kept</i>" in html
    doc = page(SCRIPT, "", subject=SCRIPT, csrf='x"y', sections=frozenset({"approvals"}))
    assert "<script" not in doc and "<style" not in doc and ' style="' not in doc
    assert 'name="viewport"' in doc and 'value="x&quot;y"' in doc


def test_recording_ids_cannot_leave_the_directory(tmp_path: Path) -> None:
    (tmp_path / "sessions").mkdir()
    (tmp_path / "secret.gwrec").write_bytes(b"x")
    (tmp_path / "sessions" / "ok-1.gwrec").write_bytes(b"x")
    index = RecordingIndex(tmp_path / "sessions", public_key_file(tmp_path))
    assert index.path_of("ok-1") == tmp_path / "sessions" / "ok-1.gwrec"
    for bad in ("../secret", "..", ".hidden", "a/b", "ok-1\x00", "", "x" * 300, "missing"):
        assert index.path_of(bad) is None, bad


async def test_listing_verifies_and_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await write_sample(tmp_path, session_id="20260101T000000Z-aaaa")
    await write_sample(tmp_path, session_id="20260101T000100Z-bbbb", end=False)
    index = RecordingIndex(tmp_path / "sessions", public_key_file(tmp_path))
    listed, total = index.page(1)
    assert total == 2
    assert [x.summary.file_id for x in listed] == ["20260101T000100Z-bbbb", "20260101T000000Z-aaaa"]
    assert [x.verification.label for x in listed] == ["no end frame", "verified"]
    monkeypatch.setattr(console_recordings, "PER_PAGE", 1)
    assert [x.summary.file_id for x in index.page(2)[0]] == ["20260101T000000Z-aaaa"]

    # Altered after it was listed: the cache notices the change.
    path = tmp_path / "sessions" / "20260101T000000Z-aaaa.gwrec"
    data = bytearray(path.read_bytes())
    spot = data.index(b"WHERE k = 1")
    data[spot : spot + 11] = b"WHERE k = 9"
    path.write_bytes(bytes(data))
    assert index.verification(path).label == "ALTERED"

    without_key = RecordingIndex(tmp_path / "sessions", tmp_path / "nope.pub.pem")
    assert without_key.verification(path).label == "not verified"


async def test_timeline_has_statements_results_and_events(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info("20260101T000000Z-tttt"))
        n = rec.statement(text=f"SELECT '{SCRIPT}' AS s, email FROM t", path="simple")
        rec.result_metadata(n, [ColumnInfo("s", type_oid=25), ColumnInfo("email", masked="hash")])
        data = build_data_row([SCRIPT.encode(), b"h:1f2e"]) + build_data_row([None, b"h:99"])
        rec.rows(n, "pg.DataRow", data, 2)
        rec.complete(n, tag="SELECT 2", rows=2, rows_recorded=2, bytes_to_client=99, duration=0.1)
        rec.control("approval_approved", {"approval_id": "apr_1", "decided_by": "bob"})
        d = rec.statement(text="DROP TABLE t", path="simple", decision="deny", rule="no-ddl")
        rec.complete(
            d,
            tag=None,
            rows=0,
            rows_recorded=0,
            bytes_to_client=0,
            duration=0.0,
            error=("42501", "denied"),
        )
        rec.end("client closed")
        await recorder.flush()
    finally:
        await recorder.close()
    index = RecordingIndex(tmp_path / "sessions", public_key_file(tmp_path))
    timeline = index.timeline("20260101T000000Z-tttt")
    assert timeline is not None and timeline.problem is None
    assert timeline.start is not None and timeline.start.subject == "alice@example.com"
    assert timeline.end is not None and timeline.end.reason == "client closed"
    first, event, denied = timeline.entries
    assert isinstance(first, StatementEntry) and first.result is not None
    assert first.result.headers == ["s", "email"]
    assert first.result.rows == [[SCRIPT, "h:1f2e"], [None, "h:99"]]
    assert first.columns is not None and first.columns[1].masked == "hash"
    assert isinstance(event, EventEntry) and event.kind == "approval_approved"
    assert isinstance(denied, StatementEntry) and denied.stmt.decision == "deny"
    assert denied.done is not None and denied.done.error is not None
    assert index.timeline("../x") is None
