"""Recordings of real sessions through the real gateway (subprocess) and PostgreSQL.

What the client received (psycopg's raw result values, psql's output) is compared with
what the recording holds; a gateway killed with SIGKILL leaves a verifiable file that
reports "ended without an end frame"; no token or password ever lands in a recording.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.cli import main
from gateway.recording.keys import load_public_key
from gateway.recording.reader import RecordingFormatError, RecordingReader
from gateway.recording.render import decode_value
from gateway.recording.schema import Ckpt, Done, End, Error, Meta, Rows, Start, Stmt
from gateway.recording.verify import Status, verify_file
from protocols.postgres.rows import iter_copy_data, iter_data_rows

from .conftest import GatewayProcess, StartGateway

pytestmark = pytest.mark.integration

QUERIES = [
    "SELECT id, name, email, ssn, card_number, phone, created_at FROM customers "
    "ORDER BY id LIMIT 40",
    "SELECT count(*), sum(amount), min(created_at) FROM orders",
    "SELECT 1::int2, 2::int4, 3::int8, 1.5::float4, 2.25::float8, 12345.678::numeric, "
    "true, 'x'::text, '2024-02-29'::date, '12:34:56'::time, "
    "'{\"a\": [1, 2]}'::jsonb, 'a1b2c3d4-0000-4000-8000-000000000000'::uuid, "
    "'\\xdeadbeef'::bytea, NULL::text, 'é ü 日本'::text",
    "SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind",
]


@pytest.fixture(scope="module")
def gw(start_gateway: StartGateway) -> GatewayProcess:
    return start_gateway()


# -- helpers ------------------------------------------------------------------------------


def frames(path: Path) -> list[Any]:
    with RecordingReader(path) as reader:
        out = [frame for _, frame in reader.logical_frames()]
        assert reader.truncation is None
    return out


def statements_with_parameters(path: Path, seconds: float) -> list[Stmt]:
    """The ``stmt`` frames with parameters in a recording being written, as soon as there
    are some (or none after ``seconds``): statements on disk while they run."""
    deadline = time.monotonic() + seconds
    seen: list[Stmt] = []
    while not seen and time.monotonic() < deadline:
        with contextlib.suppress(RecordingFormatError, AssertionError):
            seen = [f for f in frames(path) if isinstance(f, Stmt) and f.params]
        time.sleep(0.05)
    return seen


def session_file(gw: GatewayProcess, subject: str, *, complete: bool = True) -> Path:
    """The recording whose start frame names ``subject`` (waits for its end frame)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for path in sorted(gw.session_dir.glob("*.gwrec")):
            try:
                fs = frames(path)
            except (RecordingFormatError, AssertionError):
                # Another session's file, just created: its header or last frame is
                # not written yet. Look again on the next pass.
                continue
            is_it = fs and isinstance(fs[0], Start) and fs[0].subject == subject
            if is_it and (not complete or isinstance(fs[-1], End)):
                return path
        time.sleep(0.1)
    raise AssertionError(f"no {'complete ' if complete else ''}recording for {subject}")


