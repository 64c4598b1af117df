"""Value decoding (text and binary formats) and psql-style tables."""

from __future__ import annotations

import struct
import uuid
from decimal import Decimal

import pytest

from gateway.recording.render import decode_value as dv
from gateway.recording.render import (
    display_width,
    escape,
    format_bytes,
    format_duration,
    one_line,
    render_table,
)
from gateway.recording.schema import ColumnInfo


def binary(oid: int) -> ColumnInfo:
    return ColumnInfo("c", type_oid=oid, format="binary")


def numeric(value: str) -> bytes:
    """PostgreSQL's binary numeric (numeric_send) for a decimal string."""
    d = Decimal(value)
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    dscale = max(0, -exp)
    text = "".join(map(str, digits))
    int_len = len(text) + exp
    int_part = text[:int_len] if int_len > 0 else ""
    frac = ("0" * -int_len + text if int_len < 0 else text[int_len:]) if exp < 0 else ""
    int_part = int_part + ("0" * exp if exp > 0 else "")
    pad_int = "0" * (-len(int_part) % 4) + int_part
    pad_frac = frac + "0" * (-len(frac) % 4)
    groups = [int(pad_int[i : i + 4]) for i in range(0, len(pad_int), 4)]
    weight = len(groups) - 1
    groups += [int(pad_frac[i : i + 4]) for i in range(0, len(pad_frac), 4)]
    while groups and groups[0] == 0:  # strip leading zero groups
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    head = struct.pack(">hhHh", len(groups), weight, 0x4000 if sign else 0, dscale)
    return head + b"".join(struct.pack(">h", g) for g in groups)


def test_text_format_is_utf8() -> None:
    assert dv("é".encode(), ColumnInfo("c", type_oid=25)) == "é"
    assert dv(b"\xff", ColumnInfo("c", type_oid=25)) == "\ufffd"
    assert dv(None, ColumnInfo("c")) is None
    assert dv(b"42", None) == "42"


@pytest.mark.parametrize(
    ("oid", "raw", "text"),
    [
        (16, b"\x01", "t"),
        (16, b"\x00", "f"),
        (21, struct.pack(">h", -5), "-5"),
        (23, struct.pack(">i", 2**31 - 1), "2147483647"),
        (20, struct.pack(">q", -(2**63)), "-9223372036854775808"),
        (26, struct.pack(">I", 4294967295), "4294967295"),
        (700, struct.pack(">f", 0.1), "0.1"),
        (701, struct.pack(">d", 0.1), "0.1"),
        (701, struct.pack(">d", float("inf")), "Infinity"),
        (701, struct.pack(">d", float("nan")), "NaN"),
        (25, "ünï".encode(), "ünï"),
        (17, b"\x00\xff", "\\x00ff"),
        (2950, uuid.UUID(int=1).bytes, "00000000-0000-0000-0000-000000000001"),
        (1082, struct.pack(">i", 0), "2000-01-01"),
        (1082, struct.pack(">i", 9461), "2025-11-26"),
        (1082, struct.pack(">i", 2**31 - 1), "infinity"),
        (1114, struct.pack(">q", 0), "2000-01-01 00:00:00"),
        (1114, struct.pack(">q", 1_500_000), "2000-01-01 00:00:01.5"),
        (1184, struct.pack(">q", 86_400_000_000), "2000-01-02 00:00:00+00"),
        (1083, struct.pack(">q", 3_723_000_001), "01:02:03.000001"),
        (3802, b'\x01{"a": 1}', '{"a": 1}'),
        (600, b"\x01\x02", "\\x0102"),  # point: not decoded, shown as hex
        (23, b"\x01", "\\x01"),  # wrong size for int4: hex, no crash
    ],
)
def test_binary_values(oid: int, raw: bytes, text: str) -> None:
    assert dv(raw, binary(oid)) == text


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "1",
        "-1",
        "123.45",
        "0.001",
        "10000",
        "123456789.000100",
        "-0.5",
        "99999999.99999999",
        "1e20",
        "0.00000001",
    ],
)
def test_binary_numeric(value: str) -> None:
    expected = format(Decimal(value), "f")
    assert dv(numeric(value), binary(1700)) == expected


