"""Evolutionary architecture search: walk-forward multi-seed fitness, selection, recombination, mutation, and the judging of the winner on disjoint folds. Pure logic.

The procedure that keeps the search honest (issue #16, item 7):

- fitness is walk-forward: K expanding folds inside the search range ([search_start,
  search_end), :func:`search_folds`), each genome trained once per seed and fold, fitness =
  mean validation objective over folds x seeds;
- the winner is judged only on a later range that overlaps no validation fold
  (:func:`check_judging_range` refuses anything else): trained on the whole search range,
  its per-bar held-out returns against the default genome trained the same way and the
  baselines, by the statistical gate (models.gate), deflated for every genome tried.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from core import metrics
from core.baselines import periods_per_year
from core.sessions import SessionRule, session_rule
from models.dqn import DQNParams
from models.env import Costs
from models.features import FeatureSpec
from models.gate import GateDecision, agent_decision
from models.genome import Genome, crossover, gene_choice, mutate, pin, random_genome
from models.threads import use_threads
from models.train import evaluate_network_with_returns, objective, prepare_data, train_dqn

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
    fixed_genes: Mapping[str, Any] = field(default_factory=dict)
    """Genes held at one value in every individual (models.genome.pin); {}: the whole space."""

    def __post_init__(self) -> None:
        for name, value in self.fixed_genes.items():
            gene_choice(name, value)  # refused before any work: a typo never searches silently


@dataclass(frozen=True)
class Scored:
    genome: Genome
    fitness: float


def initial_population(settings: SearchSettings) -> list[Genome]:
    rng = np.random.default_rng([settings.seed, 0])
    return [pin(random_genome(rng), settings.fixed_genes) for _ in range(settings.population)]


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
        children.append(pin(mutate(child, rng, settings.mutation_rate), settings.fixed_genes))
    return children


@dataclass(frozen=True)
class SearchFold:
    """One walk-forward fold of the search: train on [train), validate on [valid) right after it."""

    index: int
    train: tuple[datetime, datetime]
    valid: tuple[datetime, datetime]


def search_folds(
    start: datetime, end: datetime, k: int, first_valid: float = 0.5
) -> list[SearchFold]:
    """K expanding folds inside [start, end), cut at whole days.

    The first ``first_valid`` of the range only trains; the rest is cut into K consecutive
    validation windows of (nearly) equal days, each fold training on everything before its
    window. Calendar days rather than models.evaluation.walk_forward_folds' bar positions:
    a minute-bar fold cut by position would split a session between training and validation.
    """
    if k < 1 or not 0.0 < first_valid < 1.0:
        raise ValueError("k must be >= 1 and first_valid inside (0, 1)")
    days = (end - start).days
    first = max(1, round(days * first_valid))
    if days - first < k:
        raise ValueError(
            f"the search range {start:%Y-%m-%d} to {end:%Y-%m-%d} is too short for {k} "
            "validation folds of at least one day"
        )
    cuts = [start + timedelta(days=first + round(j * (days - first) / k)) for j in range(k + 1)]
    return [SearchFold(j, (start, cuts[j]), (cuts[j], cuts[j + 1])) for j in range(k)]


class JudgingOverlapError(ValueError):
    """The judging range overlaps the search's own data: a genome would be judged on what selected it."""


def check_judging_range(folds: Sequence[SearchFold], test_range: tuple[datetime, datetime]) -> None:
    """Refuse a judging range that overlaps any fold's training or validation days."""
    for f in folds:
        for part, (lo, hi) in (("validation", f.valid), ("training", f.train)):
            if test_range[0] < hi and lo < test_range[1]:
                raise JudgingOverlapError(
                    f"judging range {test_range[0]:%Y-%m-%d} to {test_range[1]:%Y-%m-%d} overlaps "
                    f"search fold {f.index}'s {part} days {lo:%Y-%m-%d} to {hi:%Y-%m-%d}: "
                    "a genome must not be judged on the folds that selected it"
                )


