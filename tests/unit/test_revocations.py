"""The revocation store: matching, expiry, persistence across instances (a restart), atomic
writes and failing closed on a damaged file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.identity import Identity
from gateway.lifecycle import RevocationError, RevocationStore, RevocationWriteError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def ident(
    subject: str = "alice", groups: tuple[str, ...] = ("dev",), jti: str | None = "j1"
) -> Identity:
    return Identity(subject=subject, groups=groups, token_id=jti, issuer="https://idp.test/")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> RevocationStore:
    s = RevocationStore(tmp_path / "state" / "revocations.json", clock=clock)
    s.load()
    return s


def test_empty_without_a_file(store: RevocationStore) -> None:
    assert store.list() == [] and store.match(ident()) is None
    assert not store.path.exists()


def test_match_by_subject_token_id_and_group(store: RevocationStore) -> None:
    by_subject = store.add("subject", "alice", reason="offboarded", revoked_by="root")
    assert store.match(ident()) == by_subject
    assert store.match(ident("bob")) is None
    by_jti = store.add("token_id", "leaked-jti", revoked_by="root")
    assert store.match(ident("bob", jti="leaked-jti")) == by_jti
    assert store.match(ident("bob", jti=None)) is None
    by_group = store.add("group", "contractors", revoked_by="root")
    assert store.match(ident("carol", ("staff", "contractors"), None)) == by_group
    assert store.match(ident("carol", ("staff",), None)) is None
    assert [r.id for r in store.list()] == [by_subject.id, by_jti.id, by_group.id]
    assert by_subject.id.startswith("rev_") and by_subject.expires_at is None


def test_persisted_and_read_back_by_a_new_store(store: RevocationStore, clock: Clock) -> None:
    added = store.add("subject", "alice", reason="offboarded", revoked_by="root")
    data = json.loads(store.path.read_text())
    assert data["version"] == 1 and data["revocations"][0]["value"] == "alice"
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    again = RevocationStore(store.path, clock=clock)
    again.load()
    assert again.list() == [added]
    assert again.match(ident()) == added
    # No temporary file is left behind.
    assert [p.name for p in store.path.parent.iterdir()] == ["revocations.json"]


def test_expiry_stops_matching_and_is_pruned(store: RevocationStore, clock: Clock) -> None:
    temporary = store.add("subject", "alice", revoked_by="root", expires_in=3600)
    permanent = store.add("group", "ops", revoked_by="root")
    assert temporary.expires_at == clock.now + 3600
    assert store.match(ident()) == temporary
    clock.now += 3600
    assert store.match(ident()) is None
    assert store.list() == [permanent]
    assert store.get(temporary.id) is None
    # The next write drops it from the file; a fresh load never returns it.
    store.add("subject", "bob", revoked_by="root")
    values = [r["value"] for r in json.loads(store.path.read_text())["revocations"]]
    assert values == ["ops", "bob"]


def test_remove(store: RevocationStore, clock: Clock) -> None:
    added = store.add("subject", "alice", revoked_by="root")
    assert store.remove("rev_unknown") is None
    assert store.remove(added.id) == added
    assert store.match(ident()) is None
    again = RevocationStore(store.path, clock=clock)
    again.load()
    assert again.list() == []


def test_load_rereads_the_file(store: RevocationStore, clock: Clock) -> None:
    other = RevocationStore(store.path, clock=clock)
    other.load()
    other.add("subject", "alice", revoked_by="root")
    assert store.match(ident()) is None
    store.load()  # what hot reload calls
    assert store.match(ident()) is not None


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"revocations": [{"kind": "planet", "value": "x"}]}',
        b'{"revocations": [{"id": "r", "kind": "subject", "value": 3}]}',
        b'{"version": 2, "revocations": []}',
    ],
)
def test_a_damaged_file_fails_closed(store: RevocationStore, content: bytes) -> None:
    store.add("subject", "alice", revoked_by="root")
    store.path.write_bytes(content)
    with pytest.raises(RevocationError):
        store.load()
    # The list in force is kept: a damaged file never lifts revocations.
    assert store.match(ident()) is not None


@pytest.mark.parametrize(
    ("kind", "value", "expires_in"),
    [("planet", "x", None), ("subject", "", None), ("subject", "a", 0.0), ("group", "a", -1.0)],
)
def test_invalid_revocations(
    store: RevocationStore, kind: str, value: str, expires_in: float | None
) -> None:
    with pytest.raises(RevocationError):
        store.add(kind, value, revoked_by="root", expires_in=expires_in)
    assert store.list() == []


def test_unwritable_location_refuses_the_revocation(tmp_path: Path, clock: Clock) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = RevocationStore(blocker / "revocations.json", clock=clock)
    with pytest.raises(RevocationError):
        store.load()  # fail closed: an unreadable location is not an empty list
    with pytest.raises(RevocationWriteError):
        store.add("subject", "alice", revoked_by="root")
    # Not in force either: a revocation that would not survive a restart is refused.
    assert store.match(ident()) is None
