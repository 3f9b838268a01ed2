"""SimulatedBroker: next-bar fills with slippage and fees, a long-only cash account, unique ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.clock import ManualClock
from adapters.protocols import Broker, DuplicateOrderError, OrderRequest
from adapters.sim_broker import SimulatedBroker

T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
MIN = timedelta(minutes=1)
FEE_BPS, SLIP_BPS = 10.0, 5.0


def _broker(cash: float = 100_000.0) -> tuple[SimulatedBroker, ManualClock]:
    clock = ManualClock(T0)
    return SimulatedBroker(clock, cash=cash, fee_bps=FEE_BPS, slippage_bps=SLIP_BPS), clock


def _buy_10_at_next_open(sim: SimulatedBroker, clock: ManualClock) -> None:
    """Bar T0 closes; a buy is sent at T0+1min; bar T0+1min opens at 101 and closes at 102."""
    sim.on_bar("SPY", T0, 100.0, 100.5)
    clock.set(T0 + MIN)
    sim.submit_order(OrderRequest("buy-1", "SPY", "buy", 10))
    sim.on_bar("SPY", T0 + MIN, 101.0, 102.0)


def test_it_is_a_broker() -> None:
    sim, _ = _broker()
    assert isinstance(sim, Broker)


def test_market_buy_fills_at_the_next_bars_open_plus_slippage_with_a_fee() -> None:
    sim, clock = _broker()
    sim.on_bar("SPY", T0, 100.0, 100.5)
    clock.set(T0 + MIN)
    order = sim.submit_order(OrderRequest("buy-1", "SPY", "buy", 10))
    assert order.status == "accepted" and order.filled_qty == 0.0
    # A bar that started before the order was sent does not fill it.
    assert sim.on_bar("SPY", T0, 100.0, 100.5) == []
    # Nor does another symbol's bar.
    assert sim.on_bar("QQQ", T0 + MIN, 400.0, 401.0) == []

    fills = sim.on_bar("SPY", T0 + MIN, 101.0, 102.0)

    price = 101.0 * (1 + SLIP_BPS / 1e4)
    fee = 10 * price * FEE_BPS / 1e4
    assert len(fills) == 1
    fill = fills[0]
    assert (fill.symbol, fill.side, fill.qty, fill.ts) == ("SPY", "buy", 10, T0 + MIN)
    assert fill.price == pytest.approx(price)
    assert fill.fee == pytest.approx(fee)
    assert fill.client_order_id == "buy-1" and fill.order_id == order.id
    assert sim.cash == pytest.approx(100_000.0 - 10 * price - fee)
    [pos] = sim.get_positions()
    assert (pos.symbol, pos.qty) == ("SPY", 10)
    assert pos.avg_entry_price == pytest.approx(price)
    assert pos.market_value == pytest.approx(10 * 102.0)  # marked at the bar's close
    done = sim.get_order_by_client_id("buy-1")
    assert done is not None
    assert (done.status, done.filled_qty) == ("filled", 10)
    assert done.filled_avg_price == pytest.approx(price)
    # The fill is reported once.
    assert sim.new_fills() == fills
    assert sim.new_fills() == []


def test_a_sell_fills_below_the_open_and_pays_a_fee() -> None:
    sim, clock = _broker()
    _buy_10_at_next_open(sim, clock)
    cash_before = sim.cash
    clock.set(T0 + 2 * MIN)
    sim.submit_order(OrderRequest("sell-1", "SPY", "sell", 4))
    [fill] = sim.on_bar("SPY", T0 + 2 * MIN, 103.0, 103.0)
    price = 103.0 * (1 - SLIP_BPS / 1e4)
    assert fill.price == pytest.approx(price)
    assert sim.cash == pytest.approx(cash_before + 4 * price * (1 - FEE_BPS / 1e4))
    [pos] = sim.get_positions()
    assert pos.qty == 6


def test_a_sell_larger_than_the_position_is_rejected() -> None:
    sim, clock = _broker()
    _buy_10_at_next_open(sim, clock)
    cash_before = sim.cash
    clock.set(T0 + 2 * MIN)
    sim.submit_order(OrderRequest("sell-too-much", "SPY", "sell", 11))

    fills = sim.on_bar("SPY", T0 + 2 * MIN, 103.0, 103.0)

    assert fills == []
    order = sim.get_order_by_client_id("sell-too-much")
    assert order is not None
    assert (order.status, order.filled_qty, order.filled_avg_price) == ("rejected", 0.0, None)
    assert sim.cash == cash_before
    assert sim.get_positions()[0].qty == 10
    assert [f.client_order_id for f in sim.new_fills()] == ["buy-1"]  # none for the sell


def test_a_sell_with_no_position_is_rejected() -> None:
    sim, _ = _broker()
    sim.submit_order(OrderRequest("naked", "SPY", "sell", 1))
    assert sim.on_bar("SPY", T0, 100.0, 100.0) == []
    order = sim.get_order_by_client_id("naked")
    assert order is not None and order.status == "rejected"
    assert sim.get_positions() == []
    assert sim.cash == 100_000.0


def test_duplicate_client_order_id_raises() -> None:
    sim, _ = _broker()
    first = sim.submit_order(OrderRequest("dup", "SPY", "buy", 1))
    with pytest.raises(DuplicateOrderError) as info:
        sim.submit_order(OrderRequest("dup", "SPY", "buy", 2))
    assert info.value.client_order_id == "dup"
    assert sim.orders() == [first]


@pytest.mark.parametrize("qty", [0.0, -1.0, float("nan")])
def test_a_non_positive_quantity_is_refused(qty: float) -> None:
    sim, _ = _broker()
    with pytest.raises(ValueError, match="positive"):
        sim.submit_order(OrderRequest("bad", "SPY", "buy", qty))
    assert sim.orders() == []


def test_close_all_positions_sells_everything_at_the_next_bar() -> None:
    sim, clock = _broker()
    _buy_10_at_next_open(sim, clock)
    sim.submit_order(OrderRequest("buy-qqq", "QQQ", "buy", 3))
    sim.on_bar("QQQ", T0 + MIN, 400.0, 400.0)
    clock.set(T0 + 2 * MIN)
    resting = sim.submit_order(OrderRequest("resting", "SPY", "buy", 5))

    closing = sim.close_all_positions()

    assert {(o.symbol, o.side, o.qty) for o in closing} == {("QQQ", "sell", 3), ("SPY", "sell", 10)}
    cancelled = sim.get_order_by_client_id(resting.client_order_id)
    assert cancelled is not None and cancelled.status == "canceled"
    # Nothing moves until the next bars.
    assert len(sim.get_positions()) == 2
    spy = sim.on_bar("SPY", T0 + 2 * MIN, 104.0, 104.0)
    qqq = sim.on_bar("QQQ", T0 + 2 * MIN, 410.0, 410.0)
    assert [(f.symbol, f.side, f.qty) for f in spy + qqq] == [
        ("SPY", "sell", 10),
        ("QQQ", "sell", 3),
    ]
    assert sim.get_positions() == []
    account = sim.get_account()
    assert account.equity == account.cash == sim.cash


def test_account_equity_is_cash_plus_marked_positions() -> None:
    sim, clock = _broker()
    assert sim.get_account().equity == 100_000.0
    _buy_10_at_next_open(sim, clock)
    account = sim.get_account()
    assert account.cash == sim.cash
    assert account.equity == pytest.approx(sim.cash + 10 * 102.0)
    assert account.buying_power == sim.cash and account.paper
    sim.mark("SPY", 90.0)
    assert sim.get_account().equity == pytest.approx(sim.cash + 10 * 90.0)


def test_cancel_order_stops_a_pending_fill() -> None:
    sim, _ = _broker()
    order = sim.submit_order(OrderRequest("c-1", "SPY", "buy", 1))
    sim.cancel_order(order.id)
    assert sim.on_bar("SPY", T0, 100.0, 100.0) == []
    after = sim.get_order_by_client_id("c-1")
    assert after is not None and after.status == "canceled"
    assert sim.get_positions() == []


def test_starting_cash_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SimulatedBroker(ManualClock(T0), cash=0.0)


def test_with_a_volume_cap_an_order_fills_over_several_bars_at_their_opens() -> None:
    clock = ManualClock(T0)
    sim = SimulatedBroker(
        clock, cash=100_000.0, fee_bps=FEE_BPS, slippage_bps=SLIP_BPS, max_volume_share=0.01
    )
    sim.on_bar("SPY", T0, 100.0, 100.5, volume=5_000)
    clock.set(T0 + MIN)
    order = sim.submit_order(OrderRequest("buy-1", "SPY", "buy", 120))
    # 1% of 7,000 = 70 shares at the first bar's open, then the remaining 50 at the next.
    first = sim.on_bar("SPY", T0 + MIN, 101.0, 102.0, volume=7_000)
    partial = sim.get_order_by_client_id("buy-1")
    assert partial is not None
    assert [f.qty for f in first] == [70] and partial.status == "partially_filled"
    assert partial.filled_qty == 70
    assert sim.on_bar("SPY", T0 + 2 * MIN, 103.0, 103.0, volume=50) == []  # 0.5 share: none
    second = sim.on_bar("SPY", T0 + 3 * MIN, 104.0, 104.0, volume=9_000)
    done = sim.get_order_by_client_id("buy-1")
    assert done is not None
    assert [f.qty for f in second] == [50] and done.status == "filled" and done.filled_qty == 120
    p1, p2 = (o * (1 + SLIP_BPS / 1e4) for o in (101.0, 104.0))
    assert done.filled_avg_price == pytest.approx((70 * p1 + 50 * p2) / 120)
    assert [f.fill_id for f in first + second] == [f"{order.id}-1", f"{order.id}-2"]
    assert sim.partially_filled_orders() == 1
    [pos] = sim.get_positions()
    assert pos.qty == 120 and pos.avg_entry_price == pytest.approx(done.filled_avg_price)

    # Canceled while partly filled: the filled part stays, the rest never fills.
    clock.set(T0 + 4 * MIN)
    sim.submit_order(OrderRequest("sell-1", "SPY", "sell", 100))
    sim.on_bar("SPY", T0 + 4 * MIN, 105.0, 105.0, volume=3_000)
    sell = sim.get_order_by_client_id("sell-1")
    assert sell is not None
    sim.cancel_order(sell.id)
    assert sim.on_bar("SPY", T0 + 5 * MIN, 105.0, 105.0, volume=9_000) == []
    canceled = sim.get_order_by_client_id("sell-1")
    assert canceled is not None and (canceled.status, canceled.filled_qty) == ("canceled", 30)


def test_without_a_volume_cap_orders_fill_whole_as_before() -> None:
    sim, clock = _broker()
    sim.on_bar("SPY", T0, 100.0, 100.5, volume=1.0)
    clock.set(T0 + MIN)
    order = sim.submit_order(OrderRequest("buy-1", "SPY", "buy", 500))
    [fill] = sim.on_bar("SPY", T0 + MIN, 101.0, 102.0, volume=1.0)
    assert fill.qty == 500 and fill.fill_id == f"{order.id}-1"
