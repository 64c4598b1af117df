"""Statement fingerprints for the audit log: literals replaced, a stable hash.

``normalize(text, dialect)`` returns ``(fingerprint, redacted)``:

* ``redacted`` is the text with every literal the lexer knows (standard, escape, national,
  bit and hex strings, dollar-quoted bodies, numbers) replaced by ``?``; comments and names
  are kept. It is what the audit log shows when ``[audit] redact_literals`` is on.
* ``fingerprint`` is 16 hex digits of BLAKE2b over the redacted text with whitespace runs
  collapsed and lists of placeholders (``IN (?, ?, ?)``, multi-row ``VALUES``) folded to
  one, so ``WHERE id IN (1, 2)`` and ``where id in (7)`` share a fingerprint when spelled
  alike. It is stable across processes and versions of Python (no ``hash()``).

Fail closed: text the lexer cannot read (an unterminated quote) is shown as
``<unparsed statement: N chars>`` -- anything after the broken quote may be a literal.
Results are cached by text (bounded; short texts only), so a repeated statement costs one
dict lookup. A text whose only digits are in plain number literals is also cached by its
digit skeleton (every digit read as 0, the policy engine's fast key): texts with the same
skeleton then differ only inside number literals, which redaction replaces, so they share
the result. A new literal in a known shape (``WHERE aid = 4711`` after ``WHERE aid = 17``)
costs one byte translation instead of a lex.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from ..policy.lexer import (
    NUMBER,
    STRING,
    XSTRING,
    Lexed,
    LexError,
    lex,
    skeleton,
    skeleton_eligible,
)

_CACHE_SIZE: Final = 4096
# Longer texts are not cached: they rarely repeat (bulk INSERTs) and 4096 of them could
# hold gigabytes (up to gateway.max_message_size each).
MAX_CACHED_TEXT: Final = 4096
_cache: dict[tuple[str, str], tuple[str, str]] = {}
_by_skeleton: dict[tuple[bytes, str], tuple[str, str]] = {}

_SPACE_RE: Final = re.compile(r"\s+")
# "?, ?, ?" -> "?", and "(?), (?)" row lists -> "(?)" (the hash ignores list lengths).
_LIST_RE: Final = re.compile(r"\?(?:\s*,\s*\?)+")
_ROWS_RE: Final = re.compile(r"\(\?\)(?:\s*,\s*\(\?\))+")
_LITERALS: Final = frozenset({STRING, XSTRING, NUMBER})


def normalize(text: str, dialect: str) -> tuple[str, str]:
    """(fingerprint, redacted text) of one statement text."""
    key = (text, dialect)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    if len(text) > MAX_CACHED_TEXT:
        redacted = redact(text, dialect)
        return (fingerprint_of(redacted), redacted)
    sk = skeleton(text)
    if sk is not None:
        hit = _by_skeleton.get((sk, dialect))
        if hit is not None:
            return hit
    lexed: Lexed | None
    try:
        lexed = lex(text, dialect)
    except LexError:
        lexed = None
    redacted = _unparsed(text) if lexed is None else _redact_lexed(text, lexed, dialect)
    result = (fingerprint_of(redacted), redacted)
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()  # bounded; a busy gateway re-fills it with what repeats
    _cache[key] = result
    if sk is not None and lexed is not None and skeleton_eligible(text, lexed):
        if len(_by_skeleton) >= _CACHE_SIZE:
            _by_skeleton.clear()
        _by_skeleton[(sk, dialect)] = result
    return result


def _unparsed(text: str) -> str:
    return f"<unparsed statement: {len(text)} chars>"


def redact(text: str, dialect: str) -> str:
    """``text`` with its literals replaced by ``?`` (see the module docstring)."""
    try:
        lexed = lex(text, dialect)
    except LexError:
        return _unparsed(text)
    return _redact_lexed(text, lexed, dialect)


def _redact_lexed(text: str, lexed: Lexed, dialect: str) -> str:
    source = lexed.text
    if source != text and not lexed.exec_spans:
        # Identifiers were rewritten (U&"..."): positions refer to the rewritten text,
        # which holds the same literals.
        text = source
    out: list[str] = []
    last = 0
    for tok in lexed.tokens:
        if tok.kind not in _LITERALS:
            continue
        if dialect == "mysql" and tok.kind == XSTRING and text[tok.start : tok.start + 1] == "`":
            continue  # defensive: backquoted names are identifiers, not strings
        out.append(text[last : tok.start])
        out.append("?")
        last = tok.end
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def fingerprint_of(redacted: str) -> str:
    canonical = _SPACE_RE.sub(" ", redacted).strip().rstrip(";").strip()
    canonical = _ROWS_RE.sub("(?)", _LIST_RE.sub("?", canonical))
    return hashlib.blake2b(canonical.encode("utf-8", "replace"), digest_size=8).hexdigest()
