"""Row and byte limits, and approvals, on the MySQL wire through the real gateway in front
of the real MariaDB, with PyMySQL and mysql-connector (issue 7).

Each group below has one policy; ``big`` holds 5,000 rows. The approver (bob, group
dba-leads) decides through the real admin API over HTTP (or the CLI) while the client
waits in another thread.
"""

from __future__ import annotations

import socket
import struct
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pymysql
import pytest

from gateway.cli import main as gateway_cli
from gateway.recording.schema import Ctl
from protocols.mysql.constants import Command

from ..admin_client import AdminClient
from ..conftest import free_port
from ..test_recording_e2e import frames, session_file
from .conftest import MyGateway, StartMyGateway
from .mywire import Wire

pytestmark = pytest.mark.integration

APPROVER = "bob@example.com"
BIG = 5000

POLICIES = """
[[policies]]
name = "admins"
groups = ["dba"]
targets = ["app-my"]
allow = ["*", "unknown"]

[[policies]]
name = "err"
groups = ["err"]
targets = ["app-my"]
allow = ["read", "session", "transaction"]
max_rows = 100

[[policies]]
name = "trunc"
groups = ["trunc"]
targets = ["app-my"]
allow = ["read", "session", "transaction"]
max_rows = 100
on_limit = "truncate"

[[policies]]
name = "sess"
groups = ["sess"]
targets = ["app-my"]
allow = ["read", "session", "transaction"]
session_max_rows = 250

[[policies]]
name = "window"
groups = ["window"]
targets = ["app-my"]
allow = ["read", "session"]
window_max_rows = 300
window = "1h"

[[policies]]
name = "appr"
groups = ["appr"]
targets = ["app-my"]
allow = ["read", "session", "transaction", "admin"]
max_rows = 100
on_limit = "approval"
approvers = ["dba-leads"]
approval_timeout = "30s"

[[policies]]
name = "quick"
groups = ["quick"]
targets = ["app-my"]
allow = ["read", "session"]
max_rows = 100
on_limit = "approval"
approvers = ["dba-leads"]
approval_timeout = "1500ms"

[[policies]]
name = "bytes"
groups = ["bytes"]
targets = ["app-my"]
allow = ["read", "session"]
max_bytes = "2KB"
on_limit = "truncate"

[[policies]]
name = "masked"
groups = ["masked"]
targets = ["app-my"]
allow = ["read", "session"]
max_rows = 100
on_limit = "truncate"

[[policies.masks]]
columns = ["big.pad"]
style = "redact"

[[policies]]
name = "reviewed"
groups = ["reviewed"]
targets = ["app-my"]
allow = ["read", "session", "ddl"]
review = ["ddl"]
approvers = ["dba-leads"]
approval_timeout = "30s"
"""


@pytest.fixture(scope="module")
def admin_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gw(start_mysql_gateway: StartMyGateway, admin_port: int) -> MyGateway:
    extra = f"""
[admin]
listen = "127.0.0.1:{admin_port}"
groups = ["gateway-admins"]
allow_plaintext = true
"""
    return start_mysql_gateway(policies=POLICIES, extra=extra)


@pytest.fixture(scope="module")
def approver(gw: MyGateway, admin_port: int) -> AdminClient:
    return AdminClient(f"http://127.0.0.1:{admin_port}", gw.token(APPROVER, ("dba-leads",)))


def connect(gw: MyGateway, user: str, group: str, **kw: Any) -> pymysql.Connection[Any]:
    return pymysql.connect(
        **gw.pymysql_kwargs(gw.token(user, (group,)), user=user), autocommit=True, **kw
    )


@pytest.fixture(scope="module", autouse=True)
def schema(gw: MyGateway) -> None:
    with connect(gw, "root@example.com", "dba") as c, c.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS big")
        cur.execute("DROP TABLE IF EXISTS reviewed_t")
        cur.execute("CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(40))")
        cur.execute("SET SESSION max_recursive_iterations = 100000")
        cur.execute(
            "INSERT INTO big WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
            f"WHERE n < {BIG}) SELECT n, REPEAT('x', 20) FROM s"
        )


