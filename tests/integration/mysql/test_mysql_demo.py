"""`gateway demo` with MariaDB installed: the printed `mariadb` commands work as pasted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_prints_working_mariadb_commands(tmp_path: Path) -> None:
    port, mysql_port = free_port(), free_port()
    err_path = tmp_path / "demo.err"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "demo",
                "--port",
                str(port),
                "--mysql-port",
                str(mysql_port),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        banner = ""
        deadline = time.monotonic() + 180
        while "Press Ctrl-C" not in banner and time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            if not line and proc.poll() is not None:
                pytest.fail(f"demo exited early:\n{err_path.read_text()}")
            banner += line
        commands = re.findall(r"^  (mariadb --ssl .*)$", banner, re.MULTILINE)
        assert len(commands) == 2, banner
        for command in commands:
            # Exactly as a user pastes it into a shell, plus a statement to run.
            out = subprocess.run(
                ["bash", "-c", command + " -e 'SELECT COUNT(*) FROM customers; SELECT 1+1'"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            words = out.stdout.split()
            assert words[0] == "COUNT(*)" and int(words[1]) >= 1000 and words[2:] == ["1+1", "2"]
        work = Path(re.findall(r"cat (\S+)/token-admin.jwt", banner)[0])
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0
        assert not work.exists(), "the demo left its work directory behind"
        leftover = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True)
        assert leftover.stdout.strip() == "", "a server started by the demo is still running"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
