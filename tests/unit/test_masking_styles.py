"""Mask styles on text: each style's output, short values never revealed, the keyed hash,
the length bound MySQL column_length rewriting relies on, canonical numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.masking.styles import (
    REDACTED,
    SEPARATORS,
    STYLES,
    Style,
    StyleError,
    canonical_number,
    encode_text,
    hash_digest,
    hash_int,
    json_string_content,
    max_masked_length,
    text_masker,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def mask(style: Style, value: str) -> str | None:
    return text_masker(style)(value)


def test_style_names() -> None:
    assert STYLES == ("redact", "last4", "keep_last", "hash", "null", "fixed", "email")


# -- the styles on ordinary values -------------------------------------------------------------


@pytest.mark.parametrize("value", ["alice", "4111-1111-1111-1234", "", "é", "x" * 1000])
def test_redact_is_the_fixed_marker_whatever_the_value(value: str) -> None:
    assert mask(Style("redact"), value) == REDACTED == "****"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4111-1111-1111-1234", "****-****-****-1234"),
        ("4111111111111234", "************1234"),
        ("+1 (555) 123-4567", "+* (***) ***-4567"),
        ("DE89 3704 0044 0532 0130 00", "**** **** **** **** **30 00"),
        ("john@example.com", "****@******e.com"),
        ("Zürich-Straße", "******-**raße"),
        ("電話番号12", "**番号12"),
    ],
)
def test_last4_keeps_the_last_four_content_characters_and_the_separators(
    value: str, expected: str
) -> None:
    assert mask(Style("last4"), value) == expected


def test_last4_ignores_keep_last() -> None:
    assert mask(Style("last4", keep_last=1), "123456") == "**3456"


@pytest.mark.parametrize(
    ("keep", "value", "expected"),
    [
        (2, "123456", "****56"),
        (0, "12-34", "**-**"),
        (1, "a.b", "*.b"),
        (6, "123456", "******"),
        (6, "1234567", "*234567"),
    ],
)
def test_keep_last_n(keep: int, value: str, expected: str) -> None:
    assert mask(Style("keep_last", keep_last=keep), value) == expected


@pytest.mark.parametrize("value", ["1", "12", "123", "1234", "1-2-3-4", " 12 ", "ab@c", ""])
def test_a_value_of_n_content_characters_or_fewer_is_masked_entirely(value: str) -> None:
    out = mask(Style("last4"), value)
    assert out is not None
    assert all(ch == "*" or ch in SEPARATORS for ch in out)
    assert len(out) == len(value)


def test_hash_is_32_lowercase_hex_digits_of_hmac_sha256() -> None:
    out = mask(Style("hash", hash_key=KEY), "alice@example.com")
    assert out == hash_digest(KEY, b"alice@example.com").hex()[:32]
    assert out is not None and len(out) == 32
    assert set(out) <= set("0123456789abcdef")


def test_hash_is_deterministic_and_depends_on_the_key() -> None:
    style = Style("hash", hash_key=KEY)
    first = text_masker(style)("alice")
    assert first == text_masker(Style("hash", hash_key=KEY))("alice")
    assert first != text_masker(Style("hash", hash_key=OTHER_KEY))("alice")


@given(st.lists(st.text(max_size=30), min_size=2, max_size=20, unique=True))
def test_hash_gives_distinct_inputs_distinct_outputs(values: list[str]) -> None:
    masker = text_masker(Style("hash", hash_key=KEY))
    outputs = [masker(v) for v in values]
    assert len(set(outputs)) == len(values)


def test_hash_of_undecodable_bytes_hashes_the_original_bytes() -> None:
    raw = b"caf\xe9"  # latin-1 bytes read as UTF-8 with surrogateescape
    text = raw.decode("utf-8", "surrogateescape")
    assert mask(Style("hash", hash_key=KEY), text) == hash_digest(KEY, raw).hex()[:32]


@pytest.mark.parametrize("name", STYLES)
def test_a_lone_surrogate_never_breaks_a_style(name: str) -> None:
    # json_string_content can produce one from a "\\ud800" escape
    out = text_masker(Style(name, hash_key=KEY))("a\ud800b@c")
    if out is not None:
        encode_text(out, "utf-8")


def test_null_and_fixed() -> None:
    assert mask(Style("null"), "alice") is None
    assert mask(Style("fixed", value="n/a"), "alice") == "n/a"
    assert mask(Style("fixed"), "alice") == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice@example.com", "****@example.com"),
        ("a@b", "****@b"),
        ('"odd@name"@example.org', "****@example.org"),
        ("bob@", "****@"),
        ("@example.com", "****@example.com"),
        ("no-at-sign", REDACTED),
        ("", REDACTED),
        ("用户@例子.中国", "****@例子.中国"),
    ],
)
def test_email_keeps_the_domain_after_the_last_at(value: str, expected: str) -> None:
    assert mask(Style("email"), value) == expected


@pytest.mark.parametrize("name", ["redact", "last4", "keep_last", "null", "fixed", "email"])
def test_every_style_accepts_the_empty_string(name: str) -> None:
    out = mask(Style(name), "")
    assert out is None or isinstance(out, str)


# -- invalid styles ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "style",
    [Style("blur"), Style("hash"), Style("keep_last", keep_last=-1), Style("")],
)
def test_a_style_that_cannot_apply_is_refused_up_front(style: Style) -> None:
    with pytest.raises(StyleError):
        text_masker(style)
    with pytest.raises(StyleError):
        max_masked_length(style, 10)


def test_style_error_is_a_value_error() -> None:
    assert issubclass(StyleError, ValueError)


# -- properties --------------------------------------------------------------------------------

styles = st.one_of(
    st.sampled_from(["redact", "last4", "null", "email"]).map(Style),
    st.integers(0, 12).map(lambda n: Style("keep_last", keep_last=n)),
    st.text(max_size=50).map(lambda v: Style("fixed", value=v)),
    st.binary(min_size=1, max_size=64).map(lambda k: Style("hash", hash_key=k)),
)
texts = st.text(
    st.characters(codec="utf-8") | st.sampled_from(sorted(SEPARATORS)) | st.just("@"),
    max_size=60,
)


@given(styles, texts)
def test_max_masked_length_is_an_upper_bound(style: Style, value: str) -> None:
    out = text_masker(style)(value)
    size = 0 if out is None else len(out)
    assert size <= max_masked_length(style, len(value))


@given(st.integers(0, 12), texts)
def test_keep_last_never_reveals_more_than_n_content_characters(keep: int, value: str) -> None:
    out = text_masker(Style("keep_last", keep_last=keep))(value)
    assert out is not None and len(out) == len(value)
    content = [ch for ch in value if ch not in SEPARATORS]
    revealed = [
        i for i, (a, b) in enumerate(zip(value, out, strict=True)) if a not in SEPARATORS and b == a
    ]
    masked_positions = [i for i, ch in enumerate(out) if ch == "*"]
    assert all(out[i] == value[i] for i, ch in enumerate(value) if ch in SEPARATORS)
    if len(content) <= keep:
        # A value of N content characters or fewer is never revealed (except where a
        # content character is itself "*").
        assert all(value[i] == "*" for i in revealed)
    else:
        assert len(content) - len(masked_positions) <= keep


@given(styles, st.binary(max_size=40))
def test_surrogate_escaped_text_never_breaks_a_style(style: Style, raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    out = text_masker(style)(text)
    if out is not None:
        encode_text(out, "utf-8")


# -- helpers for the typed encoders ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("5", "5"),
        ("+5", "5"),
        (" 5 ", "5"),
        ("5.00", "5"),
        ("5.0", "5"),
        ("-0.000", "0"),
        ("00012.3400", "12.34"),
        ("-12.5", "-12.5"),
        ("1e+20", "100000000000000000000"),
        ("1.5E-3", "0.0015"),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-inf", "-Infinity"),
        ("abc", "abc"),
        ("1e999999999", "1e999999999"),
    ],
)
def test_canonical_number(text: str, canonical: str) -> None:
    assert canonical_number(text) == canonical


def test_hash_int_is_in_range_and_agrees_across_widths() -> None:
    wide = hash_int(KEY, "12345", 31)
    assert 0 <= wide < 2**31
    assert hash_int(KEY, "12345", 15) == wide & 0x7FFF
    assert hash_int(KEY, "12345", 31) == wide
    assert hash_int(OTHER_KEY, "12345", 31) != wide


def test_encode_text_never_raises() -> None:
    assert encode_text("caf\udce9", "utf-8") == b"caf\xe9"
    assert encode_text("中", "latin-1") == b"?"


@pytest.mark.parametrize(
    ("doc", "content"),
    [
        ('"bob@x.com"', "bob@x.com"),
        (' "a\\u00e9" ', "aé"),
        ('{"a": 1}', '{"a": 1}'),
        ('"bad', '"bad'),
    ],
)
def test_json_string_content(doc: str, content: str) -> None:
    assert json_string_content(doc) == content


def test_the_separator_regex_and_set_agree() -> None:
    from gateway.masking.styles import _CONTENT

    assert {chr(i) for i in range(0x3000) if not _CONTENT.match(chr(i))} == set(SEPARATORS)


@given(st.integers(0, 6), st.text(st.characters(max_codepoint=0x7F), max_size=30))
def test_keep_last_ascii_and_unicode_paths_agree(keep: int, value: str) -> None:
    # The ASCII-only value takes the str.translate path; a trailing "é" forces the regex
    # path and, being one more content character, leaves one fewer of value's own kept.
    content = len([ch for ch in value if ch not in SEPARATORS])
    unicode_out = text_masker(Style("keep_last", keep_last=keep))(value + "é")
    expected = text_masker(Style("keep_last", keep_last=max(keep - 1, 0)))(value)
    assert unicode_out is not None and expected is not None
    if content >= keep:
        assert unicode_out[: len(value)] == expected
    else:
        assert unicode_out == _masked_all(value + "é")


def _masked_all(value: str) -> str:
    return "".join(ch if ch in SEPARATORS else "*" for ch in value)
