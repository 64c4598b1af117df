"""Issue 9's benchmark suite: every scenario, every reference, one run, one table of ratios.

    uv run --no-sync python benchmarks/suite.py                 # full run, ~15 minutes
    uv run --no-sync python benchmarks/suite.py --quick         # smoke run, ~3 minutes
    uv run --no-sync python benchmarks/suite.py --only select-prepared connect
    uv run --no-sync python benchmarks/suite.py --profile --only select-simple

Targets, TLS on every client leg:

* direct     -- PostgreSQL / MariaDB itself;
* pgbouncer  -- session pool mode (PostgreSQL only: there is no MySQL equivalent here);
* forwarder  -- a bare uvloop TCP forwarder: no parsing, TLS passed through; the floor of
                one Python hop;
* gateway    -- with a realistic policy active: statement classification with deny rules,
                limits that never fire (per statement, session and identity window), masks on
                3 columns of ANOTHER table (`wide`) than the one queried, recording on (the
                default `record_rows`), the audit log on.

Scenarios (`--only` takes these names; `select` means the three select-* ones):

    select-simple|select-extended|select-prepared   pgbench -S -M MODE at -c 1 and -c 8
    connect       pgbench -S -C -c 4: a new connection per transaction (gateway: JWT
                  verification and an upstream TLS + SCRAM login every time)
    wide          SELECT * FROM wide_plain: ROWS rows x 7 columns, nothing masked (rows/s)
    wide-masked   SELECT * FROM wide: the same rows, 3 columns masked by the gateway
    sysbench      oltp_point_select and oltp_read_only, 8 threads, prepared statements,
                  MariaDB direct / forwarder / gateway
    memory        RSS per idle authenticated session with SESSIONS sessions open (gateway and
                  pgbouncer; each session logged in, ran SELECT 1, then idles)
    recording     a ROWS-row result recorded whole (record_rows raised) vs the same gateway
                  with recording off: MB/s written and the gateway CPU it costs

Measured cases run in rounds; in every round each case runs once against every target, the
target order reversed every other round, so drift on a shared machine hits all targets
alike; cells are medians over the rounds. Memory and the profile run after the rounds.

Prints one markdown table (scenario, metric, one column per target, gateway/pgbouncer,
gateway/direct, issue 9's target, PASS/FAIL) on stdout, progress on stderr. Exit status 0
when every target checked passes, 1 otherwise.

`--profile` samples the gateway with py-spy (cProfile if py-spy is missing) under
`pgbench -S -c 8` (simple and prepared) and writes the profiles outside the repository
(`--profile-dir`, default a new /tmp/gateway-profile-* directory), then prints the top
functions. See benchmarks/README.md and docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mysql_compare as my
from common import (
    AUDIENCE,
    BENCH_USER,
    ISSUER,
    PG_DB,
    PG_ROLE,
    Bench,
    Endpoint,
    bench_env,
    fmt,
    log,
    pgbench_init,
    run_pgbench,
    tree_cpu_seconds,
    tree_rss_mb,
    versions,
)
from idle_memory import client_tls, open_sessions
from limits_compare import LIMITS
from masking_compare import MASKS_3
from masking_compare import SEED as WIDE_SEED
from profiling import profile_gateway

from gateway.keys import mint_token

REPO = Path(__file__).resolve().parent.parent

SCENARIOS = (
    "select-simple",
    "select-extended",
    "select-prepared",
    "connect",
    "wide",
    "wide-masked",
    "sysbench",
    "memory",
    "recording",
)
ALIASES = {"select": ("select-simple", "select-extended", "select-prepared")}
PG_TARGETS = ["direct", "pgbouncer", "forwarder", "gateway"]
MY_TARGETS = ["direct", "forwarder", "gateway"]
COLUMNS = PG_TARGETS  # the table's value columns; MySQL rows leave pgbouncer empty
REC_TARGETS = ["rec-on", "rec-off"]

# Issue 9's targets.
PREPARED_C8 = 1.0  # gateway / pgbouncer TPS, -S -M prepared -c 8
SIMPLE_C8 = 0.9  # gateway / pgbouncer TPS, -S -M simple -c 8
ADDED_LATENCY = 1.5  # gateway's added latency / pgbouncer's, -c 1
WIDE_UNMASKED = 0.8  # gateway / pgbouncer rows/s
WIDE_MASKED = 0.4
SYSBENCH_POINT = 0.8  # gateway / direct TPS, oltp_point_select, 8 threads
IDLE_KB = 16.0  # KB of gateway RSS per idle session
CONNECT = 0.5  # gateway / pgbouncer, pgbench -C

# The realistic policy's extra keys: limits that cannot fire here, and masks on the `wide`
# table (every case but wide-masked queries other tables, so they pay only for the lookup).
REALISTIC = LIMITS + MASKS_3
# MySQL: the same limits, masks on a small table sysbench never reads.
MY_REALISTIC = (
    LIMITS
    + """
