"""Tell approvers about a new request: a signed JSON POST to ``[approvals] webhook_url``.

Rules this module keeps:

* The broker calls the notifier synchronously inside ``open``; delivery runs in a background
  task (strongly referenced until it ends), so a slow or dead webhook never delays a session.
* The body is serialised once; every attempt sends the same bytes, and the signature
  ``X-Gateway-Signature: sha256=<hex HMAC-SHA-256(secret, body)>`` covers exactly them.
* Up to ``attempts`` tries, each bounded by ``timeout``; connection errors, timeouts and 5xx
  are retried after a short backoff, any other non-2xx answer is final (retrying a 4xx
  repeats the same mistake). Redirects are not followed.
* The outcome goes back to the session through ``request.on_event`` ("notified" or
  "notify_failed") if the request still has one (a decided or withdrawn request has none).
* Failures are logged with the webhook's host only: webhook URLs often carry a credential
  in their path or query (chat incoming-webhooks), and the secret is never logged.

The HTTP client is behind ``WebhookTransport`` because aiohttp belongs to ``gateway.admin``
(tests/unit/test_layering.py); ``gateway.admin.webhook`` supplies the aiohttp transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from .. import __version__
from .broker import ApprovalRequest

log = logging.getLogger("gateway")

EVENT_REQUESTED: Final = "approval_requested"
SIGNATURE_HEADER: Final = "X-Gateway-Signature"
EVENT_HEADER: Final = "X-Gateway-Event"
DELIVERY_HEADER: Final = "X-Gateway-Delivery"
DEFAULT_BACKOFF: Final = (0.5, 2.0)


class DeliveryError(Exception):
    """One attempt could not get an HTTP status (connection refused, TLS, timeout...). The
    message is safe to log: it names no URL path, query or secret."""


class WebhookTransport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        """POST ``body``; return the HTTP status. Raises DeliveryError."""
        ...

    async def close(self) -> None: ...


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Gateway-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does (docs/approvals.md): constant-time compare over the raw body.
    Compared as bytes: compare_digest refuses non-ASCII text, and a header is attacker input."""
    return hmac.compare_digest(sign(secret, body).encode(), header.encode("utf-8", "replace"))


def webhook_payload(
    request: ApprovalRequest, admin_url: str | None, *, now: float | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event": EVENT_REQUESTED,
        "sent_at": time.time() if now is None else now,
        "request": request.to_json(),
    }
    if admin_url:
        base = admin_url.rstrip("/") + "/api/approvals/" + request.id
        payload["approve_url"] = base + "/approve"
        payload["deny_url"] = base + "/deny"
    return payload


def safe_host(url: str) -> str:
    """The part of a webhook URL that may be logged: scheme, host and port."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class WebhookNotifier:
    """``broker.notify``: call with a new ApprovalRequest; ``await close()`` at shutdown."""

    def __init__(
        self,
        url: str,
        *,
        transport: WebhookTransport,
        secret: bytes | None = None,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        admin_url: str | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.url = url
        self.admin_url = admin_url
        self._transport = transport
        self._secret = secret
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = tuple(backoff) or (0.0,)
        self._tasks: set[asyncio.Task[bool]] = set()
        self._host = safe_host(url)
        self._closed = False

    def __call__(self, request: ApprovalRequest) -> None:
        if self._closed:
            return
        task: asyncio.Task[bool] = asyncio.get_running_loop().create_task(self.deliver(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def wait(self) -> None:
        """Until every delivery started so far has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop: abandon deliveries still retrying, then close the HTTP client."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._transport.close()

    def headers(self, request: ApprovalRequest, body: bytes) -> dict[str, str]:
        return self._headers(EVENT_REQUESTED, request.id, body)

    def _headers(self, event: str, delivery: str, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"db-gateway/{__version__}",
            EVENT_HEADER: event,
            DELIVERY_HEADER: delivery,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        return headers

    def send(self, event: str, delivery: str, payload: Mapping[str, Any]) -> None:
        """Deliver another kind of event (alerts) with the same body encoding, signature
        and retry rules; in a background task, like approval requests."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._send(event, delivery, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, event: str, delivery: str, payload: Mapping[str, Any]) -> bool:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
        ok, detail, attempts = await self._post(body, self._headers(event, delivery, body))
        log.log(
            logging.INFO if ok else logging.WARNING,
            "webhook delivered" if ok else "webhook failed",
            extra={
                "event": event + ("_notified" if ok else "_notify_failed"),
                "delivery": delivery,
                "webhook": self._host,
                "status" if ok else "error": detail,
                "attempts": attempts,
            },
        )
        return ok

    async def _post(self, body: bytes, headers: Mapping[str, str]) -> tuple[bool, str, int]:
        """Up to ``attempts`` tries: (delivered, HTTP status or error, attempts made)."""
        error = ""
        attempt = 0
        while attempt < self._attempts:
            if attempt:
                await asyncio.sleep(self._backoff[min(attempt - 1, len(self._backoff) - 1)])
            attempt += 1
            try:
                status = await self._transport.post(self.url, body, headers, self._timeout)
            except DeliveryError as exc:
                error = str(exc)
                continue
            if 200 <= status < 300:
                return True, str(status), attempt
            error = f"HTTP {status}"
            if status < 500:
                break
        return False, error, attempt

    async def deliver(self, request: ApprovalRequest) -> bool:
        """Send the request to the webhook; True when it answered 2xx."""
        body = json.dumps(
            webhook_payload(request, self.admin_url), separators=(",", ":"), sort_keys=True
        ).encode("utf-8")
        ok, detail, attempt = await self._post(body, self.headers(request, body))
        if ok:
            log.info(
                "approval webhook delivered",
                extra={
                    "event": "approval_notified",
                    "approval_id": request.id,
                    "webhook": self._host,
                    "status": int(detail),
                    "attempts": attempt,
                },
            )
            _report(request, "notified", {"status": detail})
            return True
        log.warning(
            "approval webhook failed",
            extra={
                "event": "approval_notify_failed",
                "approval_id": request.id,
                "webhook": self._host,
                "error": detail,
                "attempts": attempt,
            },
        )
        _report(request, "notify_failed", {"error": f"{detail} after {attempt} attempt(s)"})
        return False


def _report(request: ApprovalRequest, kind: str, detail: dict[str, str]) -> None:
    callback = request.on_event
    if callback is None:
        return
    try:
        callback(kind, detail)
    except Exception:
        # The session's bookkeeping must not turn into a failed delivery task.
        log.exception("approval event callback failed", extra={"approval_id": request.id})
