"""CPU per transaction of each proxy, split by where it ran (kernel, interpreter, OpenSSL...),
sampled with `perf` under load.

    uv run --no-sync python benchmarks/perf_split.py [--mode prepared] [--seconds 8]

`cpu_split.py` splits a proxy's CPU into user and system time from the process's tick
counts, which on a virtual machine are coarse; `instructions.py` counts user-space
instructions exactly but with one client and no kernel. This samples the running proxy
with `perf record -e cpu-clock` (a software clock: it works where hardware counters are
"not supported", as on this machine) while `pgbench -S -M MODE -c 8` runs against it, and
prints µs per transaction by shared object: the kernel (system calls, loopback TCP), the
Python interpreter, OpenSSL (libcrypto, libssl), libc, uvloop, compiled extensions (ours and
msgspec's). Targets:
pgbouncer, the TLS-terminating forwarder (`pg_compare.py --tls-forwarder`: the floor of a
Python proxy) and the gateway (bench policy, no recording), one after the other.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_env, pgbench_init, run_pgbench

RATE = 2000  # samples per second of CPU


def by_object(data: Path) -> collections.Counter[str]:
    """Samples per shared object, from `perf report`."""
    out = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts: collections.Counter[str] = collections.Counter()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].endswith("%") and parts[1].isdigit():
            counts[" ".join(parts[2:])] += int(parts[1])
    return counts


def group(dso: str) -> str:
    for key, name in (
        ("kernel", "kernel"),
        ("libpython", "interpreter"),
        ("libcrypto", "OpenSSL"),
        ("libssl", "OpenSSL"),
        ("_ssl.", "OpenSSL"),
        ("libc.", "libc"),
        ("loop.", "uvloop"),
        ("pgbouncer", "pgbouncer"),
        ("cpython", "extensions"),  # ours (_tracker, _wire...) and msgspec's
    ):
        if key in dso:
            return name
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["simple", "extended", "prepared"], default="prepared")
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("perf_split.py needs perf (Debian: linux-perf)")
    columns = [
        "kernel", "interpreter", "OpenSSL", "libc", "uvloop", "extensions", "pgbouncer", "other"
    ]  # fmt: skip
    rows = []
    with bench_env() as bench:
        bench.start_postgres()
        pgbench_init(bench.direct(), 10)
        targets = [
            bench.start_pgbouncer(),
            bench.start_tls_forwarder(),
            bench.start_gateway("gateway", recording=False),
        ]
        load = ["-S", "-M", args.mode, "-c", "8", "-j", "2"]
        for ep in targets:
            assert ep.proc is not None
            run_pgbench(ep, [*load, "-T", "2"])  # warm up
            data = bench.base / f"perf-{ep.name}.data"
            # pgbouncer runs under runuser: sample the whole process tree by command.
            pids = [ep.proc.pid, *_children(ep.proc.pid)]
            pid_list = ",".join(str(p) for p in pids)
            rec = subprocess.Popen(
                [
                    "perf",
                    "record",
                    "-e",
                    "cpu-clock",
                    "-F",
                    str(RATE),
                    "-o",
                    str(data),
                    "-p",
                    pid_list,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
            res = run_pgbench(ep, [*load, "-T", str(args.seconds)])
            rec.send_signal(signal.SIGINT)
            rec.wait(60)
            n = res.tps * args.seconds
            per_group: collections.Counter[str] = collections.Counter()
            for dso, samples in by_object(data).items():
                per_group[group(dso)] += samples
            us = {k: v / RATE / n * 1e6 for k, v in per_group.items()}
            rows.append((ep.name, res.tps, us))
    print(f"pgbench -S -M {args.mode} -c 8: proxy CPU µs per transaction by where it ran (perf)")
    print("| proxy | TPS | total | " + " | ".join(columns) + " |")
    print("|---|---:|---:|" + "---:|" * len(columns))
    for name, tps, us in rows:
        cells = " | ".join(f"{us.get(c, 0.0):.1f}" for c in columns)
        print(f"| {name} | {tps:,.0f} | {sum(us.values()):.1f} | {cells} |")
    return 0


def _children(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


if __name__ == "__main__":
    sys.exit(main())
