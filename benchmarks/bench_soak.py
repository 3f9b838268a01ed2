"""Soak benchmark: a replayed trading week (5 NYSE sessions of SPY minutes) under seeded faults.

Kills, warehouse lock conflicts, 429s (some after the broker accepted), a silent bar
stream, a trade-updates stream that loses and repeats fill events, and partial fills (at most
0.1% of a bar's volume per order) are injected on a seed
(benchmarks.soak); at the end the warehouse must equal the simulated broker's record. SYNTHETIC bars and an untrained network that trades often.
"""

from __future__ import annotations

import logging
from pathlib import Path

from benchmarks.harness import Figure, benchmark
from benchmarks.soak import SoakConfig, run_soak


@benchmark("soak")
def bench_soak(scratch: Path) -> list[Figure]:
    workdir = scratch / "soak"
    workdir.mkdir(parents=True, exist_ok=True)
    # The faults log a warning each (no bar yet, rate-limited, outbox): thousands in a week.
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        result = run_soak(workdir, SoakConfig())
    finally:
        quiet.setLevel(level)
    faults = sum(result.faults.values())
    print(
        f"  {result.minutes:,} minutes, {result.decisions:,} decisions, {result.broker_orders} "
        f"orders, {result.broker_fills} fills in {result.wall_s:.0f} s; faults {result.faults} "
        f"(kill points {result.kill_points}, 429 after accept {result.rate_limited_after_accept}, "
        f"{result.withheld_bars} bars withheld, {result.outboxed_rows} rows via the outbox); "
        f"fills by stream {result.fills_by_stream}, by the poll {result.fills_by_rest} (the "
        f"stream lost {result.stream_lost}, repeated {result.stream_repeated}, replayed "
        f"{result.stream_replayed} events); {result.partially_filled_orders} orders filled in "
        f"parts ({result.broker_executions} executions)"
    )
    # The harness knows <=, >= and <: "== 0" is written "<= 0" for counts that cannot be negative.
    return [
        Figure("soak_duplicate_orders", result.duplicate_orders, "orders", "<= 0"),
        Figure("soak_lost_fills", result.lost_fills, "fills", "<= 0"),
        Figure("soak_position_drift", result.position_drift, "shares", "<= 0"),
        Figure("soak_unrecorded_orders", result.unrecorded_orders, "orders", "<= 0"),
        Figure("soak_minutes", result.minutes, "minutes", "-"),
        Figure("soak_faults", faults, "faults", "-"),
        Figure("soak_orders", result.broker_orders, "orders", "-"),
        Figure("soak_fills_by_stream", result.fills_by_stream, "fills", "-"),
        Figure("soak_fills_by_poll", result.fills_by_rest, "fills", "-"),
        Figure("soak_partially_filled_orders", result.partially_filled_orders, "orders", "-"),
        Figure("soak_wall_s", round(result.wall_s, 1), "s", "-"),
    ]
