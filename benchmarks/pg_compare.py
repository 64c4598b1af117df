"""pgbench side by side: PostgreSQL direct, pgbouncer, the gateway, the gateway with recording.

    uv run --no-sync python benchmarks/pg_compare.py [--duration 8] [--scale 10] [--quick]
                                                     [--rounds 2] [--forwarder] [--tls-forwarder]
                                                     [--plaintext-gateway] [--json FILE]

Starts a throwaway PostgreSQL, pgbouncer (session pool mode), two gateways (recording off and
on), with --forwarder a bare Python TCP forwarder (TLS passed through) and with
--tls-forwarder a Python forwarder that terminates TLS on both legs, with --plaintext-gateway
the gateway with TLS off on both legs (what TLS costs it); runs `pgbench -i -s SCALE`
directly; then for each configuration runs pgbench against every target, the targets
interleaved and their order reversed every round so slow drift on a shared machine hits all of
them alike.
Prints markdown tables and PASS/FAIL against the targets of issues 2 and 3. See
docs/performance.md for the method and a reading of the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Bench,
    Endpoint,
    PgbenchResult,
    bench_env,
    fmt,
    log,
    pgbench_init,
    ratio,
    run_pgbench,
    tree_cpu_seconds,
    versions,
)

WIDE_ROWS = 10_000
WIDE_SQL = f"SELECT * FROM pgbench_accounts LIMIT {WIDE_ROWS};\n"

# Targets of issues 2 and 3.
TPS_RATIO_TARGET = 0.8  # gateway / pgbouncer at -c 8 -M prepared
ADDED_LATENCY_TARGET = 2.0  # (gateway - direct) / (pgbouncer - direct) at -c 1
RECORDING_TARGET = 0.9  # gateway+rec / gateway


@dataclass
class Config:
    key: str
    label: str
    args: list[str]
    clients: int
    kind: str  # "select" | "connect" | "wide"
    mode: str = "simple"

    def argv(self, seconds: float) -> list[str]:
        jobs = min(self.clients, 2)
        return [*self.args, "-c", str(self.clients), "-j", str(jobs), "-T", str(seconds)]


@dataclass
class Cell:
    """All rounds of one configuration against one target."""

    runs: list[PgbenchResult] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # proxy CPU seconds during each run

    @property
    def cpu_us_per_tx(self) -> float:
        """CPU time the proxy process spent per transaction, over all rounds. Much less
        sensitive to other load on the machine than TPS."""
        tx = sum(r.transactions for r in self.runs)
        return sum(self.cpu_s) / tx * 1e6 if self.cpu_s and tx else float("nan")

    # Medians, not means: on a shared machine one round can collide with someone else's job.

    @property
    def tps(self) -> float:
        return statistics.median(r.tps for r in self.runs)

    @property
    def latency_ms(self) -> float:
        lats = [r.latency_ms for r in self.runs if r.latency_ms is not None]
        return statistics.median(lats) if lats else float("nan")

    @property
    def conn_ms(self) -> float:
        vals = [r.conn_ms for r in self.runs if r.conn_ms is not None]
        return statistics.median(vals) if vals else float("nan")

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.runs)

    @property
    def spread(self) -> float:
        """(max - min) / median of the rounds' TPS: a rough noise indicator."""
        if len(self.runs) < 2:
            return 0.0
        tps = [r.tps for r in self.runs]
        return (max(tps) - min(tps)) / statistics.median(tps)


