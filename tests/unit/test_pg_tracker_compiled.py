"""The compiled query tracker (_tracker.c) against the pure-Python reference
(tracker.QueryTrackerPy): the same messages and driver calls give the same observer calls,
results, errors and state after every step, on valid and malformed input."""

from __future__ import annotations

import gc
import shutil
from struct import pack
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import PeerViolation
from protocols.postgres import tracker as tracker_module
from protocols.postgres.framing import MessageScanner, build_message
from protocols.postgres.messages import build_error_response
from protocols.postgres.tracker import Execution, QueryTracker, QueryTrackerPy

from .test_pg_tracker import ROWDESC, bind, execute, parse

# The comparisons need the extension; whether it must exist is the next test's question.
compiled_only = pytest.mark.skipif(not tracker_module.COMPILED, reason="extension not built")


def test_the_compiled_tracker_is_built_and_used() -> None:
    # CI builds with a C compiler: a silent fallback to Python would hide a broken build.
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine: the pure-Python implementation runs")
    from protocols.postgres import _tracker

    assert issubclass(QueryTracker, _tracker.TrackerCore)
    assert QueryTracker.frontend is _tracker.TrackerCore.frontend


class Recorder:
    """An observer that logs its calls, naming executions by order of appearance."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.executions: list[Execution] = []

    def index(self, ex: Execution) -> int:
        for i, known in enumerate(self.executions):
            if known is ex:
                return i
        self.executions.append(ex)
        return len(self.executions) - 1

    def execution_started(self, ex: Execution) -> None:
        self.calls.append(("started", self.index(ex)))
        # As the driver does: a plan the tracker must drop when a new description arrives.
        ex.mask_plan = "planned"

    def result_described(self, ex: Execution) -> None:
        self.calls.append(("described", self.index(ex)))

    def execution_finished(self, ex: Execution) -> None:
        self.calls.append(("finished", self.index(ex)))


NAMES = st.sampled_from([b"", b"s1", b"s2"])
PORTALS = st.sampled_from([b"", b"p1", b"cur"])
ERROR = build_error_response("42P01", 'relation "x" does not exist')[5:]
# A second shape, so that a description given to the wrong execution shows.
ROWDESC2 = pack("!h", 1) + b"y\0" + pack("!IhIhih", 0, 0, 25, -1, -1, 0)


def _garbage(direction: str, types: str, size: int) -> st.SearchStrategy[tuple[Any, ...]]:
    """Messages of the tracked types with random bodies (``direction``: "F" or "B")."""
    return st.builds(
        lambda t, body: (direction, t, body),
        st.sampled_from([ord(x) for x in types]),
        st.binary(max_size=size),
    )


def _frontend_messages() -> st.SearchStrategy[tuple[Any, ...]]:
    b = st.builds(
        lambda p, s, n, f: ("F", ord("B"), bind(p, s, [b"1"] * n, f)),
        PORTALS,
        NAMES,
        st.integers(0, 2),
        st.sampled_from([(), (0,), (1,)]),
    )
    e = st.builds(lambda p, m: ("F", ord("E"), execute(p, m)), PORTALS, st.integers(0, 5))
    # Execute bodies cut short, or with bytes after them (parse_execute ignores those).
    e_odd = st.builds(
        lambda p, cut: ("F", ord("E"), execute(p)[:-cut] if cut > 0 else execute(p) + b"xy"),
        PORTALS,
        st.integers(0, 6),
    )
    # Describe and Close: a kind byte ('S' statement, 'P' portal) and a name.
    d_or_c = st.builds(
        lambda t, k, n: ("F", t, bytes([k]) + n + b"\0"),
        st.sampled_from(b"DC"),
        st.sampled_from(b"SP"),
        NAMES,
    )
    p = st.builds(
        lambda n, q: ("F", ord("P"), parse(n, q)),
        NAMES,
        st.sampled_from([b"SELECT 1", b"SELECT $1"]),
    )
    fixed = st.sampled_from(
        [
            ("F", ord("S"), b""),
            ("F", ord("H"), b""),
            ("F", ord("F"), b"\0\0\0\1"),
            ("F", ord("Q"), b"SELECT 1\0"),
            # Describes the reference refuses: unknown kind, no name terminator, empty.
            ("F", ord("D"), b"X\0"),
            ("F", ord("D"), b"S"),
            ("F", ord("D"), b""),
        ]
    )
    return st.one_of(b, e, e_odd, d_or_c, p, fixed, _garbage("F", "BESDCPQ", 12))


def _backend_messages() -> st.SearchStrategy[tuple[Any, ...]]:
    fixed = st.sampled_from(
        [
            ("B", ord("Z"), b"I"),
            ("B", ord("Z"), b"T"),
            ("B", ord("Z"), b"E"),
            ("B", ord("Z"), b""),
            ("B", ord("C"), b"SELECT 1\0"),
            ("B", ord("C"), b"INSERT 0 1\0"),
            ("B", ord("I"), b""),
            ("B", ord("s"), b""),
            ("B", ord("1"), b""),
            ("B", ord("2"), b""),
            ("B", ord("3"), b""),
            ("B", ord("n"), b""),
            ("B", ord("t"), pack("!h", 0)),
            ("B", ord("T"), ROWDESC),
            ("B", ord("T"), ROWDESC2),
            ("B", ord("E"), ERROR),
            ("B", ord("G"), b"\0\0\0"),
            ("B", ord("H"), b"\0\0\0"),
            ("B", ord("N"), ERROR),
            ("B", ord("S"), b"a\0b\0"),
            ("B", ord("V"), b"\0\0\0\0"),
        ]
    )
    return st.one_of(fixed, _garbage("B", "ZCIsTE", 8))


def _driver_calls() -> st.SearchStrategy[tuple[Any, ...]]:
    return st.one_of(
        st.builds(lambda n, q: ("parse", n, q), NAMES, st.sampled_from([b"SELECT 1", b"SELECT 2"])),
        st.builds(lambda q: ("query", q), st.sampled_from([b"SELECT 1", b"SELECT 1; SELECT 2"])),
        st.builds(
            lambda t, n: ("deny", t, n),
            st.sampled_from([ord("P"), ord("Q"), ord("F")]),
            NAMES,
        ),
        st.builds(lambda n: ("rows", n), st.integers(1, 3)),
        st.just(("head",)),
        st.just(("reset",)),
    )


def _cycle(
    name: bytes,
    portal: bytes,
    parsed: bool,
    describe: tuple[int, bytes | None] | None,
    ending: tuple[Any, ...],
    sync: bool,
    executes: int,
) -> list[tuple[Any, ...]]:
    """A client's extended-protocol cycle and the server's answers, as drivers and servers
    produce them, so that the compiled fast paths run and not only the fallbacks. With
    ``executes`` 2 the portal runs twice in one pipeline (a fetch in two parts), both
    queued before the description arrives."""
    ops: list[tuple[Any, ...]] = []
    if parsed:
        ops += [("parse", name, b"SELECT $1"), ("B", ord("1"), b"")]
    ops.append(("F", ord("B"), bind(portal, name, [b"1"])))
    if describe is not None:  # Describe S or P, answered with a RowDescription or NoData
        kind, _ = describe
        ops.append(("F", ord("D"), bytes([kind]) + (name if kind == ord("S") else portal) + b"\0"))
    ops += [("F", ord("E"), execute(portal, 1 if executes > 1 else 0))] * executes
    if sync:
        ops.append(("F", ord("S"), b""))
    ops.append(("B", ord("2"), b""))
    if describe is not None:
        kind, described = describe
        if kind == ord("S"):
            ops.append(("B", ord("t"), pack("!hI", 1, 23)))
        ops.append(("B", ord("T"), described) if described else ("B", ord("n"), b""))
    ops += [("rows", 1), ("B", ord("s"), b"")] * (executes - 1) + [("rows", 1), ending]
    if sync:
        ops.append(("B", ord("Z"), b"I"))
    return ops


CYCLES = st.builds(
    _cycle,
    NAMES,
    PORTALS,
    st.booleans(),
    st.none()
    | st.tuples(st.sampled_from([ord("S"), ord("P")]), st.sampled_from([None, ROWDESC, ROWDESC2])),
    st.sampled_from(
        [
            ("B", ord("C"), b"SELECT 1\0"),
            ("B", ord("s"), b""),
            ("B", ord("I"), b""),
            ("B", ord("E"), ERROR),
        ]
    ),
    st.booleans(),
    st.sampled_from([1, 2]),
)
# COPY FROM STDIN: CopyInResponse, then the CopyData the client streams, then the end.
COPY_IN = st.just(
    [
        ("query", b"COPY t FROM STDIN"),
        ("B", ord("G"), b"\0\0\0"),
        ("B", ord("C"), b"COPY 1\0"),
        ("B", ord("Z"), b"I"),
    ]
)
OPS = st.lists(
    st.one_of(
        _frontend_messages().map(lambda op: [op]),
        _backend_messages().map(lambda op: [op]),
        _driver_calls().map(lambda op: [op]),
        CYCLES,
        COPY_IN,
    ),
    max_size=25,
).map(lambda chunks: [op for chunk in chunks for op in chunk])
DENIAL = b"the driver's error"


def _apply(t: Any, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "F":
        return t.frontend(op[1], op[2])
    if kind == "B":
        return t.backend(op[1], op[2])
    if kind == "parse":
        return t.parse(op[1], op[2])
    if kind == "query":
        return t.query(op[1])
    if kind == "deny":
        mtype, name = op[1], op[2]
        if mtype == ord("P"):
            return t.deny(mtype, name, b"DELETE FROM t", DENIAL)
        return t.deny(mtype, None, None, DENIAL)
    if kind == "rows":
        ex = t.head_execution()
        if ex is not None:
            ex.rows += op[1]
        return ex
    if kind == "head":
        return t.head_execution()
    assert kind == "reset"
    return t.reset()


def _outcome(t: Any, obs: Recorder, op: tuple[Any, ...]) -> Any:
    try:
        result = _apply(t, op)
    except PeerViolation as exc:
        return ("raised", type(exc).__name__, str(exc))
    if isinstance(result, Execution):
        return ("execution", obs.index(result))
    return ("returned", result)


def _replay(cls: Any, ops: list[tuple[Any, ...]]) -> tuple[Any, Recorder]:
    """A new tracker of ``cls`` after ``ops``, and its observer."""
    obs = Recorder()
    t = cls(obs)
    for op in ops:
        _outcome(t, obs, op)
    return t, obs


def _execution(ex: Execution) -> tuple[Any, ...]:
    return (
        type(ex),
        ex.path,
        ex.text,
        ex.statement_name,
        ex.portal,
        ex.bind,
        ex.row_description,
        ex.rows,
        ex.error,
        ex.skipped,
        ex.suspended,
        ex._tag_bodies,
        ex.mask_plan,
        ex.bytes,
    )


def _state(t: Any, obs: Recorder) -> tuple[Any, ...]:
    fifo = [
        (kind, ("execution", obs.index(obj)) if isinstance(obj, Execution) else obj)
        for kind, obj in t._fifo
    ]
    return (
        {k: (v.query, v.row_description) for k, v in t.statements.items()},
        dict(t.portals),
        fifo,
        t.status,
        t.copy_in,
        t._done_in_batch,
        t.busy(),
        t.pending,
        [obs.index(ex) for ex in t.unfinished()],
        t.head_denial(),
        [_execution(ex) for ex in obs.executions],
        list(obs.calls),
    )


@compiled_only
@settings(max_examples=600, deadline=None)
@given(OPS)
def test_compiled_tracker_matches_the_reference(ops: list[tuple[Any, ...]]) -> None:
    ref_obs, fast_obs = Recorder(), Recorder()
    ref, fast = QueryTrackerPy(ref_obs), QueryTracker(fast_obs)
    for op in ops:
        expected = _outcome(ref, ref_obs, op)
        got = _outcome(fast, fast_obs, op)
        assert got == expected, op
        assert _state(fast, fast_obs) == _state(ref, ref_obs), op


@compiled_only
def test_a_prepared_transaction_in_the_fast_path() -> None:
    """The pgbench -M prepared cycle, step by step, with nothing left for the reference:
    Bind, Execute, Sync; BindComplete, CommandComplete, ReadyForQuery."""
    obs = Recorder()
    t = QueryTracker(obs)
    t.parse(b"s1", b"SELECT $1")
    t.backend(ord("1"), b"")
    t.frontend(ord("B"), bind(b"", b"s1", [b"7"]))
    t.frontend(ord("E"), execute())
    t.frontend(ord("S"), b"")
    assert t.head_execution() is None  # BindComplete comes first
    t.backend(ord("2"), b"")
    ex = t.head_execution()
    assert ex is not None
    assert (ex.path, ex.text, ex.statement_name) == ("prepared", b"SELECT $1", b"s1")
    t.backend(ord("C"), b"SELECT 1\0")
    assert ex.tags == ["SELECT 1"] and obs.calls == [("started", 0), ("finished", 0)]
    t.backend(ord("Z"), b"I")
    assert not t.busy() and t.status == ord("I") and list(t.portals) == [b""]


@compiled_only
def test_a_statement_described_again_keeps_the_description_of_queued_executions() -> None:
    """An execution queued behind a Describe of its statement already carries the old
    description: only executions without one take the new one (both implementations)."""
    ops = [
        ("parse", b"s1", b"SELECT $1"),
        ("F", ord("D"), b"Ss1\0"),
        ("B", ord("1"), b""),
        ("B", ord("t"), pack("!hI", 1, 23)),
        ("B", ord("T"), ROWDESC),
        # Pipelined: Bind, Describe S, Execute, Sync before any answer.
        ("F", ord("B"), bind(b"", b"s1", [b"1"])),
        ("F", ord("D"), b"Ss1\0"),
        ("F", ord("E"), execute()),
        ("F", ord("S"), b""),
        ("B", ord("2"), b""),
        ("B", ord("t"), pack("!hI", 1, 23)),
        ("B", ord("T"), ROWDESC2),
    ]
    states = []
    for cls in (QueryTrackerPy, QueryTracker):
        t, obs = _replay(cls, ops)
        assert t.statements[b"s1"].row_description == ROWDESC2
        assert t.head_execution().row_description == ROWDESC
        states.append(_state(t, obs))
    assert states[1] == states[0]


@compiled_only
def test_a_malformed_bind_is_refused_without_a_trace() -> None:
    t = QueryTracker(Recorder())
    with pytest.raises(PeerViolation):
        t.frontend(ord("B"), b"\0s1\0\0\1\0\0\0\0")
    assert not t.busy() and not t.portals


@compiled_only
def test_trackers_are_collected_with_their_cycles() -> None:
    """The observer holds the session, which holds the tracker: a cycle the collector must
    be able to break through the C type."""

    class Session:
        def __init__(self) -> None:
            self.tracker = QueryTracker(self)  # type: ignore[arg-type]

        def execution_started(self, ex: Execution) -> None:
            pass

        def execution_finished(self, ex: Execution) -> None:
            pass

    gc.collect()
    before = len(gc.get_objects())
    for _ in range(2000):
        s = Session()
        s.tracker.parse(b"s1", b"SELECT 1")
        s.tracker.frontend(ord("B"), bind(b"", b"s1", []))
        s.tracker.frontend(ord("E"), execute())
        del s
    gc.collect()
    assert len(gc.get_objects()) - before < 200


DATA_ROW = ("B", ord("D"), pack("!hi", 1, 1) + b"x")


@compiled_only
@settings(max_examples=400, deadline=None)
@given(
    OPS,
    st.lists(st.one_of(_frontend_messages(), _backend_messages(), st.just(DATA_ROW)), max_size=12),
    st.booleans(),
    st.booleans(),
)
def test_runs_of_a_read_match_the_reference(
    ops: list[tuple[Any, ...]], read: list[tuple[Any, ...]], backend: bool, callback: bool
) -> None:
    """frontend_run / backend_run (the driver's fast loop over one read) against the
    reference, from the same state: same index, same idle flag, same rows reported (or,
    without a rows callback, the same bytes counted), same state and observer calls, same
    errors."""
    side = "B" if backend else "F"
    messages = [(t, body) for d, t, body in read if d == side]
    data = b"".join(build_message(t, body) for t, body in messages)
    buf, _, entries = MessageScanner(1 << 20).feed(data)
    outcomes = []
    for cls in (QueryTrackerPy, QueryTracker):
        t, obs = _replay(cls, ops)
        reported: list[tuple[int, int, int, int]] = []

        def rows(ex: Execution, b: bytes, start: int, stop: int, count: int) -> None:
            assert b is buf
            reported.append((obs.index(ex), start, stop, count))  # noqa: B023

        try:
            if backend:
                result: Any = t.backend_run(buf, entries, rows if callback else None)
            else:
                result = t.frontend_run(buf, entries)
        except PeerViolation as exc:
            result = ("raised", str(exc))
        outcomes.append((result, reported, _state(t, obs)))
    assert outcomes[1] == outcomes[0]


@compiled_only
def test_entries_that_are_not_exact_ints_go_to_the_driver() -> None:
    """A read's entries are borrowed while the tracker runs Python code: only the
    scanner's exact ints are walked (an int subclass or an ``__index__`` object could drop
    the entry while it is in use); anything else is left for the driver's loop."""

    class Count(int):
        def __radd__(self, other: object) -> int:
            entries.clear()
            return int(other) + int(self)  # type: ignore[call-overload]

    class MType:
        def __index__(self) -> int:
            entries.clear()
            return ord("S")

    t = QueryTracker(Recorder())
    t.query(b"SELECT 1")
    buf = b"\0" * 300 + b"D" + b"\0" * 2000
    entries: list[Any] = [(ord("D"), int("300"), int("1300"), Count(123456))]
    assert t.backend_run(buf, entries, None) == (0, False)
    buf = b"\0" * 1000 + b"S" + pack("!i", 4)
    entries = [(MType(), int("1000"), int("1005"), int("1"))]
    assert t.frontend_run(buf, entries) == 0


