"""Findings of the console / admin API security review, each pinned by a test: the real
admin listener (aiohttp, 127.0.0.1, port 0) with real tokens and real recordings written
by the real Recorder; the browser-level checks are in tests/integration/test_console.py."""

from __future__ import annotations

import asyncio
import re
import threading
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.config import parse_config
from gateway.console import recordings as console_recordings
from gateway.console import sessions as console_sessions
from gateway.console.recordings import RecordingIndex, StatementEntry, read_timeline
from gateway.console.sessions import SessionStore
from gateway.recording import ColumnInfo
from protocols.postgres.rows import build_data_row
from tests.unit.test_admin_api import (  # noqa: F401  (keys is a fixture)
    BOB,
    ROOT,
    Admin,
    Keys,
    config_text,
    keys,
    open_request,
    running_admin,
)
from tests.unit.test_recording_helpers import make_info, new_recorder, public_key_file


@pytest.fixture
async def admin(keys: Keys, tmp_path: Path) -> AsyncIterator[Admin]:  # noqa: F811
    async with running_admin(keys, tmp_path) as running:
        yield running


async def console_client(admin: Admin, who: tuple[str, tuple[str, ...]]) -> aiohttp.ClientSession:
    """A browser-like client signed in to the console (cookies kept)."""
    client = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with client.get(admin.url + "/console/login") as response:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await response.text())
    assert csrf is not None
    form = {"csrf": csrf.group(1), "token": admin.token(who)}
    async with client.post(
        admin.url + "/console/login", data=form, allow_redirects=False
    ) as response:
        assert response.status == 303, await response.text()
    return client


# -- sign-in ------------------------------------------------------------------------------


async def test_a_non_ascii_sign_in_form_token_is_refused_not_a_crash(admin: Admin) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        async with client.get(admin.url + "/console/login") as response:
            assert response.status == 200
        async with client.post(
            admin.url + "/console/login",
            data={"csrf": "\u00e9t\u00e9", "token": admin.token(ROOT)},
            allow_redirects=False,
        ) as response:
            text = await response.text()
            # Was a 500: hmac.compare_digest refuses str with non-ASCII characters.
            assert response.status == 403, text
            assert "security token" in text
            assert "gw_console=" not in response.headers.get("Set-Cookie", "")


def test_one_subject_cannot_push_everyone_else_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_sessions, "MAX_SESSIONS", 10)
    monkeypatch.setattr(console_sessions, "MAX_PER_SUBJECT", 3)
    store = SessionStore()
    others = [store.create(f"user{i}", ["dba-leads"], None) for i in range(5)]
    mallory = [store.create("mallory", ["dba-leads"], None) for _ in range(50)]
    assert all(store.get(s.id) is s for s in others)
    # Her newest three are kept, the older ones dropped.
    assert [store.get(s.id) is not None for s in mallory[-4:]] == [False, True, True, True]
    assert len(store) == 8


# -- approvals after a hot reload ------------------------------------------------------------


async def test_approver_group_removed_by_a_reload_no_longer_decides(
    admin: Admin, tmp_path: Path
) -> None:
    """root's group was an approver of the policy when the request was opened; a reload
    takes it out of every policy's approvers (root stays an admin, so the API still lets
    them in): the request opened before must not be decided by them any more."""
    text = config_text(admin.keys, tmp_path).replace(
        'approvers = ["dba-leads"]', 'approvers = ["dba-leads", "gateway-admins"]'
    )
    admin.runtime.apply_config(parse_config(text, tmp_path))
    # What a session paused under that configuration opens (its policy's approvers).
    request = admin.broker.open(
        kind="limit",
        session_id="20260101T000000Z-abc",
        subject="alice",
        groups=["analysts"],
        target="app-pg",
        statement="SELECT * FROM customers",
        policy="analysts",
        approvers=admin.runtime.config.policies[0].approvers,
        timeout=60,
        reason="max_rows=100",
        on_decision=lambda r: None,
    )
    assert request.approvers == {"dba-leads", "gateway-admins"}
    admin.runtime.apply_config(parse_config(config_text(admin.keys, tmp_path), tmp_path))

    status, body, _ = await admin.call("POST", f"/api/approvals/{request.id}/approve", ROOT)
    assert status == 403, body
    assert "approver groups" in body["error"] and "gateway-admins" not in body["error"]
    # dba-leads is still an approver: bob decides it.
    status, body, _ = await admin.call("POST", f"/api/approvals/{request.id}/approve", BOB)
    assert status == 200 and body["decided_by"] == "bob"


async def test_no_approver_left_after_a_reload_means_nobody_decides(
    admin: Admin, tmp_path: Path
) -> None:
    request, _ = open_request(admin.broker)
    text = config_text(admin.keys, tmp_path).replace('["dba-leads"]', '["new-approvers"]')
    admin.runtime.apply_config(parse_config(text, tmp_path))
    problem = admin.broker.may_decide(request, "bob", ("dba-leads", "gateway-admins"))
    assert problem is not None and "configuration changed" in problem


