"""The admin API's lifecycle routes on a real aiohttp server with real tokens (the live
sessions themselves are exercised against real databases in tests/integration): admins
only, JSON errors, revocations persisted, the audit log, and the CLI against the API."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.cli import main

from .test_admin_api import BOB, EVE, ROOT, Admin, Keys, keys, running_admin

__all__ = ["keys"]  # the module-scoped fixture, shared with test_admin_api


@pytest.fixture
async def admin(keys: Keys, tmp_path: Path) -> AsyncIterator[Admin]:
    async with running_admin(keys, tmp_path) as running:
        yield running


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/sessions"),
        ("POST", "/api/sessions/x/kill"),
        ("GET", "/api/revocations"),
        ("POST", "/api/revocations"),
        ("DELETE", "/api/revocations/rev_x"),
    ],
)
async def test_only_admins(admin: Admin, method: str, path: str) -> None:
    # An approver may use the approvals API but not these routes; an outsider neither.
    status, body, _ = await admin.call(method, path, BOB, body={"subject": "x"})
    assert status == 403 and "[admin] groups" in body["error"]
    status, _, _ = await admin.call(method, path, EVE, body={"subject": "x"})
    assert status == 403
    status, _, _ = await admin.call(method, path)
    assert status == 401


async def test_sessions_list_and_unknown_kill(admin: Admin) -> None:
    status, body, _ = await admin.call("GET", "/api/sessions", ROOT)
    assert status == 200 and body["sessions"] == [] and body["now"] > 0
    status, body, _ = await admin.call("POST", "/api/sessions/nope/kill", ROOT, body={})
    assert status == 404 and body == {"error": "no live session nope"}


async def test_revocation_round_trip(
    admin: Admin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        status, added, _ = await admin.call(
            "POST",
            "/api/revocations",
            ROOT,
            body={"subject": "mallory", "expires_in": "1h", "reason": "offboarded"},
        )
    assert status == 201, added
    assert (added["kind"], added["value"], added["revoked_by"]) == ("subject", "mallory", "root")
    assert added["expires_at"] - added["created_at"] == pytest.approx(3600)
    assert added["sessions_ended"] == []
    record = next(r for r in caplog.records if getattr(r, "event", "") == "revocation_added")
    assert (record.by, record.reason, record.value) == ("root", "offboarded", "mallory")  # type: ignore[attr-defined]
    on_disk = json.loads((tmp_path / "revocations.json").read_text())
    assert [r["id"] for r in on_disk["revocations"]] == [added["id"]]

    status, body, _ = await admin.call("GET", "/api/revocations", ROOT)
    assert status == 200 and [r["id"] for r in body["revocations"]] == [added["id"]]
    status, body, _ = await admin.call("DELETE", f"/api/revocations/{added['id']}", ROOT)
    assert status == 200 and body["removed"] is True
    status, body, _ = await admin.call("DELETE", f"/api/revocations/{added['id']}", ROOT)
    assert status == 404
    status, body, _ = await admin.call("GET", "/api/revocations", ROOT)
    assert body["revocations"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "exactly one of subject, token_id, group"),
        ({"subject": "a", "group": "b"}, "exactly one of"),
        ({"subject": "a", "expires_in": "soon"}, "expires_in must be a duration"),
        ({"subject": "a", "expires_in": "0s"}, "positive duration"),
        ({"user": "a"}, "unknown field"),
        ({"subject": 3}, "must be a string"),
    ],
)
async def test_bad_revocations_are_400(admin: Admin, body: dict[str, object], message: str) -> None:
    status, answer, _ = await admin.call("POST", "/api/revocations", ROOT, body=body)
    assert status == 400 and message in answer["error"]
    assert admin.runtime.revocations.list() == []


async def test_cli_against_the_api(admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    token_file = Path(admin.runtime.config.gateway.state_dir) / "root.token"
    token_file.write_text(admin.token(ROOT) + "\n")
    auth = ["--url", admin.url, "--token-file", str(token_file)]

    async def cli(*argv: str) -> int:
        return await asyncio.to_thread(main, [*argv, *auth])

    assert await cli("revoke", "--group", "contractors", "--reason", "contract over") == 0
    out = capsys.readouterr().out
    assert "group contractors revoked (permanent); 0 live session(s) ended" in out
    revocation_id = out.split(":")[0]
    assert await cli("revocations", "list") == 0
    out = capsys.readouterr().out
    assert revocation_id in out and "contract over" in out and "never" in out
    assert await cli("sessions", "live") == 0
    assert capsys.readouterr().out.strip() == "no live sessions"
    assert await cli("sessions", "kill", "nope") == 1
    assert "no live session nope" in capsys.readouterr().err
    assert await cli("revocations", "remove", revocation_id) == 0
    assert capsys.readouterr().out.strip() == f"{revocation_id}: removed"
    # The token is never printed, and --token with --token-file is a usage error.
    assert await cli("revocations", "list", "--token", "x") == 2
    assert admin.token(ROOT) not in capsys.readouterr().err
