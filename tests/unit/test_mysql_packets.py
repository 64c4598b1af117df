"""lenenc integers/strings, OK / ERR / EOF packets, terminators, progress reports."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import PeerViolation, UsageError
from protocols.mysql.constants import Capability, ServerStatus, SessionTrackType
from protocols.mysql.packets import (
    EofPacket,
    ErrPacket,
    OkPacket,
    ProgressReport,
    SessionStateChange,
    build_eof_packet,
    build_err_packet,
    build_lenenc_int,
    build_lenenc_string,
    build_local_infile_request,
    build_ok_packet,
    build_progress_report,
    build_terminator,
    is_eof_packet,
    is_progress_report,
    is_terminator,
    lenenc_int_size,
    parse_eof_packet,
    parse_err_packet,
    parse_local_infile_request,
    parse_ok_packet,
    parse_progress_report,
    parse_terminator,
    read_lenenc_int,
    read_lenenc_int_or_null,
    read_lenenc_string,
    read_lenenc_string_or_null,
    read_nul_string,
    skip_lenenc_string,
)

MALFORMED = 1835
P41 = Capability.CLIENT_PROTOCOL_41 | Capability.CLIENT_TRANSACTIONS
TRACK = P41 | Capability.CLIENT_SESSION_TRACK
DEPRECATE = P41 | Capability.CLIENT_DEPRECATE_EOF


# -- lenenc ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (250, b"\xfa"),
        (251, b"\xfc\xfb\x00"),
        (0xFFFF, b"\xfc\xff\xff"),
        (0x10000, b"\xfd\x00\x00\x01"),
        (0xFFFFFF, b"\xfd\xff\xff\xff"),
        (0x1000000, b"\xfe\x00\x00\x00\x01\x00\x00\x00\x00"),
        (2**64 - 1, b"\xfe" + b"\xff" * 8),
    ],
)
def test_lenenc_int_boundaries(value: int, encoded: bytes) -> None:
    assert build_lenenc_int(value) == encoded
    assert lenenc_int_size(value) == len(encoded)
    assert read_lenenc_int(b"junk" + encoded + b"tail", 4) == (value, 4 + len(encoded))


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lenenc_int_round_trip(value: int) -> None:
    enc = build_lenenc_int(value)
    assert read_lenenc_int(enc, 0) == (value, len(enc))


@given(st.binary(max_size=70000))
def test_lenenc_string_round_trip(value: bytes) -> None:
    enc = build_lenenc_string(value)
    assert read_lenenc_string(enc, 0) == (value, len(enc))
    assert skip_lenenc_string(enc, 0) == len(enc)


@pytest.mark.parametrize(
    "truncated", [b"", b"\xfc", b"\xfc\x01", b"\xfd\x01\x02", b"\xfe" + b"\x00" * 7]
)
def test_truncated_lenenc_int(truncated: bytes) -> None:
    with pytest.raises(PeerViolation) as exc:
        read_lenenc_int(truncated, 0)
    assert exc.value.code == MALFORMED


def test_lenenc_null_and_invalid_prefix() -> None:
    assert read_lenenc_int_or_null(b"\xfb", 0) == (None, 1)
    assert read_lenenc_string_or_null(b"\xfbrest", 0) == (None, 1)
    assert build_lenenc_string(None) == b"\xfb"
    with pytest.raises(PeerViolation):
        read_lenenc_int(b"\xfb", 0)
    with pytest.raises(PeerViolation):
        read_lenenc_int_or_null(b"\xff", 0)
    with pytest.raises(UsageError):
        build_lenenc_int(-1)
    with pytest.raises(UsageError):
        build_lenenc_int(2**64)


@pytest.mark.parametrize(
    "lying",
    [
        b"\x05abcd",  # 5 announced, 4 present
        b"\xfc\x00\x01" + b"a" * 255,  # 256 announced
        b"\xfd\xff\xff\xff",  # 16 MiB announced, nothing present
        b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff",  # 2**64 - 1 announced
    ],
)
def test_lying_string_lengths_never_over_read(lying: bytes) -> None:
    for reader in (read_lenenc_string, read_lenenc_string_or_null, skip_lenenc_string):
        with pytest.raises(PeerViolation) as exc:
            reader(lying, 0)
        assert exc.value.code == MALFORMED


def test_nul_string() -> None:
    assert read_nul_string(b"abc\x00def", 0) == (b"abc", 4)
    assert read_nul_string(memoryview(b"x\x00"), 0) == (b"x", 2)
    with pytest.raises(PeerViolation):
        read_nul_string(b"abc", 0)


# -- OK ------------------------------------------------------------------------------------------


def test_ok_packet_classic() -> None:
    ok = parse_ok_packet(b"\x00\x01\x02\x02\x00\x00\x00", P41)
    assert ok == OkPacket(1, 2, ServerStatus.AUTOCOMMIT, 0)
    info = parse_ok_packet(b"\x00\x03\x00\x02\x00\x01\x00Rows matched: 3", P41)
    assert info.info == b"Rows matched: 3" and info.warnings == 1


def test_ok_packet_session_track_schema_and_variables() -> None:
    # Captured from MariaDB 10.11: "USE information_schema" and "SET autocommit=1".
    use = bytes.fromhex("000000024000000015011312696e666f726d6174696f6e5f736368656d61")
    ok = parse_ok_packet(use, TRACK)
    assert ok.tracked_schema() == b"information_schema"
    setv = bytes.fromhex("000000024000000010000e0a6175746f636f6d6d6974024f4e")
    ok2 = parse_ok_packet(setv, TRACK)
    assert ok2.session_state_changes[0].system_variables() == [(b"autocommit", b"ON")]
    assert ok2.tracked_schema() is None
    assert build_ok_packet(ok, TRACK) == use
    assert build_ok_packet(ok2, TRACK) == setv


def test_ok_packet_trailing_garbage_with_session_track() -> None:
    with pytest.raises(PeerViolation):
        parse_ok_packet(b"\x00\x00\x00\x02\x00\x00\x00\x00extra", TRACK)


def test_ok_packet_lying_lengths() -> None:
    for bad in (
        b"\x00",
        b"\x00\xfc\x01",
        b"\x00\x00\x00\x02",
        b"\x00\x00\x00\x02\x40\x00\x00\x05ab",
    ):
        with pytest.raises(PeerViolation):
            parse_ok_packet(bad, TRACK)
    with pytest.raises(PeerViolation):
        parse_ok_packet(b"\x01\x00\x00", P41)


state_changes = st.lists(
    st.builds(
        SessionStateChange,
        st.sampled_from([int(t) for t in SessionTrackType]),
        st.binary(max_size=40),
    ),
    max_size=3,
).map(tuple)


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=300),
    state_changes,
    st.sampled_from([0x00, 0xFE]),
    st.sampled_from([P41, TRACK, TRACK | Capability.CLIENT_DEPRECATE_EOF]),
)
def test_ok_round_trip(
    affected: int,
    insert_id: int,
    status: int,
    warnings: int,
    info: bytes,
    changes: tuple[SessionStateChange, ...],
    header: int,
    caps: int,
) -> None:
    tracked = bool(caps & Capability.CLIENT_SESSION_TRACK)
    if not (tracked and status & ServerStatus.SESSION_STATE_CHANGED):
        changes = ()
    ok = OkPacket(affected, insert_id, status, warnings, info, changes, header)
    assert parse_ok_packet(build_ok_packet(ok, caps), caps) == ok


def test_ok_build_refuses_changes_without_flag() -> None:
    with pytest.raises(UsageError):
        build_ok_packet(OkPacket(session_state_changes=(SessionStateChange(1, b"\x01x"),)), TRACK)


# -- ERR / progress ------------------------------------------------------------------------------


def test_err_packet() -> None:
    captured = bytes.fromhex(
        "ff7a042334325330325461626c652027746573742e6e6f5f737563685f7461626c655f78797a2720646f65736e2774206578697374"
    )
    err = parse_err_packet(captured)
    assert err == ErrPacket(1146, "42S02", b"Table 'test.no_such_table_xyz' doesn't exist")
    assert build_err_packet(1146, "42S02", err.text) == captured
    # Before PROTOCOL_41 there is no SQLSTATE marker.
    old = build_err_packet(1040, message="Too many connections", protocol_41=False)
    assert parse_err_packet(old) == ErrPacket(1040, "HY000", b"Too many connections")
    with pytest.raises(PeerViolation):
        parse_err_packet(b"\xff\x01")
    with pytest.raises(UsageError):
        build_err_packet(1045, "280", "x")


@given(
    st.integers(0, 0xFFFE),
    st.text(alphabet="0123456789ABCDEFHYZ", min_size=5, max_size=5),
    st.binary(),
)
def test_err_round_trip(errno: int, state: str, message: bytes) -> None:
    assert parse_err_packet(build_err_packet(errno, state, message)) == ErrPacket(
        errno, state, message
    )


def test_progress_report_round_trip() -> None:
    report = ProgressReport(1, 2, 12345, b"copy to tmp table")
    data = build_progress_report(report)
    assert is_progress_report(data)
    assert parse_progress_report(data) == report
    assert not is_progress_report(build_err_packet(1045, "28000", "no"))


# -- EOF and terminators -------------------------------------------------------------------------


def test_eof_and_terminators() -> None:
    eof = build_eof_packet(3, 0x22)
    assert eof == b"\xfe\x03\x00\x22\x00"
    assert is_eof_packet(eof) and is_terminator(eof)
    assert parse_eof_packet(eof) == EofPacket(3, 0x22)
    assert parse_eof_packet(b"\xfe") == EofPacket()
    ok_fe = bytes.fromhex("fe000022000000")
    assert not is_eof_packet(b"\xfe" + b"\x00" * 8) and is_terminator(ok_fe)
    assert parse_terminator(eof, P41) == OkPacket(status_flags=0x22, warnings=3, header=0xFE)
    assert parse_terminator(ok_fe, DEPRECATE) == OkPacket(status_flags=0x22, header=0xFE)
    assert build_terminator(OkPacket(status_flags=0x22), DEPRECATE) == ok_fe
    assert build_terminator(OkPacket(status_flags=0x22, warnings=3), P41) == eof
    # A row of >= 16 MiB starting with 0xFE is not a terminator.
    assert not is_terminator(b"\xfe" + b"\x00" * 0xFFFFFF)
    with pytest.raises(PeerViolation):
        parse_eof_packet(b"\xfe\x00\x00")
    with pytest.raises(PeerViolation):
        parse_terminator(b"\x00\x00\x00\x02\x00\x00\x00", DEPRECATE)


def test_local_infile_request() -> None:
    assert parse_local_infile_request(build_local_infile_request(b"/tmp/x.csv")) == b"/tmp/x.csv"
    with pytest.raises(PeerViolation):
        parse_local_infile_request(b"\x00x")


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_terminators_parsed_once_are_shared_and_still_checked(deprecate_eof: bool) -> None:
    caps = int(Capability.CLIENT_PROTOCOL_41) | (
        int(Capability.CLIENT_DEPRECATE_EOF) if deprecate_eof else 0
    )
    status = 0x0002 | 0x0008  # autocommit, more results
    payload = (
        b"\xfe\x00\x00" + status.to_bytes(2, "little") + b"\x01\x00"
        if deprecate_eof
        else b"\xfe\x01\x00" + status.to_bytes(2, "little")
    )
    first = parse_terminator(payload, caps)
    assert first.status_flags == status and first.header == 0xFE
    assert parse_terminator(payload, caps) is first  # immutable, so shared
    assert parse_terminator(memoryview(payload), caps) == first  # not hashable: parsed
    if not deprecate_eof:
        assert parse_eof_packet(payload) is parse_eof_packet(payload)
        assert parse_eof_packet(payload).warnings == 1
    for bad in (b"\xfe\x00\x00\x00", b"\x00\x00\x00\x02\x00"):  # never shared: refused
        with pytest.raises(PeerViolation):
            parse_terminator(bad, caps)
        with pytest.raises(PeerViolation):
            parse_terminator(bad, caps)