def query(conn: pymysql.Connection[Any], sql: str) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return tuple(cur.fetchall())


def still_usable(conn: pymysql.Connection[Any]) -> None:
    assert query(conn, "SELECT 41 + 1") == ((42,),)
    assert query(conn, "SELECT id FROM big ORDER BY id LIMIT 3") == ((1,), (2,), (3,))


def in_thread(fn: Any) -> Future[Any]:
    return ThreadPoolExecutor(1).submit(fn)


# ------------------------------------------------------------------------------ error


def test_error_stops_the_result_and_the_session_goes_on(gw: MyGateway) -> None:
    with connect(gw, "erin@example.com", "err") as conn:
        with pytest.raises(pymysql.err.OperationalError) as info:
            query(conn, "SELECT * FROM big")
        assert info.value.args[0] == 1105
        assert "max_rows=100" in info.value.args[1] and "'err'" in info.value.args[1]
        still_usable(conn)
        assert len(query(conn, "SELECT * FROM big LIMIT 100")) == 100
        # Several times in a row: sequence ids and the response FIFO stay right.
        for _ in range(3):
            with pytest.raises(pymysql.err.OperationalError):
                query(conn, "SELECT * FROM big")
            still_usable(conn)


# ------------------------------------------------------------------------------ truncate


def test_truncate_returns_max_rows_and_a_warning(gw: MyGateway) -> None:
    with connect(gw, "tru@example.com", "trunc") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM big ORDER BY id")
            rows = cur.fetchall()
            assert [r[0] for r in rows] == list(range(1, 101))
            assert cur.rowcount == 100
            assert cur.warning_count >= 1
        still_usable(conn)
        # Inside a transaction: the transaction goes on (only the statement was killed).
        conn.begin()
        assert len(query(conn, "SELECT * FROM big")) == 100
        assert query(conn, "SELECT @@in_transaction") == ((1,),)
        assert query(conn, "SELECT count(*) FROM big") == ((BIG,),)
        conn.commit()


def test_truncate_with_a_multi_statement_query(gw: MyGateway) -> None:
    conn = pymysql.connect(
        **gw.pymysql_kwargs(gw.token("tru2@example.com", ("trunc",)), user="tru2@example.com"),
        autocommit=True,
        client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
    )
    with conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM big; SELECT 'second'")
        assert len(cur.fetchall()) == 100
        # The rest of the response (the second result too) was dropped: no more results.
        assert not cur.nextset()
        still_usable(conn)


# ------------------------------------------------------------------------ budgets


def test_session_budget_across_offset_pages(gw: MyGateway) -> None:
    with connect(gw, "sam@example.com", "sess") as conn:
        for page in range(2):
            sql = f"SELECT * FROM big ORDER BY id LIMIT 100 OFFSET {page * 100}"
            assert len(query(conn, sql)) == 100
        with pytest.raises(pymysql.err.OperationalError) as info:
            query(conn, "SELECT * FROM big ORDER BY id LIMIT 100 OFFSET 200")
        assert "session_max_rows=250" in info.value.args[1]
        # Spent: results with rows fail, the rest works.
        assert query(conn, "SELECT 1 FROM DUAL WHERE 1 = 0") == ()
        with pytest.raises(pymysql.err.OperationalError):
            query(conn, "SELECT 1")


def test_window_budget_survives_reconnecting(gw: MyGateway) -> None:
    user = "wendy@example.com"
    with connect(gw, user, "window") as conn:
        assert len(query(conn, "SELECT * FROM big LIMIT 200")) == 200
    with connect(gw, user, "window") as conn:
        with pytest.raises(pymysql.err.OperationalError) as info:
            query(conn, "SELECT * FROM big LIMIT 200")
        assert "window_max_rows=300" in info.value.args[1]
    with connect(gw, "walt@example.com", "window") as conn:
        assert len(query(conn, "SELECT * FROM big LIMIT 200")) == 200


