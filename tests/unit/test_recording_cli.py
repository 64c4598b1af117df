"""`gateway sessions ...` through the real argument parser (gateway.cli.main)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.recording import ColumnInfo
from gateway.recording import cli as rcli
from gateway.recording.keys import load_or_create_signing_key
from protocols.postgres.rows import build_data_row
from tests.unit.test_recording_helpers import (
    end_frame,
    frame_spans,
    make_info,
    new_recorder,
    seal_file,
    start_frame,
    stmt_frame,
    write_sample,
)

BOB_COLUMNS = [ColumnInfo("id", type_oid=23), ColumnInfo("name", type_oid=25)]


@pytest.fixture
async def sessions(tmp_path: Path) -> Path:
    """Two complete sessions (alice, bob) and one without an end frame (carol)."""
    await write_sample(tmp_path, session_id="20260101T000000Z-aaaa")
    recorder = new_recorder(tmp_path)
    await recorder.start()
    try:
        rec = recorder.open_session(
            make_info("20260101T000100Z-bbbb", subject="bob@example.com", target="other-pg")
        )
        n = rec.statement(text="SELECT id, name\nFROM   customers", path="simple")
        rec.result_metadata(n, BOB_COLUMNS)
        data = build_data_row([b"1", b"alice"]) + build_data_row([b"22", None])
        rec.rows(n, "pg.DataRow", data, 2)
        rec.complete(n, tag="SELECT 5", rows=5, rows_recorded=2, bytes_to_client=999, duration=0.25)
        d = rec.statement(
            text="DROP TABLE customers", path="simple", decision="deny", rule="no-ddl"
        )
        rec.complete(
            d,
            tag=None,
            rows=0,
            rows_recorded=0,
            bytes_to_client=0,
            duration=0.0,
            error=("42501", "permission denied for table customers"),
        )
        p = rec.statement(
            text="INSERT INTO t VALUES ($1, $2)",
            path="extended",
            statement_name="ins",
            parameters=["x", b"\x01", None],
        )
        rec.complete(
            p, tag="INSERT 0 1", rows=1, rows_recorded=0, bytes_to_client=20, duration=0.001
        )
        rec.control("approval", {"id": "ap-1", "decision": "approved"})
        rec.end("client closed")
        await recorder.flush()
    finally:
        await recorder.close()
    await write_sample(tmp_path, session_id="20260101T000200Z-cccc", end=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["sessions", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def d(tmp: Path) -> list[str]:
    return ["--dir", str(tmp / "sessions")]


def test_list(sessions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", *d(sessions))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("ID") and "DENIED" in lines[0]
    assert len(lines) == 4
    bob = next(line for line in lines if "bob@" in line)
    assert "20260101T000100Z-bbbb" in bob and "other-pg" in bob
    assert bob.split()[-4:] == ["6", "1019", "B", "1"]  # rows, bytes, denied
    carol = next(line for line in lines if "cccc" in line)
    assert "NO END FRAME" in carol
    assert " 3 " in carol  # statements counted from the frames


def test_list_json_and_filters(sessions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", *d(sessions), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 3
    bob = next(r for r in rows if r["user"] == "bob@example.com")
    assert (bob["statements"], bob["rows"], bob["bytes"], bob["denied"]) == (3, 6, 1019, 1)
    assert bob["status"] == "complete" and bob["end_reason"] == "client closed"
    assert {r["status"] for r in rows} == {"complete", "no-end-frame"}

    _, out, _ = run(capsys, "list", *d(sessions), "--json", "--user", "BOB@example.com")
    assert [json.loads(x)["user"] for x in out.splitlines()] == ["bob@example.com"]
    _, out, _ = run(capsys, "list", *d(sessions), "--json", "--target", "app-pg")
    assert len(out.splitlines()) == 2
    _, out, _ = run(capsys, "list", *d(sessions), "--json", "--since", "2h")
    assert len(out.splitlines()) == 3
    _, out, _ = run(capsys, "list", *d(sessions), "--json", "--since", "2999-01-01")
    assert out == ""
    code, _, err = run(capsys, "list", *d(sessions), "--since", "yesterday-ish")
    assert code == 2 and "--since" in err


def test_parse_since() -> None:
    assert rcli.parse_since("2h", now=10_000) == 10_000 - 7200
    assert rcli.parse_since("1d12h", now=200_000) == 200_000 - 129_600
    assert rcli.parse_since("2026-01-01T00:00:00+00:00") == 1767225600
    assert rcli.parse_since("2026-01-01") == 1767225600


def test_list_marks_unreadable_files(sessions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (sessions / "sessions" / "junk.gwrec").write_bytes(b"not a recording")
    code, out, _ = run(capsys, "list", *d(sessions))
    assert code == 0 and "UNREADABLE" in out


def test_show(sessions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "20260101T000100", *d(sessions))
    assert code == 0
    assert "user bob@example.com" in out and "target other-pg" in out
    assert "SELECT id, name FROM customers" in out  # one line
    assert "5 rows (2 recorded)" in out
    assert "DENY  [no-ddl] simple: DROP TABLE customers" in out
    assert "ERROR 42501: permission denied" in out
    assert "params: ['x', \\x01, NULL]" in out
    assert "[approval]" in out and "ap-1" in out
    assert "ended" in out and "1 denied" in out


def test_show_incomplete(sessions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "20260101T000200Z-cccc", *d(sessions))
    assert code == 0 and "no end frame" in out


def test_show_by_path_and_bad_references(
    sessions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = sessions / "sessions" / "20260101T000000Z-aaaa.gwrec"
    code, out, _ = run(capsys, "show", str(path))
    assert code == 0 and "alice@example.com" in out
    code, _, err = run(capsys, "show", "2026", *d(sessions))
    assert code == 2 and "ambiguous" in err
    code, _, err = run(capsys, "show", "nope", *d(sessions))
    assert code == 2 and "no session matching" in err
    code, _, err = run(capsys, "show", "x", "--dir", str(sessions / "missing"))
    assert code == 2 and "does not exist" in err


def test_replay_tables(sessions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "replay", "20260101T000100", *d(sessions), "--speed", "0")
    assert code == 0
    assert "other-pg=> SELECT id, name\nFROM   customers\n" in out
    assert " id | name\n----+-------\n  1 | alice\n 22 |\n(2 rows)\n" in out
    assert "5 rows sent to the client; 2 recorded" in out
    assert "DROP TABLE customers   -- DENIED by no-ddl" in out
    assert "ERROR:  permission denied for table customers  (42501)" in out
    assert "INSERT 0 1" in out
    assert "-- session ended: client closed" in out


def test_replay_timing(
    sessions: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    code, _, _ = run(capsys, "replay", "20260101T000100", *d(sessions), "--speed", "2")
    assert code == 0
    # The SELECT took 0.25 s: its result is shown 0.125 s after it at speed 2.
    assert any(abs(s - 0.125) < 0.01 for s in sleeps)
    clock = rcli._ReplayClock(1.0, 5.0, sleeps.append)
    sleeps.clear()
    for at in (100.0, 101.0, 1000.0, 999.0):
        clock.wait(at)
    assert sleeps == [1.0, 5.0]  # capped; never backwards


def test_export_jsonl(sessions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "export", "20260101T000100", *d(sessions), "--format", "jsonl")
    assert code == 0
    objs = [json.loads(line) for line in out.splitlines()]
    path = sessions / "sessions" / "20260101T000100Z-bbbb.gwrec"
    assert len(objs) == len(frame_spans(path))
    assert [o["seq"] for o in objs] == list(range(len(objs)))
    assert objs[0]["t"] == "start" and objs[-1]["t"] == "end"
    # Statements that completed between writer passes come as items of "execs" frames.
    items = [item for o in objs if o["t"] == "execs" for item in o["items"]]
    rows = next(i for i in items if i["data"] is not None)
    assert base64.b64decode(rows["data"]).startswith(b"D\x00\x00\x00")
    stmt = next(i for i in items if i["path"] == "extended")
    assert stmt["params"] == ["x", "AQ==", None]
    assert all(len(base64.b64decode(o["prev"])) == 32 for o in objs)


def test_verify(sessions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state-dir", str(sessions / "state")]
    code, out, _ = run(capsys, "verify", "20260101T000000", *d(sessions), *state)
    assert code == 0 and ": OK:" in out
    code, out, _ = run(capsys, "verify", "--all", *d(sessions), *state)
    assert code == 3  # carol has no end frame; nothing altered
    assert out.count(": OK:") == 2 and "INCOMPLETE: ended without an end frame" in out
    key = ["--key", str(sessions / "state" / "recording_ed25519.pub.pem")]
    code, _, _ = run(capsys, "verify", "20260101T000000Z-aaaa", *d(sessions), *key)
    assert code == 0
    # Tamper with one file: --all reports the worst status, 1, naming the frame.
    path = sessions / "sessions" / "20260101T000100Z-bbbb.gwrec"
    data = bytearray(path.read_bytes())
    offset, size = frame_spans(path)[1]
    data[offset + size - 2] ^= 1
    path.write_bytes(data)
    code, out, _ = run(capsys, "verify", "--all", *d(sessions), *state)
    assert code == 1
    assert "20260101T000100Z-bbbb: FAILED: frame 2 at offset" in out
    # Truncated mid-frame: 4.
    carol = sessions / "sessions" / "20260101T000200Z-cccc.gwrec"
    carol.write_bytes(carol.read_bytes()[:-3])
    code, out, _ = run(capsys, "verify", str(carol), *state)
    assert code == 4 and "TRUNCATED" in out


def test_verify_key_discovery(
    sessions: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sessions / "gateway.toml"
    config.write_text('[gateway]\nstate_dir = "state"\nsession_dir = "sessions"\n')
    code, out, _ = run(capsys, "verify", "20260101T000000Z-aaaa", "--config", str(config))
    assert code == 0, out
    code, out, _ = run(capsys, "list", "--config", str(config))
    assert code == 0 and "bob@" in out
    monkeypatch.chdir(sessions)  # defaults: ./sessions and ./.gateway
    code, _, err = run(capsys, "verify", "20260101T000000Z-aaaa")
    assert code == 2 and "--key" in err
    (sessions / ".gateway").mkdir()
    (sessions / ".gateway" / "recording_ed25519.pub.pem").write_bytes(
        (sessions / "state" / "recording_ed25519.pub.pem").read_bytes()
    )
    code, _, _ = run(capsys, "verify", "20260101T000000Z-aaaa")
    assert code == 0


def test_verify_usage(sessions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "verify", *d(sessions), "--state-dir", str(sessions / "state"))
    assert code == 2 and "--all" in err


def test_verify_progress_on_stderr(sessions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "verify",
        "20260101T000000",
        *d(sessions),
        "--state-dir",
        str(sessions / "state"),
        "--progress-every",
        "100",
    )
    assert code == 0 and "verifying 20260101T000000Z-aaaa.gwrec:" in err and "100%" in err


def test_unknown_frame_notice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = load_or_create_signing_key(tmp_path / "state" / "recording_ed25519.pem")
    future = {"t": "hologram", "seq": 2, "prev": bytes(32), "x": 1}
    (tmp_path / "sessions").mkdir()
    path = tmp_path / "sessions" / "fut.gwrec"
    path.write_bytes(
        seal_file([start_frame(key, "fut"), stmt_frame(1, 1), future, end_frame(3)], key)
    )
    code, out, err = run(capsys, "show", "fut", *d(tmp_path))
    assert code == 0 and "unknown type 'hologram'" in err and "SELECT 1" in out
    code, out, _ = run(
        capsys, "verify", "fut", *d(tmp_path), "--state-dir", str(tmp_path / "state")
    )
    assert code == 0 and "notice: frame 2" in out
    code, out, _ = run(capsys, "export", "fut", *d(tmp_path))
    assert json.loads(out.splitlines()[2])["t"] == "hologram"


def test_verify_fails_a_file_named_after_another_session(
    sessions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # alice's genuine recording put in place of bob's (and bob's removed): every frame
    # verifies, but the file does not hold the session it is named after.
    directory = sessions / "sessions"
    alice = directory / "20260101T000000Z-aaaa.gwrec"
    bob = directory / "20260101T000100Z-bbbb.gwrec"
    bob.write_bytes(alice.read_bytes())
    state = ["--state-dir", str(sessions / "state")]
    code, out, _ = run(capsys, "verify", "20260101T000100Z-bbbb", *d(sessions), *state)
    assert code == 1
    assert out.startswith(
        "20260101T000100Z-bbbb: FAILED: file 20260101T000100Z-bbbb.gwrec holds session "
        "20260101T000000Z-aaaa"
    )
    code, out, _ = run(capsys, "verify", "--all", *d(sessions), *state)
    assert code == 1 and out.count("FAILED") == 1
    # The writer's ~N suffix for a taken name is not a mismatch.
    (directory / "20260101T000000Z-aaaa~1.gwrec").write_bytes(alice.read_bytes())
    code, out, _ = run(capsys, "verify", "20260101T000000Z-aaaa~1", *d(sessions), *state)
    assert code == 0 and ": OK:" in out
    # `list` shows it without verifying.
    code, out, _ = run(capsys, "list", *d(sessions))
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines["20260101T000100Z-bbbb"].endswith(
        "FILE HOLDS SESSION 20260101T000000Z-aaaa (not its name; verify fails it)"
    )
    assert "FILE HOLDS" not in lines["20260101T000000Z-aaaa~1"]
    assert "FILE HOLDS" not in lines["20260101T000000Z-aaaa"]
    code, out, _ = run(capsys, "list", "--json", *d(sessions))
    rows = {r["id"]: r for r in map(json.loads, out.splitlines())}
    assert rows["20260101T000100Z-bbbb"]["name_matches"] is False
    assert rows["20260101T000100Z-bbbb"]["session_id"] == "20260101T000000Z-aaaa"
    assert rows["20260101T000000Z-aaaa~1"]["name_matches"] is True


def test_verify_all_without_recordings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load_or_create_signing_key(tmp_path / "state" / "recording_ed25519.pem")
    (tmp_path / "sessions").mkdir()
    state = ["--state-dir", str(tmp_path / "state")]
    code, out, err = run(capsys, "verify", "--all", *d(tmp_path), *state)
    # Nothing verified is not "every file intact" (0), nor any file's outcome.
    assert code == rcli.EXIT_NO_RECORDINGS == 5
    assert out == "" and "no recordings in" in err


ESC = "\x1b[2J\x1b[1;1Hsession verified OK\x1b[8m"


@pytest.fixture
async def hostile(tmp_path: Path) -> Path:
    """A session whose client-controlled strings carry terminal escapes."""
    recorder = new_recorder(tmp_path)
    await recorder.start()
    try:
        rec = recorder.open_session(
            make_info(
                "20260101T000000Z-evil",
                protocol="mysql",
                subject="mallory" + ESC,
                target="app" + ESC,
                client_address="10.0.0.1:5\x1b[31m",
                tls={"version": "TLSv1.3\x1b[0m"},
            )
        )
        rec.control("init_db", {"schema": "app" + ESC})
        rec.control("change_user\x07", {"user\x1b": "root" + ESC})
        n = rec.statement(text="SELECT 1 /*" + ESC + "*/\r\nFROM t", path="simple")
        rec.result_metadata(n, BOB_COLUMNS)
        data = build_data_row([b"1", ("a" + ESC).encode()])
        rec.rows(n, "pg.DataRow", data, 1)
        rec.complete(
            n, tag="SELECT 1" + ESC, rows=1, rows_recorded=1, bytes_to_client=9, duration=0.001
        )
        e = rec.statement(text="SELECT x", path="simple", decision="deny", rule="r" + ESC)
        rec.complete(
            e,
            tag=None,
            rows=0,
            rows_recorded=0,
            bytes_to_client=0,
            duration=0.0,
            error=("4250\x1b", "denied\x1b[31m\nsecond line" + ESC),
        )
        rec.end("client closed" + ESC)
        await recorder.flush()
    finally:
        await recorder.close()
    return tmp_path


@pytest.mark.parametrize("command", ["show", "replay", "list"])
def test_control_characters_are_never_printed(
    hostile: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    argv = [command] + ([] if command == "list" else ["20260101T000000Z-evil"])
    argv += ["--speed", "0"] if command == "replay" else []
    code, out, err = run(capsys, *argv, *d(hostile))
    assert code == 0, err
    bad = [c for c in out if not c.isprintable() and c != "\n"]
    assert not bad, bad
    assert "\\x1b[2J\\x1b[1;1Hsession verified OK\\x1b[8m" in out
    if command != "list":
        assert "schema=app\\x1b[2J" in out  # ctl details (MySQL init_db)
        assert "user\\x1b=root\\x1b[2J" in out and "[change_user\\x07]" in out
        assert "SELECT 1 /*\\x1b[2J" in out
        assert "denied\\x1b[31m" in out
        assert "client closed\\x1b[2J" in out
    if command == "replay":
        # A multi-line statement stays multi-line; the carriage return is escaped.
        assert "*/\\x0d\nFROM t" in out
        assert "| a\\x1b[2J" in out  # row values, as before


def test_verify_output_is_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Verification messages quote the file (here its session id): escaped too.
    key = load_or_create_signing_key(tmp_path / "state" / "recording_ed25519.pem")
    (tmp_path / "sessions").mkdir()
    path = tmp_path / "sessions" / "evil.gwrec"
    path.write_bytes(
        seal_file([start_frame(key, "evil" + ESC), stmt_frame(1, 1), end_frame(2)], key)
    )
    state = ["--state-dir", str(tmp_path / "state")]
    code, out, _ = run(capsys, "verify", "evil", *d(tmp_path), *state)
    assert code == 1 and "\x1b" not in out
    assert "holds session evil\\x1b[2J" in out
