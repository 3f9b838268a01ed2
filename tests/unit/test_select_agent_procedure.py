"""The development-fold selection (models/selection.py, flows/select_agent.run_selection) with planted results: dev folds never overlap the judging folds, the winner comes from dev results only, every trial is counted."""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest

from core.configs import EvaluateConfig, SelectAgentConfig
from flows.cli_options import add_config_options, config_from_args
from flows.select_agent import run_selection
from models.dqn import DQNParams
from models.selection import (
    DEFAULT_CANDIDATES,
    Candidate,
    check_disjoint,
    choose,
    fold_sharpes,
    score,
)

PER_YEAR = 252.0


def _planted_frame(years: list[int], seeds: list[int], drift: float) -> pl.DataFrame:
    """A result frame (models.walk_forward.result_frame's columns) of SYNTHETIC agent returns:
    per year and seed, 252 bars of a fixed noise pattern plus `drift` (its Sharpe grows with it)."""
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 0.01, 252)
    noise -= noise.mean()  # the drift alone sets the sign of the mean
    parts = []
    for fold, year in enumerate(years):
        ts = pl.datetime_range(
            datetime(year, 1, 1, tzinfo=UTC), datetime(year, 9, 9, tzinfo=UTC), "1d", eager=True
        )[:252]
        for seed in seeds:
            parts.append(
                pl.DataFrame(
                    {
                        "fold": np.full(252, fold, dtype=np.int64),
                        "label": [str(year)] * 252,
                        "ts": ts,
                        "policy": ["agent"] * 252,
                        "seed": np.full(252, seed, dtype=np.int64),
                        "position": np.ones(252),
                        "return": noise + drift + 0.0001 * seed,
                    }
                )
            )
    return pl.concat(parts)


def test_default_candidates_are_valid_training_settings_and_documented_order() -> None:
    names = [c.name for c in DEFAULT_CANDIDATES]
    assert names == [
        "levels",
        "levels_drawdown",
        "levels_diff_sharpe",
        "levels_budget",
        "levels_ensemble",
    ]
    for c in DEFAULT_CANDIDATES:
        params = DQNParams.from_dict(dict(c.params))  # DQNParams validates each choice
        assert params.action_levels == (0.0, 0.25, 0.5, 0.75, 1.0)
    budget = DQNParams.from_dict(dict(DEFAULT_CANDIDATES[3].params))
    assert (budget.updates_per_block, budget.batch_sessions) == (2, 16)
    assert DQNParams.from_dict(dict(DEFAULT_CANDIDATES[4].params)).ensemble_size == 3


def test_dev_folds_must_end_before_the_judging_folds() -> None:
    check_disjoint(1993, 1999, 2000, 2022)
    for dev_last, judge_first in [(2000, 2000), (2005, 2000), (1999, 1995)]:
        with pytest.raises(ValueError, match="overlap or follow"):
            check_disjoint(1993, dev_last, judge_first)
    with pytest.raises(ValueError, match="overlap or follow"):
        SelectAgentConfig(dev_last_year=2000)


def test_choose_takes_the_best_mean_and_the_simpler_on_a_tie() -> None:
    a, b, c = Candidate("a", {}), Candidate("b", {"reward": "drawdown"}), Candidate("c", {})
    chosen = choose([a, b, c], {"a": [0.1, 0.3], "b": [0.5, 0.5], "c": [0.5, 0.5]}, n_seeds=2)
    assert chosen.winner is b  # b and c tie at 0.5: the earlier, simpler one
    assert chosen.scores == {"a": pytest.approx(0.2), "b": 0.5, "c": 0.5}
    assert chosen.n_trials == 6
    # An undefined Sharpe (a flat year) counts as 0, not as a hole that lifts the mean.
    assert score([math.nan, 1.0]) == 0.5
    with pytest.raises(ValueError, match="no development results"):
        choose([a, b], {"a": [0.1]}, n_seeds=1)


