"""Content detectors: find card numbers, SSNs, e-mail addresses, phones, IBANs and secrets in text.

Synchronous, pure and free of I/O. The masking policy compiles the detectors it names once
(``compile_detectors``); the row rewriter calls ``DetectorSet.redact`` on every text value of a
column that no column rule masks already. A ``DetectorSet`` holds only compiled patterns and is
safe to share between sessions and threads.

Rules this module enforces:

* Precision on ordinary data. Every built-in pattern is paired with a validator (Luhn, mod-97,
  SSN ranges, issuer prefixes, phone digit counts) and refuses to start or stop inside a longer
  run of word characters or digits, so an order id, a timestamp or a UUID is never split into
  a "card" or a "phone".
* The common case is clean text, and it must cost almost nothing. Before any pattern runs, one
  UTF-8 encode, one or two ``bytes.translate`` calls and a few substring tests (all in C, no
  regex) check a necessary condition of each enabled built-in pattern (``_builtin_hits``); only
  the patterns whose condition holds are run. The unit tests check that every value a detector
  finds passes its condition, so the pre-filter never hides a finding.
* Linear time on any input, however long: no nested unbounded quantifiers, bounded repeats where
  a failed match could be retried, and a lookbehind at the start of every pattern whose
  quantifier could rescan a run, so a match can only begin at the start of that run.
* Every built-in pattern begins with a literal or a character class, never with a lookaround:
  only then does the regex engine skip ahead to candidate positions in C instead of trying the
  whole pattern at every offset (measured: 4x faster on ordinary text).
* Findings never overlap: the longest span wins, then the earliest, then the detector named
  first.
* Custom detectors (a regex plus an optional validator) have no pre-filter: each costs one
  regex search per value, and its linearity is its author's responsibility.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BUILTIN_DETECTORS",
    "CARDS_COMPILED",
    "IBAN_LENGTHS",
    "SCREEN_TABLES",
    "VALIDATORS",
    "ByteScreen",
    "CustomDetector",
    "DetectorError",
    "DetectorSet",
    "card_number_ok",
    "card_number_ok_py",
    "compile_detectors",
    "iban_valid",
    "luhn_valid",
    "run_plan",
    "run_plans",
    "ssn_valid",
]

BUILTIN_DETECTORS: Final[tuple[str, ...]] = (
    "credit_card",
    "ssn",
    "email",
    "phone",
    "iban",
    "secret",
)
# Validators a custom detector may name; each is applied to the matched text.
VALIDATORS: Final[tuple[str, ...]] = ("luhn", "iban_mod97", "ssn")


class DetectorError(ValueError):
    """An unknown detector or validator name, or a custom regex that cannot be used."""


@dataclass(frozen=True, slots=True)
class CustomDetector:
    """A policy's own detector: a Python regex, and optionally a validator from VALIDATORS."""

    name: str
    pattern: str
    validator: str | None = None


# ---------------------------------------------------------------------------- validators

