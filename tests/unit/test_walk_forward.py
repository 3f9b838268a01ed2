"""models.walk_forward: fold ranges, baselines read the past before a fold, the seed mean and the verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core.baselines import BUY_AND_HOLD, TREND
from core.sessions import session_rule
from models.dqn import DQNParams
from models.env import Costs
from models.evaluation import Fold, walk_forward_folds
from models.features import FeatureSpec
from models.qnet import Architecture
from models.walk_forward import (
    AGENT,
    AGENT_MEAN,
    FoldResult,
    WalkForwardPlan,
    fold_ranges,
    result_frame,
    run_fold,
    summarize_walk_forward,
)


def _daily(n: int, growth: float = 1.001) -> pl.DataFrame:
    """Synthetic (labelled so) daily close-only bars rising by `growth` a day."""
    ts = [datetime(2001, 1, 1, 5, tzinfo=UTC) + timedelta(days=i) for i in range(n)]
    close = 100.0 * growth ** np.arange(n)
    return pl.DataFrame(
        {
            "symbol": "SYN",
            "timeframe": "1Day",
            "ts": ts,
            "open": None,
            "high": None,
            "low": None,
            "close": close,
            "volume": None,
            "trade_count": None,
            "vwap": None,
            "source": "synthetic",
        },
        schema_overrides={
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "volume": pl.Float64,
            "trade_count": pl.Int64,
            "vwap": pl.Float64,
        },
    )


def test_fold_ranges_leave_the_embargo_out_of_both_sides() -> None:
    ts = _daily(50)["ts"]
    fold = Fold(0, "bars 40-50", 0, 35, 40, 50)
    (train_start, train_end), (test_start, test_end) = fold_ranges(ts, fold, "1Day")
    assert (train_start, train_end) == (ts[0], ts[35])  # half-open: bar 35 is not trained on
    assert test_start == ts[40]
    assert test_end == ts[49] + timedelta(days=1)  # past the last bar


def test_baselines_read_the_history_before_the_fold() -> None:
    # Rising closes: the 200-bar trend rule is long on every test bar, because it reads the
    # bars before the fold; computed on the 100-bar test window alone it would stay flat.
    bars = _daily(500)
    ts = bars["ts"]
    fold = Fold(0, "bars 400-500", 0, 395, 400, 500)
    plan = WalkForwardPlan(
        FeatureSpec(symbols=("SYN",), timeframe="1Day"),
        session_rule("SYN", "1Day", "24/7"),
        [fold],
        [],  # baselines only: no agent trained
        Architecture(),
        DQNParams(cycles=1),
        Costs(1.0, 1.0),
    )
    res = run_fold(bars, plan, fold, ts, 365.0)
    assert res.ts.len() == 100
    assert res.baseline_positions[TREND].tolist() == [1.0] * 100
    # Buy-and-hold from cash 1: decided on the fold's first close, sized on it, filled at the
    # next bar's close (close-only bars) plus 1 bp slippage and a 1 bp fee; held to the end.
    close = 100.0 * 1.001 ** np.arange(400, 500)
    units = 1.0 / close[0]
    price = close[1] * (1 + 1e-4)
    cash = 1.0 - units * price * (1 + 1e-4)
    growth = float(np.prod(1.0 + res.baseline_returns[BUY_AND_HOLD]))
    assert growth == pytest.approx(cash + units * close[-1], rel=1e-12)


def _result(fold: Fold, ts: pl.Series, rng: np.random.Generator) -> FoldResult:
    n = ts.len()
    market = rng.normal(0.0003, 0.01, n)
    return FoldResult(
        fold,
        ts,
        {BUY_AND_HOLD: np.ones(n)},
        {BUY_AND_HOLD: market},
        {0: np.ones(n), 1: np.zeros(n)},
        {0: market, 1: np.zeros(n)},
    )


def test_seed_mean_is_the_average_stream_and_is_judged() -> None:
    ts = _daily(600)["ts"]
    folds = walk_forward_folds(ts, test_size=200, min_train=200)
    rng = np.random.default_rng(3)
    frame = result_frame([_result(f, ts[f.test_start : f.test_end], rng) for f in folds])
    summary = summarize_walk_forward(frame, 365.0, n_trials=2, reps=200)
    overall = summary.overall
    assert set(overall["policy"]) == {AGENT, AGENT_MEAN, BUY_AND_HOLD}
    market = frame.filter(pl.col("policy") == BUY_AND_HOLD)["return"].to_numpy()
    mean = overall.filter(pl.col("policy") == AGENT_MEAN)
    # Half the money in the market, half in cash.
    assert mean["total_return"][0] == pytest.approx(float(np.prod(1 + market / 2) - 1), rel=1e-12)
    assert summary.folds.filter(pl.col("policy") == AGENT).height == 2 * len(folds)
    # Half of buy-and-hold never beats it: the gate refuses.
    assert not summary.verdict.promoted
    assert summary.verdict.spa_p > 0.05
