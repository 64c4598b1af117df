"""Ending a session the same way for every protocol.

Both legs are closed (pending writes flushed first); the session finishes once
both transports report ``connection_lost``, or after ``CLOSE_TIMEOUT`` when a
peer never drains its socket. Finishing cancels the session's timers, ends its
recording, lets the protocol driver release what it registered, logs the end,
and detaches the legs' callbacks so no reference cycle keeps the session alive.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..net.leg import Leg
    from ..runtime import Runtime

CLOSE_TIMEOUT = 10.0  # seconds to flush pending writes before aborting


class TwoLegTeardown:
    """Mixin for session drivers with a ``client`` leg and an optional ``upstream``
    (anything with a ``.leg``). The driver sets the attributes in ``__init__`` via
    ``_init_teardown`` and implements ``_release_registrations``."""

    runtime: Runtime
    client: Leg
    upstream: Any
    observer: Any
    end_reason: str

    def _init_teardown(self) -> None:
        self._closing = False
        self._abort_timer: asyncio.TimerHandle | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _release_registrations(self) -> None:
        """Protocol-specific cleanup (registry entries, background tasks)."""
        raise NotImplementedError

    def _legs(self) -> list[Leg]:
        return [self.client] if self.upstream is None else [self.client, self.upstream.leg]

    def _close_both(self) -> None:
        """Close both legs (pending writes are flushed), then finish once both are gone."""
        if self._closing:
            return
        self._closing = True
        legs = self._legs()
        for leg in legs:
            leg.on_lost = self._leg_gone
            leg.close()
        self._abort_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, _abort_all, legs)
        self._leg_gone(None)

    def _leg_gone(self, _exc: BaseException | None) -> None:
        legs = self._legs()
        if not all(leg.closed for leg in legs) or self._done.done():
            return
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        if self.observer is not None:
            self.observer.session_ended(self.end_reason)
        self._release_registrations()
        self.runtime.session_ended(self)  # type: ignore[arg-type]
        for leg in legs:
            leg.detach()
        self._done.set_result(None)


def _abort_all(legs: list[Leg]) -> None:
    for leg in legs:
        leg.abort()
