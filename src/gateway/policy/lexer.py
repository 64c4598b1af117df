"""A dialect-accurate SQL lexer: statement splitting, literal fingerprints, MySQL `/*!` comments.

Rules this module enforces:

* It decides where strings, quoted identifiers, comments and statements end *the way the
  server does*, because every other decision rests on that: a string the gateway thinks is
  closed but the server keeps open (or the reverse) is how a denied statement is smuggled
  past a parser. PostgreSQL: standard-conforming strings (a backslash is an ordinary
  character in '...'), E'...' with backslash escapes, dollar quotes, nested block comments,
  U&"..." identifiers. MySQL: backslash escapes in '...' and "..." (both are strings),
  backquoted identifiers, `#` comments, `-- ` only when followed by a space or control
  character (DEL included), non-nesting block comments, and executable comments (below).
* MySQL executable comments (`/*! ... */`, `/*!50000 ... */`, MariaDB `/*M! ... */`) are
  code: their markers are blanked (same length, so positions survive) and the content is
  lexed like any other text, whatever the version number says. A server that skips one
  ends it at its first `*/` unless a `/*` comes first (it allows one nested comment, even
  inside what looks like a quote), so content that contains `/*` before that `*/`, content
  that does not end there, and version digits the servers read differently, are LexErrors.
* Anything the lexer cannot close (a quote, a comment, a dollar quote) raises LexError; the
  caller classifies the whole text as ``unknown``. So does text servers may read in more
  than one way: the executable comments above, MySQL `--` + a non-ASCII character
  (charset-dependent), PostgreSQL string literals continued on another line.
* The fingerprint replaces standard '...' strings with '' and decimal numbers with 0 and keeps
  everything else byte for byte (comments, identifiers, dollar-quoted bodies, `/*!` comments),
  so two texts with one fingerprint differ only in those literal values. It is a single
  compiled regex pass; anything it is unsure of makes it return None (no fingerprint). The
  cold path rebuilds the fingerprint from the full token stream and only caches under it
  when the two agree (``fingerprint_from_tokens``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

__all__ = [
    "LexError",
    "Lexed",
    "Stmt",
    "Tok",
    "fingerprint",
    "fingerprint_from_tokens",
    "fingerprint_replacements",
    "lex",
    "skeleton",
    "skeleton_eligible",
    "split_statements",
]

DIALECTS: Final[frozenset[str]] = frozenset({"postgres", "mysql"})

# Token kinds.
WORD: Final = "word"  # keyword or unquoted identifier
QIDENT: Final = "qident"  # "x" (PostgreSQL), `x` (MySQL), U&"x" (decoded into a plain one)
STRING: Final = "string"  # standard '...' literal: the only strings the fingerprint replaces
XSTRING: Final = "xstring"  # every other string-like literal: E'', B'', X'', N'', $$..$$, "..."
NUMBER: Final = "number"
PARAM: Final = "param"  # $1, ?
VAR: Final = "var"  # MySQL @x, @@x
SEMI: Final = ";"
LPAREN: Final = "("
RPAREN: Final = ")"
COMMA: Final = ","
DOT: Final = "."
OP: Final = "op"


class LexError(ValueError):
    """The text cannot be tokenized the way the server would (unterminated quote, ...)."""


class Tok(NamedTuple):
    kind: str
    start: int
    end: int


# --------------------------------------------------------------------------- patterns

_IDENT_START: Final = r"A-Za-z_\x80-\U0010FFFF"
_IDENT_CONT: Final = r"\w$\x80-\U0010FFFF"
_DECIMAL: Final = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_DECIMAL_RE: Final = re.compile(_DECIMAL)

_PG_TOKEN: Final = re.compile(
    rf"""
    (?P<ws>[ \t\n\r\f\v]+)
  | (?P<line>--[^\n\r]*)
  | (?P<block>/\*)
  | (?P<param>\$[0-9]+)
  | (?P<dollar>\$(?:[{_IDENT_START}][\w\x80-\U0010FFFF]*)?\$)
  | (?P<estr>[eE]'(?:[^'\\]|\\.|'')*')
  | (?P<uident>[uU]&"(?:[^"]|"")*")
  | (?P<xstr>[bBxX]'[^']*'|(?:[uU]&|[nN])'(?:[^']|'')*')
  | (?P<open>[eEbBxXnN]'|[uU]&['"])
  | (?P<str>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")*")
  | (?P<num>0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+
            |(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?)
  | (?P<word>[{_IDENT_START}][{_IDENT_CONT}]*)
  | (?P<punct>[;(),.])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

_MY_TOKEN: Final = re.compile(
    rf"""
    (?P<ws>[ \t\n\r\f\v]+)
  | (?P<line>\#[^\n]*|--(?=[\x00-\x20\x7f]|$)[^\n]*)
  | (?P<exec>/\*M?![0-9]*)
  | (?P<block>/\*)
  | (?P<xstr>[xXbB]'[^']*'|[nN]'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
  | (?P<open>[xXbBnN]')
  | (?P<str>'(?:[^'\\]|\\.|'')*')
  | (?P<qident>`(?:[^`]|``)*`)
  | (?P<num>(?:0x[0-9A-Fa-f]+|0b[01]+|{_DECIMAL})(?![{_IDENT_CONT}]))
  | (?P<word>[{_IDENT_CONT}]+)
  | (?P<var>@@?(?:[{_IDENT_CONT}.]+)?)
  | (?P<param>\?)
  | (?P<punct>[;(),.])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

_PUNCT_KIND: Final = {";": SEMI, "(": LPAREN, ")": RPAREN, ",": COMMA, ".": DOT}
# The only UESCAPE clause read: whitespace, the keyword, whitespace, a one-character '...'
# string. PostgreSQL also takes comments around it and any string constant (E'!', $$!$$);
# those are refused (``_check_uescape``). ASCII: "UE\u017fCAPE" is an identifier, not UESCAPE.
_PG_SPACE: Final = "[ \t\n\r\f\v]"
_UESCAPE_TAIL: Final = re.compile(
    rf"{_PG_SPACE}*UESCAPE{_PG_SPACE}*'([^'])'", re.IGNORECASE | re.DOTALL | re.ASCII
)


@dataclass(frozen=True, slots=True)
class Lexed:
    """Tokens of a whole text plus the text they index (with `/*!` markers blanked)."""

    text: str
    tokens: list[Tok]
    # Spans of the original text that are MySQL executable comments, markers included.
    exec_spans: list[tuple[int, int]]


def lex(text: str, dialect: str) -> Lexed:
    """Tokenize ``text``; raises LexError if a quote or comment is left open."""
    if dialect == "postgres":
        tokens = _lex_pg(text)
        _check_uescape(text, tokens)
        if any(t.kind == "uident" for t in tokens):
            text = _rewrite_uidents(text, tokens)
            tokens = _lex_pg(text)
        return Lexed(text, tokens, [])
    if dialect == "mysql":
        return _lex_mysql(text)
    raise ValueError(f"unknown dialect {dialect!r}")


def _lex_pg(text: str) -> list[Tok]:
    tokens: list[Tok] = []
    pos, end = 0, len(text)
    match = _PG_TOKEN.match
    while pos < end:
        m = match(text, pos)
        assert m is not None  # (?P<other>.) matches any character
        kind = m.lastgroup
        stop = m.end()
        if kind == "ws" or kind == "line":
            pass
        elif kind == "block":
            stop = _skip_nested_comment(text, pos)
        elif kind == "dollar":
            tag = m.group()
            close = text.find(tag, stop)
            if close < 0:
                raise LexError("unterminated dollar-quoted string")
            stop = close + len(tag)
            tokens.append(Tok(XSTRING, pos, stop))
        elif kind == "estr" or kind == "xstr":
            _check_no_continuation(text, stop)
            tokens.append(Tok(XSTRING, pos, stop))
        elif kind == "open":
            raise LexError("unterminated prefixed string")
        elif kind == "str":
            _check_no_continuation(text, stop)
            tokens.append(Tok(STRING, pos, stop))
        elif kind == "qident":
            tokens.append(Tok(QIDENT, pos, stop))
        elif kind == "uident":
            tokens.append(Tok("uident", pos, stop))
        elif kind == "num":
            tokens.append(Tok(NUMBER, pos, stop))
        elif kind == "word":
            tokens.append(Tok(WORD, pos, stop))
        elif kind == "param":
            tokens.append(Tok(PARAM, pos, stop))
        elif kind == "punct":
            tokens.append(Tok(_PUNCT_KIND[m.group()], pos, stop))
        else:
            ch = m.group()
            if ch in "'\"$":
                raise LexError("unterminated quoted string or identifier")
            tokens.append(Tok(OP, pos, stop))
        pos = stop
    return tokens


# After a quoted literal: whitespace and "--" comments, then a quote. PostgreSQL continues
# the literal there (same kind: an E'' string keeps its backslash escapes) when that
# whitespace holds a newline; the lexer would read a new, standard string.
# Possessive: a comment always runs to the end of its line (no backtracking on "-----").
_PG_CONTINUATION: Final = re.compile(r"(?:[ \t\n\r\f\v]++|--[^\n\r]*+)*+'")


def _check_no_continuation(text: str, stop: int) -> None:
    """Refuse a string literal continued on another line ('a'<newline>'b' is one literal)."""
    m = _PG_CONTINUATION.match(text, stop)
    if m is not None and ("\n" in m.group() or "\r" in m.group()):
        # Rare in client SQL; refusing it keeps this lexer's literal boundaries the server's.
        raise LexError("string literal continued on another line")


def _skip_nested_comment(text: str, pos: int) -> int:
    """End of the PostgreSQL block comment starting at ``pos`` (they nest)."""
    depth = 0
    i = pos
    end = len(text)
    while i < end:
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise LexError("unterminated block comment")


def _check_uescape(text: str, tokens: list[Tok]) -> None:
    """Refuse a UESCAPE clause after a U& identifier or string that is not the simple form.

    PostgreSQL reads ``U&"..." UESCAPE <string constant>`` with comments anywhere between
    and any kind of string constant; this lexer decodes only ``UESCAPE 'c'`` separated by
    whitespace, and would decode anything else with the default escape.
    """
    for i, tok in enumerate(tokens[:-1]):
        if tok.kind != "uident" and not (
            tok.kind == XSTRING and text.startswith(("U&", "u&"), tok.start)
        ):
            continue
        nxt = tokens[i + 1]
        if nxt.kind != WORD or text[nxt.start : nxt.end].upper() != "UESCAPE":
            if _UESCAPE_TAIL.match(text, tok.end) is not None:  # not a token boundary
                raise LexError("unsupported UESCAPE clause")
            continue
        tail = _UESCAPE_TAIL.match(text, tok.end)
        string = tokens[i + 2] if i + 2 < len(tokens) else None
        if (
            tail is None
            or string is None
            or string.kind != STRING
            or (string.start, string.end) != (tail.end() - 3, tail.end())
        ):
            raise LexError("unsupported UESCAPE clause")


def _rewrite_uidents(text: str, tokens: list[Tok]) -> str:
    """Replace U&"d\\0061ta" [UESCAPE '!'] with the plain quoted identifier "data"."""
    out: list[str] = []
    last = 0
    for tok in tokens:
        if tok.kind != "uident":
            continue
        body = text[tok.start + 3 : tok.end - 1].replace('""', '"')
        stop = tok.end
        escape = "\\"
        tail = _UESCAPE_TAIL.match(text, stop)
        if tail is not None:
            escape = tail.group(1)
            stop = tail.end()
        decoded = _decode_unicode_escapes(body, escape)
        out.append(text[last : tok.start])
        out.append('"' + decoded.replace('"', '""') + '"')
        last = stop
    out.append(text[last:])
    return "".join(out)


def _decode_unicode_escapes(body: str, escape: str) -> str:
    if escape in "+'\" \t\n\r" or escape.isalnum():
        raise LexError("invalid UESCAPE character")
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != escape:
            out.append(ch)
            i += 1
            continue
        if body.startswith(escape, i + 1):
            out.append(escape)
            i += 2
            continue
        if body.startswith("+", i + 1):
            digits, i = body[i + 2 : i + 8], i + 8
        else:
            digits, i = body[i + 1 : i + 5], i + 5
        if not re.fullmatch(r"[0-9A-Fa-f]+", digits) or len(digits) not in (4, 6):
            raise LexError("invalid Unicode escape in identifier")
        code = int(digits, 16)
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise LexError("invalid Unicode escape in identifier")
        out.append(chr(code))
    return "".join(out)


def _lex_mysql(text: str) -> Lexed:
    tokens: list[Tok] = []
    blanks: list[tuple[int, int]] = []  # marker spans to blank
    exec_spans: list[tuple[int, int]] = []
    exec_start = -1
    exec_close = -1  # the first "*/" after the open executable comment's marker
    pos, end = 0, len(text)
    match = _MY_TOKEN.match
    while pos < end:
        if exec_start >= 0 and pos == exec_close:
            # Closes the executable comment: the marker is whitespace to the server.
            blanks.append((pos, pos + 2))
            exec_spans.append((exec_start, pos + 2))
            exec_start = -1
            pos += 2
            continue
        m = match(text, pos)
        assert m is not None
        kind = m.lastgroup
        stop = m.end()
        if exec_start >= 0 and stop > exec_close:
            # A string, identifier or comment inside the executable comment runs over its
            # first "*/". A server that skips the comment (version above its own, /*M! on
            # MySQL) ends it there, ignoring quotes: the two readings disagree on where
            # the code resumes.
            raise LexError("executable comment content spans its first */")
        if kind == "ws" or kind == "line":
            pass
        elif kind == "exec":
            if exec_start >= 0:
                raise LexError("nested executable comment")
            _check_exec_version(text, pos + m.group().index("!") + 1, stop)
            exec_start = pos
            exec_close = text.find("*/", stop)
            if exec_close < 0:
                raise LexError("unterminated executable comment")
            if text.find("/*", stop, exec_close + 1) >= 0:
                # A server that skips the comment allows one nested /* */ in it, wherever
                # it starts (inside what looks like a quote too; "/*/" opens one): that
                # reading ends the comment at a later "*/" than the first.
                raise LexError("'/*' inside an executable comment")
            blanks.append((pos, stop))
        elif kind == "block":
            if exec_start >= 0:
                raise LexError("comment inside an executable comment")
            close = text.find("*/", stop)
            if close < 0:
                raise LexError("unterminated block comment")
            stop = close + 2
        elif kind == "xstr":
            tokens.append(Tok(XSTRING, pos, stop))
        elif kind == "open":
            raise LexError("unterminated prefixed string")
        elif kind == "str":
            tokens.append(Tok(STRING, pos, stop))
        elif kind == "qident":
            tokens.append(Tok(QIDENT, pos, stop))
        elif kind == "num":
            tokens.append(Tok(NUMBER, pos, stop))
        elif kind == "word":
            tokens.append(Tok(WORD, pos, stop))
        elif kind == "var":
            tokens.append(Tok(VAR, pos, stop))
        elif kind == "param":
            tokens.append(Tok(PARAM, pos, stop))
        elif kind == "punct":
            tokens.append(Tok(_PUNCT_KIND[m.group()], pos, stop))
        else:
            if m.group() in "'\"`":
                raise LexError("unterminated quoted string or identifier")
            if text.startswith("--", pos) and pos + 2 < end and text[pos + 2] >= "\x80":
                # The server starts a comment at "--" + a space or control character of
                # the client charset: for a non-ASCII byte that depends on the charset.
                raise LexError("'--' followed by a non-ASCII character")
            tokens.append(Tok(OP, pos, stop))
        pos = stop
    if exec_start >= 0:
        raise LexError("unterminated executable comment")
    if blanks:
        chars = list(text)
        for a, b in blanks:
            chars[a:b] = " " * (b - a)
        text = "".join(chars)
    return Lexed(text, tokens, exec_spans)


def _check_exec_version(text: str, start: int, stop: int) -> None:
    """Reject a ``/*!`` version the servers would read differently from the gateway.

    ``text[start:stop]`` is the digit run after ``/*!`` (or ``/*M!``). MySQL reads 6 digits
    only when whitespace follows (else 5, the rest being code); MariaDB reads 6 whenever
    there are 6; fewer than 5 are code to older servers. Only no digits, 5 digits, or 6
    digits and whitespace read the same everywhere.
    """
    # (An older MySQL reads 6 digits + whitespace as 5 and a lone digit of code; a number
    # token followed by whitespace cannot move where a quote or comment ends.)
    digits = stop - start
    if digits in (0, 5):
        return
    if digits == 6 and stop < len(text) and text[stop] in " \t\n\r\f\v":
        return
    raise LexError("ambiguous executable comment version")


# --------------------------------------------------------------------------- statements


class Stmt:
    """One statement: its text and tokens (offsets relative to ``text``)."""

    __slots__ = ("dialect", "text", "toks")

    def __init__(self, text: str, toks: list[Tok], dialect: str) -> None:
        self.text = text
        self.toks = toks
        self.dialect = dialect

    def __len__(self) -> int:
        return len(self.toks)

    def raw(self, i: int) -> str:
        t = self.toks[i]
        return self.text[t.start : t.end]

    def kind(self, i: int) -> str:
        return self.toks[i].kind if 0 <= i < len(self.toks) else ""

    def kw(self, i: int) -> str:
        """Upper-cased word at ``i`` ("" when ``i`` is not an unquoted word)."""
        if 0 <= i < len(self.toks) and self.toks[i].kind == WORD:
            t = self.toks[i]
            return self.text[t.start : t.end].upper()
        return ""

    def kws(self, i: int, n: int) -> tuple[str, ...]:
        return tuple(self.kw(j) for j in range(i, i + n))

    def ident(self, i: int) -> tuple[str, bool] | None:
        """(name, quoted) for a word or quoted identifier at ``i``."""
        if not 0 <= i < len(self.toks):
            return None
        t = self.toks[i]
        if t.kind == WORD:
            return self.text[t.start : t.end], False
        if t.kind == QIDENT:
            q = self.text[t.start]
            return self.text[t.start + 1 : t.end - 1].replace(q + q, q), True
        return None

    def string_value(self, i: int) -> str | None:
        """Value of a plain string literal at ``i`` (None for anything else).

        PostgreSQL: only standard '...' strings; MySQL: '...' and "..." with backslash
        escapes. Prefixed strings (E'', N'', _utf8'') are not decoded: callers treat them as
        values they cannot see, which is the fail-closed reading.
        """
        if not 0 <= i < len(self.toks):
            return None
        t = self.toks[i]
        raw = self.text[t.start : t.end]
        if t.kind == STRING:
            if self.dialect == "postgres":
                return raw[1:-1].replace("''", "'")
            return _mysql_unescape(raw[1:-1], "'")
        if t.kind == XSTRING and self.dialect == "mysql" and raw.startswith('"'):
            return _mysql_unescape(raw[1:-1], '"')
        return None

    def sub(self, start: int, stop: int | None = None) -> Stmt:
        """The statement made of tokens ``start:stop`` (offsets rebased)."""
        toks = self.toks[start:stop]
        if not toks:
            return Stmt("", [], self.dialect)
        base = toks[0].start
        text = self.text[base : toks[-1].end]
        return Stmt(text, [Tok(t.kind, t.start - base, t.end - base) for t in toks], self.dialect)

    def matching_paren(self, i: int) -> int:
        """Index of the ``)`` closing the ``(`` at ``i``, or -1."""
        depth = 0
        for j in range(i, len(self.toks)):
            k = self.toks[j].kind
            if k == LPAREN:
                depth += 1
            elif k == RPAREN:
                depth -= 1
                if depth == 0:
                    return j
        return -1

    def find_kw(self, words: frozenset[str], start: int = 0) -> int:
        """First index >= start of an unquoted word in ``words`` at paren depth 0, or -1."""
        depth = 0
        for j in range(start, len(self.toks)):
            k = self.toks[j].kind
            if k == LPAREN:
                depth += 1
            elif k == RPAREN:
                depth -= 1
            elif depth == 0 and k == WORD and self.kw(j) in words:
                return j
        return -1


_MYSQL_ESCAPES: Final = {
    "0": "\0",
    "b": "\b",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "Z": "\x1a",
    "%": "\\%",
    "_": "\\_",
}
_MYSQL_ESCAPE_RE: Final = re.compile(r"\\(.)", re.DOTALL)


def _mysql_unescape(body: str, quote: str) -> str:
    body = body.replace(quote + quote, quote) if "\\" not in body else body
    if "\\" in body:
        # Doubled quotes and backslash escapes can interleave; decode left to right.
        out: list[str] = []
        i = 0
        while i < len(body):
            ch = body[i]
            if ch == "\\" and i + 1 < len(body):
                nxt = body[i + 1]
                out.append(_MYSQL_ESCAPES.get(nxt, nxt))
                i += 2
            elif ch == quote and body.startswith(quote, i + 1):
                out.append(quote)
                i += 2
            else:
                out.append(ch)
                i += 1
        return "".join(out)
    return body


def split_statements(lexed: Lexed, dialect: str) -> list[Stmt]:
    """Statements separated by ``;`` at parenthesis depth 0 (empty ones dropped).

    A ``;`` inside parentheses stays in its statement: PostgreSQL's CREATE RULE takes a
    parenthesised list of actions, and anywhere else the server rejects the text, which the
    parser then reports as unknown.
    """
    out: list[Stmt] = []
    text = lexed.text
    current: list[Tok] = []
    depth = 0

    def flush() -> None:
        if current:
            base = current[0].start
            out.append(
                Stmt(
                    text[base : current[-1].end],
                    [Tok(t.kind, t.start - base, t.end - base) for t in current],
                    dialect,
                )
            )
            current.clear()

    for tok in lexed.tokens:
        if tok.kind == SEMI and depth <= 0:
            flush()
            depth = 0
            continue
        if tok.kind == LPAREN:
            depth += 1
        elif tok.kind == RPAREN:
            depth -= 1
        current.append(tok)
    flush()
    return out


# --------------------------------------------------------------------------- fingerprint


class _NoFingerprint(Exception):
    pass


# A number never starts inside a word, nor right after "1e-" (the exponent of a number
# that started earlier). A number directly followed by one of these (or "$") is part of
# something longer ("1abc", "0x1F", "1_000", "1.5.6"): kept as written, like the rebuild.
_NUMBER_TAIL: Final = r"A-Za-z0-9_.\x80-\U0010FFFF"

# One pass over the text. The leading lookahead rejects, with one character test, every
# position that cannot start a literal, comment or quoted name (most of them). Branches
# that must not start inside a word (numbers, E'' / B'' / X'' / N'' / U&'' prefixes,
# dollar quotes) are checked in the callback against the preceding character, so the pass
# agrees with the full lexer, which never starts a token inside a word.
_PG_FP: Final = re.compile(
    rf"""
    (?=[-/"'$0-9.]|[eEbBxXnN]'|[uU]&)
    (?:
        (?P<keep>--[^\n\r]*|/\*[^*]*\*+(?:[^/*][^*]*\*+)*/|"(?:[^"]|"")*")
      | (?P<prefixed>
            [eE]'(?:[^'\\]|\\.|'')*'
          | [bBxX]'[^']*'
          | (?:[uU]&|[nN])'(?:[^']|'')*'
          | \$(?P<tag>(?:[{_IDENT_START}][\w\x80-\U0010FFFF]*)?)\$.*?\$(?P=tag)\$
        )
      | (?P<str>'(?:[^']|'')*')
      | (?<![{_IDENT_CONT}.])(?<![0-9._][eE][+-])(?P<num>{_DECIMAL}(?P<tail>[{_NUMBER_TAIL}]*))
      | (?P<bad>['"]|/\*|\$(?:[{_IDENT_START}][\w\x80-\U0010FFFF]*)?\$|[eEbBxXnN]'|[uU]&['"])
    )
    """,
    re.VERBOSE | re.DOTALL,
)

_MY_FP: Final = re.compile(
    rf"""
    (?=[-/"'`\#0-9.]|[xXbBnN]')
    (?:
        (?P<keep>
            \#[^\n]*
          | --(?=[\x00-\x20\x7f]|$)[^\n]*
          | /\*M?!(?:[^*'"`]|\*(?!/)|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`)*\*/
          | /\*.*?\*/
          | `(?:[^`]|``)*`
          | "(?:[^"\\]|\\.|"")*"
        )
      | (?P<prefixed>[xXbB]'[^']*'|[nN]'(?:[^'\\]|\\.|'')*')
      | (?P<str>'(?:[^'\\]|\\.|'')*')
      | (?<![{_IDENT_CONT}.@])(?<![0-9._][eE][+-])(?P<num>{_DECIMAL}(?P<tail>[{_NUMBER_TAIL}]*))
      | (?P<bad>['"`]|/\*|[xXbBnN]'|--[^\x00-\x7f])
    )
    """,
    re.VERBOSE | re.DOTALL,
)
_PG_WORDISH: Final = re.compile(rf"[{_IDENT_CONT}.]")
_MY_WORDISH: Final = re.compile(rf"[{_IDENT_CONT}.@]")  # @1 is a user variable


def _glued(m: re.Match[str], wordish: re.Pattern[str]) -> bool:
    """Whether the match starts inside a word (where the full lexer would not start one)."""
    start = m.start()
    return start > 0 and wordish.match(m.string, start - 1) is not None


def _number(m: re.Match[str]) -> str:
    end = m.end()
    after = m.string[end] if end < len(m.string) else ""
    if m.group("tail"):
        if after and after in "'\"&`":
            raise _NoFingerprint  # "1N'x'": the tail may be a string prefix
        return m.group()
    if after == "$":
        return m.group()
    return "0"


def _pg_repl(m: re.Match[str]) -> str:
    group = m.lastgroup
    if group == "str":
        return "''"
    if group == "num":
        return _number(m)
    if group == "keep":
        text = m.group()
        if text.startswith("/*") and "/*" in text[2:]:
            raise _NoFingerprint  # nested comment: leave it to the full lexer
        return text
    if group == "prefixed" and not _glued(m, _PG_WORDISH):
        return m.group()
    raise _NoFingerprint


def _my_repl(m: re.Match[str]) -> str:
    group = m.lastgroup
    if group == "str":
        return "''"
    if group == "num":
        return _number(m)
    if group == "keep":
        text = m.group()
        if text.startswith(("/*!", "/*M!")) and "/*" in text[2:]:
            raise _NoFingerprint  # "/*" in an executable comment: the full lexer refuses it
        return text
    if group == "prefixed" and not _glued(m, _MY_WORDISH):
        return m.group()
    raise _NoFingerprint


_FP: Final[dict[str, tuple[Callable[..., str], Callable[[re.Match[str]], str]]]] = {
    "postgres": (_PG_FP.sub, _pg_repl),
    "mysql": (_MY_FP.sub, _my_repl),
}


def fingerprint(text: str, dialect: str) -> str | None:
    """``text`` with standard string literals -> '' and decimal numbers -> 0, or None."""
    sub, repl = _FP[dialect]
    try:
        result: str = sub(repl, text)
    except _NoFingerprint:
        return None
    return result


def fingerprint_replacements(text: str, dialect: str) -> list[tuple[int, int, str]] | None:
    """(start, end, replacement) of every change ``fingerprint`` makes, or None.

    For tests of the safety property: each change must cover exactly one string literal,
    or lie inside one number literal, as the full lexer sees them.
    """
    pattern = _PG_FP if dialect == "postgres" else _MY_FP
    repl = _FP[dialect][1]
    out: list[tuple[int, int, str]] = []
    try:
        for m in pattern.finditer(text):
            replacement = repl(m)
            if replacement != m.group():
                out.append((m.start(), m.end(), replacement))
    except _NoFingerprint:
        return None
    return out


def fingerprint_from_tokens(original: str, lexed: Lexed, dialect: str) -> str | None:
    """The fingerprint rebuilt from the full lexer's tokens (None if the text was rewritten).

    Must equal ``fingerprint(original)`` before a cold-path result is cached under it. A
    number glued to a word character on either side ("1abc", "t.5") is kept, as the fast
    pass keeps it.
    """
    if lexed.text != original and not lexed.exec_spans:
        return None  # U& identifiers were rewritten; positions no longer match the original
    wordish = _PG_WORDISH if dialect == "postgres" else _MY_WORDISH
    out: list[str] = []
    last = 0
    spans = lexed.exec_spans
    size = len(original)
    for tok in lexed.tokens:
        if tok.kind == STRING:
            replacement = "''"
        elif (
            tok.kind == NUMBER
            and _DECIMAL_RE.fullmatch(original, tok.start, tok.end)
            and not (tok.start > 0 and wordish.match(original, tok.start - 1))
            and not (tok.end < size and _PG_WORDISH.match(original, tok.end))
        ):
            replacement = "0"
        else:
            continue
        if spans and any(a <= tok.start < b for a, b in spans):
            continue  # executable comments are kept byte for byte
        out.append(original[last : tok.start])
        out.append(replacement)
        last = tok.end
    out.append(original[last:])
    return "".join(out)


# --------------------------------------------------------------------------- skeleton

# The cheapest key: UTF-8 bytes with every ASCII digit turned into 0 (one C call). Two texts
# with one skeleton differ only in digit values at the same positions. That says nothing
# on its own (t1 vs t2 are different tables), so a result is filed under its skeleton only
# if every digit of its text sits in a plain decimal number token that no word character
# follows (``skeleton_eligible``): the lexer reads such texts identically whatever the digit
# values, and the classification never depends on a number's value unless the facts say
# literal_dependent.
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_ASCII_DIGITS: Final = frozenset("0123456789")


def skeleton(text: str) -> bytes | None:
    try:
        return text.encode("utf-8").translate(_DIGITS_TO_ZERO)
    except UnicodeEncodeError:
        return None  # lone surrogates: no fast key


def skeleton_eligible(original: str, lexed: Lexed) -> bool:
    if lexed.text != original:
        return False  # rewritten (U& identifiers, executable comments)
    in_numbers = 0
    for tok in lexed.tokens:
        piece = original[tok.start : tok.end]
        digits = sum(1 for ch in piece if ch in _ASCII_DIGITS)
        if not digits:
            continue
        if tok.kind != NUMBER or not _DECIMAL_RE.fullmatch(piece):
            return False
        if tok.end < len(original) and _MY_WORDISH.match(original, tok.end):
            return False
        in_numbers += digits
    return in_numbers == sum(1 for ch in original if ch in _ASCII_DIGITS)
