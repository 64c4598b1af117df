"""QueryTracker: which execution owns each response, in simple, extended and
pipelined traffic, including the skip-until-Sync rule after an error."""

from __future__ import annotations

from struct import pack

import pytest

from protocols.postgres import tracker
from protocols.postgres.messages import build_error_response
from protocols.postgres.tracker import Execution, QueryTrackerPy


class Log:
    def __init__(self) -> None:
        self.started: list[Execution] = []
        self.described: list[Execution] = []
        self.finished: list[Execution] = []

    def execution_started(self, ex: Execution) -> None:
        self.started.append(ex)

    def result_described(self, ex: Execution) -> None:
        self.described.append(ex)

    def execution_finished(self, ex: Execution) -> None:
        self.finished.append(ex)


@pytest.fixture(
    params=[tracker.QueryTracker, QueryTrackerPy], ids=["QueryTracker", "QueryTrackerPy"]
)
def QueryTracker(request: pytest.FixtureRequest) -> type[QueryTrackerPy]:
    """Every test runs on the tracker the gateway uses (compiled where built) and on the
    pure-Python reference."""
    return request.param  # type: ignore[no-any-return]


def parse(name: bytes, sql: bytes) -> bytes:
    return name + b"\0" + sql + b"\0" + pack("!h", 0)


def bind(
    portal: bytes, stmt: bytes, params: list[bytes | None], result_formats: tuple[int, ...] = ()
) -> bytes:
    body = portal + b"\0" + stmt + b"\0" + pack("!h", 0) + pack("!h", len(params))
    for p in params:
        body += pack("!i", -1) if p is None else pack("!i", len(p)) + p
    body += pack("!h", len(result_formats)) + b"".join(pack("!h", f) for f in result_formats)
    return body


def execute(portal: bytes = b"", max_rows: int = 0) -> bytes:
    return portal + b"\0" + pack("!i", max_rows)


ROWDESC = pack("!h", 1) + b"x\0" + pack("!IhIhih", 0, 0, 23, 4, -1, 0)


def error_body(code: str, msg: str) -> bytes:
    return build_error_response(code, msg)[5:]


def test_simple_multi_statement_query(QueryTracker: type[QueryTrackerPy]) -> None:
    log = Log()
    t = QueryTracker(log)
    t.frontend(ord("Q"), b"SELECT 1; SELECT 2\0")
    assert t.busy()
    ex = t.head_execution()
    assert ex is not None and ex.path == "simple" and ex.text == b"SELECT 1; SELECT 2"
    t.backend(ord("T"), ROWDESC)
    ex.rows += 1
    t.backend(ord("C"), b"SELECT 1\0")
    t.backend(ord("T"), ROWDESC)
    ex.rows += 1
    t.backend(ord("C"), b"SELECT 1\0")
    assert log.finished == []
    t.backend(ord("Z"), b"I")
    assert log.finished == [ex] and ex.rows == 2 and ex.tags == ["SELECT 1", "SELECT 1"]
    assert len(log.described) == 2
    assert not t.busy()


def test_pipelined_extended_with_error_skips_until_sync(QueryTracker: type[QueryTrackerPy]) -> None:
    log = Log()
    t = QueryTracker(log)
    # Three executes in one Sync batch; the second fails; the third is skipped.
    for i in range(3):
        t.frontend(ord("P"), parse(b"", b"SELECT %d" % i))
        t.frontend(ord("B"), bind(b"", b"", [b"v%d" % i]))
        t.frontend(ord("E"), execute())
    t.frontend(ord("S"), b"")
    first, second, third = log.started
    assert [e.text for e in log.started] == [b"SELECT 0", b"SELECT 1", b"SELECT 2"]
    assert first.bind is not None and first.bind.parameters == (b"v0",)
    for m in (b"1", b"2"):
        t.backend(m[0], b"")
    assert t.head_execution() is first
    first.rows += 1
    t.backend(ord("C"), b"SELECT 1\0")
    t.backend(ord("1"), b"")
    t.backend(ord("E"), error_body("22012", "division by zero"))
    assert second.error == ("22012", "division by zero")
    assert third.skipped and third in log.finished
    t.backend(ord("Z"), b"E")
    assert not t.busy() and t.status == ord("E")
    assert log.finished == [first, second, third]


