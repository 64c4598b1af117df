"""Verification: tampering of every kind is caught and named; crashes are told apart."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.recording.keys import load_or_create_signing_key, load_public_key
from gateway.recording.reader import RecordingReader
from gateway.recording.schema import HEADER, LENGTH, Rows, UnknownFrame, frame_hash
from gateway.recording.sink import seal_frames
from gateway.recording.verify import Status, VerifyResult, named_session_id, verify_file
from tests.unit.test_recording_helpers import (
    ckpt_frame,
    encode_frame,
    end_frame,
    frame_spans,
    generic_frames,
    public_key_file,
    rechain,
    seal_file,
    start_frame,
    stmt_frame,
    write_sample,
)


def check(path: Path, tmp_path: Path) -> VerifyResult:
    return verify_file(path, load_public_key(public_key_file(tmp_path)))


def private_key(tmp_path: Path) -> Ed25519PrivateKey:
    return load_or_create_signing_key(tmp_path / "state" / "recording_ed25519.pem")


@pytest.fixture
async def sample(tmp_path: Path) -> Path:
    return await write_sample(tmp_path)


def rows_frame_index(path: Path) -> int:
    with RecordingReader(path) as reader:
        return next(raw.index for raw, f in reader.frames() if isinstance(f, Rows))


def test_intact_file_verifies(sample: Path, tmp_path: Path) -> None:
    result = check(sample, tmp_path)
    assert result.status is Status.OK, result.message
    assert result.end_index == result.frames - 1 == result.signed_through
    assert result.session_id == "s1"


def test_flipped_byte_in_rows_data(sample: Path, tmp_path: Path) -> None:
    k = rows_frame_index(sample)
    offset, size = frame_spans(sample)[k]
    data = bytearray(sample.read_bytes())
    data[offset + size - 3] ^= 0x01  # inside the row bytes: still decodes
    sample.write_bytes(data)
    result = check(sample, tmp_path)
    assert result.status is Status.ALTERED
    # Detected where the next frame's prev no longer matches frame k.
    assert result.bad_index == k + 1
    assert f"frame {k} (offset {offset})" in result.message
    assert result.bad_offset == frame_spans(sample)[k + 1][0]


def test_flipped_byte_in_end_frame(sample: Path, tmp_path: Path) -> None:
    spans = frame_spans(sample)
    offset, size = spans[-1]
    data = bytearray(sample.read_bytes())
    data[offset + size - 70] ^= 0x40  # a totals field, before the signature
    sample.write_bytes(data)
    result = check(sample, tmp_path)
    assert result.status is Status.ALTERED
    assert result.bad_index == len(spans) - 1


def test_every_single_byte_flip_is_detected(sample: Path, tmp_path: Path) -> None:
    original = sample.read_bytes()
    key = load_public_key(public_key_file(tmp_path))
    # Every 7th byte (all bytes would be slow-ish): no flip may verify as OK.
    for i in range(0, len(original), 7):
        data = bytearray(original)
        data[i] ^= 0x10
        sample.write_bytes(data)
        result = verify_file(sample, key)
        assert result.status is not Status.OK, f"flip at {i} went unnoticed"


def test_deleted_frame(sample: Path, tmp_path: Path) -> None:
    spans = frame_spans(sample)
    offset, size = spans[3]
    data = sample.read_bytes()
    sample.write_bytes(data[:offset] + data[offset + size :])
    result = check(sample, tmp_path)
    assert result.status is Status.ALTERED
    assert (result.bad_index, result.bad_offset) == (3, offset)
    assert "sequence number 4" in result.message


def test_swapped_frames(sample: Path, tmp_path: Path) -> None:
    spans = frame_spans(sample)
    (o2, s2), (o3, s3) = spans[2], spans[3]
    data = sample.read_bytes()
    swapped = data[:o2] + data[o3 : o3 + s3] + data[o2 : o2 + s2] + data[o3 + s3 :]
    sample.write_bytes(swapped)
    result = check(sample, tmp_path)
    assert result.status is Status.ALTERED
    assert (result.bad_index, result.bad_offset) == (2, o2)
    assert "removed, inserted or reordered" in result.message


def test_forged_frame_appended_after_end(sample: Path, tmp_path: Path) -> None:
    # A well-formed, correctly chained frame: anyone can compute SHA-256, so the
    # forger re-seals the genuine frames (same bytes, same hashes) plus theirs.
    frames = generic_frames(sample)
    forger = Ed25519PrivateKey.generate()
    whole = seal_file([*frames, stmt_frame(len(frames), 99)], forger)
    genuine = sample.read_bytes()
    forged_tail = whole[len(genuine) :]
    sample.write_bytes(genuine + forged_tail)
    result = check(sample, tmp_path)
    assert result.status is Status.ALTERED
    assert result.bad_index == len(frames)
    assert "follows the end frame" in result.message


def test_forgery_rechained_and_resigned_with_another_key(sample: Path, tmp_path: Path) -> None:
    frames = generic_frames(sample)
    del frames[3]  # remove a statement's metadata, then re-chain everything
    sample.write_bytes(rechain(frames, Ed25519PrivateKey.generate()))
    result = check(sample, tmp_path)
    assert result.status is Status.ALTERED
    assert "bad signature" in result.message


def test_forgery_that_also_swaps_the_key_fingerprint(sample: Path, tmp_path: Path) -> None:
    from gateway.recording.keys import fingerprint

    forger = Ed25519PrivateKey.generate()
    frames = generic_frames(sample)
    frames[0]["key_fp"] = fingerprint(forger.public_key())
    sample.write_bytes(rechain(frames, forger))
    result = check(sample, tmp_path)
    assert result.status is Status.ALTERED
    assert (result.bad_index, result.bad_offset) == (0, len(HEADER))
    assert "names signing key" in result.message


def test_wrong_verification_key(sample: Path) -> None:
    result = verify_file(sample, Ed25519PrivateKey.generate().public_key())
    assert result.status is Status.ALTERED
    assert "wrong --key" in result.message


def test_truncated_mid_frame(sample: Path, tmp_path: Path) -> None:
    spans = frame_spans(sample)
    offset, size = spans[5]
    sample.write_bytes(sample.read_bytes()[: offset + size // 2])
    result = check(sample, tmp_path)
    assert result.status is Status.TRUNCATED
    assert (result.bad_index, result.bad_offset) == (5, offset)
    assert "truncated inside frame 5" in result.message
    assert "frames 0-4 verify" in result.message


def test_truncated_inside_length_prefix(sample: Path, tmp_path: Path) -> None:
    offset, _ = frame_spans(sample)[4]
    sample.write_bytes(sample.read_bytes()[: offset + 2])
    result = check(sample, tmp_path)
    assert result.status is Status.TRUNCATED
    assert result.bad_index == 4


def test_clean_cut_is_incomplete_not_tampered(sample: Path, tmp_path: Path) -> None:
    spans = frame_spans(sample)
    offset, _ = spans[-1]  # drop the end frame exactly
    sample.write_bytes(sample.read_bytes()[:offset])
    result = check(sample, tmp_path)
    assert result.status is Status.INCOMPLETE
    assert "ended without an end frame" in result.message
    assert result.signed_through == len(spans) - 2  # the checkpoint before the end
    assert result.unsigned_tail == 0


def test_unsigned_forged_tail_on_a_crashed_file_is_reported(tmp_path: Path) -> None:
    key = private_key(tmp_path)
    prefix = [start_frame(key), stmt_frame(1, 1), ckpt_frame(2)]
    genuine = seal_file(prefix, key)
    path = tmp_path / "s1.gwrec"  # named after its session (start_frame)
    path.write_bytes(genuine)
    offset, size = frame_spans(path)[-1]
    # The forger chains a new frame onto the genuine last frame; it is unsigned.
    forged = bytearray(encode_frame(stmt_frame(3, 2)))
    seal_frames(forged, frame_hash(genuine[offset : offset + size]), lambda m: bytes(64))
    path.write_bytes(genuine + forged)
    result = check(path, tmp_path)
    # Indistinguishable from frames written after the last checkpoint before a
    # crash: reported as incomplete, with the unsigned frames counted.
    assert result.status is Status.INCOMPLETE
    assert result.signed_through == 2 and result.unsigned_tail == 1
    assert "not signed" in result.message


def test_unknown_future_frame_type_is_skipped(tmp_path: Path) -> None:
    key = private_key(tmp_path)
    future = {"t": "approval2", "seq": 2, "prev": bytes(32), "approver": "bob", "votes": [1, 2]}
    path = tmp_path / "s1.gwrec"
    path.write_bytes(
        seal_file([start_frame(key), stmt_frame(1, 1), future, stmt_frame(3, 2), end_frame(4)], key)
    )
    result = check(path, tmp_path)
    assert result.status is Status.OK, result.message
    assert len(result.notices) == 1 and "unknown type 'approval2'" in result.notices[0]
    with RecordingReader(path) as reader:
        frames = [f for _, f in reader.frames()]
    assert isinstance(frames[2], UnknownFrame) and frames[2].fields["approver"] == "bob"


def test_named_session_id() -> None:
    assert named_session_id(Path("d/20260101T000000Z-aaaa.gwrec")) == "20260101T000000Z-aaaa"
    # The writer's suffix for a taken name (sink.SessionFile) is not part of the id.
    assert named_session_id(Path("s1~1.gwrec")) == "s1"
    assert named_session_id(Path("s1~12.gwrec")) == "s1"
    assert named_session_id(Path("s1~x.gwrec")) == "s1~x"
    assert named_session_id(Path("s1.gwrec.bak")) == "s1.gwrec.bak"


async def test_file_named_after_another_session_fails(tmp_path: Path) -> None:
    # Two genuine, intact recordings swapped: each verifies on its own, but neither is
    # the session its name claims, so neither may pass as that session.
    a = await write_sample(tmp_path, session_id="20260101T000000Z-aaaa")
    c = await write_sample(tmp_path, session_id="20260101T000001Z-cccc")
    a_bytes, c_bytes = a.read_bytes(), c.read_bytes()
    a.write_bytes(c_bytes)
    c.write_bytes(a_bytes)
    result = check(a, tmp_path)
    assert result.status is Status.ALTERED
    assert result.message.startswith(
        "file 20260101T000000Z-aaaa.gwrec holds session 20260101T000001Z-cccc"
    )
    assert "its frames verify" in result.message  # the contents themselves are intact
    assert result.bad_index == 0 and result.bad_offset == len(HEADER)
    assert result.session_id == "20260101T000001Z-cccc"
    # Opting out (a caller that checks names itself) sees the intact file.
    key = load_public_key(public_key_file(tmp_path))
    assert verify_file(a, key, check_name=False).status is Status.OK


async def test_renamed_incomplete_file_fails(tmp_path: Path) -> None:
    path = await write_sample(tmp_path, session_id="s1", end=False)
    moved = path.with_name("s2.gwrec")
    path.rename(moved)
    result = check(moved, tmp_path)
    assert result.status is Status.ALTERED and "holds session s1" in result.message
    assert "ended without an end frame" in result.message


async def test_writer_suffix_for_a_taken_name_verifies(sample: Path, tmp_path: Path) -> None:
    for name in ("s1~1.gwrec", "s1~27.gwrec"):
        copy = sample.with_name(name)
        copy.write_bytes(sample.read_bytes())
        assert check(copy, tmp_path).status is Status.OK
    odd = sample.with_name("s1~x.gwrec")
    odd.write_bytes(sample.read_bytes())
    assert check(odd, tmp_path).status is Status.ALTERED


def test_not_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "x.gwrec"
    path.write_bytes(b"hello world, not a recording")
    key = private_key(tmp_path).public_key()
    result = verify_file(path, key)
    assert result.status is Status.ALTERED and "bad magic" in result.message


def test_header_only(tmp_path: Path) -> None:
    path = tmp_path / "empty.gwrec"
    path.write_bytes(HEADER)
    result = verify_file(path, private_key(tmp_path).public_key())
    assert result.status is Status.INCOMPLETE


def test_impossible_length(sample: Path, tmp_path: Path) -> None:
    offset, _ = frame_spans(sample)[2]
    data = bytearray(sample.read_bytes())
    data[offset : offset + 4] = LENGTH.pack(0xFFFFFFF0)
    sample.write_bytes(data)
    result = check(sample, tmp_path)
    assert result.status is Status.ALTERED
    assert result.bad_index == 2 and "impossible length" in result.message


def test_start_frame_must_come_first(tmp_path: Path) -> None:
    key = private_key(tmp_path)
    path = tmp_path / "nostart.gwrec"
    path.write_bytes(seal_file([stmt_frame(0, 1), end_frame(1)], key))
    result = verify_file(path, key.public_key())
    assert result.status is Status.ALTERED and "not a start frame" in result.message


def test_progress_is_reported(sample: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    key = load_public_key(public_key_file(tmp_path))
    verify_file(sample, key, progress=lambda d, t: seen.append((d, t)), progress_every=200)
    size = sample.stat().st_size
    assert len(seen) >= 3 and seen[-1] == (size, size)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))


# -- a real crash: the writer process is killed with SIGKILL ----------------------------

CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from gateway.recording import Recorder
    from tests.unit.test_recording_helpers import make_info, sample_rows, COLUMNS

    async def main():
        base = Path(sys.argv[1])
        recorder = Recorder(base / "sessions",
                            signing_key_path=base / "state" / "recording_ed25519.pem",
                            fsync_interval=3600)
        await recorder.start()
        rec = recorder.open_session(make_info("crash"))
        for i in range(5):
            n = rec.statement(text=f"SELECT {i}", path="simple")
            rec.result_metadata(n, COLUMNS)
            rec.rows(n, "pg.DataRow", sample_rows(10), 10)
            rec.complete(n, tag="SELECT 10", rows=10, rows_recorded=10,
                         bytes_to_client=1, duration=0.001)
        await recorder.flush()          # written, fsynced, checkpointed
        n = rec.statement(text="SELECT big", path="simple")
        rec.rows(n, "pg.DataRow", sample_rows(20000), 20000)   # > wake size: written early
        for _ in range(100):
            await asyncio.sleep(0.02)
            if rec.backlog == 0:
                break
        rec.statement(text="SELECT never written", path="simple")  # stays in memory
        print("ready", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def test_sigkill_leaves_a_verifiable_prefix(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "src")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=root,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"ready\n", line
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    path = tmp_path / "sessions" / "crash.gwrec"
    with RecordingReader(path) as reader:
        frames = [f for _, f in reader.frames()]  # every complete frame decodes
        assert reader.truncation is None
    texts = [getattr(f, "text", None) for f in frames]
    assert "SELECT big" in texts and "SELECT never written" not in texts
    result = check(path, tmp_path)
    assert result.status is Status.INCOMPLETE
    assert "ended without an end frame" in result.message
    # Frames up to the checkpoint are signed; the big statement after it is chained only.
    assert result.signed_through is not None and result.unsigned_tail == 2
