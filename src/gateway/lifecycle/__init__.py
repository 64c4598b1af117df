"""Identity lifecycle: revocations (subjects, token ids, groups) and their persistence."""

from .revocations import (
    KINDS,
    Revocation,
    RevocationError,
    RevocationStore,
    RevocationWriteError,
)

__all__ = ["KINDS", "Revocation", "RevocationError", "RevocationStore", "RevocationWriteError"]
