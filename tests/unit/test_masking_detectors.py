"""Content detectors: validators, property tests on valid and near-miss values, false
positives on ordinary data, secrets, redaction, custom detectors, the pre-filter, linearity."""

from __future__ import annotations

import dataclasses
import shutil
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.masking import detectors
from gateway.masking.detectors import (
    BUILTIN_DETECTORS,
    CARDS_COMPILED,
    IBAN_LENGTHS,
    VALIDATORS,
    CustomDetector,
    DetectorError,
    DetectorSet,
    card_number_ok,
    card_number_ok_py,
    compile_detectors,
    iban_valid,
    luhn_valid,
    run_plan,
    ssn_valid,
)
from protocols.postgres.rows import ScreenedValue

ALL = compile_detectors(BUILTIN_DETECTORS)
CARDS = compile_detectors(["credit_card"])
SSNS = compile_detectors(["ssn"])
IBANS = compile_detectors(["iban"])


def names_found(ds: DetectorSet, text: str) -> set[str]:
    return {name for _, _, name in ds.find(text)}


def star(span: str, name: str) -> str:
    return f"<{name}>"


# --------------------------------------------------------------------------- validators


@pytest.mark.parametrize(
    "digits", ["4111111111111111", "378282246310005", "6011111111111117", "79927398713", "00"]
)
def test_luhn_valid(digits: str) -> None:
    assert luhn_valid(digits)


@pytest.mark.parametrize(
    "digits",
    ["4111111111111112", "79927398710", "", "7", "4111 1111 1111 1111", "\uff14\uff11", "12a4"],
)
def test_luhn_invalid(digits: str) -> None:
    assert not luhn_valid(digits)


@pytest.mark.parametrize(
    "text",
    [
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "de89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "NO9386011117947",
        "MT84MALT011000012345MTLCAST001S",
    ],
)
def test_iban_valid(text: str) -> None:
    assert iban_valid(text)


@pytest.mark.parametrize(
    "text",
    [
        "DE88370400440532013000",  # check digits
        "DE8937040044053201300",  # too short for DE
        "XX89370400440532013000",  # no such country
        "DE89-3704-0044-0532-0130-00",  # only spaces are allowed
        "",
        "DE",
    ],
)
def test_iban_invalid(text: str) -> None:
    assert not iban_valid(text)


@pytest.mark.parametrize("text", ["123-45-6789", "123 45 6789", "123456789", "899-99-9999"])
def test_ssn_valid(text: str) -> None:
    assert ssn_valid(text)


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "999-12-3456",
        "123-00-4567",
        "123-45-0000",
        "123-45 6789",  # mixed separators
        "12-345-6789",
        "1234-56-789",
        "123-45-67890",
    ],
)
def test_ssn_invalid(text: str) -> None:
    assert not ssn_valid(text)


# --------------------------------------------------------------------------- cards

# One or more issuer prefixes per network (see _has_issuer_prefix).
IINS = [
    "4",
    "51",
    "55",
    "2221",
    "2500",
    "2720",
    "34",
    "37",
    "6011",
    "65",
    "644",
    "649",
    "35",
    "30",
    "36",
    "38",
    "62",
    "50",
    "56",
    "69",
]


def luhn_complete(payload: str) -> str:
    """payload + the check digit that makes it Luhn-valid."""
    for check in "0123456789":
        if luhn_valid(payload + check):
            return payload + check
    raise AssertionError("unreachable")


def group(digits: str, sizes: list[int], sep: str) -> str:
    parts, pos = [], 0
    for size in sizes:
        parts.append(digits[pos : pos + size])
        pos += size
    if pos < len(digits):
        parts.append(digits[pos:])
    return sep.join(p for p in parts if p)