# Luhn: every second digit from the right is doubled, and a doubled digit above 9 loses 9.
# Summing bytes and translating them is done in C; a Python loop per digit costs 5x more.
_LUHN_DOUBLED: Final = bytes.maketrans(b"0123456789", bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` (ASCII digits only, at least two) passes the Luhn check (ISO/IEC 7812)."""
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    return _luhn_ok(digits.encode())


def _luhn_ok(digits: bytes) -> bool:
    plain = digits[-1::-2]  # ASCII codes: each is its digit + 48
    return (sum(plain) - 48 * len(plain) + sum(digits[-2::-2].translate(_LUHN_DOUBLED))) % 10 == 0


# IBAN length per country, from the SWIFT IBAN registry (ISO 13616). A country code not listed
# is not an IBAN: this table is what keeps "AB12..." product codes from passing on mod-97 luck.
IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

_IBAN_SHAPE: Final = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+")
# str.translate table: A-Z -> "10".."35", every other ASCII character to itself. A full table
# (not a dict) because a missing key costs an exception per character.
_IBAN_LETTER_DIGITS: Final = [
    str(int(chr(i), 36)) if "A" <= chr(i) <= "Z" else chr(i) for i in range(128)
]
_IBAN_COUNTRY_DIGITS: Final = {cc: cc.translate(_IBAN_LETTER_DIGITS) for cc in IBAN_LENGTHS}


def iban_valid(text: str) -> bool:
    """Whether ``text`` is an IBAN: spaces allowed, letters of either case, the length listed
    for its country, and the ISO 7064 mod-97 check equal to 1."""
    compact = text.replace(" ", "").upper()
    if not compact.isascii() or _IBAN_SHAPE.fullmatch(compact) is None:
        return False
    return IBAN_LENGTHS.get(compact[:2]) == len(compact) and _iban_mod97_ok(compact)


def _iban_mod97_ok(compact: str) -> bool:
    """ISO 7064 mod-97 of a compact, upper-case IBAN of a listed country: move the country code
    and check digits to the end, read letters as 10..35, and the number mod 97 must be 1."""
    bban = compact[4:]
    if not bban.isdigit():  # most BBANs are all digits and need no translation
        bban = bban.translate(_IBAN_LETTER_DIGITS)
    return int(bban + _IBAN_COUNTRY_DIGITS[compact[:2]] + compact[2:4]) % 97 == 1


_SSN_SHAPE: Final = re.compile(r"([0-9]{3})([ -]?)([0-9]{2})\2([0-9]{4})")


def ssn_valid(text: str) -> bool:
    """Whether ``text`` is a possible US SSN: AAA-GG-SSSS (hyphens or spaces) or nine digits.

    Never issued (SSA rules): area 000, 666 and 900-999, group 00, serial 0000.
    """
    m = _SSN_SHAPE.fullmatch(text)
    if m is None:
        return False
    area, group, serial = m.group(1, 3, 4)
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _digits_only(text: str) -> str:
    return "".join(ch for ch in text if "0" <= ch <= "9")


def _validate_luhn(text: str) -> bool:
    return luhn_valid(_digits_only(text))


def _validate_iban(text: str) -> bool:
    # Separators other than spaces (hyphens, dots) are dropped too: a custom pattern may allow them.
    return iban_valid("".join(ch for ch in text if ch.isascii() and ch.isalnum()))


def _validate_ssn(text: str) -> bool:
    digits = _digits_only(text)
    return len(digits) == 9 and ssn_valid(digits)


_VALIDATOR_FUNCTIONS: Final[dict[str, Callable[[str], bool]]] = {
    "luhn": _validate_luhn,
    "iban_mod97": _validate_iban,
    "ssn": _validate_ssn,
}


# ---------------------------------------------------------------------------- patterns
#
# Patterns are compiled without re.ASCII but spell digits as [0-9]: a digit must be an ASCII
# digit (the validators and the pre-filter only know those), while \w in the lookarounds stays
# Unicode, so "número4111..." is still one word, not a card.
#
# "Starts a number" below is: not after a word character, a decimal point or comma, a sign, or
# a digit and one separator ("1 4111 ...", "ORD-2024-..."), so a match never begins inside a
# longer number. Each pattern consumes its first character and then looks behind past it
# ("[0-9](?<![\w.,+-][0-9])" is "(?<![\w.,+-])[0-9]"), which keeps the fast skip (see above).

# An Accept looks at a match and returns where the finding stops (m.end(), or less for an IBAN
# followed by a stray group), or None to reject it. A pattern that needs no Accept (every
# check it makes is in the regex, done in C) has None.
Accept = Callable[[re.Match[str]], int | None]


@dataclass(frozen=True, slots=True)
class _Matcher:
    bit: int  # pre-filter bit (see _builtin_hits); 0 for a custom detector: always run
    pattern: re.Pattern[str]
    accept: Accept | None
    # The shortest text the pattern can match: no search is started on a shorter remainder,
    # which saves the second, failing search after a value that is all one finding.
    min_length: int
    # After a rejected match, search again one character after its start, or after its end.
    # After its end is cheaper and is right when no match can start inside a rejected one
    # (cards, SSNs: nothing "starts a number" inside a run of digits and separators), and for
    # custom patterns, where a match may be long and a retry at every offset quadratic.
    retry_inside: bool


_CARD: Final = re.compile(
    r"""
    [0-9] (?<![\w.,+-][0-9]) (?<![0-9][ -][0-9])             # starts a number
    (?: [0-9]{12,18}                                          # bare, 13-19 digits
      | [0-9]{3} (?P<sep>[ -]) [0-9]{4} (?: (?P=sep) [0-9]{1,4} ){1,3}  # groups of four
      | [0-9]{3} (?P<sep6>[ -]) [0-9]{6} (?P=sep6) [0-9]{4,5} ) # 4-6-5 Amex, 4-6-4 Diners
    (?! \w | [.,][0-9] )             # not followed by a word or a decimal part ("...1111.5")
    """,
    re.VERBOSE,
)


def _has_issuer_prefix(digits: str) -> bool:
    """Whether ``digits`` opens with an issuer prefix (IIN) of a major card network.

    Visa 4; Mastercard 51-55 and 2221-2720; Amex 34, 37; Discover 6011, 65, 644-649; JCB 35;
    Diners 30, 36, 38; UnionPay 62; Maestro 50, 56-69. Together: any 4, 5 or 6, the 3x above,
    and 2221-2720. No card starts with 0, 1, 7, 8 or 9: that rejects 13-digit epoch
    milliseconds (1xxxxxxxxxxxx until 2033) and many numeric ids.
    """
    first = digits[0]
    if first in "456":
        return True
    if first == "3":
        return digits[1] in "045678"
    return first == "2" and 2221 <= int(digits[:4]) <= 2720


def card_number_ok_py(text: str) -> bool:
    """Whether a match of the card pattern (ASCII digits, spaces, hyphens) is a card number:
    13-19 digits, an issuer prefix if the digits are bare, the Luhn check, and not one
    digit repeated. The reference for the compiled ``card_number_ok`` (``_cards.c``)."""
    if not text.isascii():
        return False
    digits = text.encode().translate(None, b" -")
    length = len(digits)
    if not 13 <= length <= 19 or not digits.isdigit():
        return False
    # A bare run of digits is the ambiguous case (ids, epoch milliseconds, the digits of a
    # float): it must also carry an issuer prefix. A grouped number is laid out like a card.
    if length == len(text) and not _has_issuer_prefix(text):
        return False
    # 0000000000000 and the like pass Luhn but are placeholders, not cards (tested after
    # Luhn, which most non-cards fail).
    return _luhn_ok(digits) and bool(digits.strip(digits[:1]))


card_number_ok: Callable[[str], bool]
try:  # compiled where a C compiler is present (setuptools), same results, ~5x faster
    from ._cards import card_number_ok
except ImportError:  # pragma: no cover - depends on the build
    card_number_ok = card_number_ok_py
CARDS_COMPILED: Final = card_number_ok is not card_number_ok_py


def _accept_card(m: re.Match[str]) -> int | None:
    return m.end() if card_number_ok(m.group()) else None


# SSNs need separators (the same one twice): a bare 9-digit run is as likely an order id, a
# ZIP+4 or a phone, and nearly all 9-digit numbers pass the range checks. The ranges of
# ssn_valid are checked in the pattern itself.
_SSN: Final = re.compile(
    r"""
    [0-8] (?<![\w.,+-][0-8]) (?<![0-9][ -][0-8])   # starts a number; no area 900-999
    [0-9]{2} (?<!000) (?<!666)                     # no area 000 or 666
    (?P<sep>[ -]) (?!00) [0-9]{2} (?P=sep) (?!0000) [0-9]{4}   # no group 00, no serial 0000
    (?! \w | [.,][0-9] | (?P=sep)[0-9] )           # not the head of a longer grouped number
    """,
    re.VERBOSE,
)


# A practical subset of RFC 5322: an unquoted dot-atom local part and a DNS name whose last
# label (the TLD) has 2 or more letters; ASCII only (internationalised domains must be in
# punycode). Repeats are bounded by the RFC's own limits (64 for a local part, 63 per label).
#
# "icon@2x.png" and friends are asset names, common in data; no mailbox has such a TLD. The
# lookahead refuses them in C, at the start of each TLD the engine tries.
_EMAIL: Final = re.compile(
    r"""
    [A-Za-z0-9._%+-] (?<![\w.%+-][A-Za-z0-9._%+-])   # the start of a local part, not inside one
    [A-Za-z0-9._%+-]{0,63} @ (?: [A-Za-z0-9-]{1,63} \. ){1,8}
    (?! (?i: png | jpe?g | gif | svg | webp | bmp | ico | pdf | css | js | html ) (?![\w-]) )
    [A-Za-z]{2,63}
    (?! [\w-] | \.[A-Za-z0-9] )
    """,
    re.VERBOSE,
)


# Phones, three shapes. A plain run of digits is never a phone (ids); dates, times, IPv4
# addresses, versions and decimals fit none of the shapes.
#
# E.164: "+" and 8-15 digits, in groups split by one space, dot or hyphen, or by parentheses
# ("+1 (555) 234-5678", "+44 (0)20 7946 0958"). Every group after the first starts with a
# separator, so a digit run can be read one way only: no backtracking blow-up.
_E164: Final = re.compile(
    r"""
    \+ (?<![\w+]\+)
    [0-9]{1,15} (?: (?: [ .-]?\( | \)[ .-]? | [ .-] ) [0-9]{1,15} ){0,7}
    (?! \w | [.-]?[0-9] )
    """,
    re.VERBOSE,
)
_TWO_DIGITS: Final = re.compile(r"[0-9]{2}")


def _accept_e164(m: re.Match[str]) -> int | None:
    text = m.group()
    digits = _digits_only(text)
    # Country codes never start with 0; E.164 allows at most 15 digits, and fewer than 8 is a
    # short code or a timezone offset ("+05:30", "+0000"). Some group of a real number has two
    # digits or more (the pre-filter relies on it).
    if not 8 <= len(digits) <= 15 or digits[0] == "0" or _TWO_DIGITS.search(text) is None:
        return None
    opened = text.count("(")
    if opened != text.count(")") or opened > 1 or (opened and text.index("(") > text.index(")")):
        return None
    return m.end()


# North American: (NXX) NXX-XXXX, NXX-NXX-XXXX or NXX.NXX.XXXX (the same separator twice), area
# code and exchange starting 2-9. Space-only "555 234 5678" is left out: it reads as well as
# three quantities. After a trunk prefix ("1-800-555-0199") the finding starts at the area
# code: the second lookbehind alternative lets a number follow "1-" that itself starts a number.
_NANP: Final = re.compile(
    r"""
    [(2-9]
    (?: (?<![\w.,+-][(2-9]) (?<![0-9][ -][(2-9])
      | (?<=1[ .-][(2-9]) (?<![\w.,+-]1[ .-][(2-9]) )
    (?: (?<=\() [2-9][0-9]{2} \)\ ? [2-9][0-9]{2} [ .-]
      | (?<=[2-9]) [0-9]{2} (?P<sep>[.-]) [2-9][0-9]{2} (?P=sep) )
    [0-9]{4}
    (?! \w | [.-][0-9] )
    """,
    re.VERBOSE,
)

# UK national: 0, a non-zero digit, and 0AA BBBB CCCC, 0AAA BBB CCCC or 0AAAA BBBBB[B]. Spaces
# only: a hyphenated 0xx-xxxx-xxxx is more often an order or invoice number.
_UK: Final = re.compile(
    r"""
    0 (?<![\w.,+-]0) (?<![0-9][ -]0)                          # starts a number
    [1-9] (?: [0-9]\ [0-9]{4}\ [0-9]{4} | [0-9]{2}\ [0-9]{3}\ [0-9]{4} | [0-9]{3}\ [0-9]{5,6} )
    (?! \w | [ .-]?[0-9] )
    """,
    re.VERBOSE,
)


# Two capitals, two check digits, then 11-30 capitals or digits (15-34 in all), bare or in
# groups of four split by single spaces. Capitals only: lowercase look-alikes are words.
_IBAN: Final = re.compile(
    r"""
    [A-Z] (?<!\w[A-Z]) [A-Z][0-9]{2}
    (?: [A-Z0-9]{11,30}
      | (?: \ [A-Z0-9]{4} ){2,7} (?: \ [A-Z0-9]{1,3} )? )
    (?!\w)
    """,
    re.VERBOSE,
)


def _accept_iban(m: re.Match[str]) -> int | None:
    text = m.group()
    compact = text.replace(" ", "")
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is None or len(compact) < expected:
        return None
    if len(compact) > expected:
        # A spaced IBAN followed by a word of 1-4 capitals or digits ("... 7034 EUR1") matched
        # one group too many; keep the IBAN if the country's length ends at a group boundary.
        if " " not in text or expected % 4:
            return None
        text = text[: expected + expected // 4 - 1]
        compact = compact[:expected]
    # The pattern admits capitals and digits only: no need for iban_valid's normalising.
    return m.start() + len(text) if _iban_mod97_ok(compact) else None


# Secrets. Every format has a literal prefix (so the alternation starts with literals only, and
# the engine skips to their first letters) and a bounded body; lookarounds keep a match from
# starting or stopping inside a longer token.
# * JWT: three base64url segments, the header starting "eyJ" ('{"' encoded). A real header is
#   at least 16 characters ('{"alg":"none"}' alone is 20); an unsigned token's third segment
#   is empty.
# * AWS access key ids: AKIA (long-term) or ASIA (temporary) and 16 capitals or digits.
# * GitHub: ghp_/gho_/ghu_/ghs_/ghr_ and 36+ alphanumerics; fine-grained github_pat_...
# * Slack: xoxb-/xoxa-/xoxp-/xoxr-/xoxs- and the rest of the token.
# * Stripe: secret, restricted and publishable live keys.
# * Google API keys: AIza and exactly 35 more.
# * OpenAI-style: sk- and 20+ alphanumerics, or sk-proj-/sk-svcacct-/sk-admin- keys.
# * PEM private keys (PKCS#1, PKCS#8, encrypted, OpenSSH, EC, PGP armour) from the BEGIN line
#   through the matching END line. A block cut short (no END: a truncated column) is masked to
#   the end of its key material rather than left readable.
# Key material and armour headers ("Proc-Type: 4,ENCRYPTED", "DEK-Info: AES-128-CBC,..."). A
# run of five hyphens is not body: it is the END line, or the next block's BEGIN line, where a
# block without its END stops (so that a value of many BEGIN lines is not rescanned to its end
# once per line).
_PEM_BODY: Final = r"A-Za-z0-9+/=\s:,.()"
_SECRET: Final = re.compile(
    r"""
    eyJ (?<![\w-]eyJ) [A-Za-z0-9_-]{13,} \. [A-Za-z0-9_-]{2,} \. [A-Za-z0-9_-]*
  | AKIA (?<![A-Za-z0-9]AKIA) [A-Z0-9]{16} (?![A-Za-z0-9])
  | ASIA (?<![A-Za-z0-9]ASIA) [A-Z0-9]{16} (?![A-Za-z0-9])
  | AIza (?<![\w-]AIza) [A-Za-z0-9_-]{35} (?![\w-])
  | gh[pousr]_ (?<!\wgh[pousr]_) [A-Za-z0-9]{36,251} (?!\w)
  | github_pat_ (?<!\wgithub_pat_) [A-Za-z0-9_]{22,244} (?!\w)
  | xox[baprs]- (?<![\w-]xox[baprs]-) [A-Za-z0-9-]{11,250} (?![\w-])
  | sk_live_ (?<!\wsk_live_) [A-Za-z0-9]{10,247} (?!\w)
  | rk_live_ (?<!\wrk_live_) [A-Za-z0-9]{10,247} (?!\w)
  | pk_live_ (?<!\wpk_live_) [A-Za-z0-9]{10,247} (?!\w)
  | sk- (?<![\w-]sk-) (?P<openai> (?:proj|svcacct|admin)- [A-Za-z0-9_-]{20,400}
                                | [A-Za-z0-9]{20,400} ) (?![\w-])
  | -----BEGIN\ (?P<pem>(?:[A-Z0-9]+\ ){0,3}) PRIVATE\ KEY(?:\ BLOCK)?-----
        (?: [PEM_BODY] | -(?!----) )*?
        (?: -----END\ (?P=pem) PRIVATE\ KEY(?:\ BLOCK)?----- | (?=[^PEM_BODY-]|-----) | \Z )
    """.replace("PEM_BODY", _PEM_BODY),
    re.VERBOSE,
)
_PEM_KEY_MATERIAL: Final = re.compile(r"[A-Za-z0-9+/=]{16}")


def _accept_secret(m: re.Match[str]) -> int | None:
    body = m.group("openai")
    if body is not None:
        # "sk-" + 20 characters also fits SKUs and slugs ("sk-winterjacketsblue2024"); a real
        # key is random base62: not all letters, not all digits, and of mixed case.
        if body.isalpha() or body.isdigit() or body.islower() or body.isupper():
            return None
        return m.end()
    if m.group("pem") is not None and _PEM_KEY_MATERIAL.search(m.group()) is None:
        return None  # a BEGIN line without key material is not a key
    return m.end()


# ---------------------------------------------------------------------------- pre-filter
#
# Bits for the built-in patterns, and a necessary condition of each, tested with substring
# searches on the value and on canonical ASCII copies of it. A Python regex scan costs about
# 10 ns per character and str.translate more; bytes.translate is a table lookup per byte and
# `in` on str a C search, so a clean value costs a few hundred nanoseconds. (`in` and find()
# on bytes were measured 5x slower than decoding the copy to str first.)
#
# Shape copy (_SHAPE_TABLE): ASCII digits -> "9", capitals -> "A", space . - ( ) -> "-", other
# non-ASCII bytes -> "~". Card, SSN, phone and IBAN all hold two adjacent digits (the E.164
# validator insists on it), so "99" gates the rest:
#   card:  4 digits, a separator, 4 digits (every grouped layout), or 13 digits in a row;
#   ssn:   999-99-9999;
#   nanp:  9-999-9999 (NXX-NXX-XXXX, "(NXX)NXX-XXXX") or --999-9999 ("(NXX) NXX-XXXX");
#   uk:    999-9999-9999 or 99999-99999 not after a digit (_UK_START), or 9-999-9999;
#   e164:  "+" and a digit followed by a digit pair or a separator;
#   iban:  AA99.
#   The first four all contain 99-9999, which gates them; card, nanp and uk contain 999-9999.
# Token copy (_TOKEN_TABLE): [A-Za-z0-9_-] -> "w", anything else -> " ".
#   secret: 16 token characters in a row (every token format is at least that long in one
#           piece), or "-----BEGIN" for a PEM block.
# email: "@" in the value.
_CARD_BIT: Final = 1
_SSN_BIT: Final = 2
_EMAIL_BIT: Final = 4
_E164_BIT: Final = 8
_NANP_BIT: Final = 16
_UK_BIT: Final = 32
_IBAN_BIT: Final = 64
_SECRET_BIT: Final = 128
_SHAPE_BITS: Final = _CARD_BIT | _SSN_BIT | _E164_BIT | _NANP_BIT | _UK_BIT | _IBAN_BIT
_ALL_BITS: Final = _SHAPE_BITS | _EMAIL_BIT | _SECRET_BIT


def _shape_byte(b: int) -> int:
    if b >= 0x80:
        return ord("~")  # keeps the copy ASCII, the fastest case for decode()
    ch = chr(b)
    if "0" <= ch <= "9":
        return ord("9")
    if "A" <= ch <= "Z":
        return ord("A")
    return ord("-") if ch in " .-()" else b


def _token_byte(b: int) -> int:
    ch = chr(b)
    return ord("w") if b < 0x80 and (ch.isalnum() or ch in "_-") else ord(" ")


_SHAPE_TABLE: Final = bytes(_shape_byte(b) for b in range(256))
_TOKEN_TABLE: Final = bytes(_token_byte(b) for b in range(256))
_TOKEN_RUN_LENGTH: Final = 16
_TOKEN_RUN: Final = "w" * _TOKEN_RUN_LENGTH
# The shortest value any built-in pattern can find: an e-mail address "a@b.co".
_MIN_LENGTH: Final = 6


# A UK number in the 3-4-4 or 5-5/6 spacing starts a number: its digits are not preceded by
# another digit. (The 4-digit groups of a card number hold "999-9999-9999", never at the
# start of a number; without this, every card-shaped value also ran the UK pattern.)
_UK_START: Final = re.compile(r"(?<!9)(?:999-9999-9999|99999-99999)")


def _builtin_hits(text: str, enabled: int) -> int:
    """Bits of the enabled built-in patterns whose necessary condition holds for ``text``."""
    if not enabled or len(text) < _MIN_LENGTH:
        return 0
    hits = _EMAIL_BIT if "@" in text else 0
    try:
        raw = text.encode()
    except UnicodeEncodeError:  # lone surrogates, from a decode with surrogateescape
        raw = text.encode("utf-8", "surrogatepass")
    if enabled & _SHAPE_BITS:
        shape = raw.translate(_SHAPE_TABLE).decode()
        if "99" in shape:  # one test for the usual value: no two digits in a row
            if "99-9999" in shape:
                if "999-99-9999" in shape:
                    hits |= _SSN_BIT
                if "999-9999" in shape:  # in each of the card, NANP and UK shapes below
                    if "9999-9999" in shape:
                        hits |= _CARD_BIT
                    if "9-999-9999" in shape or "--999-9999" in shape:
                        hits |= _NANP_BIT | _UK_BIT
                    elif ("999-9999-9999" in shape or "99999-99999" in shape) and _UK_START.search(
                        shape
                    ):
                        hits |= _UK_BIT
            if "9999999999999" in shape:
                hits |= _CARD_BIT
            if "+9" in shape and ("+999" in shape or "+99-" in shape or "+9-" in shape):
                hits |= _E164_BIT
            if "AA99" in shape:
                hits |= _IBAN_BIT
    if (
        enabled & _SECRET_BIT
        and len(raw) >= _TOKEN_RUN_LENGTH
        and (_TOKEN_RUN in raw.translate(_TOKEN_TABLE).decode() or "-----BEGIN" in text)
    ):
        hits |= _SECRET_BIT
    return hits & enabled


# The same pre-filter as data, for the compiled DataRow rewriter (protocols.postgres.rows.
# ScreenedValue): it screens UTF-8 values without a Python call, and hands over only the
# values some needle selects. A needle is (table, text, bits, guard, at_start): table 0 is
# the shape copy, 1 the token copy, 2 the edge copy, -1 the value's own bytes; guard is an
# earlier needle that must have been found; at_start: the text must begin the copy. Each
# line mirrors a test of _builtin_hits (the unit tests check that the two agree, except
# "-----BEGIN" in a value under 16 bytes, which this screen lets through and no pattern
# can match).
#
# Edge copy: ASCII digits -> "9", space . - ( ) -> "-", anything else -> "#": a digit run in
# it is preceded by "-", "#" or nothing, which is how the needles say _UK_START's (?<!9).
_EDGE_TABLE: Final = bytes(
    ord("9") if 48 <= b <= 57 else ord("-") if b in b" .-()" else ord("#") for b in range(256)
)
SCREEN_TABLES: Final = (_SHAPE_TABLE, _TOKEN_TABLE, _EDGE_TABLE)
_SCREEN: Final[tuple[tuple[int, bytes, int, int, bool], ...]] = (
    (-1, b"@", _EMAIL_BIT, -1, False),  # 0
    (0, b"99", 0, -1, False),  # 1: gates every shape below
    (0, b"99-9999", 0, 1, False),  # 2
    (0, b"999-99-9999", _SSN_BIT, 2, False),  # 3
    (0, b"999-9999", 0, 2, False),  # 4
    (0, b"9999-9999", _CARD_BIT, 4, False),  # 5
    (0, b"9-999-9999", _NANP_BIT | _UK_BIT, 4, False),  # 6
    (0, b"--999-9999", _NANP_BIT | _UK_BIT, 4, False),  # 7
    (0, b"999-9999-9999", 0, 4, False),  # 8: UK 3-4-4, where it starts a number (_UK_START):
    (2, b"-999-9999-9999", _UK_BIT, 8, False),  # 9
    (2, b"#999-9999-9999", _UK_BIT, 8, False),  # 10
    (2, b"999-9999-9999", _UK_BIT, 8, True),  # 11
    (0, b"99999-99999", 0, 4, False),  # 12: UK 5-5/6, the same way
    (2, b"-99999-99999", _UK_BIT, 12, False),  # 13
    (2, b"#99999-99999", _UK_BIT, 12, False),  # 14
    (2, b"99999-99999", _UK_BIT, 12, True),  # 15
    (0, b"9999999999999", _CARD_BIT, 1, False),  # 16
    (0, b"+9", 0, 1, False),  # 17
    (0, b"+999", _E164_BIT, 17, False),  # 18
    (0, b"+99-", _E164_BIT, 17, False),  # 19
    (0, b"+9-", _E164_BIT, 17, False),  # 20
    (0, b"AA99", _IBAN_BIT, 1, False),  # 21
    (1, _TOKEN_RUN.encode(), _SECRET_BIT, -1, False),  # 22
    (-1, b"-----BEGIN", _SECRET_BIT, -1, False),  # 23
)

ByteScreen = tuple[int, tuple[bytes, ...], tuple[tuple[int, bytes, int, int, bool], ...]]


def _byte_screen(enabled: int) -> ByteScreen:
    """(min_length, tables, needles) of the screen for the enabled bits: needles that can
    add none of them are left out, unless a kept needle needs them as its guard."""
    keep = [bool(bits & enabled) for _, _, bits, _, _ in _SCREEN]
    for i in range(len(_SCREEN) - 1, -1, -1):
        guard = _SCREEN[i][3]
        if keep[i] and guard >= 0:
            keep[guard] = True
    index: dict[int, int] = {}
    needles: list[tuple[int, bytes, int, int, bool]] = []
    for i, (table, text, bits, guard, at_start) in enumerate(_SCREEN):
        if keep[i]:
            index[i] = len(needles)
            guard = index[guard] if guard >= 0 else -1
            needles.append((table, text, bits & enabled, guard, at_start))
    return _MIN_LENGTH, SCREEN_TABLES, tuple(needles)


_BUILTINS: Final[dict[str, tuple[_Matcher, ...]]] = {
    "credit_card": (_Matcher(_CARD_BIT, _CARD, _accept_card, 13, retry_inside=False),),
    "ssn": (_Matcher(_SSN_BIT, _SSN, None, 11, retry_inside=False),),
    "email": (_Matcher(_EMAIL_BIT, _EMAIL, None, 6, retry_inside=True),),
    "phone": (
        _Matcher(_E164_BIT, _E164, _accept_e164, 9, retry_inside=True),
        _Matcher(_NANP_BIT, _NANP, None, 12, retry_inside=True),
        _Matcher(_UK_BIT, _UK, None, 12, retry_inside=True),
    ),
    "iban": (_Matcher(_IBAN_BIT, _IBAN, _accept_iban, 15, retry_inside=True),),
    "secret": (_Matcher(_SECRET_BIT, _SECRET, _accept_secret, 16, retry_inside=True),),
}


# ---------------------------------------------------------------------------- detector set

Finding = tuple[int, int, int]  # start, stop, rank (the detector's index in names)
# A matcher as the scan loop wants it, unpacked from one tuple rather than read attribute by
# attribute: (rank, pattern.search, accept, min_length, retry_inside).
_Step = tuple[int, Callable[[str, int], "re.Match[str] | None"], Accept | None, int, bool]
Plan = tuple[_Step, ...]


def run_plan(plan: Plan, text: str) -> list[Finding]:
    """Every finding of the plan's matchers, overlaps and all, in no particular order."""
    return run_plans((plan,), (text,))[0]


def run_plans(plans: Sequence[Plan], texts: Sequence[str]) -> list[list[Finding]]:
    """``run_plan`` of ``plans[i]`` over ``texts[i]``, for a batch of values in one call (the
    DataRow rewriter hands over a column's values per buffer: a call per value cost more
    than most values' matching)."""
    results: list[list[Finding]] = []
    for plan, text in zip(plans, texts, strict=True):
        found: list[Finding] = []
        results.append(found)
        length = len(text)
        for rank, search, accept, min_length, retry_inside in plan:
            whole = False
            pos = 0
            last = length - min_length  # the last offset a match can start at
            while pos <= last:
                m = search(text, pos)
                if m is None:
                    break
                start = m.start()
                stop = m.end() if accept is None else accept(m)
                if stop is not None and stop > start:
                    found.append((start, stop, rank))
                    if start == 0 and stop == length:
                        # The whole value: any later finding overlaps it and is no longer,
                        # and later matchers rank no better, so none of them could be kept.
                        whole = True
                        break
                    pos = stop
                elif retry_inside or m.end() == start:
                    pos = start + 1
                else:
                    pos = m.end()
            if whole:
                break
    return results


def _resolve_overlaps(found: list[Finding]) -> list[Finding]:
    """Non-overlapping findings sorted by start: longest first, then earliest, then rank.

    Findings are sorted by start and cut into clusters of transitively overlapping spans; only
    inside a cluster (a handful of spans) is the quadratic greedy choice made.
    """
    found.sort()
    kept: list[Finding] = []
    cluster: list[Finding] = []
    cluster_stop = -1
    for finding in found:
        if cluster and finding[0] >= cluster_stop:
            kept.extend(_choose(cluster))
            cluster = []
        cluster_stop = max(cluster_stop, finding[1]) if cluster else finding[1]
        cluster.append(finding)
    kept.extend(_choose(cluster))
    return kept


def _choose(cluster: list[Finding]) -> list[Finding]:
    if len(cluster) == 1:
        return cluster
    chosen: list[Finding] = []
    for finding in sorted(cluster, key=lambda f: (f[0] - f[1], f[0], f[2])):
        if all(finding[1] <= c[0] or c[1] <= finding[0] for c in chosen):
            chosen.append(finding)
    chosen.sort()
    return chosen


@dataclass(frozen=True, slots=True, eq=False)
class DetectorSet:
    """Compiled set of detectors; immutable; safe to share between sessions."""

    names: tuple[str, ...]
    _enabled: int  # pre-filter bits of the built-in patterns in the set
    # For every value of the pre-filter's bits, the matchers to run (``run_plan``), in rank
    # order: those whose bit is set, and custom ones always. Built once, so a value costs one
    # tuple index rather than a test per matcher; bits of patterns not in the set select none.
    plans: tuple[Plan, ...]
    # The pre-filter as a byte screen for UTF-8 values (see _SCREEN), or None when a custom
    # detector is in the set: a custom regex has no necessary condition to screen on.
    screen: ByteScreen | None

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping (start, stop, detector_name) spans, sorted by start. Overlaps: keep
        the longest, then the first."""
        return self._find(text, _builtin_hits(text, self._enabled))

    def hits(self, text: str) -> int:
        """The pre-filter's bits for ``text``: which of the set's built-in patterns may find
        something in it (0: none can)."""
        return _builtin_hits(text, self._enabled)

    def redact(self, text: str, replace: Callable[[str, str], str]) -> str | None:
        """None when nothing was found (the hot path: caller keeps the original bytes);
        otherwise text with every found span s replaced by replace(span_text, detector_name)."""
        found = run_plan(self.plans[_builtin_hits(text, self._enabled)], text)
        return self.substitute(text, found, replace) if found else None

    def substitute(
        self, text: str, found: list[Finding], replace: Callable[[str, str], str]
    ) -> str:
        """``text`` with the ``found`` spans (at least one, from ``run_plan``) replaced."""
        if len(found) == 1:  # the usual case: one finding, often the whole value
            start, stop, rank = found[0]
            return text[:start] + replace(text[start:stop], self.names[rank]) + text[stop:]
        spans = self._spans(found)
        parts: list[str] = []
        pos = 0
        for start, stop, name in spans:
            parts.append(text[pos:start])
            parts.append(replace(text[start:stop], name))
            pos = stop
        parts.append(text[pos:])
        return "".join(parts)

    def _find(self, text: str, hits: int) -> list[tuple[int, int, str]]:
        """Findings of the matchers the pre-filter ``hits`` select (tests pass all bits)."""
        return self._spans(run_plan(self.plans[hits & _ALL_BITS], text))

    def _spans(self, found: list[Finding]) -> list[tuple[int, int, str]]:
        names = self.names
        if len(found) <= 1:
            return [(start, stop, names[rank]) for start, stop, rank in found]
        return [(start, stop, names[rank]) for start, stop, rank in _resolve_overlaps(found)]


# ---------------------------------------------------------------------------- compiling


def _compile_custom(detector: CustomDetector) -> _Matcher:
    name = detector.name
    try:
        pattern = re.compile(detector.pattern)
    except (re.error, TypeError) as exc:
        raise DetectorError(f"custom detector {name!r}: invalid regex: {exc}") from None
    if pattern.fullmatch("") is not None:
        raise DetectorError(f"custom detector {name!r}: the regex matches the empty string")
    if detector.validator is None:
        return _Matcher(0, pattern, None, 1, retry_inside=False)
    check = _VALIDATOR_FUNCTIONS.get(detector.validator)
    if check is None:
        raise DetectorError(
            f"custom detector {name!r}: unknown validator {detector.validator!r}"
            f" (known: {', '.join(VALIDATORS)})"
        )

    def accept(m: re.Match[str]) -> int | None:
        return m.end() if check(m.group()) else None

    return _Matcher(0, pattern, accept, 1, retry_inside=False)


def _custom_by_name(custom: Sequence[CustomDetector]) -> dict[str, CustomDetector]:
    by_name: dict[str, CustomDetector] = {}
    for detector in custom:
        if not detector.name:
            raise DetectorError("custom detector with an empty name")
        if detector.name in _BUILTINS:
            raise DetectorError(
                f"custom detector {detector.name!r} has the name of a built-in detector"
            )
        if detector.name in by_name:
            raise DetectorError(f"custom detector {detector.name!r} is defined twice")
        by_name[detector.name] = detector
    return by_name


def compile_detectors(names: Sequence[str], custom: Sequence[CustomDetector] = ()) -> DetectorSet:
    """names: builtin names or custom detector names (custom ones must be in `custom`).

    A name listed twice counts once. Every detector in ``custom`` is checked (regex,
    validator), used or not, so a configuration error shows at load time. Raises DetectorError.
    """
    if isinstance(names, str):
        raise DetectorError(f"detector names must be a list of names, not the string {names!r}")
    compiled = {name: _compile_custom(d) for name, d in _custom_by_name(custom).items()}
    unique = tuple(dict.fromkeys(names))
    matchers: list[tuple[int, _Matcher]] = []  # (rank, matcher)
    for rank, name in enumerate(unique):
        if name in _BUILTINS:
            matchers.extend((rank, matcher) for matcher in _BUILTINS[name])
        elif name in compiled:
            matchers.append((rank, compiled[name]))
        else:
            raise DetectorError(
                f"unknown detector {name!r} (built-in: {', '.join(BUILTIN_DETECTORS)};"
                " or a custom detector's name)"
            )
    enabled = 0
    for _, matcher in matchers:
        enabled |= matcher.bit
    plans = tuple(
        tuple(
            (rank, m.pattern.search, m.accept, m.min_length, m.retry_inside)
            for rank, m in matchers
            if m.bit == 0 or hits & m.bit
        )
        for hits in range(_ALL_BITS + 1)
    )
    custom_in_set = any(m.bit == 0 for _, m in matchers)
    return DetectorSet(unique, enabled, plans, None if custom_in_set else _byte_screen(enabled))
