"""Rows and bytes each identity received over a rolling window, across its sessions.

A session budget alone is escaped by reconnecting; the window is kept per identity (the
token's subject) in the gateway process, so a new session starts with what the identity
already used. It is a ring of time buckets: adding and reading cost O(1) amortised, and
usage older than the window drops out a bucket at a time (the window is accurate to
1/``BUCKETS`` of its length).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

BUCKETS: Final = 60


class RollingUsage:
    """One identity's usage over the last ``window`` seconds."""

    __slots__ = ("_bucket_bytes", "_bucket_rows", "_clock", "_head", "_width", "bytes", "rows")

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._width = window / BUCKETS
        self._clock = clock
        self._bucket_rows = [0] * BUCKETS
        self._bucket_bytes = [0] * BUCKETS
        # Index (in bucket widths since the clock's epoch) of the newest bucket.
        self._head = int(clock() / self._width)
        self.rows = 0
        self.bytes = 0

    def _advance(self) -> int:
        now = int(self._clock() / self._width)
        head = self._head
        if now != head:
            steps = min(now - head, BUCKETS)
            for i in range(1, steps + 1):
                slot = (head + i) % BUCKETS
                self.rows -= self._bucket_rows[slot]
                self.bytes -= self._bucket_bytes[slot]
                self._bucket_rows[slot] = 0
                self._bucket_bytes[slot] = 0
            self._head = now
        return now % BUCKETS

    def used(self) -> tuple[int, int]:
        self._advance()
        return self.rows, self.bytes

    def add_if_fits(
        self, rows: int, nbytes: int, max_rows: int | None, max_bytes: int | None
    ) -> bool:
        """Add the run if the window then stays within ``max_rows`` / ``max_bytes`` (None:
        no such limit); False, adding nothing, if it would not. One clock read."""
        slot = self._advance()
        if (max_rows is not None and self.rows + rows > max_rows) or (
            max_bytes is not None and self.bytes + nbytes > max_bytes
        ):
            return False
        self._bucket_rows[slot] += rows
        self._bucket_bytes[slot] += nbytes
        self.rows += rows
        self.bytes += nbytes
        return True

    def add(self, rows: int, nbytes: int) -> None:
        slot = self._advance()
        self._bucket_rows[slot] += rows
        self._bucket_bytes[slot] += nbytes
        self.rows += rows
        self.bytes += nbytes


class UsageWindows:
    """Every identity's RollingUsage, per window length (policies may differ)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._usage: dict[tuple[str, float], RollingUsage] = {}

    def for_identity(self, subject: str, window: float) -> RollingUsage:
        key = (subject, window)
        usage = self._usage.get(key)
        if usage is None:
            if len(self._usage) > 100_000:
                self._prune()
            usage = self._usage[key] = RollingUsage(window, self._clock)
        return usage

    def _prune(self) -> None:
        # Identities with nothing left in their window cost nothing to forget.
        for key in [k for k, u in self._usage.items() if u.used() == (0, 0)]:
            del self._usage[key]
