"""Streaming reader for recording files: one frame in memory at a time.

``RecordingReader`` walks a file frame by frame (constant memory whatever the file
size). How the walk ended is kept in ``truncation``: ``None`` for a clean end at a
frame boundary, otherwise where and how the last frame was cut. ``skip_tags`` lets a
caller (``gateway sessions list``) seek over frames it does not need, such as rows,
after reading only their first bytes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final

from .schema import (
    HEADER_SIZE,
    LENGTH,
    MAX_FRAME_SIZE,
    Done,
    Execs,
    FrameDecodeError,
    KnownFrame,
    Meta,
    Rows,
    Stmt,
    UnknownFrame,
    decode_frame,
    parse_envelope_prefix,
    parse_header,
    split_exec,
)

_PEEK: Final = 64  # enough for the envelope prefix (t, seq, prev) of any frame
_READ_BUFFER: Final = 1 << 20


class RecordingFormatError(Exception):
    """The file is not a readable recording (bad header, impossible frame length)."""

    def __init__(self, message: str, *, index: int | None = None, offset: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Truncation:
    index: int  # the incomplete frame
    offset: int  # where it starts
    declared: int | None  # its declared payload length, None if the prefix itself is cut
    present: int  # bytes of it present in the file (prefix included)

    def describe(self) -> str:
        if self.declared is None:
            return (
                f"truncated inside frame {self.index} at offset {self.offset}: "
                f"only {self.present} of the 4 length bytes present"
            )
        return (
            f"truncated inside frame {self.index} at offset {self.offset}: "
            f"{self.declared + LENGTH.size} bytes declared, {self.present} present"
        )


@dataclass(slots=True)
class RawFrame:
    index: int
    offset: int
    size: int  # length prefix + payload
    prefix: bytes  # the 4 length bytes
    payload: bytes | None  # None when skipped
    tag: str | None = None  # known only when peeked for skipping


class RecordingReader:
    """Use as a context manager; iterate ``raw_frames()`` or ``frames()`` once."""

    def __init__(self, path: Path | str, *, skip_tags: frozenset[str] = frozenset()) -> None:
        self.path = Path(path)
        self.skip_tags = skip_tags
        self._file: BinaryIO = open(self.path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115
        self.file_size = self._read_size()
        self.header = b""
        self.truncation: Truncation | None = None
        self.bytes_read = 0

    def _read_size(self) -> int:
        self._file.seek(0, io.SEEK_END)
        size = self._file.tell()
        self._file.seek(0)
        return size

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def read_header(self) -> bytes:
        if not self.header:
            header = self._file.read(HEADER_SIZE)
            try:
                parse_header(header)
            except FrameDecodeError as exc:
                raise RecordingFormatError(str(exc), offset=0) from None
            self.header = header
            self.bytes_read = HEADER_SIZE
        return self.header

    def raw_frames(self) -> Iterator[RawFrame]:
        self.read_header()
        f = self._file
        offset = HEADER_SIZE
        index = 0
        skip = self.skip_tags
        while True:
            prefix = f.read(LENGTH.size)
            if not prefix:
                return
            if len(prefix) < LENGTH.size:
                self.truncation = Truncation(index, offset, None, len(prefix))
                return
            (length,) = LENGTH.unpack(prefix)
            if length > MAX_FRAME_SIZE:
                raise RecordingFormatError(
                    f"frame {index} at offset {offset} declares an impossible length {length}",
                    index=index,
                    offset=offset,
                )
            available = self.file_size - offset - LENGTH.size
            if length > available:
                self.truncation = Truncation(index, offset, length, max(available, 0) + 4)
                return
            tag: str | None = None
            payload: bytes | None
            if skip and length > _PEEK:
                head = f.read(_PEEK)
                try:
                    tag, _ = parse_envelope_prefix(head)
                except FrameDecodeError:
                    tag = None
                if tag in skip:
                    f.seek(length - _PEEK, io.SEEK_CUR)
                    payload = None
                else:
                    payload = head + f.read(length - _PEEK)
            else:
                payload = f.read(length)
            size = LENGTH.size + length
            self.bytes_read = offset + size
            yield RawFrame(index, offset, size, prefix, payload, tag)
            offset += size
            index += 1

    def frames(self) -> Iterator[tuple[RawFrame, KnownFrame | UnknownFrame | None]]:
        """Decoded frames; ``None`` for a skipped frame. Malformed frames raise."""
        for raw in self.raw_frames():
            if raw.payload is None:
                yield raw, None
                continue
            try:
                yield raw, decode_frame(raw.payload)
            except FrameDecodeError as exc:
                raise RecordingFormatError(
                    f"frame {raw.index} at offset {raw.offset}: {exc}",
                    index=raw.index,
                    offset=raw.offset,
                ) from None

    def logical_frames(
        self,
    ) -> Iterator[tuple[RawFrame, KnownFrame | Stmt | Meta | Rows | Done | UnknownFrame | None]]:
        """Like ``frames()``, with each ``execs`` batch read as the stmt, meta, rows and
        done frames of its statements (they all carry the batch's raw frame)."""
        for raw, frame in self.frames():
            if isinstance(frame, Execs):
                for item in frame.items:
                    for part in split_exec(frame, item):
                        yield raw, part
            else:
                yield raw, frame
