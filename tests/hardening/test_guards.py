"""The risk engine's guards, one at a time: reduce-only on stale data, the manual kill switch, logged rejections, broker time.

Engine-level tests use the rig of tests/unit/test_engine.py: PrecomputedQ -> RiskEngine ->
OrderManager -> SimulatedBroker -> Ledger, one hand-made bar a minute.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.alpaca_stream import GAP_FILL_SOURCE
from adapters.clock import ManualClock, OffsetClock, measure_offset
from models.env import FLAT, LONG
from tests.fakes.alpaca_stream import FakeAlpacaStreamServer, fake_alpaca_stream  # noqa: F401
from tests.integration.test_alpaca_stream import (
    MIN,
    T0,
    Collector,
    GapSource,
    make_stream,
    push_minute,
    rest_bars,
    running,
)
from tests.unit.test_engine import CASH, _q, _rig
from trading.risk import KILL_SWITCH_FILE, RiskDecision, RiskEngine, RiskLimits

NOW = datetime(2024, 3, 4, 15, 0, tzinfo=UTC)
DAY = date(2024, 3, 4)
GOOD_Q = np.array([0.1, 0.2, 0.3])
STALE = "the stock stream was silent for 90 s (watchdog)"


def _check(engine: RiskEngine, **kw: Any) -> RiskDecision:
    args: dict[str, Any] = {
        "now": NOW,
        "bar_close": NOW,
        "q_values": GOOD_Q,
        "current_qty": 0.0,
        "target_qty": 10.0,
        "price": 100.0,
        "equity": 100_000.0,
    }
    args.update(kw)
    return engine.check(**args)


# ---- 4: reduce-only while the data is stale ------------------------------------------------


@pytest.mark.parametrize(
    ("current", "target"),
    [(0.0, 10.0), (5.0, 6.0), (-5.0, -6.0), (5.0, -2.0), (-5.0, 1.0)],
    ids=["open", "add-long", "add-short", "flip-to-short", "flip-to-long"],
)
def test_reduce_only_rejects_every_order_that_adds_risk(current: float, target: float) -> None:
    engine = RiskEngine()
    engine.set_reduce_only(STALE)
    verdict = _check(engine, current_qty=current, target_qty=target)
    assert (verdict.verdict, verdict.target_qty) == ("rejected", current)
    assert verdict.reason == f"reduce-only: {STALE}"


@pytest.mark.parametrize(("current", "target"), [(10.0, 0.0), (10.0, 4.0), (-6.0, -1.0)])
def test_reduce_only_lets_reductions_through_and_says_why(current: float, target: float) -> None:
    engine = RiskEngine()
    engine.set_reduce_only(STALE)
    verdict = _check(engine, current_qty=current, target_qty=target)
    assert (verdict.verdict, verdict.target_qty) == ("accepted", target)
    assert verdict.reason == f"reduce-only: {STALE}"
    # Holding on is no order at all, and allowed too.
    assert _check(engine, current_qty=current, target_qty=current).verdict == "accepted"


def test_reduce_only_lifted_when_the_data_is_live_again() -> None:
    engine = RiskEngine()
    engine.set_reduce_only(STALE)
    assert _check(engine).verdict == "rejected"
    engine.set_reduce_only(None)
    assert _check(engine) == RiskDecision("accepted", 10.0, None)


def test_reduce_only_in_the_engine_sells_but_never_buys(tmp_path: Path) -> None:
    #                  buy   hold  (stale:) long  flat  long  (live:) long
    rig = _rig(tmp_path, _q(LONG, LONG, LONG, FLAT, LONG, LONG), allocation=0.5)
    rig.run([(100.0, 100.0)] * 2)
    rig.engine.risk.set_reduce_only(STALE)
    rig.run([(100.0, 100.0)] * 3, first=2)  # holds, sells, then the new buy is refused
    rig.engine.risk.set_reduce_only(None)
    rig.run([(100.0, 100.0)], first=5)
    bought = math.floor(CASH * 0.5 / 100.0)
    assert [side for side, _ in rig.orders()] == ["buy", "sell", "buy"]
    assert rig.orders()[:2] == [("buy", bought), ("sell", bought)]
    verdicts = [(d["action"], d["risk_verdict"], d["risk_reason"]) for d in rig.decisions()]
    note = f"reduce-only: {STALE}"
    assert verdicts == [
        ("long", "accepted", None),
        ("long", "accepted", None),
        ("long", "accepted", note),
        ("flat", "accepted", note),
        ("long", "rejected", note),
        ("long", "accepted", None),
    ]


# ---- 9: kill switches: zero new risk, flattening still works --------------------------------

FALLING = [(100.0, 100.0), (100.0, 99.0), (97.0, 95.0), (92.0, 90.0), (90.0, 89.0)]


def test_the_manual_kill_switch_file_blocks_buys_but_not_sells(tmp_path: Path) -> None:
    switch = tmp_path / KILL_SWITCH_FILE
    #                  buy   hold  (kill:) long  flat  long  (cleared:) long
    rig = _rig(tmp_path, _q(LONG, LONG, LONG, FLAT, LONG, LONG), allocation=0.5)
    rig.engine.risk.kill_file = switch
    rig.run([(100.0, 100.0)] * 2)
    switch.touch()
    rig.run([(100.0, 100.0)] * 3, first=2)
    switch.unlink()
    rig.run([(100.0, 100.0)], first=5)
    bought = math.floor(CASH * 0.5 / 100.0)
    assert [side for side, _ in rig.orders()] == ["buy", "sell", "buy"]
    assert rig.orders()[:2] == [("buy", bought), ("sell", bought)]
    decisions = rig.decisions()
    assert [d["risk_verdict"] for d in decisions] == ["accepted"] * 4 + ["rejected", "accepted"]
    refused = decisions[4]["risk_reason"]
    assert f"manual kill switch: {switch} exists (delete the file to clear it)" in refused
    assert "reduce-only" in refused
    assert decisions[5]["risk_reason"] is None
    assert not rig.engine.risk.killed  # the daily-loss switch was never tripped


def test_the_manual_kill_switch_with_flatten_sells_while_the_model_wants_long(
    tmp_path: Path,
) -> None:
    switch = tmp_path / KILL_SWITCH_FILE
    rig = _rig(tmp_path, _q(*[LONG] * 5), limits=RiskLimits(kill_action="flatten"), allocation=0.5)
    rig.engine.risk.kill_file = switch
    rig.run([(100.0, 100.0)] * 2)
    switch.touch()
    rig.run([(100.0, 100.0)] * 3, first=2)
    bought = math.floor(CASH * 0.5 / 100.0)
    assert rig.orders() == [("buy", bought), ("sell", bought)]
    assert rig.engine.book.qty["SPY"] == 0
    assert [d["risk_verdict"] for d in rig.decisions()] == ["accepted"] * 2 + ["reduced"] * 3


@pytest.mark.parametrize("kill_action", ["reduce-only", "flatten"])
def test_after_the_daily_loss_switch_no_order_adds_risk_and_flattening_sells(
    tmp_path: Path, kill_action: Any
) -> None:
    # Long from the first bar, the price falls 10% (past the 5% limit); the model then asks
    # for flat, then long again.
    q = _q(LONG, LONG, LONG, LONG, FLAT, LONG, LONG)
    limits = RiskLimits(daily_loss_limit=0.05, kill_action=kill_action)
    rig = _rig(tmp_path, q, limits=limits, allocation=0.9)
    rig.run([*FALLING, (89.0, 92.0), (92.0, 95.0)])
    assert rig.engine.risk.killed
    bought = math.floor(CASH * 0.9 / 100.0)
    assert rig.orders() == [("buy", bought), ("sell", bought)]
    assert rig.engine.book.qty["SPY"] == 0
    after = [d for d in rig.decisions() if d["risk_reason"] and "kill switch" in d["risk_reason"]]
    assert after and all(d["risk_verdict"] != "accepted" or d["action"] == "flat" for d in after)


# ---- 10: broken model output is rejected, and the reason logged ------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (math.nan, "model output contains NaN or inf"),
        (10 * RiskLimits().max_abs_q, "model output 1e+07 beyond +-1e+06"),
    ],
    ids=["nan", "10x-the-limit"],
)
def test_broken_model_output_is_rejected_with_the_reason_logged_and_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: float, reason: str
) -> None:
    q = _q(LONG, LONG)
    q[0, :, LONG] = bad
    rig = _rig(tmp_path, q)
    with caplog.at_level(logging.WARNING, logger="trading.engine"):
        rig.run([(100.0, 100.0)])
    assert rig.orders() == []
    [decision] = rig.decisions()
    assert (decision["risk_verdict"], decision["risk_reason"]) == ("rejected", reason)
    [record] = [r for r in caplog.records if r.name == "trading.engine"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert reason in message and decision["decision_id"] in message and "rejected" in message
    # The next, sound output trades as usual.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trading.engine"):
        rig.run([(100.0, 100.0)], first=1)
    assert [side for side, _ in rig.orders()] == ["buy"]
    assert [r for r in caplog.records if r.name == "trading.engine"] == []


def test_a_target_ten_times_the_position_limit_is_cut_to_the_limit_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 10x leverage from a broken allocation: the order is never sent at that size.
    limits = RiskLimits(max_position_notional=CASH)
    rig = _rig(tmp_path, _q(LONG), limits=limits, allocation=10.0)
    with caplog.at_level(logging.INFO, logger="trading.engine"):
        rig.run([(100.0, 100.0)])
    assert rig.orders() == [("buy", math.floor(CASH / 100.0))]
    [decision] = rig.decisions()
    assert decision["risk_verdict"] == "reduced"
    assert decision["risk_reason"] == "position capped at 100,000 notional"
    assert any("position capped at 100,000 notional" in r.getMessage() for r in caplog.records)


# ---- 12: broker time ---------------------------------------------------------------------


def test_measure_offset_and_offset_clock_read_the_brokers_time() -> None:
    local = ManualClock(NOW)
    broker_now = NOW + timedelta(seconds=90)
    offset = measure_offset(local, lambda: broker_now)
    assert offset == timedelta(seconds=90)
    clock = OffsetClock(local, offset)
    assert clock.now() == broker_now
    clock.sleep(30)  # a duration is the same on both clocks
    assert local.now() == NOW + timedelta(seconds=30)
    assert clock.now() == broker_now + timedelta(seconds=30)
    behind = measure_offset(local, lambda: NOW - timedelta(seconds=5))
    assert behind == -timedelta(seconds=35)
    with pytest.raises(ValueError, match="timezone"):
        measure_offset(local, lambda: datetime(2024, 3, 4, 15, 0))


def test_measure_offset_reads_the_local_clock_halfway_through_the_call() -> None:
    local = ManualClock(NOW)

    def slow_broker() -> datetime:
        local.advance(2.0)  # the request took 2 s: the answer belongs to its middle
        return NOW + timedelta(seconds=1)

    assert measure_offset(local, slow_broker) == timedelta(0)


# ---- 4: the stream says when its bars are not live ------------------------------------------


def test_the_stream_is_stale_from_a_drop_until_a_live_bar_and_marks_gap_filled_bars(
    fake_alpaca_stream: FakeAlpacaStreamServer,  # noqa: F811
) -> None:
    fake = fake_alpaca_stream
    clock = ManualClock(T0 + timedelta(seconds=30))
    source = GapSource(rest_bars("SPY", range(0, 10)))
    got = Collector()
    stream = make_stream(fake, gap_fill=source, clock=clock)
    stream.subscribe(["SPY"], got)
    with running(stream):
        fake.wait_subscribed("SPY")
        push_minute(fake, "SPY", 0)
        got.wait_rows(1)
        assert stream.stale_reason is None
        clock.set(T0 + 3 * MIN + timedelta(seconds=20))
        source.release.clear()  # hold the gap-fill: the stream is reconnected, not live yet
        assert fake.drop_connections() == 1
        fake.wait_subscribed("SPY", min_connections=2)
        assert stream.stale_reason is not None and "stock stream dropped" in stream.stale_reason
        source.release.set()
        got.wait_rows(3)  # minutes 1 and 2 from REST
        assert stream.stale_reason is not None  # back-filled bars are not live ones
        push_minute(fake, "SPY", 3)
        rows = got.wait_rows(4)
        assert stream.stale_reason is None

    assert rows["ts"].to_list() == [T0 + m * MIN for m in range(4)]
    assert rows["source"].to_list() == ["alpaca", GAP_FILL_SOURCE, GAP_FILL_SOURCE, "alpaca"]
