"""Statistical promotion gate (models.evaluation.judge_candidate): Monte Carlo false-promotion rate and power."""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.harness import Figure, benchmark
from models.evaluation import judge_candidate

PERIODS_PER_YEAR = 252
SAMPLES = ((5, 500), (23, 200))
"""(years of daily out-of-sample returns judged, candidate streams per figure).

5 years: e.g. five yearly walk-forward folds. 23 years: what `tradingml evaluate` judges on the
S&P 500 index (yearly test folds 2000-2022). Power is a property of the sample length as much as
of the gate, so both are reported. Standard error of a rate near 0.05 / 0.8: ~0.010 / ~0.018 with
500 streams, ~0.015 / ~0.028 with 200 (fewer at 23 years: each stream's bootstraps cost 4.6x more).
"""
CORRELATION = 0.5
"""Correlation of a candidate's daily returns with the market's (a strategy on the same market)."""


@dataclass(frozen=True)
class Market:
    """Daily drift and volatility of the synthetic market, calibrated on real S&P 500 returns."""

    mean: float
    vol: float


def _calibrate() -> Market:
    """S&P 500 daily simple returns 1999-2018 from arch.data.sp500 (real data, bundled with arch)."""
    import arch.data.sp500

    close = arch.data.sp500.load()["Adj Close"].to_numpy(dtype=np.float64)
    r = close[1:] / close[:-1] - 1.0
    return Market(float(np.mean(r)), float(np.std(r, ddof=1)))


def _one(args: tuple[int, float | None, Market, int]) -> bool:
    """Synthetic (seeded, normal) market and candidate; True when the gate promotes the candidate."""
    seed, candidate_sharpe, market, n = args
    rng = np.random.default_rng(seed)
    m, z = rng.standard_normal(n), rng.standard_normal(n)
    buy_and_hold = market.mean + market.vol * m
    # Same volatility as the market, correlated with it; the drift sets its true Sharpe.
    # candidate_sharpe None means "no edge": exactly buy-and-hold's drift.
    drift = (
        market.mean
        if candidate_sharpe is None
        else candidate_sharpe * market.vol * math.sqrt(PERIODS_PER_YEAR) / PERIODS_PER_YEAR
    )
    shock = CORRELATION * m + math.sqrt(1.0 - CORRELATION**2) * z
    candidate = drift + market.vol * shock
    verdict = judge_candidate(
        candidate,
        None,
        {"buy_and_hold": buy_and_hold, "cash": np.zeros(n)},
        n_trials=1,
        periods_per_year=PERIODS_PER_YEAR,
        seed=seed,
    )
    return verdict.promoted


def _rate(
    candidate_sharpe: float | None,
    market: Market,
    first_seed: int,
    workers: int,
    years: int,
    streams: int,
) -> float:
    n = years * PERIODS_PER_YEAR
    jobs = [(first_seed + i, candidate_sharpe, market, n) for i in range(streams)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        promoted = list(pool.map(_one, jobs, chunksize=25))
    return sum(promoted) / len(promoted)


@benchmark("gate")
def bench_gate(scratch: Path) -> list[Figure]:
    market = _calibrate()
    market_sharpe = market.mean / market.vol * math.sqrt(PERIODS_PER_YEAR)
    workers = min(2, os.cpu_count() or 1)
    print(
        f"  market: S&P 500 1999-2018 (arch.data) daily drift {market.mean:.2e}, vol {market.vol:.4f}"
        f" (annual Sharpe {market_sharpe:.2f}); synthetic normal streams of daily returns,"
        f" candidate corr {CORRELATION} with the market; baselines buy_and_hold and cash;"
        f" n_trials=1, alpha 0.05, DSR >= 0.95, drawdown margin 0.02",
        flush=True,
    )
    figures: list[Figure] = []
    for years, streams in SAMPLES:
        start = time.perf_counter()
        # No edge: the candidate's expected return equals buy-and-hold's (the best baseline):
        # the least favourable null, where promotion is a false promotion.
        false_rate = _rate(None, market, 1_000_000, workers, years, streams)
        print(
            f"  {years} years: no-edge candidates promoted: {false_rate:.3f} of {streams}",
            flush=True,
        )
        power = _rate(1.0, market, 2_000_000, workers, years, streams)
        print(
            f"  {years} years: Sharpe-1 candidates promoted: {power:.3f} of {streams}"
            f" ({time.perf_counter() - start:.0f} s on {workers} workers)",
            flush=True,
        )
        figures += [
            Figure(
                f"gate_false_promotion_rate_{years}y_daily",
                round(false_rate, 3),
                "share",
                "<= 0.05",
            ),
            Figure(f"gate_power_sharpe1_{years}y_daily", round(power, 3), "share", ">= 0.8"),
        ]
    return figures
