"""Instructions the gateway executes per transaction, counted by callgrind: an A/B that
does not depend on what else the machine is doing.

    uv run --no-sync python benchmarks/instructions.py --base HEAD~1
    uv run --no-sync python benchmarks/instructions.py --base HEAD~1 --mysql --realistic
    uv run --no-sync python benchmarks/instructions.py --mode simple --transactions 3000

On a shared 2-vCPU machine TPS and CPU time drift by 5 - 10% between runs, more than most
single changes to the hot path are worth. Instruction counts do not: the gateway runs under
`valgrind --tool=callgrind`, one client sends `--transactions` transactions (`pgbench -S -c 1
-t N`, or with `--mysql` sysbench `oltp_point_select` with one thread), and the counters,
zeroed after a warm-up, are read when they are done. Two runs of the same code agree to
about 0.1%. What it does not see: system calls (time in the kernel) and waiting; user-space
instructions are what a change to the gateway's own code moves.

Printed per gateway: instructions per transaction in all, and split by the object they ran
in (the interpreter, OpenSSL, libc, uvloop, our extensions). With `--base COMMIT`, the
gateway at that commit (a temporary git worktree, as `ab.py` makes) is counted too, and B/A.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import mysql_compare
from ab import worktree
from common import bench_env, log, pgbench_init, run_pgbench
from masking_compare import SEED as WIDE_SEED
from mysql_compare import bench_token, gateway_endpoint, prepare, sysbench
from suite import MY_CUSTOMERS, MY_REALISTIC, REALISTIC

from gateway.embedded.mariadb import start_mariadb

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 300
# valgrind runs the gateway some 50x slower: start-up takes tens of seconds.
START_TIMEOUT = 600


def callgrind(src: Path, out: Path) -> list[str]:
    """argv prefix running the gateway from `src` under callgrind, dumps to `out`.PID."""
    return [
        "env",
        f"PYTHONPATH={src}",
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}.%p",
        sys.executable,
        "-m",
        "gateway",
    ]


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, check=False, timeout=120)


def split_by_object(dump: Path) -> tuple[int, collections.Counter[str]]:
    """Total instructions and each object's (shared library's) share of them, from a
    callgrind dump's self costs (a cost line after `calls=` is the callee's inclusive cost,
    not self cost)."""
    names: dict[str, str] = {}
    by_object: collections.Counter[str] = collections.Counter()
    obj = fn_obj = "?"
    skip_next = False
    total = 0
    with open(dump) as fh:
        for line in fh:
            if line.startswith("summary:"):
                total = int(line.split()[1])
            elif line.startswith("ob="):
                obj = _name(names, line[3:].strip())
            elif line.startswith("cob="):  # the callee's object: defines a name id too
                _name(names, line[4:].strip())
            elif line.startswith("fn="):
                fn_obj = obj
            elif line.startswith("calls="):
                skip_next = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    by_object[Path(fn_obj).name] += int(parts[1])
    counted = sum(by_object.values()) or 1
    shares = collections.Counter({k: v * total // counted for k, v in by_object.items()})
    return total, shares


def _name(names: dict[str, str], value: str) -> str:
    """callgrind's name compression: "(id) name" defines, "(id)" refers."""
    m = re.match(r"\((\d+)\)(?:\s+(.*))?", value)
    if m is None:
        return value
    if m.group(2) is not None:
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), "?")


def count(run: Callable[[], object], out: Path) -> Path:
    """Zero the counters, `run` the measured transactions, dump; returns the dump."""
    control("-z")
    run()
    control("-d")
    time.sleep(1)
    dumps = [p for p in glob.glob(f"{out}.*") if re.search(r"\.\d+\.\d+$", p)]
    if not dumps:
        raise RuntimeError("callgrind wrote no dump")
    return Path(max(dumps, key=os.path.getmtime))


