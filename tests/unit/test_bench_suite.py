"""The benchmark suite's own logic: profile folding and the PASS/FAIL verdicts against issue
9's targets (benchmarks/suite.py, benchmarks/profiling.py). No servers: the cases are filled
with made-up samples."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def modules() -> Iterator[tuple[ModuleType, ModuleType]]:
    sys.path.insert(0, str(BENCH))
    try:
        import profiling
        import suite

        yield suite, profiling
    finally:
        sys.path.remove(str(BENCH))


def case(suite: ModuleType, key: str, samples: dict[str, list[dict[str, float]]]) -> object:
    c = suite.Case(key, key, key, list(samples), lambda t, s: {})
    c.samples = samples
    return c


def test_collapsed_stacks_fold_lines_into_functions(modules: tuple[ModuleType, ModuleType]) -> None:
    _, profiling = modules
    text = (
        'process 7:"python -m gateway run";<module> (gateway/__main__.py:3);'
        "Runner.run (asyncio/runners.py:118);data_received (/x/src/gateway/net/leg.py:50) 30\n"
        'process 7:"python -m gateway run";<module> (gateway/__main__.py:3);'
        "Runner.run (asyncio/runners.py:118);data_received (/x/src/gateway/net/leg.py:52);"
        "feed (/x/src/protocols/postgres/framing.py:10) 70\n"
        "not a stack line\n"
    )
    own, incl, total = profiling.collapsed_counts(text)
    assert total == 100
    leg = "data_received (gateway/net/leg.py)"
    assert own[leg] == 30 and incl[leg] == 100
    assert own["feed (protocols/postgres/framing.py)"] == 70
    assert incl["Runner.run (asyncio/runners.py)"] == 100
    assert not any(k.startswith("process") for k in incl)
    lines = profiling.render_profile("x", Path("/tmp/p"), 1000.0, (own, incl, total), 0.5)
    assert "| `feed (protocols/postgres/framing.py)` | 70.0 | 70.0 |" in lines
    assert any("50% of the samples" in line for line in lines)


def test_throughput_targets_use_the_medians(modules: tuple[ModuleType, ModuleType]) -> None:
    suite, _ = modules

    def s(tps: float, lat: float) -> dict[str, float]:
        return {"main": tps, "tps": tps, "latency_ms": lat, "cpu_us_tx": 10.0}

    prepared = case(
        suite,
        "select-prepared-c8",
        {
            "direct": [s(200, 1)],
            "pgbouncer": [s(100, 1), s(100, 1), s(10, 1)],  # median 100, not the outlier
            "forwarder": [s(90, 1)],
            "gateway": [s(99, 1), s(101, 1), s(100, 1)],
        },
    )
    simple = case(
        suite,
        "select-simple-c8",
        {
            "direct": [s(200, 1)],
            "pgbouncer": [s(100, 1)],
            "forwarder": [s(90, 1)],
            "gateway": [s(89, 1)],
        },
    )
    rows = suite.build_rows([prepared, simple], None)
    tps = {r.scenario: r for r in rows if r.metric == "TPS"}
    assert tps["select-prepared-c8"].verdict == "PASS"
    assert tps["select-prepared-c8"].gw_pgb == "1.00x"
    assert tps["select-simple-c8"].verdict == "FAIL"  # 0.89x < 0.9x
    assert tps["select-simple-c8"].target == ">= 0.9x pgbouncer"


def test_added_latency_is_compared_with_pgbouncers(modules: tuple[ModuleType, ModuleType]) -> None:
    suite, _ = modules

    def c1(pgb: float, gw: float) -> object:
        return case(
            suite,
            "select-simple-c1",
            {
                "direct": [{"main": 1, "tps": 1, "latency_ms": 0.100}],
                "pgbouncer": [{"main": 1, "tps": 1, "latency_ms": pgb}],
                "forwarder": [{"main": 1, "tps": 1, "latency_ms": 0.120}],
                "gateway": [{"main": 1, "tps": 1, "latency_ms": gw}],
            },
        )

    def verdict(pgb: float, gw: float) -> tuple[str, str]:
        row = next(r for r in suite.build_rows([c1(pgb, gw)], None) if "latency" in r.metric)
        return row.verdict, row.gw_pgb

    assert verdict(0.200, 0.250) == ("PASS", "1.50x")  # +0.15 ms vs +0.10 ms
    assert verdict(0.200, 0.260) == ("FAIL", "1.60x")
    # pgbouncer adding nothing measurable: the gateway must not add anything either.
    assert verdict(0.090, 0.110)[0] == "FAIL"
    assert verdict(0.090, 0.095) == ("PASS", "n/a")


def test_memory_and_missing_numbers(modules: tuple[ModuleType, ModuleType]) -> None:
    suite, _ = modules
    memory = case(
        suite,
        "memory",
        {
            "gateway": [{"main": 15.0, "kb_session": 15.0}],
            "pgbouncer": [{"main": 5, "kb_session": 5}],
        },
    )
    connect = case(
        suite,
        "connect",
        {
            "direct": [{"main": 1, "tps": 100.0}],
            "pgbouncer": [{"main": 1, "tps": 100.0}],
            "forwarder": [{"main": 1, "tps": 90.0}],
            "gateway": [],
        },
    )
    rows = suite.build_rows([connect], memory)
    mem = next(r for r in rows if r.scenario == "memory")
    assert (mem.verdict, mem.target, mem.gw_pgb) == ("PASS", "<= 16 KB", "3.00x")
    conn = next(r for r in rows if r.metric == "connections/s")
    # No samples for the gateway is a failure, never a pass.
    assert conn.values["gateway"] == "n/a" and conn.verdict == "FAIL"
    table = suite.render_table(rows)
    assert table.splitlines()[0].startswith("| scenario | metric | direct | pgbouncer |")
    assert "**FAIL**" in table and "**PASS**" in table
