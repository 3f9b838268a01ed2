"""Architecture-search benchmarks: population 16 x 4 generations, serial vs two process workers; and whether the search's fitness is signal (its rank agreement across disjoint seed sets on a planted-signal market)."""

from __future__ import annotations

import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import polars as pl
from prefect import flow
from scipy.stats import spearmanr

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from benchmarks.harness import Figure, benchmark
from core.configs import EvolveConfig
from core.sessions import session_rule
from core.universe import EQUITY_SYMBOLS
from flows.evolve import evolve_architecture
from models.dqn import DQNParams
from models.env import Costs
from models.features import FeatureSpec
from models.genome import Genome
from models.search import SearchSettings, evaluate_genome, initial_population, search_folds
from warehouse.bars import ingest_bar_frames


@flow(name="bench-warm-up")
def _warm_up() -> None:
    """A no-op flow run."""


@benchmark("search")
def bench_search(scratch: Path) -> list[Figure]:
    base = scratch / "search.duckdb"
    frames = SyntheticBarSource().fetch_bars(
        list(EQUITY_SYMBOLS),
        "1Min",
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 7, 1, tzinfo=UTC),
    )
    ingest_bar_frames(frames, base, datetime.now(UTC))
    _warm_up()  # start Prefect's temporary API outside the timings: both runs then share it
    seconds: dict[str, float] = {}
    runs: tuple[tuple[Literal["process", "serial"], int], ...] = (("process", 2), ("serial", 1))
    for runner, workers in runs:
        # Each run gets its own copy of the warehouse: the same search would otherwise resume.
        path = scratch / f"search-{runner}.duckdb"
        shutil.copy(base, path)
        config = EvolveConfig(
            population=16, generations=4, cycles=40, runner=runner, workers=workers,
            register_best=False, warehouse=str(path),
        )  # fmt: skip
        start = time.perf_counter()
        result = evolve_architecture(config)
        seconds[runner] = time.perf_counter() - start
        best = result["best"]
        print(
            f"  {runner} x{workers}: {seconds[runner]:.0f} s, best fitness {best['fitness']:.4f}",
            flush=True,
        )
    return [
        Figure("nas_16x4_s", round(seconds["process"], 1), "s", "<= 600"),
        Figure(
            "nas_speedup_2_workers", round(seconds["serial"] / seconds["process"], 2), "x", ">= 1.6"
        ),
    ]


# The rank-agreement figure: 8 random genomes (the search's initial population, not chosen
# on this figure), each scored by the search's fitness twice -- under seeds {1, 2} and under
# {3, 4} -- on SYNTHETIC SPY minutes whose returns follow a sentiment series the agent sees
# (signal="sentiment", as benchmarks.proofs.planted_sentiment_market). If fitness were noise
# the two rankings would agree by chance only (Spearman ~ 0).
RANK_START = datetime(2024, 1, 1, tzinfo=UTC)
RANK_END = datetime(2024, 4, 1, tzinfo=UTC)
RANK_GENOMES = 8
RANK_FOLDS = 2
RANK_CYCLES = 100
RANK_SEED_SETS: tuple[tuple[int, ...], tuple[int, ...]] = ((1, 2), (3, 4))


@lru_cache(maxsize=1)
def _planted_market() -> tuple[pl.DataFrame, pl.DataFrame]:
    """SYNTHETIC SPY minutes led by a visible sentiment series (built once per worker process)."""
    source = SyntheticBarSource(
        SyntheticConfig(signal="sentiment", signal_strength=0.3, sentiment_lag_minutes=5, seed=11)
    )
    bars = next(source.fetch_bars(["SPY"], "1Min", RANK_START, RANK_END))
    return bars, source.fetch_sentiment(["SPY"], RANK_START, RANK_END)


def _fitness(genome: dict[str, Any], seeds: tuple[int, ...]) -> float:
    """The search's fitness (models.search.evaluate_genome) of one genome under one seed set."""
    bars, sentiment = _planted_market()
    result = evaluate_genome(
        Genome.from_dict(genome),
        bars,
        FeatureSpec(symbols=("SPY",), sentiment=True),
        search_folds(RANK_START, RANK_END, RANK_FOLDS),
        DQNParams(cycles=RANK_CYCLES, checkpoint_every=RANK_CYCLES),
        Costs(),
        list(seeds),
        None,
        session_rule("SPY", "1Min"),
        sentiment=sentiment,
    )
    if result.status != "ok":
        raise RuntimeError(f"genome {genome} {result.status}: {result.error}")
    return result.fitness


@benchmark("search_fitness")
def bench_search_fitness(scratch: Path) -> list[Figure]:
    """Spearman rank correlation of the same genomes' fitness under two disjoint seed sets."""
    genomes = [g.to_dict() for g in initial_population(SearchSettings(population=RANK_GENOMES))]
    start = time.perf_counter()
    # Two worker processes (the machine's 2 cores); spawn: torch must not inherit a forked state.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            (i, k): pool.submit(_fitness, g, seeds)
            for i, g in enumerate(genomes)
            for k, seeds in enumerate(RANK_SEED_SETS)
        }
        scores = {key: f.result() for key, f in futures.items()}
    a = [scores[(i, 0)] for i in range(len(genomes))]
    b = [scores[(i, 1)] for i in range(len(genomes))]
    rho = float(spearmanr(a, b).statistic)
    seconds = time.perf_counter() - start
    print(
        f"  SYNTHETIC planted-sentiment SPY, {RANK_GENOMES} genomes, {RANK_FOLDS} folds x 2 seeds, "
        f"{RANK_CYCLES} cycles, {seconds:.0f} s",
        flush=True,
    )
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        print(
            f"  genome {i}: fitness seeds {RANK_SEED_SETS[0]} {x:+.4f}, seeds {RANK_SEED_SETS[1]} {y:+.4f}"
        )
    print(f"  Spearman rank correlation {rho:.3f}", flush=True)
    return [Figure("search_fitness_rank_corr", round(rho, 3), "rho", ">= 0.5")]
