"""A small client of the gateway's admin API for integration tests (real HTTP)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class AdminClient:
    base_url: str
    token: str

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def pending(self) -> list[dict[str, Any]]:
        status, body = self.call("GET", "/api/approvals")
        assert status == 200, body
        return list(body["approvals"])

    def history(self) -> list[dict[str, Any]]:
        status, body = self.call("GET", "/api/approvals?state=decided")
        assert status == 200, body
        return list(body["approvals"])

    def wait_pending(self, requester: str, timeout: float = 20) -> dict[str, Any]:
        """The first pending request of ``requester`` (waits for it to appear)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for request in self.pending():
                if request["requester"] == requester:
                    return request
            time.sleep(0.05)
        raise AssertionError(f"no pending approval request from {requester}")

    def approve(self, request_id: str, scope: str = "statement") -> tuple[int, Any]:
        return self.call("POST", f"/api/approvals/{request_id}/approve", {"scope": scope})

    def deny(self, request_id: str, reason: str = "") -> tuple[int, Any]:
        return self.call("POST", f"/api/approvals/{request_id}/deny", {"reason": reason})
