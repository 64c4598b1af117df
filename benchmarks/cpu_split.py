"""Where the machine's CPU goes per pgbench transaction, for each way of reaching PostgreSQL.

    uv run --no-sync python benchmarks/cpu_split.py
    uv run --no-sync python benchmarks/cpu_split.py --mode simple --clients 8 --rounds 5

On a 2-vCPU machine pgbench, PostgreSQL and the proxy share the cores, so a proxy's TPS
depends on the CPU everything spends per transaction, not on the proxy's alone. For direct
access, pgbouncer, the bare forwarder, the TLS-terminating forwarder and the gateway (bench
policy, no recording) in turn, this runs `pgbench -S -M MODE -c N` and prints, per
transaction: the machine's busy time (from /proc/stat), PostgreSQL's (the postmaster and its
children, those that exited during the run included), pgbench's (this process's children),
the proxy's (and its split into user and system time: the proxy's own code against the
kernel's reads and writes), and how much of the time the machine was idle. Medians of
`--rounds`, targets interleaved.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Endpoint, bench_env, pgbench_init, run_pgbench, tree_cpu_seconds


def machine() -> tuple[float, float]:
    """(all, idle) CPU seconds of the machine so far."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:9]]
    hz = os.sysconf("SC_CLK_TCK")
    return sum(fields) / hz, (fields[3] + fields[4]) / hz


def postgres_seconds(data_dir: Path) -> float:
    """CPU seconds of the postmaster, its live children and its children that exited."""
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    root = psutil.Process(pid)
    t = root.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in root.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass  # exited meanwhile: counted in children_* from now on
    return float(total)


def children_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["simple", "extended", "prepared"], default="prepared")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    with bench_env() as bench:
        pg = bench.start_postgres()
        if pg.data_dir is None:
            sys.exit("cpu_split.py needs a local PostgreSQL (it reads the postmaster's CPU)")
        data_dir = pg.data_dir
        pgbench_init(bench.direct(), 10)
        targets: list[Endpoint] = [
            bench.direct(),
            bench.start_pgbouncer(),
            bench.start_forwarder(),
            bench.start_tls_forwarder(),
            bench.start_gateway("gateway", recording=False),
        ]
        for t in targets:  # warm up
            run_pgbench(t, ["-S", "-c", "2", "-j", "2", "-T", "1"])
        rows: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
        pgbench = ["-S", "-M", args.mode, "-c", str(args.clients)]
        pgbench += ["-j", str(min(args.clients, 2)), "-T", str(args.seconds)]
        for r in range(args.rounds):
            for t in targets if r % 2 == 0 else targets[::-1]:
                pg0, px0, pu0, cl0, (all0, idle0) = (
                    postgres_seconds(data_dir),
                    tree_cpu_seconds(t.proc) or 0.0,
                    tree_cpu_seconds(t.proc, user_only=True) or 0.0,
                    children_seconds(),
                    machine(),
                )
                res = run_pgbench(t, pgbench)
                all1, idle1 = machine()
                n = res.tps * args.seconds
                busy = (all1 - all0) - (idle1 - idle0)
                rows[t.name].append(
                    {
                        "tps": res.tps,
                        "idle": (idle1 - idle0) / (all1 - all0),
                        "busy": busy / n * 1e6,
                        "postgres": (postgres_seconds(data_dir) - pg0) / n * 1e6,
                        "pgbench": (children_seconds() - cl0) / n * 1e6,
                        "proxy": ((tree_cpu_seconds(t.proc) or 0.0) - px0) / n * 1e6
                        if t.proc
                        else 0.0,
                        "proxy_user": ((tree_cpu_seconds(t.proc, user_only=True) or 0.0) - pu0)
                        / n
                        * 1e6
                        if t.proc
                        else 0.0,
                    }
                )
    print(
        f"pgbench -S -M {args.mode} -c {args.clients}: CPU µs per transaction, "
        f"median of {args.rounds} rounds of {args.seconds}s"
    )
    print(
        "| target | TPS | machine idle | machine busy | PostgreSQL | pgbench | proxy "
        "| proxy user / system | other |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, runs in rows.items():
        m = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        other = m["busy"] - m["postgres"] - m["pgbench"] - m["proxy"]
        print(
            f"| {name} | {m['tps']:,.0f} | {m['idle'] * 100:.1f}% | {m['busy']:.1f} | "
            f"{m['postgres']:.1f} | {m['pgbench']:.1f} | {m['proxy']:.1f} | "
            f"{m['proxy_user']:.1f} / {m['proxy'] - m['proxy_user']:.1f} | {other:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
