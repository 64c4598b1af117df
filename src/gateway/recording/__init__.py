"""Session recording: hash-chained, signed msgspec frames on disk (docs/recording-format.md).

The asyncio side (``Recorder``, ``SessionRecording``) is what session drivers use; the
readers (``reader``, ``verify``, ``render``) are synchronous and serve the auditors' CLI.
"""

from __future__ import annotations

from .recorder import Recorder, RecordingUnavailable
from .schema import ColumnInfo
from .session import SessionRecording, SessionStartInfo

__all__ = [
    "ColumnInfo",
    "Recorder",
    "RecordingUnavailable",
    "SessionRecording",
    "SessionStartInfo",
]