def postgres(args: argparse.Namespace, sources: dict[str, Path], work: Path) -> dict[str, Path]:
    dumps = {}
    with bench_env() as bench:
        bench.start_postgres()
        pgbench_init(bench.direct(), 10)
        assert bench.pg is not None
        if args.realistic:
            bench.pg.psql(WIDE_SEED.format(rows=1000), dbname="app")
        wait = common.wait_port

        def slow_wait(
            port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30
        ) -> None:
            wait(port, proc, log, START_TIMEOUT)

        common.wait_port = slow_wait
        for name, src in sources.items():
            out = work / f"cg-{name}"
            log(f"starting gateway {name} under callgrind")
            gw = bench.start_gateway(
                name,
                recording=args.realistic,
                launcher=callgrind(src, out),
                policy_extra=REALISTIC if args.realistic else "",
                config_extra=args.config_extra.replace("\\n", "\n"),
            )
            pgbench = ["-S", "-M", args.mode, "-c", "1"]
            run_pgbench(gw, [*pgbench, "-t", str(WARM_UP)], timeout=START_TIMEOUT)
            measured = [*pgbench, "-t", str(args.transactions)]
            dumps[name] = count(functools.partial(run_pgbench, gw, measured, timeout=3600), out)
    return dumps


def mysql(args: argparse.Namespace, sources: dict[str, Path], work: Path) -> dict[str, Path]:
    dumps = {}
    server = start_mariadb(base_dir=work / "mariadb", ssl=True)
    procs = []
    try:
        setup = prepare(work, server)
        if args.realistic:
            server.sql(MY_CUSTOMERS, database="sbtest")
        token = bench_token(work)

        class SlowClock:  # gateway_endpoint waits 30 s for the port: stretch its clock
            sleep = staticmethod(time.sleep)

            @staticmethod
            def monotonic() -> float:
                return time.monotonic() * 30 / START_TIMEOUT

        mysql_compare.time = SlowClock()  # type: ignore[attr-defined,assignment]
        mode = "auto" if args.mode == "prepared" else "disable"
        for name, src in sources.items():
            out = work / f"cg-{name}"
            log(f"starting gateway {name} under callgrind")
            proc, gw = gateway_endpoint(
                work / name,
                setup,
                token,
                name,
                recording=args.realistic,
                launcher=callgrind(src, out),
                policy_extra=MY_REALISTIC if args.realistic else "",
            )
            procs.append(proc)

            def events(n: int, gw: mysql_compare.Endpoint = gw) -> None:
                sysbench(
                    gw,
                    "oltp_point_select",
                    "run",
                    "--threads=1",
                    "--time=0",
                    f"--events={n}",
                    f"--db-ps-mode={mode}",
                    "--report-interval=0",
                    timeout=3600,
                )

            events(WARM_UP)
            dumps[name] = count(functools.partial(events, args.transactions), out)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(60)
        server.stop()
    return dumps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="also count the gateway at this commit (A/B)")
    parser.add_argument("--mysql", action="store_true", help="MariaDB and sysbench point selects")
    parser.add_argument(
        "--mode",
        choices=["simple", "extended", "prepared"],
        default="prepared",
        help="pgbench -M (MySQL: prepared = prepared statements, else text protocol)",
    )
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument(
        "--config-extra",
        default="",
        help='appended to every gateway\'s config file (PostgreSQL), "\\n" for a new line; '
        'e.g. "[audit]\\nenabled = false" to count without the audit log',
    )
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="suite.py's realistic policy (limits, masks on another table) and recording",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="copy the callgrind dumps here (for callgrind_annotate: which functions)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gw-instr-"))
    work.chmod(0o755)
    sources: dict[str, Path] = {}
    if args.base:
        sources["A"] = worktree(args.base, work / "base")
    sources["B" if args.base else "this"] = ROOT / "src"
    try:
        dumps = (mysql if args.mysql else postgres)(args, sources, work)
        totals = {name: split_by_object(dump) for name, dump in dumps.items()}
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for name, dump in dumps.items():
                shutil.copy(dump, args.keep / f"callgrind.out.{name}")
    finally:
        if args.base:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "base")],
                check=False,
            )
        shutil.rmtree(work, ignore_errors=True)
    what = "point select" if args.mysql else f"pgbench -S -M {args.mode} transaction"
    print(f"instructions per {what} ({args.transactions} counted, realistic={args.realistic})")
    n = args.transactions
    for name, (total, by_object) in totals.items():
        top = ", ".join(f"{obj} {cost / n:,.0f}" for obj, cost in by_object.most_common(6))
        print(f"{name}: {total / n:,.0f} ({top})")
    if "A" in totals:
        print(f"B/A: {totals['B'][0] / totals['A'][0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
