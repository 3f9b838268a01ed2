"""`evolve-architecture` flow: an evolutionary search of the Q-network (walk-forward multi-seed fitness, individuals in parallel), its winner judged by the statistical gate on a later, disjoint range."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow
from prefect.logging import get_run_logger

from core.configs import EvolveConfig, utc_midnight
from core.settings import get_settings
from flows.alerts import alerting
from flows.wiring import build_task_runner, share_api_with_workers
from models.search import (
    Scored,
    initial_population,
    next_generation,
)
from tasks.evolve import generation_artifact, judge_winner, score_generation, start_search
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.search import load_individuals


@flow(name="evolve-architecture-generations")
def search_generations(config: EvolveConfig, bars: pl.DataFrame, warehouse: str) -> dict[str, Any]:
    """Run (or resume) the generations, then judge the winner on the judging range.

    Each individual is stored as soon as it is scored, and recorded as a trial (kind
    'genome', the search range) so the gate's deflated Sharpe ratio counts every genome
    tried. The winner is registered as a candidate (register_best) and promoted only if the
    statistical gate passes on the judging range."""
    logger = get_run_logger()
    s = start_search(config, warehouse, logger)
    with connect(warehouse) as con:
        stored = load_individuals(con, s.id)
    if stored:
        logger.info("resuming %s: %d individuals already scored", s.id, len(stored))
    population = initial_population(s.settings)
    everyone: list[dict[str, Any]] = []
    # Per-fold fitness of the individuals scored in this run (nas_individuals has no column
    # for it): returned with the best and shown in the generation tables.
    per_fold: dict[tuple[int, int], list[float]] = {}
    for gen in range(s.settings.generations):
        rows = score_generation(
            s, config, gen, population, stored, bars, warehouse, per_fold, logger
        )
        ranked = sorted(rows.values(), key=lambda r: r["fitness"], reverse=True)
        everyone += ranked
        generation_artifact(s, gen, ranked, per_fold, len(config.seeds))
        logger.info(
            "generation %d: best fitness %.4f (%s)",
            gen,
            ranked[0]["fitness"],
            ranked[0]["genome_hash"],
        )
        if gen + 1 < s.settings.generations:
            scored = [
                Scored(population[i], float(rows[i]["fitness"])) for i in range(len(population))
            ]
            population = next_generation(scored, gen + 1, s.settings)

    return judge_winner(s, config, everyone, per_fold, bars, warehouse, logger)


@flow(name="evolve-architecture", log_prints=True)
def evolve_architecture(config: EvolveConfig | None = None) -> dict[str, Any]:
    """Search Q-network architectures and training settings; resumable; parallel through a task runner."""
    config = config or EvolveConfig()
    warehouse = config.warehouse or str(get_settings().warehouse_path)
    with connect(warehouse) as con:
        bars = load_bars(
            con,
            config.symbols,
            config.timeframe,
            utc_midnight(config.search_start),
            utc_midnight(config.test_end),
        )
    if bars.height == 0:
        raise ValueError(
            f"no {config.timeframe} bars for {config.symbols} in {warehouse}; run ingest-bars first"
        )
    share_api_with_workers()
    # A local Dask cluster's scratch space, removed once the search (and its cluster) ended.
    with tempfile.TemporaryDirectory(prefix="tradingml-dask-") as scratch:
        runner = build_task_runner(
            config.runner, config.workers, config.dask_address, Path(scratch)
        )
        with alerting("evolve"):  # the gate's verdict on the winner becomes a Prefect event
            return search_generations.with_options(task_runner=runner)(config, bars, warehouse)


if __name__ == "__main__":
    evolve_architecture()