def test_fold_sharpes_are_per_fold_and_seed() -> None:
    frame = _planted_frame([1993, 1994], [0, 1], 0.001)
    sharpes = fold_sharpes(frame, PER_YEAR)
    assert sharpes.select("label", "seed").rows() == [
        ("1993", 0),
        ("1993", 1),
        ("1994", 0),
        ("1994", 1),
    ]
    assert sharpes["sharpe"][0] == sharpes["sharpe"][2] > 1.0  # same returns, same Sharpe
    assert sharpes["sharpe"][1] > sharpes["sharpe"][0]


def test_winner_comes_from_dev_results_only_and_is_judged_with_every_trial() -> None:
    candidates = [
        Candidate("plain", {"action_levels": [0, 1]}),
        Candidate("dd", {"action_levels": [0, 1], "reward": "drawdown"}),
        Candidate("vol", {"action_levels": [0, 1], "updates_per_block": 2}),
    ]
    # Planted: 'dd' is best on the development years; 'vol' would be best on judging years
    # (had they reached the choice, it would win).
    dev_drift = {"plain": 0.0002, "dd": 0.0008, "vol": -0.0005}
    seen: list[EvaluateConfig] = []

    def dev_run(config: EvaluateConfig) -> tuple[pl.DataFrame, float]:
        seen.append(config)
        name = next(c.name for c in candidates if dict(c.params) == config.params)
        assert config.last_test_year is not None
        years = list(range(config.first_test_year, config.last_test_year + 1))
        return _planted_frame(years, list(config.seeds), dev_drift[name]), PER_YEAR

    judged: list[EvaluateConfig] = []

    def judge(config: EvaluateConfig) -> dict[str, Any]:
        judged.append(config)
        return {"dsr": 0.5}

    config = SelectAgentConfig(cycles=5, dev_seeds=[0, 1], judge_seeds=[0, 1, 2, 3, 4])
    out = run_selection(config, dev_run, judge, candidates)
    assert out["winner"] == "dd"
    assert out["n_trials"] == 6  # 3 candidates x 2 seeds
    assert [(c.first_test_year, c.last_test_year, c.seeds) for c in seen] == [
        (1993, 1999, [0, 1])
    ] * 3
    # Only the winner is judged, on 2000 onwards, with 5 seeds and the 6 trials counted.
    assert len(judged) == 1
    j = judged[0]
    assert (j.first_test_year, j.last_test_year, j.seeds) == (2000, None, [0, 1, 2, 3, 4])
    assert j.params == {"action_levels": [0, 1], "reward": "drawdown"}
    assert j.prior_trials == 6 and j.cycles == 5
    assert out["judged"] == {"dsr": 0.5}


def test_a_dev_run_that_reaches_a_judging_year_is_refused() -> None:
    def leaky(config: EvaluateConfig) -> tuple[pl.DataFrame, float]:
        return _planted_frame([1998, 1999, 2000], list(config.seeds), 0.001), PER_YEAR

    with pytest.raises(ValueError, match=r"test years \[2000\] outside 1993-1999"):
        run_selection(SelectAgentConfig(), leaky, None, [Candidate("x", {})])


def test_evaluate_config_records_the_new_options_only_when_set() -> None:
    plain = EvaluateConfig().recipe()
    assert not {"last_test_year", "params", "architecture", "prior_trials"} & set(plain)
    chosen = EvaluateConfig(
        last_test_year=2010, params={"reward": "drawdown"}, prior_trials=12
    ).recipe()
    assert chosen["last_test_year"] == 2010
    assert chosen["params"] == {"reward": "drawdown"} and chosen["prior_trials"] == 12
    with pytest.raises(ValueError, match="before first_test_year"):
        EvaluateConfig(first_test_year=2000, last_test_year=1999)
    with pytest.raises(ValueError, match="cycles with its own option"):
        EvaluateConfig(params={"cycles": 5})


def test_evaluate_takes_params_as_json_on_the_command_line() -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_options(parser, EvaluateConfig)
    args = parser.parse_args(
        ["--params", '{"action_levels": [0, 0.5, 1], "reward": "drawdown"}', "--prior-trials", "12"]
    )
    config = config_from_args(EvaluateConfig, args)
    assert config.params == {"action_levels": [0, 0.5, 1], "reward": "drawdown"}
    assert config.prior_trials == 12 and config.architecture == {}
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--params", "[1, 2]"])
