"""The kill switch's bookkeeping (which live sessions a revocation or a reload ends, what the
audit log says), with stand-in sessions; the drivers' side is tested against real
databases in tests/integration/test_pg_lifecycle.py and mysql/test_mysql_lifecycle.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.identity import Identity
from gateway.lifecycle import RevocationStore
from gateway.lifecycle.control import Lifecycle
from gateway.session.registry import SessionRegistry


@dataclass
class Target:
    name: str = "app-pg"
    config: Any = field(default_factory=lambda: type("C", (), {"protocol": "postgres"})())


@dataclass
class StandIn:
    session_id: str
    identity: Identity | None
    target: Target = field(default_factory=Target)
    peer: str = "127.0.0.1:5000"
    started: float = 1.0
    closing: bool = False
    killed: list[tuple[str, str]] = field(default_factory=list)
    policy_generation: int | None = 0

    def kill(self, message: str, end_reason: str) -> None:
        self.killed.append((message, end_reason))
        self.closing = True

    def live_info(self) -> dict[str, object]:
        return {"statements": 3, "rows": 7, "bytes": 99, "current_statement": None}


def ident(subject: str, *groups: str, jti: str | None = None) -> Identity:
    return Identity(subject=subject, groups=groups, token_id=jti, issuer="https://idp.test/")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Lifecycle, SessionRegistry, list[StandIn]]:
    registry = SessionRegistry()
    store = RevocationStore(tmp_path / "revocations.json")
    store.load()
    sessions = [
        StandIn("s1", ident("alice", "dev", jti="a1")),
        StandIn("s2", ident("alice", "dev", jti="a2")),
        StandIn("s3", ident("bob", "contractors")),
        StandIn("s4", None),  # still logging in: no identity yet
    ]
    for s in sessions:
        registry.add(s)  # type: ignore[arg-type]
    return Lifecycle(registry, store), registry, sessions


def test_revoke_ends_only_matching_sessions(
    setup: tuple[Lifecycle, SessionRegistry, list[StandIn]], caplog: pytest.LogCaptureFixture
) -> None:
    lifecycle, _, (s1, s2, s3, s4) = setup
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        revocation, ended = lifecycle.revoke(
            "token_id", "a1", reason="leaked", by="root", expires_in=None
        )
    assert ended == ["s1"]
    assert s1.killed == [
        (
            "session ended by an administrator: leaked",
            f"access revoked by root ({revocation.id}): leaked",
        )
    ]
    assert not s2.killed and not s3.killed and not s4.killed
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events == ["revocation_added", "revocation_enforced"]
    # An ending session is neither listed nor ended twice.
    assert [s["session_id"] for s in lifecycle.live_sessions()] == ["s2", "s3", "s4"]
    assert lifecycle.revoke("subject", "alice", reason="", by="root", expires_in=None)[1] == ["s2"]
    assert s2.killed[0][0] == "session ended by an administrator"


def test_kill_and_live_list(setup: tuple[Lifecycle, SessionRegistry, list[StandIn]]) -> None:
    lifecycle, _, (_, _, s3, _) = setup
    [entry] = [s for s in lifecycle.live_sessions() if s["session_id"] == "s3"]
    assert entry == {
        "session_id": "s3",
        "subject": "bob",
        "groups": ["contractors"],
        "target": "app-pg",
        "protocol": "postgres",
        "client": "127.0.0.1:5000",
        "since": 1.0,
        "statements": 3,
        "rows": 7,
        "bytes": 99,
        "current_statement": None,
    }
    assert lifecycle.kill_session("nope", "x", "root") is False
    assert lifecycle.kill_session("s3", "runaway", "root") is True
    assert s3.killed == [("session ended by an administrator: runaway", "killed by root: runaway")]


def test_reload_ends_sessions_the_new_file_matches(
    setup: tuple[Lifecycle, SessionRegistry, list[StandIn]], tmp_path: Path
) -> None:
    lifecycle, _, (s1, s2, s3, _) = setup
    # Another process (or an operator) wrote the file; hot reload re-reads it.
    writer = RevocationStore(tmp_path / "revocations.json")
    writer.add("group", "contractors", reason="contract over", revoked_by="root")
    assert lifecycle.reload() == ["s3"]
    assert s3.killed and not s1.killed and not s2.killed


# -- the runtime: reloads and revocations racing a login ----------------------------------

CONFIG = """
[gateway]
state_dir = "{state}"

[auth]
issuer = "https://idp.test/"
audience = "gw"
jwks_file = "jwks.json"

[[targets]]
name = "app-pg"
protocol = "postgres"
listen = "127.0.0.1:0"
host = "db"
port = 5432
database = "app"
user = "gw"

