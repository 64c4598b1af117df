"""Live sessions: cancel-key lookup, graceful shutdown, counts."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import GatewaySession as LiveSession


class SessionRegistry:
    def __init__(self) -> None:
        self.sessions: dict[str, LiveSession] = {}
        # (backend pid, gateway secret) -> session. The PID is the real upstream
        # PID (clients compare it with pg_backend_pid()); the secret is ours, so
        # the real secret never reaches the client. The pair is unique even if two
        # targets reuse a PID.
        self._cancel_keys: dict[tuple[int, bytes], LiveSession] = {}
        # MySQL: gateway-assigned connection id (sent in the greeting, used by
        # KILL / COM_PROCESS_KILL) -> session. Allocated before login, from a
        # random base above typical server thread ids so the two rarely overlap.
        self._connection_ids: dict[int, LiveSession] = {}
        self._next_connection_id = (1 << 30) + secrets.randbelow(1 << 29)

    def add(self, session: LiveSession) -> None:
        self.sessions[session.session_id] = session

    def remove(self, session: LiveSession, cancel_key: tuple[int, bytes] | None) -> None:
        self.sessions.pop(session.session_id, None)
        if cancel_key is not None:
            self._cancel_keys.pop(cancel_key, None)

    def new_cancel_key(self, session: LiveSession, process_id: int) -> bytes:
        while True:
            secret = secrets.token_bytes(4)
            if (process_id, secret) not in self._cancel_keys:
                self._cancel_keys[(process_id, secret)] = session
                return secret

    def find_by_cancel_key(self, process_id: int, secret: bytes) -> LiveSession | None:
        return self._cancel_keys.get((process_id, secret))

    def new_connection_id(self, session: LiveSession) -> int:
        while True:
            conn_id = self._next_connection_id
            self._next_connection_id = conn_id + 1 if conn_id < 0xFFFFFFFF else 1 << 30
            if conn_id not in self._connection_ids:
                self._connection_ids[conn_id] = session
                return conn_id

    def release_connection_id(self, connection_id: int) -> None:
        self._connection_ids.pop(connection_id, None)

    def find_by_connection_id(self, connection_id: int) -> LiveSession | None:
        return self._connection_ids.get(connection_id)

    def __len__(self) -> int:
        return len(self.sessions)
