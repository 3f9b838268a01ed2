"""Choosing an agent configuration on development folds only: the candidates, their walk-forward score, the winner and the trials it cost."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from models.evaluation import compute_return_metrics

LEVELS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The five target exposures every candidate but the first builds on."""


@dataclass(frozen=True)
class Candidate:
    """One configuration tried: DQNParams overrides (and Architecture overrides), simplest first."""

    name: str
    params: Mapping[str, Any]
    architecture: Mapping[str, Any] = field(default_factory=dict)


DEFAULT_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("levels", {"action_levels": list(LEVELS)}),
    Candidate("levels_drawdown", {"action_levels": list(LEVELS), "reward": "drawdown"}),
    Candidate("levels_diff_sharpe", {"action_levels": list(LEVELS), "reward": "diff_sharpe"}),
    Candidate(
        "levels_budget",
        {"action_levels": list(LEVELS), "updates_per_block": 2, "batch_sessions": 16},
    ),
    Candidate("levels_ensemble", {"action_levels": list(LEVELS), "ensemble_size": 3}),
)
"""The fixed, documented list `select-agent` tries, in order of simplicity (ties go to the
earlier): five exposure levels alone, then each with one change -- the drawdown-penalised
reward, the differential Sharpe ratio, twice the updates on half
the batch, an ensemble of three."""

DEV_FIRST_YEAR = 1993
DEV_LAST_YEAR = 1999
"""Development folds on the S&P 500 (SPX, 1990-2022): the test years the choice may look at.
1990-1992 are the first fold's training years; the judging folds start in 2000."""


@dataclass(frozen=True)
class Selection:
    """The winner, every candidate's score, and the trials spent (candidates x seeds)."""

    winner: Candidate
    scores: Mapping[str, float]
    """Candidate name -> mean Sharpe over development folds x seeds."""
    n_trials: int


def check_disjoint(
    dev_first: int, dev_last: int, judge_first: int, judge_last: int | None = None
) -> None:
    """Raise unless every development test year comes before the first judging year.

    Judging folds train on every earlier year (the development years included): that is the
    past, as in any walk-forward fold. What must never happen is a judging year among the
    years a choice was scored on, or a choice scored on a year after one being judged.
    """
    if dev_last < dev_first:
        raise ValueError(f"development years {dev_first}-{dev_last} are empty")
    if judge_last is not None and judge_last < judge_first:
        raise ValueError(f"judging years {judge_first}-{judge_last} are empty")
    if dev_last >= judge_first:
        raise ValueError(
            f"development folds {dev_first}-{dev_last} overlap or follow the judging folds "
            f"from {judge_first}: a configuration would be chosen on years that judge it"
        )


def fold_sharpes(frame: pl.DataFrame, per_year: float) -> pl.DataFrame:
    """Per (fold, seed) of the agent in a result frame (models.walk_forward.result_frame):
    label, seed and the annualised Sharpe of that seed's returns over that fold's test bars."""
    agent = frame.filter(pl.col("policy") == "agent").sort("ts")
    rows = []
    for (fold, label, seed), part in agent.group_by("fold", "label", "seed", maintain_order=True):
        sharpe = compute_return_metrics(part["return"], per_year)["sharpe"]
        rows.append({"fold": fold, "label": label, "seed": seed, "sharpe": sharpe})
    if not rows:
        raise ValueError("the result frame holds no agent returns")
    return pl.DataFrame(rows).sort("fold", "seed")


def score(sharpes: Sequence[float]) -> float:
    """Mean walk-forward Sharpe over folds x seeds; an undefined one (a flat year: no
    variance) counts as 0, neither gain nor risk."""
    if not sharpes:
        raise ValueError("no Sharpe ratios to score")
    return float(sum(0.0 if math.isnan(s) else s for s in sharpes) / len(sharpes))


def choose(
    candidates: Sequence[Candidate],
    dev_sharpes: Mapping[str, Sequence[float]],
    n_seeds: int,
) -> Selection:
    """The candidate of the highest mean development Sharpe; an exact tie goes to the simpler
    (earlier) one. Every candidate must have a result: a missing one would hide a trial."""
    if not candidates:
        raise ValueError("no candidates")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names repeat: {names}")
    missing = [n for n in names if n not in dev_sharpes]
    if missing:
        raise ValueError(f"no development results for {missing}")
    scores = {c.name: score(dev_sharpes[c.name]) for c in candidates}
    # max() keeps the first of equal keys: the simpler candidate wins a tie.
    winner = max(candidates, key=lambda c: scores[c.name])
    return Selection(winner, scores, len(candidates) * n_seeds)