@dataclass
class Evaluation:
    """One individual's result: fitness over folds x seeds, its spread, how long, and how it ended."""

    fitness: float
    """Mean validation objective over every fold and seed."""
    fitness_std: float
    """Standard deviation of the fold x seed objectives."""
    per_seed: list[float] = field(default_factory=list)
    """Each seed's objective, averaged over the folds (empty unless every run finished)."""
    seconds: float = 0.0
    status: str = "ok"
    error: str | None = None
    per_fold: list[float] = field(default_factory=list)
    """Each fold's objective, averaged over the seeds."""
    per_fold_seed: list[list[float]] = field(default_factory=list)
    """objective[fold][seed], in the order of the folds and seeds given."""
    sharpe: float = math.nan
    """Mean annualised Sharpe ratio of the per-bar validation returns (recorded as the trial's)."""
    n_obs: int = 0
    """Validation bars over the folds (one seed's)."""
    bars_per_year: float = math.nan
    """Of the validation streams (held-out bars per session x sessions per year)."""


def evaluate_genome(
    genome: Genome,
    bars: pl.DataFrame,
    base_spec: FeatureSpec,
    folds: Sequence[SearchFold],
    base_params: DQNParams,
    costs: Costs,
    seeds: list[int],
    timeout_s: float | None,
    rule: SessionRule | None = None,
    sentiment: pl.DataFrame | None = None,
    threads: int = 1,
) -> Evaluation:
    """Train the genome once per fold and seed at a fixed budget; fitness = mean validation objective.

    Each fold trains on its own (expanding) training days, its scaler fitted there, and is
    scored on the validation days right after them; the mean over folds x seeds is the
    fitness, so a genome that was lucky in one month or with one seed does not win.
    `rule` cuts both ranges into episodes as `train` cuts them (core.sessions.session_rule
    from the symbol's stored calendar); None infers it from the traded symbol and timeframe.
    `sentiment` (ts, symbol, sentiment) feeds a spec with sentiment=True (models.train.prepare_data;
    the benchmark's planted-signal market). `timeout_s` bounds the whole individual. Never raises: a crash or a timeout scores
    WORST_FITNESS with its reason, so the search goes on. `threads`: torch threads for it.
    """
    # `threads` torch threads: the worker's share of the cores (models.threads.task_threads),
    # one count chosen by the flow for every runner, so results do not depend on the runner.
    use_threads(threads)
    started = time.perf_counter()
    grid: list[list[float]] = []
    sharpes: list[float] = []
    n_obs, per_year = 0, math.nan
    try:
        if not folds or not seeds:
            raise ValueError("evaluate_genome needs at least one fold and one seed")
        spec = genome.feature_spec(base_spec)
        if rule is None:
            rule = session_rule(spec.traded, spec.timeframe)
        params = genome.params(base_params)
        for fold in folds:
            data = prepare_data(bars, spec, fold.train, fold.valid, sentiment, rule=rule)
            row: list[float] = []
            for seed in seeds:
                remaining = (
                    None
                    if timeout_s is None
                    else max(0.0, timeout_s - (time.perf_counter() - started))
                )
                module, history = train_dqn(
                    data.train, genome.architecture(), params, costs, seed, budget_s=remaining
                )
                if len(history) < params.cycles:
                    return Evaluation(
                        WORST_FITNESS, 0.0, [], time.perf_counter() - started, "timeout",
                        f"over the {timeout_s} s budget after {len(history)} of {params.cycles} "
                        f"cycles (fold {fold.index}, seed {seed})",
                        per_fold_seed=grid,
                    )  # fmt: skip
                table, returns = evaluate_network_with_returns(
                    module.online, data.test, costs, data.test_bars, data.spec.traded
                )
                row.append(objective(table["agent"]))
                sessions = max(float(table["agent"]["sessions"]), 1.0)
                agent = returns["agent"]
                per_year = agent.size / sessions * periods_per_year(spec.traded)
                sharpes.append(metrics.sharpe(agent, per_year) if np.any(agent) else 0.0)
            n_obs += int(agent.size)
            grid.append(row)
    except Exception as exc:  # noqa: BLE001 -- a failing individual must not stop the search
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Evaluation(
            WORST_FITNESS, 0.0, [], time.perf_counter() - started, "failed", detail,
            per_fold_seed=grid,
        )  # fmt: skip
    values = np.array(grid, dtype=np.float64)  # folds x seeds
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    finite = [x for x in sharpes if math.isfinite(x)]
    return Evaluation(
        float(values.mean()),
        std,
        [float(x) for x in values.mean(axis=0)],
        time.perf_counter() - started,
        per_fold=[float(x) for x in values.mean(axis=1)],
        per_fold_seed=[[float(x) for x in r] for r in grid],
        sharpe=float(np.mean(finite)) if finite else math.nan,
        n_obs=n_obs,
        bars_per_year=per_year,
    )


