"""RiskEngine: every rule that can object to a target position, and the state it keeps."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from trading.risk import RiskDecision, RiskEngine, RiskLimits

NOW = datetime(2024, 3, 4, 15, 0, tzinfo=UTC)
DAY = date(2024, 3, 4)
GOOD_Q = np.array([0.1, 0.2, 0.3])


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


def test_a_plain_target_is_accepted_unchanged() -> None:
    verdict = _check(RiskEngine())
    assert verdict == RiskDecision("accepted", 10.0, None)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_q_values_are_rejected_and_the_position_kept(bad: float) -> None:
    verdict = _check(RiskEngine(), q_values=np.array([0.1, bad, 0.3]), current_qty=5.0)
    assert verdict.verdict == "rejected"
    assert verdict.target_qty == 5.0
    assert verdict.reason is not None and "NaN" in verdict.reason


def test_oversized_q_values_are_rejected() -> None:
    engine = RiskEngine(RiskLimits(max_abs_q=1_000.0))
    assert _check(engine, q_values=np.array([0.0, -999.0, 1.0])).verdict == "accepted"
    verdict = _check(engine, q_values=np.array([0.0, -1_500.0, 1.0]), current_qty=3.0)
    assert verdict.verdict == "rejected"
    assert verdict.target_qty == 3.0
    assert verdict.reason is not None and "beyond" in verdict.reason


@pytest.mark.parametrize("price", [0.0, -1.0, math.nan])
def test_no_valid_price_is_rejected(price: float) -> None:
    verdict = _check(RiskEngine(), price=price, current_qty=2.0)
    assert (verdict.verdict, verdict.target_qty) == ("rejected", 2.0)
    assert verdict.reason is not None and "price" in verdict.reason


def test_a_stale_bar_is_rejected_with_its_age() -> None:
    engine = RiskEngine(RiskLimits(stale_after_s=150.0))
    fresh = _check(engine, bar_close=NOW - timedelta(seconds=150))
    assert fresh.verdict == "accepted"
    stale = _check(engine, bar_close=NOW - timedelta(seconds=151), current_qty=4.0)
    assert (stale.verdict, stale.target_qty) == ("rejected", 4.0)
    assert stale.reason is not None
    assert "stale" in stale.reason and "151 s" in stale.reason


def test_max_position_notional_reduces_the_target_to_whole_shares() -> None:
    engine = RiskEngine(RiskLimits(max_position_notional=10_000.0))
    verdict = _check(engine, target_qty=500.0, price=30.0)
    assert verdict.verdict == "reduced"
    assert verdict.target_qty == math.floor(10_000.0 / 30.0) == 333
    assert verdict.reason is not None and "capped" in verdict.reason
    # Below the cap nothing changes.
    assert _check(engine, target_qty=333.0, price=30.0).verdict == "accepted"


def test_max_position_notional_keeps_a_coins_fraction() -> None:
    """A coin's target over the cap is cut to the cap in 1e-6 units, not to whole coins (0)."""
    engine = RiskEngine(RiskLimits(max_position_notional=10_000.0), fractional=True)
    verdict = _check(engine, target_qty=1.0, price=60_000.0)
    assert verdict.verdict == "reduced"
    assert verdict.target_qty == pytest.approx(math.floor(10_000.0 / 60_000.0 * 1e6) / 1e6)
    assert 0.1666 < verdict.target_qty <= 10_000.0 / 60_000.0


def test_orders_per_minute_limit_rejects_then_recovers_after_the_window() -> None:
    engine = RiskEngine(RiskLimits(max_orders_per_minute=3))
    for s in (0, 10, 20):
        assert _check(engine, now=NOW + timedelta(seconds=s)).verdict == "accepted"
        engine.record_order(NOW + timedelta(seconds=s))

    at = NOW + timedelta(seconds=30)
    blocked = _check(engine, now=at, bar_close=at, current_qty=1.0)
    assert (blocked.verdict, blocked.target_qty) == ("rejected", 1.0)
    assert blocked.reason is not None and "order rate" in blocked.reason
    # A decision that changes nothing needs no order and is not limited.
    assert _check(engine, now=at, bar_close=at, current_qty=10.0).verdict == "accepted"

    # 60 s after the first order it leaves the window: one order is allowed again.
    later = NOW + timedelta(seconds=60)
    assert _check(engine, now=later, bar_close=later).verdict == "accepted"


