"""Account rules (core.account_rules) in the simulated broker and the risk engine: buying power,
T+1 settlement of a cash account, the pattern-day-trader limit, and size-dependent slippage."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from adapters.clock import ManualClock
from adapters.protocols import Order, OrderRequest
from adapters.sim_broker import SimulatedBroker
from core.account_rules import (
    ACCOUNT_RULES,
    PDT_ENDED,
    AccountRules,
    account_rules,
    settlement_date,
    window_start,
)
from core.fills import fill_price, sized_slippage_rate
from trading.risk import BuyingPower, DayTrades, RiskEngine

CASH_RULES = ACCOUNT_RULES["cash"]
MARGIN_RULES = ACCOUNT_RULES["margin"]
MIN = timedelta(minutes=1)
MON = date(2024, 3, 4)  # Monday; NYSE opens 14:30 UTC until the DST change on 2024-03-10


def _at(day: date, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, 15, 0, tzinfo=UTC) + minute * MIN


def _broker(
    cash: float, rules: AccountRules | None, *, fee_bps: float = 0.0, slippage_bps: float = 0.0
) -> tuple[SimulatedBroker, ManualClock]:
    clock = ManualClock(_at(MON))
    sim = SimulatedBroker(clock, cash=cash, fee_bps=fee_bps, slippage_bps=slippage_bps, rules=rules)
    return sim, clock


def _trade(
    sim: SimulatedBroker,
    clock: ManualClock,
    side: str,
    qty: float,
    at: datetime,
    *,
    symbol: str = "SPY",
    price: float = 100.0,
) -> Order:
    """The last bar closed at `price`; the order is sent at `at` and fills at the bar from `at`."""
    clock.set(at)
    sim.mark(symbol, price)
    cid = f"{side}-{symbol}-{at.isoformat()}"
    sim.submit_order(OrderRequest(cid, symbol, side, qty))  # type: ignore[arg-type]
    sim.on_bar(symbol, at, price, price)
    order = sim.get_order_by_client_id(cid)
    assert order is not None
    return order


def _qty(sim: SimulatedBroker, symbol: str = "SPY") -> float:
    return sum(p.qty for p in sim.get_positions() if p.symbol == symbol)


# ---- the rule sets ---------------------------------------------------------------------


def test_the_presets_and_the_ideal_default() -> None:
    assert AccountRules() == ACCOUNT_RULES["ideal"] == account_rules("ideal")
    assert not AccountRules().enforced
    assert (CASH_RULES.account_type, CASH_RULES.settlement_days, CASH_RULES.pdt) == (
        "cash",
        1,
        False,
    )
    assert (MARGIN_RULES.margin_multiplier, MARGIN_RULES.pdt, MARGIN_RULES.settlement_days) == (
        2.0,
        True,
        0,
    )
    with pytest.raises(ValueError, match="unknown account rules"):
        account_rules("portfolio")  # type: ignore[arg-type]


def test_settlement_and_the_day_trade_window_count_nyse_business_days() -> None:
    assert settlement_date(date(2024, 3, 5), 1) == date(2024, 3, 6)
    assert settlement_date(date(2024, 3, 8), 1) == date(2024, 3, 11)  # Friday -> Monday
    assert settlement_date(date(2024, 7, 3), 1) == date(2024, 7, 5)  # over Independence Day
    assert settlement_date(date(2024, 3, 5), 0) == date(2024, 3, 5)
    assert window_start(date(2024, 3, 8), 5) == MON
    assert window_start(date(2024, 7, 8), 5) == date(2024, 7, 1)  # 07-04 is no business day


# ---- buying power ----------------------------------------------------------------------


def test_a_buy_beyond_the_cash_is_rejected_and_never_fills_in_a_cash_account() -> None:
    sim, clock = _broker(10_000.0, CASH_RULES, fee_bps=10.0, slippage_bps=5.0)
    # 100 shares at 100 with 5 bp slippage and a 10 bp fee cost 10,015.01 > 10,000.
    order = _trade(sim, clock, "buy", 100, _at(MON))
    assert order.status == "rejected" and order.filled_qty == 0
    assert "insufficient buying power" in sim.reject_reasons[order.client_order_id]
    assert sim.cash == 10_000.0 and sim.get_positions() == []
    assert _trade(sim, clock, "buy", 99, _at(MON, 1)).status == "filled"
    assert sim.cash >= 0


def test_the_ideal_default_still_lets_cash_go_below_zero() -> None:
    sim, clock = _broker(10_000.0, None, fee_bps=10.0, slippage_bps=5.0)
    assert _trade(sim, clock, "buy", 100, _at(MON)).status == "filled"
    assert sim.cash < 0 and sim.get_account().buying_power == 0.0


def test_open_buys_hold_their_buying_power() -> None:
    sim, _ = _broker(10_000.0, CASH_RULES)
    sim.mark("SPY", 100.0)
    first = sim.submit_order(OrderRequest("b1", "SPY", "buy", 60))
    second = sim.submit_order(OrderRequest("b2", "SPY", "buy", 60))
    assert (first.status, second.status) == ("accepted", "rejected")
    assert sim.get_account().buying_power == pytest.approx(4_000.0)


def test_a_margin_account_buys_twice_its_equity_in_stocks_but_coins_only_with_cash() -> None:
    sim, clock = _broker(20_000.0, MARGIN_RULES)
    assert sim.get_account().buying_power == pytest.approx(40_000.0)
    assert _trade(sim, clock, "buy", 300, _at(MON)).status == "filled"  # 30,000 of stock
    assert sim.cash == pytest.approx(-10_000.0)
    assert sim.get_account().buying_power == pytest.approx(2 * 20_000.0 - 30_000.0)
    coin = _trade(sim, clock, "buy", 0.1, _at(MON, 1), symbol="BTC/USD", price=60_000.0)
    assert coin.status == "rejected"  # coins are not marginable: no cash left for them
    # Under $2,000 of equity a margin account has 1x buying power.
    small, _ = _broker(1_500.0, MARGIN_RULES)
    assert small.get_account().buying_power == pytest.approx(1_500.0)


# ---- settlement ------------------------------------------------------------------------


def test_a_cash_account_spends_sale_proceeds_only_once_they_settle_the_next_business_day() -> None:
    sim, clock = _broker(10_000.0, CASH_RULES)
    assert _trade(sim, clock, "buy", 90, _at(MON)).status == "filled"  # 9,000; 1,000 left
    tue, wed = MON + timedelta(days=1), MON + timedelta(days=2)
    assert _trade(sim, clock, "sell", 90, _at(tue)).status == "filled"
    account = sim.get_account()
    assert account.cash == pytest.approx(10_000.0)
    assert sim.unsettled() == pytest.approx(9_000.0)
    assert account.buying_power == pytest.approx(1_000.0)
    refused = _trade(sim, clock, "buy", 50, _at(tue, 5))
    assert refused.status == "rejected" and _qty(sim) == 0
    assert "settle T+1" in sim.reject_reasons[refused.client_order_id]
    assert _trade(sim, clock, "buy", 10, _at(tue, 6)).status == "filled"  # settled cash
    # The next business day the proceeds have settled.
    assert sim.unsettled() == pytest.approx(9_000.0)
    clock.set(_at(wed))
    assert sim.unsettled() == 0.0
    assert _trade(sim, clock, "buy", 50, _at(wed)).status == "filled"


def test_coin_sales_and_margin_accounts_spend_proceeds_at_once() -> None:
    for rules, symbol, price in (
        (CASH_RULES, "BTC/USD", 50_000.0),
        (MARGIN_RULES, "SPY", 100.0),
    ):
        sim, clock = _broker(10_000.0, rules)
        qty = 9_000.0 / price
        assert _trade(sim, clock, "buy", qty, _at(MON), symbol=symbol, price=price).status == (
            "filled"
        )
        tue = MON + timedelta(days=1)
        _trade(sim, clock, "sell", qty, _at(tue), symbol=symbol, price=price)
        assert sim.unsettled() == 0.0
        again = _trade(sim, clock, "buy", qty, _at(tue, 5), symbol=symbol, price=price)
        assert again.status == "filled", (rules.account_type, symbol)


# ---- pattern day trading -----------------------------------------------------------------


def _round_trips(
    sim: SimulatedBroker, clock: ManualClock, days: list[date], *, symbol: str = "SPY"
) -> list[Order]:
    """A buy and a sell of 10 on each day; the sells' orders."""
    price = 100.0 if symbol == "SPY" else 50_000.0
    qty = 10.0 if symbol == "SPY" else 0.02
    sells = []
    for i, day in enumerate(days):
        _trade(sim, clock, "buy", qty, _at(day, 60 * i), symbol=symbol, price=price)
        sell = _trade(sim, clock, "sell", qty, _at(day, 60 * i + 30), symbol=symbol, price=price)
        sells.append(sell)
    return sells


