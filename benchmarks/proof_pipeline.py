"""Leakage proof through the whole pipeline: random-walk bars -> ingest -> warehouse -> features -> scaler -> walk-forward training -> out-of-sample returns after costs, with a planted look-ahead as the control it must catch."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from adapters.random_walk import RandomWalkConfig, random_walk_bars
from adapters.synthetic import named_rng
from core.sessions import session_rule
from models.dqn import DQNParams
from models.env import Costs
from models.evaluation import (
    compute_return_metrics,
    judge_candidate,
    newey_west_mean_test,
    walk_forward_folds,
)
from models.features import FeatureSpec
from models.qnet import Architecture
from models.walk_forward import AGENT, WalkForwardPlan, bars_per_year, result_frame, run_fold
from warehouse.bars import ingest_bar_frames, load_bars
from warehouse.db import connect

SYMBOL = "RWALK"
"""The random walk's ticker: an equity on the NYSE calendar to the session rule and costs."""

PASS, LEAK, INCONCLUSIVE, LOSS = "pass", "leak detected", "inconclusive", "fail: significant loss"
"""The proof's verdicts. LOSS: significantly below zero, which costs alone should not do."""


@dataclass(frozen=True)
class ProofBudget:
    """How much history and training each seed gets; deterministic (cycles, not seconds)."""

    first_year: int = 2014
    last_year: int = 2020
    """Seven years of bars per seed."""
    first_test_year: int = 2017
    """Yearly test folds from here (expanding training windows before each)."""
    min_train_bars: int = 500
    embargo_bars: int = 5
    cycles: int = 400
    """Training cycles per fold (one cycle = one episode of 63 daily bars played)."""
    fee_bps: float = 1.0
    slippage_bps: float = 1.0


@dataclass(frozen=True)
class SeedOutcome:
    """One seed's walk through the pipeline: the agent's chained out-of-sample daily returns."""

    seed: int
    mean_return: float
    """Mean daily simple return after costs over every test bar of every fold."""
    exposure: float
    """Share of test bars held long."""
    sharpe: float
    n_obs: int
    ingested: int
    """Bars the warehouse accepted (the ingest path's validation and upsert)."""
    promoted: bool = False
    """Whether the promotion gate (judge_candidate, one trial) would promote this agent over the
    baselines on its out-of-sample bars: a random-walk agent promoted is a false promotion."""


@dataclass(frozen=True)
class ProofResult:
    """The verdict over seeds: t of the per-seed mean returns (seeds are independent walks)."""

    verdict: str
    t_stat: float
    mean_return: float
    mean_exposure: float
    seeds: list[SeedOutcome] = field(default_factory=list)
    leak: bool = False

    @property
    def promoted_share(self) -> float:
        """Share of the seeds' agents the promotion gate would promote over the baselines."""
        return sum(o.promoted for o in self.seeds) / len(self.seeds) if self.seeds else 0.0

    def line(self) -> str:
        kind = "leaky control" if self.leak else "random walk"
        promoted = sum(o.promoted for o in self.seeds)
        return (
            f"{kind}: {self.verdict} over {len(self.seeds)} seeds; t = {self.t_stat:.2f}, "
            f"mean daily return {self.mean_return * 1e4:.2f} bp, exposure {self.mean_exposure:.0%}; "
            f"the gate promotes {promoted} of {len(self.seeds)}"
        )


def judge(
    mean_returns: Sequence[float], exposures: Sequence[float], min_exposure: float = 0.1
) -> tuple[str, float]:
    """The verdict and the t statistic of the per-seed mean returns (one-sample, lags 0).

    An agent that barely trades proves nothing: mean exposure below `min_exposure` is
    'inconclusive' whatever the returns. Otherwise t > 2 is a leak (the pipeline let the
    future in), t < -2 a significant loss, and |t| <= 2 a pass.
    """
    test = newey_west_mean_test(np.asarray(mean_returns, dtype=np.float64), lags=0)
    # Every seed flat: no variance, no t; and no trading, so inconclusive below anyway.
    t = 0.0 if math.isnan(test.t_stat) else float(test.t_stat)
    if not float(np.mean(exposures)) >= min_exposure:
        return INCONCLUSIVE, t
    if t > 2.0:
        return LEAK, t
    if t < -2.0:
        return LOSS, t
    return PASS, t


