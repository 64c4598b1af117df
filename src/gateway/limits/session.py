"""One session's result limits: the hot-path check per forwarded run of rows.

The drivers call ``take`` once per run of rows they are about to forward (not per row):
when the run fits every limit it is credited to the statement, the session and the
identity's window, and ``take`` returns None. Otherwise it returns a ``Cut`` saying how
many rows and bytes may still go before the first limit, and which limit that is; the
driver forwards that much, credits it with ``credit`` and acts on ``spec.on_limit``.

A ``Budget`` is one statement result's state. Approving a paused result lifts the limits
for that result (``Budget.lifted``) or for the rest of the session (``SessionLimits.lifted``);
what is sent is still counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .spec import UNLIMITED, LimitSpec
from .usage import RollingUsage

# Budget.state values: what the driver does with the rest of this result.
OPEN: Final = 0  # forwarding
PAUSED: Final = 1  # waiting for an approval decision
DRAINING: Final = 2  # truncated: the rest of the result is dropped
STOPPED: Final = 3  # refused (error, denial, timeout): dropped up to the end of the command


class Budget:
    """One statement result's counters (driver-owned, kept on the execution)."""

    __slots__ = ("bytes", "key", "lifted", "request", "rows", "state")

    def __init__(self, key: object = None) -> None:
        self.rows = 0
        self.bytes = 0
        self.lifted = False
        self.state = OPEN
        # The driver's key for "the same result" (a multi-statement Query has several).
        self.key = key
        # The pending approval request's id while PAUSED.
        self.request: str | None = None


@dataclass(frozen=True, slots=True)
class Cut:
    rows: int  # rows that may still be sent
    bytes: int  # bytes that may still be sent
    row_limit: str  # the row limit that binds, as configured: "max_rows=100" ("" if none)
    byte_limit: str  # the byte limit that binds ("" if none)

    def reached(self, sent_rows: int) -> str:
        """The limit that stopped a run after ``sent_rows`` of its rows went out."""
        if self.row_limit and (sent_rows >= self.rows or not self.byte_limit):
            return self.row_limit
        return self.byte_limit


class SessionLimits:
    __slots__ = ("bytes", "lifted", "rows", "spec", "window")

    def __init__(self, spec: LimitSpec, window: RollingUsage | None) -> None:
        self.spec = spec
        self.window = window
        self.rows = 0
        self.bytes = 0
        self.lifted = False

    def take(self, budget: Budget, rows: int, nbytes: int) -> Cut | None:
        """Credit a run of ``rows`` rows / ``nbytes`` bytes if it fits; else the Cut."""
        if budget.lifted or self.lifted:
            self.credit(budget, rows, nbytes)
            return None
        # The hot path, once per forwarded run of rows: plain comparisons, no Cut built
        # (no limit names formatted) and the identity's window read and credited in one
        # call. Anything that may not fit goes to the full reading in ``_take_slow``.
        spec = self.spec
        m = spec.max_rows
        if m is not None and budget.rows + rows > m:
            return self._take_slow(budget, rows, nbytes)
        m = spec.max_bytes
        if m is not None and budget.bytes + nbytes > m:
            return self._take_slow(budget, rows, nbytes)
        m = spec.session_max_rows
        if m is not None and self.rows + rows > m:
            return self._take_slow(budget, rows, nbytes)
        m = spec.session_max_bytes
        if m is not None and self.bytes + nbytes > m:
            return self._take_slow(budget, rows, nbytes)
        window = self.window
        if window is not None and not window.add_if_fits(
            rows, nbytes, spec.window_max_rows, spec.window_max_bytes
        ):
            return self._take_slow(budget, rows, nbytes)
        budget.rows += rows
        budget.bytes += nbytes
        self.rows += rows
        self.bytes += nbytes
        return None

    def _take_slow(self, budget: Budget, rows: int, nbytes: int) -> Cut | None:
        cut = self.room(budget)
        if rows <= cut.rows and nbytes <= cut.bytes:
            self.credit(budget, rows, nbytes)
            return None
        return cut

    def room(self, budget: Budget) -> Cut:
        """What the result may still send, and the limits that bind first."""
        spec = self.spec
        rows, row_limit = _tightest(
            (
                (spec.max_rows, budget.rows, "max_rows"),
                (spec.session_max_rows, self.rows, "session_max_rows"),
            )
        )
        nbytes, byte_limit = _tightest(
            (
                (spec.max_bytes, budget.bytes, "max_bytes"),
                (spec.session_max_bytes, self.bytes, "session_max_bytes"),
            )
        )
        window = self.window
        if window is not None:
            used_rows, used_bytes = window.used()
            w_rows, w_row_limit = _tightest(((spec.window_max_rows, used_rows, "window_max_rows"),))
            if w_rows < rows:
                rows, row_limit = w_rows, w_row_limit
            w_bytes, w_byte_limit = _tightest(
                ((spec.window_max_bytes, used_bytes, "window_max_bytes"),)
            )
            if w_bytes < nbytes:
                nbytes, byte_limit = w_bytes, w_byte_limit
        return Cut(rows, nbytes, row_limit, byte_limit)

    def credit(self, budget: Budget, rows: int, nbytes: int) -> None:
        budget.rows += rows
        budget.bytes += nbytes
        self.rows += rows
        self.bytes += nbytes
        if self.window is not None:
            self.window.add(rows, nbytes)


def _tightest(limits: tuple[tuple[int | None, int, str], ...]) -> tuple[int, str]:
    """(what is left under the tightest of ``(maximum, used, name)``, "name=maximum")."""
    left, which = UNLIMITED, ""
    for maximum, used, name in limits:
        if maximum is not None and maximum - used < left:
            left = max(0, maximum - used)
            which = f"{name}={maximum}"
    return left, which
