"""Walk-forward runs of the agent beside the baselines: per fold, train each seed on the past, trade the next window; out-of-sample return streams per bar."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from core.baselines import (
    BUY_AND_HOLD,
    FLAT,
    MOMENTUM,
    TREND,
    VOL_TARGETED,
    bar_opens,
    flat_positions,
    momentum_positions,
    periods_per_year,
    trade_positions,
    trend_positions,
    vol_target_positions,
)
from core.metrics import returns_from_equity
from core.sessions import SessionRule, timeframe_span
from models.dqn import DQNParams
from models.env import Costs
from models.evaluation import Fold, GateVerdict, compute_return_metrics, judge_candidate
from models.features import FeatureSpec
from models.qnet import Architecture
from models.train import greedy_net_positions, positions_on_bars, prepare_data, train_dqn

FloatArray = npt.NDArray[np.float64]

AGENT = "agent"
"""The policy key of the trained agent in every result frame."""
BASELINES: tuple[str, ...] = (BUY_AND_HOLD, FLAT, MOMENTUM, TREND, VOL_TARGETED)
"""The references every fold trades beside the agent (core.baselines), on the same bars and costs."""


def bars_per_year(symbol: str, timeframe: str, ts: pl.Series) -> float:
    """Bars of `timeframe` in a year: the day count of the symbol's market for daily bars
    (core.baselines.periods_per_year), else measured on the stored bars (a calendar-free
    count: hourly FX and minute stock bars differ in how many a day holds)."""
    if timeframe == "1Day":
        return periods_per_year(symbol)
    if ts.len() < 2:
        raise ValueError("at least two bars are needed to count bars per year")
    first, last = ts.min(), ts.max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    span_days = (last - first).total_seconds() / 86400.0
    return float((ts.len() - 1) / (span_days / 365.25)) if span_days > 0 else math.nan


def baseline_paths(frame: pl.DataFrame, per_year: float) -> dict[str, FloatArray]:
    """Each baseline's positions on every bar of `frame` (ts, close in time order), past bars only.

    Computed over the whole history, then cut to a fold's test window by the caller, so that
    a rule with a long look-back (the 200-bar trend) is not flat for the first months of
    every fold: it reads the same past the agent's features read.
    """
    return {
        BUY_AND_HOLD: np.ones(frame.height),
        FLAT: flat_positions(frame),
        MOMENTUM: momentum_positions(frame),
        TREND: trend_positions(frame),
        VOL_TARGETED: vol_target_positions(frame, per_year),
    }


def fold_ranges(
    ts: pl.Series, fold: Fold, timeframe: str
) -> tuple[tuple[datetime, datetime], tuple[datetime, datetime]]:
    """The half-open time ranges [start, end) of a fold's training and test bars (positions into `ts`)."""
    after = timeframe_span(timeframe)

    def end_of(position: int) -> datetime:
        # The first bar not included, or just after the last bar of the series.
        if position < ts.len():
            return ts[position]
        return ts[ts.len() - 1] + after

    return (ts[fold.train_start], end_of(fold.train_end)), (
        ts[fold.test_start],
        end_of(fold.test_end),
    )


@dataclass(frozen=True)
class WalkForwardPlan:
    """Everything a walk-forward run needs besides the bars: what is traded and how it is trained."""

    spec: FeatureSpec
    rule: SessionRule
    folds: Sequence[Fold]
    seeds: Sequence[int]
    arch: Architecture
    params: DQNParams
    costs: Costs
    budget_s: float | None = None
    """Seconds of training per seed and fold (None: the full `params.cycles`)."""
    sentiment: pl.DataFrame | None = None
    """(ts, symbol, sentiment) for a spec with sentiment=True (compute_features; None: 0)."""
    forecasts: pl.DataFrame | None = None
    """(ts, symbol, forecast) for a spec with forecast=True (compute_features; None: 0)."""


@dataclass(frozen=True)
class FoldResult:
    """One fold: each policy's per-bar positions and returns over its test bars."""

    fold: Fold
    ts: pl.Series
    baseline_positions: Mapping[str, FloatArray]
    baseline_returns: Mapping[str, FloatArray]
    agent_positions: Mapping[int, FloatArray] = field(default_factory=dict)
    """Per seed."""
    agent_returns: Mapping[int, FloatArray] = field(default_factory=dict)
    """Per seed."""


def _book_returns(
    ts: pl.Series, close: FloatArray, opens: FloatArray | None, path: FloatArray, costs: Costs
) -> FloatArray:
    """Per-bar simple returns of a position path traded from cash 1 (the fold's first bar included)."""
    book = trade_positions(
        ts,
        close,
        path,
        symbol="policy",
        cash=1.0,
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        sell_fee_bps=costs.sell_fee_bps,
        opens=opens,
    )
    return returns_from_equity(np.concatenate(([1.0], book.equity)))


