"""Event-loop side of one session's recording: encode frames into a buffer and return.

Hot-path rules (ARCHITECTURE.md): the driver calls this per statement and per
forwarded chunk of rows, never per row. Each call builds one Struct, encodes it
straight into the session's ``bytearray`` (``Encoder.encode_into``: one copy of the
row bytes, no intermediate ``bytes``) with its ``prev`` chain hash already in place,
and hashes it (checkpoint and end frames are also signed here). No logging or I/O
happens here; the writer thread only writes and fsyncs (see ``sink.py``).

Why seal here rather than on the writer thread: per frame, the Python work of
sealing holds the GIL, and a thread doing it competes with the event loop for
the GIL on every statement (measured: the GIL hand-offs cost more than the work).
SHA-256 of a small frame costs well under a microsecond; large rows frames are
bounded by ``record_rows`` per statement.

Flow control: when the bytes not yet on disk exceed ``max_buffer`` the session calls
its ``pause()`` callback (the driver stops reading upstream); the writer calls
``resume()`` once the backlog drops to half of it. Data is never dropped.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast

from .schema import (
    ENCODER,
    HEADER_HASH,
    LENGTH,
    SIGNATURE_SIZE,
    ZERO_SIGNATURE,
    Ckpt,
    ColumnInfo,
    Ctl,
    Done,
    End,
    Error,
    Frame,
    Meta,
    Rows,
    Start,
    Stmt,
    signed_message,
)

if TYPE_CHECKING:
    from .recorder import Recorder
    from .sink import SessionFile

log = logging.getLogger("gateway.recording")

_encode_into = ENCODER.encode_into
_sha256 = hashlib.sha256
_COPY_TO_HASH: Final = 4096
_pack_length = LENGTH.pack_into
_LENGTH_PLACEHOLDER: Final = bytes(LENGTH.size)
# Wake the writer early once this much is buffered, rather than at the next tick.
WAKE_BYTES: Final = 256 * 1024
# Session ids become file names: URL-safe characters only, so no path tricks.
SESSION_ID_RE: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")


@dataclass(frozen=True, slots=True)
class SessionStartInfo:
    session_id: str
    subject: str
    groups: tuple[str, ...]
    token_id: str | None
    token_expires_at: float | None
    target: str
    protocol: str
    client_address: str
    tls: dict[str, str]
    gateway_version: str
    policy_digest: str
    upstream_user: str
    started_at: float


class SessionRecording:
    """Recording of one session. Create through ``Recorder.open_session``."""

    __slots__ = (
        "_buf",
        "_bytes",
        "_denied",
        "_dirty",
        "_ended",
        "_file",
        "_last_hash",
        "_max_buffer",
        "_outstanding",
        "_pause",
        "_paused",
        "_recorder",
        "_resume",
        "_rows",
        "_seq",
        "_sign",
        "_stmt",
        "_warned_after_end",
        "session_id",
    )

    def __init__(
        self, recorder: Recorder, file: SessionFile, info: SessionStartInfo, key_fp: str
    ) -> None:
        self._recorder = recorder
        self._file = file
        # The first frame chains from the file header's hash.
        self._last_hash = HEADER_HASH
        self._sign = recorder.sign
        self._max_buffer = recorder.max_buffer
        self.session_id = info.session_id
        self._buf = bytearray()
        self._seq = 0
        self._stmt = 0
        self._rows = 0
        self._bytes = 0
        self._denied = 0
        self._outstanding = 0  # handed to the writer, not yet on disk
        self._pause: Callable[[], None] | None = None
        self._resume: Callable[[], None] | None = None
        self._paused = False
        self._dirty = False  # frames since the last checkpoint
        self._ended = False
        self._warned_after_end = False
        # No token, no password: the driver never passes them and Start has no
        # field that could hold them (tests assert both).
        self._append(
            Start(
                seq=0,
                prev=self._last_hash,
                session_id=info.session_id,
                subject=info.subject,
                groups=list(info.groups),
                token_id=info.token_id,
                token_expires_at=info.token_expires_at,
                target=info.target,
                protocol=info.protocol,
                client_address=info.client_address,
                tls=dict(info.tls),
                gateway_version=info.gateway_version,
                policy_digest=info.policy_digest,
                upstream_user=info.upstream_user,
                started_at=info.started_at,
                key_fp=key_fp,
            )
        )

    # -- the driver's API -------------------------------------------------------------

    def set_flow_control(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._pause = pause
        self._resume = resume
        if self.backlog > self._max_buffer:
            self._paused = True
            pause()

    def statement(
        self,
        *,
        text: str,
        path: str,
        statement_name: str | None = None,
        parameters: Sequence[str | bytes | None] | None = None,
        decision: str = "allow",
        rule: str | None = None,
    ) -> int:
        """Record a statement about to run (or denied); returns its number (1, 2, ...)."""
        self._stmt += 1
        if decision == "deny":
            self._denied += 1
        if self._ended:
            self._after_end()
            return self._stmt
        self._append(
            Stmt(
                seq=self._seq,
                prev=self._last_hash,
                stmt=self._stmt,
                at=time.time(),
                text=text,
                path=path,
                name=statement_name,
                params=list(parameters) if parameters is not None else None,
                decision=decision,
                rule=rule,
            )
        )
        return self._stmt

    def result_metadata(self, stmt: int, columns: Sequence[ColumnInfo]) -> None:
        if self._ended:
            self._after_end()
            return
        self._append(Meta(seq=self._seq, prev=self._last_hash, stmt=stmt, columns=list(columns)))

    def rows(self, stmt: int, encoding: str, data: bytes | memoryview, count: int) -> None:
        """Rows exactly as forwarded to the client; ``data`` is copied before returning."""
        if self._ended:
            self._after_end()
            return
        # msgspec encodes a memoryview as msgpack bin, copying it into our buffer now,
        # so the caller may reuse its buffer as soon as we return.
        self._append(
            Rows(
                seq=self._seq,
                prev=self._last_hash,
                stmt=stmt,
                enc=encoding,
                count=count,
                data=cast(bytes, data),
            )
        )

    def complete(
        self,
        stmt: int,
        *,
        tag: str | None,
        rows: int,
        rows_recorded: int,
        bytes_to_client: int,
        duration: float,
        error: tuple[str, str] | None = None,
    ) -> None:
        self._rows += rows
        self._bytes += bytes_to_client
        if self._ended:
            self._after_end()
            return
        self._append(
            Done(
                seq=self._seq,
                prev=self._last_hash,
                stmt=stmt,
                command_tag=tag,
                rows=rows,
                rows_recorded=rows_recorded,
                bytes_to_client=bytes_to_client,
                duration=duration,
                error=Error(error[0], error[1]) if error is not None else None,
            )
        )

    def control(self, kind: str, detail: Mapping[str, str]) -> None:
        if self._ended:
            self._after_end()
            return
        self._append(
            Ctl(seq=self._seq, prev=self._last_hash, at=time.time(), kind=kind, detail=dict(detail))
        )

    def end(self, reason: str) -> None:
        """Write the totals and the signed end frame. Idempotent."""
        if self._ended:
            return
        self._append(
            End(
                seq=self._seq,
                prev=self._last_hash,
                reason=reason,
                statements=self._stmt,
                rows=self._rows,
                bytes_to_client=self._bytes,
                denied=self._denied,
                ended_at=time.time(),
                sig=ZERO_SIGNATURE,
            )
        )
        self._ended = True
        self._recorder._wake()

    # -- state read by the recorder ------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def backlog(self) -> int:
        """Bytes recorded but not yet on disk."""
        return len(self._buf) + self._outstanding

    # -- internals ---------------------------------------------------------------------

    def _append(self, frame: Frame) -> None:
        buf = self._buf
        start = len(buf)
        buf += _LENGTH_PLACEHOLDER
        _encode_into(frame, buf, -1)
        stop = len(buf)
        _pack_length(buf, start, stop - start - 4)
        if isinstance(frame, (Ckpt, End)):
            # The signature covers the payload with its prev hash, minus the
            # signature's own 64 bytes (same size: no resize of the buffer).
            payload = bytes(buf[start + 4 : stop])
            buf[stop - SIGNATURE_SIZE : stop] = self._sign(signed_message(payload))
        if stop - start <= _COPY_TO_HASH:
            # Copying a small frame is cheaper than exporting a memoryview.
            self._last_hash = _sha256(buf[start:stop]).digest()
        else:
            with memoryview(buf) as view:
                self._last_hash = _sha256(view[start:stop]).digest()
        self._seq += 1
        self._dirty = True
        size = len(buf)
        if size + self._outstanding > self._max_buffer:
            if not self._paused and self._pause is not None:
                self._paused = True
                self._pause()
            self._recorder._wake()
        elif size >= WAKE_BYTES:
            self._recorder._wake()

    def _after_end(self) -> None:
        if not self._warned_after_end:
            self._warned_after_end = True
            log.warning(
                "recording call after the session's end frame ignored",
                extra={"session_id": self.session_id},
            )

    def _checkpoint(self, now: float) -> None:
        """Append a signed checkpoint if frames were added since the last one."""
        if self._dirty and not self._ended:
            self._append(Ckpt(seq=self._seq, prev=self._last_hash, at=now, sig=ZERO_SIGNATURE))
            self._dirty = False

    def _take(self) -> bytearray:
        """Hand the buffered frames to the writer (which owns them from now on)."""
        data = self._buf
        self._buf = bytearray()
        self._outstanding += len(data)
        return data

    def _written(self, outstanding: int) -> None:
        """The writer reports what is still not on disk; resume reading if drained."""
        self._outstanding = outstanding
        if self._paused and self.backlog <= self._max_buffer // 2:
            self._paused = False
            resume = self._resume
            if resume is not None:
                try:
                    resume()
                except Exception:  # never let a driver bug kill the writer task
                    log.exception("resume callback failed", extra={"session_id": self.session_id})