def test_binary_numeric_specials() -> None:
    assert dv(struct.pack(">hhHh", 0, 0, 0xC000, 0), binary(1700)) == "NaN"
    assert dv(struct.pack(">hhHh", 0, 0, 0xD000, 0), binary(1700)) == "Infinity"
    assert dv(b"\x00\x05", binary(1700)) == "\\x0005"  # truncated: hex


def test_psql_aligned_table() -> None:
    lines = render_table(["id", "name"], [["1", "alice"], ["22", None]], [True, False])
    assert lines == [
        " id | name",
        "----+-------",
        "  1 | alice",
        " 22 |",
        "(2 rows)",
    ]


def test_single_row_footer_and_empty_result() -> None:
    assert render_table(["a"], [["x"]], [False])[-1] == "(1 row)"
    assert render_table(["a"], [], [False]) == [" a", "---", "(0 rows)"]


def test_multiline_values_use_plus_markers() -> None:
    lines = render_table(["a", "b"], [["x\ny", "z"]], [False, False])
    assert lines[2:4] == [" x+| z", " y |"]


def test_control_characters_are_escaped() -> None:
    # Recorded data is untrusted: it must not drive the auditor's terminal.
    lines = render_table(["a"], [["\x1b[2Jboo"]], [False])
    assert "\x1b" not in "".join(lines) and "\\x1b[2Jboo" in lines[2]
    assert "\x1b" not in one_line("SELECT '\x1b[31m'")


def test_escape_for_single_and_multi_line_output() -> None:
    assert escape("plain text, ünïcode 漢字") == "plain text, ünïcode 漢字"
    assert escape("a\x1b[2Jb\x07\x9b") == "a\\x1b[2Jb\\x07\\x9b"
    # One-line fields (names, details): newlines, tabs and CRs are escaped too.
    assert escape("a\nb\tc\r") == "a\\x0ab\\x09c\\x0d"
    assert escape("a\nb\r", newlines=True) == "a\nb\\x0d"


def test_wide_characters() -> None:
    assert display_width("日本") == 4
    lines = render_table(["x"], [["日本"]], [False])
    assert lines[1] == "------"


def test_small_formatters() -> None:
    assert format_duration(0.0015) == "1.5ms"
    assert format_duration(75) == "1m15s"
    assert format_duration(7300) == "2h01m"
    assert format_bytes(100) == "100 B"
    assert format_bytes(2048) == "2.0 kB"
    assert one_line("SELECT\n   1", 6) == "SELEC…"


def _copy(payload: bytes) -> bytes:
    return b"d" + struct.pack("!I", 4 + len(payload)) + payload


def test_copy_data_rows_one_line_each() -> None:
    from gateway.recording.results import decode_result

    chunks = [_copy(b"1\talice\n") + _copy(b"2\t\\N\n"), _copy("3\tb\xc3\xa9\n".encode("latin-1"))]
    result = decode_result([], chunks, {"pg.CopyData"})
    assert result.problem is None
    assert result.headers == ["COPY data"]
    assert result.rows == [["1\talice"], ["2\t\\N"], ["3\tbé"]]


def test_copy_data_binary_format_shown_as_bytes() -> None:
    from gateway.recording.results import decode_result

    header = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    chunks = [_copy(header + b"\x00\x01\x00\x00\x00\x01A"), _copy(b"\xff\xff")]
    result = decode_result([], chunks, {"pg.CopyData"})
    assert result.rows == [["\\x" + (header + b"\x00\x01\x00\x00\x00\x01A").hex()], ["\\xffff"]]


def test_copy_data_malformed_or_mixed() -> None:
    from gateway.recording.results import decode_result

    assert "malformed" in (decode_result([], [_copy(b"x")[:-1]], {"pg.CopyData"}).problem or "")
    mixed = decode_result([], [_copy(b"x")], {"pg.CopyData", "pg.DataRow"})
    assert mixed.problem is not None and "not rendered" in mixed.problem
