"""Writer-thread side of the recorder: seal frames (chain + signatures) and write them.

Everything here runs on the recorder's single writer thread, one batch at a time, so
a ``SessionFile`` is never touched by two threads at once and needs no lock. The
event loop only hands over buffers it no longer owns and reads back the numbers a
batch returns.

Why sealing happens here and not in the event loop: the chain hash covers every
byte of every frame. SHA-256 of a 64 KiB rows chunk costs ~40 us, about sixty times
the cost of copying it; hashlib releases the GIL for large inputs, so on this thread
the cost mostly leaves the event loop entirely. The event loop encodes frames with a
zero ``prev`` (and a zero ``sig``) and this thread fills them in, in file order.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .schema import (
    FILE_SUFFIX,
    HASH_SIZE,
    HEADER,
    HEADER_HASH,
    LENGTH,
    SIGNATURE_SIZE,
    SIGNED_TAGS,
    frame_hash,
    parse_envelope_prefix,
    signed_message,
)

Signer = Callable[[bytes], bytes]

# Indirection so tests can inject ENOSPC/EACCES without filling a disk (tests run
# as root, where permission bits do not stop writes).
_write: Callable[[int, memoryview], int] = os.write
_open: Callable[[str, int, int], int] = os.open
_fsync: Callable[[int], None] = os.fsync

_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
FILE_MODE: Final = 0o640


def seal_frames(buf: bytearray, last_hash: bytes, sign: Signer) -> bytes:
    """Fill in ``prev`` (and ``sig`` for ckpt/end) of the complete frames in ``buf``.

    Returns the chain hash of the last frame. ``buf`` holds whole frames only (the
    encoder appends them whole), so walking the length prefixes is exact.
    """
    pos = 0
    n = len(buf)
    with memoryview(buf) as view:
        while pos < n:
            (length,) = LENGTH.unpack_from(buf, pos)
            start = pos + LENGTH.size
            stop = start + length
            payload = view[start:stop]
            tag, prev_at = parse_envelope_prefix(payload)
            view[start + prev_at : start + prev_at + HASH_SIZE] = last_hash
            if tag in SIGNED_TAGS:
                view[stop - SIGNATURE_SIZE : stop] = sign(signed_message(payload))
            last_hash = frame_hash(view[pos:stop])
            payload.release()
            pos = stop
    return last_hash


@dataclass(slots=True)
class WriteResult:
    outstanding: int  # sealed bytes still not on disk
    error: OSError | None = None
    closed: bool = False
    created: bool = False


class SessionFile:
    """One recording file. Owned by the writer thread."""

    __slots__ = ("closed", "fd", "last_hash", "needs_fsync", "path", "pending", "session_id")

    def __init__(self, directory: Path, session_id: str) -> None:
        self.session_id = session_id
        self.path = directory / (session_id + FILE_SUFFIX)
        self.fd: int | None = None
        self.last_hash = HEADER_HASH
        # Sealed bytes not yet written; the header goes first, once the file exists.
        self.pending = bytearray(HEADER)
        self.needs_fsync = False
        self.closed = False

    def _create(self) -> None:
        # O_EXCL: a recording is evidence and is never overwritten. If the name is
        # taken (a session id reused across restarts), the file gets a suffix.
        base = self.path
        for attempt in range(1000):
            name = f"{self.session_id}~{attempt}{FILE_SUFFIX}"
            path = base if attempt == 0 else base.with_name(name)
            try:
                self.fd = _open(str(path), _OPEN_FLAGS, FILE_MODE)
            except FileExistsError:
                continue
            except FileNotFoundError:
                # The directory was missing at start (continue mode) or removed since.
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self.fd = _open(str(path), _OPEN_FLAGS, FILE_MODE)
            self.path = path
            return
        raise OSError(errno.EEXIST, "no free file name for session", str(base))

    def write(self, data: bytearray, *, sign: Signer, fsync: bool, close: bool) -> WriteResult:
        """Seal ``data`` (taking ownership), append it, write what is pending."""
        if data:
            self.last_hash = seal_frames(data, self.last_hash, sign)
            if self.pending:
                self.pending += data
            else:
                self.pending = data  # the common case: no copy
        created = False
        try:
            if self.fd is None:
                self._create()
                created = True
            fd = self.fd
            assert fd is not None
            pending = self.pending
            while pending:
                with memoryview(pending) as view:
                    written = _write(fd, view)
                del pending[:written]
                self.needs_fsync = True
            if self.needs_fsync and (fsync or close):
                _fsync(fd)
                self.needs_fsync = False
            if close:
                os.close(fd)
                self.fd = None
                self.closed = True
        except OSError as exc:
            return WriteResult(len(self.pending), exc, created=created)
        return WriteResult(len(self.pending), None, closed=self.closed, created=created)

    def abandon(self) -> None:
        """Close the descriptor without further writes (shutdown after failures)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def fsync_directory(directory: Path) -> OSError | None:
    """Make new directory entries durable (a new file is not, until its directory is)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return exc
    return None


def probe_directory(directory: Path) -> OSError | None:
    """Create the directory if needed and prove a file can be written and synced."""
    probe = directory / f".gwrec-probe-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = _open(str(probe), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with memoryview(HEADER) as view:
                _write(fd, view)
            _fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return exc
    return None
