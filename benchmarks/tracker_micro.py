"""The PostgreSQL query tracker's cost per `pgbench -S -M prepared` transaction, in-process.

    uv run --no-sync python benchmarks/tracker_micro.py [--transactions 200000] [--repeat 3]

Feeds a `QueryTracker` the messages one prepared transaction exchanges (Bind, Execute, Sync;
BindComplete, the DataRow count, CommandComplete, ReadyForQuery) in a tight loop with an
observer that does nothing, and prints microseconds per transaction. Warm caches and no I/O:
a lower bound of what the tracker costs inside the running gateway (docs/performance.md, "The
floor of a Python proxy").
"""

from __future__ import annotations

import argparse
import struct
import time

from protocols.postgres.tracker import Execution, QueryTracker

_BIND, _EXECUTE, _SYNC = 0x42, 0x45, 0x53
_PARSE_COMPLETE, _BIND_COMPLETE = 0x31, 0x32
_COMMAND_COMPLETE, _READY_FOR_QUERY = 0x43, 0x5A


class _Observer:
    def execution_started(self, execution: Execution) -> None:
        pass

    def result_described(self, execution: Execution) -> None:
        pass

    def execution_finished(self, execution: Execution) -> None:
        pass


def per_transaction(n: int) -> float:
    tracker = QueryTracker(_Observer())
    tracker.parse(b"P0_1", b"SELECT abalance FROM pgbench_accounts WHERE aid = $1")
    tracker.backend(_PARSE_COMPLETE, b"")
    # Bind: portal "", statement P0_1, one text parameter, one binary result column.
    bind = b"\x00P0_1\x00" + struct.pack("!hhhi", 1, 0, 1, 5) + b"12345" + struct.pack("!hh", 1, 1)
    execute = b"\x00" + struct.pack("!i", 0)
    frontend, backend, head = tracker.frontend, tracker.backend, tracker.head_execution
    started = time.perf_counter()
    for _ in range(n):
        frontend(_BIND, bind)
        frontend(_EXECUTE, execute)
        frontend(_SYNC, b"")
        backend(_BIND_COMPLETE, b"")
        ex = head()
        assert ex is not None
        ex.rows += 1  # the driver counts a DataRow run
        backend(_COMMAND_COMPLETE, b"SELECT 1\x00")
        backend(_READY_FOR_QUERY, b"I")
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transactions", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs = [per_transaction(args.transactions) for _ in range(args.repeat)]
    print(
        f"QueryTracker: {min(runs):.2f} us per prepared transaction "
        f"(best of {args.repeat} x {args.transactions:,}; all: "
        + ", ".join(f"{r:.2f}" for r in runs)
        + ")"
    )


if __name__ == "__main__":
    main()
