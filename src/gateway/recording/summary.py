"""One-line session summaries for ``gateway sessions list``.

Streams each file, seeking over rows and metadata frames (only their first bytes are
read). ``execs`` frames (batches of short statements, rows included) are decoded: they
hold the statements to count, so a listing reads most of a file whose statements were
short. For a session with an end frame the totals are the end frame's; without one they
are computed from the statement, batch and completion frames and the summary says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .reader import RecordingFormatError, RecordingReader
from .schema import Ckpt, Ctl, Done, End, Execs, Start, Stmt

_SKIP: Final = frozenset({"rows", "meta"})


@dataclass
class SessionSummary:
    path: Path
    file_id: str = ""  # the file name without .gwrec: what show/replay/export take
    session_id: str = ""
    subject: str = ""
    groups: list[str] = field(default_factory=list)
    target: str = ""
    protocol: str = ""
    client_address: str = ""
    started_at: float | None = None
    ended_at: float | None = None  # end frame, else the last time seen in the file
    statements: int = 0
    rows: int = 0
    bytes_to_client: int = 0
    denied: int = 0
    frames: int = 0
    complete: bool = False
    end_reason: str | None = None
    truncated: bool = False
    problem: str | None = None  # unreadable file (bad header, malformed frame)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)

    @property
    def status(self) -> str:
        if self.problem is not None:
            return "unreadable"
        if self.complete:
            return "complete"
        return "truncated" if self.truncated else "no-end-frame"

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.file_id,
            "session_id": self.session_id,
            "file": str(self.path),
            "user": self.subject,
            "groups": self.groups,
            "target": self.target,
            "protocol": self.protocol,
            "client": self.client_address,
            "start": self.started_at,
            "end": self.ended_at,
            "duration": self.duration,
            "statements": self.statements,
            "rows": self.rows,
            "bytes": self.bytes_to_client,
            "denied": self.denied,
            "status": self.status,
            "end_reason": self.end_reason,
            "problem": self.problem,
        }


def summarize(path: Path, accept: Callable[[Start], bool] | None = None) -> SessionSummary | None:
    """Summary of one file; None if ``accept`` rejects its start frame."""
    stem = path.name.removesuffix(".gwrec")
    summary = SessionSummary(path, file_id=stem, session_id=stem)
    last_seen: float | None = None
    stmt_at: dict[int, float] = {}
    try:
        with RecordingReader(path, skip_tags=_SKIP) as reader:
            for raw, frame in reader.frames():
                summary.frames = raw.index + 1
                if isinstance(frame, Start):
                    if accept is not None and not accept(frame):
                        return None
                    _from_start(summary, frame)
                    last_seen = frame.started_at
                elif isinstance(frame, Stmt):
                    summary.statements += 1
                    summary.denied += frame.decision == "deny"
                    stmt_at[frame.stmt] = frame.at
                    last_seen = max(last_seen or frame.at, frame.at)
                elif isinstance(frame, Execs):
                    for item in frame.items:
                        summary.statements += 1
                        summary.denied += item.decision == "deny"
                        summary.rows += item.rows
                        summary.bytes_to_client += item.bytes_to_client
                        last_seen = max(last_seen or 0.0, item.at + item.duration)
                elif isinstance(frame, Done):
                    summary.rows += frame.rows
                    summary.bytes_to_client += frame.bytes_to_client
                    started = stmt_at.pop(frame.stmt, None)
                    if started is not None:
                        last_seen = max(last_seen or 0.0, started + frame.duration)
                elif isinstance(frame, Ctl | Ckpt):
                    last_seen = max(last_seen or frame.at, frame.at)
                elif isinstance(frame, End):
                    _from_end(summary, frame)
            summary.truncated = reader.truncation is not None
    except RecordingFormatError as exc:
        summary.problem = exc.message
    except OSError as exc:
        summary.problem = f"cannot read: {exc.strerror}"
    if not summary.complete:
        summary.ended_at = last_seen
    if accept is not None and summary.started_at is None:
        return None if summary.problem is None else summary
    return summary


def _from_start(summary: SessionSummary, start: Start) -> None:
    summary.session_id = start.session_id
    summary.subject = start.subject
    summary.groups = list(start.groups)
    summary.target = start.target
    summary.protocol = start.protocol
    summary.client_address = start.client_address
    summary.started_at = start.started_at


def _from_end(summary: SessionSummary, end: End) -> None:
    summary.complete = True
    summary.end_reason = end.reason
    summary.ended_at = end.ended_at
    summary.statements = end.statements
    summary.rows = end.rows
    summary.bytes_to_client = end.bytes_to_client
    summary.denied = end.denied
