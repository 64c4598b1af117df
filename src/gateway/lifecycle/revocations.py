"""Revocations: who may no longer log in, kept in ``<state_dir>/revocations.json``.

Rules this module keeps:

* A revocation names a subject, a token id (the JWT's ``jti``) or a group, with an
  optional expiry (``None``: permanent), a reason, who revoked and when.
* The file is the source of truth and survives restarts. Every change rewrites it
  atomically (temp file in the same directory, fsync, rename, fsync of the directory):
  a crash leaves either the old list or the new one, never half of one.
* Expired revocations stop matching at once and are pruned from the file on the next
  write. ``match`` never writes, so it is cheap enough for every login.
* Fail closed: a file that cannot be read or parsed is an error (the gateway refuses to
  start; a reload keeps the list it had), never an empty list.

Synchronous and free of sockets; the runtime calls it from the event loop (a revocation
is a rare admin action, and the file is small).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, cast

from ..identity import Identity

Kind = Literal["subject", "token_id", "group"]
KINDS: Final[tuple[Kind, ...]] = ("subject", "token_id", "group")
FILE_VERSION: Final = 1
MAX_VALUE: Final = 1024
MAX_REASON: Final = 1024


class RevocationError(Exception):
    """A revocation that cannot be added, or a store file that cannot be used."""


class RevocationWriteError(RevocationError):
    """The list could not be written: the change did not happen."""


@dataclass(frozen=True)
class Revocation:
    id: str
    kind: Kind
    value: str
    reason: str
    revoked_by: str
    created_at: float
    expires_at: float | None = None  # None: permanent

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def matches(self, identity: Identity) -> bool:
        if self.kind == "subject":
            return identity.subject == self.value
        if self.kind == "token_id":
            return identity.token_id == self.value
        return self.value in identity.groups

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "value": self.value,
            "reason": self.reason,
            "revoked_by": self.revoked_by,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_json(cls, item: Any) -> Revocation:
        if not isinstance(item, dict):
            raise ValueError("a revocation must be an object")
        kind = item.get("kind")
        if kind not in KINDS:
            raise ValueError(f"unknown revocation kind {kind!r}")
        expires = item.get("expires_at")
        for key in ("id", "value", "reason", "revoked_by"):
            if not isinstance(item.get(key), str):
                raise ValueError(f"revocation field {key!r} must be a string")
        if not isinstance(item.get("created_at"), int | float):
            raise ValueError("revocation field 'created_at' must be a number")
        if expires is not None and not isinstance(expires, int | float):
            raise ValueError("revocation field 'expires_at' must be a number or null")
        return cls(
            id=item["id"],
            kind=cast(Kind, kind),
            value=item["value"],
            reason=item["reason"],
            revoked_by=item["revoked_by"],
            created_at=float(item["created_at"]),
            expires_at=None if expires is None else float(expires),
        )


class RevocationStore:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._items: dict[str, Revocation] = {}
        # kind -> value -> revocations: a login looks up its subject, token id and groups.
        self._index: dict[str, dict[str, list[Revocation]]] = {k: {} for k in KINDS}

    # -- reading ------------------------------------------------------------------------

    def load(self) -> None:
        """(Re-)read the file; a missing file is an empty list. Raises RevocationError,
        keeping the current list, when the file cannot be read or parsed."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._replace([])
            return
        except OSError as exc:
            raise RevocationError(f"cannot read {self.path}: {exc}") from None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("revocations"), list):
                raise ValueError('expected an object with a "revocations" list')
            if data.get("version", FILE_VERSION) != FILE_VERSION:
                # A newer format may hold entries this version would misread: fail closed.
                raise ValueError(f"version {data['version']!r}; this gateway reads {FILE_VERSION}")
            items = [Revocation.from_json(item) for item in data["revocations"]]
        except ValueError as exc:
            raise RevocationError(f"{self.path} is not a valid revocation list: {exc}") from None
        now = self._clock()
        self._replace([r for r in items if r.active(now)])

    def match(self, identity: Identity) -> Revocation | None:
        """The active revocation that applies to this identity, if any."""
        if not self._items:
            return None
        now = self._clock()
        index = self._index
        candidates: builtins.list[Revocation] = []
        candidates += index["subject"].get(identity.subject, ())
        if identity.token_id is not None:
            candidates += index["token_id"].get(identity.token_id, ())
        groups = index["group"]
        if groups:
            for group in identity.groups:
                candidates += groups.get(group, ())
        for revocation in candidates:
            if revocation.active(now):
                return revocation
        return None

    def list(self) -> builtins.list[Revocation]:
        """The active revocations, oldest first."""
        now = self._clock()
        return sorted(
            (r for r in self._items.values() if r.active(now)), key=lambda r: r.created_at
        )

    def get(self, revocation_id: str) -> Revocation | None:
        found = self._items.get(revocation_id)
        return found if found is not None and found.active(self._clock()) else None

    # -- changing -----------------------------------------------------------------------

    def add(
        self,
        kind: str,
        value: str,
        *,
        reason: str = "",
        revoked_by: str,
        expires_in: float | None = None,
    ) -> Revocation:
        if kind not in KINDS:
            raise RevocationError(f"kind must be one of {', '.join(KINDS)}")
        if not value or len(value) > MAX_VALUE:
            raise RevocationError(f"{kind} must be 1 to {MAX_VALUE} characters")
        if len(reason) > MAX_REASON:
            raise RevocationError(f"reason must be at most {MAX_REASON} characters")
        if expires_in is not None and not expires_in > 0:
            raise RevocationError("expires_in must be a positive duration")
        now = self._clock()
        revocation = Revocation(
            id="rev_" + secrets.token_hex(8),
            kind=kind,
            value=value,
            reason=reason,
            revoked_by=revoked_by,
            created_at=now,
            expires_at=None if expires_in is None else now + expires_in,
        )
        self._save([*self.list(), revocation])
        return revocation

    def remove(self, revocation_id: str) -> Revocation | None:
        """Lift a revocation; None if there is no active one with this id."""
        found = self.get(revocation_id)
        if found is None:
            return None
        self._save([r for r in self.list() if r.id != revocation_id])
        return found

    def _save(self, items: builtins.list[Revocation]) -> None:
        """Write the file atomically, then make it the in-memory list (only once it is
        on disk: a revocation that would not survive a restart is refused)."""
        body = json.dumps(
            {"version": FILE_VERSION, "revocations": [r.to_json() for r in items]}, indent=2
        ).encode()
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".revocations-", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(body + b"\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _fsync_dir(directory)
        except OSError as exc:
            raise RevocationWriteError(f"cannot write {self.path}: {exc}") from None
        self._replace(items)

    def _replace(self, items: Iterable[Revocation]) -> None:
        self._items = {r.id: r for r in items}
        index: dict[str, dict[str, list[Revocation]]] = {k: {} for k in KINDS}
        for r in self._items.values():
            index[r.kind].setdefault(r.value, []).append(r)
        self._index = index


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is (POSIX).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
