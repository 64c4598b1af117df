"""A/B of two gateway versions on one PostgreSQL (or MariaDB): TPS and gateway CPU.

    uv run --no-sync python benchmarks/ab.py --base HEAD~2
    uv run --no-sync python benchmarks/ab.py --base b5ad805 --recording both \\
        --modes prepared:1 prepared:8 simple:1 --rounds 6 --seconds 5
    uv run --no-sync python benchmarks/ab.py --mysql --base b5ad805 --modes auto:8 disable:8

A is the gateway at commit BASE (checked out in a temporary git worktree; the compiled
helpers built in this checkout's `src/` are copied into it, so both run the same C code
where it did not change), B the gateway in this checkout, both with the bench policy of
`common.py` and recording on, off, or both. Each round runs `pgbench -S -M MODE -c N` against
every gateway in turn, the order reversed every round, so drift on a shared machine hits
both alike; the median TPS and CPU per transaction of each are printed with B/A. Meant for
one change at a time: a CPU difference of a few percent needs several rounds to show.

With `--mysql`: MariaDB and `sysbench oltp_point_select` instead (`mysql_compare.py`'s
set-up and policy), MODE being sysbench's `--db-ps-mode` (`auto`: prepared statements,
`disable`: text) and N its threads.

With `--realistic`: the gateways run `suite.py`'s realistic policy (limits that never fire,
masks on another table, which every statement pays the lookup for) instead of the bench
policy alone.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Endpoint, bench_env, log, pgbench_init, run_pgbench, tree_cpu_seconds
from masking_compare import SEED as WIDE_SEED
from mysql_compare import bench_token, gateway_endpoint, prepare, run_one
from suite import MY_CUSTOMERS, MY_REALISTIC, REALISTIC

from gateway.embedded.mariadb import start_mariadb

ROOT = Path(__file__).resolve().parent.parent


def worktree(base: str, into: Path) -> Path:
    """Check out `base` at `into` and build its own compiled helpers there (copying this
    checkout's would run new C code under the base's Python); returns its `src`."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), base],
        check=True,
    )
    # The base's own ext-modules (pyproject.toml), compiled beside their sources as the
    # build backend would; one that does not build is left out, as the optional flag does.
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    project = tomllib.loads((into / "pyproject.toml").read_text())
    for ext in project.get("tool", {}).get("setuptools", {}).get("ext-modules", []):
        target = into / "src" / (ext["name"].replace(".", "/") + suffix)
        sources = [str(into / source) for source in ext["sources"]]
        argv = ["cc", "-O2", "-shared", "-fPIC", f"-I{include}", *sources, "-o", str(target)]
        if subprocess.run(argv, capture_output=True, check=False).returncode != 0:
            log(f"{base}: {ext['name']} did not build; its pure-Python fallback runs")
    return into / "src"


def launcher(src: Path) -> list[str]:
    return ["env", f"PYTHONPATH={src}", sys.executable, "-m", "gateway"]


def report(
    spec: str, recs: list[bool], tps: dict[str, list[float]], cpu: dict[str, list[float]]
) -> None:
    line = [f"{spec}:"]
    for name in tps:
        t, c = statistics.median(tps[name]), statistics.median(cpu[name])
        line.append(f"{name} {t:,.0f} TPS {c:.1f} µs/tx;")
    for suffix in ("+rec" if rec else "" for rec in recs):
        a, b = "A" + suffix, "B" + suffix
        ratio = statistics.median(tps[b]) / statistics.median(tps[a])
        line.append(f"{b}/{a} TPS {ratio:.3f}")
    print(" ".join(line), flush=True)


def names(recs: list[bool]) -> list[tuple[str, bool, str]]:
    """(name, recording, which checkout) of each gateway, A before B."""
    return [(tag + ("+rec" if rec else ""), rec, tag) for rec in recs for tag in ("A", "B")]


def postgres_ab(args: argparse.Namespace, sources: dict[str, Path], recs: list[bool]) -> None:
    with bench_env() as bench:
        bench.start_postgres()
        pgbench_init(bench.direct(), args.scale)
        assert bench.pg is not None
        if args.realistic:  # the masked table exists, small: only the lookups cost
            bench.pg.psql(WIDE_SEED.format(rows=1000), dbname="app")
        bench.pg.psql("VACUUM ANALYZE;\n", dbname="app")
        extra = REALISTIC if args.realistic else ""
        gateways: list[Endpoint] = [
            bench.start_gateway(
                name, recording=rec, launcher=launcher(sources[tag]), policy_extra=extra
            )
            for name, rec, tag in names(recs)
        ]
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
            report(f"pgbench -S -M {mode} -c {clients}", recs, tps, cpu)


def mysql_ab(
    args: argparse.Namespace, sources: dict[str, Path], recs: list[bool], base: Path
) -> None:
    server = start_mariadb(base_dir=base / "mariadb", ssl=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        setup = prepare(base, server)
        if args.realistic:
            server.sql(MY_CUSTOMERS, database="sbtest")
        token = bench_token(base)
        gateways = []
        for name, rec, tag in names(recs):
            proc, endpoint = gateway_endpoint(
                base / name.replace("+", "-"),
                setup,
                token,
                name,
                recording=rec,
                launcher=launcher(sources[tag]),
                policy_extra=MY_REALISTIC if args.realistic else "",
            )
            procs.append(proc)
            gateways.append(endpoint)
        for gw in gateways:  # warm up
            run_one(gw, "oltp_point_select", "auto", 2, 1)
        print(f"A = {args.base}, B = this checkout; median of {args.rounds} rounds")
        for spec in args.modes:
            mode, threads = spec.split(":")
            tps: dict[str, list[float]] = {gw.name: [] for gw in gateways}
            cpu: dict[str, list[float]] = {gw.name: [] for gw in gateways}
            for r in range(args.rounds):
                for gw in gateways if r % 2 == 0 else gateways[::-1]:
                    res = run_one(gw, "oltp_point_select", mode, int(threads), args.seconds)
                    assert res.cpu is not None
                    tps[gw.name].append(res.qps)
                    cpu[gw.name].append(res.cpu / 100 / res.qps * 1e6)
            report(f"sysbench oltp_point_select ps-mode={mode} threads={threads}", recs, tps, cpu)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(15)
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", required=True, help="commit (or ref) of gateway A")
    ap.add_argument("--mysql", action="store_true", help="MariaDB and sysbench instead")
    ap.add_argument("--modes", nargs="+", default=None, help="MODE:N (see above)")
    ap.add_argument("--recording", choices=["on", "off", "both"], default="on")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=5, help="per run")
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale")
    ap.add_argument("--realistic", action="store_true", help="suite.py's realistic policy")
    args = ap.parse_args()
    if args.modes is None:
        args.modes = ["auto:8", "disable:8"] if args.mysql else ["prepared:1", "prepared:8"]
    recs = {"on": [True], "off": [False], "both": [False, True]}[args.recording]

    tmp = Path(tempfile.mkdtemp(prefix="gw-ab-"))
    try:
        sources = {"A": worktree(args.base, tmp / "base"), "B": ROOT / "src"}
        if args.mysql:
            mysql_ab(args, sources, recs, tmp)
        else:
            postgres_ab(args, sources, recs)
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