[[policies.masks]]
columns = ["customers.email", "customers.ssn", "customers.card_number"]
style = "redact"
"""
)
MY_CUSTOMERS = (
    "CREATE TABLE customers (id INT PRIMARY KEY, email VARCHAR(100), ssn VARCHAR(11), "
    "card_number VARCHAR(19));\n"
    "INSERT INTO customers VALUES (1, 'a@example.com', '123-45-6789', '4111 1111 1111 1111');"
)
# A record_rows above any result here: the recording scenario records all rows.
RECORD_ALL = "record_rows = 1000000000\n"
MB = 1024 * 1024
NAN = float("nan")


# --- cases: one workload against several targets, sampled once per round ---------------------

Sample = dict[str, float]


@dataclass
class Case:
    key: str
    scenario: str
    label: str
    targets: list[str]
    run: Callable[[str, int], Sample]  # (target, seconds) -> metrics
    min_seconds: int = 1
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def median(self, target: str, metric: str) -> float:
        """Median over the rounds; medians, not means: one round can collide with someone
        else's job on a shared machine."""
        found = (s.get(metric, NAN) for s in self.samples.get(target, []))
        values = [v for v in found if not math.isnan(v)]
        return statistics.median(values) if values else NAN

    def spread(self) -> float:
        """Largest (max - min) / median of one target's main metric over the rounds."""
        worst = 0.0
        for samples in self.samples.values():
            vals = [s["main"] for s in samples if s["main"] > 0]
            if len(vals) > 1:
                worst = max(worst, (max(vals) - min(vals)) / statistics.median(vals))
        return worst


def pgbench_case(
    key: str,
    scenario: str,
    label: str,
    endpoints: dict[str, Endpoint],
    args: list[str],
    clients: int,
    *,
    rows: int = 1,
    min_seconds: int = 1,
) -> Case:
    def run(name: str, seconds: int) -> Sample:
        ep = endpoints[name]
        jobs = min(clients, 2)
        argv = [*args, "-c", str(clients), "-j", str(jobs), "-T", str(seconds)]
        cpu0 = tree_cpu_seconds(ep.proc)
        res = run_pgbench(ep, argv, timeout=seconds * 4 + 120)
        cpu1 = tree_cpu_seconds(ep.proc)
        cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else NAN
        tx = res.transactions or 1
        return {
            "main": res.tps * rows,
            "tps": res.tps,
            "rows_s": res.tps * rows,
            "latency_ms": res.latency_ms if res.latency_ms is not None else NAN,
            "conn_ms": res.conn_ms if res.conn_ms is not None else NAN,
            "cpu_us_tx": cpu / tx * 1e6,
            "failed": float(res.failed),
        }

    return Case(key, scenario, label, list(endpoints), run, min_seconds)


