"""Wiring and ending the two legs of a session, the same way for every protocol.

Streaming starts with the lost-connection callbacks and two-way backpressure
wired, then hands each leg's reads to the driver's readers (``_client_data`` /
``_server_data``, unless the driver has faster ones: ``_client_reader``). At the
end both legs are closed (pending writes flushed first); the session finishes
once both transports report ``connection_lost``, or after ``CLOSE_TIMEOUT`` when
a peer never drains its socket. Finishing cancels the session's timers, ends its
recording, lets the protocol driver release what it registered, logs the end,
and detaches the legs' callbacks so no reference cycle keeps the session alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..net.leg import couple_flow_control

if TYPE_CHECKING:
    from ..net.leg import Leg
    from ..runtime import Runtime

CLOSE_TIMEOUT = 10.0  # seconds to flush pending writes before aborting


class LegPair:
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

    @property
    def closing(self) -> bool:
        """Ending: no longer a live session, though its connections may still be flushing."""
        return self._closing

    def _release_registrations(self) -> None:
        """Protocol-specific cleanup (registry entries, background tasks)."""
        raise NotImplementedError

    # Implemented by each driver: the hot path and the reactions to a lost leg.
    def _client_data(self, data: bytes) -> None:
        raise NotImplementedError

    def _server_data(self, data: bytes) -> None:
        raise NotImplementedError

    def _client_reader(self) -> Callable[[bytes], object]:
        """What the client leg hands each read to (``_client_data`` unless the driver
        has a faster reader)."""
        return self._client_data

    def _server_reader(self) -> Callable[[bytes], object]:
        return self._server_data

    def _client_lost(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _upstream_lost(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _start_streaming(self, upstream: Leg) -> None:
        client = self.client
        client.on_lost = self._client_lost
        upstream.on_lost = self._upstream_lost
        couple_flow_control(client, upstream)
        if client.closed:
            self._client_lost(client.close_exc)
            return
        if upstream.closed:
            self._upstream_lost(upstream.close_exc)
            return
        upstream.start_streaming(self._server_reader())
        client.start_streaming(self._client_reader())

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
