"""Finished statements reported in batches: the PostgreSQL and MySQL observers' audit lines
and recorded completions.

Reporting one statement (an audit line, its recording) is a few microseconds of Python
that, done once per round trip, runs with the CPU caches cold after the database and the
client ran on the same cores; done for many statements in a row it costs a fraction of
that (docs/performance.md: pgbench -S -M prepared -c 1, gateway CPU per transaction 111.8
-> 102.8 µs with the audit log; 129.7 -> 111.0 µs with recording too, together with
pg_recording's lazy recording). Counters are
updated at once by the observers; only the reporting waits, for at most ``BATCH`` items and
``DELAY`` seconds after the first of them, and the observers flush before anything else of
the session is logged or recorded, so both keep the order of events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Generic, TypeVar

log = logging.getLogger("gateway")

BATCH: Final = 64
DELAY: Final = 0.05

T = TypeVar("T")


class ReportBatch(Generic[T]):
    """Items reported together by ``report(items)``, in the order they were added.

    The driver sets ``schedule`` (the loop's ``call_later``; without it every item is
    reported at once) and ``fail`` (what to do when reporting on the timer raises: end the
    session, so that nothing goes unrecorded silently).
    """

    __slots__ = ("_items", "_report", "fail", "schedule")

    def __init__(self, report: Callable[[list[T]], None]) -> None:
        self._items: list[T] = []
        self._report = report
        self.schedule: Callable[[float, Callable[[], None]], object] | None = None
        self.fail: Callable[[BaseException], None] | None = None

    def add(self, item: T) -> None:
        items = self._items
        items.append(item)
        held = len(items)
        if held == 1:
            schedule = self.schedule
            if schedule is None:
                self.flush()
            else:
                schedule(DELAY, self._later)
        elif held >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Report what is held, now."""
        items = self._items
        if items:
            self._items = []
            self._report(items)

    def _later(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # a bug: the session must not go on unrecorded
            log.exception("reporting finished statements failed")
            if self.fail is not None:
                self.fail(exc)