def configs(quick: bool, wide_file: Path) -> list[Config]:
    modes = ["simple", "prepared"] if quick else ["simple", "extended", "prepared"]
    out: list[Config] = []
    for mode in modes:
        for clients in (1, 8):
            out.append(
                Config(
                    f"S-{mode}-c{clients}",
                    f"-S -M {mode} -c {clients}",
                    ["-S", "-M", mode],
                    clients,
                    "select",
                    mode,
                )
            )
    out.append(
        Config("S-simple-C-c4", "-S -M simple -C -c 4", ["-S", "-M", "simple", "-C"], 4, "connect")
    )
    out.append(
        Config(
            "wide-prepared-c1",
            f"wide ({WIDE_ROWS:,} rows) -M prepared -c 1",
            ["-f", str(wide_file), "-M", "prepared"],
            1,
            "wide",
            "prepared",
        )
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per configuration and target, split over the rounds "
        "(default 8; 3 with --quick)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds per configuration; target order reverses each round "
        "(default 8; 1 with --quick)",
    )
    ap.add_argument(
        "--scale", type=int, default=None, help="pgbench scale factor (default 10; 1 with --quick)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: no extended mode, short runs, scale 1"
    )
    ap.add_argument(
        "--forwarder",
        action="store_true",
        help="also measure a bare uvloop TCP forwarder (one Python hop, no parsing)",
    )
    ap.add_argument(
        "--tls-forwarder",
        action="store_true",
        help="also measure a uvloop forwarder that terminates TLS on both legs as the gateway "
        "does (one Python hop, no parsing): the floor of a Python proxy in the gateway's place",
    )
    ap.add_argument(
        "--plaintext-gateway",
        action="store_true",
        help="also measure the gateway (no recording) with TLS off on both legs: the share of "
        "its cost that is TLS (pgbouncer and the other proxies keep TLS on)",
    )
    ap.add_argument(
        "--pgbouncer-auth",
        default="scram-sha-256",
        choices=["scram-sha-256", "plain"],
        help="pgbouncer client auth_type",
    )
    ap.add_argument(
        "--no-audit",
        action="store_true",
        help="gateways with the audit log off ([audit] enabled = false), to measure its cost",
    )
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="KEY",
        help="run only these configurations (S-simple-c1, S-simple-c8, S-extended-c1, "
        "S-extended-c8, S-prepared-c1, S-prepared-c8, S-simple-C-c4, wide-prepared-c1): "
        "more rounds for one ratio in the same time",
    )
    ap.add_argument("--json", type=Path, help="write every raw result here")
    ap.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs) for inspection"
    )
    args = ap.parse_args()
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 8.0)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 8)
    scale = args.scale if args.scale is not None else (1 if args.quick else 10)
    per_run = max(1, round(duration / rounds))
    if args.only:
        keys = [c.key for c in configs(args.quick, Path("wide.sql"))]
        unknown = sorted(set(args.only) - set(keys))
        if unknown:
            ap.error(f"unknown --only keys {unknown} (with these options: {', '.join(keys)})")

    started = time.monotonic()
    load_before = os.getloadavg()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with bench_env(keep=args.keep) as bench:
        wide_file = bench.base / "wide.sql"
        wide_file.write_text(WIDE_SQL)
        wide_file.chmod(0o644)
        targets = setup(
            bench,
            scale,
            args.forwarder,
            args.pgbouncer_auth,
            args.no_audit,
            args.tls_forwarder,
            args.plaintext_gateway,
        )
        names = [t.name for t in targets]
        plan = configs(args.quick, wide_file)
        if args.only:
            plan = [c for c in plan if c.key in args.only]
        log(
            f"running {len(plan)} configurations x {len(targets)} targets "
            f"x {rounds} rounds of {per_run}s"
        )
        results: dict[str, dict[str, Cell]] = {}
        for cfg in plan:
            cells = {t.name: Cell() for t in targets}
            for r in range(rounds):
                order = targets if r % 2 == 0 else list(reversed(targets))
                for target in order:
                    cpu0 = proxy_cpu(target)
                    res = run_pgbench(target, cfg.argv(per_run), timeout=per_run * 4 + 60)
                    cpu1 = proxy_cpu(target)
                    cells[target.name].runs.append(res)
                    if cpu0 is not None and cpu1 is not None:
                        cells[target.name].cpu_s.append(cpu1 - cpu0)
            results[cfg.key] = cells
            log(f"{cfg.label}: " + ", ".join(f"{n} {cells[n].tps:,.0f}" for n in names))
        pg_version = bench.pg.psql("SHOW server_version;").strip() if bench.pg else "?"
        check_alive(targets)

    elapsed = time.monotonic() - started
    info = versions() | {
        "postgresql": pg_version,
        "load": f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after",
    }
    command = "uv run --no-sync python benchmarks/pg_compare.py " + " ".join(sys.argv[1:])
    report, passed = render(
        plan, results, names, info, when, command.strip(), scale, per_run, rounds, elapsed
    )
    print(report)
    if args.json:
        raw = {
            "when": when,
            "info": info,
            "scale": scale,
            "seconds_per_run": per_run,
            "rounds": rounds,
            "results": {
                k: {n: [asdict(r) | {"output": None} for r in c.runs] for n, c in cells.items()}
                for k, cells in results.items()
            },
        }
        args.json.write_text(json.dumps(raw, indent=2))
    return 0 if passed else 1


