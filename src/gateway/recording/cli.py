"""The auditors' tools behind ``gateway sessions list|show|replay|export|verify``.

Argument parsing lives in ``gateway.commands.sessions``; this module gets the parsed
namespace. Everything streams: files are read frame by frame, and output is written
as it is produced. Exit statuses are documented in docs/auditing.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec

from .keys import PUBLIC_KEY_NAME, KeyFileError, load_public_key, public_key_path
from .reader import RecordingFormatError, RecordingReader
from .render import (
    escape,
    format_bytes,
    format_duration,
    format_time,
    one_line,
    outcome_parts,
    render_table,
)
from .results import decode_result
from .schema import (
    FILE_SUFFIX,
    ColumnInfo,
    Ctl,
    Done,
    End,
    Meta,
    Rows,
    Start,
    Stmt,
    UnknownFrame,
)
from .summary import SessionSummary, summarize
from .verify import SEVERITY, Status, VerifyResult, named_session_id, verify_file

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
# verify --all found no recordings: nothing was verified, which is not "all intact" (0).
EXIT_NO_RECORDINGS: Final = 5

DEFAULT_SESSION_DIR: Final = "sessions"
DEFAULT_STATE_DIR: Final = ".gateway"


class UsageProblem(Exception):
    """Bad arguments, unknown session, missing key: exit status 2."""


# --------------------------------------------------------------------------- plumbing


def run(args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "list": cmd_list,
        "show": cmd_show,
        "replay": cmd_replay,
        "export": cmd_export,
        "verify": cmd_verify,
    }
    try:
        return handlers[args.sessions_command](args)
    except UsageProblem as exc:
        print(f"gateway sessions: {escape(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not complain again.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _config(args: argparse.Namespace) -> dict[str, Any]:
    path = getattr(args, "config", None)
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise UsageProblem(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageProblem(f"config {path}: {exc}") from None
    return {"data": data, "base": Path(path).resolve().parent}


def _config_path(conf: dict[str, Any], section: str, key: str, default: str | None) -> Path | None:
    """A path from the config, relative to the config file's directory (as the gateway does)."""
    value = conf["data"].get(section, {}).get(key, default)
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else conf["base"] / path