def test_bars(
    bars: pl.DataFrame, symbol: str, test_range: tuple[datetime, datetime]
) -> pl.DataFrame:
    """The traded symbol's bars (ts, open, close) in a fold's test window, in time order."""
    frame = bars.filter(pl.col("symbol") == symbol).sort("ts")
    return frame.filter((pl.col("ts") >= test_range[0]) & (pl.col("ts") < test_range[1])).select(
        "ts", "open", "close"
    )


def run_fold(
    bars: pl.DataFrame,
    plan: WalkForwardPlan,
    fold: Fold,
    ts: pl.Series,
    per_year: float,
    on_seed: Callable[[Fold, int], None] | None = None,
) -> FoldResult:
    """Train every seed of `plan` on the fold's past and trade the fold's test window, beside the baselines.

    The scaler is fitted on the training bars only (prepare_data); the features of the test
    window read the bars before it, as a model trained just before it would. The agent's
    positions are mapped onto every test bar (an episode too short to play is flat) and
    traded with the same fill rule and costs as the baselines (core.baselines.trade_positions).
    """
    symbol = plan.spec.traded
    train_range, test_range = fold_ranges(ts, fold, plan.spec.timeframe)
    data = prepare_data(
        bars,
        plan.spec,
        train_range,
        test_range,
        sentiment=plan.sentiment,
        forecasts=plan.forecasts,
        rule=plan.rule,
    )
    history = bars.filter(pl.col("symbol") == symbol).sort("ts").select("ts", "open", "close")
    window = test_bars(bars, symbol, test_range)
    inside = (history.get_column("ts") >= test_range[0]) & (
        history.get_column("ts") < test_range[1]
    )
    mask = inside.to_numpy()
    close = window.get_column("close").cast(pl.Float64).to_numpy()
    opens = bar_opens(window)
    ref_pos = {k: v[mask] for k, v in baseline_paths(history, per_year).items()}
    ref_ret = {
        k: _book_returns(window["ts"], close, opens, v, plan.costs) for k, v in ref_pos.items()
    }
    assert data.test_bars is not None
    on_test = window.select("ts").join(
        data.test_bars.select("ts", "session", "step"), on="ts", how="left", maintain_order="left"
    )
    agent_pos: dict[int, FloatArray] = {}
    agent_ret: dict[int, FloatArray] = {}
    for seed in plan.seeds:
        module, _ = train_dqn(
            data.train, plan.arch, plan.params, plan.costs, seed, budget_s=plan.budget_s
        )
        played = greedy_net_positions(module.online, data.test, plan.costs)
        # Bars without a feature row (none after warm-up) hold flat.
        path = np.where(
            on_test.get_column("session").is_null().to_numpy(),
            0.0,
            positions_on_bars(data.test, played, on_test.fill_null(strategy="zero")),
        )
        agent_pos[seed] = path
        agent_ret[seed] = _book_returns(window["ts"], close, opens, path, plan.costs)
        if on_seed is not None:
            on_seed(fold, seed)
    return FoldResult(fold, window["ts"], ref_pos, ref_ret, agent_pos, agent_ret)


def _policy_rows(
    res: FoldResult, policy: str, seed: int, pos: FloatArray, ret: FloatArray
) -> pl.DataFrame:
    n = res.ts.len()
    return pl.DataFrame(
        {
            "fold": np.full(n, res.fold.index, dtype=np.int64),
            "label": [res.fold.label] * n,
            "ts": res.ts,
            "policy": [policy] * n,
            "seed": np.full(n, seed, dtype=np.int64),
            "position": np.asarray(pos, dtype=np.float64),
            "return": np.asarray(ret, dtype=np.float64),
        }
    )


def result_frame(results: Sequence[FoldResult]) -> pl.DataFrame:
    """Long frame of every fold's per-bar positions and returns: fold, label, ts, policy, seed, position, return.

    Baselines carry seed -1 (they do not depend on one).
    """
    parts: list[pl.DataFrame] = []
    for res in results:
        for key, pos in res.baseline_positions.items():
            parts.append(_policy_rows(res, key, -1, pos, res.baseline_returns[key]))
        for seed, pos in res.agent_positions.items():
            parts.append(_policy_rows(res, AGENT, seed, pos, res.agent_returns[seed]))
    if not parts:
        raise ValueError("no folds to collect")
    return pl.concat(parts)


AGENT_MEAN = "agent_mean"
"""The seeds' average per-bar return: one capital split equally over the seeds' agents. The
candidate the statistics judge; the per-seed rows show what a single training run gives."""


