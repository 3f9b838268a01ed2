"""Scenario 19, soak: a replayed hour under seeded kills, lock conflicts, 429s, a silent stream
a trade-updates stream that loses and repeats fill events, and partial fills.

At the end the warehouse must equal the simulated broker's record: no duplicate order, no
lost fill, no position drift -- and every fault kind must really have been injected, so
the test cannot pass by having nothing happen. The full week runs in `make bench` (soak).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

import benchmarks.soak as soak
import trading.session
from benchmarks.soak import KILL_POINTS, SoakConfig, run_soak

pytestmark = pytest.mark.slow

# Seed 2 at these rates injects every kind of fault, each kill point, 429s after the
# broker accepted, and a lock that sends ledger rows to the outbox (asserted below).
SMALL = SoakConfig(
    days=(date(2024, 6, 24),),
    minutes_per_day=60,
    seed=2,
    p_kill=0.12,
    p_lock=0.08,
    p_rate_limit=0.1,
    p_silence=0.05,
    p_stream_loss=0.2,
    p_stream_repeat=0.2,
)


def test_a_faulty_hour_leaves_the_ledger_equal_to_the_brokers_record(tmp_path: Path) -> None:
    result = run_soak(tmp_path, SMALL)

    assert result.duplicate_orders == 0
    assert result.lost_fills == 0
    assert result.position_drift == 0.0
    assert result.unrecorded_orders == 0  # every order the broker has is in the ledger
    assert result.stale_orders == 0  # none sent on a bar older than the stale-data limit
    # Not vacuous: the agent traded, and every fault kind happened.
    assert result.broker_orders >= 10 and result.broker_fills >= 10
    assert result.minutes == 60
    assert all(result.faults[kind] >= 1 for kind in soak.FAULT_KINDS), result.faults
    assert all(result.kill_points[p] >= 1 for p in KILL_POINTS), result.kill_points
    assert result.rate_limited_after_accept >= 1
    assert result.outboxed_rows >= 1  # a lock sent ledger rows to the outbox, merged later
    assert result.withheld_bars >= 1
    # Fills came by the trade-updates stream, which lost, repeated and replayed events; the
    # poller booked what it lost; every fill once (the figures above).
    assert result.fills_by_stream >= 1 and result.fills_by_rest >= 1
    assert result.fills_by_stream + result.fills_by_rest == result.broker_executions
    assert result.stream_lost >= 1 and result.stream_repeated >= 1 and result.stream_replayed >= 1
    # Orders filled over several bars (at most 0.1% of a bar's volume each), each part once.
    assert result.partially_filled_orders >= 1


def test_the_soak_catches_fills_lost_when_a_restart_does_not_recover_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same soak with the restart's order recovery switched off must fail its figures."""

    def no_recovery(*_args: Any, **_kwargs: Any) -> list[Any]:
        return []

    # The restarts' recovery is the trading session's (the soak runs TradingSession).
    monkeypatch.setattr(trading.session, "recover_orders", no_recovery)
    result = run_soak(tmp_path, SMALL)

    assert result.faults["kill"] >= 1
    assert result.lost_fills + result.unrecorded_orders >= 1
    assert result.position_drift > 0.0