def wait_signed(path: Path, texts: list[str], seconds: float = 10) -> None:
    """Wait until the statements ``texts`` are complete in a recording being written and
    a checkpoint follows them as its last frame: everything so far is on disk and signed."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(RecordingFormatError, AssertionError):
            fs = frames(path)
            stmts = {f.stmt: f.text for f in fs if isinstance(f, Stmt)}
            done = [stmts.get(f.stmt) for f in fs if isinstance(f, Done)]
            if done == texts and isinstance(fs[-1], Ckpt):
                return
        assert time.monotonic() < deadline, f"{texts} not complete and signed in {path.name}"
        time.sleep(0.05)


def recorded_results(path: Path) -> list[tuple[Stmt, Meta | None, list[list[bytes | None]], Done]]:
    """Per statement: its frame, metadata, rows (raw DataRow values) and completion."""
    stmts: dict[int, Stmt] = {}
    metas: dict[int, Meta] = {}
    data: dict[int, bytearray] = {}
    out = []
    for f in frames(path):
        if isinstance(f, Stmt):
            stmts[f.stmt] = f
        elif isinstance(f, Meta):
            metas[f.stmt] = f
        elif isinstance(f, Rows):
            assert f.enc == "pg.DataRow"
            data.setdefault(f.stmt, bytearray()).extend(f.data)
        elif isinstance(f, Done):
            rows = list(iter_data_rows(bytes(data.get(f.stmt, b""))))
            out.append((stmts[f.stmt], metas.get(f.stmt), rows, f))
    return out


def raw_result(cur: psycopg.Cursor[Any]) -> list[list[bytes | None]]:
    """The values exactly as the client library received them."""
    res = cur.pgresult
    assert res is not None
    return [[res.get_value(i, j) for j in range(res.nfields)] for i in range(res.ntuples)]


# -- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_psycopg_session_is_recorded_as_received(gw: GatewayProcess, binary: bool) -> None:
    subject = f"psycopg-{'bin' if binary else 'text'}@example.com"
    received = []
    with psycopg.connect(gw.dsn(gw.token(sub=subject)), autocommit=True) as conn:
        for q in QUERIES:
            with conn.cursor(binary=binary) as cur:
                cur.execute(q)
                received.append(raw_result(cur))
        with conn.cursor(binary=binary) as cur:
            cur.execute("SELECT id, email FROM customers WHERE id < %s ORDER BY id", (4,))
            received.append(raw_result(cur))
    path = session_file(gw, subject)
    recorded = recorded_results(path)
    assert [s.text for s, *_ in recorded] == [
        *QUERIES,
        "SELECT id, email FROM customers WHERE id < $1 ORDER BY id",
    ]
    for (stmt, meta, rows, done), got in zip(recorded, received, strict=True):
        # psycopg sends parameterless text queries with the simple protocol.
        assert stmt.decision == "allow"
        assert stmt.path == ("simple" if not binary and not stmt.params else "extended")
        assert rows == got, stmt.text  # byte for byte what the client received
        assert done.rows == done.rows_recorded == len(got)
        assert done.error is None and done.command_tag == f"SELECT {len(got)}"
        assert meta is not None
        assert {c.format for c in meta.columns} == {"binary" if binary else "text"}
    param = recorded[-1][0].params
    assert param is not None and len(param) == 1
    assert param[0] in ("4", b"\x00\x04", b"\x00\x00\x00\x04", b"\x00\x00\x00\x00\x00\x00\x00\x04")
    # Decoding binary values for display gives what PostgreSQL prints in text.
    if binary:
        _, meta, rows, _ = recorded[2]
        assert meta is not None
        shown = [decode_value(v, c) for v, c in zip(rows[0], meta.columns, strict=True)]
        assert shown[:9] == ["1", "2", "3", "1.5", "2.25", "12345.678", "t", "x", "2024-02-29"]
        assert shown[9:] == [
            "12:34:56",
            '{"a": [1, 2]}',
            "a1b2c3d4-0000-4000-8000-000000000000",
            "\\xdeadbeef",
            None,
            "é ü 日本",
        ]
    key = load_public_key(gw.state_dir / "recording_ed25519.pub.pem")
    assert verify_file(path, key).status is Status.OK


def test_psql_session_is_recorded_as_received(gw: GatewayProcess) -> None:
    subject = "psql@example.com"
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": gw.token(sub=subject), "PGSSLMODE": "require"}
    queries = [QUERIES[0], QUERIES[3], "SELECT 'a|b', NULL, 'ü'"]
    args = ["-X", "-A", "-t", "-F", "\x1f", "-R", "\x1e"]
    cmd = ["psql", "-h", gw.host, "-p", str(gw.port), "-U", subject, "-d", "app", *args]
    for q in queries:
        cmd += ["-c", q]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True)
    path = session_file(gw, subject)
    recorded = recorded_results(path)
    assert [s.text for s, *_ in recorded] == queries
    # Records end with \x1e, each command's output with a newline.
    printed = [r for r in re.split("[\x1e\n]", out.stdout) if r]
    shown = []
    for stmt, meta, rows, done in recorded:
        assert stmt.path == "simple" and done.rows == len(rows)
        cols = meta.columns if meta else []
        for row in rows:
            shown.append(
                "\x1f".join(decode_value(v, c) or "" for v, c in zip(row, cols, strict=True))
            )
    assert printed == shown


def test_record_rows_cap(gw: GatewayProcess) -> None:
    subject = "contractor@example.com"
    token = gw.token(sub=subject, groups=("contractors",))
    with psycopg.connect(gw.dsn(token), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name FROM customers ORDER BY id LIMIT 20")
        received = raw_result(cur)
    assert len(received) == 20  # the client gets everything
    ((_, _, rows, done),) = recorded_results(session_file(gw, subject))
    assert (done.rows, done.rows_recorded) == (20, 5)  # policy record_rows = 5
    assert rows == received[:5]


def copy_out(cur: psycopg.Cursor[Any], sql: str) -> list[bytes]:
    """The CopyData payloads a ``COPY ... TO STDOUT`` sent the client, one per message."""
    with cur.copy(sql) as copy:
        return [bytes(chunk) for chunk in copy]


def recorded_copy(path: Path) -> list[tuple[Stmt, list[bytes], Done]]:
    """Per statement with CopyData recorded: its frame, the payloads, its completion."""
    stmts: dict[int, Stmt] = {}
    data: dict[int, bytearray] = {}
    out = []
    for f in frames(path):
        if isinstance(f, Stmt):
            stmts[f.stmt] = f
        elif isinstance(f, Rows):
            assert f.enc == "pg.CopyData"
            data.setdefault(f.stmt, bytearray()).extend(f.data)
        elif isinstance(f, Done) and f.stmt in data:
            out.append((stmts[f.stmt], list(iter_copy_data(bytes(data[f.stmt]))), f))
    return out


@pytest.mark.parametrize("fmt", ["text", "csv", "binary"])
def test_copy_to_stdout_is_recorded_as_received(gw: GatewayProcess, fmt: str) -> None:
    """An export by COPY is in the recording as an export by SELECT is: every CopyData
    message the client received, under the same per-statement cap."""
    subject = f"copy-{fmt}@example.com"
    small = (
        f"COPY (SELECT id, name, email FROM customers ORDER BY id LIMIT 7) TO STDOUT (FORMAT {fmt})"
    )
    big = f"COPY (SELECT g, 'row ' || g FROM generate_series(1, 1500) g) TO STDOUT (FORMAT {fmt})"
    with (
        psycopg.connect(gw.dsn(gw.token(sub=subject)), autocommit=True) as conn,
        conn.cursor() as cur,
    ):
        received = [copy_out(cur, small), copy_out(cur, big)]
    recorded = recorded_copy(session_file(gw, subject))
    assert [s.text for s, _, _ in recorded] == [small, big]
    (_, first, done1), (_, second, done2) = recorded
    assert first == received[0]
    assert (done1.rows, done1.rows_recorded) == (len(received[0]), len(received[0]))
    assert done1.bytes_to_client == sum(5 + len(p) for p in received[0])
    # The fixture's default record_rows is 1,000: the client got every message, the
    # recording the first 1,000.
    # Binary: the header travels with the first row, the trailer in a message of its own.
    assert len(received[1]) == (1501 if fmt == "binary" else 1500)
    assert (done2.rows, done2.rows_recorded) == (len(received[1]), 1000)
    assert second == received[1][:1000]
    if fmt == "text":
        assert received[0][0].startswith(b"1\t")


def test_copy_shown_by_replay(gw: GatewayProcess, capsys: pytest.CaptureFixture[str]) -> None:
    subject = "copy-replay@example.com"
    sql = "COPY (SELECT id, name FROM customers ORDER BY id LIMIT 3) TO STDOUT (FORMAT csv)"
    with (
        psycopg.connect(gw.dsn(gw.token(sub=subject)), autocommit=True) as conn,
        conn.cursor() as cur,
    ):
        received = copy_out(cur, sql)
    path = session_file(gw, subject)
    config = ["--config", str(gw.config_path)]
    assert main(["sessions", "replay", path.stem, *config, "--speed", "0"]) == 0
    out = capsys.readouterr().out
    for line in received:
        assert line.decode().rstrip("\n") in out
    assert "COPY data" in out and "(3 rows)" in out


def test_cli_on_real_recordings(gw: GatewayProcess, capsys: pytest.CaptureFixture[str]) -> None:
    subject = "cli@example.com"
    with psycopg.connect(gw.dsn(gw.token(sub=subject)), autocommit=True) as conn:
        conn.execute("SELECT id, name FROM customers ORDER BY id LIMIT 3")
    path = session_file(gw, subject)
    config = ["--config", str(gw.config_path)]
    assert main(["sessions", "list", *config, "--user", subject]) == 0
    out = capsys.readouterr().out
    assert path.stem in out and "app-pg" in out
    assert main(["sessions", "replay", path.stem, *config, "--speed", "0"]) == 0
    out = capsys.readouterr().out
    assert "app-pg=> SELECT id, name FROM customers ORDER BY id LIMIT 3" in out
    assert " id |" in out and "(3 rows)" in out
    assert main(["sessions", "verify", path.stem, *config]) == 0
    assert ": OK:" in capsys.readouterr().out


def test_sigkill_mid_session(
    start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = start_gateway()
    subject = "killed@example.com"
    conn = psycopg.connect(gw.dsn(gw.token(sub=subject)), autocommit=True)
    try:
        for q in QUERIES:
            conn.execute(q).fetchall()
        # A writer tick (fsync_interval 200 ms) has written and checkpointed them.
        wait_signed(session_file(gw, subject, complete=False), QUERIES)
        gw.kill()
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.close()
    path = session_file(gw, subject, complete=False)
    recorded = recorded_results(path)  # every complete frame decodes
    assert [s.text for s, *_ in recorded] == QUERIES
    key = load_public_key(gw.state_dir / "recording_ed25519.pub.pem")
    result = verify_file(path, key)
    assert result.status is Status.INCOMPLETE, result.message
    assert result.signed_through == result.frames - 1  # the checkpoint covers everything
    code = main(["sessions", "verify", path.stem, "--config", str(gw.config_path)])
    out = capsys.readouterr().out
    assert code == 3 and "ended without an end frame" in out


# The advisory lock key of the test below (no other test takes advisory locks).
LOCK_KEY = "72431"


def test_statement_running_at_a_tick_is_on_disk_while_it_runs(gw: GatewayProcess) -> None:
    """Executions are recorded when they finish, unless still running at a writer tick:
    then their statement is written while they run (and its completion later)."""
    subject = "slow@example.com"
    text = "SELECT pg_advisory_lock(%s::bigint), %s::int AS n"
    holder_token = gw.token(sub="slow-holder@example.com")
    # Closed in reverse order: the holder first, so a failed assertion frees the lock
    # (and the pool's wait for the statement ends).
    with (
        ThreadPoolExecutor(1) as pool,
        psycopg.connect(gw.dsn(gw.token(sub=subject)), autocommit=True) as conn,
        psycopg.connect(gw.dsn(holder_token), autocommit=True) as holder,
    ):
        conn.execute("SELECT 1")
        holder.execute("SELECT pg_advisory_lock(%s::bigint)", (LOCK_KEY,))
        # The statement waits for the lock another session holds until the test lets it
        # go: however slow the host, writer ticks find it running.
        running = pool.submit(lambda: conn.execute(text, (LOCK_KEY, "7")).fetchall())
        seen = statements_with_parameters(session_file(gw, subject, complete=False), 10)
        assert not running.done()  # still blocked, already on disk
        assert [(s.stmt, s.text, s.params) for s in seen] == [
            (2, "SELECT pg_advisory_lock($1::bigint), $2::int AS n", [LOCK_KEY, "7"])
        ]
        holder.execute("SELECT pg_advisory_unlock(%s::bigint)", (LOCK_KEY,))
        assert running.result(30) == [("", 7)]
    path = session_file(gw, subject)
    recorded = recorded_results(path)
    assert [(s.stmt, s.path, rows, d.rows) for s, _, rows, d in recorded] == [
        (1, "simple", [[b"1"]], 1),
        (2, "extended", [[b"", b"7"]], 1),
    ]
    # Written and signed by a checkpoint while it ran, completed after.
    order = [(type(f), getattr(f, "stmt", None)) for f in frames(path)]
    ran = order[order.index((Stmt, 2)) : order.index((Done, 2))]
    assert (Ckpt, None) in ran


def test_pipeline_with_a_refusal_keeps_order_and_numbers(gw: GatewayProcess) -> None:
    """Numbers are given on arrival and the file keeps the order of events: a refused
    statement is recorded at once, executions when they finish."""
    subject = "pipeline@example.com"
    token = gw.token(sub=subject, groups=("contractors",))
    with psycopg.connect(gw.dsn(token), autocommit=True) as conn:
        with conn.pipeline() as p:
            conn.execute("SELECT %s::int AS a", (1,))
            conn.execute("SELECT %s::int AS b", (2,))
            conn.execute("DELETE FROM customers WHERE id = %s", (3,))
            conn.execute("SELECT %s::int AS c", (4,))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                p.sync()
        assert conn.execute("SELECT 5").fetchone() == (5,)
    fs = [f for f in frames(session_file(gw, subject)) if isinstance(f, (Stmt, Done))]
    stmts = {f.stmt: (f.decision, f.text) for f in fs if isinstance(f, Stmt)}
    done = [(f.stmt, f.rows, f.error) for f in fs if isinstance(f, Done)]
    # Numbers follow arrival: the client's order, whatever order things completed in.
    assert stmts == {
        1: ("allow", "SELECT $1::int AS a"),
        2: ("allow", "SELECT $1::int AS b"),
        3: ("deny", "DELETE FROM customers WHERE id = $1"),
        4: ("allow", "DELETE FROM customers WHERE id = $1"),
        5: ("allow", "SELECT $1::int AS c"),
        6: ("allow", "SELECT 5"),
    }
    # Completion order: the refusal happened at the gateway, before the server answered
    # the two statements sent ahead of it. The refused statement's Execute and the one
    # after it were skipped by the server (the pipeline's error).
    skipped = Error("", "not executed: an earlier message in the pipeline failed")
    assert done == [
        (3, 0, Error("42501", 'statement denied by gateway policy (class "write" is not allowed)')),
        (1, 1, None),
        (2, 1, None),
        (4, 0, skipped),
        (5, 0, skipped),
        (6, 1, None),
    ]
    # A statement is written before its completion: with it when it finished between two
    # writer ticks, or on its own at a tick that found it still running (on a slow host
    # a tick can fall between the refusal and the server's answers).
    order = [(type(f), f.stmt) for f in fs]
    for n in stmts:
        assert order.index((Stmt, n)) < order.index((Done, n))
    # The refusal is recorded whole at once: its completion right after its statement.
    assert order.index((Done, 3)) == order.index((Stmt, 3)) + 1


def test_multi_statement_query_records_every_result(gw: GatewayProcess) -> None:
    """A simple Query with two results: the second result's columns and rows are
    recorded after the first's, for the one statement."""
    subject = "multi@example.com"
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": gw.token(sub=subject), "PGSSLMODE": "require"}
    query = "SELECT 1 AS a, 'x' AS b; SELECT 'y' AS c UNION ALL SELECT 'z'"
    cmd = ["psql", "-X", "-h", gw.host, "-p", str(gw.port), "-U", subject, "-d", "app"]
    subprocess.run([*cmd, "-c", query], env=env, capture_output=True, timeout=60, check=True)
    fs = frames(session_file(gw, subject))
    metas = [[c.name for c in f.columns] for f in fs if isinstance(f, Meta)]
    rows = [list(iter_data_rows(f.data)) for f in fs if isinstance(f, Rows)]
    (done,) = [f for f in fs if isinstance(f, Done)]
    assert metas == [["a", "b"], ["c"]]
    assert rows == [[[b"1", b"x"]], [[b"y"], [b"z"]]]
    assert (done.rows, done.rows_recorded, done.command_tag) == (3, 3, "SELECT 2")


