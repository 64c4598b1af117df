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
dict lookup.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from ..policy.lexer import NUMBER, STRING, XSTRING, LexError, lex

_CACHE_SIZE: Final = 4096
# Longer texts are not cached: they rarely repeat (bulk INSERTs) and 4096 of them could
# hold gigabytes (up to gateway.max_message_size each).
MAX_CACHED_TEXT: Final = 4096
_cache: dict[tuple[str, str], tuple[str, str]] = {}

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
    redacted = redact(text, dialect)
    result = (fingerprint_of(redacted), redacted)
    if len(text) > MAX_CACHED_TEXT:
        return result
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()  # bounded; a busy gateway re-fills it with what repeats
    _cache[key] = result
    return result


def redact(text: str, dialect: str) -> str:
    """``text`` with its literals replaced by ``?`` (see the module docstring)."""
    try:
        lexed = lex(text, dialect)
    except LexError:
        return f"<unparsed statement: {len(text)} chars>"
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