def recording_case(endpoints: dict[str, Endpoint], base: Path, script: Path, rows: int) -> Case:
    def run(name: str, seconds: int) -> Sample:
        ep = endpoints[name]
        sessions = base / ep.name / "sessions"
        size0 = settled_size(sessions)
        cpu0 = tree_cpu_seconds(ep.proc)
        t0 = time.monotonic()
        res = run_pgbench(ep, ["-f", str(script), "-c", "1", "-T", str(seconds)])
        wall = time.monotonic() - t0
        # The recorder writes behind the session (buffered, flushed every second): wait for
        # the files to stop growing, then count the CPU it spent doing so as well.
        size1 = settled_size(sessions)
        cpu1 = tree_cpu_seconds(ep.proc)
        cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else NAN
        tx = res.transactions or 1
        return {
            "main": res.tps * rows,
            "rows_s": res.tps * rows,
            "mb_s": (size1 - size0) / MB / wall,
            "mb_query": (size1 - size0) / MB / tx,
            "cpu_ms_query": cpu / tx * 1e3,
        }

    return Case("recording", "recording", "recording", list(endpoints), run, 3)


def dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, f)).st_size
    return total


def settled_size(path: Path, timeout: float = 15.0) -> int:
    size, deadline = dir_size(path), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.6)
        now = dir_size(path)
        if now == size:
            return now
        size = now
    return size


def sysbench_case(test: str, endpoints: dict[str, my.Endpoint], threads: int = 8) -> Case:
    def run(name: str, seconds: int) -> Sample:
        r = my.run_one(endpoints[name], test, "auto", threads, seconds)
        return {
            "main": r.tps,
            "tps": r.tps,
            "qps": r.qps,
            "latency_ms": r.latency_ms,
            "failed": float(r.errors),
            "cpu_pct": r.cpu if r.cpu is not None else NAN,
        }

    label = f"sysbench {test} {threads} threads"
    return Case(f"sysbench-{test}", "sysbench", label, list(endpoints), run)


# --- setup -----------------------------------------------------------------------------------


@dataclass
class World:
    bench: Bench
    pg: dict[str, Endpoint] = field(default_factory=dict)
    rec: dict[str, Endpoint] = field(default_factory=dict)
    my: dict[str, my.Endpoint] = field(default_factory=dict)
    wide_plain: Path | None = None
    wide_masked: Path | None = None
    mariadb_version: str = ""


def setup(
    bench: Bench,
    stack: contextlib.ExitStack,
    chosen: set[str],
    scale: int,
    rows: int,
    sessions: int,
    profile: bool,
) -> World:
    world = World(bench)
    if chosen - {"sysbench"} or profile:
        memory = "memory" in chosen
        log("starting PostgreSQL" + (f" (max_connections {sessions + 200})" if memory else ""))
        pg = bench.start_postgres(max_connections=sessions + 200 if memory else None)
        direct = bench.direct()
        log(f"pgbench -i -s {scale}")
        pgbench_init(direct, scale)
        if chosen & {"wide", "wide-masked", "recording"}:
            log(f"seeding wide tables: {rows:,} rows x 7 columns")
            pg.psql(
                f"SET ROLE {PG_ROLE};\n"
                + WIDE_SEED.format(rows=rows)
                + "CREATE TABLE wide_plain AS SELECT * FROM wide;\n",
                dbname=PG_DB,
            )
            world.wide_plain = bench.base / "wide_plain.sql"
            world.wide_plain.write_text("SELECT * FROM wide_plain;\n")
            world.wide_masked = bench.base / "wide_masked.sql"
            world.wide_masked.write_text("SELECT * FROM wide;\n")
        pg.psql("VACUUM ANALYZE;\n", dbname=PG_DB)
        log("starting pgbouncer, the forwarder and the gateway")
        pool = max(150, sessions + 50) if memory else 150
        world.pg = {
            "direct": direct,
            "pgbouncer": bench.start_pgbouncer(pool_size=pool, max_clients=pool + 100),
            "forwarder": bench.start_forwarder(),
            "gateway": bench.start_gateway("gateway", recording=True, policy_extra=REALISTIC),
        }
        if "recording" in chosen:
            world.rec = {
                "rec-on": bench.start_gateway(
                    "gw-rec-all", recording=True, policy_extra=RECORD_ALL + REALISTIC
                ),
                "rec-off": bench.start_gateway(
                    "gw-rec-off", recording=False, policy_extra=REALISTIC
                ),
            }
        # Warm every path up (page cache, lazily imported modules, catalogs).
        for ep in [*world.pg.values(), *world.rec.values()]:
            run_pgbench(ep, ["-S", "-c", "2", "-j", "2", "-T", "1"], timeout=60)
    if "sysbench" in chosen:
        world.my, world.mariadb_version = setup_mysql(bench, stack)
    return world


