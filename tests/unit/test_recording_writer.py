"""The asyncio recorder: many sessions, checkpoints, backpressure, disk failures."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import stat
from pathlib import Path

import pytest

from gateway.recording import Recorder, RecordingUnavailable
from gateway.recording import sink as sink_module
from gateway.recording.keys import load_public_key
from gateway.recording.reader import RecordingReader
from gateway.recording.schema import Ckpt, ColumnInfo, Done, End, Meta, Rows, Start, Stmt
from gateway.recording.session import HOLD_BYTES
from gateway.recording.verify import Status, verify_file
from protocols.postgres.rows import iter_data_rows
from tests.unit.test_recording_helpers import (
    COLUMNS,
    make_info,
    new_recorder,
    public_key_file,
    sample_rows,
)


def frames_of(path: Path) -> list[object]:
    with RecordingReader(path) as reader:
        # Statements batched in "execs" frames read as their stmt/meta/rows/done frames.
        return [frame for _, frame in reader.logical_frames()]


async def test_one_session_round_trip(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path)
    await recorder.start()
    try:
        info = make_info("sess-1")
        rec = recorder.open_session(info)
        n = rec.statement(
            text="SELECT * FROM t WHERE id = $1",
            path="extended",
            statement_name="s1",
            parameters=["7", b"\x00\x01", None],
        )
        assert n.stmt == 1
        rec.result_metadata(n, COLUMNS)
        data = sample_rows(5)
        rec.rows(n, "pg.DataRow", data, 5)
        rec.complete(
            n, tag="SELECT 5", rows=5, rows_recorded=5, bytes_to_client=len(data), duration=0.01
        )
        m = rec.statement(text="DROP TABLE t", path="simple", decision="deny", rule="no-ddl")
        assert m.stmt == 2
        rec.complete(
            m,
            tag=None,
            rows=0,
            rows_recorded=0,
            bytes_to_client=0,
            duration=0.0,
            error=("42501", "permission denied"),
        )
        rec.control("approval", {"id": "a1", "decision": "approved"})
        rec.end("client closed")
        rec.end("again")  # idempotent
    finally:
        await recorder.close()
    path = tmp_path / "sessions" / "sess-1.gwrec"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    frames = frames_of(path)
    kinds = [type(f).__name__ for f in frames]
    assert kinds[:5] == ["Start", "Stmt", "Meta", "Rows", "Done"]
    assert kinds[-1] == "End" and kinds.count("End") == 1
    start = frames[0]
    assert isinstance(start, Start)
    assert start.subject == info.subject and start.groups == list(info.groups)
    assert start.token_id == "jti-123" and start.tls == info.tls
    assert start.key_fp == recorder.key_fingerprint
    stmt = frames[1]
    assert isinstance(stmt, Stmt)
    assert stmt.params == ["7", b"\x00\x01", None] and stmt.name == "s1"
    rows = next(f for f in frames if isinstance(f, Rows))
    assert rows.data == data and rows.count == 5
    assert len(list(iter_data_rows(rows.data))) == 5
    end = frames[-1]
    assert isinstance(end, End)
    assert (end.statements, end.rows, end.bytes_to_client, end.denied) == (2, 5, len(data), 1)
    assert end.reason == "client closed"
    result = verify_file(path, load_public_key(public_key_file(tmp_path)))
    assert result.status is Status.OK, result.message


async def test_memoryview_is_copied(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path, fsync_interval=10)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info("mv"))
        n = rec.statement(text="SELECT 1", path="simple")
        original = sample_rows(3)
        buf = bytearray(original)
        rec.rows(n, "pg.DataRow", memoryview(buf)[: len(original)], 3)
        buf[:] = b"X" * len(buf)  # the caller reuses its buffer at once
        rec.end("done")
    finally:
        await recorder.close()
    rows = [f for f in frames_of(tmp_path / "sessions" / "mv.gwrec") if isinstance(f, Rows)]
    assert rows[0].data == original


async def test_many_sessions_concurrently(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path, fsync_interval=0.02)
    await recorder.start()
    sent: dict[str, list[bytes]] = {}

    async def session(i: int) -> None:
        sid = f"many-{i:03d}"
        rec = recorder.open_session(make_info(sid))
        sent[sid] = []
        for k in range(20):
            n = rec.statement(text=f"SELECT {k}", path="simple")
            rec.result_metadata(n, COLUMNS)
            data = sample_rows(random.randint(1, 50), k)
            sent[sid].append(data)
            rec.rows(n, "pg.DataRow", memoryview(data), 0)
            rec.complete(
                n, tag="SELECT", rows=1, rows_recorded=1, bytes_to_client=len(data), duration=0.0
            )
            await asyncio.sleep(random.random() / 200)
        rec.end("client closed")

    try:
        await asyncio.gather(*(session(i) for i in range(60)))
    finally:
        await recorder.close()
    key = load_public_key(public_key_file(tmp_path))
    files = sorted((tmp_path / "sessions").glob("*.gwrec"))
    assert len(files) == 60
    for path in files:
        result = verify_file(path, key)
        assert result.status is Status.OK, (path, result.message)
        got = [f.data for f in frames_of(path) if isinstance(f, Rows)]
        assert got == sent[path.stem]


async def test_checkpoints_sign_a_live_session(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path, fsync_interval=0.02)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info("live"))
        rec.statement(text="SELECT 1", path="simple")
        # Several ticks (a flush is one; timer ticks may come between): only one
        # checkpoint, as nothing new was recorded after it.
        for _ in range(3):
            await recorder.flush()
        path = tmp_path / "sessions" / "live.gwrec"
        result = verify_file(path, load_public_key(public_key_file(tmp_path)))
        assert result.status is Status.INCOMPLETE
        assert result.signed_through == 2 and result.unsigned_tail == 0
        assert "ended without an end frame" in result.message
        kinds = [type(f).__name__ for f in frames_of(path)]
        assert kinds == ["Start", "Stmt", "Ckpt"]
        rec.end("client closed")
    finally:
        await recorder.close()


async def test_close_ends_open_sessions(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path, fsync_interval=10)
    await recorder.start()
    rec = recorder.open_session(make_info("open"))
    rec.statement(text="SELECT 1", path="simple")
    await recorder.close()
    frames = frames_of(tmp_path / "sessions" / "open.gwrec")
    assert isinstance(frames[-1], End) and frames[-1].reason == "gateway shutdown"
    # Calls after the end are ignored (and logged once), never written after it.
    rec.statement(text="SELECT 2", path="simple")
    rec.end("again")
    assert len(frames_of(tmp_path / "sessions" / "open.gwrec")) == len(frames)


async def test_backpressure_pauses_and_resumes(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path, fsync_interval=30, max_buffer=64 * 1024)
    await recorder.start()
    events: list[str] = []
    resumed = asyncio.Event()

    def resume() -> None:
        events.append("resume")
        resumed.set()

    try:
        rec = recorder.open_session(make_info("bp"))
        rec.set_flow_control(lambda: events.append("pause"), resume)
        n = rec.statement(text="SELECT big", path="simple")
        rec.rows(n, "pg.DataRow", sample_rows(100), 100)
        assert events == []
        rec.rows(n, "pg.DataRow", b"D\x00\x00\x00\x06\x00\x00" * 12000, 12000)  # ~84 KiB
        assert events == ["pause"]  # synchronously, inside the call
        rec.rows(n, "pg.DataRow", sample_rows(10), 10)
        assert events == ["pause"]  # not twice
        # The writer was woken (no tick for 30 s): it drains and resumes us.
        await asyncio.wait_for(resumed.wait(), 5)
        assert events == ["pause", "resume"]
        assert rec.backlog == 0
        rec.end("done")
    finally:
        await recorder.close()


async def test_set_flow_control_when_already_over(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path, fsync_interval=30, max_buffer=1024)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info("bp2"))
        st = rec.statement("SELECT 1", "simple")
        # Bigger than one held chunk: written to the buffer at once, over max_buffer.
        rec.rows(st, "pg.DataRow", bytes(HOLD_BYTES + 1), 0)
        events: list[str] = []
        rec.set_flow_control(lambda: events.append("pause"), lambda: events.append("resume"))
        assert events == ["pause"]
        await recorder.flush()
        assert events == ["pause", "resume"]
        rec.end("done")
    finally:
        await recorder.close()


def _failing_write(fd: int, data: memoryview) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("mode", ["refuse", "continue"])
async def test_disk_full_keeps_data_and_applies_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    recorder = new_recorder(tmp_path, fsync_interval=0.02, on_failure=mode)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info("full"))
        n = rec.statement(text="SELECT 1", path="simple")
        await recorder.flush()
        assert recorder.healthy
        monkeypatch.setattr(sink_module, "_write", _failing_write)
        with caplog.at_level(logging.ERROR, logger="gateway.recording"):
            rec.rows(n, "pg.DataRow", sample_rows(3), 3)
            rec.complete(n, tag="SELECT 3", rows=3, rows_recorded=3, bytes_to_client=1, duration=0)
            await recorder.flush()
            assert not recorder.healthy
            assert rec.backlog > 0  # kept, not dropped
            assert any("ALERT" in r.message and "ENOSPC" in str(r.__dict__) for r in caplog.records)
            if mode == "refuse":
                with pytest.raises(RecordingUnavailable, match="ENOSPC"):
                    recorder.open_session(make_info("refused"))
            else:
                other = recorder.open_session(make_info("continued"))
                other.end("done")
                assert any("proceeds" in r.message for r in caplog.records)
        monkeypatch.undo()
        await recorder.flush()  # the writer retries; everything lands
        assert recorder.healthy
        assert rec.backlog == 0
        rec.end("client closed")
    finally:
        await recorder.close()
    key = load_public_key(public_key_file(tmp_path))
    result = verify_file(tmp_path / "sessions" / "full.gwrec", key)
    assert result.status is Status.OK, result.message
    kinds = [type(f) for f in frames_of(tmp_path / "sessions" / "full.gwrec")]
    assert Rows in kinds and Done in kinds
    if mode == "continue":
        assert verify_file(tmp_path / "sessions" / "continued.gwrec", key).status is Status.OK


async def test_partial_writes_are_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def short_write(fd: int, data: memoryview) -> int:
        return real_write(fd, data[: max(1, len(data) // 3)])

    monkeypatch.setattr(sink_module, "_write", short_write)
    recorder = new_recorder(tmp_path)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info("short"))
        for i in range(5):
            n = rec.statement(text=f"SELECT {i}", path="simple")
            rec.rows(n, "pg.DataRow", sample_rows(20), 20)
        rec.end("done")
    finally:
        await recorder.close()
    key = load_public_key(public_key_file(tmp_path))
    assert verify_file(tmp_path / "sessions" / "short.gwrec", key).status is Status.OK


async def test_unwritable_dir_refuse_mode(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the session directory should be")
    recorder = Recorder(
        blocker / "sessions",
        signing_key_path=tmp_path / "state" / "recording_ed25519.pem",
        on_failure="refuse",
    )
    with pytest.raises(RecordingUnavailable, match="not writable"):
        await recorder.start()
    with pytest.raises(RecordingUnavailable):
        recorder.open_session(make_info("x"))


async def test_unwritable_dir_continue_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    recorder = Recorder(
        blocker / "sessions",
        signing_key_path=tmp_path / "state" / "recording_ed25519.pem",
        on_failure="continue",
        fsync_interval=0.02,
    )
    with caplog.at_level(logging.ERROR, logger="gateway.recording"):
        await recorder.start()
        try:
            assert not recorder.healthy
            rec = recorder.open_session(make_info("proceeds"))  # proceeds, with an alert
            rec.statement(text="SELECT 1", path="simple")
            assert any("ALERT" in r.message for r in caplog.records)
            assert any("proceeds" in r.message for r in caplog.records)
            # Make the directory usable: the retry writes the held frames.
            blocker.unlink()
            await recorder.flush()
            await recorder.flush()
            assert recorder.healthy
            rec.end("done")
        finally:
            await recorder.close()
    key = load_public_key(public_key_file(tmp_path))
    assert verify_file(blocker / "sessions" / "proceeds.gwrec", key).status is Status.OK


async def test_refuse_mode_recovers_without_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = new_recorder(tmp_path, fsync_interval=0.02)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info("a"))
        monkeypatch.setattr(sink_module, "_write", _failing_write)
        rec.end("done")
        await recorder.flush()
        assert not recorder.healthy
        monkeypatch.undo()
        await recorder.flush()  # writes session a's pending bytes
        await recorder.flush()
        assert recorder.healthy
        recorder.open_session(make_info("b")).end("done")
    finally:
        await recorder.close()


async def test_key_generated_0600_with_public_half(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path)
    await recorder.start()
    await recorder.close()
    private = tmp_path / "state" / "recording_ed25519.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public_key_file(tmp_path).exists()
    # A second start reuses the same key.
    again = new_recorder(tmp_path)
    await again.start()
    assert again.key_fingerprint == recorder.key_fingerprint
    await again.close()


async def test_bad_key_file_is_a_startup_error(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "recording_ed25519.pem").write_text("not a key")
    recorder = new_recorder(tmp_path)
    with pytest.raises(RecordingUnavailable, match="signing key"):
        await recorder.start()


async def test_session_ids_are_checked(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path)
    await recorder.start()
    try:
        for bad in ("../escape", "a/b", "", ".hidden", "x" * 300):
            with pytest.raises(ValueError):
                recorder.open_session(make_info(bad))
        recorder.open_session(make_info("dup"))
        with pytest.raises(ValueError, match="already"):
            recorder.open_session(make_info("dup"))
    finally:
        await recorder.close()


async def test_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "sessions").mkdir()
    evidence = tmp_path / "sessions" / "same.gwrec"
    evidence.write_bytes(b"earlier evidence")
    recorder = new_recorder(tmp_path)
    await recorder.start()
    try:
        recorder.open_session(make_info("same")).end("done")
    finally:
        await recorder.close()
    assert evidence.read_bytes() == b"earlier evidence"
    moved = tmp_path / "sessions" / "same~1.gwrec"
    key = load_public_key(public_key_file(tmp_path))
    assert verify_file(moved, key).status is Status.OK


async def test_flush_and_close_are_safe_before_start(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path)
    await recorder.flush()
    await recorder.close()
    with pytest.raises(RecordingUnavailable):
        recorder.open_session(make_info("x"))


async def test_metadata_frames_keep_column_details(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info("meta"))
        rec.result_metadata(rec.statement(text="SELECT", path="simple"), COLUMNS)
        rec.end("done")
    finally:
        await recorder.close()
    meta = [f for f in frames_of(tmp_path / "sessions" / "meta.gwrec") if isinstance(f, Meta)]
    assert meta[0].columns == COLUMNS


async def test_checkpoint_frames_only_when_something_new(tmp_path: Path) -> None:
    recorder = new_recorder(tmp_path, fsync_interval=0.01)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info("idle"))
        # Ticks while idle (flushes, and timer ticks between them) add no checkpoint
        # after the first.
        for _ in range(3):
            await recorder.flush()
        rec.statement(text="SELECT 1", path="simple")
        for _ in range(3):
            await recorder.flush()
        rec.end("done")
    finally:
        await recorder.close()
    kinds = [type(f) for f in frames_of(tmp_path / "sessions" / "idle.gwrec")]
    assert kinds == [Start, Ckpt, Stmt, Ckpt, End]


async def test_big_parameters_and_wide_metadata_are_not_held_back(tmp_path: Path) -> None:
    """What a statement holds back for its batch item is bounded (HOLD_BYTES), so the
    batch estimate stays true and backpressure sees big statements at once."""
    recorder = new_recorder(tmp_path, fsync_interval=30, max_buffer=1 << 20)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info("bounded"))
        events: list[str] = []
        rec.set_flow_control(lambda: events.append("pause"), lambda: events.append("resume"))
        for _ in range(3):
            st = rec.statement("INSERT INTO t VALUES ($1)", "extended", None, ["x" * (1 << 19)])
            rec.complete(st, "INSERT 0 1", 0, 0, 0, 0.0)
        assert events == ["pause"]  # 1.5 MiB of parameters: over max_buffer at once
        assert rec._batch == []  # written as separate frames, not held
        wide = [ColumnInfo(name=f"c{i}", type_oid=23) for i in range(2000)]
        st = rec.statement("SELECT wide", "simple")
        rec.result_metadata(st, wide)
        rec.complete(st, "SELECT 0", 0, 0, 0, 0.0)
        assert rec._batch == []
        for i in range(5):
            st = rec.statement(f"SELECT {i}", "simple", None, ["1"])
            rec.complete(st, "SELECT 1", 1, 0, 0, 0.0)
        assert len(rec._batch) == 5  # short statements are still batched
        rec.end("done")
    finally:
        await recorder.close()
    path = tmp_path / "sessions" / "bounded.gwrec"
    frames = frames_of(path)
    texts = [f.text for f in frames if isinstance(f, Stmt)]
    assert texts.count("INSERT INTO t VALUES ($1)") == 3 and "SELECT wide" in texts
    assert [t for t in texts if t.startswith("SELECT ") and t != "SELECT wide"] == [
        f"SELECT {i}" for i in range(5)
    ]
    assert verify_file(path, load_public_key(public_key_file(tmp_path))).status is Status.OK
