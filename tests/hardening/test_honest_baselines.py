"""Honest baselines: close to close over the whole window, drawdown per bar, one implementation for train and backtest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from core.universe import EQUITY_SYMBOLS
from models.env import Costs, build_sessions
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from models.train import evaluate_network, prepare_data
from trading.backtest import run_backtest
from trading.baselines import MOMENTUM_WINDOW, momentum_positions
from trading.ledger import Ledger
from warehouse.bars import ingest_bar_frames, load_bars
from warehouse.db import connect

N_FEATURES = 3


def _net() -> NestedLSTMQNet:
    torch.manual_seed(0)
    net = NestedLSTMQNet(N_FEATURES, Architecture(fast_hidden=4, slow_hidden=2))
    net.eval()
    return net


def _daily(closes_by_session: list[list[float]]) -> pl.DataFrame:
    """Daily bars (ts, close, session, step, ret_next): a new session per list, with a gap between."""
    rows = []
    day = datetime(2024, 1, 2, 21, tzinfo=UTC)
    for s, closes in enumerate(closes_by_session):
        for i, c in enumerate(closes):
            rows.append({"ts": day, "close": c, "session": s, "step": i})
            day += timedelta(days=1)
        day += timedelta(days=3)
    frame = pl.DataFrame(rows).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    return frame.with_columns(
        (pl.col("close").shift(-1).log() - pl.col("close").log())
        .over("session")
        .fill_null(0.0)
        .alias("ret_next")
    )


def _evaluate(frame: pl.DataFrame, costs: Costs) -> dict[str, dict[str, float]]:
    sessions = build_sessions(frame, np.zeros((frame.height, N_FEATURES), dtype=np.float32))
    bars = frame.select("ts", "session", "step", "close")
    return evaluate_network(_net(), sessions, costs, bars, "SPY")


def test_buy_and_hold_is_close_to_close_across_the_gaps_between_sessions() -> None:
    # Each session is flat inside; all the move is between sessions (overnight / weekend).
    frame = _daily([[100.0, 100.0, 100.0], [120.0, 120.0, 120.0], [150.0, 150.0, 150.0]])
    costs = Costs(fee_bps=10.0, slippage_bps=5.0)
    bh = _evaluate(frame, costs)["buy_and_hold"]
    one_entry = (1 + costs.slippage_bps / 1e4) * (1 + costs.fee_bps / 1e4)
    # As the agent's: decided on the first close, filled at the next bar's open (here the
    # previous close, 100: the bars have no open), sized on the decision close (1/100 units).
    assert bh["total_return"] == pytest.approx(150.0 / 100.0 - one_entry, rel=1e-9)
    assert bh["trades"] == 1.0 and bh["exposure"] == pytest.approx(8 / 9)


def test_drawdown_is_measured_per_bar_not_on_session_totals() -> None:
    # The first session rises 50%, halves, and ends where it began: no loss as a session
    # total, a 50% fall bar to bar.
    frame = _daily([[100.0, 150.0, 75.0, 100.0], [100.0, 110.0]])
    bh = _evaluate(frame, Costs(0.0, 0.0))["buy_and_hold"]
    assert bh["max_drawdown"] == pytest.approx(0.5, rel=1e-12)


def test_momentum_looks_back_across_episodes_shorter_than_its_window() -> None:
    # A steady rise cut into 10-bar episodes: flat until MOMENTUM_WINDOW bars of history
    # exist in the window, then long to the end.
    n = 50
    frame = _daily([[100.0 * 1.01 ** (10 * s + i) for i in range(10)] for s in range(n // 10)])
    expected = (np.arange(n) >= MOMENTUM_WINDOW).astype(np.float64)
    assert momentum_positions(frame).tolist() == expected.tolist()
    momentum = _evaluate(frame, Costs(0.0, 0.0))["momentum_rule"]
    # Long from bar MOMENTUM_WINDOW's decision, held from the next bar (filled at its open).
    assert momentum["exposure"] == pytest.approx((n - MOMENTUM_WINDOW - 1) / n)


@pytest.mark.slow
def test_train_and_backtest_report_the_same_baselines_on_the_same_bars(tmp_path: Path) -> None:
    """One number, one implementation: held-out evaluation and backtest over one synthetic week."""
    start, end = datetime(2024, 5, 6, tzinfo=UTC), datetime(2024, 5, 11, tzinfo=UTC)
    warmup = start - timedelta(days=4)
    source = SyntheticBarSource(SyntheticConfig(seed=11))
    warehouse = tmp_path / "w.duckdb"
    ingest_bar_frames(source.fetch_bars(list(EQUITY_SYMBOLS), "1Min", warmup, end), warehouse, end)
    spec = FeatureSpec()
    with connect(warehouse) as con:
        bars = load_bars(con, list(spec.symbols), "1Min", warmup, end)
    data = prepare_data(bars, spec, (warmup, start), (start, end))
    torch.manual_seed(0)
    net = NestedLSTMQNet(len(spec.names()), Architecture(fast_hidden=8, slow_hidden=4))
    net.eval()
    costs = Costs(fee_bps=1.0, slippage_bps=1.0)
    held_out = evaluate_network(net, data.test, costs, data.test_bars, spec.traded)
    policy = AgentPolicy(
        net, spec, FeatureScaler.fit(compute_features(bars, spec), spec.names()), {}
    )
    result = run_backtest(
        policy,
        bars,
        model_id="untrained",
        run_id="bt-honest",
        start=start,
        end=end,
        ledger=Ledger(warehouse, mode="backtest"),
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
    )
    for train_key, backtest_key in (
        ("buy_and_hold", "buy_and_hold"),
        ("momentum_rule", "baseline"),
    ):
        ours, theirs = held_out[train_key], result.metrics[backtest_key]
        for metric in ("total_return", "sharpe", "max_drawdown", "trades", "exposure", "fees"):
            scale = 1.0 if metric != "fees" else 100_000.0  # the backtest's book starts at 100k
            assert ours[metric] * scale == pytest.approx(theirs[metric], rel=1e-9, abs=1e-12), (
                train_key,
                metric,
            )
    # Over several sessions the overnight moves count: the old per-session sum differed.
    assert data.test_bars is not None
    held_bars = data.test_bars.sort("ts")
    closes, opens = held_bars.get_column("close"), held_bars.get_column("open")
    first_fill = (1 + 1e-4) * (1 + 1e-4)
    # Decided on the first close (sized on it), filled at the second bar's open, as the agent.
    assert held_out["buy_and_hold"]["total_return"] == pytest.approx(
        (closes[-1] - opens[1] * first_fill) / closes[0], rel=1e-9
    )
