"""The recorder: one writer task and one writer thread for all sessions.

The writer task wakes every ``fsync_interval`` (a *tick*) or early when a session has
buffered enough to be worth writing. On each pass it takes every session's buffer
and hands the batch to a dedicated one-thread executor, which writes them and, on
ticks, fsyncs (frames are sealed — chained and, for checkpoints, signed — by the
event loop as they are appended). On a tick it first
appends a signed checkpoint to every session that recorded something since its last
one, so a file cut short by a crash is still provably the gateway's up to its last
checkpoint: at most one interval of frames is unsigned.

Failures (ENOSPC, EACCES, ...): the sealed bytes stay in memory and are retried on
every tick; the recorder turns unhealthy and logs an alert (paths and errno only,
never recorded content). With ``on_failure="refuse"`` new sessions are refused while
unhealthy; with ``"continue"`` they proceed and the alert says so. Sessions whose
backlog passes ``max_buffer`` are paused, never dropped.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .keys import KeyFileError, fingerprint, load_or_create_signing_key
from .session import SESSION_ID_RE, SessionRecording, SessionStartInfo
from .sink import SessionFile, WriteResult, fsync_directory, probe_directory

log = logging.getLogger("gateway.recording")

ON_FAILURE_MODES: Final = ("refuse", "continue")
# Extra writer passes close() allows (retries after failures) before giving up.
CLOSE_RETRIES: Final = 3

_Batch = list[tuple[SessionFile, bytearray, bool]]


class RecordingUnavailable(Exception):
    """Recording cannot be guaranteed: the gateway must refuse the session."""


class Recorder:
    def __init__(
        self,
        session_dir: Path,
        *,
        signing_key_path: Path,
        fsync_interval: float = 1.0,
        on_failure: str = "refuse",
        max_buffer: int = 8 * 1024 * 1024,
    ) -> None:
        if on_failure not in ON_FAILURE_MODES:
            raise ValueError(f"on_failure must be one of {ON_FAILURE_MODES}, not {on_failure!r}")
        if fsync_interval <= 0:
            raise ValueError("fsync_interval must be positive")
        self.session_dir = Path(session_dir)
        self.signing_key_path = Path(signing_key_path)
        self.fsync_interval = fsync_interval
        self.on_failure = on_failure
        self.max_buffer = max_buffer
        self._key: Ed25519PrivateKey | None = None
        self._key_fp = ""
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake_event = asyncio.Event()
        self._sessions: dict[str, SessionRecording] = {}
        self._healthy = True
        self._last_error: str | None = None
        self._closing = False
        self._flush_waiters: list[asyncio.Future[None]] = []
        # For the metrics (docs/operations.md): bytes handed to the disk, last pass's time.
        self.written_bytes = 0
        self.last_pass_seconds = 0.0

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Create the directory, load (or generate) the key, start the writer."""
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gwrec-writer")
        try:
            self._key = await loop.run_in_executor(
                self._executor, load_or_create_signing_key, self.signing_key_path
            )
        except (KeyFileError, OSError) as exc:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise RecordingUnavailable(f"recording signing key unusable: {exc}") from None
        self._key_fp = fingerprint(self._key.public_key())
        problem = await loop.run_in_executor(self._executor, probe_directory, self.session_dir)
        if problem is not None:
            if self.on_failure == "refuse":
                self._executor.shutdown(wait=True)
                self._executor = None
                raise RecordingUnavailable(
                    f"session directory {self.session_dir} is not writable: {_describe(problem)}"
                )
            self._set_unhealthy(problem, str(self.session_dir))
        self._task = loop.create_task(self._run(), name="recording-writer")
        log.info(
            "recorder started",
            extra={"session_dir": str(self.session_dir), "key_fingerprint": self._key_fp},
        )

    async def close(self) -> None:
        """End still-open sessions, write and fsync everything, stop the writer."""
        if self._task is None:
            return
        self._closing = True
        for rec in list(self._sessions.values()):
            rec.end("gateway shutdown")
        self._wake()
        await self._task
        self._task = None
        executor, self._executor = self._executor, None
        if executor is not None:
            unwritten = sum(rec.backlog for rec in self._sessions.values())
            files = [rec._file for rec in self._sessions.values()]
            await asyncio.get_running_loop().run_in_executor(executor, _abandon, files)
            executor.shutdown(wait=True)
            if unwritten:
                log.error(
                    "ALERT: recorder closed with unwritten recording data",
                    extra={"bytes": unwritten, "sessions": len(self._sessions)},
                )
        self._sessions.clear()
        for waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def backlog(self) -> int:
        """Bytes recorded by all sessions and not yet on disk (the recording's lag)."""
        return sum(rec.backlog for rec in self._sessions.values())

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature with the recording key (checkpoint and end frames)."""
        assert self._key is not None, "recorder not started"
        return self._key.sign(message)

    @property
    def key_fingerprint(self) -> str:
        return self._key_fp

    def open_session(self, info: SessionStartInfo) -> SessionRecording:
        if self._task is None or self._closing:
            raise RecordingUnavailable("the recorder is not running")
        if not SESSION_ID_RE.fullmatch(info.session_id):
            raise ValueError(f"session id {info.session_id!r} is not URL-safe")
        if info.session_id in self._sessions:
            raise ValueError(f"session {info.session_id!r} is already being recorded")
        if not self._healthy:
            if self.on_failure == "refuse":
                raise RecordingUnavailable(f"recording is failing: {self._last_error}")
            log.error(
                "ALERT: session proceeds while recording is failing; its frames are held "
                "in memory until the disk recovers",
                extra={"session_id": info.session_id, "error": self._last_error},
            )
        rec = SessionRecording(
            self, SessionFile(self.session_dir, info.session_id), info, self._key_fp
        )
        self._sessions[info.session_id] = rec
        return rec

    async def flush(self) -> None:
        """Checkpoint, write and fsync everything recorded so far (tests, shutdown)."""
        if self._task is None:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(waiter)
        self._wake()
        await waiter

    # -- the writer ---------------------------------------------------------------------

    def _wake(self) -> None:
        self._wake_event.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.fsync_interval
        closing_passes = 0
        while True:
            if not self._closing and not self._flush_waiters:
                try:
                    async with asyncio.timeout_at(next_tick):
                        await self._wake_event.wait()
                except TimeoutError:
                    pass
            self._wake_event.clear()
            waiters, self._flush_waiters = self._flush_waiters, []
            tick = bool(waiters) or self._closing or loop.time() >= next_tick
            if tick:
                next_tick = loop.time() + self.fsync_interval
            elif not self._healthy:
                continue  # while failing, retry on ticks only: no retry storm
            try:
                ok = await self._pass(tick)
            except Exception:  # a bug here must not silently stop all recording
                log.exception("ALERT: recording writer pass failed")
                self._healthy = False
                self._last_error = "internal error in the recording writer"
                ok = False
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if self._closing:
                if ok and not self._sessions:
                    return
                # Another pass: end frames that arrived during this one, or a retry.
                closing_passes += 1
                if closing_passes > CLOSE_RETRIES:
                    return
                if not ok:
                    await asyncio.sleep(self.fsync_interval)

    async def _pass(self, tick: bool) -> bool:
        """One batch: checkpoint (on ticks), seal, write. Returns True if all went well."""
        assert self._executor is not None and self._key is not None
        now = time.time()
        batch: _Batch = []
        members: list[SessionRecording] = []
        for rec in self._sessions.values():
            if tick:
                rec._checkpoint(now)
            if rec.pending or rec._outstanding or rec.ended:
                batch.append((rec._file, rec._take(), rec.ended))
                members.append(rec)
        if not batch:
            if tick and not self._healthy:
                await self._reprobe()
            return True
        started = time.monotonic()
        handed = sum(rec._outstanding for rec in members)  # includes earlier failed writes
        results = await asyncio.get_running_loop().run_in_executor(
            self._executor, _write_batch, batch, tick, self.session_dir
        )
        self.last_pass_seconds = time.monotonic() - started
        self.written_bytes += handed - sum(r.outstanding for r in results)
        ok = True
        for rec, result in zip(members, results, strict=True):
            rec._written(result.outstanding)
            if result.error is not None:
                ok = False
                self._set_unhealthy(result.error, str(rec._file.path))
            elif result.closed:
                self._sessions.pop(rec.session_id, None)
        if ok and not self._healthy and not any(r.backlog for r in self._sessions.values()):
            self._healthy = True
            self._last_error = None
            log.warning("recording recovered: all pending frames written")
        return ok

    async def _reprobe(self) -> None:
        """Unhealthy with nothing pending: find out whether the directory works again."""
        assert self._executor is not None
        problem = await asyncio.get_running_loop().run_in_executor(
            self._executor, probe_directory, self.session_dir
        )
        if problem is None:
            self._healthy = True
            self._last_error = None
            log.warning("recording recovered: the session directory is writable again")
        else:
            self._set_unhealthy(problem, str(self.session_dir))

    def _set_unhealthy(self, error: OSError, path: str) -> None:
        message = _describe(error)
        if self._healthy or message != self._last_error:
            log.error(
                "ALERT: cannot write session recordings; data kept in memory and retried",
                extra={"path": path, "error": message, "on_failure": self.on_failure},
            )
        self._healthy = False
        self._last_error = message


def _describe(error: OSError) -> str:
    name = errno.errorcode.get(error.errno, str(error.errno)) if error.errno else None
    return f"{name}: {error.strerror}" if name else str(error)


def _write_batch(batch: _Batch, fsync: bool, directory: Path) -> list[WriteResult]:
    """Runs on the writer thread: syscalls only."""
    results = [f.write(data, fsync=fsync, close=end) for f, data, end in batch]
    if any(r.created for r in results):
        problem = fsync_directory(directory)
        if problem is not None:
            for r in results:
                if r.created and r.error is None:
                    r.error = problem
    return results


def _abandon(files: list[SessionFile]) -> None:
    for f in files:
        f.abandon()
