"""The whole-pipeline leakage proof: the random-walk source, the verdict rule, and the control it must catch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from adapters.random_walk import RANDOM_WALK, RandomWalkConfig, random_walk_bars
from benchmarks.proof_pipeline import (
    INCONCLUSIVE,
    LEAK,
    LOSS,
    PASS,
    ProofBudget,
    judge,
    leaky_forecasts,
    prove,
)
from core.bar_schema import BAR_SCHEMA, SYNTHETIC


def _walk(seed: int) -> pl.DataFrame:
    return random_walk_bars(
        RandomWalkConfig(seed=seed), "RWALK", date(2015, 1, 1), date(2020, 12, 31)
    )


def test_random_walk_bars_are_synthetic_deterministic_and_memoryless() -> None:
    bars = _walk(3)
    assert bars.schema == BAR_SCHEMA
    assert bars["source"].unique().to_list() == [SYNTHETIC]
    assert RANDOM_WALK.startswith(SYNTHETIC)
    assert bars.equals(_walk(3))
    assert not bars["close"].equals(_walk(4)["close"])
    # Weekdays only, one bar a day, a full OHLCV row everywhere.
    assert bars.height == int(np.busday_count(date(2015, 1, 1), date(2021, 1, 1)))
    assert bars.null_count().sum_horizontal().item() == 0
    assert (bars["high"] >= bars[["open", "close"]].max_horizontal()).all()
    assert (bars["low"] <= bars[["open", "close"]].min_horizontal()).all()
    r = np.diff(np.log(bars["close"].to_numpy()))
    assert 0.008 < r.std() < 0.012
    # i.i.d.: no lag-1 autocorrelation beyond noise (about 1/sqrt(n) = 0.025).
    assert abs(np.corrcoef(r[1:], r[:-1])[0, 1]) < 0.08


def test_leaky_forecast_is_the_next_bars_return() -> None:
    bars = _walk(1)
    leak = leaky_forecasts(bars)["forecast"].to_numpy()
    close = bars["close"].to_numpy()
    assert np.allclose(leak[:-1], np.diff(np.log(close)))
    assert leak[-1] == 0.0


def test_an_agent_that_never_trades_is_inconclusive_not_a_pass() -> None:
    flat = [0.0] * 20
    assert judge(flat, flat) == (INCONCLUSIVE, 0.0)
    # Even a positive edge on almost no exposure proves nothing either way.
    verdict, t = judge([1e-4 + 1e-6 * i for i in range(20)], [0.05] * 20)
    assert verdict == INCONCLUSIVE and t > 2
    noise = list(np.random.default_rng(0).normal(0.0, 1e-3, 20))
    assert judge(noise, [0.5] * 20)[0] == PASS
    assert judge([abs(x) + 1e-4 for x in noise], [0.5] * 20)[0] == LEAK
    assert judge([-abs(x) - 1e-4 for x in noise], [0.5] * 20)[0] == LOSS
    assert judge(noise, [0.5] * 20, min_exposure=0.6)[0] == INCONCLUSIVE


@pytest.fixture
def one_thread() -> Iterator[None]:
    # The nets are small: one thread is faster than torch's pool on a loaded machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_pipeline_runs_random_walks_and_catches_the_planted_look_ahead(tmp_path: Path) -> None:
    # Four years, yearly test folds 2018-2019: small, but every stage is the real one.
    tiny = ProofBudget(first_year=2016, last_year=2019, first_test_year=2018, cycles=80)
    walk = prove([0, 1], tiny, workdir=tmp_path)
    assert [o.seed for o in walk.seeds] == [0, 1]
    for o in walk.seeds:
        assert o.ingested == 1043  # weekdays 2016-2019, through validation and upsert
        assert o.n_obs == 522  # test bars of 2018 and 2019
        assert 0.0 <= o.exposure <= 1.0 and np.isfinite(o.mean_return)
        assert abs(o.mean_return) < 2e-3
    assert np.isfinite(walk.t_stat)
    # The control: the same pipeline, a forecast column that is the next bar's return.
    control = prove([100, 101], replace(tiny, cycles=400), leak=True, workdir=tmp_path)
    assert control.verdict == LEAK, control.line()
    assert control.t_stat > 2
    # The look-ahead earns what no random walk can: well over 10 bp a day after costs.
    assert min(o.mean_return for o in control.seeds) > 1e-3
    # The promotion gate on the same out-of-sample bars: the random walks are refused and
    # the look-ahead's agents pass it (so the gate is not one that never says yes).
    assert walk.promoted_share == 0.0, walk.line()
    assert control.promoted_share == 1.0, control.line()