# -- recordings: bounded memory and bounded pages -------------------------------------------

BIG_VALUE = 20_000  # characters per recorded value
CHUNKS = 1000  # one row each: 20 MB of recorded rows in one result


async def write_huge_recording(tmp_path: Path, session_id: str) -> None:
    recorder = new_recorder(tmp_path)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info(session_id))
        n = rec.statement(text="SELECT '" + "s" * 200_000 + "'", path="simple")
        rec.result_metadata(n, [ColumnInfo("v", type_oid=25)])
        for i in range(CHUNKS):
            rec.rows(n, "pg.DataRow", build_data_row([(b"<%d>" % i) * (BIG_VALUE // 6)]), 1)
        rec.complete(
            n,
            tag=f"SELECT {CHUNKS}",
            rows=CHUNKS,
            rows_recorded=CHUNKS,
            bytes_to_client=CHUNKS * BIG_VALUE,
            duration=1.0,
        )
        rec.end("client closed")
        await recorder.flush()
    finally:
        await recorder.close()


async def test_a_huge_result_is_not_held_in_memory_for_the_timeline(tmp_path: Path) -> None:
    await write_huge_recording(tmp_path, "20260101T000000Z-huge")
    path = tmp_path / "sessions" / "20260101T000000Z-huge.gwrec"
    assert path.stat().st_size > 10_000_000
    tracemalloc.start()
    try:
        timeline = read_timeline(path, "20260101T000000Z-huge")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Was every recorded row (20 MB, then decoded again) for 200 shown rows.
    assert peak < 4 * 1024 * 1024, peak
    entry = timeline.entries[0]
    assert isinstance(entry, StatementEntry) and entry.result is not None
    shown = len(entry.result.rows)
    assert 0 < shown <= console_recordings.MAX_ROWS_SHOWN
    assert entry.rows_hidden == CHUNKS - shown
    assert entry.result.rows[0][0] is not None
    assert len(entry.result.rows[0][0]) < console_recordings.MAX_CELL_CHARS + 100
    assert "more characters not shown" in entry.result.rows[0][0]
    assert len(entry.stmt.text) < console_recordings.MAX_TEXT_CHARS + 100


async def test_a_huge_recording_makes_a_bounded_page(admin: Admin, tmp_path: Path) -> None:
    # running_admin's session_dir is tmp_path / "sessions", where the helper records.
    await write_huge_recording(tmp_path, "20260101T000000Z-huge")
    client = await console_client(admin, ROOT)
    url = admin.url + "/console/recordings/20260101T000000Z-huge"
    async with client, client.get(url) as r:
        text = await r.text()
        assert r.status == 200, text
    # Was the whole 200,000-character statement and 200 cells of 20,000 characters (4 MB).
    assert len(text) < 1_000_000, len(text)
    assert "more characters not shown" in text
    assert f"{CHUNKS - text.count('<tr><td>')} more recorded row(s) not shown" in text


def test_listing_a_large_directory_is_cheap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    count = 20_000
    for i in range(count):
        (sessions / f"2026{i:08d}.gwrec").touch()
    (sessions / "notes.txt").touch()
    monkeypatch.setattr(console_recordings, "MAX_CACHED", 60)
    index = RecordingIndex(sessions, public_key_file(tmp_path))
    tracemalloc.start()
    try:
        listed, total = index.page(1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == count
    assert [x.summary.file_id for x in listed[:2]] == [
        f"2026{count - 1:08d}",
        f"2026{count - 2:08d}",
    ]
    # Was a sorted list of 20,000 Path objects (a stat each) for 50 names.
    assert peak < 3 * 1024 * 1024, peak
    listed, _ = index.page(10**9)  # far past the end: an empty page, not an error
    assert listed == [] and total == count
    for number in (2, 3, 4):
        index.page(number)
    # The caches of summaries and verification outcomes stay bounded.
    assert len(index._summaries) <= 60 and len(index._verified) <= 60


async def test_slow_recordings_do_not_take_the_default_executor(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading recordings runs in worker threads. Not asyncio's default executor: the audit
    log writer and name resolution for upstream connections use that one, and a few
    auditors opening huge recordings must not stall them."""
    release = threading.Event()

    def slow_timeline(self: RecordingIndex, file_id: str) -> None:
        release.wait(30)

    monkeypatch.setattr(RecordingIndex, "timeline", slow_timeline)
    client = await console_client(admin, ROOT)
    url = admin.url + "/console/recordings/20260101T000000Z-slow"

    async def open_page() -> int:
        async with client.get(url) as response:
            return response.status

    async with client:
        pages = [asyncio.create_task(open_page()) for _ in range(40)]
        await asyncio.sleep(0.5)  # every request is now waiting in a worker thread
        try:
            assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 5) == "free"
        finally:
            release.set()
        assert set(await asyncio.gather(*pages)) == {404}
