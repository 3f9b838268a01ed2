"""`select-agent` flow: score fixed candidates on development folds only, choose one, then judge only the winner with `evaluate`, counting every trial."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow

from core.configs import EvaluateConfig, SelectAgentConfig
from core.settings import get_settings
from flows.evaluate import evaluate, out_of_sample
from models.selection import (
    DEFAULT_CANDIDATES,
    Candidate,
    Selection,
    check_disjoint,
    choose,
    fold_sharpes,
)

DevRun = Callable[[EvaluateConfig], tuple[pl.DataFrame, float]]
"""A development run: the config -> its result frame (models.walk_forward.result_frame), bars per year."""
Judge = Callable[[EvaluateConfig], dict[str, Any]]
"""The judging run: the winner's config -> flows.evaluate.evaluate's result."""


def _evaluate_config(config: SelectAgentConfig, **kw: Any) -> EvaluateConfig:
    """An EvaluateConfig sharing the selection's series, training budget and output places."""
    return EvaluateConfig(
        symbol=config.symbol,
        cycles=config.cycles,
        budget_s=config.budget_s,
        min_train_bars=config.min_train_bars,
        reps=config.reps,
        workers=config.workers,
        warehouse=config.warehouse,
        reports_dir=config.reports_dir,
        **kw,
    )


def dev_config(config: SelectAgentConfig, candidate: Candidate) -> EvaluateConfig:
    """A candidate's development run: the development years only, the development seeds."""
    return _evaluate_config(
        config,
        first_test_year=config.dev_first_year,
        last_test_year=config.dev_last_year,
        seeds=list(config.dev_seeds),
        params=dict(candidate.params),
        architecture=dict(candidate.architecture),
    )


def judge_config(config: SelectAgentConfig, selection: Selection) -> EvaluateConfig:
    """The winner's judging run: the judging years and seeds, the development trials counted."""
    return _evaluate_config(
        config,
        first_test_year=config.judge_first_year,
        last_test_year=config.judge_last_year,
        seeds=list(config.judge_seeds),
        params=dict(selection.winner.params),
        architecture=dict(selection.winner.architecture),
        prior_trials=selection.n_trials,
    )


def run_selection(
    config: SelectAgentConfig,
    dev_run: DevRun,
    judge: Judge | None,
    candidates: Sequence[Candidate] = DEFAULT_CANDIDATES,
) -> dict[str, Any]:
    """Every candidate on the development folds, the winner by mean Sharpe over folds x seeds,
    then (if `judge`) the winner alone on the judging folds.

    Each development result is checked to hold only development years before it is scored,
    so no judging year can reach the choice, whatever `dev_run` returns.
    """
    check_disjoint(
        config.dev_first_year, config.dev_last_year, config.judge_first_year, config.judge_last_year
    )
    dev: dict[str, list[float]] = {}
    for candidate in candidates:
        frame, per_year = dev_run(dev_config(config, candidate))
        sharpes = fold_sharpes(frame, per_year)
        years = {int(label) for label in sharpes["label"].to_list()}
        outside = sorted(y for y in years if not config.dev_first_year <= y <= config.dev_last_year)
        if outside:
            raise ValueError(
                f"the development run of {candidate.name} returned test years {outside} outside "
                f"{config.dev_first_year}-{config.dev_last_year}"
            )
        dev[candidate.name] = sharpes["sharpe"].to_list()
        sys.stderr.write(
            f"select-agent {candidate.name}: dev Sharpe per fold x seed "
            f"{[round(s, 3) for s in dev[candidate.name]]}\n"
        )
    selection = choose(candidates, dev, len(config.dev_seeds))
    out: dict[str, Any] = {
        "winner": selection.winner.name,
        "params": dict(selection.winner.params),
        "architecture": dict(selection.winner.architecture),
        "dev_scores": dict(selection.scores),
        "n_trials": selection.n_trials,
        "judged": None,
    }
    if judge is not None:
        out["judged"] = judge(judge_config(config, selection))
    return out


@flow(name="select-agent", log_prints=True)
def select_agent(config: SelectAgentConfig | None = None) -> dict[str, Any]:
    """Choose the agent on development folds (models.selection.DEFAULT_CANDIDATES), then judge only the winner."""
    config = config or SelectAgentConfig()
    warehouse = Path(config.warehouse) if config.warehouse else get_settings().warehouse_path

    def dev_run(dev: EvaluateConfig) -> tuple[pl.DataFrame, float]:
        # Nothing is recorded: these trials are counted by the judging run's prior_trials.
        return out_of_sample(dev, warehouse)

    return run_selection(config, dev_run, evaluate if config.judge else None)
