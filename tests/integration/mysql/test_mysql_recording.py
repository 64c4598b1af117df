"""Recordings of real MySQL sessions: statements (text and prepared, with their
parameters) and rows exactly as the client received them, decodable by
``gateway sessions show/replay/export``; no token or password in the file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

from gateway.recording.keys import load_public_key
from gateway.recording.reader import RecordingFormatError
from gateway.recording.render_mysql import decode_rows
from gateway.recording.schema import Ckpt, Ctl, Done, End, Meta, Rows, Start, Stmt
from gateway.recording.verify import Status, verify_file

from ..test_recording_e2e import frames, statements_with_parameters
from .conftest import MyGateway, StartMyGateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gw(start_mysql_gateway: StartMyGateway) -> MyGateway:
    return start_mysql_gateway()


def session_files(
    gw: MyGateway, subject: str, count: int = 1, *, complete: bool = True
) -> list[Path]:
    """The recordings (complete ones unless told) whose start frame names ``subject``,
    oldest first."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found: list[tuple[float, Path]] = []
        for path in gw.session_dir.glob("*.gwrec"):
            try:
                fs = frames(path)
            except (RecordingFormatError, AssertionError):
                # Another session's file, just created: its header or last frame is
                # not written yet. Look again on the next pass.
                continue
            if not fs:
                continue
            start, last = fs[0], fs[-1]
            ended = isinstance(last, End) or not complete
            if isinstance(start, Start) and start.subject == subject and ended:
                found.append((start.started_at, path))
        if len(found) >= count:
            return [p for _, p in sorted(found)]
        time.sleep(0.1)
    raise AssertionError(f"no {count} complete recordings for {subject}")


def session_file(gw: MyGateway, subject: str) -> Path:
    (path,) = session_files(gw, subject)
    return path


