"""Prefect task that evaluates one genome; runs in whichever task runner the search flow was given."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.sessions import SessionRule
from models.dqn import DQNParams
from models.env import Costs
from models.features import FeatureSpec
from models.genome import Genome
from models.search import SearchFold, evaluate_genome


@task(
    name="evaluate-genome", task_run_name="gen{generation}-ind{individual}", cache_policy=NO_CACHE
)
def evaluate_individual(
    generation: int,
    individual: int,
    genome: dict[str, Any],
    bars: pl.DataFrame,
    spec: dict[str, Any],
    folds: list[dict[str, Any]],
    params: dict[str, Any],
    costs: dict[str, float],
    seeds: list[int],
    timeout_s: float | None,
    rule: dict[str, Any] | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Plain dicts in and out: the task may run in another process or on a Dask worker.

    `folds` are models.search.SearchFold as dicts; `rule` is a core.sessions.SessionRule as a
    dict (None: inferred from the symbol); `threads` torch threads (the worker's share of the
    cores, chosen by the flow)."""
    result = evaluate_genome(
        Genome.from_dict(genome),
        bars,
        FeatureSpec.from_dict(spec),
        [
            SearchFold(f["index"], (f["train"][0], f["train"][1]), (f["valid"][0], f["valid"][1]))
            for f in folds
        ],
        DQNParams.from_dict(params),
        Costs(**costs),
        seeds,
        timeout_s,
        SessionRule(**rule) if rule is not None else None,
        threads=threads,
    )
    return asdict(result)
