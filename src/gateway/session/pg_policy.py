"""Statement policy on the PostgreSQL wire: decide at Query, Parse and FunctionCall,
and refuse without desynchronising the connection.

Where decisions happen (issue 5, ARCHITECTURE.md "decide once per statement"): a simple
Query and an extended-protocol Parse are decided on their SQL text (a multi-statement
Query as a whole: one refused statement refuses the string); Bind and Execute of a
statement the gateway refused cannot happen, because the server never creates it. A
fast-path FunctionCall is decided without text. Nothing is decided per Execute, so a
prepared statement costs one decision per Parse.

How a refusal works, and why the gateway does not simply answer the client itself: the
refused message is replaced, upstream, by one that the server rejects at once (a
syntax error, see ``REFUSED_SQL``). The server then does exactly what it does for any
failed statement, in pipeline order: a simple Query ends with ReadyForQuery carrying the
right transaction status (an open transaction block is aborted, as the server would
have aborted it for a failed statement); a Parse makes it discard every message up to
the next Sync. The driver only swaps the server's ErrorResponse for its own (SQLSTATE
42501 and the rule that fired), found through the query tracker (``deny`` /
``head_denial``). Messages pipelined before and after the refused one keep their order
with no bookkeeping beyond that FIFO entry.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from protocols.postgres.framing import build_message
from protocols.postgres.messages import (
    build_error_response,
    parse_bind_statement,
    parse_parameter_status,
    parse_parse,
    parse_query,
)

from ..policy import Decision
from .policy_log import log_refusal

if TYPE_CHECKING:
    from ..policy import SessionPolicy
    from .pg_masking import PgMasking
    from .pg_recording import PgRecordingObserver


# Fails in the server's raw parser (before any lookup, in any transaction state), and
# says in the server's own log why it was sent.
REFUSED_SQL: Final = b"/* refused by the database gateway's statement policy */ GATEWAY_REFUSED"
INSUFFICIENT_PRIVILEGE: Final = "42501"
_QUERY: Final = ord("Q")
_PRIVILEGED_NAMES: Final = 1024
_PARSE: Final = ord("P")
_FUNCTION_CALL: Final = ord("F")
CHECKED_TYPES: Final = frozenset((_QUERY, _PARSE, _FUNCTION_CALL))
_REPLACEMENT_QUERY: Final = build_message(_QUERY, REFUSED_SQL + b"\x00")
# The policy's lexer reads statement text as the server does only under two session
# settings, which the gateway therefore requires (checked at login from the server's
# ParameterStatus, and whenever the server reports a change):
# * an ASCII-safe client_encoding: in these encodings a multi-byte character may end in
#   an ASCII byte (a backslash or a quote), which read as UTF-8 can hide the end of a
#   literal from the classifier while the server sees it;
# * standard_conforming_strings = on: off, a backslash escapes a quote in '...' strings.
# A login that would start with either is refused; a session that changes to either
# (which the policy classes as "privilege") is ended. Fail closed.
UNSAFE_CLIENT_ENCODINGS: Final = frozenset(
    {"SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030", "JOHAB"}
)


_SETTINGS_IN_FLIGHT: Final = Decision(
    "deny",
    "unknown:settings_in_flight",
    "statement refused by the gateway: it contains a backslash or non-ASCII text and was "
    "sent before a settings change ahead of it completed; send it after that statement",
    frozenset({"unknown"}),
)


def _replacement_parse(name: bytes) -> bytes:
    # Same statement name, so the server's bookkeeping of the name matches the
    # client's (an unnamed Parse drops the previous unnamed statement either way).
    return build_message(_PARSE, name + b"\x00" + REFUSED_SQL + b"\x00" + struct.pack("!H", 0))


def statement_text(mtype: int, body: bytes) -> tuple[bytes | None, bytes | None]:
    """(statement name, SQL text) of a Query (no name), a Parse, or a FunctionCall
    (neither): read once per message, for the policy and then the query tracker."""
    if mtype == _QUERY:
        return None, parse_query(body)
    if mtype == _PARSE:
        return parse_parse(body)
    return None, None


class PgPolicyGate:
    """Decides one session's statements and prepares refusals."""

    __slots__ = (
        "all_privileged",
        "client_encoding",
        "masking",
        "observer",
        "policy",
        "privilege_in_flight",
        "privileged_statements",
        "reviewable",
        "reviewed",
        "session_id",
        "standard_strings",
    )

    def __init__(
        self,
        policy: SessionPolicy,
        observer: PgRecordingObserver,
        session_id: str,
        masking: PgMasking | None = None,
    ) -> None:
        self.policy = policy
        # Masking refuses some statements the policy allows (exports, copies of masked
        # values); it decides after the policy, on the same text.
        self.masking = masking
        self.observer = observer
        self.session_id = session_id
        self.client_encoding = "UTF8"
        self.standard_strings = "on"
        # An allowed "privilege" statement (it may change the settings above) has not
        # been answered yet: the driver clears this at a ReadyForQuery with nothing
        # pending, after the server has reported any change.
        self.privilege_in_flight = False
        # Names parsed for a "privilege" statement: a Bind of one runs it later. A name
        # stays here when it is parsed again for something else: the server may skip that
        # Parse (it discards messages after an error up to a Sync) and keep the old
        # statement, and a Bind then runs the old one. Past _PRIVILEGED_NAMES names,
        # every Bind counts as privileged (``all_privileged``).
        self.privileged_statements: set[bytes] = set()
        self.all_privileged = False
        # Statements needing review are held for an approver when the session has some;
        # the outcome, per statement text, is used once when the held message is read again.
        self.reviewable = False
        self.reviewed: dict[bytes, Decision] = {}

    def parameter_status(self, body: bytes) -> str | None:
        """Follow the settings the lexer depends on as the server reports them (at login
        and after any change); returns why the session cannot be checked, if it cannot."""
        name, value = parse_parameter_status(body)
        if name == "client_encoding":
            self.client_encoding = value.upper()
            if self.masking is not None:
                self.masking.client_encoding(value)
        elif name == "standard_conforming_strings":
            self.standard_strings = value.lower()
        return self.unchecked_reason()

    def unchecked_reason(self) -> str | None:
        if self.client_encoding in UNSAFE_CLIENT_ENCODINGS:
            return (
                f"the gateway cannot check statements in client_encoding "
                f"{self.client_encoding}; use UTF8"
            )
        if self.standard_strings != "on":
            return (
                "the gateway cannot check statements with standard_conforming_strings "
                f"= {self.standard_strings}; it must be on"
            )
        return None

    def check(
        self, mtype: int, name: bytes | None, raw: bytes | None
    ) -> tuple[bytes, bytes] | Decision | None:
        """Decide a Query (its text), a Parse (statement name and text) or a
        FunctionCall (neither; see ``statement_text``). None to forward the message;
        a review Decision to hold it for an approver (``reviewed`` then says how it
        ended); else (the message to send upstream instead, the ErrorResponse to send the
        client instead of the server's)."""
        if raw is None:
            decision = self.policy.check_function_call()
        elif self.privilege_in_flight and (b"\\" in raw or not raw.isascii()):
            # Pipelined behind a statement that may change client_encoding or
            # standard_conforming_strings: only text that reads the same under any
            # value the server may now have (no backslash, ASCII only) is decided.
            decision = _SETTINGS_IN_FLIGHT
        else:
            decision = self.policy.check_query(_text(raw))
        if decision.action == "review" and raw is not None:
            outcome = self.reviewed.pop(raw, None)
            if outcome is not None:
                decision = outcome  # approved (allow) or denied, once
            elif self.reviewable:
                return decision
        if decision.action == "allow" and self.masking is not None:
            refusal = self.masking.check_statement(None if raw is None else _text(raw), decision)
            if refusal is not None:
                return self._refuse(mtype, name, raw, refusal)
        if decision.action == "allow":
            privileged = "privilege" in decision.classes
            if name is not None:  # a Parse: the statement runs at its Bind/Execute
                if privileged:
                    names = self.privileged_statements
                    if len(names) >= _PRIVILEGED_NAMES:
                        self.all_privileged = True
                    else:
                        names.add(name)
            elif privileged:
                self.privilege_in_flight = True
            self.observer.allowed(mtype, name, decision.rule, decision.classes)
            return None
        return self._refuse(mtype, name, raw, decision)

    def statement_failed(self, raw: bytes) -> None:
        """The server failed or skipped this text: see ``SessionPolicy.statement_failed``."""
        self.policy.statement_failed(_text(raw))

    def bind(self, body: bytes) -> None:
        """A Bind of a parsed "privilege" statement: it runs at the next Execute. Called
        only while some parsed statement is one (no cost otherwise)."""
        statement = parse_bind_statement(body)
        if self.all_privileged or statement in self.privileged_statements:
            self.privilege_in_flight = True

    def _refuse(
        self, mtype: int, name: bytes | None, raw: bytes | None, decision: Decision
    ) -> tuple[bytes, bytes]:
        if mtype == _QUERY:
            path, replacement = "simple", _REPLACEMENT_QUERY
        elif mtype == _PARSE:
            assert name is not None
            path = "extended" if name == b"" else "prepared"
            replacement = _replacement_parse(name)
        else:
            path, replacement = "function", _REPLACEMENT_QUERY
        text = _text(raw) if raw is not None else "<fast-path function call>"
        self.observer.refused(text, path, name, decision, INSUFFICIENT_PRIVILEGE)
        log_refusal(self.session_id, decision, path)
        error = build_error_response(INSUFFICIENT_PRIVILEGE, decision.message)
        return replacement, error


def _text(raw: bytes) -> str:
    # Keywords are ASCII in every client encoding the gateway lets a session use (see
    # UNSAFE_CLIENT_ENCODINGS), so a replaced non-UTF-8 byte sits inside a literal or name.
    return raw.decode("utf-8", errors="replace")
