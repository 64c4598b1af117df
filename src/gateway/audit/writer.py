"""The audit log writer: JSON lines, buffered in memory, written off the event loop.

Rules this module keeps:

* ``write(line)`` only appends encoded bytes to a list: no system call on the caller's
  path. A background task hands the buffer to a worker thread every ``flush_interval``,
  or at once when it passes ``flush_bytes``.
* Lines are written whole, in order, by one thread at a time, with ``O_APPEND`` so
  several writers (or ``tee``) never interleave inside a line.
* ``reopen()`` (SIGHUP; rotation with ``mv`` + signal) makes the next flush close the old
  descriptor and open the path again, creating a new file if the old one was renamed.
* When the buffer passes ``max_buffer`` (the disk is stuck) new lines are counted and
  dropped rather than growing memory without bound; the count is logged and exported
  as a metric. The audit log is a convenience copy for SIEM pipelines: the tamper-evident
  record of a session is its recording, which has its own back-pressure.
* A failing write (disk full, file or directory gone) never reaches a session and never
  raises: what was not written goes back to the head of the buffer and is retried at the
  next flush, in order (so ``max_buffer`` bounds it too); ``healthy`` is False and one
  error is logged until a write succeeds again. Deliberately fail-open (docs/audit-log.md):
  the recording, which fails closed, is the record of truth.
* Destination "-" is the process's standard output (containers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from typing import Final

log = logging.getLogger("gateway.audit")

DEFAULT_FLUSH_INTERVAL: Final = 1.0
DEFAULT_FLUSH_BYTES: Final = 256 * 1024
DEFAULT_MAX_BUFFER: Final = 64 * 1024 * 1024


class AuditWriter:
    def __init__(
        self,
        path: str,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self.flush_bytes = flush_bytes
        self.max_buffer = max_buffer
        self._buf: list[bytes] = []
        self._size = 0
        self._fd: int | None = None
        self._reopen = False
        self._lock = threading.Lock()  # one writing thread at a time, in order
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self.dropped = 0
        self._dropped_logged = 0
        self.written_lines = 0
        self.errors = 0
        self.healthy = True  # False while writes fail (a metric; see the module docstring)

    # -- the caller's side ------------------------------------------------------------------

    def write(self, line: bytes) -> None:
        """Queue one encoded line (with its newline). Never blocks."""
        if self._size >= self.max_buffer:
            self.dropped += 1
            return
        self._buf.append(line)
        self._size += len(line)
        if self._size >= self.flush_bytes and self._wake is not None:
            self._wake.set()

    def write_lines(self, lines: list[bytes]) -> None:
        """``write`` for each of ``lines``, in order."""
        size = self._size + sum(map(len, lines))
        if size >= self.max_buffer:  # some may not fit: one by one, as ``write`` drops
            for line in lines:
                self.write(line)
            return
        self._buf.extend(lines)
        self._size = size
        if size >= self.flush_bytes and self._wake is not None:
            self._wake.set()

    def reopen(self) -> None:
        """Open the path again at the next flush (log rotation); safe from a signal handler
        installed with ``loop.add_signal_handler``."""
        self._reopen = True
        if self._wake is not None:
            self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        # Open once now so a bad path fails the start, not the first flush.
        await asyncio.to_thread(self._open)
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")

    async def flush(self) -> None:
        """Write everything queued so far (tests, shutdown). Never raises: what could not
        be written is queued again, first."""
        buf, self._buf, self._size = self._buf, [], 0
        if not buf and not self._reopen:
            return
        rest, exc = await asyncio.to_thread(self._write, buf)
        if exc is None:
            if not self.healthy:
                self.healthy = True
                log.warning("audit log writable again", extra={"path": self.path})
            return
        self.errors += 1
        if rest:
            self._buf.insert(0, rest)
            self._size += len(rest)
        if self.healthy:
            self.healthy = False
            log.error(
                "audit log write failed; lines are kept and retried (up to max_buffer)",
                extra={"path": self.path, "error": str(exc)},
            )

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._buf:
            log.error(
                "audit log lines lost at shutdown: the file cannot be written",
                extra={"path": self.path, "lines": sum(x.count(b"\n") for x in self._buf)},
            )
            self._buf, self._size = [], 0
        with self._lock:
            if self._fd is not None and self.path != "-":
                os.close(self._fd)
            self._fd = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # never let the writer die: count and try again next tick
                self.errors += 1
                log.exception("audit log write failed")
            if self.dropped != self._dropped_logged:  # once per change, not every tick
                self._dropped_logged = self.dropped
                log.warning("audit log lines dropped", extra={"dropped": self.dropped})

    # -- the worker thread's side ---------------------------------------------------------------

    def _open(self) -> None:
        with self._lock:
            self._open_locked()

    def _open_locked(self) -> None:
        if self.path == "-":
            self._fd = sys.stdout.fileno()
            return
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def _write(self, buf: list[bytes]) -> tuple[bytes, OSError | None]:
        """Write ``buf``; on failure (what was not written, the error)."""
        with self._lock:
            data = memoryview(b"".join(buf))
            try:
                if self._reopen:
                    self._reopen = False
                    if self._fd is not None and self.path != "-":
                        os.close(self._fd)
                    self._fd = None
                if self._fd is None:
                    self._open_locked()
                assert self._fd is not None
                while data:
                    n = os.write(self._fd, data)
                    data = data[n:]
            except OSError as exc:
                return bytes(data), exc
            self.written_lines += len(buf)
            return b"", None
