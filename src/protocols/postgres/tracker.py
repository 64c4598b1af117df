"""Per-connection model of the query protocols (simple and extended).

Rules this module enforces (PostgreSQL manual, "Extended Query" and "Pipelining"):

* Every frontend message that expects a response is queued in a FIFO: Parse ->
  ParseComplete, Bind -> BindComplete, Describe S -> ParameterDescription +
  (RowDescription | NoData), Describe P -> (RowDescription | NoData), Execute ->
  DataRow* + (CommandComplete | EmptyQueryResponse | PortalSuspended), Close ->
  CloseComplete, Sync -> ReadyForQuery, Query / FunctionCall -> everything up to
  ReadyForQuery. Flush expects nothing.
* After an ErrorResponse in extended mode the server discards frontend messages
  up to the next Sync; the FIFO is popped the same way, and the executions that
  were skipped are finished with ``skipped = True``. When no Sync was queued, the
  server goes on discarding what the client sends next, up to its next Sync
  (``skipping``): those messages are not queued (no answer comes), change no
  statement or portal record, and their executions finish as skipped at once.
* In COPY FROM STDIN (from the server's CopyInResponse to the client's CopyDone or
  CopyFail, ``copy_in``) the server reads CopyData and ignores Flush and Sync: a
  Sync the client sent behind the COPY (libpq sends Parse/Bind/Describe/Execute/Sync
  together) gets no ReadyForQuery and leaves the FIFO. A client may send the copy data
  and its end before the CopyInResponse arrives (asyncpg does), right behind the COPY:
  the end is remembered with that statement (``early_copy_end``), and the copy-in is
  then over before it began. What the tracker cannot follow is refused
  (``PeerViolation``; the driver ends the session): other messages pipelined into a
  copy-in, an early end behind anything but the statement itself or a second one, and a
  COPY that fails after Syncs behind it were dropped (the server may have failed before
  reading them, and then answers the first; ``copy_dropped_for``).
* A simple Query destroys the unnamed prepared statement; ReadyForQuery with
  status Idle ends the transaction, so named portals die (except WITH HOLD
  cursors, which the tracker cannot see: it drops all non-empty portals and
  treats a later Execute of an unknown portal as a SQL-level cursor).
* Which RowDescription applies to a DataRow: the one sent in this result (simple
  query, Describe P) or the statement's (Describe S), combined with the Bind
  result-format codes.

* A message the gateway refuses (policy) is replaced upstream by one the server
  rejects at once (see ``deny``): the server's ErrorResponse to it is the driver's
  to rewrite (``head_denial``), and everything after it follows the server's own
  error rules (discard to Sync; an open transaction is aborted).

The tracker never sees DataRows one by one: the driver counts row runs into
``current.rows``. It creates one ``Execution`` per Query / Execute /
FunctionCall, not per row.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from ..errors import PeerViolation
from .messages import (
    Bind,
    parse_bind,
    parse_command_complete,
    parse_describe_or_close,
    parse_error_fields,
    parse_execute,
    parse_parse,
    parse_query,
)

# FIFO entry kinds. _DENIED_QUERY / _DENIED_PARSE: a refused Query or FunctionCall /
# Parse, replaced upstream by a statement that fails; the object is the driver's
# (its ErrorResponse to send instead of the server's).
_PARSE, _BIND, _DESCRIBE_S, _DESCRIBE_P, _EXECUTE, _CLOSE, _SYNC, _QUERY = range(8)
_DENIED_QUERY, _DENIED_PARSE = 8, 9
# What frontend_run / backend_run feed (see there): Bind, Describe, Execute, Sync; the tracked
# backend messages but ErrorResponse (whose replacement is the driver's business).
_RUN_FRONTEND: Final = frozenset(b"BDES")
_RUN_BACKEND: Final = frozenset(b"TCZIsn123")
# CopyDone, CopyFail; what the server reads (and ignores) in a copy-in besides them.
_COPY_ENDS: Final = frozenset(b"cf")
_READ_IN_COPY: Final = frozenset(b"dHS")


@dataclass(slots=True)
class PreparedStatement:
    query: bytes | None  # None: created by SQL-level PREPARE, never seen by the gateway
    row_description: bytes | None = None  # body of the RowDescription from Describe S


if TYPE_CHECKING:
    _tracker = None
else:
    try:  # the compiled state and fast paths, built by setuptools where a C compiler is
        from . import _tracker  # present (optional: the classes below are the reference)
    except ImportError:  # pragma: no cover - exercised where no compiler is available
        _tracker = None


class _ExecutionMethods:
    """One Query, Execute or FunctionCall and what came back for it.

    Created once per execution on the hot path, so its state is slots (in C where the
    tracker extension was built: ``_tracker.ExecutionCore``); command tags are decoded
    only if someone reads them.
    """

    if TYPE_CHECKING:  # a mixin: the state is the other base's (all of it: ExecutionPy)
        path: str
        text: bytes | None
        bind: Bind | None
        rows: int
        _tag_bodies: list[bytes] | None
    else:
        __slots__ = ()

    @property
    def result_formats(self) -> tuple[int, ...]:
        """Bind result-format codes (empty for simple queries: the T carries them)."""
        bind = self.bind
        return bind.result_formats if bind is not None else ()

    @property
    def tags(self) -> list[str]:
        """CommandComplete tags received for this execution, in order."""
        return [parse_command_complete(b) for b in self._tag_bodies or ()]

    @property
    def tag_count(self) -> int:
        """CommandCompletes received so far: in a multi-statement Query, the index of the
        statement whose results arrive now."""
        bodies = self._tag_bodies
        return len(bodies) if bodies else 0

    @property
    def last_tag(self) -> str | None:
        bodies = self._tag_bodies
        return parse_command_complete(bodies[-1]) if bodies else None

    @property
    def last_tag_body(self) -> bytes | None:
        """The body of the last CommandComplete, undecoded (callers may cache by it)."""
        bodies = self._tag_bodies
        return bodies[-1] if bodies else None

    def add_tag(self, body: bytes) -> None:
        if self._tag_bodies is None:
            self._tag_bodies = [body]
        else:
            self._tag_bodies.append(body)

    def __repr__(self) -> str:
        return f"<Execution {self.path} {self.text!r} rows={self.rows}>"


class ExecutionPy(_ExecutionMethods):
    """The pure-Python execution: its state as slots (the compiled ``ExecutionCore`` has
    the same fields, in C, with the same defaults)."""

    __slots__ = (
        "_tag_bodies",
        "bind",
        "budget",
        "bytes",
        "context",
        "decided",
        "error",
        "finished",
        "mask_plan",
        "path",
        "portal",
        "row_description",
        "rows",
        "skipped",
        "started",
        "statement_name",
        "suspended",
        "text",
    )

    def __init__(
        self,
        path: str,  # "simple" | "extended" | "prepared" | "function" | "cursor"
        text: bytes | None,
        statement_name: bytes | None = None,
        portal: bytes | None = None,
        bind: Bind | None = None,
        row_description: bytes | None = None,
    ) -> None:
        self.path = path
        self.text = text
        self.statement_name = statement_name
        self.portal = portal
        self.bind = bind
        self.row_description = row_description
        self.rows = 0
        self.error: tuple[str, str] | None = None
        self.skipped = False
        self.suspended = False
        self.context: object = None  # owned by the driver (recording handles, timers)
        # Owned by the driver: the masking plan of the current result (None: not planned).
        # Reset when a new RowDescription arrives (the next statement of a simple Query).
        self.mask_plan: object = None
        # Owned by the driver: the result limits' state of the current result.
        self.budget: object = None
        # Owned by the driver (audit log): result bytes forwarded, start and end times, and
        # what the policy decided for the statement.
        self.bytes = 0
        self.started = 0.0
        self.finished = 0.0
        self.decided: object = None
        self._tag_bodies: list[bytes] | None = None


# One interface either way (type checkers see the reference); the reference runs where the
# extension was not built.
if TYPE_CHECKING or _tracker is None:
    Execution = ExecutionPy
else:

    class Execution(_ExecutionMethods, _tracker.ExecutionCore):
        __doc__ = _ExecutionMethods.__doc__
        __slots__ = ()


class ExecutionObserver(Protocol):
    def execution_started(self, execution: Execution) -> None: ...

    def result_described(self, execution: Execution) -> None: ...

    def execution_finished(self, execution: Execution) -> None: ...


class _TrackerState:
    """The tracker's state as plain slots: the base of the pure-Python tracker. The
    compiled ``_tracker.TrackerCore`` has the same attributes (in C) and is the base of
    ``QueryTracker`` where the extension was built."""

    __slots__ = (
        "_done_in_batch",
        "_fifo",
        "copy_dropped_for",
        "copy_in",
        "early_copy_end",
        "observer",
        "portals",
        "skipping",
        "statements",
        "status",
    )

    def __init__(self, observer: ExecutionObserver) -> None:
        self.observer = observer
        self.statements: dict[bytes, PreparedStatement] = {}
        # Bound portals by name: the Bind names the portal's statement and holds its
        # parameters and result formats.
        self.portals: dict[bytes, Bind] = {}
        self._fifo: deque[tuple[int, object]] = deque()
        self.status = ord("I")
        self.copy_in = False
        # The server discards frontend messages up to the next Sync (after an error).
        self.skipping = False
        # The FIFO entry the client's CopyDone / CopyFail followed, sent while no copy-in
        # was known (see _copy_in_response); the execution whose trailing Syncs a
        # CopyInResponse dropped (see _error).
        self.early_copy_end: object | None = None
        self.copy_dropped_for: object | None = None
        # Executions finished since the last ReadyForQuery (same implicit transaction).
        self._done_in_batch = 0


class _TrackerMethods:
    """The query tracker (see the module docstring).

    The methods ending in ``_py`` are the reference implementation. The compiled base
    (``_tracker.TrackerCore``) provides ``frontend``, ``query``, ``backend``,
    ``head_execution``, ``frontend_run`` and ``backend_run`` for the common messages and
    calls the ``_py`` methods, on the same state, for the rest; without it they are used
    directly.
    """

    if TYPE_CHECKING:  # a mixin: the state is the other base's
        observer: ExecutionObserver
        statements: dict[bytes, PreparedStatement]
        portals: dict[bytes, Bind]
        _fifo: deque[tuple[int, object]]
        status: int
        copy_in: bool
        skipping: bool
        early_copy_end: object | None
        copy_dropped_for: object | None
        _done_in_batch: int

        def head_execution(self) -> Execution | None: ...

        def frontend(self, mtype: int, body: bytes) -> None: ...

        def query(self, text: bytes) -> None: ...

        def backend(self, mtype: int, body: bytes) -> None: ...
    else:
        __slots__ = ()

    @property
    def pending(self) -> int:
        """Frontend messages still awaiting their response."""
        return len(self._fifo)

    def alone(self, ex: Execution) -> bool:
        """True when ``ex`` is the only work the server has before its next ReadyForQuery
        and it runs outside a transaction block, as the first statement of its Query:
        cancelling it then undoes nothing the client was told had succeeded."""
        fifo = self._fifo
        if self.status != ord("I") or ex.tag_count or self._done_in_batch:
            return False
        if len(fifo) == 1:
            return fifo[0] == (_QUERY, ex)
        return len(fifo) == 2 and fifo[0][1] is ex and fifo[1][0] == _SYNC

    def busy(self) -> bool:
        """True while the server owes us a ReadyForQuery (a cancel is meaningful)."""
        return bool(self._fifo)

    # -- frontend -------------------------------------------------------------------

    def frontend_py(self, mtype: int, body: bytes) -> None:
        """Feed one frontend message the driver forwards."""
        if self.copy_in or self.skipping or mtype in _COPY_ENDS:
            self._diverted(mtype, body)
            return
        if mtype == 0x42:  # 'B' Bind
            # Parsed (validated) here, not lazily: a Bind whose parameter lengths
            # lie is a protocol violation the gateway must refuse, not forward.
            bind = parse_bind(body)
            self.portals[bind.portal] = bind
            self._fifo.append((_BIND, None))
        elif mtype == 0x45:  # 'E' Execute
            portal_name, _max_rows = parse_execute(body)
            self._fifo.append((_EXECUTE, self._execution_for_portal(portal_name)))
        elif mtype == 0x53:  # 'S' Sync
            self._fifo.append((_SYNC, None))
        elif mtype == 0x50:  # 'P' Parse
            self.parse(*parse_parse(body))
        elif mtype == 0x51:  # 'Q' Query
            self.query(parse_query(body))
        elif mtype == 0x44:  # 'D' Describe
            kind, name = parse_describe_or_close(body)
            self._fifo.append((_DESCRIBE_S if kind == 0x53 else _DESCRIBE_P, name))
        elif mtype == 0x43:  # 'C' Close
            kind, name = parse_describe_or_close(body)
            if kind == 0x53:
                self.statements.pop(name, None)
            else:
                self.portals.pop(name, None)
            self._fifo.append((_CLOSE, None))
        elif mtype == 0x46:  # 'F' FunctionCall: answered like a query (V then Z)
            ex = Execution("function", None)
            self._fifo.append((_QUERY, ex))
            self.observer.execution_started(ex)

    def frontend_run_py(self, buf: bytes, entries: list[tuple[int, int, int, int]]) -> int:
        """Feed the leading Bind, Describe, Execute and Sync messages of a read (the scanner's
        ``entries`` over ``buf``), the extended protocol's common case; returns the index of
        the first entry left to the driver (which decides on everything else)."""
        done = 0
        if self.copy_in or self.skipping:
            return 0
        for mtype, start, stop, _ in entries:
            if mtype not in _RUN_FRONTEND:
                break
            self.frontend(mtype, buf[start + 5 : stop])
            done += 1
        return done

    def _diverted(self, mtype: int, body: bytes | None, text: bytes | None = None) -> None:
        """A frontend message while the server reads COPY data or discards messages up to
        a Sync, and the client's CopyDone / CopyFail (see the module docstring)."""
        if self.copy_in:
            if mtype in _COPY_ENDS:
                self.copy_in = False
            elif mtype not in _READ_IN_COPY:
                raise PeerViolation(
                    f"message type {chr(mtype)!r} sent during COPY FROM STDIN: only copy "
                    "data, CopyDone, CopyFail, Flush and Sync may follow the COPY"
                )
            return
        if mtype in _COPY_ENDS:
            # Outside a copy-in the server ignores it (the end of a COPY it already failed),
            # unless a COPY's CopyInResponse is still on its way: then it ends that copy.
            self._early_copy_end()
            return
        # Skipping: nothing is queued, no record changes; executions are skipped.
        if mtype == 0x53:  # 'S' Sync: the server answers it and reads on normally
            self.skipping = False
            self._fifo.append((_SYNC, None))
            return
        ex: Execution | None = None
        if mtype == 0x51:  # 'Q' Query
            ex = Execution("simple", text)
            self.observer.execution_started(ex)
        elif mtype == 0x46:  # 'F' FunctionCall
            ex = Execution("function", None)
            self.observer.execution_started(ex)
        elif mtype == 0x45 and body is not None:  # 'E' Execute
            ex = self._execution_for_portal(parse_execute(body)[0])
        elif mtype == 0x42 and body is not None:  # 'B' Bind: still a valid message or refused
            parse_bind(body)
        if ex is not None:
            ex.skipped = True
            self._finish(ex)

    def parse(self, name: bytes, query: bytes) -> None:
        """A Parse, already split into its statement name and text (the driver reads
        them once for the policy and hands them on)."""
        if self.copy_in or self.skipping:
            self._diverted(0x50, None)
            return
        self.statements[name] = PreparedStatement(query)
        self._fifo.append((_PARSE, name))

    def query_py(self, text: bytes) -> None:
        """A simple Query, its text already read."""
        if self.copy_in or self.skipping:
            self._diverted(0x51, None, text)
            return
        self.statements.pop(b"", None)  # a simple query destroys the unnamed statement
        ex = Execution("simple", text)
        self._fifo.append((_QUERY, ex))
        self.observer.execution_started(ex)

    def deny(self, mtype: int, name: bytes | None, query: bytes | None, error: object) -> None:
        """The driver refused this frontend message (Query, FunctionCall or Parse) and
        sends the server a replacement that fails at once; ``error`` is what the
        driver will send the client instead of the server's ErrorResponse.

        A refused Parse registers a new statement name with the original text (it
        never exists on the server), so the executions the server then skips are
        recorded with the text the client sent.
        """
        if self.copy_in:
            self._diverted(mtype, None)  # refused: not a message a copy-in reads
        if self.skipping:
            return  # the server discards the replacement: no error comes back for it
        if mtype == 0x50:  # 'P' Parse
            assert name is not None and query is not None
            # The server drops the unnamed statement before parsing; a named one that
            # exists survives (the replacement fails first), and its executions run it.
            if name == b"" or name not in self.statements:
                self.statements[name] = PreparedStatement(query)
            self._fifo.append((_DENIED_PARSE, error))
        elif mtype in (0x51, 0x46):  # 'Q' Query, 'F' FunctionCall
            if mtype == 0x51:
                self.statements.pop(b"", None)
            self._fifo.append((_DENIED_QUERY, error))
        else:
            raise ValueError(f"cannot deny message type {mtype!r}")

    def head_denial(self) -> object | None:
        """The driver's error for a refused message, if the next response is to one."""
        if self._fifo:
            kind, obj = self._fifo[0]
            if kind in (_DENIED_QUERY, _DENIED_PARSE):
                return obj
        return None

    def _execution_for_portal(self, portal_name: bytes) -> Execution:
        bind = self.portals.get(portal_name)
        if bind is None:
            # A SQL-level cursor (DECLARE c CURSOR ...) executed as a portal.
            ex = Execution("cursor", None, portal=portal_name)
        else:
            name = bind.statement
            stmt = self.statements.get(name)
            ex = Execution(
                "extended" if name == b"" else "prepared",
                stmt.query if stmt is not None else None,
                statement_name=name,
                portal=portal_name,
                bind=bind,
                row_description=stmt.row_description if stmt is not None else None,
            )
        self.observer.execution_started(ex)
        return ex

    # -- backend --------------------------------------------------------------------

    def unfinished(self) -> list[Execution]:
        """Executions sent but not answered yet, oldest first (the session ends)."""
        return [obj for kind, obj in self._fifo if isinstance(obj, Execution)]

    def head_execution_py(self) -> Execution | None:
        """The execution the next DataRows belong to, if any."""
        if self._fifo:
            kind, obj = self._fifo[0]
            if kind in (_EXECUTE, _QUERY):
                assert isinstance(obj, Execution)
                return obj
        return None

    def backend_py(self, mtype: int, body: bytes) -> None:
        """Feed one backend message other than DataRow."""
        fifo = self._fifo
        if mtype == 0x5A:  # 'Z' ReadyForQuery
            if self.skipping:
                # The server answered while the tracker believed it discarded messages up
                # to a Sync the client has not sent: they no longer agree.
                raise PeerViolation(
                    "ReadyForQuery while the server was to discard messages up to a Sync: "
                    "the gateway lost track of the statements on this connection"
                )
            self.status = body[0] if body else ord("I")
            while fifo:
                kind, obj = fifo.popleft()
                if kind == _QUERY:
                    assert isinstance(obj, Execution)
                    self._finish(obj)
                    break
                if kind in (_SYNC, _DENIED_QUERY):
                    break
                if kind == _EXECUTE:
                    # Should not happen (server answers every Execute before Z).
                    assert isinstance(obj, Execution)
                    obj.skipped = True
                    self._finish(obj)
            self.copy_in = False
            self._done_in_batch = 0
            if self.status == ord("I"):
                self._drop_portals()
            return
        if mtype == 0x43 or mtype == 0x49 or mtype == 0x73:  # C, I, s
            ex = self.head_execution()
            if ex is None:
                return
            if mtype == 0x43:
                ex.add_tag(body)
            elif mtype == 0x73:
                ex.suspended = True
            self.copy_in = False
            if fifo[0][0] == _EXECUTE:
                fifo.popleft()
                self._finish(ex)
            return
        if mtype == 0x54:  # 'T' RowDescription
            self._row_description(body)
            return
        if mtype == 0x45:  # 'E' ErrorResponse
            self._error(body)
            return
        if mtype == 0x6E:  # 'n' NoData
            if fifo and fifo[0][0] in (_DESCRIBE_S, _DESCRIBE_P):
                fifo.popleft()
            return
        if mtype in (0x31, 0x32, 0x33):  # ParseComplete, BindComplete, CloseComplete
            if fifo and fifo[0][0] in (_PARSE, _BIND, _CLOSE):
                fifo.popleft()
            return
        if mtype == 0x47:  # 'G' CopyInResponse: client streams CopyData next
            self._copy_in_response()
            return
        # 't' ParameterDescription, 'H'/'W' copy responses, 'V', 'N', 'A', 'S':
        # nothing to track here.

    def backend_run_py(
        self,
        buf: bytes,
        entries: list[tuple[int, int, int, int]],
        rows: Callable[[Execution, bytes, int, int, int], None] | None,
    ) -> tuple[int, bool]:
        """Feed the leading messages of a read that need nothing but the tracker, for a
        driver that neither masks, limits nor discards them: DataRow runs (counted into the
        head execution, and passed to ``rows``, which counts their bytes too; without it
        the bytes are counted here), the tracked messages but ErrorResponse, and
        ParameterDescription. Returns the index of the first entry left to the driver and
        whether a ReadyForQuery left nothing pending."""
        done = 0
        idle = False
        for mtype, start, stop, count in entries:
            if mtype == 0x44:  # 'D' DataRow run
                ex = self.head_execution()
                if ex is None:
                    break  # rows nothing asked for: the driver's (it ends the session)
                ex.rows += count
                if rows is not None:
                    rows(ex, buf, start, stop, count)
                else:
                    ex.bytes += stop - start
            elif mtype in _RUN_BACKEND:
                self.backend(mtype, buf[start + 5 : stop])
                if mtype == 0x5A and not self._fifo:
                    idle = True
            elif mtype != 0x74:  # 't' ParameterDescription: nothing to track
                break
            done += 1
        return done, idle

    def _early_copy_end(self) -> None:
        """A CopyDone / CopyFail while no copy-in is known. What the tracker can follow:
        it directly follows the statement that may be the COPY (asyncpg sends the COPY,
        its data and the end at once), remembered as ``early_copy_end`` (the execution,
        an object of its own) for that statement's CopyInResponse. Anything else pending
        (a Sync, another statement) could be read by the server as part of a copy-in or
        not, depending on timing: refused. Nothing pending: the end of a COPY the server
        already failed, which it ignores."""
        fifo = self._fifo
        if not fifo:
            return
        marker = self.early_copy_end
        if marker is not None and any(obj is marker for _, obj in fifo):
            raise PeerViolation(
                "a second CopyDone/CopyFail before the server asked for COPY data: the "
                "gateway cannot tell which COPY each one ends"
            )
        kind, last = fifo[-1]
        if kind not in (_EXECUTE, _QUERY):
            raise PeerViolation(
                "CopyDone/CopyFail pipelined behind other messages before the server asked "
                "for COPY data: the gateway cannot tell what the server reads as copy data"
            )
        self.early_copy_end = last

    def _copy_in_response(self) -> None:
        """The server reads COPY data from now on, and ignores the Syncs the client sent
        behind the COPY before its CopyDone / CopyFail: their FIFO entries go. If the client
        ended the data already (``early_copy_end``), the copy-in is over as far as the
        client's messages go. Other messages sent into the copy-in the server would read
        in ways the tracker cannot follow."""
        fifo = self._fifo
        marker = self.early_copy_end
        if not fifo or fifo[0][0] not in (_EXECUTE, _QUERY):
            raise PeerViolation("CopyInResponse with no statement running")
        head = fifo[0][1]
        if marker is head:
            # The client ended the data already, right behind this statement: whatever it
            # sent after the end is read normally.
            self.early_copy_end = None
            return
        if marker is not None and any(obj is marker for _, obj in fifo):
            raise PeerViolation(  # the end was sent behind a later statement
                "messages pipelined behind COPY FROM STDIN: only copy data, CopyDone, "
                "CopyFail, Flush and Sync may follow the COPY"
            )
        self.early_copy_end = None  # a COPY's that the server failed before asking: stale
        if any(kind != _SYNC for kind, _ in list(fifo)[1:]):
            raise PeerViolation(
                "messages pipelined behind COPY FROM STDIN: only copy data, CopyDone, "
                "CopyFail, Flush and Sync may follow the COPY"
            )
        if len(fifo) > 1:
            while len(fifo) > 1:
                fifo.pop()
            self.copy_dropped_for = head
        self.copy_in = True

    def _row_description(self, body: bytes) -> None:
        fifo = self._fifo
        if not fifo:
            return
        kind, obj = fifo[0]
        if kind == _DESCRIBE_S:
            assert isinstance(obj, bytes)
            stmt = self.statements.get(obj)
            if stmt is not None:
                stmt.row_description = body
            fifo.popleft()
            # Executions queued behind (pipelined) were created before this
            # description arrived; give it to those of the same statement.
            for k, queued in fifo:
                if (
                    k == _EXECUTE
                    and isinstance(queued, Execution)
                    and queued.statement_name == obj
                    and queued.row_description is None
                ):
                    queued.row_description = body
        elif kind == _DESCRIBE_P:
            assert isinstance(obj, bytes)
            fifo.popleft()
            for k, queued in fifo:
                if k == _EXECUTE and isinstance(queued, Execution) and queued.portal == obj:
                    queued.row_description = body
                    break
        elif kind in (_QUERY, _EXECUTE):
            assert isinstance(obj, Execution)
            obj.row_description = body
            obj.mask_plan = None
            self.observer.result_described(obj)

    def _error(self, body: bytes) -> None:
        fields = parse_error_fields(body)
        error = (fields.get("C", ""), fields.get("M", ""))
        fifo = self._fifo
        if not fifo:
            return  # asynchronous error (FATAL on termination): no execution owns it
        kind, obj = fifo[0]
        if obj is not None and obj is self.copy_dropped_for:
            # The COPY failed after its CopyInResponse, with Syncs behind it dropped as read
            # by the copy-in. If it failed before reading them (a view, FREEZE), the server
            # answers the first one after all: which, the messages cannot tell.
            raise PeerViolation(
                "COPY FROM STDIN failed with a Sync pipelined behind it: the gateway cannot "
                "tell whether the server read it; the session is ended"
            )
        if kind == _QUERY:
            assert isinstance(obj, Execution)
            obj.error = error
            return  # ReadyForQuery still follows
        if kind == _DENIED_QUERY:
            return  # the driver answered it; ReadyForQuery still follows
        # Extended protocol: the server skips everything up to the next Sync. The first
        # execution owns the error, unless the error answers a refused Parse (the
        # refusal is the driver's to report; the server's error is to the replacement).
        first = kind != _DENIED_PARSE
        # The error ends the transaction the pipeline ran in, and with it every portal the
        # protocol made (SQL-level cursors are not among ours): Bind records of the names
        # no longer describe what the server holds.
        self.portals.clear()
        while fifo and fifo[0][0] != _SYNC:
            kind, obj = fifo.popleft()
            if kind == _PARSE:
                # This Parse failed or was skipped: the name holds an older statement, or
                # none (the unnamed one is dropped first). Unknown from now on: its
                # executions have no text, so masking redacts them and the audit says so.
                assert isinstance(obj, bytes)
                self.statements.pop(obj, None)
                continue
            if isinstance(obj, Execution):
                if first:
                    obj.error = error
                    first = False
                else:
                    obj.skipped = True
                self._finish(obj)
        self.copy_in = False
        if not fifo:
            # No Sync was sent yet: the server discards what comes next, up to one.
            self.skipping = True

    def _finish(self, ex: Execution) -> None:
        self._done_in_batch += 1
        self.observer.execution_finished(ex)

    def _drop_portals(self) -> None:
        if len(self.portals) > 1 or (self.portals and b"" not in self.portals):
            self.portals = {k: v for k, v in self.portals.items() if k == b""}

    def forget_names(self, statements: bool, portals: bool) -> None:
        """SQL-level PREPARE / DEALLOCATE / DISCARD and DECLARE / CLOSE share the protocol's
        statement and portal names: after one, the records of the names may not be what
        the server holds, so they are dropped (executions of a dropped name have no known
        text: masking redacts every column of them, the audit log says the statement was
        not seen)."""
        if statements:
            self.statements.clear()
        if portals:
            self.portals.clear()

    def reset(self) -> None:
        """Forget everything (DISCARD ALL / new upstream connection)."""
        self.statements.clear()
        self.portals.clear()
        self._fifo.clear()
        self.copy_in = self.skipping = False
        self.early_copy_end = self.copy_dropped_for = None