def setup_mysql(bench: Bench, stack: contextlib.ExitStack) -> tuple[dict[str, my.Endpoint], str]:
    from gateway.embedded.mariadb import start_mariadb

    log("starting MariaDB")
    server = start_mariadb(base_dir=bench.base / "mariadb", ssl=True)
    stack.callback(server.stop)
    prepared = my.prepare(bench.base, server)
    server.sql(MY_CUSTOMERS, database="sbtest")
    bench.token()  # writes keys/jwks.json, which the MySQL gateway's config names
    assert bench.key_path is not None
    token = mint_token(
        bench.key_path, BENCH_USER, ["bench"], 6 * 3600, audience=AUDIENCE, issuer=ISSUER
    )
    log("starting the MySQL forwarder and gateway")
    fwd = bench.start_forwarder(upstream_port=server.port, name="my-forwarder")
    proc, gateway = my.gateway_endpoint(
        bench.base / "my-gateway",
        prepared,
        token,
        "gateway",
        recording=True,
        policy_extra=MY_REALISTIC,
    )
    bench.procs.append(proc)
    d = prepared.direct
    forwarder = my.Endpoint("forwarder", fwd.port, d.user, d.password, d.cwd, fwd.proc.pid)  # type: ignore[union-attr]
    endpoints = {"direct": d, "forwarder": forwarder, "gateway": gateway}
    for ep in endpoints.values():
        my.run_one(ep, "oltp_point_select", "auto", 2, 1)
    return endpoints, server.sql("SELECT VERSION();").strip()


def plan(world: World, chosen: set[str], rows: int) -> list[Case]:
    cases: list[Case] = []
    for mode in ("simple", "extended", "prepared"):
        if f"select-{mode}" not in chosen:
            continue
        for clients in (8, 1):
            cases.append(
                pgbench_case(
                    f"select-{mode}-c{clients}",
                    f"select-{mode}",
                    f"pgbench -S -M {mode} -c {clients}",
                    world.pg,
                    ["-S", "-M", mode],
                    clients,
                )
            )
    if "connect" in chosen:
        cases.append(
            pgbench_case("connect", "connect", "pgbench -S -C -c 4", world.pg, ["-S", "-C"], 4)
        )
    for scenario, script, what in (
        ("wide", world.wide_plain, "nothing masked"),
        ("wide-masked", world.wide_masked, "3 columns masked"),
    ):
        if scenario in chosen:
            assert script is not None
            cases.append(
                pgbench_case(
                    scenario,
                    scenario,
                    f"wide result {rows:,} x 7, {what}",
                    world.pg,
                    ["-f", str(script)],
                    1,
                    rows=rows,
                    min_seconds=3,  # whole queries only: a slow target fits few in 1 s
                )
            )
    if "sysbench" in chosen:
        for test in ("oltp_point_select", "oltp_read_only"):
            cases.append(sysbench_case(test, world.my))
    if "recording" in chosen:
        assert world.wide_plain is not None
        cases.append(recording_case(world.rec, world.bench.base, world.wide_plain, rows))
    return cases


