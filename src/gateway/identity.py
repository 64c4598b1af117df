"""Who is on the other end of a session, as established by a verified token.

The token itself is deliberately not kept: it is a bearer credential, and an Identity ends up
in logs, recordings and the admin API. ``claims`` holds the verified payload (no signature).
"""

from __future__ import annotations

from typing import Any

import msgspec


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    subject: str
    groups: tuple[str, ...] = ()
    token_id: str | None = None  # the token's "jti", used for revocation
    issuer: str
    expires_at: float | None = None  # "exp", seconds since the epoch
    issued_at: float | None = None  # "iat"
    claims: dict[str, Any] = msgspec.field(default_factory=dict)