def statements(path: Path) -> list[dict[str, Any]]:
    """Per recorded statement (but the clients' SET commands): its frame, metadata,
    decoded rows and completion."""
    out: dict[int, dict[str, Any]] = {}
    for f in frames(path):
        if isinstance(f, Stmt):
            out[f.stmt] = {"stmt": f, "meta": None, "chunks": [], "enc": set(), "done": None}
        elif isinstance(f, Meta):
            out[f.stmt]["meta"] = f
        elif isinstance(f, Rows):
            out[f.stmt]["chunks"].append(f.data)
            out[f.stmt]["enc"].add(f.enc)
        elif isinstance(f, Done):
            out[f.stmt]["done"] = f
    result = []
    for entry in out.values():
        if entry["stmt"].text.upper().startswith("SET "):
            continue  # the client libraries' own session setup
        rows: list[list[str | None]] = []
        if entry["chunks"]:
            (enc,) = entry["enc"]
            rows = decode_rows(entry["chunks"], enc, entry["meta"].columns)
        entry["rows"] = rows
        result.append(entry)
    return result


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def test_text_and_prepared_statements_are_recorded(gw: MyGateway) -> None:
    subject = "rec-text@example.com"
    token = gw.token(subject)
    with (
        pymysql.connect(
            **gw.pymysql_kwargs(token, user=subject), client_flag=CLIENT.MULTI_STATEMENTS
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT id, name, email FROM customers ORDER BY id LIMIT 12")
        text_rows = cur.fetchall()
        cur.execute("SELECT 1 AS a; SELECT 'two' AS b, NULL AS c")
        first = cur.fetchall()
        cur.nextset()
        second = cur.fetchall()
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM no_such_table")
        cur.execute("CREATE TEMPORARY TABLE r (id INT, v VARCHAR(5))")
        cur.execute("INSERT INTO r VALUES (1, 'a'), (2, 'b')")
    conn2 = mysql.connector.connect(**gw.connector_kwargs(token, user=subject), use_pure=True)
    try:
        pcur = conn2.cursor(prepared=True)
        pcur.execute(
            "SELECT id, name, created_at FROM customers WHERE id < ? AND name <> ? ORDER BY id",
            (6, "nobody"),
        )
        prepared_rows = pcur.fetchall()
        pcur.execute("SELECT ?, ?, ?", (2.5, None, "ünï"))
        params_row = pcur.fetchall()
        pcur.close()
    finally:
        conn2.close()

    path1, path2 = session_files(gw, subject, 2)
    s1 = statements(path1)
    texts = [e["stmt"].text for e in s1]
    assert texts[0] == "SELECT id, name, email FROM customers ORDER BY id LIMIT 12"
    assert s1[0]["rows"] == [[as_text(v) for v in row] for row in text_rows]
    assert s1[0]["meta"].columns[1].table == "customers"
    assert s1[0]["meta"].columns[1].column == "name"
    assert s1[0]["done"].rows == 12
    # One entry per result of the multi-statement packet, each with its own text.
    assert texts[1:3] == ["SELECT 1 AS a", "SELECT 'two' AS b, NULL AS c"]
    assert s1[1]["rows"] == [["1"]] and first == ((1,),)
    assert s1[2]["rows"] == [["two", None]] and second == (("two", None),)
    assert s1[3]["done"].error is not None and s1[3]["done"].error.code == "1146"
    assert s1[5]["done"].command_tag == "OK 2 rows affected"

    s2 = statements(path2)
    prepared = [e for e in s2 if e["stmt"].path == "prepared"]
    assert prepared[0]["stmt"].text.startswith("SELECT id, name, created_at FROM customers")
    assert prepared[0]["stmt"].params == ["6", "nobody"]
    assert prepared[0]["meta"].columns[0].format == "binary"
    assert prepared[0]["rows"] == [
        [str(r[0]), r[1], r[2].strftime("%Y-%m-%d %H:%M:%S")] for r in prepared_rows
    ]
    assert prepared[1]["stmt"].params == ["2.5", None, "ünï"]
    assert params_row == [(2.5, None, "ünï")]

    # No secret lands in a recording.
    for path in (path1, path2):
        raw = path.read_bytes()
        assert token.encode() not in raw
        assert token.split(".")[2].encode() not in raw
        key = load_public_key(gw.process.state_dir / "recording_ed25519.pub.pem")
        assert verify_file(path, key).status is Status.OK


def test_record_rows_cap_and_cli(gw: MyGateway) -> None:
    subject = "rec-cap@example.com"
    token = gw.token(subject, groups=("contractors",))  # record_rows = 5
    with pymysql.connect(**gw.pymysql_kwargs(token, user=subject)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, kind FROM events ORDER BY id LIMIT 300")
        assert len(cur.fetchall()) == 300
    path = session_file(gw, subject)
    (entry,) = statements(path)
    assert entry["done"].rows == 300
    assert entry["done"].rows_recorded == 5
    assert len(entry["rows"]) == 5

    def cli(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "sessions", *args, "--dir", str(gw.session_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    session_id = path.name.removesuffix(".gwrec")
    shown = cli("show", session_id)
    assert "SELECT id, kind FROM events ORDER BY id LIMIT 300" in shown
    replay = cli("replay", session_id, "--speed", "0")
    assert "(5 rows)" in replay and "300 rows sent to the client; 5 recorded" in replay
    exported = [json.loads(line) for line in cli("export", session_id).splitlines()]
    # Rows frames of their own, or items of an "execs" batch.
    parts = exported + [item for f in exported if f["t"] == "execs" for item in f["items"]]
    assert any(f.get("enc") == "mysql.text" for f in parts)


def test_kill_and_change_user_are_control_frames(gw: MyGateway) -> None:
    subject = "rec-ctl@example.com"
    token = gw.token(subject)
    conn = mysql.connector.connect(**gw.connector_kwargs(token, user=subject), use_pure=True)
    try:
        new = gw.token("rec-ctl2@example.com")
        conn.cmd_change_user(username="rec-ctl2@example.com", password=new)
        cur = conn.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
        cur.close()
    finally:
        conn.close()
    path = session_file(gw, subject)
    ctl = [f for f in frames(path) if isinstance(f, Ctl)]
    assert ctl[0].kind == "change_user"
    assert ctl[0].detail["subject"] == "rec-ctl2@example.com"
    assert ctl[0].detail["previous_subject"] == subject


def test_statement_running_at_a_tick_is_on_disk_while_it_runs(gw: MyGateway) -> None:
    """Results are recorded when they end, unless still running at a writer tick: then
    their statement is written while they run (and its completion later)."""
    subject = "rec-slow@example.com"
    lock = "rec-slow-lock"
    conn = mysql.connector.connect(**gw.connector_kwargs(gw.token(subject), user=subject))
    holder = pymysql.connect(**gw.pymysql_kwargs(user="rec-slow-holder@example.com"))
    try:
        with holder.cursor() as held:
            held.execute("SELECT GET_LOCK(%s, 0)", (lock,))
            assert held.fetchone() == (1,)
        with ThreadPoolExecutor(1) as pool:
            cur = conn.cursor(prepared=True)
            cur.execute("SELECT 1")
            cur.fetchall()

            def blocked() -> list[Any]:
                # Waits for the lock the holder has until the test lets it go: however
                # slow the host, writer ticks find it running.
                cur.execute("SELECT GET_LOCK(?, 60) AS l, ? AS n", (lock, 7))
                return list(cur.fetchall())

            running = pool.submit(blocked)
            try:
                (path,) = session_files(gw, subject, complete=False)
                seen = statements_with_parameters(path, 10)
                assert not running.done()  # still blocked, already on disk
                assert [(s.text, s.path, s.params) for s in seen] == [
                    ("SELECT GET_LOCK(?, 60) AS l, ? AS n", "prepared", [lock, "7"])
                ]
            finally:
                # Let it go whatever happened: the pool waits for it on the way out.
                with holder.cursor() as held:
                    held.execute("SELECT RELEASE_LOCK(%s)", (lock,))
            assert running.result(30) == [(1, 7)]
            cur.close()
    finally:
        holder.close()
        conn.close()
    path = session_file(gw, subject)
    recorded = [e for e in statements(path) if e["stmt"].params]
    ((entry),) = recorded
    assert entry["rows"] == [["1", "7"]]
    assert entry["done"].rows == 1
    # Written and signed by a checkpoint while it ran, completed after.
    n = entry["stmt"].stmt
    order = [(type(f), getattr(f, "stmt", None)) for f in frames(path)]
    ran = order[order.index((Stmt, n)) : order.index((Done, n))]
    assert (Ckpt, None) in ran
