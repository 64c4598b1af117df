"""Shared helpers for the recording tests (no tests here).

Files are built either by the real Recorder (``write_sample``) or, when a test needs
frames the recorder would never write (a future frame type, forgeries), by encoding
frames itself and sealing them with the writer thread's own ``seal_frames``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.recording import ColumnInfo, Recorder, SessionStartInfo
from gateway.recording.keys import fingerprint
from gateway.recording.reader import RecordingReader
from gateway.recording.schema import (
    ENCODER,
    HEADER,
    HEADER_HASH,
    LENGTH,
    ZERO_HASH,
    ZERO_SIGNATURE,
    Ckpt,
    End,
    Start,
    Stmt,
)
from gateway.recording.sink import seal_frames
from protocols.postgres.rows import build_data_row


def make_info(session_id: str = "s1", **overrides: Any) -> SessionStartInfo:
    fields: dict[str, Any] = {
        "session_id": session_id,
        "subject": "alice@example.com",
        "groups": ("dba", "auditors"),
        "token_id": "jti-123",
        "token_expires_at": time.time() + 900,
        "target": "app-pg",
        "protocol": "postgres",
        "client_address": "127.0.0.1:50000",
        "tls": {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"},
        "gateway_version": "0.1.0",
        "policy_digest": "sha256:abc",
        "upstream_user": "gateway",
        "started_at": time.time(),
    }
    fields.update(overrides)
    return SessionStartInfo(**fields)


def sample_rows(n: int, start: int = 0) -> bytes:
    return b"".join(
        build_data_row([str(i).encode(), f"name {i}".encode(), None if i % 3 == 0 else b"x"])
        for i in range(start, start + n)
    )


COLUMNS = [
    ColumnInfo("id", type_oid=23, table_oid=16385, attnum=1),
    ColumnInfo("name", type_oid=25, table_oid=16385, attnum=2),
    ColumnInfo("note", type_oid=25),
]


def new_recorder(tmp_path: Path, **kw: Any) -> Recorder:
    kw.setdefault("fsync_interval", 0.05)
    return Recorder(
        tmp_path / "sessions", signing_key_path=tmp_path / "state" / "recording_ed25519.pem", **kw
    )


def public_key_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "recording_ed25519.pub.pem"


async def write_sample(
    tmp_path: Path,
    *,
    session_id: str = "s1",
    statements: int = 3,
    rows_per: int = 2,
    end: bool = True,
) -> Path:
    """A real recording made by the Recorder; returns the file."""
    recorder = new_recorder(tmp_path)
    await recorder.start()
    try:
        rec = recorder.open_session(make_info(session_id))
        for i in range(statements):
            n = rec.statement(text=f"SELECT id, name, note FROM t WHERE k = {i}", path="simple")
            rec.result_metadata(n, COLUMNS)
            if i == 0:
                # Still running at a writer pass: the first statement is written as
                # separate stmt/meta/rows/done frames; the others, completing between
                # passes, share one "execs" frame.
                await recorder.flush()
            data = sample_rows(rows_per, i * 10)
            rec.rows(n, "pg.DataRow", data, rows_per)
            rec.complete(
                n,
                tag=f"SELECT {rows_per}",
                rows=rows_per,
                rows_recorded=rows_per,
                bytes_to_client=len(data),
                duration=0.002,
            )
        await recorder.flush()
        if end:
            rec.end("client closed")
    finally:
        if end:
            await recorder.close()
        else:
            # Leave the file as a crash would: written and checkpointed, no end frame.
            await recorder.flush()
            recorder._sessions.clear()
            await recorder.close()
            rec._file.abandon()
    return tmp_path / "sessions" / f"{session_id}.gwrec"


def frame_spans(path: Path) -> list[tuple[int, int]]:
    """(offset, size) of every complete frame."""
    with RecordingReader(path) as reader:
        return [(raw.offset, raw.size) for raw in reader.raw_frames()]


def encode_frame(frame: Any) -> bytes:
    payload = ENCODER.encode(frame)
    return LENGTH.pack(len(payload)) + payload


def seal_file(frames: Sequence[Any], key: Ed25519PrivateKey) -> bytes:
    """A whole file from frame objects (Structs or dicts with t/seq/prev first)."""
    buf = bytearray()
    for frame in frames:
        buf += encode_frame(frame)
    seal_frames(buf, HEADER_HASH, key.sign)
    return HEADER + bytes(buf)


def start_frame(key: Ed25519PrivateKey, session_id: str = "s1") -> Start:
    info = make_info(session_id)
    return Start(
        seq=0,
        prev=ZERO_HASH,
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
        key_fp=fingerprint(key.public_key()),
    )


def stmt_frame(seq: int, n: int) -> Stmt:
    return Stmt(
        seq=seq,
        prev=ZERO_HASH,
        stmt=n,
        at=time.time(),
        text=f"SELECT {n}",
        path="simple",
        name=None,
        params=None,
        decision="allow",
        rule=None,
    )


def ckpt_frame(seq: int) -> Ckpt:
    return Ckpt(seq=seq, prev=ZERO_HASH, at=time.time(), sig=ZERO_SIGNATURE)


def end_frame(seq: int) -> End:
    return End(
        seq=seq,
        prev=ZERO_HASH,
        reason="client closed",
        statements=0,
        rows=0,
        bytes_to_client=0,
        denied=0,
        ended_at=time.time(),
        sig=ZERO_SIGNATURE,
    )


def generic_frames(path: Path) -> list[dict[str, Any]]:
    """Every frame decoded as a plain dict (key order kept), for forgeries."""
    with RecordingReader(path) as reader:
        return [msgspec.msgpack.decode(raw.payload or b"") for raw in reader.raw_frames()]


def rechain(frames: Sequence[dict[str, Any]], key: Ed25519PrivateKey) -> bytes:
    """What a forger does: renumber and re-chain frames, signing with *their* key."""
    out = []
    for i, frame in enumerate(frames):
        frame = dict(frame)
        frame["seq"] = i
        frame["prev"] = ZERO_HASH
        if "sig" in frame:
            frame["sig"] = ZERO_SIGNATURE
        out.append(frame)
    return seal_file(out, key)
