"""The read pump (protocols/postgres/pump.py): the compiled ReadPump against ReadPumpPy, the
reference, over the same reads, and what each promises on its own."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import MessageTooLarge, PeerViolation
from protocols.postgres import pump
from protocols.postgres.framing import MessageScanner

IMPLEMENTATIONS = [pump.ReadPumpPy]
if pump.COMPILED:
    IMPLEMENTATIONS.append(pump.ReadPump)


def test_the_compiled_pump_is_built() -> None:
    # CI builds the extensions: a silently missing one would leave the fast path untested.
    assert pump.COMPILED


def message(mtype: bytes, body: bytes = b"") -> bytes:
    return mtype + struct.pack("!I", len(body) + 4) + body


class Tracker:
    """Walks the leading entries whose type is in ``takes``, as the query tracker's
    frontend_run / backend_run take the messages they alone handle."""

    def __init__(self, takes: bytes, log: list[Any], fail: bool = False) -> None:
        self.takes = takes
        self.log = log
        self.fail = fail

    def _walk(self, buf: bytes, entries: list[tuple[int, int, int, int]]) -> int:
        if self.fail:
            raise RuntimeError("tracker bug")
        done = 0
        for mtype, _, _, _ in entries:
            if mtype not in self.takes:
                break
            done += 1
        return done

    def frontend_run(self, buf: bytes, entries: list[tuple[int, int, int, int]]) -> int:
        self.log.append(("frontend_run", bytes(buf), list(entries)))
        return self._walk(buf, entries)

    def backend_run(
        self, buf: bytes, entries: list[tuple[int, int, int, int]], rows: object
    ) -> tuple[int, bool]:
        self.log.append(("backend_run", bytes(buf), list(entries), rows))
        return self._walk(buf, entries), False


class Gate:
    def __init__(self) -> None:
        self.flag: object = False


def make(
    impl: Any, takes: bytes, *, backend: bool = False, **kwargs: Any
) -> tuple[Any, list[Any], MessageScanner]:
    log: list[Any] = []
    scanner = MessageScanner(1000, collapse_data_rows=backend)
    p = impl(
        scanner,
        Tracker(takes, log, kwargs.pop("tracker_fails", False)),
        lambda data: log.append(("write", bytes(data))),
        lambda buf, end, entries, done: log.append(("slow", bytes(buf), end, entries, done)),
        lambda exc: log.append(("failed", type(exc).__name__, str(exc))),
        backend=backend,
        **kwargs,
    )
    return p, log, scanner


_MESSAGES = st.sampled_from(
    [
        message(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x00"),
        message(b"E", b"\x00\x00\x00\x00\x00"),
        message(b"S"),
        message(b"D", b"\x00\x01\x00\x00\x00\x01x"),
        message(b"Z", b"I"),
        message(b"Q", b"SELECT 1\x00"),
        message(b"X"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    stream=st.lists(_MESSAGES, max_size=12).map(b"".join),
    cuts=st.lists(st.integers(0, 200), max_size=5),
    takes=st.sampled_from([b"BES", b"DZ", b"", b"BDESZQX"]),
    backend=st.booleans(),
    run=st.booleans(),
    flag=st.sampled_from([None, False, True, set(), {b"s"}]),
    garbage=st.booleans(),
)
def test_compiled_and_reference_pumps_do_the_same(
    stream: bytes,
    cuts: list[int],
    takes: bytes,
    backend: bool,
    run: bool,
    flag: object,
    garbage: bool,
) -> None:
    """The same reads (a stream of messages in random splits, possibly ending in a lying
    length) give the same calls, in the same order, with the same arguments."""
    if garbage:
        stream += b"D\x00\x00\x00\x02"  # a length below 4: the scanner refuses the stream
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    reads = [stream[a:b] for a, b in itertools.pairwise(bounds)] + [b""]
    logs = []
    for impl in IMPLEMENTATIONS:
        gate = Gate()
        gate.flag = flag
        p, log, _ = make(
            impl,
            takes,
            backend=backend,
            run=run,
            rows=None if not backend else print,
            unless=None if flag is None else (gate, "flag"),
        )
        for read in reads:
            p(read)
        logs.append(log)
    assert logs[0] == logs[-1]
    if garbage:  # the session ends: a refused read is not forwarded, not even in part
        assert logs[0] and logs[0][-1][0] == "failed"
        return
    # Every complete message reaches the other leg or the driver, once and in order.
    handled = b"".join(
        call[1] if call[0] == "write" else call[1][: call[2]]
        for call in logs[0]
        if call[0] in ("write", "slow")
    )
    assert stream.startswith(handled) and len(stream) - len(handled) < 13


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_read_the_tracker_takes_whole_is_written_once(impl: Any) -> None:
    read = message(b"B") + message(b"E") + message(b"S")
    p, log, _ = make(impl, b"BES")
    p(read + b"S\x00\x00")  # and the start of the next message, held by the scanner
    assert [c[0] for c in log] == ["frontend_run", "write"]
    assert log[-1] == ("write", read)
    written: list[object] = []
    p = impl(MessageScanner(1000), Tracker(b"BES", []), written.append, print, print, backend=False)
    p(read)
    assert written[0] is read  # a whole read is forwarded as it came, neither copied nor viewed


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_the_rest_of_a_read_goes_to_the_driver_from_where_the_walk_stopped(impl: Any) -> None:
    read = message(b"B") + message(b"Q", b"x\x00") + message(b"S")
    p, log, _ = make(impl, b"BS")
    p(read)
    assert log[-1] == ("slow", read, len(read), [(66, 0, 5, 1), (81, 5, 12, 1), (83, 12, 17, 1)], 1)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_no_walk_without_run_or_while_the_flag_is_up(impl: Any) -> None:
    read = message(b"D", b"\x00\x00") + message(b"Z", b"I")
    p, log, _ = make(impl, b"DZ", backend=True, run=False)
    p(read)
    assert [c[0] for c in log] == ["slow"] and log[0][-1] == 0
    gate = Gate()
    gate.flag = {b"stmt"}
    p, log, _ = make(impl, b"DZ", backend=True, unless=(gate, "flag"))
    p(read)
    assert [c[0] for c in log] == ["slow"]
    gate.flag = set()
    p(read)
    assert [c[0] for c in log] == ["slow", "backend_run", "write"]
    assert log[1][3] is None  # no rows callback given


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_refused_stream_goes_to_failed_every_time(impl: Any) -> None:
    p, log, _ = make(impl, b"B")
    p(b"B" + struct.pack("!I", 5000) + b"...")
    assert log == [("failed", "MessageTooLarge", str(MessageTooLarge(5000, 1000)))]
    p(b"")
    assert len(log) == 2 and log[1][1] == "MessageTooLarge"
    p, log, _ = make(impl, b"B")
    p(b"B\x00\x00\x00\x01")
    assert log == [("failed", "PeerViolation", str(PeerViolation("invalid message length 1")))]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_errors_of_the_callbacks_reach_the_caller(impl: Any) -> None:
    p, log, _ = make(impl, b"B", tracker_fails=True)
    p(message(b"B"))  # a message the tracker refuses: the driver's answer
    assert log[-1] == ("failed", "RuntimeError", "tracker bug")

    def boom(*_: object) -> None:
        raise ValueError("driver bug")

    for slot in ("write", "slow", "failed"):
        callbacks: dict[str, Any] = {"write": print, "slow": print, "failed": print, slot: boom}
        p = impl(
            MessageScanner(1000),
            Tracker(b"B", []),
            callbacks["write"],
            callbacks["slow"],
            callbacks["failed"],
            backend=False,
        )
        read = message(b"B") if slot == "write" else message(b"Q", b"\x00")
        if slot == "failed":
            read = b"B\x00\x00\x00\x00"
        with pytest.raises(ValueError, match="driver bug"):
            p(read)


def test_the_compiled_pump_checks_its_arguments() -> None:
    with pytest.raises(TypeError):
        pump.ReadPump(1, 2, 3, 4, 5)  # backend is keyword-only and required
    with pytest.raises(TypeError):
        pump.ReadPump(1, 2, 3, 4, 5, backend=True, unless=(1, 2))
    p, _, _ = make(pump.ReadPump, b"")
    with pytest.raises(TypeError):
        p()
    with pytest.raises(TypeError):
        p(b"", b"")

    class BadScanner:
        def feed(self, data: bytes) -> object:
            return (data, 0)

    p = pump.ReadPump(BadScanner(), Tracker(b"", []), print, print, print, backend=False)
    with pytest.raises(TypeError, match="feed must return"):
        p(b"x")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_the_pump_returns_none_and_failed_runs_as_in_an_except_block(impl: Any) -> None:
    """Whatever the driver's callbacks return, the pump returns None; ``failed`` sees the
    refusal as the exception being handled, so one it raises is chained to it."""
    import sys

    seen: list[object] = []

    def failed(exc: BaseException) -> str:
        seen.append(sys.exc_info()[1] is exc)
        return "ignored"

    p = impl(
        MessageScanner(1000),
        Tracker(b"", []),
        print,
        lambda *_: "ignored",
        failed,
        backend=False,
    )
    assert p(message(b"Q", b"\x00")) is None  # slow
    assert p(b"B\x00\x00\x00\x00") is None  # failed
    assert seen == [True]

    def raising(exc: BaseException) -> None:
        raise KeyError("driver bug")

    p = impl(MessageScanner(1000), Tracker(b"", []), print, print, raising, backend=False)
    with pytest.raises(KeyError) as info:
        p(b"B\x00\x00\x00\x00")
    assert isinstance(info.value.__context__, PeerViolation)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_an_unless_owner_of_none_is_looked_up_like_any_other(impl: Any) -> None:
    p, _, _ = make(impl, b"B", unless=(None, "flag"))
    with pytest.raises(AttributeError):
        p(message(b"B"))
