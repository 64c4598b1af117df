"""Console sign-in sessions (server side) and what each signed-in person may do.

A console session is created after a pasted token verified like a database login. The
browser gets only a random id (``secrets.token_urlsafe(32)``) in a cookie; the token itself
is never stored. A session ends at sign-out, when its token expires, or after
``MAX_SESSION`` seconds, whichever comes first. Each session has its own CSRF token
(synchronizer token) that every state-changing form carries.

Roles are recomputed from the current configuration on every request, so a group removed
from ``[admin] groups`` or from a policy's ``approvers`` loses its access at once.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from ..config import Config
from ..identity import Identity

# An absolute cap for a session whose token lives longer (or has no "exp").
MAX_SESSION: Final = 8 * 3600.0
# Sign-ins kept at once; beyond it the oldest are dropped (memory stays bounded).
MAX_SESSIONS: Final = 10_000
# Sign-ins kept per subject; beyond it that subject's oldest is dropped, so one person
# signing in in a loop cannot push everyone else's sessions out of MAX_SESSIONS.
MAX_PER_SUBJECT: Final = 20


@dataclass(frozen=True)
class Access:
    """What the groups of one person allow in the console."""

    admin: bool
    approver: bool
    auditor: bool

    @classmethod
    def of(cls, config: Config, groups: Iterable[str]) -> Access:
        mine = set(groups)
        admin_groups = config.admin.groups if config.admin is not None else []
        auditor_groups = config.admin.auditor_groups if config.admin is not None else []
        approver_groups = {g for p in config.policies for g in p.approvers}
        return cls(
            admin=not mine.isdisjoint(admin_groups),
            approver=not mine.isdisjoint(approver_groups),
            auditor=not mine.isdisjoint(auditor_groups),
        )

    @property
    def console(self) -> bool:
        return self.admin or self.approver or self.auditor

    @property
    def approvals(self) -> bool:
        # The same people as the admin API (gateway.admin.api.api_groups); whether one may
        # decide a given request is still the broker's rule.
        return self.admin or self.approver

    @property
    def sessions(self) -> bool:
        return self.console

    @property
    def kill(self) -> bool:
        return self.admin

    @property
    def recordings(self) -> bool:
        # Recordings hold result rows: admins and auditors, not every approver.
        return self.admin or self.auditor

    def sections(self) -> frozenset[str]:
        allowed = {
            "approvals": self.approvals,
            "sessions": self.sessions,
            "recordings": self.recordings,
        }
        return frozenset(k for k, v in allowed.items() if v)


@dataclass
class ConsoleSession:
    id: str
    subject: str
    groups: tuple[str, ...]
    expires_at: float
    csrf: str
    # Who signed in (checked against revocations on every request).
    identity: Identity | None = None
    # Messages shown once on the next page (after a POST/redirect/GET).
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def csrf_ok(self, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(self.csrf.encode(), presented.encode())

    def flash(self, kind: str, text: str) -> None:
        self.flashes.append((kind, text))
        del self.flashes[:-5]

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        return taken


class SessionStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()
        self._clock = clock

    def create(
        self,
        subject: str,
        groups: Iterable[str],
        token_expires_at: float | None,
        identity: Identity | None = None,
    ) -> ConsoleSession:
        now = self._clock()
        expires = now + MAX_SESSION
        if token_expires_at is not None:
            expires = min(expires, token_expires_at)
        self._purge(now)
        mine = [s.id for s in self._sessions.values() if s.subject == subject]
        for sid in mine[: max(0, len(mine) - MAX_PER_SUBJECT + 1)]:  # oldest first
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        session = ConsoleSession(
            id=secrets.token_urlsafe(32),
            subject=subject,
            groups=tuple(groups),
            expires_at=expires,
            csrf=secrets.token_urlsafe(32),
            identity=identity,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _purge(self, now: float) -> None:
        for sid in [s.id for s in self._sessions.values() if s.expires_at <= now]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)
