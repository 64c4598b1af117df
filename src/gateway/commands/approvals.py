"""`gateway approvals list|show|approve|deny`: the approvers' client of the admin API.

Talks to the admin API (docs/approvals.md) with the standard library only. The token comes
from ``--token``, ``--token-file`` or ``GATEWAY_TOKEN`` and is never printed; redirects are
not followed (they would carry it elsewhere). Exit statuses: 0 ok, 1 the API refused (its
message is printed), 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import unicodedata
from typing import Any, Final

DEFAULT_URL: Final = "https://127.0.0.1:8081"
URL_ENV: Final = "GATEWAY_ADMIN_URL"
TOKEN_ENV: Final = "GATEWAY_TOKEN"
HTTP_TIMEOUT: Final = 30.0
STATEMENT_HEAD: Final = 48

OK, API_ERROR, USAGE_ERROR = 0, 1, 2


class CommandError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- arguments ----------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=None,
        help=f"admin API base URL (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"bearer token (default: ${TOKEN_ENV}; prefer the variable, argv is visible)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        default=None,
        help="read the bearer token from this file (instead of --token)",
    )
    parser.add_argument(
        "--cafile",
        metavar="FILE",
        help="CA bundle that signed the admin certificate; for the certificate the gateway "
        "generates, <state_dir>/server.crt",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the admin certificate (testing only)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON as is")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "approvals",
        help="list, show, approve and deny approval requests (admin API)",
        description="Approvers' client of the admin API (docs/approvals.md).",
    )
    commands = parser.add_subparsers(dest="approvals_command", required=True, metavar="COMMAND")

    p = commands.add_parser("list", help="pending (or decided) requests, one line each")
    _common(p)
    p.add_argument(
        "--state", choices=["pending", "decided"], default="pending", help="default: pending"
    )
    p.set_defaults(func=main)

    p = commands.add_parser("show", help="one request in full")
    _common(p)
    p.add_argument("id", help="approval request id (apr_...)")
    p.set_defaults(func=main)

    p = commands.add_parser("approve", help="approve a pending request")
    _common(p)
    p.add_argument("id", help="approval request id (apr_...)")
    p.add_argument(
        "--scope",
        choices=["statement", "session"],
        default="statement",
        help="statement: this result only (default); session: the rest of the session",
    )
    p.add_argument("--reason", default="", help="why (kept in the audit log)")
    p.set_defaults(func=main)

    p = commands.add_parser("deny", help="deny a pending request")
    _common(p)
    p.add_argument("id", help="approval request id (apr_...)")
    p.add_argument("--reason", default="", help="why (the requester's client is told)")
    p.set_defaults(func=main)


# -- running ------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    try:
        client = AdminClient.from_args(args)
        command = args.approvals_command
        if command == "list":
            data = client.call("GET", f"/api/approvals?state={args.state}")
            print(_dump(data) if args.json else format_table(data, args.state))
        elif command == "show":
            data = client.call("GET", f"/api/approvals/{_quote(args.id)}")
            print(_dump(data) if args.json else format_request(data))
        else:
            body: dict[str, str] = {"reason": args.reason}
            if command == "approve":
                body["scope"] = args.scope
            data = client.call("POST", f"/api/approvals/{_quote(args.id)}/{command}", body)
            if args.json:
                print(_dump(data))
            else:
                scope = f" (scope: {data.get('scope')})" if command == "approve" else ""
                print(f"{_clean(str(data.get('id')))}: {data.get('state')}{scope}")
    except CommandError as exc:
        print(f"gateway approvals: {exc.message}", file=sys.stderr)
        return exc.status
    return OK


class AdminClient:
    def __init__(self, url: str, token: str, cafile: str | None, insecure: bool) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._cafile = cafile
        self._insecure = insecure

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AdminClient:
        url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
        if not url.startswith(("https://", "http://")):
            raise CommandError(USAGE_ERROR, f"--url must start with https:// or http://: {url}")
        if args.token and args.token_file:
            raise CommandError(USAGE_ERROR, "--token and --token-file exclude each other")
        token = args.token or _read_token_file(args.token_file) or os.environ.get(TOKEN_ENV, "")
        if not token.strip():
            raise CommandError(
                USAGE_ERROR, f"no token: pass --token or --token-file, or set {TOKEN_ENV}"
            )
        if args.cafile and args.insecure:
            raise CommandError(USAGE_ERROR, "--cafile and --insecure exclude each other")
        return cls(url, token.strip(), args.cafile, args.insecure)

    def call(self, method: str, path: str, body: dict[str, str] | None = None) -> Any:
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _opener(self._tls()).open(request, timeout=HTTP_TIMEOUT) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            if 300 <= exc.code < 400:
                raise CommandError(
                    USAGE_ERROR, f"{self.url} answered a redirect ({exc.code}); not followed"
                ) from None
            raise CommandError(API_ERROR, _api_error(exc.code, raw)) from None
        except urllib.error.URLError as exc:
            hint = ""
            if "WRONG_VERSION_NUMBER" in str(exc.reason) and self.url.startswith("https:"):
                # A TLS hello answered in plain HTTP: an admin API with allow_plaintext.
                hint = " (the admin API answers plain HTTP: pass --url http://...)"
            raise CommandError(
                USAGE_ERROR, f"cannot reach {self.url}: {exc.reason}{hint}"
            ) from None
        except (OSError, ValueError) as exc:
            raise CommandError(USAGE_ERROR, f"cannot reach {self.url}: {exc}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise CommandError(USAGE_ERROR, f"{self.url} did not answer JSON") from None

    def _tls(self) -> Any:
        import ssl

        if self._insecure:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            return ssl.create_default_context(cafile=self._cafile)
        except (OSError, ssl.SSLError) as exc:
            raise CommandError(USAGE_ERROR, f"cannot load --cafile {self._cafile}: {exc}") from None


def _read_token_file(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(USAGE_ERROR, f"cannot read --token-file {path}: {exc}") from None


def _opener(context: Any) -> Any:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        # The default handler would resend the Authorization header to the new location.
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return urllib.request.build_opener(NoRedirect(), urllib.request.HTTPSHandler(context=context))


def _api_error(code: int, raw: bytes) -> str:
    try:
        message = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {code}: {_clean(str(message))}" if message else f"HTTP {code}"


def _quote(request_id: str) -> str:
    from urllib.parse import quote

    return quote(request_id, safe="")


# -- output -------------------------------------------------------------------------------


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


def _clean(text: str, *, keep_newlines: bool = False) -> str:
    """Statement texts come from database clients: never let them drive the terminal."""
    out = []
    for ch in text:
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif ch in "\t\r\n":
            out.append(" ")
        elif unicodedata.category(ch).startswith("C"):
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _why(item: dict[str, Any]) -> str:
    statement = " ".join(_clean(str(item.get("statement", ""))).split())
    if len(statement) > STATEMENT_HEAD:
        statement = statement[: STATEMENT_HEAD - 1] + "\u2026"
    return f"{_clean(str(item.get('reason', '')))}: {statement}"


def format_table(data: dict[str, Any], state: str) -> str:
    items: list[dict[str, Any]] = data.get("approvals", [])
    if not items:
        return f"no {state} approval requests"
    now = float(data.get("now") or time.time())
    header = ["ID", "KIND", "REQUESTER", "TARGET", "ROWS", "AGE"]
    if state == "decided":
        header += ["STATE", "BY"]
    header.append("REASON: STATEMENT")
    rows = []
    for item in items:
        row = [
            _clean(str(item.get("id", ""))),
            _clean(str(item.get("kind", ""))),
            _clean(str(item.get("requester", ""))),
            _clean(str(item.get("target", ""))),
            str(item.get("rows_so_far", "")),
            format_age(now - float(item.get("created_at") or now)),
        ]
        if state == "decided":
            row += [str(item.get("state", "")), _clean(str(item.get("decided_by") or "-"))]
        row.append(_why(item))
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)), r[-1]])
        for r in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def format_request(item: dict[str, Any]) -> str:
    def when(key: str) -> str:
        value = item.get(key)
        if not value:
            return "-"
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(value)))

    lines = [
        f"id:          {_clean(str(item.get('id')))}",
        f"kind:        {item.get('kind')}",
        f"state:       {item.get('state')}",
        f"requester:   {_clean(str(item.get('requester')))} "
        f"(groups: {_clean(', '.join(item.get('groups', [])))})",
        f"session:     {_clean(str(item.get('session_id')))}",
        f"target:      {_clean(str(item.get('target')))}",
        f"policy:      {_clean(str(item.get('policy')))}",
        f"reason:      {_clean(str(item.get('reason')))}",
        f"approvers:   {_clean(', '.join(item.get('approvers', [])))}",
        f"rows so far: {item.get('rows_so_far')}  bytes so far: {item.get('bytes_so_far')}",
        f"created:     {when('created_at')}",
        f"expires:     {when('expires_at')}",
    ]
    if item.get("state") != "pending":
        lines += [
            f"decided by:  {_clean(str(item.get('decided_by') or '-'))} at {when('decided_at')}",
            f"decision:    {_clean(str(item.get('decision_reason') or '-'))}",
            f"scope:       {item.get('scope')}",
        ]
    truncated = " (truncated)" if item.get("statement_truncated") else ""
    lines += [f"statement{truncated}:", _clean(str(item.get("statement", "")), keep_newlines=True)]
    return "\n".join(lines)
