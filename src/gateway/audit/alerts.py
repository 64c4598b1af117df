"""Alert rules over rolling windows (docs/alerts.md).

Rules (each off when its threshold is 0):

* ``large_results``: an identity received ``large_results`` results of at least
  ``large_result_rows`` rows within ``window`` (paged bulk reads);
* ``rows``: an identity received ``rows`` rows in total within ``window``;
* ``denied``: ``denied`` statements of an identity refused within ``window``;
* ``approval_requests``: ``approval_requests`` approval requests of an identity within
  ``window``;
* ``auth_failures``: ``auth_failures`` refused logins from one client address (host, without
  the port) within ``window``;
* ``first_sensitive_access``: the first time ever an identity reads a sensitive table (the
  ``sensitive_tables`` list, plus the tables of any policy's masks); "ever" is kept in
  ``<state_dir>/alerts_first_access.json`` so it survives restarts.

The same alert (rule + identity or address, + table) fires at most once per ``cooldown``:
a burst fires once. The engine is synchronous and cheap: at most one deque append and a
comparison per event; what a fired alert does (audit line, metric, webhook) is the ``fire``
callback's. Keys are bounded (``MAX_KEYS`` per rule, oldest dropped) so a scan from many
addresses cannot grow memory without limit, and so is what one key holds: events are summed
in ``SLICES`` slices of the window, so a client sending refused statements as fast as it
can does not grow memory with its rate (a window may therefore count events up to one
slice older than itself: alerts fire a little early, never late).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..config import AlertsSection, Config

log = logging.getLogger("gateway.alerts")

MAX_KEYS: Final = 10_000
SLICES: Final = 64
STATE_FILE: Final = "alerts_first_access.json"


class WindowCounter:
    """Sums of values per key over the last ``window`` seconds, in ``SLICES`` slices."""

    __slots__ = ("_keys", "_width", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._width = window / SLICES
        # key -> (slices as [start, sum], oldest first; [total])
        self._keys: dict[str, tuple[deque[list[Any]], list[int]]] = {}

    def add(self, key: str, value: int = 1, now: float | None = None) -> int:
        """Add ``value`` at ``now``; return the key's total within the window."""
        now = time.monotonic() if now is None else now
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= MAX_KEYS:
                self._keys.pop(next(iter(self._keys)))
            entry = self._keys[key] = (deque(), [0])
        slices, total = entry
        start = now - now % self._width
        if slices and slices[-1][0] == start:
            slices[-1][1] += value
        else:
            slices.append([start, value])
        total[0] += value
        self._expire(slices, total, now)
        return total[0]

    def total(self, key: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        entry = self._keys.get(key)
        if entry is None:
            return 0
        slices, total = entry
        self._expire(slices, total, now)
        return total[0]

    def _expire(self, slices: deque[list[Any]], total: list[int], now: float) -> None:
        # A slice leaves when all of it is older than the window.
        horizon = now - self.window - self._width
        while slices and slices[0][0] <= horizon:
            total[0] -= slices.popleft()[1]

    def reset(self, key: str) -> None:
        self._keys.pop(key, None)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(slots=True)
class Alert:
    rule: str
    key: str  # the identity, or the client host for auth_failures
    count: int
    threshold: int
    window: float
    target: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "count": self.count,
            "threshold": self.threshold,
            "window_s": self.window,
            "at": self.at,
        }
        out["client_host" if self.rule == "auth_failures" else "subject"] = self.key
        if self.target is not None:
            out["target"] = self.target
        out.update(self.detail)
        return out


def sensitive_tables(config: Config) -> frozenset[str]:
    """Lower-cased table names (``table`` or ``schema.table``) the first-access rule watches."""
    names = {t.lower() for t in config.alerts.sensitive_tables}
    if config.alerts.sensitive_masked_tables:
        for policy in config.policies:
            for mask in policy.masks:
                for column in mask.columns:
                    table, _, _ = column.rpartition(".")
                    if table and "*" not in table:
                        names.add(table.lower())
    return frozenset(names)