def run_rounds(cases: list[Case], rounds: int, per_run: int) -> None:
    for rnd in range(rounds):
        for case in cases:
            order = case.targets if rnd % 2 == 0 else list(reversed(case.targets))
            seconds = max(per_run, case.min_seconds)
            for name in order:
                case.samples.setdefault(name, []).append(case.run(name, seconds))
            last = ", ".join(f"{n} {case.samples[n][-1]['main']:,.0f}" for n in case.targets)
            log(f"round {rnd + 1}/{rounds} {case.label}: {last}")


# --- memory ----------------------------------------------------------------------------------


async def idle_session_kb(ep: Endpoint, sessions: int, concurrency: int = 50) -> Sample:
    """RSS the process tree gains per idle session (logged in, one SELECT 1, then idle)."""
    assert ep.proc is not None
    tls = client_tls()
    for conn in await open_sessions(ep, 2, 2, tls):
        await conn.close()
    before = settled_rss(ep)
    t0 = time.monotonic()
    conns = await open_sessions(ep, sessions, concurrency, tls)
    open_s = time.monotonic() - t0
    after = settled_rss(ep)
    try:
        # Still usable after sitting idle, or the number means nothing.
        for conn in (conns[0], conns[-1]):
            if await conn.execute("SELECT 1") != "SELECT 1":
                raise RuntimeError(f"{ep.name}: an idle session stopped answering")
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    log(
        f"memory {ep.name}: {before:.1f} MB -> {after:.1f} MB with {sessions:,} sessions "
        f"(opened in {open_s:.1f}s)"
    )
    return {
        "main": (after - before) * 1024 / sessions,
        "kb_session": (after - before) * 1024 / sessions,
        "before_mb": before,
        "after_mb": after,
        "open_s": open_s,
    }


def settled_rss(ep: Endpoint, seconds: float = 2.0) -> float:
    assert ep.proc is not None
    time.sleep(seconds)
    return tree_rss_mb(ep.proc)


def measure_memory(world: World, sessions: int) -> Case:
    targets = ["gateway", "pgbouncer"]
    case = Case("memory", "memory", f"{sessions:,} idle sessions", targets, lambda t, s: {})
    # Gateway first: pgbouncer keeps its server connections after its clients leave, and
    # PostgreSQL is sized for one set of idle sessions at a time.
    for name in case.targets:
        wait_for_backends_to_exit(world.bench)
        try:
            case.samples[name] = [asyncio.run(idle_session_kb(world.pg[name], sessions))]
        except Exception as exc:
            # One failed measurement must not throw away the whole run's numbers.
            log(f"memory {name}: failed: {exc!r}")
            case.samples[name] = []
            case.errors[name] = repr(exc)[:120]
    return case


def wait_for_backends_to_exit(bench: Bench, timeout: float = 120.0) -> None:
    """PostgreSQL is sized for one set of idle sessions: the previous set's backends must be
    gone before the next proxy opens its own, or logins fail with "too many clients"."""
    assert bench.pg is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = int(
            bench.pg.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend';"
            ).strip()
        )
        if n < 100:
            return
        time.sleep(1.0)
    log(f"still {n} PostgreSQL backends after {timeout:.0f}s")


# --- the table -------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    metric: str
    values: dict[str, str]
    gw_pgb: str = ""
    gw_direct: str = ""
    target: str = ""
    verdict: str = "info"


def _ratio(a: float, b: float, suffix: str = "x") -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return f"{a / b:.2f}{suffix}"


def _check(value: float, ok: bool) -> str:
    return "FAIL" if math.isnan(value) else ("PASS" if ok else "FAIL")


