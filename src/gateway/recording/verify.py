"""Verify a recording: header, hash chain, frame order, signatures, the end.

Streams the file (one frame in memory). Checks, frame by frame:

* ``seq`` equals the frame's position and ``prev`` equals the SHA-256 of the previous
  frame's bytes (the header for frame 0): catches flipped bytes, removed, inserted
  and reordered frames;
* frame 0 is a start frame whose key fingerprint matches the verifying key;
* every ckpt/end frame carries a valid Ed25519 signature over its own payload, and
  with it (through ``prev``) over everything before it;
* nothing follows the end frame;
* the file is named after the session its start frame holds (``<session_id>.gwrec``,
  or ``<session_id>~N.gwrec`` when the writer found the name taken): a recording
  renamed, or copied over another session's file, fails.

Frames of an unknown type are chain-checked and reported, not failed. The outcome
(``Status``) doubles as the CLI's exit status; see docs/auditing.md.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .keys import fingerprint, signature_valid
from .reader import RecordingFormatError, RecordingReader
from .schema import (
    FILE_SUFFIX,
    HEADER_HASH,
    HEADER_SIZE,
    KNOWN_TAGS,
    SIGNATURE_SIZE,
    SIGNED_TAGS,
    Ckpt,
    End,
    FrameDecodeError,
    Start,
    decode_envelope,
    decode_frame,
    has_signature_trailer,
    signed_message,
)

Progress = Callable[[int, int], None]

# The writer adds ``~N`` when ``<session_id>.gwrec`` exists (sink.SessionFile); session
# ids never contain ``~``, so the suffix cannot be part of the id.
_TAKEN_SUFFIX_RE = re.compile(r"(.+)~[0-9]+")


def named_session_id(path: Path) -> str:
    """The session id a recording's file name claims: the name without ``.gwrec`` and
    without the ``~N`` the writer adds when the plain name is taken."""
    stem = path.name.removesuffix(FILE_SUFFIX)
    taken = _TAKEN_SUFFIX_RE.fullmatch(stem)
    return taken.group(1) if taken else stem


class Status(enum.IntEnum):
    """Verification outcome; the value is the exit status of ``gateway sessions verify``."""

    OK = 0  # complete, every frame chained, end frame signed
    ALTERED = 1  # altered, reordered, forged or malformed: do not trust the file
    # 2 is the usage-error status (bad arguments, file or key not found)
    INCOMPLETE = 3  # clean cut after a complete frame, no end frame (crash or still open)
    TRUNCATED = 4  # the last frame is cut in the middle (frames before it verified)


# --all reports the worst; ALTERED outranks everything.
SEVERITY = {Status.OK: 0, Status.INCOMPLETE: 1, Status.TRUNCATED: 2, Status.ALTERED: 3}


@dataclass
class VerifyResult:
    path: Path
    status: Status = Status.OK
    message: str = ""
    frames: int = 0  # complete frames that verified
    bad_index: int | None = None
    bad_offset: int | None = None
    signed_through: int | None = None  # index of the last frame with a valid signature
    end_index: int | None = None
    session_id: str | None = None
    key_fp: str | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def unsigned_tail(self) -> int:
        """Complete frames after the last signature."""
        last = -1 if self.signed_through is None else self.signed_through
        return self.frames - last - 1


def verify_file(
    path: Path,
    public_key: Ed25519PublicKey,
    *,
    check_name: bool = True,
    progress: Progress | None = None,
    progress_every: int = 64 << 20,
) -> VerifyResult:
    """Verify one recording. With ``check_name`` (the default) a file whose name does not
    match the session id in its start frame fails (see ``named_session_id``)."""
    result = _verify(path, public_key, progress, progress_every)
    if check_name and result.session_id is not None:
        _check_name(result)
    return result


_OUTCOME_WORDS = {
    Status.OK: "its frames verify",
    Status.ALTERED: "and it fails verification",
    Status.INCOMPLETE: "its frames",
    Status.TRUNCATED: "its frames",
}


def _check_name(result: VerifyResult) -> None:
    """Fail a file named after another session than the one it holds: a genuine,
    intact recording moved into the place of another session's file (or renamed) must
    not verify as that session."""
    assert result.session_id is not None
    if named_session_id(result.path) == result.session_id:
        return
    before = result.message
    result.message = (
        f"file {result.path.name} holds session {result.session_id}, not the session it is "
        f"named after (renamed, or put in place of another session's recording); "
        f"{_OUTCOME_WORDS[result.status]}: {before}"
    )
    if result.status is not Status.ALTERED:
        result.bad_index, result.bad_offset = 0, HEADER_SIZE
    result.status = Status.ALTERED


def _verify(
    path: Path,
    public_key: Ed25519PublicKey,
    progress: Progress | None,
    progress_every: int,
) -> VerifyResult:
    result = VerifyResult(path)
    expected_fp = fingerprint(public_key)
    try:
        with RecordingReader(path) as reader:
            _walk(reader, public_key, expected_fp, result, progress, progress_every)
            if result.status is not Status.OK:
                return result
            if reader.truncation is not None:
                t = reader.truncation
                result.status = Status.TRUNCATED
                result.bad_index, result.bad_offset = t.index, t.offset
                result.message = (
                    f"{t.describe()} (a crash during a write, or the file was cut); "
                    f"frames 0-{t.index - 1} verify{_signed_note(result)}"
                )
                return result
    except RecordingFormatError as exc:
        return _fail(result, exc.message, exc.index, exc.offset)
    except OSError as exc:
        return _fail(result, f"cannot read: {exc.strerror}", None, 0)
    if result.frames == 0:
        return _fail(result, "no frames after the header", None, 0, Status.INCOMPLETE)
    if result.end_index is None:
        result.status = Status.INCOMPLETE
        result.message = (
            f"ended without an end frame after frame {result.frames - 1}{_signed_note(result)}"
        )
        return result
    result.message = (
        f"{result.frames} frames, chain intact, end frame signed by {expected_fp[:23]}…"
    )
    return result


def _signed_note(result: VerifyResult) -> str:
    if result.signed_through is None:
        return "; no frame is signed, so nothing proves the file came from the gateway"
    tail = result.unsigned_tail
    note = f"; frames 0-{result.signed_through} are signed (checkpoint)"
    if tail:
        note += f"; the {tail} frame(s) after it are chained but not signed"
    return note


def _fail(
    result: VerifyResult,
    message: str,
    index: int | None,
    offset: int | None,
    status: Status = Status.ALTERED,
) -> VerifyResult:
    result.status = status
    result.message = message
    result.bad_index = index
    result.bad_offset = offset
    return result


def _walk(
    reader: RecordingReader,
    public_key: Ed25519PublicKey,
    expected_fp: str,
    result: VerifyResult,
    progress: Progress | None,
    progress_every: int,
) -> None:
    expected_prev = HEADER_HASH
    prev_offset = 0
    next_progress = progress_every
    for raw in reader.raw_frames():
        i, off = raw.index, raw.offset
        payload = raw.payload
        assert payload is not None  # no skip_tags here
        if result.end_index is not None:
            _fail(
                result,
                f"frame {i} at offset {off} follows the end frame "
                f"(frame {result.end_index}): data was appended after the session ended",
                i,
                off,
            )
            return
        try:
            env = decode_envelope(payload)
        except FrameDecodeError as exc:
            _fail(result, f"frame {i} at offset {off}: {exc}", i, off)
            return
        if env.seq != i:
            _fail(
                result,
                f"frame {i} at offset {off} carries sequence number {env.seq}: "
                "frames were removed, inserted or reordered here",
                i,
                off,
            )
            return
        if env.prev != expected_prev:
            before = "the header" if i == 0 else f"frame {i - 1} (offset {prev_offset})"
            _fail(
                result,
                f"frame {i} at offset {off}: its prev hash does not match {before}; "
                f"{before} or frame {i} was altered, or frames were removed or reordered",
                i,
                off,
            )
            return
        if (i == 0) != (env.t == "start"):
            what = "is not a start frame" if i == 0 else "is a second start frame"
            _fail(result, f"frame {i} at offset {off} {what}", i, off)
            return
        if env.t == "start" and not _check_start(payload, expected_fp, result, i, off):
            return
        if env.t in SIGNED_TAGS:
            if not _check_signature(payload, public_key, result, i, off):
                return
            result.signed_through = i
            if env.t == "end":
                result.end_index = i
        elif env.t not in KNOWN_TAGS:
            result.notices.append(
                f"frame {i} at offset {off} has unknown type {env.t!r} "
                "(written by a newer gateway?): skipped, chain verified"
            )
        digest = hashlib.sha256(raw.prefix)
        digest.update(payload)  # no concatenation: frames can be large
        expected_prev = digest.digest()
        prev_offset = off
        result.frames = i + 1
        if progress is not None and reader.bytes_read >= next_progress:
            progress(reader.bytes_read, reader.file_size)
            next_progress = reader.bytes_read + progress_every
    if progress is not None and next_progress > progress_every:  # reported before: finish
        progress(reader.bytes_read, reader.file_size)


def _check_start(payload: bytes, expected_fp: str, result: VerifyResult, i: int, off: int) -> bool:
    try:
        start = decode_frame(payload)
    except FrameDecodeError as exc:
        _fail(result, f"frame {i} at offset {off}: {exc}", i, off)
        return False
    assert isinstance(start, Start)
    result.session_id = start.session_id
    result.key_fp = start.key_fp
    if start.key_fp != expected_fp:
        _fail(
            result,
            f"the recording names signing key {start.key_fp}, but the key given for "
            f"verification is {expected_fp}: wrong --key, or the file was re-signed",
            i,
            off,
        )
        return False
    return True


def _check_signature(
    payload: bytes, public_key: Ed25519PublicKey, result: VerifyResult, i: int, off: int
) -> bool:
    try:
        frame = decode_frame(payload)
    except FrameDecodeError as exc:
        _fail(result, f"frame {i} at offset {off}: {exc}", i, off)
        return False
    assert isinstance(frame, Ckpt | End)
    # The signature must be the payload's last 64 bytes (the position the signed
    # message is cut at), not just some field value.
    if not has_signature_trailer(payload) or frame.sig != payload[-SIGNATURE_SIZE:]:
        _fail(result, f"frame {i} at offset {off}: signature is not the last field", i, off)
        return False
    if not signature_valid(public_key, frame.sig, signed_message(payload)):
        kind = "end" if isinstance(frame, End) else "checkpoint"
        _fail(result, f"frame {i} at offset {off}: bad signature on the {kind} frame", i, off)
        return False
    return True
