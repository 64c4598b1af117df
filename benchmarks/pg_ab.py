"""A/B of two gateway versions on one PostgreSQL: TPS and gateway CPU per transaction.

    uv run --no-sync python benchmarks/pg_ab.py --base HEAD~2
    uv run --no-sync python benchmarks/pg_ab.py --base b5ad805 --recording both \\
        --modes prepared:1 prepared:8 simple:1 --rounds 6 --seconds 5

A is the gateway at commit BASE (checked out in a temporary git worktree; the compiled
helpers built in this checkout's `src/` are copied into it, so both run the same C code
where it did not change), B the gateway in this checkout, both with the bench policy of
`common.py` and recording on, off, or both. Each round runs `pgbench -S -M MODE -c N` against
every gateway in turn, the order reversed every round, so drift on a shared machine hits
both alike; the median TPS and CPU per transaction of each are printed with B/A. Meant for
one change at a time: a CPU difference of a few percent needs several rounds to show.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Endpoint, bench_env, log, pgbench_init, run_pgbench, tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent


def worktree(base: str, into: Path) -> Path:
    """Check out `base` at `into` and copy the compiled helpers; returns its `src`."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), base],
        check=True,
    )
    for built in (ROOT / "src").rglob("*.so"):
        target = into / "src" / built.relative_to(ROOT / "src")
        if target.parent.is_dir():
            shutil.copy2(built, target)
    return into / "src"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", required=True, help="commit (or ref) of gateway A")
    ap.add_argument("--modes", nargs="+", default=["prepared:1", "prepared:8"], help="MODE:N")
    ap.add_argument("--recording", choices=["on", "off", "both"], default="on")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=5, help="per pgbench run")
    ap.add_argument("--scale", type=int, default=10)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gw-ab-"))
    try:
        base_src = worktree(args.base, tmp / "base")
        with bench_env() as bench:
            bench.start_postgres()
            pgbench_init(bench.direct(), args.scale)
            assert bench.pg is not None
            bench.pg.psql("VACUUM ANALYZE;\n", dbname="app")
            recs = {"on": [True], "off": [False], "both": [False, True]}[args.recording]
            gateways: list[Endpoint] = []
            for rec in recs:
                for tag, src in (("A", base_src), ("B", ROOT / "src")):
                    launcher = ["env", f"PYTHONPATH={src}", sys.executable, "-m", "gateway"]
                    name = tag + ("+rec" if rec else "")
                    gateways.append(bench.start_gateway(name, recording=rec, launcher=launcher))
            for gw in gateways:  # warm up: imports done lazily, page cache
                run_pgbench(gw, ["-S", "-c", "2", "-j", "2", "-T", "1"], timeout=60)
            print(f"A = {args.base}, B = this checkout; median of {args.rounds} rounds")
            for spec in args.modes:
                mode, clients = spec.split(":")
                tps: dict[str, list[float]] = {gw.name: [] for gw in gateways}
                cpu: dict[str, list[float]] = {gw.name: [] for gw in gateways}
                pgbench = ["-S", "-M", mode, "-c", clients, "-j", str(min(int(clients), 2))]
                for r in range(args.rounds):
                    for gw in gateways if r % 2 == 0 else gateways[::-1]:
                        before = tree_cpu_seconds(gw.proc) or 0.0
                        res = run_pgbench(gw, [*pgbench, "-T", str(args.seconds)])
                        used = (tree_cpu_seconds(gw.proc) or 0.0) - before
                        tps[gw.name].append(res.tps)
                        cpu[gw.name].append(used / (res.tps * args.seconds) * 1e6)
                line = [f"-M {mode} -c {clients}:"]
                for name in tps:
                    t, c = statistics.median(tps[name]), statistics.median(cpu[name])
                    line.append(f"{name} {t:,.0f} TPS {c:.1f} µs/tx;")
                for suffix in ("+rec" if rec else "" for rec in recs):
                    a, b = "A" + suffix, "B" + suffix
                    ratio = statistics.median(tps[b]) / statistics.median(tps[a])
                    line.append(f"{b}/{a} TPS {ratio:.3f}")
                print(" ".join(line), flush=True)
        log("done")
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "base")],
            check=False,
        )
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
