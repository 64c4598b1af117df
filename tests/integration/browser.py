"""A real browser for console tests: Debian's Chromium driven by Playwright.

Playwright's own browser downloads are never used: the system ``chromium`` package
(``apt-get install chromium``; .ci/run installs it) is launched by path. Missing, the tests
fail with what to install (docs/testing.md: never skip silently).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM_ENV = "GW_TEST_CHROMIUM"


def chromium_path() -> Path:
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return Path(configured)
    found = shutil.which("chromium") or "/usr/bin/chromium"
    return Path(found)


@contextmanager
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    if not path.exists():
        pytest.fail(
            f"Chromium not found at {path}: install Debian's package (apt-get install -y "
            f"chromium) or set {CHROMIUM_ENV} to a Chromium binary",
            pytrace=False,
        )
    with sync_playwright() as pw:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        browser = pw.chromium.launch(executable_path=str(path), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