@compiled_only
def test_a_data_row_run_keeps_its_entry_while_python_runs() -> None:
    """ex.rows may be anything the driver stored: adding to it runs Python, which may drop
    the list's entry; the rows callback still gets that entry's bounds and count."""
    seen: list[tuple[int, int, int]] = []

    class Rows:
        def __add__(self, other: int) -> int:
            entries.clear()
            return other

    t = QueryTracker(Recorder())
    t.query(b"SELECT 1")
    ex = t.head_execution()
    assert ex is not None
    ex.rows = Rows()
    buf = b"\0" * 300 + b"D" + b"\0" * 2000
    entries: list[Any] = [(ord("D"), int("300"), int("1300"), int("123456"))]
    t.backend_run(buf, entries, lambda ex, b, start, stop, n: seen.append((start, stop, n)))
    assert seen == [(300, 1300, 123456)]


@compiled_only
def test_a_statement_read_by_execute_is_held_while_its_attributes_are_read() -> None:
    order: list[str] = []
    t = QueryTracker(Recorder())

    class Statement:
        @property
        def query(self) -> bytes:
            t.statements.clear()  # the tracker's only reference
            return b"SELECT 1"

        @property
        def row_description(self) -> None:
            order.append("read")

        def __del__(self) -> None:
            order.append("freed")

    t.statements[b"s1"] = Statement()
    t.frontend(ord("B"), bind(b"p", b"s1", []))
    t.backend(ord("2"), b"")
    t.frontend(ord("E"), execute(b"p"))
    assert order == ["read", "freed"]


@compiled_only
@pytest.mark.parametrize(
    ("owner", "name"),
    [("tracker", "observer"), ("tracker", "statements"), ("tracker", "portals"),
     ("execution", "rows"), ("execution", "statement_name"), ("execution", "mask_plan")],
)  # fmt: skip
def test_fields_the_c_code_uses_cannot_be_deleted(owner: str, name: str) -> None:
    t = QueryTracker(Recorder())
    t.query(b"SELECT 1")
    obj = t if owner == "tracker" else t.head_execution()
    with pytest.raises(AttributeError):
        delattr(obj, name)
    getattr(obj, name)  # still there