def noise_inputs(seed: int, ts: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Random sentiment and forecasts on every bar: inputs the agent sees that carry nothing."""
    n = ts.len()
    sentiment = np.tanh(named_rng(seed, "proof:sentiment").normal(0.0, 1.0, n))
    forecast = named_rng(seed, "proof:forecast").normal(0.0, 0.01, n)
    base = pl.DataFrame({"ts": ts, "symbol": [SYMBOL] * n})
    return (
        base.with_columns(pl.Series("sentiment", sentiment)),
        base.with_columns(pl.Series("forecast", forecast)),
    )


def leaky_forecasts(bars: pl.DataFrame) -> pl.DataFrame:
    """The control's planted look-ahead: each bar's 'forecast' IS the next bar's close-to-close log return.

    It enters where a real forecast would (compute_features joins it as of each bar), so
    everything downstream -- scaler, episodes, training, fills, costs -- is the real pipeline.
    """
    closes = bars.filter(pl.col("symbol") == SYMBOL).sort("ts")
    return closes.select(
        "ts",
        "symbol",
        (pl.col("close").shift(-1).log() - pl.col("close").log()).fill_null(0.0).alias("forecast"),
    )


def run_seed(seed: int, budget: ProofBudget, workdir: Path, *, leak: bool = False) -> SeedOutcome:
    """One random walk through ingest, the warehouse, features, scaler, training and the fold backtest."""
    config = RandomWalkConfig(seed=seed)
    bars = random_walk_bars(
        config, SYMBOL, date(budget.first_year, 1, 1), date(budget.last_year, 12, 31)
    )
    warehouse = workdir / f"proof-{'leak' if leak else 'rw'}-{seed}.duckdb"
    now = datetime(budget.last_year + 1, 6, 1, tzinfo=UTC)
    report = ingest_bar_frames([bars], warehouse, now)
    with connect(warehouse) as con:
        stored = load_bars(
            con,
            [SYMBOL],
            "1Day",
            datetime(budget.first_year - 1, 12, 1, tzinfo=UTC),
            datetime(budget.last_year + 1, 1, 2, tzinfo=UTC),
        )
    ts = stored.get_column("ts")
    folds = walk_forward_folds(
        ts,
        first_test_year=budget.first_test_year,
        min_train=budget.min_train_bars,
        embargo=budget.embargo_bars,
    )
    if not folds:
        raise ValueError(f"seed {seed}: no walk-forward fold in {ts.len()} stored bars")
    sentiment, forecasts = noise_inputs(seed, ts)
    if leak:
        forecasts = leaky_forecasts(stored)
    plan = WalkForwardPlan(
        FeatureSpec(symbols=(SYMBOL,), timeframe="1Day", sentiment=True, forecast=True),
        session_rule(SYMBOL, "1Day"),
        folds,
        [seed],
        Architecture(),
        DQNParams(cycles=budget.cycles),
        Costs(budget.fee_bps, budget.slippage_bps),
        None,
        sentiment,
        forecasts,
    )
    per_year = bars_per_year(SYMBOL, "1Day", ts)
    frame = result_frame([run_fold(stored, plan, f, ts, per_year) for f in folds])
    agent = frame.filter(pl.col("policy") == AGENT).sort("ts")
    m = compute_return_metrics(agent["return"], per_year, agent["position"])
    # The gate on the same out-of-sample bars: the agent against every baseline of the folds.
    baselines = {
        str(p): rows.sort("ts")["return"].to_numpy()
        for (p,), rows in frame.filter(pl.col("policy") != AGENT).group_by("policy")
    }
    verdict = judge_candidate(agent["return"].to_numpy(), None, baselines, 1, per_year, seed=seed)
    return SeedOutcome(
        seed,
        float(agent["return"].mean()),  # type: ignore[arg-type]
        m["exposure"],
        m["sharpe"],
        int(m["n_obs"]),
        report.inserted,
        verdict.promoted,
    )


def prove(
    seeds: Sequence[int],
    budget: ProofBudget | None = None,
    *,
    leak: bool = False,
    min_exposure: float = 0.1,
    workdir: Path | None = None,
    progress: bool = False,
) -> ProofResult:
    """Run every seed through the pipeline (with the planted look-ahead when `leak`) and judge."""
    plan = budget or ProofBudget()
    with tempfile.TemporaryDirectory(prefix="tradingml-proof-") as tmp:
        where = workdir or Path(tmp)
        outcomes: list[SeedOutcome] = []
        for s in seeds:
            outcomes.append(run_seed(s, plan, where, leak=leak))
            if progress:
                o = outcomes[-1]
                print(
                    f"  seed {s}: {o.mean_return * 1e4:+.2f} bp/day, exposure {o.exposure:.0%}",
                    flush=True,
                )
    means = [o.mean_return for o in outcomes]
    exposures = [o.exposure for o in outcomes]
    verdict, t = judge(means, exposures, min_exposure)
    return ProofResult(verdict, t, float(np.mean(means)), float(np.mean(exposures)), outcomes, leak)
