"""Evolutionary architecture search: evaluate genomes over seeds, select, recombine, mutate. Pure logic."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl
import torch

from core.sessions import SessionRule, session_rule
from models.dqn import DQNParams
from models.env import Costs
from models.features import FeatureSpec
from models.genome import Genome, crossover, mutate, random_genome
from models.train import evaluate, objective, prepare_data, train_dqn

WORST_FITNESS = -1e9  # what a crashed or timed-out individual scores


@dataclass(frozen=True)
class SearchSettings:
    """How the search evolves its population."""

    population: int = 16
    """Individuals per generation."""
    generations: int = 4
    """Generations to run."""
    elite: int = 2
    """Best individuals copied unchanged into the next generation."""
    tournament: int = 3
    """Individuals drawn per tournament; the fittest becomes a parent."""
    mutation_rate: float = 0.25
    """Probability of redrawing each gene of a child."""
    seed: int = 0
    """Seed of the search itself (populations, selection)."""


@dataclass(frozen=True)
class Scored:
    genome: Genome
    fitness: float


def initial_population(settings: SearchSettings) -> list[Genome]:
    rng = np.random.default_rng([settings.seed, 0])
    return [random_genome(rng) for _ in range(settings.population)]


def next_generation(
    scored: list[Scored], generation: int, settings: SearchSettings
) -> list[Genome]:
    """Elitism, then tournament-selected parents -> crossover -> mutation. Deterministic per generation."""
    rng = np.random.default_rng([settings.seed, generation])
    ranked = sorted(scored, key=lambda s: s.fitness, reverse=True)
    children = [s.genome for s in ranked[: settings.elite]]

    def tournament() -> Genome:
        picks = rng.choice(len(scored), size=min(settings.tournament, len(scored)), replace=False)
        return max((scored[int(i)] for i in picks), key=lambda s: s.fitness).genome

    while len(children) < settings.population:
        child = crossover(tournament(), tournament(), rng)
        children.append(mutate(child, rng, settings.mutation_rate))
    return children


@dataclass
class Evaluation:
    """One individual's result: fitness per seed, their mean and std, how long, and how it ended."""

    fitness: float
    fitness_std: float
    per_seed: list[float] = field(default_factory=list)
    seconds: float = 0.0
    status: str = "ok"
    error: str | None = None


def evaluate_genome(
    genome: Genome,
    bars: pl.DataFrame,
    base_spec: FeatureSpec,
    train_range: tuple[datetime, datetime],
    valid_range: tuple[datetime, datetime],
    base_params: DQNParams,
    costs: Costs,
    seeds: list[int],
    timeout_s: float | None,
    rule: SessionRule | None = None,
) -> Evaluation:
    """Train the genome once per seed at a fixed budget; fitness = mean validation objective.

    `rule` cuts both ranges into episodes as `train` cuts them (core.sessions.session_rule
    from the symbol's stored calendar); None infers it from the traded symbol and timeframe.
    Never raises: a crash or a timeout scores WORST_FITNESS with its reason, so the search goes on.
    """
    # One thread per evaluation: workers run side by side, and results must not depend on
    # how many threads a runner gives a process.
    torch.set_num_threads(1)
    started = time.perf_counter()
    per_seed: list[float] = []
    try:
        spec = genome.feature_spec(base_spec)
        if rule is None:
            rule = session_rule(spec.traded, spec.timeframe)
        data = prepare_data(bars, spec, train_range, valid_range, rule=rule)
        params = genome.params(base_params)
        for seed in seeds:
            remaining = (
                None if timeout_s is None else max(0.0, timeout_s - (time.perf_counter() - started))
            )
            module, history = train_dqn(
                data.train, genome.architecture(), params, costs, seed, budget_s=remaining
            )
            if len(history) < params.cycles:
                return Evaluation(
                    WORST_FITNESS, 0.0, per_seed, time.perf_counter() - started, "timeout",
                    f"over the {timeout_s} s budget after {len(history)} of {params.cycles} cycles (seed {seed})",
                )  # fmt: skip
            per_seed.append(
                objective(
                    evaluate(module, data.test, costs, data.test_bars, data.spec.traded)["agent"]
                )
            )
    except Exception as exc:  # noqa: BLE001 -- a failing individual must not stop the search
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Evaluation(
            WORST_FITNESS, 0.0, per_seed, time.perf_counter() - started, "failed", detail
        )
    values = np.array(per_seed)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return Evaluation(float(values.mean()), std, per_seed, time.perf_counter() - started)
