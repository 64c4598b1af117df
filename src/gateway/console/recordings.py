"""Recordings for the console: a paged listing and one session as a timeline.

Everything here is synchronous file reading through ``gateway.recording`` (the reader,
``summarize``, ``verify_file`` and ``decode_result`` the CLI uses); the web handlers run it
in a worker thread so that a large file never stalls the event loop (and the sessions on
it). Summaries and verification outcomes are cached by (size, mtime): a finished
recording is read once, an open one again only when it has grown.
"""

from __future__ import annotations

import heapq
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..recording.keys import KeyFileError, load_public_key
from ..recording.reader import RecordingFormatError, RecordingReader
from ..recording.results import DecodedResult, decode_result
from ..recording.schema import (
    FILE_SUFFIX,
    ColumnInfo,
    Ctl,
    Done,
    End,
    Meta,
    Rows,
    Start,
    Stmt,
    UnknownFrame,
)
from ..recording.summary import SessionSummary, summarize
from ..recording.verify import Status, VerifyResult, verify_file

PER_PAGE: Final = 50
# A timeline page shows at most this many statements/events, and this many rows per result;
# the CLI (`gateway sessions replay`) shows everything.
MAX_ENTRIES: Final = 1000
MAX_ROWS_SHOWN: Final = 200
# Recorded values are attacker-controlled and unbounded (a 100 MB text value, a megabyte
# statement): what the timeline keeps, and so the page it becomes, is bounded. Row data is
# kept per statement until MAX_ROWS_SHOWN rows or MAX_RESULT_BYTES (whole recorded chunks,
# never more than one past the bound), and MAX_TIMELINE_BYTES for the whole page; texts
# and cells are cut at MAX_TEXT_CHARS / MAX_CELL_CHARS. The CLI replay shows everything.
MAX_RESULT_BYTES: Final = 512 * 1024
MAX_TIMELINE_BYTES: Final = 8 * 1024 * 1024
MAX_TEXT_CHARS: Final = 4000
MAX_CELL_CHARS: Final = 1000
MAX_PARAMS_SHOWN: Final = 100
# Summaries and verification outcomes remembered (by file); beyond it the oldest go.
MAX_CACHED: Final = 10_000
# Ids the gateway writes are "20260101T000000Z-3f2a9c1d0e4b"; anything that could name
# another directory is refused before a path is built.
FILE_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")

VERIFY_LABELS: Final = {
    Status.OK: ("verified", "ok"),
    Status.ALTERED: ("ALTERED", "bad"),
    Status.INCOMPLETE: ("no end frame", "warn"),
    Status.TRUNCATED: ("truncated", "warn"),
}


@dataclass
class Verification:
    label: str  # "verified", "ALTERED", "no end frame", "truncated", "not verified"
    tone: str  # css: ok, bad, warn
    message: str


@dataclass
class Listed:
    summary: SessionSummary
    verification: Verification


@dataclass
class StatementEntry:
    stmt: Stmt  # its text and parameters cut for display (_shown_statement)
    offset: float
    columns: list[ColumnInfo] | None = None
    result: DecodedResult | None = None
    done: Done | None = None
    rows_hidden: int = 0  # recorded rows not shown (MAX_ROWS_SHOWN, the byte bounds)
    rows_recorded: int = 0  # the count of every rows chunk, kept or not
    _data: list[bytes] = field(default_factory=list)
    _kept_rows: int = 0
    _kept_bytes: int = 0
    _encodings: set[str] = field(default_factory=set)


@dataclass
class EventEntry:
    kind: str
    offset: float
    detail: dict[str, str]


@dataclass
class Timeline:
    file_id: str
    start: Start | None = None
    end: End | None = None
    entries: list[StatementEntry | EventEntry] = field(default_factory=list)
    cut: bool = False  # more than MAX_ENTRIES
    truncation: str | None = None
    problem: str | None = None
    unknown_frames: int = 0
    data_kept: int = 0  # row bytes kept for the whole page (MAX_TIMELINE_BYTES)