# ---------------------------------------------------------------------------- approval


def test_approval_resumes_the_stream(gw: MyGateway, approver: AdminClient) -> None:
    user = "ann@example.com"
    conn = connect(gw, user, "appr")
    future = in_thread(lambda: query(conn, "SELECT * FROM big ORDER BY id"))
    request = approver.wait_pending(user)
    assert request["kind"] == "limit"
    assert request["rows_so_far"] == 100
    assert request["reason"] == "max_rows=100"
    assert "FROM big" in request["statement"]
    time.sleep(0.2)
    assert not future.done()
    status, body = approver.approve(request["id"])
    assert status == 200, body
    rows = future.result(timeout=30)
    assert [r[0] for r in rows] == list(range(1, BIG + 1))
    # Statement scope: the next big result pauses again; session scope lifts the rest.
    future = in_thread(lambda: query(conn, "SELECT * FROM big"))
    second = approver.wait_pending(user)
    assert second["id"] != request["id"]
    assert approver.approve(second["id"], scope="session")[0] == 200
    assert len(future.result(timeout=30)) == BIG
    assert len(query(conn, "SELECT * FROM big")) == BIG
    conn.close()
    path = session_file(gw.process, user)
    kinds = [f.kind for f in frames(path) if isinstance(f, Ctl)]
    for step in ("limit_reached", "approval_requested", "approval_approved", "resumed"):
        assert step in kinds, kinds


def test_denial_via_cli_and_timeout_stop_the_result(gw: MyGateway, approver: AdminClient) -> None:
    user = "dan@example.com"
    conn = connect(gw, user, "appr")
    future = in_thread(lambda: query(conn, "SELECT * FROM big"))
    request = approver.wait_pending(user)
    code = gateway_cli(
        [
            "approvals",
            "deny",
            request["id"],
            "--reason",
            "too much data",
            "--url",
            approver.base_url,
            "--token",
            approver.token,
        ]
    )
    assert code == 0
    with pytest.raises(pymysql.err.OperationalError) as info:
        future.result(timeout=30)
    assert f"denied by {APPROVER}: too much data" in info.value.args[1]
    still_usable(conn)
    conn.close()

    user = "quinn@example.com"
    with connect(gw, user, "quick") as conn:
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as info:
            query(conn, "SELECT * FROM big")
        assert "timed out" in info.value.args[1]
        assert 1.2 < time.monotonic() - started < 15
        still_usable(conn)


def test_kill_query_while_paused(gw: MyGateway, approver: AdminClient) -> None:
    user = "kim@example.com"
    conn = connect(gw, user, "appr")
    future = in_thread(lambda: query(conn, "SELECT * FROM big"))
    request = approver.wait_pending(user)
    with connect(gw, user, "appr") as other:
        query(other, f"KILL QUERY {conn.thread_id()}")
    with pytest.raises(pymysql.err.OperationalError) as info:
        future.result(timeout=30)
    assert info.value.args[0] == 1317
    assert all(r["id"] != request["id"] for r in approver.pending())
    still_usable(conn)
    conn.close()


def test_client_disconnect_withdraws_the_request(gw: MyGateway, approver: AdminClient) -> None:
    user = "gone@example.com"
    conn = connect(gw, user, "appr")
    in_thread(lambda: query(conn, "SELECT * FROM big"))
    request = approver.wait_pending(user)
    conn._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while any(r["id"] == request["id"] for r in approver.pending()):
        assert time.monotonic() < deadline, "request not withdrawn"
        time.sleep(0.05)
    history = {r["id"]: r for r in approver.history()}
    assert history[request["id"]]["state"] == "withdrawn"