def build_rows(cases: list[Case], memory: Case | None) -> list[Row]:
    rows: list[Row] = []
    by_key = {c.key: c for c in cases}

    def values(case: Case, metric: str, digits: int = 0, prefix: str = "") -> dict[str, str]:
        return {t: prefix + fmt(case.median(t, metric), digits) for t in case.targets}

    def throughput(case: Case, metric: str, unit: str, goal: float | None, vs: str) -> None:
        gw, pgb, direct = (case.median(t, metric) for t in ("gateway", "pgbouncer", "direct"))
        row = Row(
            case.label,
            unit,
            values(case, metric),
            _ratio(gw, pgb) if "pgbouncer" in case.targets else "--",
            _ratio(gw, direct),
        )
        if goal is not None:
            base = pgb if vs == "pgbouncer" else direct
            r = gw / base if base else NAN
            row.target = f">= {goal}x {vs}"
            row.verdict = _check(r, r >= goal)
        rows.append(row)

    for mode in ("simple", "extended", "prepared"):
        c8 = by_key.get(f"select-{mode}-c8")
        if c8 is not None:
            goal = {"simple": SIMPLE_C8, "prepared": PREPARED_C8}.get(mode)
            throughput(c8, "tps", "TPS", goal, "pgbouncer")
            rows.append(
                Row(
                    c8.label,
                    "proxy CPU µs per transaction",
                    {t: v for t, v in values(c8, "cpu_us_tx", 1).items() if t != "direct"},
                    _ratio(c8.median("gateway", "cpu_us_tx"), c8.median("pgbouncer", "cpu_us_tx")),
                )
            )
        c1 = by_key.get(f"select-{mode}-c1")
        if c1 is not None:
            throughput(c1, "tps", "TPS", None, "")
            base = c1.median("direct", "latency_ms")
            added = {t: c1.median(t, "latency_ms") - base for t in c1.targets}
            gw, pgb = added["gateway"], added["pgbouncer"]
            ok = gw <= ADDED_LATENCY * max(pgb, 0.0)
            rows.append(
                Row(
                    c1.label,
                    f"latency added over direct's {base:.3f} ms",
                    {t: f"{v:+.3f} ms" for t, v in added.items()},
                    _ratio(gw, pgb) if pgb > 0 else "n/a",
                    "",
                    f"added <= {ADDED_LATENCY}x pgbouncer's",
                    _check(gw, ok),
                )
            )
    if "connect" in by_key:
        c = by_key["connect"]
        throughput(c, "tps", "connections/s", CONNECT, "pgbouncer")
        rows.append(Row(c.label, "average connection time (ms)", values(c, "conn_ms", 2)))
    for key, goal in (("wide", WIDE_UNMASKED), ("wide-masked", WIDE_MASKED)):
        if key in by_key:
            c = by_key[key]
            throughput(c, "rows_s", "rows/s", goal, "pgbouncer")
            cpu = {t: fmt(c.median(t, "cpu_us_tx") / 1000, 0) for t in c.targets if t != "direct"}
            rows.append(Row(c.label, "proxy CPU ms per query", cpu))
    for test, goal in (("oltp_point_select", SYSBENCH_POINT), ("oltp_read_only", None)):
        c = by_key.get(f"sysbench-{test}")
        if c is not None:
            throughput(c, "tps", "TPS (prepared)", goal, "direct")
            rows[-1].values["pgbouncer"] = "--"  # no MySQL pooler to compare with
    if memory is not None:
        gw, pgb = memory.median("gateway", "kb_session"), memory.median("pgbouncer", "kb_session")
        rows.append(
            Row(
                memory.label,
                "KB of RSS per idle session",
                {
                    t: fmt(v, 1) if t not in memory.errors else "error"
                    for t, v in (("gateway", gw), ("pgbouncer", pgb))
                },
                _ratio(gw, pgb),
                "",
                f"<= {IDLE_KB:.0f} KB",
                _check(gw, gw <= IDLE_KB),
            )
        )
    rec = by_key.get("recording")
    if rec is not None:
        on, off = (rec.median(t, "cpu_ms_query") for t in ("rec-on", "rec-off"))
        label = "recording: whole result recorded"
        mb = rec.median("rec-on", "mb_s")
        per_query = rec.median("rec-on", "mb_query")
        rows += [
            Row(label, "MB/s written", {"gateway": f"{fmt(mb, 1)} ({fmt(per_query, 1)} MB/query)"}),
            Row(
                label,
                "rows/s, recording on (off)",
                {
                    "gateway": f"{fmt(rec.median('rec-on', 'rows_s'))} "
                    f"({fmt(rec.median('rec-off', 'rows_s'))})"
                },
                target="on/off "
                + _ratio(rec.median("rec-on", "rows_s"), rec.median("rec-off", "rows_s")),
            ),
            Row(
                label,
                "gateway CPU ms per query, on (off)",
                {"gateway": f"{fmt(on)} ({fmt(off)})"},
                target=f"recording: {100 * (on / off - 1):+.0f}% CPU"
                if off and not math.isnan(on / off)
                else "",
            ),
            Row(
                label,
                "gateway CPU ms per MB recorded",
                {"gateway": fmt((on - off) / per_query, 1) if per_query else "n/a"},
            ),
        ]
    return rows


