"""Wide results through masking: rows/s of PostgreSQL direct, pgbouncer and the gateway.

    uv run --no-sync python benchmarks/masking_compare.py [--duration 8] [--rounds 2]
                                                          [--rows 100000] [--json FILE]

One table of ROWS rows x 7 columns (id, name, email, ssn, card_number, city, note) holding
the kind of values the detectors look for. pgbench runs `SELECT * FROM wide` (one client:
the wide-result case is about per-row cost, not concurrency) against:

* direct: PostgreSQL itself;
* pgbouncer: session pool mode (the reference C proxy);
* gateway: a policy with no masks (the pass-through path);
* gateway-3-masked: masks on 3 columns by source (email, ssn, card_number);
* gateway-detectors: the content detectors (credit_card, ssn, email, phone, iban, secret)
  on every text column, no column masks.

Targets are interleaved and their order reversed each round. Prints rows/s and the ratios of
issue 6 (3 masked >= 0.3x pgbouncer, detectors >= 0.15x, unmasked unchanged) and of issue 9
(unmasked >= 0.8x, 3 masked >= 0.4x). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PG_DB, PG_ROLE, Bench, Endpoint, bench_env, log, run_pgbench

MASKS_3 = """
[[policies.masks]]
columns = ["wide.email", "wide.ssn", "wide.card_number"]
style = "redact"
"""
DETECTORS = """
[[policies.masks]]
detectors = ["credit_card", "ssn", "email", "phone", "iban", "secret"]
style = "redact"
"""

SEED = """
DROP TABLE IF EXISTS wide;
CREATE TABLE wide AS
SELECT g AS id,
       'Customer ' || g AS name,
       'user' || g || '@example.com' AS email,
       lpad((100 + g % 800)::text, 3, '0') || '-' || lpad((1 + g % 98)::text, 2, '0') || '-'
         || lpad((1 + g % 9998)::text, 4, '0') AS ssn,
       '4111 1111 1111 ' || lpad((g % 10000)::text, 4, '0') AS card_number,
       (ARRAY['Springfield', 'Shelbyville', 'Ogdenville', 'North Haverbrook'])[1 + g % 4]
         AS city,
       'order ' || g || ' shipped on 2024-05-0' || (1 + g % 9) || ', ref ORD-' || g AS note
FROM generate_series(1, {rows}) AS g;
ANALYZE wide;
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
        script.write_text("SELECT * FROM wide;\n")
        results: dict[str, list[float]] = {t.name: [] for t in targets}
        for rnd in range(args.rounds):
            order = targets if rnd % 2 == 0 else list(reversed(targets))
            for target in order:
                res = run_pgbench(
                    target, ["-f", str(script), "-c", "1", "-T", str(int(args.duration))]
                )
                rows_s = res.tps * args.rows
                results[target.name].append(rows_s)
                log(f"round {rnd + 1} {target.name:18} {rows_s:12,.0f} rows/s")
        report = {name: statistics.median(v) for name, v in results.items()}
    render(report, args.rows)
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "rows_per_s": report}, indent=2))
    return 0


def setup(bench: Bench, rows: int) -> list[Endpoint]:
    pg = bench.start_postgres()
    direct = bench.direct()
    log(f"seeding {rows} rows ...")
    # As the gateway's role, so the table is its own to read.
    pg.psql(f"SET ROLE {PG_ROLE};\n" + SEED.format(rows=rows), dbname=PG_DB)
    pgbouncer = bench.start_pgbouncer()
    key = bench.base / "hash.key"
    key.write_text("bench-hash-key-0123456789abcdef\n")
    plain = bench.start_gateway("gateway", recording=False)
    masked = bench.start_gateway("gateway-3-masked", recording=False, policy_extra=MASKS_3)
    detect = bench.start_gateway("gateway-detectors", recording=False, policy_extra=DETECTORS)
    return [direct, pgbouncer, plain, masked, detect]


def render(report: dict[str, float], rows: int) -> None:
    bouncer = report["pgbouncer"]
    print(f"\n### Wide result: {rows:,} rows x 7 columns, pgbench -c 1 (median rows/s)\n")
    print("| target | rows/s | vs direct | vs pgbouncer |")
    print("|---|---:|---:|---:|")
    for name, value in report.items():
        print(
            f"| {name} | {value:,.0f} | {value / report['direct']:.2f}x | {value / bouncer:.2f}x |"
        )
    checks = [
        ("issue 6: 3 masked columns >= 0.3x pgbouncer", report["gateway-3-masked"] / bouncer, 0.3),
        ("issue 6: detectors on all text >= 0.15x", report["gateway-detectors"] / bouncer, 0.15),
        ("issue 9: unmasked >= 0.8x pgbouncer", report["gateway"] / bouncer, 0.8),
        ("issue 9: 3 masked columns >= 0.4x", report["gateway-3-masked"] / bouncer, 0.4),
    ]
    print()
    for label, value, target in checks:
        print(f"- {label}: {value:.2f}x {'PASS' if value >= target else 'FAIL'}")


if __name__ == "__main__":
    sys.exit(main())