def test_daily_loss_kill_switch_reduce_only() -> None:
    engine = RiskEngine(RiskLimits(daily_loss_limit=0.05))
    engine.start_day(DAY, 100_000.0)
    assert _check(engine, equity=95_500.0).verdict == "accepted"
    assert not engine.killed

    increase = _check(engine, equity=94_000.0, current_qty=10.0, target_qty=20.0)
    assert engine.killed
    assert (increase.verdict, increase.target_qty) == ("rejected", 10.0)
    assert increase.reason is not None
    assert "kill switch" in increase.reason and "reduce-only" in increase.reason

    # Reductions still go through, and the switch stays on even if equity recovers.
    reduce = _check(engine, equity=94_000.0, current_qty=10.0, target_qty=0.0)
    assert (reduce.verdict, reduce.target_qty) == ("accepted", 0.0)
    again = _check(engine, equity=101_000.0, current_qty=0.0, target_qty=5.0)
    assert again.verdict == "rejected" and again.target_qty == 0.0


def test_kill_action_flatten_turns_any_target_into_zero() -> None:
    engine = RiskEngine(RiskLimits(daily_loss_limit=0.05, kill_action="flatten"))
    engine.start_day(DAY, 100_000.0)
    verdict = _check(engine, equity=90_000.0, current_qty=10.0, target_qty=10.0)
    assert (verdict.verdict, verdict.target_qty) == ("reduced", 0.0)
    assert verdict.reason is not None and "flatten" in verdict.reason
    bigger = _check(engine, equity=90_000.0, current_qty=10.0, target_qty=50.0)
    assert (bigger.verdict, bigger.target_qty) == ("reduced", 0.0)


def test_start_day_on_a_new_day_resets_the_switch() -> None:
    engine = RiskEngine(RiskLimits(daily_loss_limit=0.05))
    engine.start_day(DAY, 100_000.0)
    assert _check(engine, equity=90_000.0).verdict == "rejected"
    assert engine.killed

    engine.start_day(DAY, 90_000.0)  # the same day again changes nothing
    assert engine.killed

    engine.start_day(DAY + timedelta(days=1), 90_000.0)
    assert not engine.killed and engine.kill_reason is None
    # The loss is now measured from the new day's start.
    assert _check(engine, equity=86_000.0).verdict == "accepted"
    assert _check(engine, equity=85_000.0).verdict == "rejected"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_position_notional": 0.0}, "max_position_notional"),
        ({"max_position_notional": -5.0}, "max_position_notional"),
        ({"max_orders_per_minute": 0}, "max_orders_per_minute"),
        ({"daily_loss_limit": 0.0}, "daily_loss_limit"),
        ({"daily_loss_limit": 1.0}, "daily_loss_limit"),
        ({"daily_loss_limit": -0.1}, "daily_loss_limit"),
    ],
)
def test_risk_limits_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RiskLimits(**kwargs)


def test_an_increase_the_buying_power_cannot_pay_for_is_cut_then_refused() -> None:
    from trading.risk import BuyingPower

    power = BuyingPower()
    stocks = RiskEngine(buying_power=power)
    coins = RiskEngine(buying_power=power, fractional=True)
    # Unknown (no account looked at yet): not checked.
    assert _check(stocks, target_qty=1_000.0, price=100.0).verdict == "accepted"
    power.refresh(1_050.0)
    # 10 shares at 100 fit; they are spent from what is left.
    assert _check(stocks, current_qty=0.0, target_qty=10.0, price=100.0).verdict == "accepted"
    assert power.left == pytest.approx(50.0)
    # The next increase (another engine on the account) gets what is left, in whole shares...
    cut = _check(stocks, current_qty=10.0, target_qty=20.0, price=40.0)
    assert cut.verdict == "reduced" and cut.target_qty == 11.0
    assert "buying power: 50.00 left, the order needs 400.00" in str(cut.reason)
    # ...or in fractions for a coin; with nothing left the increase is refused.
    power.refresh(30.0)
    coin = _check(coins, current_qty=0.0, target_qty=1.0, price=60.0)
    assert coin.verdict == "reduced" and coin.target_qty == pytest.approx(0.5)
    refused = _check(stocks, current_qty=0.0, target_qty=5.0, price=100.0)
    assert refused == RiskDecision("rejected", 0.0, refused.reason)
    assert "nothing sent" in str(refused.reason)
    # A reduction needs no buying power.
    assert _check(stocks, current_qty=20.0, target_qty=0.0, price=100.0).verdict == "accepted"