class RecordingIndex:
    """The recordings of one session directory, verified with one public key."""

    def __init__(self, session_dir: Path, public_key_file: Path) -> None:
        self.session_dir = session_dir
        self.public_key_file = public_key_file
        self._lock = threading.Lock()
        self._summaries: OrderedDict[Path, tuple[tuple[int, int], SessionSummary]] = OrderedDict()
        self._verified: OrderedDict[Path, tuple[tuple[int, int], Verification]] = OrderedDict()

    def path_of(self, file_id: str) -> Path | None:
        if not FILE_ID_RE.fullmatch(file_id):
            return None
        path = self.session_dir / (file_id + FILE_SUFFIX)
        return path if path.is_file() else None

    def _names(self) -> list[str]:
        """File names of the recordings, unsorted: one directory scan, no stat per file
        (a session directory may hold millions), nothing but the names kept."""
        names = []
        try:
            with os.scandir(self.session_dir) as entries:
                for entry in entries:
                    if entry.name.endswith(FILE_SUFFIX) and entry.is_file():
                        names.append(entry.name)
        except OSError:  # no directory (yet): no recordings
            return []
        return names

    def page(self, number: int) -> tuple[list[Listed], int]:
        """One page (from 1) of the listing, newest first, and the number of files."""
        names = self._names()
        # Newest first (the gateway's ids start with the start time); only the names up to
        # the page asked for are ordered (a page past the end costs no more than the last).
        wanted = min(number, -(-len(names) // PER_PAGE) or 1) * PER_PAGE
        newest = heapq.nlargest(wanted, names)
        chosen = newest[(number - 1) * PER_PAGE : number * PER_PAGE]
        return [self._listed(self.session_dir / n) for n in chosen], len(names)

    def verification(self, path: Path) -> Verification:
        stamp = _stamp(path)
        with self._lock:
            cached = self._verified.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        outcome = self._verify(path)
        with self._lock:
            _remember(self._verified, path, (stamp, outcome))
        return outcome

    def _listed(self, path: Path) -> Listed:
        stamp = _stamp(path)
        with self._lock:
            cached = self._summaries.get(path)
        if cached is not None and cached[0] == stamp:
            summary = cached[1]
        else:
            found = summarize(path)
            assert found is not None  # without a filter every file has a summary
            summary = found
            with self._lock:
                _remember(self._summaries, path, (stamp, summary))
        return Listed(summary, self.verification(path))

    def _verify(self, path: Path) -> Verification:
        try:
            key = load_public_key(self.public_key_file)
        except KeyFileError as exc:
            return Verification("not verified", "warn", f"no public key to verify with: {exc}")
        result: VerifyResult = verify_file(path, key)
        label, tone = VERIFY_LABELS[result.status]
        return Verification(label, tone, result.message)

    def timeline(self, file_id: str) -> Timeline | None:
        path = self.path_of(file_id)
        if path is None:
            return None
        return read_timeline(path, file_id)


def _remember(cache: OrderedDict[Path, Any], path: Path, value: Any) -> None:
    cache[path] = value
    cache.move_to_end(path)
    while len(cache) > MAX_CACHED:
        cache.popitem(last=False)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def read_timeline(path: Path, file_id: str) -> Timeline:
    """The session as statements (with their results) and control events, in order."""
    timeline = Timeline(file_id)
    open_stmts: dict[int, StatementEntry] = {}
    t0 = 0.0
    try:
        with RecordingReader(path) as reader:
            for _, frame in reader.logical_frames():
                if len(timeline.entries) >= MAX_ENTRIES and not isinstance(frame, End):
                    if isinstance(frame, Stmt | Ctl):
                        timeline.cut = True
                    if not isinstance(frame, Meta | Rows | Done):
                        continue
                if isinstance(frame, Start):
                    timeline.start = frame
                    t0 = frame.started_at
                elif isinstance(frame, Stmt):
                    entry = StatementEntry(_shown_statement(frame), frame.at - t0)
                    open_stmts[frame.stmt] = entry
                    timeline.entries.append(entry)
                elif isinstance(frame, Meta) and frame.stmt in open_stmts:
                    open_stmts[frame.stmt].columns = frame.columns
                elif isinstance(frame, Rows) and frame.stmt in open_stmts:
                    _keep_rows(timeline, open_stmts[frame.stmt], frame)
                elif isinstance(frame, Done) and frame.stmt in open_stmts:
                    _finish(open_stmts.pop(frame.stmt), frame)
                elif isinstance(frame, Ctl):
                    detail = {k: shorten(v, MAX_TEXT_CHARS) for k, v in frame.detail.items()}
                    timeline.entries.append(EventEntry(frame.kind, frame.at - t0, detail))
                elif isinstance(frame, End):
                    timeline.end = frame
                elif isinstance(frame, UnknownFrame):
                    timeline.unknown_frames += 1
            if reader.truncation is not None:
                timeline.truncation = reader.truncation.describe()
    except RecordingFormatError as exc:
        timeline.problem = exc.message
    except OSError as exc:
        timeline.problem = f"cannot read: {exc.strerror}"
    for entry in open_stmts.values():  # no done frame (session cut off mid-result)
        _decode(entry)
    return timeline


def shorten(text: str, limit: int) -> str:
    """The text, or its first ``limit`` characters and how many more there are."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters not shown)"


def _shown_statement(stmt: Stmt) -> Stmt:
    """The statement with its text and parameters cut for display: a copy when anything
    was cut, so that the timeline never holds on to a huge frame."""
    params = stmt.params
    long_param = any(isinstance(p, str | bytes) and len(p) > MAX_CELL_CHARS for p in params or ())
    if (
        len(stmt.text) <= MAX_TEXT_CHARS
        and not long_param
        and len(params or ()) <= MAX_PARAMS_SHOWN
    ):
        return stmt
    if params:
        params = [
            shorten(p, MAX_CELL_CHARS)
            if isinstance(p, str)
            else p[:MAX_CELL_CHARS]
            if isinstance(p, bytes)
            else p
            for p in params[:MAX_PARAMS_SHOWN]
        ]
    return Stmt(
        seq=stmt.seq,
        prev=stmt.prev,
        stmt=stmt.stmt,
        at=stmt.at,
        text=shorten(stmt.text, MAX_TEXT_CHARS),
        path=stmt.path,
        name=stmt.name,
        params=params,
        decision=stmt.decision,
        rule=stmt.rule,
    )


def _keep_rows(timeline: Timeline, entry: StatementEntry, frame: Rows) -> None:
    """Keep a chunk of rows for the page while the bounds allow it (see MAX_RESULT_BYTES)."""
    entry.rows_recorded += frame.count
    if (
        entry._kept_rows >= MAX_ROWS_SHOWN
        or entry._kept_bytes >= MAX_RESULT_BYTES
        or timeline.data_kept >= MAX_TIMELINE_BYTES
    ):
        return
    entry._data.append(frame.data)
    entry._encodings.add(frame.enc)
    entry._kept_rows += frame.count
    entry._kept_bytes += len(frame.data)
    timeline.data_kept += len(frame.data)


def _finish(entry: StatementEntry, done: Done) -> None:
    entry.done = done
    _decode(entry)


def _decode(entry: StatementEntry) -> None:
    if entry.columns is not None or entry._data:  # rows without columns: COPY TO STDOUT
        result = decode_result(entry.columns or [], entry._data, entry._encodings)
        del result.rows[MAX_ROWS_SHOWN:]
        for row in result.rows:
            for i, value in enumerate(row):
                if value is not None and len(value) > MAX_CELL_CHARS:
                    row[i] = shorten(value, MAX_CELL_CHARS)
        entry.rows_hidden = max(0, entry.rows_recorded - len(result.rows))
        entry.result = result
    entry._data = []
    entry._encodings = set()


def shown_params(params: list[Any] | None) -> list[str]:
    """Bound parameters as recorded, for display (NULL, hex for bytes, text otherwise)."""
    shown = []
    for p in params or []:
        if p is None:
            shown.append("NULL")
        elif isinstance(p, bytes | bytearray):
            shown.append("\\x" + bytes(p).hex())
        else:
            shown.append(str(p))
    return shown
