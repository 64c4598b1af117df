"""Micro-benchmark of the statement policy engine (no servers needed).

    uv run --no-sync python benchmarks/policy_micro.py [--iterations N] [--repeat R]

For a handful of statements, with a realistic policy active, prints microseconds per
``SessionPolicy.check_query`` call for:

* exact hit: the same text again (one dict lookup);
* fingerprint hit: a text seen only with other literal values, i.e. no parse (pgbench-style
  numbers go through the digit skeleton, string literals through the one-pass fingerprint);
* cold: a shape never seen (lex, split, sqlglot parse, classify, decide).

Each cell is the best of R runs of N calls (the machines are shared and noisy; the minimum
is the least disturbed run). Targets from issue 5: exact hit under 5 us, fingerprint hit a
few us.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.policy import PolicyEngine, PolicySpec, RuleSpec, SessionPolicy

POLICY = PolicySpec(
    name="app-developers",
    allow=("read", "write", "session"),
    deny=(
        "delete_without_where",
        "update_without_where",
        "file_access",
        "payroll",
    ),
    review=(),
    rules=(RuleSpec("payroll", tables=("hr.payroll", "hr.salaries")),),
)


@dataclass(frozen=True)
class Case:
    name: str
    dialect: str
    template: str  # formatted with one integer, i
    expected: str  # the action every variant must get

    def text(self, i: int) -> str:
        return self.template.format(i=i, j=i * 7 % 100000 + 1, d=i % 28 + 1)


CASES = (
    Case(
        "pgbench -S select",
        "postgres",
        "SELECT abalance FROM pgbench_accounts WHERE aid = {i};",
        "allow",
    ),
    Case(
        "pgbench update",
        "postgres",
        "UPDATE pgbench_accounts SET abalance = abalance + {j} WHERE aid = {i};",
        "allow",
    ),
    Case(
        "pgbench insert",
        "postgres",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
        "VALUES ({d}, 1, {i}, {j}, CURRENT_TIMESTAMP);",
        "allow",
    ),
    Case(
        "string literals",
        "postgres",
        "SELECT id, email FROM customers WHERE email = 'user{i}@example.com' AND status = 'active'",
        "allow",
    ),
    Case(
        "join + aggregate",
        "postgres",
        "SELECT c.id, sum(o.total) AS spent FROM customers c JOIN orders o "
        "ON o.customer_id = c.id WHERE c.created_at > '2024-01-{d:02d}' "
        "GROUP BY c.id ORDER BY spent DESC LIMIT {i}",
        "allow",
    ),
    Case(
        "denied (payroll)",
        "postgres",
        "SELECT * FROM hr.payroll WHERE employee_id = {i}",
        "deny",
    ),
    Case(
        "mysql select",
        "mysql",
        "SELECT * FROM orders WHERE customer_id = {i} AND status = 'open'",
        "allow",
    ),
)


def best_of(repeat: int, iterations: int, run: Callable[[int], float]) -> float:
    """Best microseconds per call over ``repeat`` runs of ``iterations`` calls."""
    return min(run(iterations) for _ in range(repeat)) * 1e6 / iterations


def measure(case: Case, iterations: int, repeat: int) -> tuple[float, float, float]:
    engine = PolicyEngine.build([POLICY], case.dialect)
    session = engine.session()
    warm = case.text(10**6)
    assert session.check_query(warm).action == case.expected, case.name

    def exact(n: int) -> float:
        check = session.check_query
        start = time.perf_counter()
        for _ in range(n):
            check(warm)
        return time.perf_counter() - start

    counter = iter(range(2 * 10**6, 10**9))

    def new_literal(n: int) -> float:
        texts = [case.text(next(counter)) for _ in range(n)]
        check = session.check_query
        start = time.perf_counter()
        for text in texts:
            check(text)
        elapsed = time.perf_counter() - start
        assert check(texts[-1]).action == case.expected
        return elapsed

    cold_iterations = max(20, iterations // 100)

    def cold(n: int) -> float:
        sessions: list[SessionPolicy] = [
            PolicyEngine.build([POLICY], case.dialect).session() for _ in range(n)
        ]
        text = case.text(42)
        start = time.perf_counter()
        for s in sessions:
            s.check_query(text)
        return time.perf_counter() - start

    return (
        best_of(repeat, iterations, exact),
        best_of(repeat, iterations, new_literal),
        best_of(repeat, cold_iterations, cold),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    print(f"policy engine micro-benchmark (Python {sys.version.split()[0]}), us per check_query")
    print(f"best of {args.repeat} runs of {args.iterations} calls (cold: 1/100 of that)\n")
    print(
        f"| {'statement':<20} | {'exact hit':>9} | {'fingerprint hit':>15} | {'cold parse':>10} |"
    )
    print(f"|{'-' * 22}|{'-' * 10}:|{'-' * 16}:|{'-' * 11}:|")
    worst_exact = worst_literal = 0.0
    for case in CASES:
        exact, literal, cold = measure(case, args.iterations, args.repeat)
        worst_exact = max(worst_exact, exact)
        worst_literal = max(worst_literal, literal)
        print(f"| {case.name:<20} | {exact:>9.2f} | {literal:>15.2f} | {cold:>10.1f} |")
    verdict = "PASS" if worst_exact < 5.0 else "FAIL"
    print(f"\nexact hit under 5 us: {verdict} (worst {worst_exact:.2f} us)")
    print(f"fingerprint hit, worst: {worst_literal:.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
