"""The kill switch: ending live sessions, and revocations that take effect at once.

Rules this module keeps:

* Adding a revocation ends, immediately (not at the next poll), every live session whose
  identity it matches; the client gets the protocol's "terminated by an administrator"
  error and the recording's end frame carries the reason.
* Every kill and every revocation change is one line on the ``gateway.audit`` log: who,
  what, why. Tokens never appear anywhere (an Identity does not hold one).
* Listing live sessions reads counters the drivers keep anyway (per statement, per
  forwarded run), so it costs the hot path nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .revocations import Revocation, RevocationStore

if TYPE_CHECKING:
    from ..identity import Identity
    from ..session.base import GatewaySession
    from ..session.registry import SessionRegistry

audit = logging.getLogger("gateway.audit")
log = logging.getLogger("gateway")


def admin_message(reason: str) -> str:
    """What the client of a killed session is told."""
    text = "session ended by an administrator"
    return f"{text}: {reason}" if reason else text


class Lifecycle:
    def __init__(self, registry: SessionRegistry, revocations: RevocationStore) -> None:
        self.registry = registry
        self.revocations = revocations

    # -- live sessions ---------------------------------------------------------------------

    def live_sessions(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for session in list(self.registry.sessions.values()):
            if session.closing:
                continue
            identity = session.identity
            out.append(
                {
                    "session_id": session.session_id,
                    "subject": identity.subject if identity is not None else None,
                    "groups": list(identity.groups) if identity is not None else [],
                    "target": session.target.name,
                    "protocol": session.target.config.protocol,
                    "client": session.peer,
                    "since": session.started,
                    **session.live_info(),
                }
            )
        out.sort(key=lambda s: float(s["since"]))  # type: ignore[arg-type]
        return out

    def kill_session(self, session_id: str, reason: str, by: str) -> bool:
        session = self.registry.sessions.get(session_id)
        if session is None:
            return False
        audit.info(
            "session killed",
            extra={
                "event": "session_killed",
                "session_id": session_id,
                "subject": _subject(session),
                "target": session.target.name,
                "by": by,
                "reason": reason,
            },
        )
        self._end(session, reason, f"killed by {by}" + (f": {reason}" if reason else ""))
        return True

    def end_matching(self, revocation: Revocation) -> list[str]:
        """End every live session the revocation matches; their ids."""
        ended = []
        for session in list(self.registry.sessions.values()):
            identity = session.identity
            if identity is not None and not session.closing and revocation.matches(identity):
                ended.append(session.session_id)
                self._end(
                    session,
                    revocation.reason,
                    f"access revoked by {revocation.revoked_by} ({revocation.id})"
                    + (f": {revocation.reason}" if revocation.reason else ""),
                )
        if ended:
            audit.info(
                "sessions ended by revocation",
                extra={
                    "event": "revocation_enforced",
                    "revocation_id": revocation.id,
                    "sessions": ended,
                },
            )
        return ended

    def enforce_all(self) -> list[str]:
        """End the live sessions any current revocation matches (after a reload)."""
        ended: list[str] = []
        for session in list(self.registry.sessions.values()):
            identity = session.identity
            revocation = self.revocations.match(identity) if identity is not None else None
            if revocation is not None:
                ended += self.end_matching(revocation)
        return ended

    def check_new_session(self, session: GatewaySession, identity: Identity) -> bool:
        """A session that just went live: ended at once (True) if a revocation added while
        it was logging in (after its token was checked) matches it."""
        revocation = self.revocations.match(identity)
        if revocation is None:
            return False
        self.end_matching(revocation)
        return True

    @staticmethod
    def _end(session: GatewaySession, reason: str, end_reason: str) -> None:
        try:
            session.kill(admin_message(reason), end_reason)
        except Exception:  # one broken session must not stop the others from being ended
            log.exception("ending a session failed", extra={"session_id": session.session_id})

    # -- revocations -----------------------------------------------------------------------

    def revoke(
        self, kind: str, value: str, *, reason: str, by: str, expires_in: float | None
    ) -> tuple[Revocation, list[str]]:
        """Persist a revocation (RevocationError if it cannot be), then end the sessions it
        matches; (the revocation, ids of the sessions ended)."""
        revocation = self.revocations.add(
            kind, value, reason=reason, revoked_by=by, expires_in=expires_in
        )
        audit.info(
            "revocation added",
            extra={
                "event": "revocation_added",
                "revocation_id": revocation.id,
                "kind": revocation.kind,
                "value": revocation.value,
                "by": by,
                "reason": reason,
                "expires_at": revocation.expires_at,
            },
        )
        return revocation, self.end_matching(revocation)

    def lift(self, revocation_id: str, by: str) -> Revocation | None:
        removed = self.revocations.remove(revocation_id)
        if removed is not None:
            audit.info(
                "revocation removed",
                extra={
                    "event": "revocation_removed",
                    "revocation_id": removed.id,
                    "kind": removed.kind,
                    "value": removed.value,
                    "by": by,
                },
            )
        return removed

    def reload(self) -> list[str]:
        """Re-read the revocation file (hot reload), then end the live sessions it now
        matches. RevocationError (the old list is kept) if the file is unusable."""
        self.revocations.load()
        return self.enforce_all()


def _subject(session: GatewaySession) -> str | None:
    return session.identity.subject if session.identity is not None else None