def test_three_day_trades_pass_and_the_fourth_in_five_business_days_is_rejected_below_25k() -> None:
    sim, clock = _broker(20_000.0, MARGIN_RULES)
    days = [MON + timedelta(days=i) for i in range(4)]  # Monday .. Thursday
    sells = _round_trips(sim, clock, days)
    assert [o.status for o in sells] == ["filled", "filled", "filled", "rejected"]
    reason = sim.reject_reasons[sells[-1].client_order_id]
    assert "pattern day trader" in reason and "3 day trades" in reason
    assert sim.get_account().daytrade_count == 3
    assert _qty(sim) == 10  # the position is held overnight instead
    # Friday: bought yesterday, so the sale is no day trade.
    assert _trade(sim, clock, "sell", 10, _at(MON + timedelta(days=4))).status == "filled"


def test_the_day_trade_limit_does_not_apply_at_25k_equity_or_after_the_window() -> None:
    rich, clock = _broker(30_000.0, MARGIN_RULES)
    days = [MON + timedelta(days=i) for i in range(4)]
    assert [o.status for o in _round_trips(rich, clock, days)] == ["filled"] * 4
    assert rich.get_account().daytrade_count == 4

    sim, clock = _broker(20_000.0, MARGIN_RULES)
    _round_trips(sim, clock, days[:3])
    # The next Monday's window (Tue .. Mon) holds two of them: a third is allowed.
    next_mon = MON + timedelta(days=7)
    assert [o.status for o in _round_trips(sim, clock, [next_mon])] == ["filled"]
    assert sim.get_account().daytrade_count == 3


