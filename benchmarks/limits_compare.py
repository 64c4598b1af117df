"""What result limits cost when they do not trigger: rows/s and pgbench -S latency.

    uv run --no-sync python benchmarks/limits_compare.py [--duration 8] [--rounds 2]
                                                         [--rows 100000] [--json FILE]

Against, in one run and interleaved: PostgreSQL direct, pgbouncer (session mode), the
gateway without limits, and the gateway with every limit set (per statement, per session,
per identity window) high enough never to fire, so that the measured cost is the per-run
check itself. Two workloads: a wide result (ROWS rows x 3 columns, pgbench -c 1) and
pgbench -S -M prepared -c 1 (one row per statement). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    PG_DB,
    PG_ROLE,
    Bench,
    Endpoint,
    bench_env,
    log,
    pgbench_init,
    run_pgbench,
)

LIMITS = """
max_rows = 100000000
max_bytes = "100GB"
session_max_rows = 1000000000000
window_max_rows = 1000000000000
window = "1h"
on_limit = "error"
"""

SEED = """
DROP TABLE IF EXISTS limits_wide;
CREATE TABLE limits_wide AS
SELECT g AS id, 'row ' || g AS label, repeat('z', 40) AS pad FROM generate_series(1, {rows}) g;
ANALYZE limits_wide;
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    with bench_env() as bench:
        targets = setup(bench, args.rows)
        script = bench.base / "wide.sql"
        script.write_text("SELECT * FROM limits_wide;\n")
        wide: dict[str, list[float]] = {t.name: [] for t in targets}
        point: dict[str, list[float]] = {t.name: [] for t in targets}
        for rnd in range(args.rounds):
            order = targets if rnd % 2 == 0 else list(reversed(targets))
            for target in order:
                duration = str(int(args.duration))
                res = run_pgbench(target, ["-f", str(script), "-c", "1", "-T", duration])
                wide[target.name].append(res.tps * args.rows)
                res = run_pgbench(target, ["-S", "-M", "prepared", "-c", "1", "-T", duration])
                point[target.name].append(res.tps)
                log(
                    f"round {rnd + 1} {target.name:16} {wide[target.name][-1]:12,.0f} rows/s "
                    f"{point[target.name][-1]:9,.0f} tps"
                )
        report = {
            name: (statistics.median(wide[name]), statistics.median(point[name])) for name in wide
        }
    render(report, args.rows)
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "results": report}, indent=2))
    return 0


def setup(bench: Bench, rows: int) -> list[Endpoint]:
    pg = bench.start_postgres()
    direct = bench.direct()
    log(f"seeding {rows} rows and pgbench scale 1 ...")
    pgbench_init(direct, 1)
    pg.psql(f"SET ROLE {PG_ROLE};\n" + SEED.format(rows=rows), dbname=PG_DB)
    pgbouncer = bench.start_pgbouncer()
    plain = bench.start_gateway("gateway", recording=False)
    limited = bench.start_gateway("gateway-limits", recording=False, policy_extra=LIMITS)
    return [direct, pgbouncer, plain, limited]


def render(report: dict[str, tuple[float, float]], rows: int) -> None:
    print(f"\n### Limits that do not fire: {rows:,}-row result and pgbench -S -M prepared -c 1\n")
    print("| target | rows/s | vs pgbouncer | -S tps | vs pgbouncer |")
    print("|---|---:|---:|---:|---:|")
    b_rows, b_tps = report["pgbouncer"]
    for name, (rows_s, tps) in report.items():
        print(
            f"| {name} | {rows_s:,.0f} | {rows_s / b_rows:.2f}x | {tps:,.0f} | {tps / b_tps:.2f}x |"
        )
    plain, limited = report["gateway"], report["gateway-limits"]
    print(
        f"\n- limits on / off: {limited[0] / plain[0]:.2f}x rows/s, "
        f"{limited[1] / plain[1]:.2f}x -S tps"
    )


if __name__ == "__main__":
    sys.exit(main())
