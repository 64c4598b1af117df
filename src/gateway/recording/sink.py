"""Writer-thread side of the recorder: write sealed frames and fsync them.

Frames arrive sealed (prev hashes and signatures filled in by the event loop, see
``session.py``); ``seal_frames`` below remains the reference implementation of
sealing a buffer of frames, used by tests and tools that build recordings.


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
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .schema import (
    FILE_SUFFIX,
    HASH_SIZE,
    HEADER,
    LENGTH,
    SIGNATURE_SIZE,
    FrameDecodeError,
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
    encoder appends them whole), so walking the length prefixes is exact. This is the
    writer thread's inner loop (one pass per frame, several frames per statement), so
    it indexes ``buf`` directly instead of slicing; the envelope layout it relies on is
    the one ``schema.parse_envelope_prefix`` documents, and it checks the bytes right
    before ``prev`` so a layout mismatch raises instead of corrupting a recording.
    """
    pos = 0
    n = len(buf)
    unpack_length = LENGTH.unpack_from
    sha256 = hashlib.sha256
    startswith = buf.startswith
    yield_every = _GIL_YIELD_FRAMES
    with memoryview(buf) as view:
        while pos < n:
            (length,) = unpack_length(buf, pos)
            start = pos + 4
            stop = start + length
            # map header: fixmap (1 byte) or map 16 (3 bytes); then "t" and a fixstr tag.
            at = start + (1 if buf[start] < 0x90 else 3)
            tag_length = buf[at + 2] - 0xA0
            tag_at = at + 3
            at = tag_at + tag_length + 4  # past the tag and the key "seq"
            seq_byte = buf[at]
            at += 1 if seq_byte < 0x80 else 1 + _UINT_SIZES[seq_byte]
            if not startswith(_PREV_KEY, at):
                tag, _ = parse_envelope_prefix(view[start:stop])  # raises, saying why
                raise FrameDecodeError(f"unexpected envelope layout in a {tag!r} frame")
            at += len(_PREV_KEY)
            view[at : at + HASH_SIZE] = last_hash
            if (tag_length == 4 and startswith(b"ckpt", tag_at)) or (
                tag_length == 3 and startswith(b"end", tag_at)
            ):
                view[stop - SIGNATURE_SIZE : stop] = sign(signed_message(view[start:stop]))
            last_hash = sha256(view[pos:stop]).digest()
            pos = stop
            yield_every -= 1
            if not yield_every:
                # Let the event loop take the GIL if it waits for it: small frames are
                # hashed while holding it, and the loop must not wait a whole switch
                # interval (5 ms) behind a batch. sched_yield releases the GIL for
                # ~0.5 us; time.sleep(0) would cost ~70 us here.
                os.sched_yield()
                yield_every = _GIL_YIELD_FRAMES
    return last_hash


_PREV_KEY: Final = b"\xa4prev\xc4\x20"
_UINT_SIZES: Final = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_GIL_YIELD_FRAMES: Final = 32


@dataclass(slots=True)
class WriteResult:
    outstanding: int  # sealed bytes still not on disk
    error: OSError | None = None
    closed: bool = False
    created: bool = False


class SessionFile:
    """One recording file. Owned by the writer thread."""

    __slots__ = ("closed", "fd", "needs_fsync", "path", "pending", "session_id")

    def __init__(self, directory: Path, session_id: str) -> None:
        self.session_id = session_id
        self.path = directory / (session_id + FILE_SUFFIX)
        self.fd: int | None = None
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

    def write(self, data: bytearray, *, fsync: bool, close: bool) -> WriteResult:
        """Append ``data`` (sealed frames, taking ownership) and write what is pending.

        Only syscalls happen here (os.write and fsync release the GIL), so this
        thread does not compete with the event loop.
        """
        if data:
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
