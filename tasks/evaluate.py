"""Prefect task around one walk-forward fold (models.walk_forward.run_fold): a task run per fold in the UI."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.evaluation import Fold
from models.threads import use_threads
from models.walk_forward import FoldResult, WalkForwardPlan, run_fold


@task(name="evaluate-fold", task_run_name="fold-{fold.label}", cache_policy=NO_CACHE)
def evaluate_fold(
    bars: pl.DataFrame,
    plan: WalkForwardPlan,
    fold: Fold,
    ts: pl.Series,
    per_year: float,
    on_seed: Callable[[Fold, int], None] | None = None,
    threads: int | None = None,
) -> FoldResult:
    """Train every seed on the fold's past and trade its test window beside the baselines.

    `threads` (the fold's share of the cores, models.threads.task_threads) sets torch's
    threads in the thread that runs the task; None leaves them as they are."""
    if threads is not None:
        use_threads(threads)
    return run_fold(bars, plan, fold, ts, per_year, on_seed=on_seed)