[[policies]]
name = "p"
groups = [{groups}]
targets = ["app-pg"]
allow = ["read"]
"""


class Client:
    def tls_info(self) -> dict[str, object]:
        return {"version": "TLSv1.3"}


@dataclass
class LoggingIn(StandIn):
    """A session that passed its login checks and is about to go live."""

    client: Client = field(default_factory=Client)

    def summary(self) -> dict[str, object]:
        return {}


def runtime_for(tmp_path: Path, groups: str) -> Any:
    import ssl

    from gateway.auth.jwt import TokenVerifier
    from gateway.config import parse_config
    from gateway.runtime import Runtime

    config = parse_config(CONFIG.format(state=tmp_path, groups=groups), tmp_path)
    return Runtime(
        config,
        verifier=TokenVerifier(config.auth),
        recorder=None,
        server_tls=ssl.create_default_context(),
    )


def reconfigure(runtime: Any, tmp_path: Path, groups: str) -> dict[str, object]:
    from gateway.config import parse_config

    return runtime.apply_config(
        parse_config(CONFIG.format(state=tmp_path, groups=groups), tmp_path)
    )


async def test_a_reload_during_a_login_that_removes_its_access_ends_it(tmp_path: Path) -> None:
    import asyncio

    runtime = runtime_for(tmp_path, '"dev"')
    session = LoggingIn("s1", ident("alice", "dev"))
    runtime.target_allowed(runtime.targets["app-pg"], session.identity)  # its login check
    reconfigure(runtime, tmp_path, '"ops"')  # ... then a reload, before it registers
    session.target = runtime.targets["app-pg"]
    runtime.registry.add(session)
    runtime.session_started(session, session.identity)
    await asyncio.sleep(0)
    assert session.killed and "no policy allows" in session.killed[0][0]


async def test_a_reload_ends_a_session_once(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path, '"dev"')
    session = LoggingIn("s1", ident("alice", "dev"), target=runtime.targets["app-pg"])
    runtime.registry.add(session)
    # Revoked (in the file) and no longer allowed: ended by the revocation, listed once.
    RevocationStore(tmp_path / "revocations.json").add("subject", "alice", revoked_by="root")
    report = reconfigure(runtime, tmp_path, '"ops"')
    assert report["sessions_ended"] == ["s1"] and len(session.killed) == 1


def test_a_damaged_revocation_file_fails_closed_at_start_and_at_reload(tmp_path: Path) -> None:
    from gateway.config import ConfigError
    from gateway.lifecycle import RevocationError

    runtime = runtime_for(tmp_path, '"dev"')
    RevocationStore(tmp_path / "revocations.json").add("subject", "alice", revoked_by="root")
    (tmp_path / "revocations.json").write_text('{"revocations": [{"kind": "subject"')
    digest = runtime.policy_digest
    with pytest.raises(ConfigError, match="revocations"):
        reconfigure(runtime, tmp_path, '"ops"')
    # Nothing changed: the old policies, and the old (empty) list, never "no revocations"
    # taken from a file that could not be read.
    assert runtime.policy_digest == digest
    assert runtime.target_allowed(runtime.targets["app-pg"], ident("x", "dev"))
    with pytest.raises(RevocationError):
        runtime_for(tmp_path, '"dev"')
    (tmp_path / "revocations.json").unlink()
    (tmp_path / "revocations.json").mkdir()  # unreadable
    with pytest.raises(RevocationError):
        runtime_for(tmp_path, '"dev"')


async def test_a_reload_during_a_login_ends_it_once_started(tmp_path: Path) -> None:
    """Its masks may be the old configuration's and its policy and limits the new one's:
    a session that chose its rules before a reload is ended when it goes live."""
    import asyncio

    runtime = runtime_for(tmp_path, '"dev"')
    session = LoggingIn("s1", ident("alice", "dev"), policy_generation=runtime.generation)
    reconfigure(runtime, tmp_path, '"dev"')  # a reload while it logs in (access unchanged)
    session.target = runtime.targets["app-pg"]
    runtime.registry.add(session)
    runtime.session_started(session, session.identity)
    await asyncio.sleep(0)
    assert session.killed and "reloaded while this session logged in" in session.killed[0][0]
    # One that chose its rules after the reload goes on.
    later = LoggingIn("s2", ident("bob", "dev"), policy_generation=runtime.generation)
    later.target = runtime.targets["app-pg"]
    runtime.registry.add(later)
    runtime.session_started(later, later.identity)
    await asyncio.sleep(0)
    assert not later.killed