@st.composite
def card_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(digits, as written): a Luhn-valid number with an issuer prefix, bare or grouped."""
    prefix = draw(st.sampled_from(IINS))
    length = draw(st.integers(13, 19))
    body = draw(
        st.text("0123456789", min_size=length - 1 - len(prefix), max_size=length - 1 - len(prefix))
    )
    digits = luhn_complete(prefix + body)
    assume(digits.count(digits[0]) != len(digits))
    style = draw(st.sampled_from(["bare", "space4", "hyphen4", "amex"]))
    if style == "bare":
        return digits, digits
    if style == "amex" and length in (14, 15):
        return digits, group(digits, [4, 6], draw(st.sampled_from(" -")))
    return digits, group(digits, [4, 4, 4, 4], " " if style == "space4" else "-")


# The card check runs compiled (_cards.c) where a C compiler exists; the pure-Python one is
# the reference, and both must agree on everything the card pattern can match and more.
def test_the_compiled_card_check_is_built_and_used() -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine: the pure-Python card check runs")
    assert CARDS_COMPILED and card_number_ok is not card_number_ok_py


@given(card_numbers())
def test_both_card_checks_accept_card_numbers(card: tuple[str, str]) -> None:
    assert card_number_ok(card[1]) and card_number_ok_py(card[1])


@settings(max_examples=500)
@given(
    st.one_of(
        st.text("0123456789 -", max_size=25),
        st.text("0123456789", min_size=12, max_size=20),
        st.text("01234567899 -x\u00e9", max_size=22),
        card_numbers().map(lambda card: card[1]),
        card_numbers().flatmap(
            lambda card: st.integers(0, len(card[1]) - 1).map(
                lambda i: (
                    card[1][:i] + str((int(card[1][i]) + 1) % 10) + card[1][i + 1 :]
                    if card[1][i].isdigit()
                    else card[1]
                )
            )
        ),
    )
)
def test_both_card_checks_agree(text: str) -> None:
    assert card_number_ok(text) == card_number_ok_py(text)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("4111 1111 1111 1111", True),
        ("4111111111111111", True),
        ("4111-1111-1111-1112", False),  # Luhn
        ("1111111111111117", False),  # bare, no issuer prefix
        ("1111 1111 1111 1117", True),  # grouped: laid out like a card
        ("0000 0000 0000 0000", False),  # placeholder
        ("4111 1111 1111", False),  # 12 digits
        ("41111111111111111111", False),  # 20 digits
        ("2221000000000009", True),
        ("2720990000000007", True),
        ("2220990000000008", False),
        ("3056930009020004", True),  # Diners 30
        ("3156930009020003", False),
        ("4111 1111 1111 111x", False),
        ("", False),
    ],
)
def test_card_number_checks(text: str, ok: bool) -> None:
    assert card_number_ok(text) is ok
    assert card_number_ok_py(text) is ok


CONTEXTS = [("", ""), ("card: ", " exp 12/27"), ("(", ")"), ("paid with ", ".")]


@given(card_numbers(), st.sampled_from(CONTEXTS))
def test_valid_card_numbers_are_found(card: tuple[str, str], context: tuple[str, str]) -> None:
    _, written = card
    before, after = context
    text = before + written + after
    assert ALL.find(text) == [(len(before), len(before) + len(written), "credit_card")]
    assert ALL.redact(text, star) == f"{before}<credit_card>{after}"


@given(card_numbers(), st.data())
def test_card_near_misses_are_not_found(card: tuple[str, str], data: st.DataObject) -> None:
    _, written = card
    positions = [i for i, ch in enumerate(written) if ch.isdigit()]
    i = data.draw(st.sampled_from(positions))
    other = data.draw(st.sampled_from([d for d in "0123456789" if d != written[i]]))
    near = written[:i] + other + written[i + 1 :]  # one digit changed: Luhn always notices
    assert CARDS.find(near) == []
    assert "credit_card" not in names_found(ALL, near)


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "378282246310005",
        "3782 822463 10005",
        "3056 930902 5904",  # Diners 4-6-4
        "5555555555554444",
        "2223003122003222",
        "6011111111111117",
        "3530111333300000",
        "6200000000000005",
        "4111111111111111110",  # 19 digits
        "4222222222222",  # 13 digits
    ],
)
def test_known_card_layouts(text: str) -> None:
    assert CARDS.find(text) == [(0, len(text), "credit_card")]


@pytest.mark.parametrize(
    "text",
    [
        "0000000000000",  # all one digit: Luhn-valid, still not a card
        "0000 0000 0000 0000",
        "1700000000004",  # epoch millis, Luhn-valid, but no issuer starts with 1
        "8000000000000003",  # bare, Luhn-valid, unknown issuer
        "order 123456789012345678901",  # longer than any card
        "x41111111111111110",  # inside a word
        "0.4111111111111111",  # the digits of a float
        "4111111111111111.25",
        "41111111111111111111",  # 20 digits
        "4111 1111 1111 1111 1111",  # 20 digits, grouped
        "1 4111 1111 1111 1111",  # the tail of a longer grouped number
        "ORD-2024-4111111111111111",
    ],
)
def test_card_look_alikes_are_not_found(text: str) -> None:
    assert CARDS.find(text) == []


# --------------------------------------------------------------------------- SSNs

valid_areas = st.integers(1, 899).filter(lambda a: a != 666)


@given(valid_areas, st.integers(1, 99), st.integers(1, 9999), st.sampled_from("- "))
def test_valid_ssns_are_found(area: int, grp: int, serial: int, sep: str) -> None:
    ssn = f"{area:03d}{sep}{grp:02d}{sep}{serial:04d}"
    assert ALL.find(ssn) == [(0, 11, "ssn")]
    text = f"SSN {ssn}, on file"
    assert ALL.find(text) == [(4, 15, "ssn")]


@given(
    st.one_of(
        st.tuples(
            st.sampled_from([0, 666, *range(900, 1000)]), st.integers(0, 99), st.integers(0, 9999)
        ),
        st.tuples(valid_areas, st.just(0), st.integers(0, 9999)),
        st.tuples(valid_areas, st.integers(0, 99), st.just(0)),
    ),
    st.sampled_from("- "),
)
def test_invalid_range_ssns_are_not_found(parts: tuple[int, int, int], sep: str) -> None:
    area, grp, serial = parts
    ssn = f"{area:03d}{sep}{grp:02d}{sep}{serial:04d}"
    assert SSNS.find(ssn) == []
    assert ALL.find(f"SSN {ssn}") == []


@pytest.mark.parametrize(
    "text",
    [
        "123456789",  # bare: an order id as much as an SSN
        "123-45 6789",  # mixed separators
        "123-45-67890",
        "1123-45-6789",
        "123-45-6789-1",
        "0.123-45-6789",
        "x123-45-6789",
    ],
)
def test_ssn_look_alikes_are_not_found(text: str) -> None:
    assert SSNS.find(text) == []


# --------------------------------------------------------------------------- IBANs

COUNTRIES = ["DE", "GB", "FR", "NL", "NO", "BE", "IT", "ES", "CH", "MT", "RU", "LC", "SE", "PL"]


def iban_check_digits(country: str, bban: str) -> str:
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{98 - int(numeric) % 97:02d}"


@st.composite
def ibans(draw: st.DrawFn) -> str:
    """A valid compact IBAN with computed check digits."""
    country = draw(st.sampled_from(COUNTRIES))
    size = IBAN_LENGTHS[country] - 4
    alphabet = draw(st.sampled_from(["0123456789", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"]))
    bban = draw(st.text(alphabet, min_size=size, max_size=size))
    return country + iban_check_digits(country, bban) + bban


def spaced(iban: str) -> str:
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


@given(ibans(), st.booleans(), st.sampled_from(CONTEXTS))
def test_valid_ibans_are_found(iban: str, space: bool, context: tuple[str, str]) -> None:
    assert iban_valid(iban)
    written = spaced(iban) if space else iban
    before, after = context
    text = before + written + after
    assert ALL.find(text) == [(len(before), len(before) + len(written), "iban")]


@given(ibans(), st.booleans(), st.data())
def test_iban_near_misses_are_not_found(iban: str, space: bool, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(iban) - 1))
    pool = "0123456789" if iban[i].isdigit() else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    other = data.draw(st.sampled_from([c for c in pool if c != iban[i]]))
    near = iban[:i] + other + iban[i + 1 :]  # mod-97 notices any one same-kind change
    written = spaced(near) if space else near
    assert IBANS.find(written) == []
    assert "iban" not in names_found(ALL, written)


def test_spaced_iban_followed_by_a_short_word() -> None:
    assert IBANS.find("BE68 5390 0754 7034 EUR1") == [(0, 19, "iban")]
    assert IBANS.find("IBAN DE89 3704 0044 0532 0130 00 EUR") == [(5, 32, "iban")]


@pytest.mark.parametrize(
    "text",
    [
        "de89370400440532013000",  # capitals only
        "XDE89370400440532013000",
        "DE893704004405320130001",
        "AB12CDEFGHIJKLMNOP",
    ],
)
def test_iban_look_alikes_are_not_found(text: str) -> None:
    assert IBANS.find(text) == []


# --------------------------------------------------------------------------- e-mail, phones


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("jane.doe@example.com", "jane.doe@example.com"),
        ("Contact: a.b-c+tag@mail.example.co.uk.", "a.b-c+tag@mail.example.co.uk"),
        ("<user_1%x@sub-domain.example.org>", "user_1%x@sub-domain.example.org"),
        ("a@b.co", "a@b.co"),
    ],
)
def test_emails(text: str, span: str) -> None:
    start = text.index(span)
    assert ALL.find(text) == [(start, start + len(span), "email")]


@pytest.mark.parametrize(
    "text", ["icon@2x.png", "user@localhost", "@handle", "a@b", "name@ example.com", "x@y.c"]
)
def test_email_look_alikes(text: str) -> None:
    assert "email" not in names_found(ALL, text)


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("+14155552671", "+14155552671"),
        ("call +1 (415) 555-2671 now", "+1 (415) 555-2671"),
        ("+44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
        ("+33 1 23 45 67 89", "+33 1 23 45 67 89"),
        ("+49-30-1234567", "+49-30-1234567"),
        ("+1.415.555.2671", "+1.415.555.2671"),
        ("(415) 555-2671", "(415) 555-2671"),
        ("(415)555-2671", "(415)555-2671"),
        ("tel 415-555-2671.", "415-555-2671"),
        ("415.555.2671", "415.555.2671"),
        ("1-800-555-0199", "800-555-0199"),  # the trunk prefix stays
        ("020 7946 0958", "020 7946 0958"),
        ("0161 496 0000", "0161 496 0000"),
        ("07700 900123", "07700 900123"),
    ],
)
def test_phones(text: str, span: str) -> None:
    start = text.index(span)
    assert ALL.find(text) == [(start, start + len(span), "phone")]


@pytest.mark.parametrize(
    "text",
    [
        "12345-6789",  # ZIP+4
        "2024-01-15",
        "415 555 2671",  # spaces only: three quantities as much as a phone
        "123-555-2671",  # area codes do not start with 1
        "415-155-2671",  # nor exchanges
        "415-555.2671",  # mixed separators
        "+0 123 456 789",
        "+1234567",  # 7 digits: short code
        "+1 2 3 4 5 6 7 8",  # no group of two digits
        "+1234567890123456",  # 16 digits
        "+1 (415 555 2671",  # unbalanced parenthesis
        "10:00:00+05:30",
        "2024-05-01T10:00:00+0000",
        "192.168.100.200",
        "10.0.0.1",
        "v1.22.333",
        "3.14159265",
        "020-7946-0958",  # UK shapes are spaced
        "4155552671",  # a bare digit run
    ],
)
def test_phone_look_alikes(text: str) -> None:
    assert "phone" not in names_found(ALL, text)


# --------------------------------------------------------------------------- ordinary data

ORDINARY = [
    "Jane Smith",
    "Springfield",
    "North Haverbrook",
    "O'Brien-Smythe, Mary Ann",
    "Leave the parcel at the back door, ring twice please",
    "order 12345 shipped on 2024-05-03, ref ORD-12345",
    "ORD-2024-000123",
    "INV/2024/00042",
    "123456789",
    "1000042",
    "2024-05-01",
    "2024-05-01 10:00:00",
    "2024-05-01 10:00:00+00",
    "2024-05-01T10:00:00.123456Z",
    "2024-05-01 10:00:00.123456+05:30",
    "10:00:00",
    "1714557600",  # epoch seconds
    "1714557600000",  # epoch millis
    "1714557600000000",  # epoch micros
    "550e8400-e29b-41d4-a716-446655440000",
    "550E8400-E29B-41D4-A716-446655440000",
    "192.168.100.200",
    "2001:db8::8a2e:370:7334",
    "1,234.56",
    "$1,234,567.89",
    "1234.5678",
    "0.30000000000000004",
    "-122.4194155",
    "v2.10.3",
    "1.2.3-beta.4",
    "12345-6789",
    "ISBN 978-3-16-148410-0",
    "+1",
    "Total: 12 items @ 3.50 each",
    "https://example.com/orders/12345?page=2",
    "sk-winter-jacket-blue-large",
    "sk-winterjacketsblue2024",
    "task-runner-internationalization",
    "Room 101, Floor 3",
    "(555) 0100",
    "SKU AB12-3456",
    "ASIAPACIFICREGION",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_data_is_clean(text: str) -> None:
    assert ALL.find(text) == []
    assert ALL.redact(text, star) is None


# --------------------------------------------------------------------------- secrets

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n"
    "-----END RSA PRIVATE KEY-----"
)
SECRETS = [
    JWT,
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",  # unsigned
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAY34FZKBOKMUTVV7A",
    "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8",
    "gho_" + "z" * 36,
    "github_pat_11ABCDEFG0123456789abc_" + "x1Y2z3" * 9 + "ABCDE",
    "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "xoxp-1234567890-abcdefghij",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "rk_live_51H8abcdefGHIJKLmnop",
    "pk_live_TYooMQauvdEDq54NiTphI7jx",
    "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "sk-" + "T3BlbkFJ" * 6,
    "sk-proj-" + "Ab3_cD9-eF" * 8,
    PEM,
    PEM.replace("RSA ", ""),
    PEM.replace("RSA ", "ENCRYPTED "),
    PEM.replace("RSA ", "OPENSSH "),
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0rAbcdEFGHijklMNOPqrstUVWX\n=AbCd\n"
    "-----END PGP PRIVATE KEY BLOCK-----",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_secrets_alone(secret: str) -> None:
    assert ALL.find(secret) == [(0, len(secret), "secret")]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize(
    ("before", "after"), [("token=", "; path=/"), ("Bearer ", "\n"), ("'", "'")]
)
def test_secrets_in_text(secret: str, before: str, after: str) -> None:
    text = before + secret + after
    assert ALL.find(text) == [(len(before), len(before) + len(secret), "secret")]
    assert ALL.redact(text, star) == f"{before}<secret>{after}"


def test_truncated_pem_is_masked_to_the_end_of_its_key_material() -> None:
    cut = PEM[:80]
    assert ALL.find(cut) == [(0, 80, "secret")]
    text = PEM[:100] + " | next column"
    assert ALL.find(text) == [(0, 100 + 1, "secret")]  # the space is PEM whitespace


@pytest.mark.parametrize(
    "text",
    [
        "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----",  # no key material
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOC\n-----END PUBLIC KEY-----",
        "AKIAIOSFODNN7EXAMPL",  # 15 after the prefix
        "AKIAIOSFODNN7EXAMPLEX",  # 17
        "xAKIAIOSFODNN7EXAMPLE",
        "ghp_short",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",  # test keys are not secrets
        "eyJhbGciOiJIUzI1NiJ9",  # one segment
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBW",  # 34
        "xoxb-short",
        "sk-" + "a" * 30,  # not a random key
        "mask-" + "Ab1" * 10,
    ],
)
def test_secret_look_alikes(text: str) -> None:
    assert "secret" not in names_found(ALL, text)


# --------------------------------------------------------------------------- redaction, overlaps


def test_redact_replaces_exactly_the_spans() -> None:
    seen: list[tuple[str, str]] = []

    def replace(span: str, name: str) -> str:
        seen.append((span, name))
        return "#" * len(span)

    text = "Jane <jane@example.com>, SSN 123-45-6789, card 4111 1111 1111 1111; call (415) 555-2671"
    out = ALL.redact(text, replace)
    assert out == (
        "Jane <################>, SSN ###########, card ###################; call ##############"
    )
    assert seen == [
        ("jane@example.com", "email"),
        ("123-45-6789", "ssn"),
        ("4111 1111 1111 1111", "credit_card"),
        ("(415) 555-2671", "phone"),
    ]
    assert [name for _, _, name in ALL.find(text)] == ["email", "ssn", "credit_card", "phone"]


@pytest.mark.parametrize("text", ["", "a", "Jane Smith", "2024-05-01 10:00:00", "ORD-2024-000123"])
def test_redact_returns_none_for_clean_text(text: str) -> None:
    assert ALL.redact(text, star) is None


def test_overlap_keeps_the_longest_then_the_first() -> None:
    digits = CustomDetector("digits", r"[0-9]{4}")
    ds = compile_detectors(["digits", "credit_card"], [digits])
    # The card (19 characters) beats its own 4-digit groups.
    assert ds.find("4111 1111 1111 1111") == [(0, 19, "credit_card")]
    # Same span twice: the detector named first wins.
    same = compile_detectors(
        ["ssn", "ssn_again"], [CustomDetector("ssn_again", r"\d{3}-\d{2}-\d{4}")]
    )
    assert same.find("123-45-6789") == [(0, 11, "ssn")]
    flipped = compile_detectors(
        ["ssn_again", "ssn"], [CustomDetector("ssn_again", r"\d{3}-\d{2}-\d{4}")]
    )
    assert flipped.find("123-45-6789") == [(0, 11, "ssn_again")]
    # A chain: a-b overlaps b-c; the longest (b-c) is kept, then a if it still fits.
    chain = compile_detectors(
        ["ab", "bcd", "a"],
        [CustomDetector("ab", "ab"), CustomDetector("bcd", "bcd"), CustomDetector("a", "a")],
    )
    assert chain.find("abcd") == [(0, 1, "a"), (1, 4, "bcd")]


def test_non_ascii_and_surrogate_escaped_text() -> None:
    text = "café \udce9 4111 1111 1111 1111 — jo@example.com, müller@example.com"
    found = [(text[a:b], name) for a, b, name in ALL.find(text)]
    # ASCII local parts only: "ller@example.com" is not taken from inside a word either.
    assert found == [("4111 1111 1111 1111", "credit_card"), ("jo@example.com", "email")]
    # Unicode digits are not card digits, and a Unicode letter is a word character.
    assert ALL.find("٤١١١١١١١١١١١١١١١") == []
    assert CARDS.find("é4111111111111111") == []


# --------------------------------------------------------------------------- custom detectors


def test_custom_detector_without_validator() -> None:
    emp = CustomDetector("employee_id", r"\bEMP-[0-9]{6}\b")
    ds = compile_detectors(["employee_id", "email"], [emp])
    assert ds.names == ("employee_id", "email")
    assert ds.find("by EMP-004211 (x@example.com)") == [(3, 13, "employee_id"), (15, 28, "email")]
    assert ds.find("EMP-1") == []
    assert ds.redact("EMP-000001", star) == "<employee_id>"


def test_custom_detector_with_validators() -> None:
    ds = compile_detectors(
        ["acct", "iban_ish", "tax"],
        [
            CustomDetector("acct", r"ACCT[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{4}", "luhn"),
            CustomDetector("iban_ish", r"(?<=IBAN:)[A-Z0-9.]+", "iban_mod97"),
            CustomDetector("tax", r"TAX#[0-9]{3}/[0-9]{2}/[0-9]{4}", "ssn"),
        ],
    )
    assert names_found(ds, "ACCT4111-1111-1111-1111") == {"acct"}
    assert names_found(ds, "ACCT4111-1111-1111-1112") == set()
    assert names_found(ds, "IBAN:DE89.3704.0044.0532.0130.00") == {"iban_ish"}
    assert names_found(ds, "IBAN:DE88.3704.0044.0532.0130.00") == set()
    assert names_found(ds, "TAX#123/45/6789") == {"tax"}
    assert names_found(ds, "TAX#666/45/6789") == set()


def test_a_custom_detector_is_used_only_when_named() -> None:
    extra = CustomDetector("emp", r"EMP-[0-9]+")
    assert compile_detectors(["email"], [extra]).find("EMP-1") == []


def test_rejected_custom_match_does_not_rescan_inside_it() -> None:
    # A long rejected match is skipped whole: linear, not quadratic.
    ds = compile_detectors(["run"], [CustomDetector("run", r"[0-9]+", "luhn")])
    assert ds.find("1" * 100_001) == []


@pytest.mark.parametrize(
    ("names", "custom", "message"),
    [
        (["credit_card", "passport"], [], "unknown detector 'passport'"),
        (["x"], [CustomDetector("x", "a", "crc32")], "unknown validator 'crc32'"),
        (["x"], [CustomDetector("x", "a(b")], "invalid regex"),
        (["x"], [CustomDetector("x", "a*")], "matches the empty string"),
        ([], [CustomDetector("email", "@")], "name of a built-in"),
        ([], [CustomDetector("x", "a"), CustomDetector("x", "b")], "defined twice"),
        ([], [CustomDetector("", "a")], "empty name"),
        ("email", [], "not the string"),
        (["y"], [CustomDetector("x", "a(")], "custom detector 'x': invalid regex"),
    ],
)
def test_detector_errors(names: list[str], custom: list[CustomDetector], message: str) -> None:
    with pytest.raises(DetectorError, match=message):
        compile_detectors(names, custom)


def test_detector_error_is_a_value_error() -> None:
    assert issubclass(DetectorError, ValueError)
    assert VALIDATORS == ("luhn", "iban_mod97", "ssn")
    assert BUILTIN_DETECTORS == ("credit_card", "ssn", "email", "phone", "iban", "secret")


def test_detector_set_is_immutable_and_deduplicated() -> None:
    ds = compile_detectors(["email", "ssn", "email"])
    assert ds.names == ("email", "ssn")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.names = ("x",)  # type: ignore[misc]
    assert compile_detectors([]).find("a@b.co 123-45-6789") == []
    assert compile_detectors([]).redact("a@b.co", star) is None


def test_only_the_named_builtins_run() -> None:
    text = "a@example.com, 123-45-6789, 4111 1111 1111 1111"
    assert names_found(compile_detectors(["email"]), text) == {"email"}
    assert names_found(compile_detectors(["ssn", "credit_card"]), text) == {"ssn", "credit_card"}


# --------------------------------------------------------------------------- pre-filter


# Every built-in pattern run on every value, with the pre-filter's verdict ignored. If the
# pre-filter ever hid a finding, find() would differ from this.
def find_unfiltered(text: str) -> list[tuple[int, int, str]]:
    return ALL._find(text, ALL._enabled)


SAMPLES = [
    *SECRETS,
    *ORDINARY,
    "4111 1111 1111 1111",
    "3782 822463 10005",
    "123 45 6789",
    "+1 (415) 555-2671",
    "+33 1 23 45 67 89",
    "(415) 555-2671",
    "020 7946 0958",
    "0161 496 0000",
    "07700 900123",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "a@b.co",
]


UK_NEAR_CARDS = [
    "4111 1111 1111 0006",  # a card's groups hold a UK shape, never starting a number
    "020 7946 0958",
    "x020 7946 0958",
    "é020 7946 0958",
    "1 020 7946 0958",
    "(020) 7946 0958 4111 1111 1111 1111",
    "07700 900123",
    "ref07700 900123",
    "4111 1111 1111 1111 07700 900123",
    "9 07700 900123",
]


@pytest.mark.parametrize("text", SAMPLES + UK_NEAR_CARDS)
def test_prefilter_hides_nothing_on_samples(text: str) -> None:
    assert ALL.find(text) == find_unfiltered(text)


@settings(max_examples=400)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(SAMPLES + UK_NEAR_CARDS),
            st.text("0123456789 -.()+@AaeyJKSIgh_xoBDEGkliv/=\n", max_size=30),
        ),
        max_size=5,
    )
)
def test_prefilter_hides_nothing(parts: list[str]) -> None:
    text = "".join(parts)
    assert ALL.find(text) == find_unfiltered(text)


@given(card_numbers())
def test_prefilter_passes_every_card(card: tuple[str, str]) -> None:
    assert ALL.find(card[1]) == find_unfiltered(card[1]) != []


# --------------------------------------------------------------------------- byte screen
#
# The pre-filter as data (DetectorSet.screen), run by the compiled DataRow rewriter on UTF-8
# bytes. It must select at least every value and every bit the pre-filter selects; it may add
# SECRET for a value under 16 bytes holding "-----BEGIN" (no pattern can match there), and
# any bit for a value shorter than the shortest match in characters but not in bytes (the
# screen counts bytes: "0@ééé" passes its length check, not the pre-filter's).


def screen_hits(ds: DetectorSet, text: str) -> int:
    assert ds.screen is not None
    min_length, tables, needles = ds.screen
    return ScreenedValue(lambda v: v, lambda vs, hs: list(vs), min_length, tables, needles).hits(
        text.encode("utf-8", "surrogatepass")
    )


def assert_screen_agrees(ds: DetectorSet, text: str) -> None:
    exact = ds.hits(text)
    screened = screen_hits(ds, text)
    assert screened & exact == exact, (text, screened, exact)
    extra = screened & ~exact
    size = len(text.encode("utf-8", "surrogatepass"))
    assert (
        extra == 0
        or (size < 16 and "-----BEGIN" in text)
        or len(text) < detectors._MIN_LENGTH <= size
    ), (text, screened, exact)
    assert ds.find(text) == ds._spans(run_plan(ds.plans[screened], text))


SETS = [ALL, CARDS, SSNS, IBANS, compile_detectors(["phone", "secret"])]


@pytest.mark.parametrize(
    "text",
    [*SAMPLES, *UK_NEAR_CARDS, "-----BEGIN", "x" * 5, "é" * 9 + "99-99", "00@\udc80", "0@ééé"],
)
@pytest.mark.parametrize("ds", SETS)
def test_the_byte_screen_selects_what_the_prefilter_selects(ds: DetectorSet, text: str) -> None:
    assert_screen_agrees(ds, text)


@settings(max_examples=400)
@given(
    parts=st.lists(
        st.one_of(
            st.sampled_from(SAMPLES + UK_NEAR_CARDS),
            st.text("0123456789 -.()+@AaeyJKSIgh_xoBDEGkliv/=\n\u00e9\udc80", max_size=30),
        ),
        max_size=5,
    ),
    which=st.integers(0, len(SETS) - 1),  # an index: a DetectorSet's repr is huge
)
def test_the_byte_screen_agrees_with_the_prefilter(parts: list[str], which: int) -> None:
    assert_screen_agrees(SETS[which], "".join(parts))


def test_a_set_with_a_custom_detector_has_no_byte_screen() -> None:
    # A custom regex has no necessary condition to screen on: every value must reach it.
    custom = CustomDetector("ticket", r"TCK-[0-9]{4}")
    assert compile_detectors(["email", "ticket"], [custom]).screen is None
    assert compile_detectors(["email"], [custom]).screen is not None


def test_the_byte_screen_leaves_out_needles_for_detectors_not_in_the_set() -> None:
    assert SSNS.screen is not None and ALL.screen is not None
    assert {text for _, text, _, _, _ in SSNS.screen[2]} == {b"99", b"99-9999", b"999-99-9999"}
    assert len(ALL.screen[2]) > len(SSNS.screen[2])


# --------------------------------------------------------------------------- linearity

LONG = 1 << 20  # 1 MiB


@pytest.mark.parametrize(
    "text",
    [
        "a" * LONG,
        "1" * LONG,
        "1 " * (LONG // 2),
        "a@" * (LONG // 2),
        "x@" + "a." * (LONG // 2),
        "+1 " * (LONG // 3),
        "(2" * (LONG // 2),
        "AB12 " * (LONG // 5),
        "eyJ" + "a" * LONG,
        "sk-" + "a1" * (LONG // 2),
        "-----BEGIN PRIVATE KEY-----\n" + "A" * LONG,
        "-----BEGIN PRIVATE KEY-----" * (LONG // 27),
        "icon@2x.png " * (LONG // 12),
        "2024-05-01 10:00:00, " * (LONG // 21),
    ],
    ids=lambda text: repr(text[:12]),
)
def test_long_values_scan_in_linear_time(text: str) -> None:
    # Not a benchmark: a quadratic scan of 1 MiB takes hours, a linear one about a second on a
    # slow machine. Every pattern runs (no pre-filter): the worst case.
    started = time.perf_counter()
    find_unfiltered(text)
    assert time.perf_counter() - started < 30


def test_many_findings_in_one_long_value() -> None:
    text = "x@example.com 123-45-6789 " * 20_000
    found = ALL.find(text)
    assert len(found) == 40_000
    assert ALL.redact(text, star) == "<email> <ssn> " * 20_000
