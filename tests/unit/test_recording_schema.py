"""Frame schema: round trips of every frame type, envelope rules, compatibility."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.recording.schema import (
    ENCODER,
    HEADER,
    HEADER_SIZE,
    KNOWN_TAGS,
    MAGIC,
    SIGNATURE_SIZE,
    ZERO_SIGNATURE,
    Ckpt,
    ColumnInfo,
    Ctl,
    Done,
    End,
    Error,
    Frame,
    FrameDecodeError,
    Meta,
    Rows,
    Start,
    Stmt,
    UnknownFrame,
    decode_envelope,
    decode_frame,
    has_signature_trailer,
    parse_envelope_prefix,
    parse_header,
    signed_message,
)

PREV = bytes(range(32))
NOW = 1_790_000_000.25


def all_frames() -> list[Frame]:
    return [
        Start(
            seq=0,
            prev=PREV,
            session_id="20261123T215556Z-0a1b2c",
            subject="alice@example.com",
            groups=["dba"],
            token_id="jti-1",
            token_expires_at=NOW + 900,
            target="app-pg",
            protocol="postgres",
            client_address="10.0.0.5:51000",
            tls={"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256"},
            gateway_version="0.1.0",
            policy_digest="sha256:0f",
            upstream_user="gateway",
            started_at=NOW,
            key_fp="sha256:ab",
        ),
        Stmt(
            seq=1,
            prev=PREV,
            stmt=1,
            at=NOW,
            text="SELECT $1::int, $2",
            path="extended",
            name="s1",
            params=["42", b"\x00\x01", None],
            decision="allow",
            rule=None,
        ),
        Stmt(
            seq=2,
            prev=PREV,
            stmt=2,
            at=NOW,
            text="DROP DATABASE app",
            path="simple",
            name=None,
            params=None,
            decision="deny",
            rule="builtin.drop_database",
        ),
        Meta(
            seq=3,
            prev=PREV,
            stmt=1,
            columns=[
                ColumnInfo("id", type_oid=23, table_oid=16385, attnum=1),
                ColumnInfo("ssn", type_oid=25, format="binary", masked="last4"),
            ],
        ),
        Rows(
            seq=4,
            prev=PREV,
            stmt=1,
            enc="pg.DataRow",
            count=2,
            data=b"D\x00\x00\x00\x06\x00\x00" * 2,
        ),
        Done(
            seq=5,
            prev=PREV,
            stmt=1,
            command_tag="SELECT 2",
            rows=2,
            rows_recorded=2,
            bytes_to_client=14,
            duration=0.0015,
            error=None,
        ),
        Done(
            seq=6,
            prev=PREV,
            stmt=2,
            command_tag=None,
            rows=0,
            rows_recorded=0,
            bytes_to_client=0,
            duration=0.0,
            error=Error("42501", "permission denied"),
        ),
        Ctl(seq=7, prev=PREV, at=NOW, kind="approval", detail={"id": "a1", "decision": "approved"}),
        Ckpt(seq=8, prev=PREV, at=NOW, sig=bytes(range(64))),
        End(
            seq=9,
            prev=PREV,
            reason="client closed",
            statements=2,
            rows=2,
            bytes_to_client=14,
            denied=1,
            ended_at=NOW + 3,
            sig=bytes(range(64, 128)),
        ),
    ]


@pytest.mark.parametrize("frame", all_frames(), ids=lambda f: type(f).__name__)
def test_round_trip(frame: Frame) -> None:
    payload = ENCODER.encode(frame)
    assert decode_frame(payload) == frame
    env = decode_envelope(payload)
    assert (env.seq, env.prev) == (frame.seq, frame.prev)
    tag, prev_at = parse_envelope_prefix(payload)
    assert tag == env.t and tag in KNOWN_TAGS
    assert payload[prev_at : prev_at + 32] == PREV


def test_tags_are_stable() -> None:
    # Changing one of these breaks every recording already on disk.
    assert [msgspec.msgpack.decode(ENCODER.encode(f))["t"] for f in all_frames()] == [
        "start", "stmt", "stmt", "meta", "rows", "done", "done", "ctl", "ckpt", "end",
    ]  # fmt: skip


def test_envelope_keys_come_first() -> None:
    for frame in all_frames():
        keys = list(msgspec.msgpack.decode(ENCODER.encode(frame)))
        assert keys[:3] == ["t", "seq", "prev"]


@pytest.mark.parametrize("frame", [f for f in all_frames() if isinstance(f, Ckpt | End)])
def test_signature_is_the_last_64_bytes(frame: Ckpt | End) -> None:
    payload = ENCODER.encode(frame)
    assert has_signature_trailer(payload)
    assert payload[-SIGNATURE_SIZE:] == frame.sig
    assert signed_message(payload).endswith(payload[:-SIGNATURE_SIZE])
    assert list(msgspec.msgpack.decode(payload))[-1] == "sig"


def test_memoryview_rows_encode_like_bytes() -> None:
    data = b"D\x00\x00\x00\x06\x00\x00"
    a = ENCODER.encode(Rows(seq=1, prev=PREV, stmt=1, enc="pg.DataRow", count=1, data=data))
    view: Any = memoryview(bytearray(data))
    b = ENCODER.encode(Rows(seq=1, prev=PREV, stmt=1, enc="pg.DataRow", count=1, data=view))
    assert a == b


def test_unknown_frame_type_is_skippable() -> None:
    future = {"t": "approval2", "seq": 4, "prev": PREV, "who": "bob", "blob": b"\x00"}
    payload = msgspec.msgpack.encode(future)
    frame = decode_frame(payload)
    assert isinstance(frame, UnknownFrame)
    assert (frame.t, frame.seq, frame.prev) == ("approval2", 4, PREV)
    assert frame.fields["who"] == "bob"


def test_unknown_fields_are_ignored() -> None:
    # A newer writer added fields to a known frame: this reader still reads it.
    payload = msgspec.msgpack.encode(
        {"t": "ctl", "seq": 3, "prev": PREV, "at": NOW, "kind": "k", "detail": {}, "new": [1, 2]}
    )
    assert decode_frame(payload) == Ctl(seq=3, prev=PREV, at=NOW, kind="k", detail={})


def test_malformed_known_frame_is_an_error() -> None:
    payload = msgspec.msgpack.encode({"t": "stmt", "seq": 1, "prev": PREV, "text": 5})
    with pytest.raises(FrameDecodeError, match="malformed 'stmt' frame"):
        decode_frame(payload)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x90", msgspec.msgpack.encode({"seq": 1}), msgspec.msgpack.encode([1, 2]), b"\xc1"],
)
def test_garbage_payloads(payload: bytes) -> None:
    with pytest.raises(FrameDecodeError):
        decode_frame(payload)
    with pytest.raises(FrameDecodeError):
        parse_envelope_prefix(payload)


def test_parse_envelope_prefix_requires_the_key_order() -> None:
    reordered = msgspec.msgpack.encode({"seq": 1, "t": "ctl", "prev": PREV})
    with pytest.raises(FrameDecodeError):
        parse_envelope_prefix(reordered)


@given(st.integers(0, 2**64 - 1))
def test_parse_envelope_prefix_any_seq(seq: int) -> None:
    payload = ENCODER.encode(Ckpt(seq=seq, prev=PREV, at=NOW, sig=ZERO_SIGNATURE))
    tag, at = parse_envelope_prefix(payload)
    assert tag == "ckpt" and payload[at : at + 32] == PREV


def test_header() -> None:
    assert len(HEADER) == HEADER_SIZE == 12
    assert HEADER.startswith(MAGIC)
    assert parse_header(HEADER) == 1
    with pytest.raises(FrameDecodeError, match="bad magic"):
        parse_header(b"PGDMP" + bytes(7))
    with pytest.raises(FrameDecodeError, match="version 2"):
        parse_header(MAGIC + b"\x00\x02\x00\x00")
    with pytest.raises(FrameDecodeError):
        parse_header(HEADER[:5])


def test_start_frame_has_no_secret_fields() -> None:
    fields = set(Start.__struct_fields__)
    assert "token" not in fields and "password" not in fields
    assert not any("secret" in f or "password" in f for f in fields)
    assert {"token_id", "token_expires_at", "key_fp"} <= fields


def test_struct_field_order_is_documented_order() -> None:
    # docs/recording-format.md lists fields in this order; sig must stay last.
    assert End.__struct_fields__[-1] == "sig"
    assert Ckpt.__struct_fields__[-1] == "sig"
    assert Frame.__struct_fields__ == ("seq", "prev")