@dataclass(frozen=True)
class WalkForwardSummary:
    """Per-fold and overall metrics of every policy, and the statistical verdict on the agent."""

    folds: pl.DataFrame
    """fold, label, policy, seed (-1: baselines and the seed mean), and the metrics of
    models.evaluation.compute_return_metrics over the fold's test bars."""
    overall: pl.DataFrame
    """policy, seed and the same metrics over every fold's test bars, chained."""
    verdict: GateVerdict
    """models.evaluation.judge_candidate of the seed mean against every baseline."""
    n_trials: int


def _streams(frame: pl.DataFrame) -> dict[tuple[str, int], pl.DataFrame]:
    """(policy, seed) -> its rows in time order, with the seed mean added as (AGENT_MEAN, -1)."""
    agent = frame.filter(pl.col("policy") == AGENT)
    mean = (
        agent.group_by("fold", "label", "ts", maintain_order=True)
        .agg(pl.col("position").mean(), pl.col("return").mean())
        .with_columns(pl.lit(AGENT_MEAN).alias("policy"), pl.lit(-1, dtype=pl.Int64).alias("seed"))
        .select(frame.columns)
    )
    full = pl.concat([frame, mean]) if agent.height else frame
    out: dict[tuple[str, int], pl.DataFrame] = {}
    for (policy, seed), rows in full.sort("ts").group_by("policy", "seed", maintain_order=True):
        out[(str(policy), int(seed))] = rows
    return out


def summarize_walk_forward(
    frame: pl.DataFrame,
    per_year: float,
    *,
    n_trials: int,
    trial_sharpes: npt.ArrayLike | None = None,
    reps: int = 1000,
    seed: int = 0,
) -> WalkForwardSummary:
    """Metrics per fold and overall for every policy of `frame` (result_frame), and the verdict.

    The verdict is the promotion gate's test (models.evaluation.judge_candidate) of the seed
    mean against every baseline over all out-of-sample bars: SPA p-value, deflated Sharpe
    ratio over `n_trials` trials (their annualised Sharpes in `trial_sharpes`), drawdown.
    """
    streams = _streams(frame)
    fold_rows: list[dict[str, object]] = []
    overall_rows: list[dict[str, object]] = []
    for (policy, s), rows in streams.items():
        for (fold, label), part in rows.group_by("fold", "label", maintain_order=True):
            m = compute_return_metrics(part["return"], per_year, part["position"])
            fold_rows.append({"fold": fold, "label": label, "policy": policy, "seed": s, **m})
        m = compute_return_metrics(rows["return"], per_year, rows["position"])
        overall_rows.append({"policy": policy, "seed": s, **m})
    if (AGENT_MEAN, -1) not in streams:
        raise ValueError("the result frame holds no agent returns to judge")
    candidate = streams[(AGENT_MEAN, -1)]["return"].to_numpy()
    baselines = {p: streams[(p, -1)]["return"].to_numpy() for p in BASELINES if (p, -1) in streams}
    verdict = judge_candidate(
        candidate,
        None,
        baselines,
        n_trials,
        per_year,
        trial_sharpes=trial_sharpes,
        reps=reps,
        seed=seed,
        drawdown_baseline=BUY_AND_HOLD,
    )
    return WalkForwardSummary(
        pl.DataFrame(fold_rows).sort("fold", "policy", "seed"),
        pl.DataFrame(overall_rows).sort("policy", "seed"),
        verdict,
        n_trials,
    )


def seed_sharpes(frame: pl.DataFrame, per_year: float) -> dict[int, tuple[float, int]]:
    """Per agent seed: the annualised Sharpe ratio and bar count of its chained out-of-sample returns."""
    out: dict[int, tuple[float, int]] = {}
    agent = frame.filter(pl.col("policy") == AGENT).sort("ts")
    for (seed,), rows in agent.group_by("seed", maintain_order=True):
        m = compute_return_metrics(rows["return"], per_year)
        out[int(seed)] = (m["sharpe"], int(m["n_obs"]))
    return out


def verdict_columns(summary: WalkForwardSummary) -> dict[str, object]:
    """The verdict as the evaluations table stores it (warehouse.evaluations)."""
    v = summary.verdict
    return {
        "n_trials": summary.n_trials,
        "promoted": v.promoted,
        "spa_p": v.spa_p,
        "dsr": v.dsr,
        "sharpe": v.sharpe,
        "sharpe_diff": v.sharpe_diff.estimate,
        "sharpe_diff_lo": v.sharpe_diff.low,
        "sharpe_diff_hi": v.sharpe_diff.high,
        "reference": v.reference,
        "reasons": list(v.reasons),
    }
