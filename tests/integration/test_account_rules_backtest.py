"""Account rules in a backtest: the risk engine refuses what the simulated broker would refuse.

A fixed network that changes its mind often trades an ETF on NYSE minutes (synthetic bars,
flat at each close, so every round trip is a day trade) with $20,000: under the margin rules
no more than three day trades fall in any five business days, under the cash rules no buy
spends unsettled proceeds, and in both the refusals come from the risk engine, with their
reasons in the decision rows, so the broker never has to reject an order.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import torch

from core.account_rules import ACCOUNT_RULES, AccountType, trading_date, window_start
from core.costs import costs_for
from core.sessions import session_rule
from models.features import FeatureSpec
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from models.train import prepare_data
from tests.integration.test_costs_one_path import LIMITS, _etf
from trading.backtest import BacktestResult, run_backtest
from trading.ledger import Ledger


def _backtest(rules: AccountType, tmp_path: Path, **broker: Any) -> tuple[BacktestResult, Ledger]:
    bars, train_start, test_start, end = _etf()
    spec = FeatureSpec(
        symbols=("SPY",), timeframe="1Min", return_windows=(1, 5), vol_windows=(5,), volume_window=5
    )
    rule = session_rule("SPY", "1Min")
    data = prepare_data(bars, spec, (train_start, test_start), (test_start, end), rule=rule)
    torch.manual_seed(7)
    net = NestedLSTMQNet(
        len(spec.names()), Architecture(fast_hidden=8, slow_hidden=4, slow_stride=5, head_hidden=8)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(4.0)  # sharper Q-values: the policy changes its mind often
    net.eval()
    costs = costs_for("etf")
    name = "-".join([rules, *(f"{k}={v}" for k, v in broker.items())])
    ledger = Ledger(tmp_path / f"{name}.duckdb", mode="backtest")
    result = run_backtest(
        AgentPolicy(net, spec, data.scaler, {}),
        bars,
        model_id="m",
        run_id=f"rules-{name}",
        start=test_start,
        end=end,
        ledger=ledger,
        cash=20_000.0,
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        sell_fee_bps=costs.sell_fee_bps,
        limits=LIMITS,
        rule=rule,
        account_rules=ACCOUNT_RULES[rules],
        **broker,
    )
    return result, ledger


def _day_trades(fills: pl.DataFrame) -> list[date]:
    """The day of each day trade: a sell after a buy of the same New York day."""
    out: list[date] = []
    opened: date | None = None
    for side, ts in fills.sort("ts").select("side", "ts").iter_rows():
        day = trading_date(ts)
        if side == "buy":
            opened = day
        elif opened == day:
            out.append(day)
            opened = None
    return out


def _reasons(ledger: Ledger) -> list[str]:
    return [r["risk_reason"] for r in ledger.rows["decisions"] if r["risk_reason"]]


def _broker_rejections(ledger: Ledger) -> int:
    return sum(1 for r in ledger.rows["orders"] if r["status"] == "rejected")


def test_under_the_margin_rules_no_fourth_day_trade_in_five_days_below_25k(
    tmp_path: Path,
) -> None:
    ideal, _ = _backtest("ideal", tmp_path)
    assert len(_day_trades(ideal.fills)) > 3, "the policy makes too few day trades to test"

    result, ledger = _backtest("margin", tmp_path)
    trades = _day_trades(result.fills)
    assert trades
    windows: dict[date, int] = defaultdict(int)
    for day in {*trades}:
        windows[day] = sum(1 for d in trades if window_start(day, 5) <= d <= day)
    assert max(windows.values()) <= 3
    assert any(r.startswith("pattern day trader rule") for r in _reasons(ledger))
    assert _broker_rejections(ledger) == 0


def test_under_the_cash_rules_no_buy_spends_unsettled_proceeds(tmp_path: Path) -> None:
    result, ledger = _backtest("cash", tmp_path)
    reasons = _reasons(ledger)
    assert any("not settled yet" in r for r in reasons)
    assert _broker_rejections(ledger) == 0
    # Replayed on a plain cash book: a buy never costs more than the settled cash before it
    # (a fill at the next open may cost a little more than the check at the last close).
    cash, unsettled = 20_000.0, list[tuple[date, float]]()
    for side, qty, price, fee, ts in (
        result.fills.sort("ts").select("side", "qty", "price", "fee", "ts").iter_rows()
    ):
        day = trading_date(ts)
        settled = cash - sum(v for d, v in unsettled if d >= day)
        if side == "buy":
            assert qty * price + fee <= settled * 1.01 + 1.0
            cash -= qty * price + fee
        else:
            cash += qty * price - fee
            unsettled.append((day, qty * price - fee))  # settles the next business day
    assert result.fills.height > 0


def test_size_impact_and_partial_fills_reach_the_backtest_from_the_bars_volume(
    tmp_path: Path,
) -> None:
    """impact_bps makes each fill dearer by the square root of its share of the bar's volume;
    max_volume_share splits an order larger than that share over several bars."""
    plain, _ = _backtest("ideal", tmp_path)
    bars, *_ = _etf()
    volume = bars.filter(pl.col("symbol") == "SPY").get_column("volume")
    assert volume.null_count() == 0 and volume.min() > 0  # the synthetic bars carry volume
    dear, _ = _backtest("ideal", tmp_path, impact_bps=50.0)
    # The same first order, filled further from the bar's open (the decisions may part later).
    first, first_dear = (
        plain.fills.sort("ts").row(0, named=True),
        dear.fills.sort("ts").row(0, named=True),
    )
    assert (first["ts"], first["side"]) == (first_dear["ts"], first_dear["side"])
    worse = (
        first_dear["price"] > first["price"]
        if first["side"] == "buy"
        else (first_dear["price"] < first["price"])
    )
    assert worse, (first, first_dear)

    share = float(plain.fills.get_column("qty").max()) / float(volume.median()) / 4
    split, ledger = _backtest("ideal", tmp_path, max_volume_share=min(1.0, share))
    # Some order needed more than one bar: more fills than orders (ledger: one row per state).
    assert split.fills.height > len({r["client_order_id"] for r in ledger.rows["orders"]})
