"""Event-loop side of one session's recording: encode frames into a buffer and return.

Hot-path rules (ARCHITECTURE.md): the driver calls this per statement and per
forwarded chunk of rows, never per row. A statement that completes between two
writer ticks becomes an item of one ``execs`` frame (see ``Statement``); each frame is one
Struct, encoded straight into the session's ``bytearray`` (``Encoder.encode_into``:
one copy of the row bytes, no intermediate ``bytes``) with its ``prev`` chain hash
already in place, and hashed (checkpoint and end frames are also signed here). No logging or I/O
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import msgspec

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
    Exec,
    Execs,
    Frame,
    Meta,
    Rows,
    Start,
    signed_message,
    stmt_frame,
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
# What a running statement may hold back for its ``execs`` item (text, parameters,
# columns and one chunk of rows, by encoded size); more opens the statement (separate
# frames, which long texts and wide results amortise). It bounds every item's size.
HOLD_BYTES: Final = 16 * 1024
# Completed statements are sealed into one ``execs`` frame at the latest when their
# estimated size reaches this (else when the writer collects the session's buffer).
BATCH_BYTES: Final = 64 * 1024
_ITEM_OVERHEAD: Final = 160  # msgpack keys and fixed fields of one Exec, roughly
_COLUMN_SIZES: Final = 256
_ENCODE: Final = ENCODER.encode
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


def _text_size(text: str, parameters: list[str | bytes | None] | None) -> int:
    """What a statement's text and parameters count towards HOLD_BYTES."""
    size = len(text)
    if parameters:
        for value in parameters:
            if value is not None:
                size += len(value)
    return size


class Statement(msgspec.Struct, gc=False):
    """One statement's recording from start to completion; the driver holds it.

    A statement reaches the file in one of two ways. Normally it is held in memory
    (with its column metadata and up to one chunk of rows, at most ``HOLD_BYTES``) and
    written as an item of an ``execs`` frame when it completes: one encode and one hash
    per batch, not four frames per statement. It is *opened* instead, written as ``stmt``
    (+ ``meta``, ``rows`` held so far) with its later rows and ``done`` as frames of
    their own, when it is still running at a writer tick (so a long statement is on disk
    while it runs), when a control event or the session end is recorded while it
    runs, when what is held back would pass
    ``HOLD_BYTES`` (a long text, big parameters, very wide metadata, a big or second
    chunk of rows), or when a second result starts (a multi-statement Query).

    A Struct with ``gc=False`` (never written to disk itself): one is made per
    statement on the hot path, and objects the cyclic collector does not track make its
    collections cheaper; it holds no reference cycles.
    """

    stmt: int  # number within the session, from 1
    at: float
    text: str
    path: str
    name: str | None
    params: list[Any] | None
    decision: str
    rule: str | None
    columns: list[ColumnInfo] | None = None
    enc: str | None = None
    data: bytes | None = None
    count: int = 0
    opened: bool = False
    # The driver's bookkeeping for the completion: start on the monotonic clock,
    # rows recorded so far, whether the result was described.
    started: float = 0.0
    recorded: int = 0
    described: bool = False
    # Encoded size held back so far (text, parameters, columns, rows), near enough.
    size: int = 0


