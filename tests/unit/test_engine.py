"""TradingEngine over hand-made bars: PrecomputedQ -> risk -> orders -> SimulatedBroker -> ledger."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.clock import ManualClock
from adapters.protocols import Fill, Order, OrderRequest
from adapters.sim_broker import SimulatedBroker
from models.env import FLAT, LONG
from trading.engine import Book, EngineConfig, PrecomputedQ, TradingEngine
from trading.ledger import Ledger
from trading.orders import OrderManager
from trading.risk import RiskEngine, RiskLimits

SYMBOL = "SPY"
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
DAY = date(2024, 3, 4)
MIN = timedelta(minutes=1)
FEE_BPS, SLIP_BPS = 1.0, 1.0
CASH = 100_000.0
ROW = np.zeros(1)


def _q(*actions: int) -> np.ndarray:
    """Q-values [steps, 2 positions, 3 actions] whose argmax is `actions[step]` in both positions."""
    q = np.zeros((len(actions), 2, 3))
    for step, action in enumerate(actions):
        q[step, :, action] = 1.0
    return q


@dataclass
class Rig:
    engine: TradingEngine
    sim: SimulatedBroker
    clock: ManualClock
    ledger: Ledger

    def run(
        self,
        bars: Sequence[tuple[float, float]],
        session_close: datetime | None = None,
        first: int = 0,
    ) -> list[str]:
        """Feed bars (open, close) one minute apart from T0 + first minutes, as the backtest does."""
        actions = []
        for i, (open_, close) in enumerate(bars, start=first):
            ts = T0 + i * MIN
            self.clock.set(ts + MIN)
            self.sim.on_bar(SYMBOL, ts, open_, close)
            self.engine.sync_fills()
            self.engine.mark(SYMBOL, close)
            actions.append(
                self.engine.decide(
                    now=ts + MIN,
                    bar_ts=ts,
                    price=close,
                    row=ROW,
                    step=i,
                    session_close=session_close,
                )
            )
        return actions

    def orders(self) -> list[tuple[str, float]]:
        return [(o.side, o.qty) for o in self.sim.orders()]

    def decisions(self) -> list[dict[str, Any]]:
        return self.ledger.rows["decisions"]


def _rig(
    tmp_path: Path,
    q: np.ndarray,
    *,
    limits: RiskLimits | None = None,
    allocation: float = 1.0,
    flatten_before_close_min: float = 0.0,
    fills: Callable[[SimulatedBroker], Callable[[], list[Fill]]] | None = None,
) -> Rig:
    clock = ManualClock(T0)
    sim = SimulatedBroker(clock, cash=CASH, fee_bps=FEE_BPS, slippage_bps=SLIP_BPS)
    ledger = Ledger(tmp_path / "unused.duckdb", mode="backtest")
    engine = TradingEngine(
        EngineConfig(
            run_id="run-1",
            mode="backtest",
            account="backtest:run-1",
            symbol=SYMBOL,
            model_id="m-1",
            feature_names=("x",),
            allocation=allocation,
            flatten_before_close_min=flatten_before_close_min,
        ),
        PrecomputedQ({"s1": q}),
        sim,
        RiskEngine(limits or RiskLimits()),
        OrderManager(sim),
        ledger,
        Book(cash=CASH),
        fills(sim) if fills is not None else sim.new_fills,
    )
    engine.begin_session("s1", DAY)
    return Rig(engine, sim, clock, ledger)


def _every_fill_every_time(sim: SimulatedBroker) -> Callable[[], list[Fill]]:
    """A fills source that repeats every fill it ever reported (as stream + REST polling can)."""
    seen: list[Fill] = []

    def fills() -> list[Fill]:
        seen.extend(sim.new_fills())
        return list(seen)

    return fills


def test_preferring_long_buys_once_sized_by_equity_and_allocation(tmp_path: Path) -> None:
    rig = _rig(tmp_path, _q(LONG, LONG, LONG, LONG), allocation=0.5, fills=_every_fill_every_time)

    actions = rig.run([(100.0, 100.5), (101.0, 102.0), (102.0, 101.0), (101.0, 103.0)])

    assert actions == ["long"] * 4
    qty = math.floor(CASH * 0.5 / 100.5)
    assert qty == 497
    assert rig.orders() == [("buy", qty)]
    assert rig.engine.orders_sent == 1
    # The fill came with the next bar, at its open plus slippage, and was booked once.
    [fill] = rig.ledger.rows["fills"]
    price = 101.0 * (1 + SLIP_BPS / 1e4)
    assert fill["ts"] == T0 + MIN
    assert fill["price"] == pytest.approx(price)
    assert rig.engine.book.qty[SYMBOL] == qty
    assert rig.engine.book.cash == pytest.approx(CASH - qty * price * (1 + FEE_BPS / 1e4))
    assert rig.engine.sync_fills() == []  # the source repeats it yet again: still once
    assert rig.engine.book.qty[SYMBOL] == qty
    assert len(rig.ledger.rows["fills"]) == 1
    # The book agrees with the broker.
    assert rig.engine.book.cash == pytest.approx(rig.sim.cash)
    assert rig.engine.book.equity() == pytest.approx(rig.sim.get_account().equity)
    # The order is in the ledger once, with its final status.
    orders = rig.ledger.frames()["orders"]
    assert orders.height == 1
    assert orders.get_column("status").to_list() == ["filled"]
    decisions = rig.decisions()
    assert [d["risk_verdict"] for d in decisions] == ["accepted"] * 4
    assert decisions[0]["decision_id"] == f"run-1|{SYMBOL}|{(T0 + MIN).isoformat()}"


def test_flat_preference_sends_no_order(tmp_path: Path) -> None:
    rig = _rig(tmp_path, _q(FLAT, FLAT, FLAT))
    assert rig.run([(100.0, 100.0)] * 3) == ["flat"] * 3
    assert rig.orders() == []
    assert rig.engine.decisions == 3


def test_nan_q_values_are_rejected_and_send_nothing(tmp_path: Path) -> None:
    q = _q(LONG, LONG)
    q[0, :, :] = np.nan
    rig = _rig(tmp_path, q)
    rig.run([(100.0, 100.0)])
    assert rig.orders() == []
    [decision] = rig.decisions()
    assert decision["risk_verdict"] == "rejected"
    assert "NaN" in decision["risk_reason"]


# Buy at 100 on the first bar, then the price falls 10%: far past a 5% daily loss limit.
FALLING = [(100.0, 100.0), (100.0, 99.0), (97.0, 95.0), (92.0, 90.0), (90.0, 89.0)]
RECOVERING = [(89.0, 92.0), (92.0, 95.0), (95.0, 99.0)]


def test_after_the_kill_switch_no_order_increases_the_position(tmp_path: Path) -> None:
    #               buy  hold hold hold sell  wants long again ->
    q = _q(LONG, LONG, LONG, LONG, FLAT, LONG, LONG, LONG)
    rig = _rig(tmp_path, q, limits=RiskLimits(daily_loss_limit=0.05), allocation=0.9)

    rig.run(FALLING + RECOVERING)

    assert rig.engine.risk.killed
    bought = math.floor(CASH * 0.9 / 100.0)
    # The reduction (the model chose flat) went through; nothing bought after the loss.
    assert rig.orders() == [("buy", bought), ("sell", bought)]
    assert rig.engine.book.qty[SYMBOL] == 0
    later = rig.decisions()[5:]
    assert [d["action"] for d in later] == ["long"] * 3
    assert [d["risk_verdict"] for d in later] == ["rejected"] * 3
    assert all("kill switch" in d["risk_reason"] for d in later)
    assert all("reduce-only" in d["risk_reason"] for d in later)


def test_kill_switch_flatten_closes_the_position_while_the_model_wants_long(
    tmp_path: Path,
) -> None:
    limits = RiskLimits(daily_loss_limit=0.05, kill_action="flatten")
    rig = _rig(tmp_path, _q(*[LONG] * 8), limits=limits, allocation=0.9)

    rig.run(FALLING + RECOVERING)

    bought = math.floor(CASH * 0.9 / 100.0)
    assert rig.orders() == [("buy", bought), ("sell", bought)]
    assert rig.engine.book.qty[SYMBOL] == 0
    verdicts = [d["risk_verdict"] for d in rig.decisions()]
    # Accepted until equity fell 5% (close 95: a loss of 4.5%; close 90: 9.9%), then reduced.
    assert verdicts[:3] == ["accepted"] * 3
    assert verdicts[3:] == ["reduced"] * 5


def test_a_new_day_lifts_the_kill_switch(tmp_path: Path) -> None:
    q = _q(LONG, LONG, LONG, LONG, FLAT, LONG, LONG, LONG)
    rig = _rig(tmp_path, q, limits=RiskLimits(daily_loss_limit=0.05), allocation=0.9)
    rig.run(FALLING + RECOVERING[:1])
    assert rig.engine.risk.killed
    rig.engine.risk.start_day(DAY + timedelta(days=1), rig.engine.book.equity())
    rig.run(RECOVERING[1:], first=6)
    assert not rig.engine.risk.killed
    assert [side for side, _ in rig.orders()] == ["buy", "sell", "buy"]


def test_flatten_before_close_makes_the_last_decision_go_flat(tmp_path: Path) -> None:
    bars = [(100.0, 100.0), (100.0, 101.0), (101.0, 102.0), (102.0, 103.0), (103.0, 104.0)]
    close = T0 + len(bars) * MIN  # the last bar ends as the session closes
    rig = _rig(tmp_path, _q(*[LONG] * 5), allocation=0.5, flatten_before_close_min=1.0)

    rig.run(bars, session_close=close)

    bought = math.floor(CASH * 0.5 / 100.0)
    assert rig.orders() == [("buy", bought), ("sell", bought)]
    reasons = [d["risk_reason"] for d in rig.decisions()]
    # The decision one minute before the close sells, so the sell fills inside the session;
    # the last one overrides the model's "long" again, recorded though nothing moves.
    assert reasons == [None, None, None, "flatten before the close", "flatten before the close"]
    sells = [f for f in rig.ledger.rows["fills"] if f["side"] == "sell"]
    assert [f["ts"] for f in sells] == [T0 + 4 * MIN]
    assert sells[0]["ts"] < close
    assert rig.engine.book.qty[SYMBOL] == 0


def test_without_flatten_the_position_is_held_into_the_close(tmp_path: Path) -> None:
    bars = [(100.0, 100.0), (100.0, 101.0), (101.0, 102.0)]
    rig = _rig(tmp_path, _q(*[LONG] * 3), allocation=0.5, flatten_before_close_min=0.0)
    rig.run(bars, session_close=T0 + len(bars) * MIN)
    assert [side for side, _ in rig.orders()] == ["buy"]
    assert rig.engine.book.qty[SYMBOL] == math.floor(CASH * 0.5 / 100.0)


def test_an_open_order_blocks_a_second_one(tmp_path: Path) -> None:
    rig = _rig(tmp_path, _q(LONG, LONG), allocation=0.5)
    rig.run([(100.0, 100.0)])
    assert rig.engine.open_orders  # the buy waits for the next bar
    # The next decision comes before that bar has filled the buy (no on_bar in between):
    # the book is still flat and the model still wants long, yet no second buy is sent.
    rig.clock.set(T0 + 2 * MIN)
    rig.engine.decide(
        now=T0 + 2 * MIN, bar_ts=T0 + MIN, price=100.0, row=ROW, step=1, session_close=None
    )
    assert rig.orders() == [("buy", 500)]
    assert rig.engine.orders_sent == 1
    pending: list[Order] = [o for o in rig.sim.orders() if o.status == "accepted"]
    assert len(pending) == 1


class _RefusingBroker(SimulatedBroker):
    """Refuses the first order like Alpaca's 403 'insufficient buying power', then behaves."""

    refused = 0

    def submit_order(self, request: OrderRequest) -> Order:
        if self.refused == 0:
            self.refused += 1
            raise RuntimeError("Alpaca answered 403 to POST /v2/orders: insufficient buying power")
        return super().submit_order(request)


def test_a_broker_rejection_is_recorded_and_the_session_goes_on(tmp_path: Path) -> None:
    rig = _rig(tmp_path, _q(LONG, LONG, LONG))
    broker = _RefusingBroker(rig.clock, cash=CASH, fee_bps=FEE_BPS, slippage_bps=SLIP_BPS)
    rig.engine.broker = broker
    rig.engine.orders = OrderManager(broker)
    rig.engine._fills = broker.new_fills
    rig.sim = broker

    actions = rig.run([(100.0, 100.0), (100.0, 100.0), (100.0, 100.0)])

    assert actions == ["long"] * 3
    orders = rig.ledger.frames()["orders"].sort("submitted_at")
    # The refused order is in the ledger as rejected (no broker id); the next minute's went through.
    assert orders.get_column("status").to_list() == ["rejected", "filled"]
    assert orders.get_column("broker_order_id").to_list()[0] is None
    assert rig.engine.book.qty[SYMBOL] > 0
