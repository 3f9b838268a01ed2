"""The search's procedure: walk-forward folds inside the search range, fitness = mean over folds x seeds, and a winner never judged on the days that selected it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

import models.search as search
from core.configs import EvolveConfig
from core.sessions import session_rule
from models.dqn import DQNParams
from models.env import Costs
from models.features import FeatureSpec
from models.genome import default_genome
from models.search import JudgingOverlapError, check_judging_range, search_folds


def utc(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def test_folds_expand_inside_the_search_range_and_validate_on_consecutive_windows() -> None:
    folds = search_folds(utc(2024, 1, 1), utc(2024, 3, 18), 3)
    assert [(f.train, f.valid) for f in folds] == [
        ((utc(2024, 1, 1), utc(2024, 2, 8)), (utc(2024, 2, 8), utc(2024, 2, 21))),
        ((utc(2024, 1, 1), utc(2024, 2, 21)), (utc(2024, 2, 21), utc(2024, 3, 5))),
        ((utc(2024, 1, 1), utc(2024, 3, 5)), (utc(2024, 3, 5), utc(2024, 3, 18))),
    ]
    with pytest.raises(ValueError, match="too short for 3 validation folds"):
        search_folds(utc(2024, 1, 1), utc(2024, 1, 5), 3)


def test_the_default_ranges_do_not_collide_with_each_other_or_train_agents_held_out_window() -> (
    None
):
    from core.configs import TrainAgentConfig

    c, agent = EvolveConfig(), TrainAgentConfig()
    folds = search_folds(
        utc(2024, 1, 1), datetime.combine(c.search_end, datetime.min.time(), UTC), c.folds
    )
    assert folds[-1].valid[1].date() == c.search_end <= c.test_start < c.test_end
    assert c.test_end <= agent.test_start  # train-agent's held-out days neither select nor judge


def test_config_refuses_a_judging_range_that_overlaps_the_search_range() -> None:
    with pytest.raises(
        ValidationError,
        match=r"judging range \(2024-03-01 to 2024-05-01\) must start on or after search_end \(2024-03-18\)",
    ):
        EvolveConfig(test_start=date(2024, 3, 1))


def test_a_genome_judged_on_its_own_validation_folds_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folds = search_folds(utc(2024, 1, 1), utc(2024, 3, 18), 3)
    check_judging_range(folds, (utc(2024, 3, 18), utc(2024, 5, 1)))  # after the range: fine
    trained: list[Any] = []
    monkeypatch.setattr(search, "train_dqn", lambda *a, **k: trained.append(a))
    with pytest.raises(JudgingOverlapError, match="overlaps search fold 2's validation days"):
        search.judging_streams(
            default_genome(), pl.DataFrame(), FeatureSpec(), folds,
            (utc(2024, 3, 10), utc(2024, 4, 1)), DQNParams(cycles=1), Costs(), [1, 2],
        )  # fmt: skip
    with pytest.raises(JudgingOverlapError, match="fold 0's validation days"):
        check_judging_range(folds, (utc(2024, 2, 10), utc(2024, 2, 12)))
    assert trained == []  # refused before any training


def test_fitness_is_the_mean_over_folds_and_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    folds = search_folds(utc(2024, 1, 1), utc(2024, 3, 18), 3)
    fold_of = {f.valid: f.index for f in folds}

    def prepare(bars: Any, spec: FeatureSpec, train: Any, valid: Any, *_: Any, **__: Any) -> Any:
        assert train == (folds[0].train[0], valid[0])  # expanding: trains up to its window
        return SimpleNamespace(train=None, test=fold_of[valid], test_bars=None, spec=spec)

    def train(
        sessions: Any, arch: Any, params: DQNParams, costs: Costs, seed: int, **_: Any
    ) -> Any:
        return SimpleNamespace(online=seed), [None] * params.cycles

    def score(seed: int, fold: int, *_: Any) -> Any:
        value = 10.0 * fold + seed  # a fake scorer: fold 0..2, seed 1 or 2
        table = {"agent": {"total_return": value, "max_drawdown": 0.0, "sessions": 2.0}}
        return table, {"agent": np.array([0.01, -0.005, 0.002, 0.0])}

    monkeypatch.setattr(search, "prepare_data", prepare)
    monkeypatch.setattr(search, "train_dqn", train)
    monkeypatch.setattr(search, "evaluate_network_with_returns", score)
    ev = search.evaluate_genome(
        default_genome(), pl.DataFrame(), FeatureSpec(), folds, DQNParams(cycles=2), Costs(),
        [1, 2], None, rule=session_rule("SPY", "1Min"),
    )  # fmt: skip
    assert ev.status == "ok", ev.error
    assert ev.per_fold_seed == [[1.0, 2.0], [11.0, 12.0], [21.0, 22.0]]
    assert ev.fitness == pytest.approx(
        11.5
    )  # not one fold's (the old single window) nor one seed's
    assert ev.per_fold == [1.5, 11.5, 21.5] and ev.per_seed == [11.0, 12.0]
    assert ev.fitness_std == pytest.approx(float(np.std([1, 2, 11, 12, 21, 22], ddof=1)))
    assert ev.n_obs == 12


def test_a_timed_out_individual_still_scores_the_worst_fitness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folds = search_folds(utc(2024, 1, 1), utc(2024, 3, 18), 2)
    monkeypatch.setattr(
        search,
        "prepare_data",
        lambda *a, **k: SimpleNamespace(train=None, test=0, test_bars=None, spec=a[1]),
    )
    monkeypatch.setattr(search, "train_dqn", lambda *a, **k: (None, []))  # stopped by its budget
    ev = search.evaluate_genome(
        default_genome(), pl.DataFrame(), FeatureSpec(), folds, DQNParams(cycles=3), Costs(),
        [1, 2], 1.0, rule=session_rule("SPY", "1Min"),
    )  # fmt: skip
    assert (ev.fitness, ev.status) == (search.WORST_FITNESS, "timeout")
    assert "fold 0, seed 1" in (ev.error or "")
