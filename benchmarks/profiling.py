"""CPU profiles of the gateway for benchmarks/suite.py --profile.

py-spy (a dev dependency) samples the running gateway from outside: no change to the process,
little overhead with --nonblocking. Without py-spy, a second gateway is started under cProfile
(this module's `_cprofile-gateway` launcher), which slows it down several times over, so only
the shares of the functions mean anything then. Profiles are written where the caller says
(outside the repository); the summary is the top functions by own time.
"""

from __future__ import annotations

import cProfile
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Bench, Endpoint, PgbenchResult, log, run_pgbench

PY_SPY_RATE = 250  # samples per second
NAN = float("nan")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def profile_gateway(
    bench: Bench, ep: Endpoint, policy_extra: str, out_dir: Path, seconds: int
) -> list[str]:
    """Sample the running gateway `ep` under pgbench -S -c 8 (simple, then prepared); without
    py-spy, a new gateway with `policy_extra` under cProfile. Returns markdown lines."""
    lines: list[str] = []
    spy = py_spy()
    for mode in ("simple", "prepared"):
        args = ["-S", "-M", mode, "-c", "8", "-j", "2", "-T", str(seconds)]
        if spy is not None:
            assert ep.proc is not None
            out = out_dir / f"gateway-S-{mode}-c8.pyspy.txt"
            argv = [
                spy, "record", "--pid", str(ep.proc.pid), "--rate", str(PY_SPY_RATE),
                "--nonblocking", "--subprocesses", "--format", "raw", "--output", str(out),
                "--duration", str(seconds + 1),
            ]  # fmt: skip
            log(f"profiling the gateway with py-spy under pgbench -M {mode} -c 8 -> {out}")
            spy_proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)
            res = run_pgbench(ep, args, timeout=seconds * 4 + 60)
            _, err = spy_proc.communicate(timeout=seconds + 60)
            if spy_proc.returncode != 0 or not out.exists():
                raise RuntimeError(f"py-spy failed ({spy_proc.returncode}): {err.decode()[-2000:]}")
            counts = collapsed_counts(out.read_text())
            busy = counts[2] / (PY_SPY_RATE * (seconds + 1))
        else:
            out = out_dir / f"gateway-S-{mode}-c8.cprofile"
            log(f"py-spy not found: profiling with cProfile under pgbench -M {mode} -c 8 -> {out}")
            res, counts = cprofile_run(bench, out, args, policy_extra)
            busy = NAN
        lines += render_profile(f"`pgbench -S -M {mode} -c 8`", out, res.tps, counts, busy)
    return lines


def collapsed_counts(text: str) -> tuple[Counter[str], Counter[str], int]:
    """py-spy raw (collapsed) stacks -> (self samples, inclusive samples, total) by function."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [function_name(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    return own, incl, total


def function_name(frame: str) -> str:
    """'read (gateway/session/pg.py:123)' -> 'read (gateway/session/pg.py)': one row per
    function, not per line. Thread and process frames (py-spy's --subprocesses) are dropped."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame.strip())
    if m is None:
        return ""
    path = m.group(2)
    for marker in ("/site-packages/", "/src/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group(1)} ({path})"


def cprofile_run(
    bench: Bench, out: Path, args: list[str], policy_extra: str
) -> tuple[PgbenchResult, tuple[Counter[str], Counter[str], int]]:
    """Fallback without py-spy: a gateway with the same policy under cProfile (this script's
    `_cprofile-gateway` launcher, which writes the stats when the gateway exits)."""
    import pstats

    name = f"gw-cprofile-{out.stem}"
    launcher = [sys.executable, str(Path(__file__).resolve()), "_cprofile-gateway", str(out)]
    ep = bench.start_gateway(name, recording=True, policy_extra=policy_extra, launcher=launcher)
    run_pgbench(ep, ["-S", "-c", "2", "-j", "2", "-T", "1"], timeout=60)
    res = run_pgbench(ep, args, timeout=600)
    assert ep.proc is not None
    ep.proc.send_signal(signal.SIGTERM)
    ep.proc.wait(60)
    stats = pstats.Stats(str(out))
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for (path, _, func), (_, _, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = function_name(f"{func} ({path})")
        # Microseconds of CPU stand in for samples.
        own[key] += int(tt * 1e6)
        incl[key] = max(incl[key], int(ct * 1e6))
    return res, (own, incl, sum(own.values()))


def render_profile(
    what: str,
    out: Path,
    tps: float,
    counts: tuple[Counter[str], Counter[str], int],
    busy: float = NAN,
    top: int = 15,
) -> list[str]:
    own, incl, total = counts
    on_cpu = "" if math.isnan(busy) else f"; the gateway was on CPU in {busy:.0%} of the samples"
    lines = [
        f"#### Gateway CPU profile under {what} ({tps:,.0f} TPS while sampled)",
        "",
        f"Profile: `{out}` ({total:,} samples{on_cpu}). py-spy sees Python frames only: time in "
        "C (uvloop's socket calls, OpenSSL) is charged to the Python function that called it, "
        "and `Runner.run`'s self time is the event loop itself.",
        "",
        "| function | self % | total % |",
        "|---|---:|---:|",
    ]
    for func, n in own.most_common(top):
        lines.append(f"| `{func}` | {100 * n / total:.1f} | {100 * incl[func] / total:.1f} |")
    lines.append("")
    return lines


def _cprofile_gateway(out: str, argv: list[str]) -> None:
    import runpy

    profiler = cProfile.Profile()
    sys.argv = ["gateway", *argv]
    profiler.enable()
    try:
        runpy.run_module("gateway", run_name="__main__", alter_sys=True)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "_cprofile-gateway":
        _cprofile_gateway(sys.argv[2], sys.argv[3:])
    else:
        sys.exit("usage: profiling.py _cprofile-gateway OUT GATEWAY-ARGS...")
