"""Mask styles on text values, and the keyed hash the typed encoders derive values from.

A style turns one value into its masked form. This module works on decoded text only;
``pg_values`` and ``my_values`` turn wire bytes into text and back and pick type-correct
stand-ins for values that are not text (numbers, dates, UUIDs...).

Rules the styles keep:

* ``redact`` writes the fixed marker ``REDACTED`` whatever the value: the marker says
  nothing about the value's length.
* ``last4`` / ``keep_last`` keep the last N *content* characters and replace every other
  content character by ``*``. Separators (``SEPARATORS``: space, ``-``, ``.``, ``/``,
  brackets, ``+``, ``:``, ``_``, ``,``, ``@``) stay where they are, so
  ``4111-1111-1111-1234`` becomes ``****-****-****-1234``. A value with N content
  characters or fewer is masked entirely: a short value is never revealed whole.
* ``hash`` is HMAC-SHA-256 under the configured key, written as the first 32 lowercase
  hex digits (128 bits), without a prefix, so that it fits ``char(32)``-sized columns and
  still looks like an identifier. It is deterministic: equal values give equal masks under
  one key, so masked columns still join and group; without the key it cannot be reversed
  by hashing guesses.
* ``null`` gives SQL NULL (``None``); ``fixed`` gives the configured value; ``email``
  keeps the domain after the last ``@`` (``****@example.com``) and redacts a value with no
  ``@``.

Text here is Python ``str``; callers decode with ``errors="surrogateescape"`` so that bytes
that are not valid in the connection's encoding survive a kept character unchanged, and the
hash is taken over the UTF-8 (surrogate-escaped) form: the same logical value hashes the
same whatever the client encoding.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

STYLES: tuple[str, ...] = ("redact", "last4", "keep_last", "hash", "null", "fixed", "email")
REDACTED: str = "****"

# Characters that ``keep_last`` leaves in place: the punctuation that formats card numbers,
# phone numbers, IBANs and addresses. Everything else (letters and digits of any script,
# symbols, undecodable bytes) is content and is masked.
SEPARATORS: frozenset[str] = frozenset(" \t-./()+:_,@")
MASK_CHAR = "*"
HASH_HEX_CHARS = 32
_HASH_BYTES = HASH_HEX_CHARS // 2
# numeric allows 131072 digits before the point and 16383 after; float8 stays within e±324.
_MAX_EXPONENT = 140_000

# One pass in C over the part to mask: every character that is not a separator becomes '*'.
_CONTENT = re.compile(r"[^ \t\-./()+:_,@]")
_SEPARATOR_CHARS = "".join(sorted(SEPARATORS))
# The same for ASCII text, as a str.translate table (only used on ASCII-only text, so no
# character outside the table can pass through unmasked).
_ASCII_MASK = {i: i if chr(i) in SEPARATORS else ord(MASK_CHAR) for i in range(128)}


@dataclass(frozen=True, slots=True)
class Style:
    name: str  # one of STYLES
    keep_last: int = 4  # for last4 (always 4) and keep_last
    value: str = ""  # for fixed
    hash_key: bytes = b""  # for hash (HMAC-SHA-256 key); non-empty required for hash


class StyleError(ValueError):
    """A style that cannot be applied: unknown name, hash without key, keep_last < 0."""


def check_style(style: Style) -> None:
    """Raise StyleError if ``style`` cannot be applied."""
    if style.name not in STYLES:
        raise StyleError(f"unknown mask style {style.name!r} (known: {', '.join(STYLES)})")
    if style.name == "hash" and not style.hash_key:
        raise StyleError('style "hash" needs a non-empty hash_key')
    if style.name == "keep_last" and style.keep_last < 0:
        raise StyleError(f"keep_last must be 0 or more, not {style.keep_last}")


def kept_count(style: Style) -> int:
    """How many trailing content characters ``last4`` / ``keep_last`` keep."""
    return 4 if style.name == "last4" else style.keep_last


@lru_cache(maxsize=16)
def _keyed(key: bytes) -> hmac.HMAC:
    # The key schedule (two SHA-256 blocks of padded key) done once per key; each value
    # then costs a copy of the state and its own blocks (~20% less than hmac.digest).
    return hmac.new(key, digestmod="sha256")


def hash_digest(key: bytes, data: bytes) -> bytes:
    """Raw 32-byte HMAC-SHA-256 of ``data`` under ``key``."""
    mac = _keyed(key).copy()
    mac.update(data)
    return mac.digest()


def utf8(text: str) -> bytes:
    """The bytes ``hash`` hashes: UTF-8, surrogate-escaped bytes as they came (so a value
    hashes alike whatever the client encoding); never raises (a lone surrogate that no
    decoder produced, say from a JSON ``\\ud800`` escape, is written as surrogatepass)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def hash_int(key: bytes, canonical: str, bits: int) -> int:
    """A non-negative integer below ``2**bits`` derived from the keyed hash of a value's
    canonical text (for numbers: the decimal form, see ``pg_values``/``my_values``).

    Every width takes the low bits of the same 64-bit number, so a key hashed into an int4
    column and into an int8 column agree wherever both ranges allow.
    """
    digest = hash_digest(key, utf8(canonical))
    return int.from_bytes(digest[:8], "big") & ((1 << bits) - 1)