# ------------------------------------------------------------------------------- review


def test_review_holds_a_statement_until_approved(gw: MyGateway, approver: AdminClient) -> None:
    user = "rita@example.com"
    admin = connect(gw, "root@example.com", "dba")
    exists = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'reviewed_t'"
    conn = connect(gw, user, "reviewed")
    future = in_thread(lambda: query(conn, "CREATE TABLE reviewed_t (a int)"))
    request = approver.wait_pending(user)
    assert request["kind"] == "review"
    assert request["statement"] == "CREATE TABLE reviewed_t (a int)"
    assert query(admin, exists) == ((0,),)  # held: nothing was sent
    assert approver.approve(request["id"])[0] == 200
    future.result(timeout=30)
    assert query(admin, exists) == ((1,),)
    future = in_thread(lambda: query(conn, "DROP TABLE reviewed_t"))
    request = approver.wait_pending(user)
    approver.deny(request["id"], "not today")
    with pytest.raises(pymysql.err.OperationalError) as info:
        future.result(timeout=30)
    assert info.value.args[0] == 1142
    assert "not today" in info.value.args[1]
    assert query(admin, exists) == ((1,),)
    still_usable(conn)
    conn.close()
    admin.close()


def test_a_failed_prepare_does_not_rename_an_approved_statement(
    gw: MyGateway, approver: AdminClient
) -> None:
    """An approved PREPARE's body stays on the server under its name; a later PREPARE of
    that name which the server rejects must not make the gateway believe the name holds
    the harmless text (EXECUTE would then run the approved body, unreviewed, at will)."""
    from pymysql.constants import CLIENT

    user = "rex@example.com"
    admin = connect(gw, "root@example.com", "dba")
    exists = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'prep_t'"
    query(admin, "DROP TABLE IF EXISTS prep_t")
    conn = connect(gw, user, "reviewed", client_flag=CLIENT.MULTI_STATEMENTS)
    future = in_thread(lambda: query(conn, "PREPARE p FROM 'CREATE TABLE prep_t (a int)'"))
    approver.approve(approver.wait_pending(user)["id"])
    future.result(timeout=30)
    with pytest.raises(pymysql.err.MySQLError):  # fails at its first statement
        query(conn, "SELECT * FROM no_such_table; PREPARE p FROM 'SELECT 1'")
    with pytest.raises(pymysql.err.OperationalError) as refused:
        query(conn, "EXECUTE p")  # the server's p is still the approved CREATE TABLE
    assert refused.value.args[0] == 1142
    assert query(admin, exists) == ((0,),)
    conn.close()
    admin.close()


# --------------------------------------------------- bytes, masking, binary protocol


def test_max_bytes_truncates_on_row_bytes(gw: MyGateway) -> None:
    with connect(gw, "bea@example.com", "bytes") as conn:
        rows = query(conn, "SELECT * FROM big ORDER BY id")
        # Each row packet is 4 + 1 + len(id) + 1 + 20 bytes: about 30; 2 KB holds 60-70.
        assert 50 < len(rows) < 80
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
        still_usable(conn)


def test_limits_count_the_masked_rows(gw: MyGateway) -> None:
    with connect(gw, "mae@example.com", "masked") as conn:
        rows = query(conn, "SELECT id, pad FROM big ORDER BY id")
        assert len(rows) == 100
        assert all(r[1] != "x" * 20 for r in rows), rows[:3]  # masked, not the stored value
        still_usable(conn)


def connector(gw: MyGateway, user: str, group: str, *, pure: bool) -> Any:
    import mysql.connector

    kw = gw.connector_kwargs(gw.token(user, (group,)), user=user)
    kw.update(use_pure=pure, autocommit=True)
    return mysql.connector.connect(**kw)