def test_no_secrets_in_recordings(gw: GatewayProcess, pg_gateway_role: tuple[str, str]) -> None:
    subject = "secrets@example.com"
    token = gw.token(sub=subject)
    with psycopg.connect(gw.dsn(token), autocommit=True) as conn:
        conn.execute("SELECT current_user, session_user")
    session_file(gw, subject)
    _, password = pg_gateway_role
    secrets = [token.encode(), token.split(".")[2].encode(), password.encode()]
    files = list(gw.session_dir.glob("*.gwrec"))
    assert files
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret not in data, f"secret found in {path.name}"


def _pgbench_tps(gw: GatewayProcess, seconds: int) -> float:
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": gw.token(ttl=600), "PGSSLMODE": "require"}
    args = ["-h", gw.host, "-p", str(gw.port), "-U", "bench@example.com", "app"]
    run = subprocess.run(
        ["pgbench", "-n", "-S", "-M", "prepared", "-c", "4", "-j", "2", "-T", str(seconds), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    return float(run.stdout.split("tps = ")[1].split()[0])


@pytest.mark.slow
def test_recording_overhead_pgbench(
    start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded, plain = start_gateway(), start_gateway(recording=False)
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": plain.token(ttl=600), "PGSSLMODE": "require"}
    subprocess.run(
        ["pgbench", "-i", "-s", "1", "-q", "-h", plain.host, "-p", str(plain.port), "app"],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    on, off = [], []
    for _ in range(3):  # interleaved, best of each: noise from other processes is large
        off.append(_pgbench_tps(plain, 4))
        on.append(_pgbench_tps(recorded, 4))
    ratio = max(on) / max(off)
    with capsys.disabled():
        print(f"\npgbench -S -M prepared: recording off {off} tps, on {on} tps, ratio {ratio:.2f}")
    # The goal is >= 0.90 on a quiet machine. On a shared 2-CPU box the measured ratio
    # ranged 0.57-0.98 between runs (and a CI host shared with other jobs is noisier
    # still), so the bound sits well below that range: it only catches gross regressions
    # (such as disk I/O or per-row work creeping onto the event loop).
    assert ratio > 0.4
