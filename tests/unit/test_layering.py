"""Dependency rules from ARCHITECTURE.md, checked by walking the imports.

* protocols/ never imports gateway/, asyncio, msgspec, sqlglot or jwt; only the
  MySQL auth step may import cryptography.
* Each third-party library stays in the modules that own it.
* Only the composition root picks the event loop (uvloop).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# library -> path prefixes (relative to src/) allowed to import it
OWNERS: dict[str, tuple[str, ...]] = {
    "uvloop": ("gateway/server.py",),
    "jwt": ("gateway/auth/", "gateway/keys.py"),
    "aiohttp": ("gateway/auth/", "gateway/admin/", "gateway/console/"),
    "sqlglot": ("gateway/policy/",),
    "msgspec": (
        "gateway/config.py",
        "gateway/reload.py",  # compares and merges the configuration's structs
        "gateway/identity.py",
        "gateway/recording/",
        "gateway/policy/",
        "gateway/audit/",
    ),
    "prometheus_client": ("gateway/audit/metrics.py",),
    "cryptography": (
        "protocols/mysql/auth",
        "gateway/keys.py",
        "gateway/embedded/certs.py",
        "gateway/recording/",
        "gateway/auth/",
    ),
    "testcontainers": ("gateway/embedded/",),
}
PROTOCOLS_FORBIDDEN = {"gateway", "asyncio", "msgspec", "sqlglot", "jwt", "uvloop", "aiohttp"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def source_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_there_is_something_to_check() -> None:
    assert len(source_files()) > 10


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_module_respects_layering(path: Path) -> None:
    rel = str(path.relative_to(SRC))
    found = imports_of(path)
    if rel.startswith("protocols/"):
        bad = found & PROTOCOLS_FORBIDDEN
        assert not bad, f"{rel} is sans-I/O protocol code but imports {sorted(bad)}"
    for lib, owners in OWNERS.items():
        if lib in found:
            assert rel.startswith(owners), f"{rel} imports {lib}; only {owners} may"
