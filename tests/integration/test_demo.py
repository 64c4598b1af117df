"""`gateway demo`, the Quickstart's first command, as a user runs it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .admin_client import AdminClient
from .conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_starts_serves_and_cleans_up(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
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
                "--admin-port",
                str(admin_port),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        banner = ""
        deadline = time.monotonic() + 120
        while "Press Ctrl-C" not in banner and time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            if not line and proc.poll() is not None:
                pytest.fail(f"demo exited early:\n{err_path.read_text()}")
            banner += line
        commands = re.findall(r'PGPASSWORD="\$\(cat (\S+)\)" psql "([^"]+)"', banner)
        assert len(commands) == 2, banner
        work = Path(commands[0][0]).parent
        for token_file, conninfo in commands:
            out = subprocess.run(
                [
                    "psql",
                    "-X",
                    "-A",
                    "-t",
                    conninfo,
                    "-c",
                    "SELECT count(*) FROM customers",
                    "-c",
                    "SELECT count(*) FROM events",
                ],
                env={
                    "PATH": os.environ["PATH"],
                    "PGPASSWORD": Path(token_file).read_text().strip(),
                },
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert out.returncode == 0, out.stderr
            customers, events = out.stdout.split()
            assert int(customers) >= 1000 and int(events) == 200_000
        assert any((work / "sessions").iterdir())
        assert f"http://127.0.0.1:{admin_port}/console/" in banner
        # The headline feature as the banner tells it: bob's big read pauses for a dba.
        bob_token, bob_conninfo = commands[0]
        reader = subprocess.Popen(
            ["psql", "-X", "-A", "-t", bob_conninfo, "-c", "SELECT id FROM events"],
            env={"PATH": os.environ["PATH"], "PGPASSWORD": Path(bob_token).read_text().strip()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        dba = AdminClient(
            f"http://127.0.0.1:{admin_port}", (work / "token-admin.jwt").read_text().strip()
        )
        request = dba.wait_pending("bob@example.com")
        assert request["rows_so_far"] == 10_000
        assert dba.approve(request["id"])[0] == 200
        out, errs = reader.communicate(timeout=60)
        assert reader.returncode == 0, errs
        assert len(out.split()) == 200_000
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert proc.wait(30) == 0
        assert not work.exists(), "the demo left its work directory behind"
        leftover = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True)
        assert leftover.stdout.strip() == "", "a server started by the demo is still running"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
