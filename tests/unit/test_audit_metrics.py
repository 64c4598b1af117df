"""The per-statement series: plain-number tallies exposed at scrape time (audit/metrics.py)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.audit.metrics import LATENCY_BUCKETS, GatewayMetrics


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_tallies_are_exposed_as_counters_per_target_decision_and_class() -> None:
    m = GatewayMetrics()
    pg, my = m.tally("app-pg"), m.tally("app-my")
    assert m.tally("app-pg") is pg  # one per target, shared by its sessions
    for _ in range(3):
        pg.statement("allow", "read")
    pg.statement("deny", "write")
    my.statement("allow", "read")
    pg.rows += 7
    pg.bytes += 120
    pg.errors += 2
    got = _samples(m.render())

    def statements(cls: str, decision: str, target: str) -> float:
        labels = (("class", cls), ("decision", decision), ("target", target))
        return got[("gateway_statements_total", labels)]

    assert statements("read", "allow", "app-pg") == 3
    assert statements("write", "deny", "app-pg") == 1
    assert statements("read", "allow", "app-my") == 1
    assert got[("gateway_rows_to_clients_total", (("target", "app-pg"),))] == 7
    assert got[("gateway_bytes_to_clients_total", (("target", "app-pg"),))] == 120
    assert got[("gateway_statement_errors_total", (("target", "app-pg"),))] == 2
    assert got[("gateway_rows_to_clients_total", (("target", "app-my"),))] == 0


def test_latency_buckets_match_prometheus_clients_histogram() -> None:
    # The same observations through prometheus_client's own Histogram give the same series:
    # bucket bounds ("le", values on a bound included), count and sum.
    rng = random.Random(7)
    values = [rng.choice(LATENCY_BUCKETS) for _ in range(50)]  # exactly on the bounds
    values += [rng.uniform(0, 90) ** 3 / 1e4 for _ in range(500)]
    m = GatewayMetrics()
    tally = m.tally("t")
    reference = CollectorRegistry()
    hist = Histogram(
        "gateway_statement_duration_seconds",
        "reference",
        ["target"],
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    ref = hist.labels("t")
    for v in values:
        tally.observe(v)
        ref.observe(v)
    ours = {
        k: v for k, v in _samples(m.render()).items() if k[0].startswith("gateway_statement_dur")
    }
    theirs = {
        k: v
        for k, v in _samples(generate_latest(reference)).items()
        if not k[0].endswith("_created")
    }
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert abs(ours[key] - value) < 1e-6, key