def test_describe_statement_feeds_later_executions(QueryTracker: type[QueryTrackerPy]) -> None:
    log = Log()
    t = QueryTracker(log)
    # asyncpg style: Parse + Describe S + Flush (no Sync), then Bind/Execute/Sync.
    t.frontend(ord("P"), parse(b"s1", b"SELECT x FROM t"))
    t.frontend(ord("D"), b"Ss1\0")
    t.frontend(ord("H"), b"")
    t.backend(ord("1"), b"")
    t.backend(ord("t"), pack("!h", 0))
    t.backend(ord("T"), ROWDESC)
    assert not t.busy()  # Flush expects nothing: no ReadyForQuery is owed
    t.frontend(ord("B"), bind(b"", b"s1", [], (1,)))
    t.frontend(ord("E"), execute())
    t.frontend(ord("S"), b"")
    ex = log.started[-1]
    assert ex.path == "prepared" and ex.row_description == ROWDESC and ex.result_formats == (1,)
    t.backend(ord("2"), b"")
    t.backend(ord("C"), b"SELECT 0\0")
    t.backend(ord("Z"), b"I")
    assert log.finished == [ex]


def test_pipelined_describe_reaches_already_queued_execute(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    log = Log()
    t = QueryTracker(log)
    t.frontend(ord("P"), parse(b"", b"SELECT 1"))
    t.frontend(ord("B"), bind(b"", b"", []))
    t.frontend(ord("D"), b"P\0")
    t.frontend(ord("E"), execute())
    t.frontend(ord("S"), b"")
    ex = log.started[0]
    assert ex.row_description is None
    t.backend(ord("1"), b"")
    t.backend(ord("2"), b"")
    t.backend(ord("T"), ROWDESC)
    assert ex.row_description == ROWDESC


def test_portal_suspended_and_cursor_paths(QueryTracker: type[QueryTrackerPy]) -> None:
    log = Log()
    t = QueryTracker(log)
    t.frontend(ord("E"), execute(b"c1", 10))  # SQL-level cursor: no Bind seen
    t.frontend(ord("S"), b"")
    ex = log.started[0]
    assert ex.path == "cursor" and ex.portal == b"c1"
    t.backend(ord("s"), b"")
    assert ex.suspended and log.finished == [ex]
    t.backend(ord("Z"), b"T")


def test_simple_query_destroys_unnamed_statement_and_idle_drops_portals(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    log = Log()
    t = QueryTracker(log)
    t.frontend(ord("P"), parse(b"", b"SELECT 1"))
    t.frontend(ord("B"), bind(b"p1", b"", []))
    t.frontend(ord("S"), b"")
    t.backend(ord("1"), b"")
    t.backend(ord("2"), b"")
    t.backend(ord("Z"), b"I")
    assert b"p1" not in t.portals  # named portals end with the transaction
    t.frontend(ord("Q"), b"SELECT 2\0")
    assert b"" not in t.statements


def test_error_in_simple_query_waits_for_ready(QueryTracker: type[QueryTrackerPy]) -> None:
    log = Log()
    t = QueryTracker(log)
    t.frontend(ord("Q"), b"SELECT 1/0\0")
    t.backend(ord("E"), error_body("22012", "division by zero"))
    assert log.finished == []
    t.backend(ord("Z"), b"I")
    assert log.finished[0].error == ("22012", "division by zero")


def test_asynchronous_error_without_pending_request_is_ignored(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    t = QueryTracker(Log())
    t.backend(ord("E"), error_body("57P01", "terminating connection"))
    assert not t.busy()


# -- refused messages (policy): the server answers the replacement, the driver the client


def test_refused_query_waits_for_ready_for_query(QueryTracker: type[QueryTrackerPy]) -> None:
    log = Log()
    t = QueryTracker(log)
    t.frontend(ord("Q"), b"SELECT 1\0")
    t.deny(ord("Q"), None, b"DROP TABLE t", b"our error")
    t.frontend(ord("Q"), b"SELECT 2\0")
    # The first query's responses: no denial at the head yet.
    assert t.head_denial() is None
    t.backend(ord("C"), b"SELECT 1\0")
    t.backend(ord("Z"), b"I")
    # The replacement's ErrorResponse is the driver's to swap; ReadyForQuery ends it.
    assert t.head_denial() == b"our error"
    t.backend(ord("E"), error_body("42601", "syntax error"))
    assert t.head_denial() == b"our error"
    t.backend(ord("Z"), b"E")  # inside a transaction block the server aborted it
    assert t.status == ord("E")
    assert t.head_denial() is None
    ex = t.head_execution()
    assert ex is not None and ex.text == b"SELECT 2"
    # The refused statement never became an execution.
    assert [e.text for e in log.started] == [b"SELECT 1", b"SELECT 2"]


def test_refused_parse_skips_to_sync_like_the_server(QueryTracker: type[QueryTrackerPy]) -> None:
    log = Log()
    t = QueryTracker(log)
    t.deny(ord("P"), b"s1", b"DELETE FROM t", b"our error")
    t.frontend(ord("B"), bind(b"", b"s1", [b"7"]))
    t.frontend(ord("E"), execute())
    t.frontend(ord("S"), b"")
    t.frontend(ord("P"), parse(b"", b"SELECT 3"))
    t.frontend(ord("B"), bind(b"", b"", []))
    t.frontend(ord("E"), execute())
    t.frontend(ord("S"), b"")
    assert t.head_denial() == b"our error"
    t.backend(ord("E"), error_body("42601", "syntax error"))
    # Bind/Execute after the refused Parse were skipped; their execution is finished
    # as skipped, with the text the client sent (recorded as such).
    skipped = log.finished[-1]
    assert skipped.skipped and skipped.text == b"DELETE FROM t"
    t.backend(ord("Z"), b"I")
    t.backend(ord("1"), b"")
    t.backend(ord("2"), b"")
    ex = t.head_execution()
    assert ex is not None and ex.text == b"SELECT 3"
    t.backend(ord("C"), b"SELECT 1\0")
    t.backend(ord("Z"), b"I")
    assert not t.busy()


def test_refused_message_after_an_earlier_error_is_skipped_silently(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    # The server skips everything up to Sync after an error: it never answers the
    # replacement, so no gateway error may be sent for it either.
    log = Log()
    t = QueryTracker(log)
    t.frontend(ord("P"), parse(b"", b"SELEC 1"))
    t.deny(ord("P"), b"s2", b"DROP TABLE t", b"our error")
    t.frontend(ord("S"), b"")
    assert t.head_denial() is None
    t.backend(ord("E"), error_body("42601", "syntax error"))
    assert t.head_denial() is None
    t.backend(ord("Z"), b"I")
    assert not t.busy()


def test_refused_parse_does_not_hide_a_live_statement_of_the_same_name(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    log = Log()
    t = QueryTracker(log)
    t.frontend(ord("P"), parse(b"s1", b"SELECT 1"))
    t.frontend(ord("S"), b"")
    t.backend(ord("1"), b"")
    t.backend(ord("Z"), b"I")
    t.deny(ord("P"), b"s1", b"DELETE FROM t", b"our error")
    t.frontend(ord("S"), b"")
    t.backend(ord("E"), error_body("42601", "syntax error"))
    t.backend(ord("Z"), b"I")
    # s1 still runs the statement the server has: that is what gets recorded.
    t.frontend(ord("B"), bind(b"", b"s1", []))
    t.frontend(ord("E"), execute())
    t.backend(ord("2"), b"")
    ex = t.head_execution()
    assert ex is not None and ex.text == b"SELECT 1"


def test_alone_says_when_cancelling_undoes_nothing_the_client_saw(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    t = QueryTracker(Log())
    t.frontend(ord("Q"), b"SELECT * FROM big; SELECT 2\0")
    ex = t.head_execution()
    assert ex is not None and t.alone(ex)
    t.backend(ord("C"), b"SELECT 5\0")  # the first statement completed: not any more
    assert not t.alone(ex)
    t.backend(ord("Z"), b"I")
    # Extended: an INSERT completed earlier in the same Sync batch (implicit transaction).
    t.frontend(ord("P"), parse(b"", b"INSERT INTO t VALUES (1)"))
    t.frontend(ord("B"), bind(b"", b"", []))
    t.frontend(ord("E"), execute())
    t.frontend(ord("P"), parse(b"", b"SELECT * FROM big"))
    t.frontend(ord("B"), bind(b"", b"", []))
    t.frontend(ord("E"), execute())
    t.frontend(ord("S"), b"")
    for m in (b"1", b"2"):
        t.backend(ord(m), b"")
    t.backend(ord("C"), b"INSERT 0 1\0")
    for m in (b"1", b"2"):
        t.backend(ord(m), b"")
    select = t.head_execution()
    assert select is not None and select.text == b"SELECT * FROM big"
    assert not t.alone(select)
    t.backend(ord("C"), b"SELECT 0\0")
    t.backend(ord("Z"), b"T")
    # Inside a transaction block: never alone.
    t.frontend(ord("Q"), b"SELECT * FROM big\0")
    inside = t.head_execution()
    assert inside is not None and not t.alone(inside)


@pytest.mark.parametrize("cls", [tracker.Execution, tracker.ExecutionPy])
def test_execution_state_defaults_and_tags(cls: type[Execution]) -> None:
    """The compiled execution (where built) and the pure-Python one: same defaults, same
    arguments, any value stored, tags decoded on demand."""
    b = tracker.Bind(b"p", b"s", (), (), (1,))
    ex = cls("prepared", b"SELECT 1", b"s", portal=b"p", bind=b, row_description=b"rd")
    assert (ex.path, ex.text, ex.statement_name, ex.portal, ex.bind, ex.row_description) == (
        "prepared",
        b"SELECT 1",
        b"s",
        b"p",
        b,
        b"rd",
    )
    defaults = (ex.rows, ex.bytes, ex.started, ex.finished, ex.skipped, ex.suspended)
    assert defaults == (0, 0, 0.0, 0.0, False, False)
    assert type(ex.started) is float and ex.error is ex.context is ex.mask_plan is None
    assert ex.budget is ex.decided is ex._tag_bodies is None
    assert (ex.tags, ex.tag_count, ex.last_tag, ex.result_formats) == ([], 0, None, (1,))
    ex.add_tag(b"SELECT 1\0")
    ex.add_tag(b"SELECT 2\0")
    assert (ex.tags, ex.tag_count, ex.last_tag, ex.last_tag_body) == (
        ["SELECT 1", "SELECT 2"],
        2,
        "SELECT 2",
        b"SELECT 2\0",
    )
    ex.rows += 5
    ex.context = ex  # the driver stores anything, cycles included
    ex.error = ("42P01", "no such table")
    assert (ex.rows, ex.context, ex.error) == (5, ex, ("42P01", "no such table"))
    assert repr(ex) == "<Execution prepared b'SELECT 1' rows=5>"
    simple = cls("simple", None)
    assert (simple.statement_name, simple.bind, simple.result_formats) == (None, None, ())
    with pytest.raises(AttributeError):
        simple.unknown = 1  # type: ignore[attr-defined]


def test_a_failed_parse_and_an_error_drop_the_records_they_made_stale(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    """A Parse the server rejects (42P05: the name exists) leaves the older statement there;
    an error ends the transaction and its portals: the records of those names are dropped,
    so their executions carry no text (masked whole, labelled as not seen)."""
    t = QueryTracker(Log())
    t.frontend(ord("P"), parse(b"s1", b"SELECT email FROM customers"))
    t.frontend(ord("B"), bind(b"p1", b"s1", []))
    t.frontend(ord("S"), b"")
    for mtype in (b"1", b"2", b"Z"):
        t.backend(mtype[0], b"I" if mtype == b"Z" else b"")
    assert b"s1" in t.statements
    t.frontend(ord("P"), parse(b"s1", b"SELECT name FROM customers"))
    t.frontend(ord("S"), b"")
    t.backend(ord("E"), error_body("42P05", 'prepared statement "s1" already exists'))
    t.backend(ord("Z"), b"I")
    assert b"s1" not in t.statements and not t.portals
    t.frontend(ord("B"), bind(b"", b"s1", []))
    t.frontend(ord("E"), execute())
    ex = t.head_execution()
    assert ex is None or ex.text is None


def test_sql_level_names_make_the_tracker_forget(QueryTracker: type[QueryTrackerPy]) -> None:
    t = QueryTracker(Log())
    t.frontend(ord("P"), parse(b"s1", b"SELECT 1"))
    t.frontend(ord("B"), bind(b"p1", b"s1", []))
    t.forget_names(statements=False, portals=True)
    assert b"s1" in t.statements and not t.portals
    t.forget_names(statements=True, portals=False)
    assert not t.statements


# -- what the server discards: after an error with no Sync queued, and in a copy-in -------


def test_messages_after_an_error_with_no_sync_queued_are_skipped(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    """A client that waits for the error (Parse + Flush) and then sends more: the server
    discards everything up to its next Sync, a simple Query included. The tracker must
    not expect answers to those, or the next query's rows belong to nothing."""
    log = Log()
    t = QueryTracker(log)
    t.frontend(ord("P"), parse(b"s1", b"SELECT 1"))
    t.frontend(ord("S"), b"")
    t.backend(ord("1"), b"")
    t.backend(ord("Z"), b"I")
    t.frontend(ord("P"), parse(b"", b"SELEC 1"))
    t.frontend(ord("H"), b"")
    t.backend(ord("E"), error_body("42601", "syntax error"))
    assert t.skipping and not t.busy()
    # Discarded by the server: none of it is queued or changes a record.
    t.query(b"SELECT 'skipped'")
    t.frontend(ord("P"), parse(b"s1", b"SELECT 'other'"))
    t.frontend(ord("B"), bind(b"p", b"s1", []))
    t.frontend(ord("E"), execute(b"p"))
    t.frontend(ord("C"), b"Ss1\0")
    assert not t.busy()
    assert t.statements[b"s1"].query == b"SELECT 1" and b"p" not in t.portals
    skipped = log.finished[-2:]
    assert [e.path for e in skipped] == ["simple", "cursor"]  # its Bind was skipped too
    assert all(e.skipped for e in skipped)
    # The Sync ends it: answered by one ReadyForQuery, and the next query owns its rows.
    t.frontend(ord("S"), b"")
    assert not t.skipping and t.busy()
    t.backend(ord("Z"), b"I")
    t.query(b"SELECT secret FROM t")
    ex = t.head_execution()
    assert ex is not None and ex.text == b"SELECT secret FROM t"


def test_refused_message_while_skipping_expects_no_answer(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    log = Log()
    t = QueryTracker(log)
    t.frontend(ord("P"), parse(b"", b"SELEC 1"))
    t.frontend(ord("H"), b"")
    t.backend(ord("E"), error_body("42601", "syntax error"))
    t.deny(ord("Q"), None, b"DROP TABLE t", b"our error")
    assert not t.busy() and t.head_denial() is None


def test_syncs_behind_copy_from_stdin_are_ignored_like_the_server(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    """libpq sends Parse/Bind/Describe/Execute/Sync for a COPY together; the server reads
    that Sync, and any the client sends before CopyDone, as part of the copy-in and
    ignores them. One ReadyForQuery comes, for the Sync after CopyDone."""
    log = Log()
    t = QueryTracker(log)
    t.frontend(ord("P"), parse(b"", b"COPY t FROM STDIN"))
    t.frontend(ord("B"), bind(b"", b"", []))
    t.frontend(ord("D"), b"P\0")
    t.frontend(ord("E"), execute())
    t.frontend(ord("S"), b"")
    for m in b"12n":
        t.backend(m, b"")
    copy = t.head_execution()
    assert copy is not None
    t.backend(ord("G"), b"\0\0\0")
    assert t.copy_in
    t.frontend(ord("S"), b"")  # ignored by the server
    t.frontend(ord("H"), b"")
    t.frontend(ord("c"), b"")
    assert not t.copy_in
    t.frontend(ord("S"), b"")
    t.backend(ord("C"), b"COPY 1\0")
    t.backend(ord("Z"), b"I")
    assert not t.busy() and log.finished == [copy]
    t.query(b"SELECT 1")
    assert t.head_execution() is not None


@pytest.mark.parametrize("late", [b"Q", b"P"])
def test_messages_pipelined_into_a_copy_in_are_refused(
    QueryTracker: type[QueryTrackerPy], late: bytes
) -> None:
    from protocols.errors import PeerViolation

    t = QueryTracker(Log())
    t.query(b"COPY t FROM STDIN")
    if late == b"Q":
        t.query(b"SELECT 1")  # behind the COPY, before its CopyInResponse
        with pytest.raises(PeerViolation, match="pipelined behind COPY"):
            t.backend(ord("G"), b"\0\0\0")
    else:
        t.backend(ord("G"), b"\0\0\0")
        with pytest.raises(PeerViolation, match="during COPY FROM STDIN"):
            t.parse(b"", b"SELECT 1")


def test_copy_data_ended_before_the_server_asked_is_followed(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    """asyncpg sends the COPY, its data and CopyDone without waiting for CopyInResponse:
    the copy-in is then over as far as the client's messages go, and a Sync sent after
    the CopyDone is a real one."""
    log = Log()
    t = QueryTracker(log)
    t.query(b"COPY t FROM STDIN")
    copy = t.head_execution()
    t.frontend(ord("c"), b"")
    t.frontend(ord("S"), b"")
    t.backend(ord("G"), b"\0\0\0")
    assert not t.copy_in
    t.backend(ord("C"), b"COPY 1\0")
    t.backend(ord("Z"), b"I")
    assert log.finished == [copy] and t.busy()  # the Sync's answer is still due
    t.backend(ord("Z"), b"I")
    assert not t.busy()
    # The same COPY once more: an end remembered for a finished statement is not reused.
    t.query(b"COPY t FROM STDIN")
    t.backend(ord("G"), b"\0\0\0")
    assert t.copy_in


@pytest.mark.parametrize(
    "sent",
    [
        [b"S", b"c"],  # a Sync between the COPY and its early end: copy data or not?
        [b"c", b"c"],  # two ends: which COPY does each end?
        [b"Q", b"c"],  # an end behind another statement
    ],
    ids=["sync-then-end", "two-ends", "end-behind-a-query"],
)
def test_early_copy_ends_the_tracker_cannot_place_are_refused(
    QueryTracker: type[QueryTrackerPy], sent: list[bytes]
) -> None:
    from protocols.errors import PeerViolation

    t = QueryTracker(Log())
    t.query(b"COPY a FROM STDIN; COPY b FROM STDIN")
    with pytest.raises(PeerViolation):
        for m in sent:
            if m == b"Q":
                t.query(b"SELECT 1")
            else:
                t.frontend(m[0], b"")
        t.backend(ord("G"), b"\0\0\0")  # the COPY's: refused here at the latest


def test_an_end_for_a_copy_refused_before_it_asked_is_not_reused(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    """COPY into a missing table fails before CopyInResponse: the server ignores the
    client's early end, and the next COPY's data is read as usual."""
    t = QueryTracker(Log())
    t.query(b"COPY missing FROM STDIN")
    t.frontend(ord("c"), b"")
    t.backend(ord("E"), error_body("42P01", "relation does not exist"))
    t.query(b"COPY t FROM STDIN")  # sent before the Z above arrives
    t.backend(ord("Z"), b"I")
    t.backend(ord("G"), b"\0\0\0")
    assert t.copy_in
    t.frontend(ord("S"), b"")  # read by this copy-in: ignored
    t.frontend(ord("c"), b"")
    t.backend(ord("C"), b"COPY 0\0")
    t.backend(ord("Z"), b"I")
    assert not t.busy()


def test_a_copy_that_fails_with_a_dropped_sync_behind_it_is_refused(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    """COPY ... FROM STDIN (FREEZE) or into a view fails after its CopyInResponse, before
    reading anything: the server then answers the Sync the tracker dropped as read by the
    copy-in. Whether it did, the messages cannot tell: the session cannot go on."""
    from protocols.errors import PeerViolation

    t = QueryTracker(Log())
    t.frontend(ord("P"), parse(b"", b"COPY v FROM STDIN"))
    t.frontend(ord("B"), bind(b"", b"", []))
    t.frontend(ord("E"), execute())
    t.frontend(ord("S"), b"")
    for m in b"12":
        t.backend(m, b"")
    t.backend(ord("G"), b"\0\0\0")
    with pytest.raises(PeerViolation, match="cannot tell"):
        t.backend(ord("E"), error_body("42809", "cannot copy to view"))


def test_an_answer_while_skipping_is_refused(QueryTracker: type[QueryTrackerPy]) -> None:
    from protocols.errors import PeerViolation

    t = QueryTracker(Log())
    t.frontend(ord("P"), parse(b"", b"SELEC 1"))
    t.frontend(ord("H"), b"")
    t.backend(ord("E"), error_body("42601", "syntax error"))
    with pytest.raises(PeerViolation, match="lost track"):
        t.backend(ord("Z"), b"I")


def test_copy_end_after_a_failed_copy_is_forgotten_when_idle(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    """The end of a COPY the server already failed is ignored by it; once nothing is
    pending it cannot stand behind a later COPY."""
    t = QueryTracker(Log())
    t.query(b"COPY t FROM STDIN")
    t.frontend(ord("c"), b"")  # the error below is already on its way
    t.backend(ord("E"), error_body("22P04", "bad copy data"))
    t.backend(ord("Z"), b"I")
    t.query(b"COPY t FROM STDIN")
    t.backend(ord("G"), b"\0\0\0")
    assert t.copy_in


def test_rows_with_no_execution_are_left_to_the_driver(
    QueryTracker: type[QueryTrackerPy],
) -> None:
    t = QueryTracker(Log())
    row = b"D" + pack("!Ih", 6, 0)
    assert t.backend_run(row, [(ord("D"), 0, len(row), 1)], None) == (0, False)
