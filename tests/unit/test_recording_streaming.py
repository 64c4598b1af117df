"""Listing, verifying and exporting stream: memory stays bounded by one frame."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.recording.keys import load_or_create_signing_key
from gateway.recording.schema import ZERO_HASH, Rows
from gateway.recording.summary import summarize
from gateway.recording.verify import Status, verify_file
from tests.unit.test_recording_helpers import end_frame, seal_file, start_frame, stmt_frame

FRAME_DATA = 1 << 20  # 1 MiB of rows per frame
FRAMES = 48


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("big")
    key = load_or_create_signing_key(base / "state" / "recording_ed25519.pem")
    chunk = b"D\x00\x00\x00\x0e\x00\x01\x00\x00\x00\x04abcd" * (FRAME_DATA // 15)
    frames: list[object] = [start_frame(key, "big"), stmt_frame(1, 1)]
    for i in range(FRAMES):
        frames.append(
            Rows(seq=2 + i, prev=ZERO_HASH, stmt=1, enc="pg.DataRow", count=1, data=chunk)
        )
    frames.append(end_frame(2 + FRAMES))
    (base / "sessions").mkdir()
    path = base / "sessions" / "big.gwrec"
    path.write_bytes(seal_file(frames, key))
    assert path.stat().st_size > FRAMES * FRAME_DATA * 0.99
    return path, base / "state" / "recording_ed25519.pub.pem"


def peak_during(fn: object) -> int:
    assert callable(fn)
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_verify_memory_is_one_frame(big_file: tuple[Path, Path]) -> None:
    path, pub = big_file
    from gateway.recording.keys import load_public_key

    key = load_public_key(pub)
    results = []
    peak = peak_during(lambda: results.append(verify_file(path, key)))
    assert results[0].status is Status.OK
    assert peak < 4 * FRAME_DATA, peak  # a 48 MiB file, a few MiB at most


def test_summary_skips_rows_without_reading_them(big_file: tuple[Path, Path]) -> None:
    path, _ = big_file
    summaries = []
    peak = peak_during(lambda: summaries.append(summarize(path)))
    assert summaries[0] is not None and summaries[0].complete
    # The reader's 1 MiB buffer, but no 1 MiB payload on top: rows frames are seeked over.
    assert peak < 1.5 * FRAME_DATA, peak


def test_export_streams(big_file: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = big_file
    counter = {"lines": 0}

    class Out:
        class buffer:  # mimics sys.stdout.buffer
            @staticmethod
            def write(data: bytes) -> int:
                counter["lines"] += data.count(b"\n")
                return len(data)

            @staticmethod
            def flush() -> None:
                pass

    monkeypatch.setattr(sys, "stdout", Out)
    codes = []
    peak = peak_during(lambda: codes.append(main(["sessions", "export", str(path)])))
    assert codes == [0] and counter["lines"] == FRAMES + 3
    # A few copies of one frame (payload, decoded bytes, JSON), never the 48 MiB file.
    assert peak < 10 * FRAME_DATA, peak