def render_table(rows: list[Row]) -> str:
    head = ["scenario", "metric", *COLUMNS, "gw/pgbouncer", "gw/direct", "issue 9 target", "result"]
    out = [
        "| " + " | ".join(head) + " |",
        "|" + "---|---|" + "---:|" * (len(head) - 4) + "---|---|",
    ]
    for r in rows:
        cells = [r.scenario, r.metric, *(r.values.get(c, "") for c in COLUMNS)]
        cells += [
            r.gw_pgb,
            r.gw_direct,
            r.target,
            f"**{r.verdict}**" if r.verdict != "info" else "",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: short runs, small data")
    ap.add_argument(
        "--duration",
        type=float,
        help="seconds per case and target, split over the rounds (default 10; 2 with --quick)",
    )
    ap.add_argument("--rounds", type=int, help="rounds (default 5; 1 with --quick)")
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="SCENARIO",
        choices=[*SCENARIOS, *ALIASES],
        help="run only these scenarios: " + ", ".join([*SCENARIOS, *ALIASES]),
    )
    ap.add_argument("--scale", type=int, help="pgbench scale (default 10; 1 with --quick)")
    ap.add_argument("--rows", type=int, help="rows of the wide result (default 100,000)")
    ap.add_argument(
        "--sessions", type=int, help="idle sessions for memory (default 5,000; 200 with --quick)"
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also profile the gateway (py-spy, else cProfile) under pgbench -S -c 8",
    )
    ap.add_argument(
        "--profile-seconds", type=int, default=20, help="seconds per profile (default 20)"
    )
    ap.add_argument(
        "--profile-dir",
        type=Path,
        help="where profiles go, outside the repository (default: a new /tmp/gateway-profile-*)",
    )
    ap.add_argument("--json", type=Path, help="also write every raw sample here")
    args = ap.parse_args(argv)
    q = args.quick
    args.duration = args.duration if args.duration is not None else (2.0 if q else 10.0)
    args.rounds = args.rounds if args.rounds is not None else (1 if q else 5)
    args.scale = args.scale if args.scale is not None else (1 if q else 10)
    args.rows = args.rows if args.rows is not None else (20_000 if q else 100_000)
    args.sessions = args.sessions if args.sessions is not None else (200 if q else 5_000)
    chosen: set[str] = set()
    for name in args.only or SCENARIOS:
        chosen.update(ALIASES.get(name, (name,)))
    args.chosen = chosen
    if args.profile:
        if args.profile_dir is None:
            args.profile_dir = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
        args.profile_dir = args.profile_dir.resolve()
        if args.profile_dir.is_relative_to(REPO):
            ap.error(f"--profile-dir must be outside the repository ({REPO})")
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    return args


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """So `kill PID` tears the servers down like Ctrl-C does."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen: set[str] = args.chosen
    # Thousands of sessions need thousands of descriptors in here, the gateway and pgbouncer.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    per_run = max(1, round(args.duration / args.rounds))
    started = time.monotonic()
    load_before = os.getloadavg()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    profile_lines: list[str] = []
    memory: Case | None = None
    pg_version = "not started"  # only MySQL scenarios chosen
    with sigterm_as_interrupt(), bench_env() as bench, contextlib.ExitStack() as stack:
        world = setup(bench, stack, chosen, args.scale, args.rows, args.sessions, args.profile)
        cases = plan(world, chosen, args.rows)
        log(f"{len(cases)} cases x {args.rounds} rounds of {per_run}s per target")
        run_rounds(cases, args.rounds, per_run)
        if args.profile:
            profile_lines = profile_gateway(
                bench, world.pg["gateway"], REALISTIC, args.profile_dir, args.profile_seconds
            )
        if "memory" in chosen:
            memory = measure_memory(world, args.sessions)
        if bench.pg is not None:
            pg_version = bench.pg.psql("SHOW server_version;").strip()
        for ep in [*world.pg.values(), *world.rec.values()]:
            if ep.proc is not None and ep.proc.poll() is not None:
                raise RuntimeError(f"{ep.name} exited during the run ({ep.proc.returncode})")
    elapsed = time.monotonic() - started
    rows = build_rows(cases, memory)
    info = versions()
    command = " ".join(["uv run --no-sync python benchmarks/suite.py", *(argv or sys.argv[1:])])
    print(f"## Issue 9 suite ({when})")
    print()
    print(f"Command: `{command.strip()}`  ")
    print(
        f"Machine: {info['cpus']} CPUs, Linux {info['kernel']}; PostgreSQL {pg_version}, "
        f"{info['pgbouncer']}, {info['pgbench']}, "
        + (f"MariaDB {world.mariadb_version}, sysbench 4 x 10,000 rows, " if world.my else "")
        + f"Python {info['python']}.  "
    )
    print(
        f"Each cell: median of {args.rounds} round(s) x {per_run}s per target (wide and recording "
        f"cases at least 3s), targets interleaved, order reversed every other round; pgbench "
        f"scale {args.scale}, -j = min(c, 2); wide result {args.rows:,} rows; TLS on every client "
        f"leg, proxies use TLS upstream except the forwarder (passes the client's TLS through). "
        f"Total {elapsed:.0f}s; 1-minute load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after."
    )
    print()
    print(render_table(rows))
    print()
    noisy = [f"{c.label} {c.spread():.0%}" for c in cases if c.spread() > 0.15]
    if noisy:
        print(
            "Noisy cases (largest (max-min)/median of a target's rounds > 15%): " + ", ".join(noisy)
        )
        print()
    failed = [f"{c.label}/{t}" for c in cases for t in c.targets if c.median(t, "failed") > 0]
    if failed:
        print(
            f"Failed transactions (pgbench) or ignored errors (sysbench) in: {', '.join(failed)}."
        )
        print()
    errors = [
        f"{c.label}/{t}: {e}"
        for c in [*cases, *([memory] if memory else [])]
        for t, e in c.errors.items()
    ]
    if errors:
        print(f"Errors: {'; '.join(errors)}.")
        print()
    verdicts = [r.verdict for r in rows if r.verdict != "info"]
    print(
        f"Targets: {verdicts.count('PASS')} PASS, {verdicts.count('FAIL')} FAIL"
        + (" (none checked)" if not verdicts else "")
    )
    if profile_lines:
        print()
        print("\n".join(profile_lines))
    if args.json:
        raw = {
            "when": when,
            "command": command,
            "cases": {c.key: c.samples for c in cases},
            "memory": memory.samples if memory else None,
        }
        args.json.write_text(json.dumps(raw, indent=2))
    return 0 if all(v == "PASS" for v in verdicts) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        # Not 1, which means "a target failed".
        import traceback

        traceback.print_exc()
        sys.exit(2)