@dataclass(frozen=True)
class JudgingStreams:
    """A genome trained on the search range, its per-bar returns on the judging range beside the baselines'."""

    returns: dict[str, npt.NDArray[np.float64]]
    """'agent' (the mean over seeds, bar by bar: an equal-weight book of the seeds' agents)
    and each baseline (models.train.held_out_returns' keys)."""
    table: dict[str, dict[str, float]]
    """evaluate_network's table of the first seed (the baselines are the same for every seed)."""
    bars_per_year: float


def judging_streams(
    genome: Genome,
    bars: pl.DataFrame,
    base_spec: FeatureSpec,
    folds: Sequence[SearchFold],
    test_range: tuple[datetime, datetime],
    base_params: DQNParams,
    costs: Costs,
    seeds: list[int],
    rule: SessionRule | None = None,
) -> JudgingStreams:
    """Train on the whole search range (every fold's days), evaluate on the judging range only.

    Raises JudgingOverlapError when the judging range overlaps any fold (see
    check_judging_range): the winner must be judged on days that did not select it.
    """
    check_judging_range(folds, test_range)
    train_range = (folds[0].train[0], max(f.valid[1] for f in folds))
    spec = genome.feature_spec(base_spec)
    if rule is None:
        rule = session_rule(spec.traded, spec.timeframe)
    data = prepare_data(bars, spec, train_range, test_range, rule=rule)
    params = genome.params(base_params)
    streams: list[npt.NDArray[np.float64]] = []
    first: tuple[dict[str, dict[str, float]], dict[str, npt.NDArray[np.float64]]] | None = None
    for seed in seeds:
        module, _ = train_dqn(data.train, genome.architecture(), params, costs, seed)
        table, returns = evaluate_network_with_returns(
            module.online, data.test, costs, data.test_bars, spec.traded
        )
        first = first or (table, returns)
        streams.append(np.asarray(returns["agent"], dtype=np.float64))
    if first is None:
        raise ValueError("judging_streams needs at least one seed")
    table, returns = first
    out = {k: np.asarray(v, dtype=np.float64) for k, v in returns.items()}
    out["agent"] = np.mean(np.vstack(streams), axis=0)
    sessions = max(float(table["agent"]["sessions"]), 1.0)
    per_year = out["agent"].size / sessions * periods_per_year(spec.traded)
    return JudgingStreams(out, table, per_year)


def judge_genome(
    candidate_id: str,
    symbol: str,
    candidate: JudgingStreams,
    champion: JudgingStreams,
    test_range: tuple[datetime, datetime],
    n_trials: int,
    trial_sharpes: npt.ArrayLike | None = None,
    *,
    champion_id: str = "default-genome",
    alpha: float = 0.05,
    dsr_min: float = 0.95,
    drawdown_margin: float = 0.02,
    details: dict[str, object] | None = None,
) -> GateDecision:
    """The statistical gate (models.gate.agent_decision) for the search's winner on the judging range.

    The candidate must beat the champion (the default genome trained the same way) and every
    baseline with SPA p <= alpha, with a deflated Sharpe ratio >= dsr_min over ``n_trials``
    (every genome the search evaluated), within the drawdown margin.
    """
    c, ch = candidate.returns["agent"], champion.returns["agent"]
    if c.size != ch.size:
        raise ValueError(
            f"the candidate has {c.size} judging bars, the champion {ch.size}: not the same bars"
        )
    return agent_decision(
        candidate_id=candidate_id,
        kind="genome",
        symbol=symbol,
        candidate_returns=c,
        baseline_returns={k: v for k, v in candidate.returns.items() if k != "agent"},
        periods_per_year=candidate.bars_per_year,
        n_trials=max(1, n_trials),
        trial_sharpes=trial_sharpes,
        champion_id=champion_id,
        champion_returns=ch,
        alpha=alpha,
        dsr_min=dsr_min,
        drawdown_margin=drawdown_margin,
        eval_start=test_range[0],
        eval_end=test_range[1],
        details={
            **(details or {}),
            "candidate": dict(candidate.table["agent"]),
            "champion": dict(champion.table["agent"]),
            "baselines": {k: dict(v) for k, v in candidate.table.items() if k != "agent"},
        },
    )