def test_prepared_statement_error(gw: MyGateway) -> None:
    """Binary-protocol results stop with the same ERR. The C extension is used: the pure
    Python mysql-connector cannot read an ERR that follows binary rows (it re-appends the
    previous row and waits for more), whoever sends it -- a server KILL does the same."""
    import mysql.connector.errors

    conn = connector(gw, "pete@example.com", "err", pure=False)
    try:
        cur = conn.cursor(prepared=True)
        with pytest.raises(mysql.connector.errors.DatabaseError) as info:
            cur.execute("SELECT id, pad FROM big WHERE id > %s", (0,))
            cur.fetchall()
        assert info.value.errno == 1105
        assert "max_rows=100" in str(info.value)
        # The C extension frees the statement's result on an ERR but leaves its own
        # "unread result" flag set (connection_cext.get_rows); the wire is in step.
        conn._unread_result = False
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT id FROM big WHERE id <= %s ORDER BY id", (3,))
        assert cur.fetchall() == [(1,), (2,), (3,)]
    finally:
        conn.close()


def test_prepared_statement_truncate(gw: MyGateway) -> None:
    conn = connector(gw, "tina@example.com", "trunc", pure=True)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT id, pad FROM big WHERE id > %s ORDER BY id", (0,))
        assert [r[0] for r in cur.fetchall()] == list(range(1, 101))
        cur.execute("SELECT id FROM big WHERE id <= %s ORDER BY id", (2,))
        assert cur.fetchall() == [(1,), (2,)]
    finally:
        conn.close()


def test_cursor_fetch_batches_share_one_budget(gw: MyGateway) -> None:
    """COM_STMT_EXECUTE with a read-only cursor, rows by COM_STMT_FETCH: every batch of
    the cursor draws on the statement's one max_rows budget."""
    w = Wire(gw.host, gw.port)
    w.login(gw.token("fay@example.com", ("err",)))
    w.command(bytes((Command.COM_STMT_PREPARE,)) + b"SELECT id FROM big ORDER BY id")
    _, ok = w.packet()
    assert ok[:1] == b"\x00", ok
    stmt_id = ok[1:5]
    w.packet()  # column definition
    w.packet()  # EOF
    w.command(bytes((Command.COM_STMT_EXECUTE,)) + stmt_id + b"\x01" + b"\x01\x00\x00\x00")
    assert w.packet()[1] == b"\x01"
    w.packet()
    _, eof = w.packet()
    assert eof[:1] == b"\xfe" and struct.unpack("<H", eof[3:5])[0] & 0x40  # CURSOR_EXISTS

    def fetch(n: int) -> tuple[list[int], bytes]:
        w.command(bytes((Command.COM_STMT_FETCH,)) + stmt_id + struct.pack("<I", n))
        ids = []
        while True:
            _, row = w.packet()
            if row[:1] in (b"\xfe", b"\xff"):
                return ids, row
            ids.append(struct.unpack("<i", row[2:6])[0])

    ids, end = fetch(60)
    assert ids == list(range(1, 61)) and end[:1] == b"\xfe"
    ids, end = fetch(60)
    assert ids == list(range(61, 101))
    assert end[:1] == b"\xff" and b"max_rows=100" in end, end
    # Many other cursors opened meanwhile do not make the gateway forget this one's budget.
    for _ in range(70):
        w.command(bytes((Command.COM_STMT_PREPARE,)) + b"SELECT id FROM big ORDER BY id")
        _, other_ok = w.packet()
        other = other_ok[1:5]
        w.packet()
        w.packet()
        w.command(bytes((Command.COM_STMT_EXECUTE,)) + other + b"\x01" + b"\x01\x00\x00\x00")
        for _ in range(3):
            w.packet()
        w.command(bytes((Command.COM_STMT_FETCH,)) + other + struct.pack("<I", 1))
        w.packet()
        w.packet()
    ids, end = fetch(60)
    assert ids == [] and end[:1] == b"\xff", (ids, end)
    w.command(bytes((Command.COM_STMT_CLOSE,)) + stmt_id)  # no reply
    w.query("SELECT 'after cursor'")
    assert w.response_packets()[3][1] == b"\x0cafter cursor"
    w.close()