class QueryTrackerPy(_TrackerMethods, _TrackerState):
    """The pure-Python tracker: the reference the compiled one is tested against."""

    __slots__ = ()
    frontend = _TrackerMethods.frontend_py
    query = _TrackerMethods.query_py
    backend = _TrackerMethods.backend_py
    head_execution = _TrackerMethods.head_execution_py
    frontend_run = _TrackerMethods.frontend_run_py
    backend_run = _TrackerMethods.backend_run_py


# The FIFO kinds, in the order the compiled tracker numbers them.
_KINDS: Final = (
    _PARSE,
    _BIND,
    _DESCRIBE_S,
    _DESCRIBE_P,
    _EXECUTE,
    _CLOSE,
    _SYNC,
    _QUERY,
    _DENIED_QUERY,
    _DENIED_PARSE,
)

# One interface either way (type checkers see the reference); the reference runs where the
# extension was not built.
if TYPE_CHECKING or _tracker is None:
    QueryTracker = QueryTrackerPy
else:
    # What the compiled tracker builds and calls: the same Execution class and Bind parser
    # (itself compiled where _wire was built) as the reference.
    _tracker.configure(Execution, parse_bind, deque, _KINDS)

    class QueryTracker(_TrackerMethods, _tracker.TrackerCore):
        __doc__ = _TrackerMethods.__doc__
        __slots__ = ()


COMPILED = QueryTracker is not QueryTrackerPy