def test_coins_and_trades_after_the_rule_ended_are_not_limited() -> None:
    sim, clock = _broker(20_000.0, MARGIN_RULES)
    coin_sells = _round_trips(sim, clock, [MON] * 5, symbol="BTC/USD")
    assert all(o.status == "filled" for o in coin_sells)
    assert sim.get_account().daytrade_count == 0

    after = PDT_ENDED + timedelta(days=4)  # Monday 2026-06-08
    sim, clock = _broker(20_000.0, MARGIN_RULES)
    days = [after + timedelta(days=i) for i in range(4)]
    assert [o.status for o in _round_trips(sim, clock, days)] == ["filled"] * 4


def test_a_buy_while_a_sell_is_open_counts_as_a_possible_day_trade() -> None:
    sim, clock = _broker(20_000.0, MARGIN_RULES)
    _round_trips(sim, clock, [MON, MON + timedelta(days=1), MON + timedelta(days=2)])
    wed = MON + timedelta(days=2)
    _trade(sim, clock, "buy", 10, _at(wed, 60))  # held overnight
    thu = MON + timedelta(days=3)
    clock.set(_at(thu))
    sell = sim.submit_order(OrderRequest("s", "SPY", "sell", 10))
    buy = sim.submit_order(OrderRequest("b", "SPY", "buy", 10))
    assert (sell.status, buy.status) == ("accepted", "rejected")
    assert "pattern day trader" in sim.reject_reasons["b"]


