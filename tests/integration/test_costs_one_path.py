"""Costs per asset class on the one execution path: train's evaluation, the baselines' book and the backtest pay the same.

A fixed network's positions over synthetic random-walk bars (an ETF on NYSE minutes and a
coin on 24/7 minutes, each bar opening away from the last close) are evaluated as `train`
evaluates them (evaluate_network), traded with core.baselines.trade_positions and backtested
with run_backtest (engine, simulated broker), each under the asset class's default costs
(core.costs): the same fills, the same fees, the same half-spread paid, the same return.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from core.baselines import trade_positions
from core.costs import FLAT_1_1, CostModel, costs_for
from core.sessions import session_rule
from models.features import FeatureSpec
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from models.train import evaluate_network, greedy_net_positions, positions_on_bars, prepare_data
from trading.backtest import run_backtest
from trading.ledger import Ledger
from trading.risk import RiskLimits

# So large that whole-share (or 1e-6 coin unit) rounding leaves under 1e-9 of it idle.
CASH = 1e11
LIMITS = RiskLimits(max_position_notional=1e13, daily_loss_limit=0.5)


def _bars(symbol: str, ts: list[datetime], seed: int) -> pl.DataFrame:
    """SYNTHETIC: a random walk whose bars open 1% (log sd) away from the previous close."""
    rng = np.random.default_rng(seed)
    close = 10.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0008, len(ts))))
    open_ = np.concatenate(([10.0], close[:-1])) * np.exp(rng.normal(0.0, 0.01, len(ts)))
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(ts),
            "ts": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            "open": open_,
            "high": np.maximum(open_, close) * 1.0002,
            "low": np.minimum(open_, close) * 0.9998,
            "close": close,
            "volume": rng.integers(100, 1000, len(ts)).astype(np.float64),
            "vwap": (open_ + close) / 2,
            "source": ["synthetic-test"] * len(ts),
        }
    )


def _etf() -> tuple[pl.DataFrame, datetime, datetime, datetime]:
    days = [datetime(2024, 6, d, tzinfo=UTC) for d in (3, 4, 5, 6, 7, 10, 11, 12)]
    # 13:30-20:00 UTC is the NYSE session in summer.
    ts = [d + timedelta(hours=13, minutes=30 + m) for d in days for m in range(390)]
    return (
        _bars("SPY", ts, 1),
        days[0],
        datetime(2024, 6, 7, tzinfo=UTC),
        datetime(2024, 6, 13, tzinfo=UTC),
    )


def _coin() -> tuple[pl.DataFrame, datetime, datetime, datetime]:
    start = datetime(2024, 6, 1, tzinfo=UTC)
    ts = [start + timedelta(minutes=m) for m in range(4 * 1440)]
    return (
        _bars("BTC/USD", ts, 4),
        start,
        datetime(2024, 6, 3, tzinfo=UTC),
        datetime(2024, 6, 5, tzinfo=UTC),
    )


def _spread_paid(fills: pl.DataFrame, costs: CostModel) -> float:
    """Half-spread paid: a fill's price is its reference moved by the slippage rate."""
    s = costs.slippage_rate
    notional = (fills["qty"] * fills["price"]).to_numpy()
    moved = np.where(fills["side"].to_numpy() == "buy", s / (1 + s), s / (1 - s))
    return float((notional * moved).sum())


@pytest.mark.parametrize(("asset_class", "make"), [("etf", _etf), ("crypto", _coin)])
def test_one_cost_model_for_evaluation_baseline_book_and_backtest(
    asset_class: str, make: object, tmp_path: Path
) -> None:
    costs = costs_for(asset_class)
    assert costs != FLAT_1_1
    bars, train_start, test_start, end = make()  # type: ignore[operator]
    symbol = str(bars["symbol"][0])
    spec = FeatureSpec(
        symbols=(symbol,),
        timeframe="1Min",
        return_windows=(1, 5),
        vol_windows=(5,),
        volume_window=5,
    )
    rule = session_rule(symbol, "1Min")
    data = prepare_data(bars, spec, (train_start, test_start), (test_start, end), rule=rule)
    torch.manual_seed(7)
    net = NestedLSTMQNet(
        len(spec.names()), Architecture(fast_hidden=8, slow_hidden=4, slow_stride=5, head_hidden=8)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(4.0)  # sharper Q-values: the policy changes its mind often enough
    net.eval()

    evaluated = evaluate_network(net, data.test, costs, data.test_bars, symbol)["agent"]

    assert data.test_bars is not None
    frame = data.test_bars.sort("ts")
    path = positions_on_bars(data.test, greedy_net_positions(net, data.test, costs), frame)
    assert 0 < path.mean() < 1, "the policy never trades: nothing is tested"
    book = trade_positions(
        frame["ts"],
        frame["close"].to_numpy(),
        path,
        symbol=symbol,
        cash=1.0,
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        sell_fee_bps=costs.sell_fee_bps,
        opens=frame["open"].to_numpy(),
    )

    result = run_backtest(
        AgentPolicy(net, spec, data.scaler, {}),
        bars,
        model_id="m",
        run_id=f"costs-{asset_class}",
        start=test_start,
        end=end,
        ledger=Ledger(tmp_path / "w.duckdb", mode="backtest"),
        cash=CASH,
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        sell_fee_bps=costs.sell_fee_bps,
        limits=LIMITS,
        rule=rule,
    )
    backtested = result.metrics["strategy"]
    bt_fills = result.fills

    # The same trades, the same fees, the same half-spread: the same total cost per unit of cash.
    assert bt_fills.height == book.fills.height == evaluated["trades"] > 4
    assert bt_fills["side"].to_list() == book.fills["side"].to_list()
    book_fees = float(book.fills["fee"].sum())
    assert evaluated["fees"] == pytest.approx(book_fees, abs=1e-12)
    assert float(bt_fills["fee"].sum()) / CASH == pytest.approx(book_fees, abs=1e-9)
    book_total = book_fees + _spread_paid(book.fills, costs)
    bt_total = (float(bt_fills["fee"].sum()) + _spread_paid(bt_fills, costs)) / CASH
    assert bt_total == pytest.approx(book_total, abs=1e-9)
    assert backtested["total_return"] == pytest.approx(
        evaluated["total_return"], rel=1e-9, abs=1e-9
    )

    # Where the costs come from: commission on every fill, the regulatory fee only on sells.
    for fills, scale in ((book.fills, 1.0), (bt_fills, CASH)):
        notional = fills["qty"] * fills["price"]
        rate = np.where(
            fills["side"].to_numpy() == "sell", costs.fee_rate + costs.sell_fee_rate, costs.fee_rate
        )
        assert np.allclose(fills["fee"].to_numpy(), notional.to_numpy() * rate, rtol=1e-12)
        if asset_class == "etf":
            assert float(fills.filter(pl.col("side") == "sell")["fee"].sum()) / scale > 0
            assert float(fills.filter(pl.col("side") == "buy")["fee"].sum()) == 0.0