def setup(
    bench: Bench,
    scale: int,
    forwarder: bool,
    pgbouncer_auth: str,
    no_audit: bool = False,
    tls_forwarder: bool = False,
    plaintext_gateway: bool = False,
) -> list[Endpoint]:
    log("starting PostgreSQL")
    bench.start_postgres()
    direct = bench.direct()
    log(f"pgbench -i -s {scale}")
    pgbench_init(direct, scale)
    assert bench.pg is not None
    bench.pg.psql("VACUUM ANALYZE;\n", dbname="app")
    log("starting pgbouncer and the gateways")
    targets = [direct, bench.start_pgbouncer(pgbouncer_auth)]
    if forwarder:
        targets.append(bench.start_forwarder())
    if tls_forwarder:
        targets.append(bench.start_tls_forwarder())
    extra = "[audit]\nenabled = false\n" if no_audit else ""
    if plaintext_gateway:
        plain = bench.start_gateway(
            "gateway-plaintext",
            recording=False,
            upstream_tls="disable",
            config_extra=extra + "[tls]\nallow_plaintext = true\n",
        )
        targets.append(dataclasses.replace(plain, settings={"PGSSLMODE": "disable"}))
    targets.append(bench.start_gateway("gateway", recording=False, config_extra=extra))
    targets.append(bench.start_gateway("gateway+rec", recording=True, config_extra=extra))
    # Warm up every path (page cache, imports done lazily on the first session).
    for target in targets:
        run_pgbench(target, ["-S", "-c", "2", "-j", "2", "-T", "1"], timeout=60)
    return targets


def proxy_cpu(target: Endpoint) -> float | None:
    """User+system CPU seconds of the proxy's process tree (pgbouncer runs under runuser)."""
    return tree_cpu_seconds(target.proc)


def check_alive(targets: list[Endpoint]) -> None:
    for t in targets:
        if t.proc is not None and t.proc.poll() is not None:
            raise RuntimeError(f"{t.name} exited during the run ({t.proc.returncode})")