def session_dir(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return Path(args.dir)
    conf = _config(args)
    if conf:
        found = _config_path(conf, "gateway", "session_dir", DEFAULT_SESSION_DIR)
        assert found is not None
        return found
    return Path(DEFAULT_SESSION_DIR)


def public_key_file(args: argparse.Namespace) -> Path:
    if args.key is not None:
        return Path(args.key)
    if args.state_dir is not None:
        return Path(args.state_dir) / PUBLIC_KEY_NAME
    conf = _config(args)
    if conf:
        configured = _config_path(conf, "recording", "signing_key_file", None)
        if configured is not None:
            return public_key_path(configured)
        state = _config_path(conf, "gateway", "state_dir", DEFAULT_STATE_DIR)
        assert state is not None
        return state / PUBLIC_KEY_NAME
    return Path(DEFAULT_STATE_DIR) / PUBLIC_KEY_NAME


def resolve_session(ref: str, directory: Path) -> Path:
    """A session file from a path, a session id, or a unique prefix of one."""
    as_path = Path(ref)
    if as_path.is_file() and (ref.endswith(FILE_SUFFIX) or "/" in ref):
        return as_path
    exact = directory / (ref + FILE_SUFFIX)
    if exact.is_file():
        return exact
    if "/" in ref:
        raise UsageProblem(f"no such recording: {ref}")
    if not directory.is_dir():
        raise UsageProblem(f"session directory {directory} does not exist (use --dir)")
    matches = sorted(p for p in directory.glob(glob_escape(ref) + "*" + FILE_SUFFIX) if p.is_file())
    if not matches:
        raise UsageProblem(f"no session matching {ref!r} in {directory}")
    if len(matches) > 1:
        names = ", ".join(p.name.removesuffix(FILE_SUFFIX) for p in matches[:5])
        more = "" if len(matches) <= 5 else f" and {len(matches) - 5} more"
        raise UsageProblem(f"{ref!r} is ambiguous: {names}{more}")
    return matches[0]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def session_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise UsageProblem(f"session directory {directory} does not exist (use --dir)")
    # Names only (cheap even for many files); the gateway's ids sort by start time.
    return sorted(p for p in directory.glob("*" + FILE_SUFFIX) if p.is_file())


_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float | None = None) -> float:
    """``2h``, ``30m``, ``1d12h``, or an ISO date/time (UTC if no zone) -> epoch seconds."""
    now = time.time() if now is None else now
    compact = text.strip().lower()
    parts = _DURATION_RE.findall(compact)
    if parts and "".join(n + u for n, u in parts) == compact.replace(" ", ""):
        return now - sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageProblem(f"--since {text!r}: use a duration like 2h or an ISO date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# --------------------------------------------------------------------------- list

_LIST_HEADER: Final = (
    f"{'ID':<30} {'USER':<24} {'TARGET':<12} {'START (UTC)':<19} {'DURATION':>9} "
    f"{'STMTS':>6} {'ROWS':>8} {'BYTES':>9} {'DENIED':>6}  STATUS"
)


def cmd_list(args: argparse.Namespace) -> int:
    directory = session_dir(args)
    since = parse_since(args.since) if args.since else None

    def accept(start: Start) -> bool:
        if args.user and start.subject.lower() != args.user.lower():
            return False
        if args.target and start.target != args.target:
            return False
        return since is None or start.started_at >= since

    paths = session_files(directory)
    out = sys.stdout
    if not args.json:
        out.write(_LIST_HEADER + "\n")
    for path in paths:
        summary = summarize(path, accept)
        if summary is None:
            continue
        if args.json:
            fields = summary.as_dict()
            fields["name_matches"] = _name_matches(summary)
            out.write(json.dumps(fields) + "\n")
        else:
            out.write(_list_line(summary) + "\n")
        out.flush()
    return EXIT_OK


def _name_matches(s: SessionSummary) -> bool:
    """False when the file's name claims another session than its start frame holds."""
    return s.started_at is None or named_session_id(s.path) == s.session_id


def _list_line(s: SessionSummary) -> str:
    status = {
        "complete": "",
        "no-end-frame": "NO END FRAME (crashed or still open; totals from frames)",
        "truncated": "TRUNCATED (last frame cut; totals from frames)",
        "unreadable": f"UNREADABLE: {s.problem}",
    }[s.status]
    if not _name_matches(s):
        # A file moved into another session's name: `verify` fails it.
        mismatch = f"FILE HOLDS SESSION {s.session_id} (not its name; verify fails it)"
        status = f"{mismatch}; {status}" if status else mismatch
    return (
        f"{escape(s.file_id):<30} {escape(s.subject):<24} {escape(s.target):<12} "
        f"{format_time(s.started_at, millis=False):<19} {format_duration(s.duration):>9} "
        f"{s.statements:>6} {s.rows:>8} {format_bytes(s.bytes_to_client):>9} {s.denied:>6}  "
        f"{escape(status)}"
    ).rstrip()


# --------------------------------------------------------------------------- show


def _frames(path: Path) -> Iterator[tuple[int, Any]]:
    """(index, frame) pairs; unknown frame types are announced on stderr and skipped."""
    with RecordingReader(path) as reader:
        for raw, frame in reader.logical_frames():
            if isinstance(frame, UnknownFrame):
                print(
                    f"notice: frame {raw.index} has unknown type {frame.t!r} "
                    "(written by a newer gateway?); skipped",
                    file=sys.stderr,
                )
                continue
            yield raw.index, frame
        if reader.truncation is not None:
            print(f"warning: {reader.truncation.describe()}", file=sys.stderr)


def _open_frames(args: argparse.Namespace) -> Iterator[tuple[int, Any]]:
    return _frames(resolve_session(args.id, session_dir(args)))


def cmd_show(args: argparse.Namespace) -> int:
    frames = _open_frames(args)
    out = sys.stdout
    limit = None if args.full else 160
    t0 = 0.0
    ended = False
    try:
        for _, frame in frames:
            if isinstance(frame, Start):
                t0 = frame.started_at
                _write_start(out, frame)
            elif isinstance(frame, Stmt):
                rule = f" [{escape(frame.rule)}]" if frame.rule else ""
                decision = "DENY " if frame.decision == "deny" else escape(frame.decision)
                name = f" {escape(frame.name)}" if frame.name else ""
                offset = f"+{frame.at - t0:.3f}s"
                out.write(
                    f"  #{frame.stmt:<4} {offset:>10}  {decision:<5}{rule} "
                    f"{escape(frame.path)}{name}: {one_line(frame.text, limit)}\n"
                )
                if frame.params:
                    out.write(f"         params: {_params(frame.params, limit)}\n")
            elif isinstance(frame, Done):
                out.write(f"         -> {_outcome(frame)}\n")
            elif isinstance(frame, Ctl):
                out.write(f"  [{escape(frame.kind)}] +{frame.at - t0:.3f}s {_detail(frame)}\n")
            elif isinstance(frame, End):
                ended = True
                out.write(
                    f"ended {format_time(frame.ended_at)} UTC after "
                    f"{format_duration(frame.ended_at - t0)}: {escape(frame.reason)}; "
                    f"{frame.statements} statements, {frame.rows} rows, "
                    f"{format_bytes(frame.bytes_to_client)} to the client, {frame.denied} denied\n"
                )
    except RecordingFormatError as exc:
        print(f"error: {escape(exc.message)}", file=sys.stderr)
        return EXIT_FAILED
    if not ended:
        out.write("(no end frame: the session crashed, was cut off, or is still open)\n")
    return EXIT_OK


def _write_start(out: TextIO, start: Start) -> None:
    e = escape
    groups = e(",".join(start.groups))
    tls = e(start.tls.get("version", "none")) if start.tls else "none"
    out.write(
        f"session {e(start.session_id)}\n"
        f"  user {e(start.subject)} (groups: {groups or '-'})  "
        f"token {e(start.token_id or '-')}\n"
        f"  target {e(start.target)} ({e(start.protocol)}) as {e(start.upstream_user)}  "
        f"client {e(start.client_address)}  TLS {tls}\n"
        f"  started {format_time(start.started_at)} UTC  gateway {e(start.gateway_version)}  "
        f"policy {e(start.policy_digest)}\n"
    )


def _detail(ctl: Ctl) -> str:
    """A control event's details (names a client chose: schemas, users, ...), escaped."""
    return ", ".join(f"{escape(k)}={escape(v)}" for k, v in ctl.detail.items())


def _params(params: list[Any], limit: int | None) -> str:
    shown = []
    for p in params:
        if p is None:
            shown.append("NULL")
        elif isinstance(p, bytes | bytearray):
            shown.append("\\x" + bytes(p).hex())
        else:
            shown.append(repr(str(p)))
    return one_line("[" + ", ".join(shown) + "]", limit)


def _outcome(done: Done) -> str:
    # The message is shortened (and escaped) by one_line; the rest (tag, code) by escape.
    return escape(", ".join(outcome_parts(done, lambda message: one_line(message, 200))))


# --------------------------------------------------------------------------- replay


class _Pending:
    __slots__ = ("columns", "data", "encodings", "stmt")

    def __init__(self, stmt: Stmt) -> None:
        self.stmt = stmt
        self.columns: list[ColumnInfo] | None = None
        self.data: list[bytes] = []
        self.encodings: set[str] = set()


def cmd_replay(args: argparse.Namespace) -> int:
    if args.speed < 0:
        raise UsageProblem("--speed must be 0 (no delay) or positive")
    frames = _open_frames(args)
    out = sys.stdout
    clock = _ReplayClock(args.speed, args.max_gap)
    pending: dict[int, _Pending] = {}
    target = "?"
    try:
        for _, frame in frames:
            if isinstance(frame, Start):
                target = escape(frame.target)
                clock.wait(frame.started_at)
                out.write(
                    f"-- {format_time(frame.started_at)} UTC  {escape(frame.subject)} connected "
                    f"to {target} from {escape(frame.client_address)}\n"
                )
            elif isinstance(frame, Stmt):
                clock.wait(frame.at)
                pending[frame.stmt] = _Pending(frame)
                note = (
                    ""
                    if frame.decision != "deny"
                    else "   -- DENIED" + (f" by {escape(frame.rule)}" if frame.rule else "")
                )
                # Multi-line statements stay multi-line; every other control character
                # is escaped, as in the result tables.
                text = escape(frame.text.rstrip(), newlines=True)
                out.write(f"{target}=> {text}{note}\n")
            elif isinstance(frame, Meta) and frame.stmt in pending:
                pending[frame.stmt].columns = frame.columns
            elif isinstance(frame, Rows) and frame.stmt in pending:
                pending[frame.stmt].data.append(frame.data)
                pending[frame.stmt].encodings.add(frame.enc)
            elif isinstance(frame, Done):
                state = pending.pop(frame.stmt, None)
                if state is not None:
                    clock.wait(state.stmt.at + frame.duration)
                out.writelines(line + "\n" for line in _result_lines(state, frame))
                out.write("\n")
            elif isinstance(frame, Ctl):
                clock.wait(frame.at)
                out.write(f"-- [{escape(frame.kind)}] {_detail(frame)}\n")
            elif isinstance(frame, End):
                clock.wait(frame.ended_at)
                out.write(f"-- session ended: {escape(frame.reason)}\n")
            out.flush()
    except RecordingFormatError as exc:
        print(f"error: {escape(exc.message)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


class _ReplayClock:
    """Sleeps the recorded gaps, scaled by 1/speed and capped at max_gap seconds."""

    def __init__(
        self, speed: float, max_gap: float | None, sleep: Callable[[float], None] | None = None
    ) -> None:
        self.speed = speed
        self.max_gap = max_gap
        self.sleep = sleep if sleep is not None else time.sleep
        self.last: float | None = None

    def wait(self, at: float) -> None:
        if self.last is not None and self.speed > 0:
            gap = max(0.0, at - self.last)
            if self.max_gap is not None:
                gap = min(gap, self.max_gap)
            if gap > 0:
                self.sleep(gap / self.speed)
        self.last = at if self.last is None else max(self.last, at)


def _result_lines(state: _Pending | None, done: Done) -> list[str]:
    lines: list[str] = []
    if state is not None and (state.columns is not None or state.data):
        lines.extend(_table(state))
    if done.error is not None:
        code = f"  ({escape(done.error.code)})" if done.error.code else ""
        lines.append(f"ERROR:  {escape(done.error.message, newlines=True)}{code}")
    elif done.command_tag and not (state and state.columns is not None):
        lines.append(escape(done.command_tag))
    if done.rows_recorded < done.rows:
        lines.append(
            f"-- {done.rows} rows sent to the client; {done.rows_recorded} recorded (policy cap)"
        )
    return lines


def _table(state: _Pending) -> list[str]:
    result = decode_result(state.columns or [], state.data, state.encodings)
    if result.problem is not None:
        return [f"-- {escape(result.problem)}"]
    return render_table(result.headers, result.rows, result.right)


# --------------------------------------------------------------------------- export

_JSON: Final = msgspec.json.Encoder()


def cmd_export(args: argparse.Namespace) -> int:
    path = resolve_session(args.id, session_dir(args))
    out = sys.stdout.buffer
    try:
        with RecordingReader(path) as reader:
            for _, frame in reader.frames():
                body: Any = frame.fields if isinstance(frame, UnknownFrame) else frame
                # bytes become base64 strings (msgspec's JSON encoding of bytes).
                out.write(_JSON.encode(body) + b"\n")
            if reader.truncation is not None:
                print(f"warning: {reader.truncation.describe()}", file=sys.stderr)
    except RecordingFormatError as exc:
        out.flush()
        print(f"error: {escape(exc.message)}", file=sys.stderr)
        return EXIT_FAILED
    out.flush()
    return EXIT_OK


# --------------------------------------------------------------------------- verify


def cmd_verify(args: argparse.Namespace) -> int:
    if bool(args.all) == bool(args.ids):
        raise UsageProblem("give session ids (or files), or --all")
    key_file = public_key_file(args)
    try:
        public_key = load_public_key(key_file)
    except KeyFileError as exc:
        raise UsageProblem(f"{exc} (pass --key PUBFILE or --state-dir DIR)") from None
    directory = session_dir(args)
    if args.all:
        paths = session_files(directory)
    else:
        paths = [resolve_session(ref, directory) for ref in args.ids]
    worst = Status.OK
    for path in paths:
        result = verify_file(
            path,
            public_key,
            progress=_progress_printer(path),
            progress_every=args.progress_every,
        )
        _print_verify(result)
        if SEVERITY[result.status] > SEVERITY[worst]:
            worst = result.status
    if args.all and not paths:
        print(f"no recordings in {directory}: nothing verified", file=sys.stderr)
        return EXIT_NO_RECORDINGS
    return int(worst)


def _progress_printer(path: Path) -> Callable[[int, int], None]:
    tty = sys.stderr.isatty()

    def report(done: int, total: int) -> None:
        if total <= 0:
            return
        pct = 100 * done // total
        text = f"verifying {escape(path.name)}: {pct}% ({done >> 20}/{total >> 20} MiB)"
        if tty:
            sys.stderr.write("\r" + text + ("\n" if done >= total else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    return report


_LABELS: Final = {
    Status.OK: "OK",
    Status.ALTERED: "FAILED",
    Status.INCOMPLETE: "INCOMPLETE",
    Status.TRUNCATED: "TRUNCATED",
}


def _print_verify(result: VerifyResult) -> None:
    # The message can quote the file (a session id, a key fingerprint): escaped.
    name = escape(result.path.name.removesuffix(FILE_SUFFIX))
    print(f"{name}: {_LABELS[result.status]}: {escape(result.message)}")
    for notice in result.notices:
        print(f"  notice: {escape(notice)}")