# ------------------------------------------------- net_write_timeout, identity changes


def write_timeout(conn: Any) -> int:
    cur = conn.cursor()
    cur.execute("SELECT @@session.net_write_timeout")
    (value,) = cur.fetchone()
    cur.close()
    return int(value)


def test_write_timeout_raised_again_after_reset_and_change_user(gw: MyGateway) -> None:
    """Results of the "appr" policy may pause for up to 30 s: the upstream session's
    net_write_timeout is 30 + 60 s, also after the server reset it to the global value."""
    conn = connector(gw, "rae@example.com", "appr", pure=True)
    try:
        assert write_timeout(conn) == 90
        conn.cmd_reset_connection()
        assert write_timeout(conn) == 90
        token = gw.token("ray@example.com", ("appr",))
        conn.cmd_change_user(username="ray@example.com", password=token, database="app")
        assert write_timeout(conn) == 90
    finally:
        conn.close()


def test_change_user_takes_the_new_identitys_masks_and_limits(gw: MyGateway) -> None:
    conn = connector(gw, "root2@example.com", "dba", pure=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pad FROM big ORDER BY id")
        assert len(cur.fetchall()) == BIG  # no masks, no limits
        token = gw.token("mia@example.com", ("masked",))
        conn.cmd_change_user(username="mia@example.com", password=token, database="app")
        cur = conn.cursor()
        cur.execute("SELECT id, pad FROM big ORDER BY id")
        rows = cur.fetchall()
        assert len(rows) == 100  # the new identity's max_rows (truncate)
        assert all(r[1] != "x" * 20 for r in rows)  # and its masks
    finally:
        conn.close()


def test_pause_longer_than_the_servers_write_timeout(
    gw: MyGateway, approver: AdminClient, mariadb_server: Any
) -> None:
    """With the server's global net_write_timeout at 2 s, a result paused for 4 s still
    resumes: the gateway raised the session's value at login."""
    mariadb_server.sql("SET GLOBAL net_write_timeout = 2")
    try:
        user = "pat@example.com"
        conn = connect(gw, user, "appr")
    finally:
        mariadb_server.sql("SET GLOBAL net_write_timeout = 60")
    future = in_thread(lambda: query(conn, "SELECT * FROM big ORDER BY id"))
    request = approver.wait_pending(user)
    time.sleep(4)
    assert approver.approve(request["id"])[0] == 200
    rows = future.result(timeout=30)
    assert [r[0] for r in rows] == list(range(1, BIG + 1))
    still_usable(conn)
    conn.close()


def test_killing_a_session_withdraws_its_held_statement_at_once(
    gw: MyGateway, approver: AdminClient
) -> None:
    """A held statement of a session that is ending cannot be approved: its request goes
    at the kill, not seconds later when a client that does not read lets the connection
    close."""
    user = "kim@example.com"
    admin = AdminClient(approver.base_url, gw.token("root@example.com", ("gateway-admins",)))
    conn = connect(gw, user, "reviewed")
    in_thread(lambda: query(conn, "CREATE TABLE killed_t (a int)"))
    request = approver.wait_pending(user)
    status, sessions = admin.call("GET", "/api/sessions")
    session = next(s for s in sessions["sessions"] if s["subject"] == user)
    status, _ = admin.call("POST", f"/api/sessions/{session['session_id']}/kill", {"reason": "x"})
    assert status == 200
    assert approver.approve(request["id"])[0] == 409  # withdrawn already
    history = {r["id"]: r for r in approver.history()}
    assert history[request["id"]]["state"] == "withdrawn"
    with connect(gw, "root@example.com", "dba") as check:
        exists = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'killed_t'"
        assert query(check, exists) == ((0,),)