# ---- slippage from the order's size ------------------------------------------------------


def test_square_root_impact_grows_with_the_orders_share_of_the_volume() -> None:
    base = 1e-4
    assert sized_slippage_rate(base, 0.0, 5_000, 10_000) == base
    assert sized_slippage_rate(base, 0.005, 5_000, None) == base
    small = sized_slippage_rate(base, 0.005, 100, 10_000) - base
    big = sized_slippage_rate(base, 0.005, 400, 10_000) - base
    assert small == pytest.approx(0.005 * 0.1) and big == pytest.approx(2 * small)


@pytest.mark.parametrize("impact_bps", [0.0, 20.0])
def test_the_brokers_fill_price_moves_with_the_order_size_only_with_impact(
    impact_bps: float,
) -> None:
    prices = []
    for qty in (100, 2_500):
        clock = ManualClock(_at(MON))
        sim = SimulatedBroker(clock, fee_bps=0.0, slippage_bps=2.0, impact_bps=impact_bps)
        sim.submit_order(OrderRequest("b", "SPY", "buy", qty))
        [fill] = sim.on_bar("SPY", _at(MON), 100.0, 100.0, volume=10_000)
        prices.append(fill.price)
    assert prices[0] == pytest.approx(100.0 * (1 + 2e-4 + impact_bps / 1e4 * 0.1))
    if impact_bps:
        assert prices[1] == pytest.approx(100.0 * (1 + 2e-4 + impact_bps / 1e4 * 0.5))
        assert prices[1] > prices[0]
    else:
        assert prices[0] == prices[1] == fill_price(100.0, "buy", 2e-4)


# ---- the risk engine refuses what the broker would refuse --------------------------------


def _check(engine: RiskEngine, *, current: float, target: float, equity: float) -> tuple:
    now = _at(MON + timedelta(days=3))
    return engine.check(
        now=now,
        bar_close=now,
        q_values=np.array([0.1, 0.2]),
        current_qty=current,
        target_qty=target,
        price=100.0,
        equity=equity,
    )


def test_the_risk_engine_refuses_a_sale_that_would_break_the_day_trade_limit() -> None:
    thu = MON + timedelta(days=3)
    trades = DayTrades(MARGIN_RULES)
    engine = RiskEngine(day_trades=trades)
    trades.refresh(count=3, opened_today=True, day=thu)
    verdict, target, reason = _check(engine, current=10, target=0, equity=20_000)
    assert (verdict, target) == ("rejected", 10)
    assert reason is not None and reason.startswith("pattern day trader rule: 3 day trades")
    # Allowed: equity at 25k, fewer day trades, a position not opened today, a buy.
    assert _check(engine, current=10, target=0, equity=25_000)[0] == "accepted"
    assert _check(engine, current=10, target=20, equity=20_000)[0] == "accepted"
    trades.refresh(count=2, opened_today=True, day=thu)
    assert _check(engine, current=10, target=0, equity=20_000)[0] == "accepted"
    trades.refresh(count=3, opened_today=False, day=thu)
    assert _check(engine, current=10, target=0, equity=20_000)[0] == "accepted"


def test_the_risk_engine_cuts_a_buy_to_the_settled_buying_power_and_says_why() -> None:
    power = BuyingPower()
    engine = RiskEngine(buying_power=power, buy_cost_rate=0.0015)
    power.refresh(1_000.0, unsettled=9_000.0)
    verdict, target, reason = _check(engine, current=0, target=50, equity=10_000)
    # 1,000 / (100 x 1.0015) = 9.98: 9 shares, slippage and fee included.
    assert (verdict, target) == ("reduced", 9)
    assert reason is not None and "9,000.00 of sale proceeds not settled yet" in reason
    power.refresh(0.0, unsettled=9_000.0)
    verdict, target, reason = _check(engine, current=0, target=50, equity=10_000)
    assert (verdict, target) == ("rejected", 0)
    assert reason is not None and "not settled yet" in reason and "nothing sent" in reason