class FirstAccess:
    """Which identities have read which sensitive tables, ever (a small JSON file)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.seen: dict[str, set[str]] = {}
        # Saves run in worker threads: each writes a copy taken on the event loop, and
        # one numbered older than what is on disk is skipped.
        self._lock = threading.Lock()
        self._taken = 0
        self._written = 0
        if path is not None:
            try:
                data = json.loads(path.read_text())
                self.seen = {str(k): set(map(str, v)) for k, v in data.items()}
            except FileNotFoundError:
                pass
            except (OSError, ValueError, AttributeError, TypeError) as exc:
                log.warning(
                    "alerts state unreadable; first accesses start over",
                    extra={"path": str(path), "error": str(exc)},
                )

    def first(self, subject: str, table: str) -> bool:
        """True (and remembered) the first time ``subject`` reads ``table``."""
        tables = self.seen.setdefault(subject, set())
        if table in tables:
            return False
        tables.add(table)
        return True

    def saver(self) -> Callable[[], None]:
        """A copy of the state now (on the event loop), and the function that writes it
        atomically (in a thread; rare: only after a first access)."""
        text = json.dumps({k: sorted(v) for k, v in self.seen.items()}, sort_keys=True)
        self._taken += 1
        number = self._taken
        return lambda: self._write(number, text)

    def _write(self, number: int, text: str) -> None:
        if self.path is None:
            return
        with self._lock:
            if number < self._written:
                return  # a newer copy is already on disk
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.path)
            self._written = number


class AlertEngine:
    def __init__(
        self,
        config: Config,
        fire: Callable[[Alert], None],
        *,
        state_dir: Path | None = None,
        save: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._fire = fire
        # How the state file is written: the runtime runs it in a thread; tests call it.
        self._save = save or (lambda fn: fn())
        self.first_access = FirstAccess(state_dir / STATE_FILE if state_dir else None)
        self._last_fired: dict[tuple[str, str], float] = {}
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """New thresholds (hot reload). Windows are rebuilt only when their length changed."""
        section: AlertsSection = config.alerts
        old = getattr(self, "section", None)
        self.section = section
        self.enabled = section.enabled
        self.sensitive = sensitive_tables(config)
        if old is None or old.window != section.window:
            w = section.window
            self.large = WindowCounter(w)
            self.rows = WindowCounter(w)
            self.denied = WindowCounter(w)
            self.approvals = WindowCounter(w)
            self.auth = WindowCounter(w)

    # -- inputs --------------------------------------------------------------------------------

    def allowed_rows_floor(self) -> int | None:
        """The fewest rows for which ``statement`` does anything with an allowed statement
        (None: it never does), so that a batch of them calls it only for those."""
        if not self.enabled:
            return None
        s = self.section
        if self.sensitive:
            return 0  # any statement may read a sensitive table
        if s.rows:
            return 1
        if s.large_results:
            return s.large_result_rows
        return None

    def statement(
        self,
        subject: str,
        target: str,
        action: str,
        rows: int,
        tables: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        """One completed statement (``action``: allow / deny); ``tables`` is called only
        when sensitive tables are configured, to name the tables the statement read."""
        if not self.enabled:
            return
        s = self.section
        if action != "allow":
            if s.denied:
                n = self.denied.add(subject)
                if n >= s.denied:
                    self._maybe("denied", subject, n, s.denied, target)
            return
        if rows:
            if s.large_results and rows >= s.large_result_rows:
                n = self.large.add(subject)
                if n >= s.large_results:
                    self._maybe(
                        "large_results",
                        subject,
                        n,
                        s.large_results,
                        target,
                        large_result_rows=s.large_result_rows,
                    )
            if s.rows:
                n = self.rows.add(subject, rows)
                if n >= s.rows:
                    self._maybe("rows", subject, n, s.rows, target)
        if self.sensitive and tables is not None:
            fresh = [
                t for t in tables() if t in self.sensitive and self.first_access.first(subject, t)
            ]
            if fresh:
                self._save(self.first_access.saver())
                for table in fresh:
                    self._maybe(
                        "first_sensitive_access", subject, 1, 1, target, table=table, cool=False
                    )

    def approval_requested(self, subject: str, target: str) -> None:
        s = self.section
        if self.enabled and s.approval_requests:
            n = self.approvals.add(subject)
            if n >= s.approval_requests:
                self._maybe("approval_requests", subject, n, s.approval_requests, target)

    def auth_failure(self, client_host: str, target: str, reason: str) -> None:
        s = self.section
        if self.enabled and s.auth_failures:
            n = self.auth.add(client_host)
            if n >= s.auth_failures:
                self._maybe("auth_failures", client_host, n, s.auth_failures, target, reason=reason)

    # -- firing --------------------------------------------------------------------------------

    def _maybe(
        self,
        rule: str,
        key: str,
        count: int,
        threshold: int,
        target: str | None,
        *,
        cool: bool = True,
        **detail: Any,
    ) -> None:
        now = time.monotonic()
        if cool:
            last = self._last_fired.get((rule, key))
            if last is not None and now - last < self.section.cooldown:
                return
            if len(self._last_fired) >= MAX_KEYS:
                self._last_fired.pop(next(iter(self._last_fired)))
            self._last_fired[(rule, key)] = now
        alert = Alert(rule, key, count, threshold, self.section.window, target, detail)
        try:
            self._fire(alert)
        except Exception:
            log.exception("alert delivery failed", extra={"rule": rule})
