"""One direction of a PostgreSQL session, read by read: scanner, tracker, forwarded bytes.

Most reads of a busy session need no decision: a pipeline of Bind, Describe, Execute,
Sync from the client, or BindComplete, RowDescription, DataRows, CommandComplete,
ReadyForQuery from the server, which the driver forwards unchanged once the query tracker
has seen them. ``ReadPump`` handles such a read whole: it feeds the scanner, lets the
tracker walk the messages (``frontend_run`` / ``backend_run``), and when the walk took
them all, hands the complete messages to ``write``. Any other read goes to the driver's
``slow(buf, end, entries, done)`` with the index of the first message the walk left, and
a stream the scanner or the tracker refuses (``PeerViolation``: a lying length, a
malformed Bind) to ``failed(exc)``. The pump decides nothing itself: what
it forwards is exactly what the driver's loop would forward for those messages.

``run`` turns the walk off for a driver that rewrites results (masking, limits: every
message goes to ``slow``); ``unless=(obj, name)`` skips the walk for a read while
``getattr(obj, name)`` is true (the policy gate's privileged statements, whose Binds must
be seen; a statement in flight that may change how later text reads).

``ReadPumpPy`` is the reference; the compiled ``_wire.ReadPump`` (one C call per read,
where this is ~100 bytecodes) behaves the same and is tested against it
(tests/unit/test_pg_pump.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Entries = list[tuple[int, int, int, int]]


class _Scanner(Protocol):
    def feed(self, data: bytes) -> tuple[bytes, int, Entries]: ...


class ReadPumpPy:
    __slots__ = ("backend", "failed", "rows", "run", "scanner", "slow", "tracker", "unless",
                 "write")  # fmt: skip

    def __init__(
        self,
        scanner: _Scanner,
        tracker: Any,
        write: Callable[[bytes | memoryview], object],
        slow: Callable[[bytes, int, Entries, int], object],
        failed: Callable[[Exception], object],
        *,
        backend: bool,
        run: bool = True,
        rows: Callable[..., None] | None = None,
        unless: tuple[object, str] | None = None,
    ) -> None:
        self.scanner = scanner
        self.tracker = tracker
        self.write = write
        self.slow = slow
        self.failed = failed
        self.backend = backend
        self.run = run
        self.rows = rows
        self.unless = unless

    def __call__(self, data: bytes) -> None:
        try:
            buf, end, entries = self.scanner.feed(data)
        except Exception as exc:  # the scanner refused the stream: the driver's answer
            self.failed(exc)
            return
        if not entries:
            return
        done = 0
        unless = self.unless
        if self.run and (unless is None or not getattr(*unless)):
            try:
                if self.backend:
                    done = self.tracker.backend_run(buf, entries, self.rows)[0]
                else:
                    done = self.tracker.frontend_run(buf, entries)
            except Exception as exc:  # a message the tracker refuses (a malformed Bind)
                self.failed(exc)
                return
        if done < len(entries):
            self.slow(buf, end, entries, done)
        else:
            self.write(buf if end == len(buf) else memoryview(buf)[:end])


ReadPump: Any
try:  # the compiled pump, built by setuptools where a C compiler is present
    from ._wire import ReadPump as _compiled

    ReadPump = _compiled
except ImportError:  # pragma: no cover - exercised where no compiler is available
    ReadPump = ReadPumpPy

COMPILED = ReadPump is not ReadPumpPy