def canonical_number(text: str) -> str:
    """The canonical decimal text of a number, the input ``hash_int`` hashes for numeric
    columns: no exponent, no leading zeros, no trailing fractional zeros, no ``-0``.

    So ``5``, ``5.00`` (numeric), ``5.0`` (float) and ``+5`` hash alike in every column
    type and wire format. NaN and the infinities keep their names; text that is not a
    number is returned stripped (it still hashes deterministically).
    """
    text = text.strip()
    try:
        return str(int(text))
    except ValueError:
        pass
    try:
        number = Decimal(text)
    except InvalidOperation:
        return text
    if number.is_nan():
        return "NaN"
    if number.is_infinite():
        return "-Infinity" if number.is_signed() else "Infinity"
    # as_tuple() is exact (Decimal arithmetic would round to the context's precision).
    sign, digit_tuple, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    if abs(exponent) > _MAX_EXPONENT:
        # No column type we hash writes such numbers; do not expand them into megabytes.
        return text
    digits = "".join(map(str, digit_tuple))
    if exponent >= 0:
        whole, fraction = digits + "0" * exponent, ""
    else:
        digits = digits.rjust(-exponent + 1, "0")
        whole, fraction = digits[:exponent], digits[exponent:]
    whole = whole.lstrip("0") or "0"
    fraction = fraction.rstrip("0")
    out = f"{whole}.{fraction}" if fraction else whole
    return "-" + out if sign and out != "0" else out


def decode_text(data: bytes, codec: str) -> str:
    """Wire bytes as text; never raises. Bytes the codec does not define become lone
    surrogates (surrogateescape) and go back unchanged through ``encode_text``. That handler
    only takes bytes >= 0x80, so for odd input in a UTF-16/32 column the fallback is U+FFFD."""
    try:
        return str(data, codec, "surrogateescape")
    except UnicodeDecodeError:
        return str(data, codec, "replace")


def encode_text(text: str, codec: str) -> bytes:
    """``text`` in ``codec``; never raises: surrogate-escaped bytes go back as they came,
    characters the codec cannot write (say from a "fixed" value) become ``?``."""
    try:
        return text.encode(codec, "surrogateescape")
    except UnicodeEncodeError:
        return text.encode(codec, "replace")


def encode_document(text: str, codec: str) -> bytes:
    """``text`` in ``codec`` for a json or xml value, which must be valid text: a byte the
    encoding does not define (kept by a style from odd input) becomes ``?`` too."""
    return text.encode(codec, "replace")


def json_string_content(text: str) -> str:
    """The content of a JSON document that is a single string (``"bob@x.com"`` ->
    ``bob@x.com``), so email/keep_last/hash see the value and not its quotes; any other
    document is masked as its whole text."""
    stripped = text.strip()
    if stripped.startswith('"'):
        try:
            content = json.loads(stripped)
        except ValueError:
            return text
        if isinstance(content, str):
            return content
    return text


def _mask_content(text: str) -> str:
    """Every content character of ``text`` replaced by ``*``, separators kept."""
    if text.isascii():
        return text.translate(_ASCII_MASK)  # a C loop, ~10x faster than the regex
    return _CONTENT.sub(MASK_CHAR, text)


def _keep_last(value: str, keep: int) -> str:
    if keep <= 0:
        return _mask_content(value)
    # Walk back over the last `keep` content characters (short: at most `keep` plus the
    # separators between them), then mask everything before the cut in one pass.
    seen = 0
    cut = len(value)
    while cut > 0 and seen < keep:
        cut -= 1
        if value[cut] not in SEPARATORS:
            seen += 1
    head = value[:cut]
    if seen < keep or not head.strip(_SEPARATOR_CHARS):
        # N content characters or fewer in all: reveal none of them.
        return _mask_content(value)
    return _mask_content(head) + value[cut:]


def _email(value: str) -> str:
    at = value.rfind("@")
    if at < 0:
        return REDACTED
    return REDACTED + value[at:]


def text_masker(style: Style) -> Callable[[str], str | None]:
    """The function masking one text value under ``style``; ``None`` means SQL NULL.

    Raises StyleError for a style that cannot be applied (checked once, here, so the
    per-value functions do no checking).
    """
    check_style(style)
    name = style.name
    if name == "redact":
        return lambda _value: REDACTED
    if name == "null":
        return lambda _value: None
    if name == "fixed":
        fixed = style.value
        return lambda _value: fixed
    if name == "email":
        return _email
    if name == "hash":
        key = style.hash_key

        def mask_hash(value: str) -> str:
            return hash_digest(key, utf8(value))[:_HASH_BYTES].hex()

        return mask_hash
    keep = kept_count(style)
    return lambda value: _keep_last(value, keep)


def max_masked_length(style: Style, original_length: int) -> int:
    """Upper bound, in characters, of ``text_masker(style)``'s output for an input of
    ``original_length`` characters (used to rewrite MySQL ``column_length``)."""
    check_style(style)
    name = style.name
    if name == "redact":
        return len(REDACTED)
    if name == "null":
        return 0
    if name == "fixed":
        return len(style.value)
    if name == "hash":
        return HASH_HEX_CHARS
    if name == "email":
        # "****" + "@domain", the domain being at most original_length - 1 characters.
        return max(len(REDACTED), original_length + len(REDACTED))
    # keep_last maps each character to exactly one character.
    return original_length
