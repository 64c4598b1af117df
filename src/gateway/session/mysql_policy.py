"""Statement policy on the MySQL wire: decide COM_QUERY and COM_STMT_PREPARE texts.

Where decisions happen (issue 5): every COM_QUERY text (a multi-statement packet as a
whole: one refused statement refuses the packet) and every COM_STMT_PREPARE text, before
anything is sent upstream. COM_STMT_EXECUTE is not decided: a refused PREPARE never
reaches the server, so the statement id the client would execute never exists.

How a refusal works: unlike PostgreSQL, a MySQL command has exactly one response and no
transaction side effect when it fails at parse time, so the gateway simply does not
forward the command and answers it itself (ERR 1142, the server's own "command denied"
error) in order with the responses of the commands pipelined before it, the same way
the driver answers other commands it refuses.

Character sets: the classifier reads the text as UTF-8. In sjis, cp932, big5, gbk and
gb18030 the second byte of a multi-byte character can be an ASCII backslash or quote,
so such text can hide the end of a literal from the classifier while the server sees
it. While the session's character_set_client is one of them every statement is refused
(fail closed). The gateway follows character_set_client through the handshake collation,
COM_CHANGE_USER, the server's session-state tracking (when the client negotiated
CLIENT_SESSION_TRACK and the server tracks character_set_client, MariaDB's default) and
statements: a SET NAMES / SET CHARACTER SET / SET character_set_client to one of them,
or to a value the gateway cannot read (a variable, DEFAULT, an expression), is refused
before it runs. Not followed: a server started with skip-character-set-client-handshake
(or a global default reached through COM_RESET_CONNECTION) whose default is one of them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from ..policy import Decision
from .mysql_sql import Token, split_statements
from .policy_log import log_refusal

if TYPE_CHECKING:
    from protocols.mysql.packets import OkPacket

    from ..policy import SessionPolicy
    from .my_masking import MyMasking
    from .mysql_recording import MyRecordingObserver


ER_TABLEACCESS_DENIED_ERROR: Final = 1142
ACCESS_DENIED_SQLSTATE: Final = "42000"
CHARSET_RULE: Final = "unknown:character_set_client"
SQL_MODE_RULE: Final = "unknown:sql_mode"
# sql_mode flags under which the server reads statement text differently from the
# policy's lexer: "..." as identifiers, backslashes as plain characters.
UNREADABLE_SQL_MODES: Final = frozenset({"ANSI_QUOTES", "NO_BACKSLASH_ESCAPES"})


def sql_mode_problem(sql_mode: str) -> str | None:
    """Why a session with this sql_mode cannot be checked, or None if it can."""
    flags = sorted(UNREADABLE_SQL_MODES.intersection(sql_mode.upper().split(",")))
    if not flags:
        return None
    return (
        f"the gateway cannot check statements under the target's sql_mode "
        f"({', '.join(flags)}); remove it from the server's sql_mode"
    )


# Character sets whose multi-byte characters can contain ASCII bytes (see above).
UNSAFE_CHARSETS: Final = frozenset({"sjis", "cp932", "big5", "gbk", "gb18030"})
# Their collation ids (information_schema.COLLATIONS): MySQL and MariaDB share the
# ids below 256; MariaDB's NOPAD variants are the same id + 1024.
_BASE_COLLATIONS: Final = {
    1: "big5",  # big5_chinese_ci
    84: "big5",  # big5_bin
    13: "sjis",  # sjis_japanese_ci
    88: "sjis",  # sjis_bin
    28: "gbk",  # gbk_chinese_ci
    87: "gbk",  # gbk_bin
    95: "cp932",  # cp932_japanese_ci
    96: "cp932",  # cp932_bin
    248: "gb18030",  # gb18030_chinese_ci (MySQL 8)
    249: "gb18030",  # gb18030_bin
    250: "gb18030",  # gb18030_unicode_520_ci
}
UNSAFE_COLLATIONS: Final = {
    **_BASE_COLLATIONS,
    **{cid + 1024: name for cid, name in _BASE_COLLATIONS.items() if cid < 248},
}
# Cheap pre-filter: only statements with SET and one of these words can change the
# client charset (most statements are not lexed at all).
_SET_WORD = re.compile(rb"(?i)(?<![A-Za-z0-9_$])set(?![A-Za-z0-9_$])")
_CHARSET_WORDS = re.compile(rb"(?i)names|charset|character")


def unsafe_collation(collation_id: int) -> str | None:
    """The unsafe character set of a collation id, None when it is safe."""
    return UNSAFE_COLLATIONS.get(collation_id)


def charset_assignments(sql: bytes) -> list[str | None]:
    """The client character sets ``sql`` assigns (SET NAMES x, SET CHARACTER SET x,
    SET CHARSET x, SET [SESSION|@@...] character_set_client = x, SET STATEMENT ...),
    lower-cased; None for a value that is not a plain name (a variable, DEFAULT, an
    expression). Lexed with and without backslash escapes, like every security
    decision of the driver, so a wrong guess of sql_mode cannot hide an assignment."""
    if _SET_WORD.search(sql) is None or _CHARSET_WORDS.search(sql) is None:
        return []
    found: list[str | None] = []
    for escapes in (True, False):
        for toks in split_statements(sql, backslash_escapes=escapes):
            if toks[0].kind == "word" and toks[0].text == b"SET":
                found.extend(_assignments(toks))
    return found


def _assignments(toks: list[Token]) -> list[str | None]:
    out: list[str | None] = []
    n = len(toks)
    for i, tok in enumerate(toks):
        if tok.kind != "word":
            continue
        value_at = -1
        # NAMES / CHARSET / CHARACTER SET start an assignment only right after SET or
        # a comma (elsewhere they are function names or column attributes).
        starts = i > 0 and toks[i - 1].text in (b"SET", b",")
        if starts and tok.text in (b"NAMES", b"CHARSET"):
            value_at = i + 1
        elif starts and tok.text == b"CHARACTER" and i + 1 < n and toks[i + 1].text == b"SET":
            value_at = i + 2
        elif tok.text == b"CHARACTER_SET_CLIENT":
            # Assigned only when "=" or ":=" follows (else it is read, as in
            # SET @x = @@character_set_client).
            j = i + 1
            if j < n and toks[j].text == b":":
                j += 1
            if j < n and toks[j].text == b"=":
                value_at = j + 1
        if value_at >= 0:
            out.append(_charset_name(toks, value_at))
    return out


def _charset_name(toks: list[Token], i: int) -> str | None:
    """The character set a SET assigns, or None if it cannot be read for certain: only
    a value of exactly one name or string token, followed by the end of the statement,
    a comma or COLLATE (an expression, adjacent strings or an introducer could name any
    character set)."""
    if i >= len(toks):
        return None
    if i + 1 < len(toks) and toks[i + 1].text not in (b",", b";", b"COLLATE"):
        return None
    tok = toks[i]
    if tok.kind == "word":
        name = tok.text
    elif tok.kind in ("string", "ident") and len(tok.text) >= 2:
        name = tok.text[1:-1]
    else:
        return None
    text = name.decode("ascii", "replace").lower()
    if text == "default" or not re.fullmatch(r"[a-z0-9_]+", text):
        return None
    return text


class MyPolicyGate:
    """Decides one MySQL session's statements and follows its client character set."""

    __slots__ = (
        "masking",
        "observer",
        "policy",
        "reviewable",
        "reviewed",
        "session_id",
        "unsafe_charset",
    )

    def __init__(
        self,
        policy: SessionPolicy,
        observer: MyRecordingObserver,
        session_id: str,
        collation: int,
        masking: MyMasking | None = None,
    ) -> None:
        self.policy = policy
        # Masking refuses some statements the policy allows (exports, copies of masked
        # values); it decides after the policy, on the same text.
        self.masking = masking
        self.observer = observer
        self.session_id = session_id
        self.unsafe_charset = unsafe_collation(collation)
        # Statements needing review are held for an approver when the session has some
        # (else refused); the outcome, per statement text, is used once when the held
        # command is read again (approved: "allow", then the checks below still apply).
        self.reviewable = False
        self.reviewed: dict[bytes, Decision] = {}

    def collation(self, collation_id: int) -> None:
        """The client's collation changed (COM_CHANGE_USER)."""
        self.unsafe_charset = unsafe_collation(collation_id)

    def reset(self) -> None:
        """COM_CHANGE_USER / COM_RESET_CONNECTION: SQL-level state of the engine is gone."""
        self.policy.reset()

    def server_ok(self, ok: OkPacket) -> None:
        """Follow character_set_client when the server reports it (session tracking)."""
        for change in ok.session_state_changes:
            for name, value in change.system_variables():
                if name.lower() == b"character_set_client":
                    charset = value.decode("ascii", "replace").lower()
                    self.unsafe_charset = charset if charset in UNSAFE_CHARSETS else None

    def statement_failed(self, sql: bytes) -> None:
        """The server answered this text with an error: see
        ``SessionPolicy.statement_failed``."""
        self.policy.statement_failed(_text(sql))

    def check(self, sql: bytes, path: str) -> Decision:
        """The decision on one COM_QUERY (path "simple") or COM_STMT_PREPARE ("prepared")
        text; a refusal is recorded and logged here. A "review" decision is returned
        unrecorded when the session has approvers: the driver holds the command."""
        if self.unsafe_charset is not None:
            decision = Decision(
                "deny",
                CHARSET_RULE,
                "statement refused by the gateway: character_set_client "
                f"{self.unsafe_charset} cannot be checked safely; "
                "reconnect with a utf8mb4 character set",
                frozenset({"unknown"}),
            )
        else:
            decision = self.policy.check_query(_text(sql))
            if decision.action == "review":
                outcome = self.reviewed.pop(bytes(sql), None)
                if outcome is not None:
                    decision = outcome  # approved (allow) or denied, once
                elif self.reviewable:
                    return decision  # held by the driver; nothing recorded yet
            if decision.action == "allow":
                decision = self._charset_change(sql, decision)
            if decision.action == "allow" and "privilege" in decision.classes:
                decision = self._sql_mode_change(sql, decision)
            if decision.action == "allow" and self.masking is not None:
                decision = self.masking.check_statement(_text(sql), decision) or decision
        if decision.action != "allow":
            self._refused(sql, path, decision)
        return decision

    def _sql_mode_change(self, sql: bytes, allowed: Decision) -> Decision:
        # The engine classes an sql_mode that changes how text is read (ANSI_QUOTES,
        # NO_BACKSLASH_ESCAPES, ANSI, or a value it cannot read) as "privilege". Even a
        # policy that allows privilege may not run it: every later statement of the
        # session would be read differently by the server than by the gateway.
        if b"SQL_MODE" not in sql.upper():
            return allowed
        return Decision(
            "deny",
            SQL_MODE_RULE,
            "statement refused by the gateway: this sql_mode would change how the server "
            "reads SQL text (quotes or backslashes), which the gateway could then not check",
            allowed.classes,
        )

    def _charset_change(self, sql: bytes, allowed: Decision) -> Decision:
        for charset in charset_assignments(sql):
            if charset is None or charset in UNSAFE_CHARSETS:
                shown = charset or "a value the gateway cannot read"
                return Decision(
                    "deny",
                    CHARSET_RULE,
                    f"statement refused by the gateway: character_set_client {shown} "
                    "cannot be checked safely; use a literal utf8mb4 (or another "
                    "ASCII-safe) character set name",
                    allowed.classes,
                )
        return allowed

    def _refused(self, sql: bytes, path: str, decision: Decision) -> None:
        self.observer.refused(_text(sql), path, decision)
        log_refusal(self.session_id, decision, path)


def _text(raw: bytes) -> str:
    # Keywords are ASCII in every character set the gateway lets through (unsafe ones
    # are refused above), so a replaced non-UTF-8 byte sits inside a literal or name.
    return raw.decode("utf-8", errors="replace")
