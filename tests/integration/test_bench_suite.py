"""Smoke test of the issue 9 benchmark suite, so it does not rot: one cheap scenario end to
end with its own PostgreSQL, pgbouncer, forwarder and gateway (benchmarks/common.py starts
them), checking the table it prints. Timing is not asserted: the machines are shared."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "suite.py"


def test_quick_connect_scenario_prints_the_table_with_a_verdict() -> None:
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--quick", "--only", "connect", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    # 0: every checked target passed, 1: one failed; anything else is a crash.
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr[-4000:]
    out = proc.stdout
    assert "## Issue 9 suite" in out
    header = next(line for line in out.splitlines() if line.startswith("| scenario |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[2:6] == ["direct", "pgbouncer", "forwarder", "gateway"]
    row = next(
        line for line in out.splitlines() if line.startswith("| pgbench -S -C -c 4 | connections/s")
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    rates = [float(v.replace(",", "")) for v in cells[2:6]]
    assert all(rate > 0 for rate in rates), row
    # The ratio and the verdict follow from the numbers printed (>= 0.5x pgbouncer).
    gw_pgb = float(cells[6].rstrip("x"))
    assert gw_pgb == pytest.approx(rates[3] / rates[1], abs=0.02), row
    assert cells[8] == ">= 0.5x pgbouncer"
    assert cells[9] == ("**PASS**" if gw_pgb >= 0.5 else "**FAIL**"), row
    assert proc.returncode == (0 if gw_pgb >= 0.5 else 1)
    assert re.search(r"Targets: [01] PASS, [01] FAIL", out), out
    # Only the scenario asked for ran: its two rows and nothing else.
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["pgbench -S -C -c 4"] * 2, rows
