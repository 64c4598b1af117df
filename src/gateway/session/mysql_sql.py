"""The little SQL the MySQL driver must understand before statement policy exists.

Three questions, answered with a lexer (no parser):

* where the statements of a multi-statement COM_QUERY start and end (one
  recording entry per result);
* is this a ``KILL [HARD|SOFT] [QUERY|CONNECTION] <id>`` that must be mapped from
  the gateway's connection id to the upstream thread id (PROTOCOLS.md 3.2, 3.8);
  every other KILL form (``KILL USER``, ``KILL QUERY ID``) is refused, because all
  sessions of a target share one upstream account;
* is this a ``LOAD DATA|XML ... LOCAL INFILE`` (only then is a server's request
  for a client file relayed, PROTOCOLS.md 3.7).

Lexing rules (MariaDB "Comment Syntax", "String Literals"): ``'...'`` and
``"..."`` strings with doubled quotes and, unless NO_BACKSLASH_ESCAPES, backslash
escapes; ```ident``` quoted identifiers; ``#`` and ``-- `` line comments;
``/* */`` comments, except executable comments ``/*! ... */`` and ``/*M! ... */``
whose content the server runs: their content is lexed as SQL.
Callers that make a security decision lex both with and without backslash
escapes, so a wrong guess of the session's sql_mode cannot hide a statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(rb"[A-Za-z0-9_$\x80-\xff]+")
_KILL_WORD = re.compile(rb"(?i)(?<![A-Za-z0-9_$])kill(?![A-Za-z0-9_$])")
_LOAD_WORD = re.compile(rb"(?i)(?<![A-Za-z0-9_$])load(?![A-Za-z0-9_$])")
_SPACE = b" \t\r\n\f\v"


def _quoted(quote: bytes, escapes: bool) -> re.Pattern[bytes]:
    # Unrolled loop (C speed on 16 MiB literals); doubled quotes and, with
    # escapes, backslash pairs stay inside; an unterminated literal runs to the end.
    q = re.escape(quote)
    if escapes:
        body = rb"[^" + q + rb"\\]*(?:(?:\\.|" + q + q + rb")[^" + q + rb"\\]*)*"
    else:
        body = rb"[^" + q + rb"]*(?:" + q + q + rb"[^" + q + rb"]*)*"
    return re.compile(q + body + q + b"?", re.S)


_QUOTED = {
    (ord(q), esc): _quoted(q.encode(), esc) for q in ("'", '"', "`") for esc in (True, False)
}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "word" | "string" | "ident" | "punct"
    start: int
    end: int
    text: bytes  # upper-cased for words, raw otherwise


def tokenize(sql: bytes, *, backslash_escapes: bool = True) -> list[Token]:
    """Tokens outside comments; an unterminated string/comment ends the input."""
    out: list[Token] = []
    i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in _SPACE:
            i += 1
            continue
        if c == 0x23 or (
            c == 0x2D and sql[i : i + 2] == b"--" and (i + 2 >= n or sql[i + 2] in _SPACE)
        ):
            end = sql.find(b"\n", i)
            i = n if end < 0 else end + 1
            continue
        if c == 0x2F and sql[i : i + 2] == b"/*":
            if sql[i + 2 : i + 3] == b"!" or sql[i + 2 : i + 4] == b"M!":
                # Executable comment: skip the marker and an optional version number,
                # lex the content; the closing */ is skipped below.
                i += 3 if sql[i + 2 : i + 3] == b"!" else 4
                while i < n and sql[i] in b"0123456789":
                    i += 1
                continue
            end = sql.find(b"*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        if c == 0x2A and sql[i : i + 2] == b"*/":
            i += 2  # end of an executable comment
            continue
        if c in (0x27, 0x22, 0x60):  # ' " `
            pattern = _QUOTED[(c, backslash_escapes and c != 0x60)]
            m = pattern.match(sql, i)
            end = m.end() if m is not None else n
            out.append(Token("ident" if c == 0x60 else "string", i, end, sql[i:end]))
            i = end
            continue
        m = _WORD.match(sql, i)
        if m is not None:
            out.append(Token("word", i, m.end(), m.group().upper()))
            i = m.end()
            continue
        out.append(Token("punct", i, i + 1, sql[i : i + 1]))
        i += 1
    return out


def split_statements(sql: bytes, *, backslash_escapes: bool = True) -> list[list[Token]]:
    """Token lists of the non-empty statements separated by top-level ``;``."""
    statements: list[list[Token]] = []
    current: list[Token] = []
    for tok in tokenize(sql, backslash_escapes=backslash_escapes):
        if tok.kind == "punct" and tok.text == b";":
            if current:
                statements.append(current)
            current = []
        else:
            current.append(tok)
    if current:
        statements.append(current)
    return statements


def statement_texts(sql: bytes, *, backslash_escapes: bool = True) -> list[bytes]:
    """Source text of each statement (for recording one entry per result)."""
    return [
        sql[toks[0].start : toks[-1].end]
        for toks in split_statements(sql, backslash_escapes=backslash_escapes)
    ]


@dataclass(frozen=True, slots=True)
class KillStatement:
    """``KILL [HARD|SOFT] [QUERY|CONNECTION] <id>``."""

    modifier: bytes | None  # b"HARD" | b"SOFT" | None
    query: bool  # KILL QUERY (else the connection)
    connection_id: int

    def render(self, connection_id: int) -> bytes:
        parts = [b"KILL"]
        if self.modifier:
            parts.append(self.modifier)
        parts.append(b"QUERY" if self.query else b"CONNECTION")
        parts.append(b"%d" % connection_id)
        return b" ".join(parts)


class KillRefused(Exception):
    """A KILL the gateway cannot map safely; the message goes to the client."""


def _parse_kill(toks: list[Token]) -> KillStatement:
    words = [t.text for t in toks]
    kinds = [t.kind for t in toks]
    i = 1
    modifier: bytes | None = None
    if i < len(words) and kinds[i] == "word" and words[i] in (b"HARD", b"SOFT"):
        modifier = words[i]
        i += 1
    query = False
    if i < len(words) and kinds[i] == "word" and words[i] in (b"QUERY", b"CONNECTION"):
        query = words[i] == b"QUERY"
        i += 1
    if i < len(words) and words[i] in (b"USER", b"ID"):
        raise KillRefused(
            "KILL USER and KILL QUERY ID are not allowed through the gateway: "
            "use KILL [QUERY|CONNECTION] <connection id>"
        )
    if i == len(words) - 1 and kinds[i] == "word" and words[i].isdigit():
        return KillStatement(modifier, query, int(words[i]))
    raise KillRefused(
        "the gateway accepts KILL [QUERY|CONNECTION] <connection id> with a literal id only"
    )


def find_kill(sql: bytes) -> KillStatement | None:
    """The KILL statement in ``sql``, None if there is none.

    Raises KillRefused for KILL forms that cannot be mapped, for a KILL inside a
    multi-statement packet, and for dynamic SQL (PREPARE / EXECUTE IMMEDIATE) whose
    text mentions KILL.
    """
    if _KILL_WORD.search(sql) is None:
        return None
    found: KillStatement | None = None
    for escapes in (True, False):
        statements = split_statements(sql, backslash_escapes=escapes)
        for toks in statements:
            first = toks[0].text if toks[0].kind == "word" else b""
            if first == b"KILL":
                if len(statements) > 1:
                    raise KillRefused("KILL must be sent as a statement of its own")
                kill = _parse_kill(toks)
                if found is not None and found != kill:
                    raise KillRefused("ambiguous KILL statement")
                found = kill
            elif first in (b"PREPARE", b"EXECUTE") and any(
                _KILL_WORD.search(t.text) for t in toks if t.kind == "string"
            ):
                raise KillRefused("dynamic SQL that runs KILL is not allowed through the gateway")
    return found


def is_load_data_local(sql: bytes) -> bool:
    """``LOAD DATA|XML [LOW_PRIORITY|CONCURRENT] LOCAL INFILE`` anywhere in the packet."""
    if _LOAD_WORD.search(sql) is None:
        return False
    for escapes in (True, False):
        for toks in split_statements(sql, backslash_escapes=escapes):
            words = [t.text if t.kind == "word" else b"" for t in toks[:5]]
            if words[:1] != [b"LOAD"] or len(words) < 3 or words[1] not in (b"DATA", b"XML"):
                continue
            rest = words[2:]
            if rest and rest[0] in (b"LOW_PRIORITY", b"CONCURRENT"):
                rest = rest[1:]
            if rest[:1] == [b"LOCAL"]:
                return True
    return False