class SessionRecording:
    """Recording of one session. Create through ``Recorder.open_session``."""

    __slots__ = (
        "_batch",
        "_batch_bytes",
        "_buf",
        "_bytes",
        "_column_sizes",
        "_denied",
        "_dirty",
        "_ended",
        "_file",
        "_flush_hook",
        "_last_hash",
        "_max_buffer",
        "_outstanding",
        "_pause",
        "_paused",
        "_recorder",
        "_resume",
        "_rows",
        "_running",
        "_running_hook",
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
        # Encoded sizes of the column lists seen, by id (see _encoded_size).
        self._column_sizes: dict[int, tuple[list[ColumnInfo], int]] = {}
        # Completed statements not yet sealed into an ``execs`` frame.
        self._batch: list[Exec] = []
        self._batch_bytes = 0
        # Statements started but not complete and not yet written, by number.
        self._running: dict[int, Statement] = {}
        # The driver's (see ``set_driver_hooks``).
        self._flush_hook: Callable[[], None] | None = None
        self._running_hook: Callable[[], None] | None = None
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

    def set_driver_hooks(self, flush: Callable[[], None], running: Callable[[], None]) -> None:
        """For a driver that records statements lazily (``number``, ``executed``) and
        reports finished ones in batches: ``flush`` is called before a frame other than
        the ``execs`` batch is written (so what finished earlier comes first); ``running``
        before the running statements are opened (a writer tick, a control event, the
        end), to register those it still holds with ``statement``."""
        self._flush_hook = flush
        self._running_hook = running

    def number(self) -> int:
        """Number a statement that arrives, to record it later: ``executed`` once it
        completed, or ``statement(..., stmt=n)`` if it must be written while it runs."""
        self._stmt += 1
        return self._stmt

    def statement(
        self,
        text: str,
        path: str,
        statement_name: str | None = None,
        parameters: list[str | bytes | None] | None = None,
        decision: str = "allow",
        rule: str | None = None,
        *,
        stmt: int = 0,
        at: float = 0.0,
        started: float = 0.0,
    ) -> Statement:
        """A statement about to run (or denied): its handle for the calls below.

        ``stmt``, ``at`` and ``started`` (monotonic) are given for a statement numbered
        earlier (``number``) and registered late. Nothing is written yet: see
        ``Statement`` for when it reaches the file.
        """
        if not stmt:
            self._stmt += 1
            stmt = self._stmt
        if decision == "deny":
            self._denied += 1
        st = Statement(
            stmt,
            at or time.time(),
            text,
            path,
            statement_name,
            parameters,
            decision,
            rule,
            started=started or time.monotonic(),
        )
        if self._ended:
            self._after_end()
            st.opened = True  # nothing more is written for it
            return st
        self._running[st.stmt] = st
        size = _text_size(text, parameters)
        st.size = size
        if size > HOLD_BYTES:
            self._open(st)  # a long text or big parameters go to the file at once
        return st

    def refused(
        self, text: str, path: str, name: str | None, rule: str | None, error: tuple[str, str]
    ) -> None:
        """A statement the policy refused: it never reached the server, so it is
        recorded whole at once (statement and completion with the client's error)."""
        st = self.statement(text, path, name, None, "deny", rule)
        self.complete(st, None, 0, 0, 0, 0.0, error)

    def result_metadata(self, st: Statement, columns: list[ColumnInfo]) -> None:
        if st.opened:
            if self._ended:
                self._after_end()
                return
            self._append(
                Meta(seq=self._seq, prev=self._last_hash, stmt=st.stmt, columns=list(columns))
            )
        elif st.columns is None and st.data is None:
            size = st.size + self._encoded_size(columns)
            if size <= HOLD_BYTES:
                # Not copied: callers pass lists they never mutate (cached per statement).
                st.columns = columns
                st.size = size
            else:  # very wide metadata: written at once
                self._open(st)
                self.result_metadata(st, columns)
        else:  # a second result (a multi-statement Query): from now on, separate frames
            self._open(st)
            self.result_metadata(st, columns)

    def rows(self, st: Statement, encoding: str, data: bytes | memoryview, count: int) -> None:
        """Rows exactly as forwarded to the client; ``data`` is copied before returning."""
        if not st.opened:
            if st.data is None and st.size + len(data) <= HOLD_BYTES:
                # Held until the statement completes (copied: the caller's buffer
                # may be reused); a second chunk, or one that does not fit in what is
                # held back per statement, opens the statement.
                st.enc = encoding
                st.data = data if type(data) is bytes else bytes(data)
                st.count = count
                st.size += len(data)
                return
            self._open(st)
        if self._ended:
            self._after_end()
            return
        # msgspec encodes a memoryview as msgpack bin, copying it into our buffer now,
        # so the caller may reuse its buffer as soon as we return.
        self._append(
            Rows(
                seq=self._seq,
                prev=self._last_hash,
                stmt=st.stmt,
                enc=encoding,
                count=count,
                data=cast(bytes, data),
            )
        )

    def complete(
        self,
        st: Statement,
        tag: str | None,
        rows: int,
        rows_recorded: int,
        bytes_to_client: int,
        duration: float,
        error: tuple[str, str] | None = None,
    ) -> None:
        self._rows += rows
        self._bytes += bytes_to_client
        err = Error(error[0], error[1]) if error is not None else None
        if st.opened:
            if self._ended:
                self._after_end()
                return
            self._append(
                Done(
                    seq=self._seq,
                    prev=self._last_hash,
                    stmt=st.stmt,
                    command_tag=tag,
                    rows=rows,
                    rows_recorded=rows_recorded,
                    bytes_to_client=bytes_to_client,
                    duration=duration,
                    error=err,
                )
            )
            return
        del self._running[st.stmt]
        st.opened = True
        item = Exec(
            st.stmt,
            st.at,
            st.text,
            st.path,
            st.name,
            st.params,
            st.decision,
            st.rule,
            st.columns,
            st.enc,
            st.count,
            st.data,
            tag,
            rows,
            rows_recorded,
            bytes_to_client,
            duration,
            err,
        )
        self._add_item(item, st.size)

    def executed(
        self,
        stmt: int,
        at: float,
        text: str,
        path: str,
        name: str | None,
        params: list[str | bytes | None] | None,
        rule: str | None,
        columns: list[ColumnInfo] | None,
        enc: str | None,
        data: bytes | None,
        count: int,
        tag: str | None,
        rows: int,
        bytes_to_client: int,
        duration: float,
        error: tuple[str, str] | None = None,
    ) -> None:
        """An allowed statement recorded only once it completed: numbered (``number``)
        when it arrived at ``at``, with its columns and its one chunk of recorded rows
        (``count`` of them).

        The cheap path for the common statement: one ``execs`` item and no ``Statement``
        handle. What does not fit in an item (more than ``HOLD_BYTES``) is written as
        the separate frames ``statement`` ... ``complete`` would write.
        """
        size = _text_size(text, params)
        if columns is not None:
            size += self._encoded_size(columns)
        if data is not None:
            size += len(data)
        if size > HOLD_BYTES or self._ended:
            st = self.statement(text, path, name, params, "allow", rule, stmt=stmt, at=at)
            if columns is not None:
                self.result_metadata(st, columns)
            if data is not None and enc is not None:
                self.rows(st, enc, data, count)
            self.complete(st, tag, rows, count, bytes_to_client, duration, error)
            return
        self._rows += rows
        self._bytes += bytes_to_client
        item = Exec(
            stmt,
            at,
            text,
            path,
            name,
            params,
            "allow",
            rule,
            columns,
            enc,
            count,
            data,
            tag,
            rows,
            count,
            bytes_to_client,
            duration,
            Error(error[0], error[1]) if error is not None else None,
        )
        self._add_item(item, size)

    def _add_item(self, item: Exec, size: int) -> None:
        """One completed statement into the pending ``execs`` batch. ``size`` is its
        encoded size, near enough (text, parameters, columns and rows are counted; each is
        bounded by HOLD_BYTES): flow control and the batch cap rely on it."""
        self._batch.append(item)
        self._batch_bytes += _ITEM_OVERHEAD + size
        if self._batch_bytes >= BATCH_BYTES:
            self._seal_batch()

    def control(self, kind: str, detail: Mapping[str, str]) -> None:
        if self._ended:
            self._after_end()
            return
        # A control event (a cancel, say) follows the statements it concerns.
        self._open_running()
        self._append(
            Ctl(seq=self._seq, prev=self._last_hash, at=time.time(), kind=kind, detail=dict(detail))
        )

    def end(self, reason: str) -> None:
        """Write the totals and the signed end frame. Idempotent."""
        if self._ended:
            return
        # Statements that never completed (client gone mid-result) are still recorded.
        self._open_running()
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
        return len(self._buf) + self._batch_bytes + self._outstanding

    @property
    def pending(self) -> bool:
        """Something is waiting to be handed to the writer."""
        return bool(self._buf or self._batch)

    # -- internals ---------------------------------------------------------------------

    def _append(self, frame: Frame) -> None:
        """Seal one frame into the buffer, after any batch of completed statements
        (the file keeps the order in which things happened)."""
        hook = self._flush_hook
        if hook is not None:
            hook()
        if self._batch:
            self._seal_batch()
        self._seal(frame)

    def _seal_batch(self) -> None:
        batch = self._batch
        self._batch = []
        self._batch_bytes = 0
        self._seal(Execs(seq=self._seq, prev=self._last_hash, items=batch))

    def _seal(self, frame: Frame) -> None:
        # Set here, not trusted from the caller: sealing a pending batch first moves
        # both on between the frame's construction and this point.
        frame.seq = self._seq
        frame.prev = self._last_hash
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
        self._check_backlog()

    def _check_backlog(self) -> None:
        size = len(self._buf) + self._batch_bytes
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

    def _encoded_size(self, columns: list[ColumnInfo]) -> int:
        """Encoded size of a column list, computed once per list (callers cache theirs
        per statement; the entry keeps the list alive, so its id is not reused)."""
        entry = self._column_sizes.get(id(columns))
        if entry is None:
            if len(self._column_sizes) >= _COLUMN_SIZES:
                self._column_sizes.clear()
            entry = (columns, len(_ENCODE(columns)))
            self._column_sizes[id(columns)] = entry
        return entry[1]

    def _open(self, st: Statement) -> None:
        """Write a held statement as separate frames: stmt, then meta and rows so far;
        its later results and its completion follow as their own frames."""
        del self._running[st.stmt]
        st.opened = True
        if self._ended:
            return
        self._append(stmt_frame(self._seq, self._last_hash, st))
        if st.columns is not None:
            self._append(
                Meta(seq=self._seq, prev=self._last_hash, stmt=st.stmt, columns=st.columns)
            )
        if st.data is not None and st.enc is not None:
            self._append(
                Rows(
                    seq=self._seq,
                    prev=self._last_hash,
                    stmt=st.stmt,
                    enc=st.enc,
                    count=st.count,
                    data=st.data,
                )
            )
        st.columns = None
        st.data = None

    def _open_running(self) -> None:
        hook = self._running_hook
        if hook is not None:
            hook()
        for st in list(self._running.values()):
            self._open(st)

    def _checkpoint(self, now: float) -> None:
        """Append a signed checkpoint if frames were added since the last one.

        Statements still running are written first (as separate frames), so a
        statement that runs longer than one tick is on disk, and signed, while it runs.
        """
        if self._ended:
            return
        if self._batch:
            self._seal_batch()
        self._open_running()
        if self._dirty:
            self._append(Ckpt(seq=self._seq, prev=self._last_hash, at=now, sig=ZERO_SIGNATURE))
            self._dirty = False

    def _take(self) -> bytearray:
        """Hand the buffered frames to the writer (which owns them from now on)."""
        if self._batch:
            self._seal_batch()
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