def render(
    plan: list[Config],
    results: dict[str, dict[str, Cell]],
    names: list[str],
    info: dict[str, str],
    when: str,
    command: str,
    scale: int,
    per_run: int,
    rounds: int,
    elapsed: float,
) -> tuple[str, bool]:
    gw, rec, pgb, direct = "gateway", "gateway+rec", "pgbouncer", "direct"
    lines: list[str] = []
    add = lines.append
    add(f"## pgbench: direct vs pgbouncer vs gateway ({when})")
    add("")
    add(f"Command: `{command}`  ")
    add(
        f"Machine: {info['cpus']} CPUs, Linux {info['kernel']}; PostgreSQL {info['postgresql']}, "
        f"{info['pgbouncer']}, {info['pgbench']}, Python {info['python']}.  "
    )
    add(
        f"Scale {scale}; each cell = median of {rounds} round(s) x {per_run}s, "
        "targets interleaved; "
        "-j = min(c, 2); TLS on every leg"
        + (" (except gateway-plaintext's)" if "gateway-plaintext" in names else "")
        + f". Total {elapsed:.0f}s; "
        f"1-minute load average {info['load']}."
    )
    add("")

    # 1. Throughput, select-only.
    sel = [c for c in plan if c.kind == "select"]
    others = [n for n in names if n not in (direct, pgb, gw, rec)]
    head = [
        "pgbench",
        direct,
        pgb,
        *others,
        gw,
        rec,
        "gw/direct",
        "gw/pgbouncer",
        *[f"{o}/pgbouncer" for o in others],
        "rec/gw",
        "spread",
    ]
    add("### Select-only TPS (`-S`)")
    add("")
    add("| " + " | ".join(head) + " |")
    add("|" + "---|" * len(head))
    for cfg in sel:
        cells = results[cfg.key]
        row = [cfg.label] + [fmt(cells[n].tps) for n in (direct, pgb, *others, gw, rec)]
        row += [
            ratio(cells[gw].tps, cells[direct].tps),
            ratio(cells[gw].tps, cells[pgb].tps),
            *[ratio(cells[o].tps, cells[pgb].tps) for o in others],
            ratio(cells[rec].tps, cells[gw].tps),
            f"{max(c.spread for c in cells.values()):.0%}",
        ]
        add("| " + " | ".join(row) + " |")
    add("")
    add("`spread`: the largest (max-min)/median of one target's rounds in that row, a noise gauge.")
    add("")

    # 1b. Proxy CPU per transaction (robust against other load on a shared machine).
    proxies = [n for n in names if n != direct]
    add("### Proxy CPU per transaction (µs of user+system CPU of the proxy process)")
    add("")
    phead = ["pgbench", *proxies, "gw/pgbouncer", "rec/gw"]
    add("| " + " | ".join(phead) + " |")
    add("|" + "---|" * len(phead))
    for cfg in plan:
        cells = results[cfg.key]
        row = [cfg.label] + [fmt(cells[n].cpu_us_per_tx, 1) for n in proxies]
        row += [
            ratio(cells[gw].cpu_us_per_tx, cells[pgb].cpu_us_per_tx),
            ratio(cells[rec].cpu_us_per_tx, cells[gw].cpu_us_per_tx),
        ]
        add("| " + " | ".join(row) + " |")
    add("")
    add(
        "On a 2-core machine a proxy's CPU is taken from PostgreSQL and pgbench, so CPU per "
        "transaction bounds the throughput a proxy can reach here; -C rows include the "
        "connection setup, wide rows are per 10,000-row query."
    )
    add("")

    # 2. Latency added at -c 1.
    lat_ratios: dict[str, float] = {}
    NAN = float("nan")
    if any(cfg.clients == 1 for cfg in sel):  # not with --only of -c 8 cases
        add("### Latency added per query at `-c 1` (pgbench latency average minus direct's)")
        add("")
        lhead = [
            "mode",
            "direct ms",
            "pgbouncer +ms",
            *[f"{o} +ms" for o in others],
            "gateway +ms",
            "gateway+rec +ms",
            "gw added / pgb added",
            *[f"{o} added / pgb added" for o in others],
        ]
        add("| " + " | ".join(lhead) + " |")
        add("|" + "---|" * len(lhead))
        for cfg in sel:
            if cfg.clients != 1:
                continue
            cells = results[cfg.key]
            base = cells[direct].latency_ms
            added = {n: cells[n].latency_ms - base for n in names}
            r = added[gw] / added[pgb] if added[pgb] > 0 else float("nan")
            lat_ratios[cfg.mode] = r
            row = (
                [cfg.mode, f"{base:.3f}"]
                + [f"{added[n]:+.3f}" for n in (pgb, *others, gw, rec)]
                + [fmt(r, 2)]
                + [fmt(added[o] / added[pgb] if added[pgb] > 0 else NAN, 2) for o in others]
            )
            add("| " + " | ".join(row) + " |")
        add("")

    # 3. Connection setup.
    conn = [c for c in plan if c.kind == "connect"]
    if conn:
        add("### Connection setup (`-C`: a new connection per transaction)")
        add("")
        chead = ["pgbench", *[f"{n} TPS" for n in names], "gw/direct", "gw/pgbouncer", "rec/gw"]
        add("| " + " | ".join(chead) + " |")
        add("|" + "---|" * len(chead))
        for cfg in conn:
            cells = results[cfg.key]
            row = [cfg.label] + [fmt(cells[n].tps) for n in names]
            row += [
                ratio(cells[gw].tps, cells[direct].tps),
                ratio(cells[gw].tps, cells[pgb].tps),
                ratio(cells[rec].tps, cells[gw].tps),
            ]
            add("| " + " | ".join(row) + " |")
            add("")
            add(
                "Average connection time as pgbench reports it: "
                + ", ".join(f"{n} {fmt(cells[n].conn_ms, 2)} ms" for n in names)
                + ". pgbouncer (session pool) hands back an already open server connection; "
                "the gateway opens a new upstream connection (TLS + SCRAM) per client."
            )
        add("")

    # 4. Wide results.
    wide = [c for c in plan if c.kind == "wide"]
    if wide:
        add(f"### Wide result: `SELECT * FROM pgbench_accounts LIMIT {WIDE_ROWS}` (rows/s)")
        add("")
        whead = ["pgbench", *names, "gw/direct", "gw/pgbouncer", "rec/gw"]
        add("| " + " | ".join(whead) + " |")
        add("|" + "---|" * len(whead))
        for cfg in wide:
            cells = results[cfg.key]
            row = [cfg.label] + [fmt(cells[n].tps * WIDE_ROWS) for n in names]
            row += [
                ratio(cells[gw].tps, cells[direct].tps),
                ratio(cells[gw].tps, cells[pgb].tps),
                ratio(cells[rec].tps, cells[gw].tps),
            ]
            add("| " + " | ".join(row) + " |")
        add("")
        add("Recording keeps the first `record_rows` (default 1,000) rows of each statement.")
        add("")

    failed = {
        f"{k}/{n}": c.failed for k, cells in results.items() for n, c in cells.items() if c.failed
    }
    if failed:
        add(f"Failed transactions: {failed}")
        add("")

    # Targets.
    add("### Targets")
    add("")
    verdicts: list[tuple[str, bool]] = []
    key = "S-prepared-c8"
    if key in results:
        r = results[key][gw].tps / results[key][pgb].tps
        verdicts.append(
            (
                f"gateway TPS >= {TPS_RATIO_TARGET}x pgbouncer at -c 8 -M prepared: {r:.2f}x",
                r >= TPS_RATIO_TARGET,
            )
        )
    for mode in ("simple", "prepared"):
        if mode in lat_ratios:
            r = lat_ratios[mode]
            verdicts.append(
                (
                    f"latency added by the gateway <= {ADDED_LATENCY_TARGET}x pgbouncer's "
                    f"at -c 1 -M {mode}: {r:.2f}x",
                    r == r and r <= ADDED_LATENCY_TARGET,
                )
            )
    for key in ("S-prepared-c8", "S-prepared-c1"):
        if key in results:
            r = results[key][rec].tps / results[key][gw].tps
            c = key.rsplit("-", 1)[1].replace("c", "-c ")
            verdicts.append(
                (
                    f"recording costs <= {1 - RECORDING_TARGET:.0%} of gateway TPS "
                    f"at {c} -M prepared: rec/gw = {r:.2f}",
                    r >= RECORDING_TARGET,
                )
            )
    for text, ok in verdicts:
        add(f"- **{'PASS' if ok else 'FAIL'}** {text}")
    key = "S-prepared-c8"
    if key in results:
        c8 = results[key]
        extra = c8[rec].cpu_us_per_tx / c8[gw].cpu_us_per_tx - 1
        add(
            f"- (info, not a target) at -c 8 -M prepared the gateway uses "
            f"{c8[gw].cpu_us_per_tx / c8[pgb].cpu_us_per_tx:.2f}x pgbouncer's CPU per transaction; "
            f"recording adds {extra:+.0%} gateway CPU per transaction"
        )
    add("")
    return "\n".join(lines), all(ok for _, ok in verdicts)


if __name__ == "__main__":
    sys.exit(main())
