"""The steps of the evolve-architecture flow (flows/evolve.py orchestrates them): the search's
settings and folds, each generation scored through the task runner and stored, the winner
judged on the later, disjoint judging range by the statistical gate, and registered."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from core import metrics as core_metrics
from core.assets import infer_asset_class
from core.baselines import periods_per_year
from core.configs import EvolveConfig, utc_midnight
from core.costs import configured_costs
from core.provenance import data_sources
from core.sessions import SessionRule, session_rule
from core.settings import get_settings
from models.dqn import DQNParams
from models.env import Costs
from models.features import FeatureSpec
from models.gate import GateDecision
from models.genome import Genome, default_genome
from models.search import (
    JudgingOverlapError,
    SearchFold,
    SearchSettings,
    judge_genome,
    judging_streams,
    search_folds,
)
from models.threads import runner_threads
from tasks.search import evaluate_individual
from trading.alerts import send_gate_verdicts
from warehouse.db import connect
from warehouse.gate import write_promotion_decisions
from warehouse.registry import promote, write_model
from warehouse.search import generation_summary, write_individual
from warehouse.symbols import load_symbols
from warehouse.trials import load_trial_sharpes, record_trial


@dataclass(frozen=True)
class Search:
    """One search's fixed parts: its settings, data ranges and folds, costs and episode rule."""

    id: str
    settings: SearchSettings
    spec: FeatureSpec
    base: dict[str, Any]
    """The DQN params every individual trains with (its genome changes the rest)."""
    search_range: tuple[datetime, datetime]
    test_range: tuple[datetime, datetime]
    folds: list[SearchFold]
    costs: dict[str, Any]
    rule: dict[str, Any]
    threads: int


def start_search(config: EvolveConfig, warehouse: str, logger: Any) -> Search:
    settings = SearchSettings(
        config.population,
        config.generations,
        config.elite,
        config.tournament,
        config.mutation_rate,
        config.search_seed,
        config.fixed_genes,
    )
    spec = FeatureSpec(symbols=tuple(config.symbols), timeframe=config.timeframe)
    search_range = (utc_midnight(config.search_start), utc_midnight(config.search_end))
    test_range = (utc_midnight(config.test_start), utc_midnight(config.test_end))
    folds = search_folds(*search_range, config.folds)
    logger.info(
        "fitness folds (train -> validation): %s; judging range %s to %s",
        "; ".join(f"{_day(f.train[0])}..{_day(f.train[1])} -> {_day(f.valid[1])}" for f in folds),
        _day(test_range[0]),
        _day(test_range[1]),
    )
    with connect(warehouse) as con:
        info = load_symbols(con, [spec.traded]).get(spec.traded)
    # Costs follow the symbol's asset class (stored at import, else inferred from its name).
    asset_class = info.asset_class if info is not None else infer_asset_class(spec.traded)
    cost_model = configured_costs(asset_class, config.fee_bps, config.slippage_bps)
    logger.info(cost_model.describe(asset_class))
    # Episodes as `train` cuts them: the timeframe and the calendar stored with the symbol.
    rule = session_rule(spec.traded, spec.timeframe, info.calendar if info is not None else None)
    # Torch threads per evaluation: this machine's cores shared by the workers (1 on an
    # existing Dask cluster, Dask's own rule); one count for every runner.
    threads = runner_threads(config.workers, config.runner == "dask" and bool(config.dask_address))
    return Search(
        config.search_id(),
        settings,
        spec,
        DQNParams(cycles=config.cycles, checkpoint_every=config.cycles).to_dict(),
        search_range,
        test_range,
        folds,
        asdict(cost_model),
        asdict(rule),
        threads,
    )


def _individual_row(
    search_id: str, gen: int, i: int, genome: Genome, ev: dict[str, Any]
) -> dict[str, Any]:
    """An evaluated individual as nas_individuals stores it."""
    return {
        "search_id": search_id,
        "generation": gen,
        "individual": i,
        "genome": genome.to_dict(),
        "genome_hash": genome.hash(),
        "fitness": ev["fitness"],
        "fitness_std": ev["fitness_std"],
        "fitness_per_seed": ev["per_seed"],
        "train_seconds": ev["seconds"],
        "status": ev["status"],
        "error": ev["error"],
        "created_at": datetime.now(UTC),
    }


def score_generation(
    s: Search,
    config: EvolveConfig,
    gen: int,
    population: list[Genome],
    stored: list[dict[str, Any]],
    bars: pl.DataFrame,
    warehouse: str,
    per_fold: dict[tuple[int, int], list[float]],
    logger: Any,
) -> dict[int, dict[str, Any]]:
    """Every individual of the generation scored (those stored by an interrupted run reused,
    checked against a replay of the search), each stored and recorded as a trial at once."""
    done = {r["individual"]: r for r in stored if r["generation"] == gen}
    for i, r in done.items():
        if r["genome_hash"] != population[i].hash():
            raise RuntimeError(
                f"{s.id}: stored generation {gen} differs from a replay of the search"
            )
    futures = {
        i: evaluate_individual.submit(
            gen,
            i,
            g.to_dict(),
            bars,
            s.spec.to_dict(),
            [asdict(f) for f in s.folds],
            s.base,
            s.costs,
            config.seeds,
            config.individual_timeout_s,
            s.rule,
            s.threads,
        )
        # Largest first: two workers finish a generation together instead of one waiting.
        for i, g in sorted(enumerate(population), key=lambda ig: -ig[1].cost())
        if i not in done
    }
    rows = dict(done)
    for i, future in futures.items():
        ev = future.result()
        row = _individual_row(s.id, gen, i, population[i], ev)
        with connect(warehouse) as con:
            write_individual(con, row)
            _record_search_trial(con, s.spec.traded, s.id, s.search_range, row, ev)
        rows[i] = row
        per_fold[(gen, i)] = ev["per_fold"]
        if ev["status"] != "ok":
            logger.warning("gen %d individual %d %s: %s", gen, i, ev["status"], ev["error"])
    return rows


def generation_artifact(
    s: Search,
    gen: int,
    ranked: list[dict[str, Any]],
    per_fold: dict[tuple[int, int], list[float]],
    n_seeds: int,
) -> None:
    """The generation's five best as a markdown artifact."""
    lines = [
        f"## {s.id}, generation {gen}",
        "",
        f"fitness = mean over {len(s.folds)} folds x {n_seeds} seeds",
        "",
        "| rank | individual | fitness | std | per fold | status | genome |",
        "|---:|---:|---:|---:|---|---|---|",
    ]
    for rank, r in enumerate(ranked[:5], start=1):
        folds_text = ", ".join(f"{x:.4f}" for x in per_fold.get((gen, r["individual"]), []))
        lines.append(
            f"| {rank} | {r['individual']} | {r['fitness']:.4f} | {r['fitness_std']:.4f} "
            f"| {folds_text or 'stored'} | {r['status']} "
            f"| `{json.dumps(r['genome'], sort_keys=True)}` |"
        )
    create_markdown_artifact(key=f"evolve-gen-{gen}", markdown="\n".join(lines))


def judge_winner(
    s: Search,
    config: EvolveConfig,
    everyone: list[dict[str, Any]],
    per_fold: dict[tuple[int, int], list[float]],
    bars: pl.DataFrame,
    warehouse: str,
    logger: Any,
) -> dict[str, Any]:
    """The best individual plotted, judged on the judging range, registered (register_best) and
    its verdict stored; the search's result."""
    best = best_evaluated(everyone, s.id)
    with connect(warehouse) as con:
        summary = generation_summary(con, s.id)
    sources = data_sources(bars)
    label = f"{s.spec.traded} {s.spec.timeframe}, data: {', '.join(sources)}"
    if any(src.startswith("synthetic") for src in sources):
        label += " (SYNTHETIC)"
    plot = _plot_fitness(summary, s.id, label, get_settings().data_dir / "reports")
    decision, note = _judge(
        config, best, bars, s.spec, s.folds, s.test_range, s.base, s.costs, s.rule, warehouse
    )
    registered = (
        _register_genome(best, s.spec, warehouse, s.id, decision) if config.register_best else None
    )
    verdict = _store_verdict(warehouse, decision, registered, note)
    logger.info(
        "judging %s to %s: %s", _day(s.test_range[0]), _day(s.test_range[1]), verdict["line"]
    )
    best_fields = ("generation", "individual", "genome", "genome_hash", "fitness", "fitness_std")
    return {
        "search_id": s.id,
        "best": {k: best[k] for k in best_fields}
        | {"fitness_per_fold": per_fold.get((best["generation"], best["individual"]))},
        "generations": summary.to_dicts(),
        "plot": str(plot),
        "registered": registered,
        "folds": [
            {
                "train": [_day(f.train[0]), _day(f.train[1])],
                "valid": [_day(f.valid[0]), _day(f.valid[1])],
            }
            for f in s.folds
        ],
        "verdict": verdict,
    }


def _day(ts: datetime) -> str:
    return f"{ts:%Y-%m-%d}"


def _record_search_trial(
    con: Any,
    symbol: str,
    search_id: str,
    search_range: tuple[datetime, datetime],
    row: dict[str, Any],
    ev: dict[str, Any],
) -> None:
    """One individual as a trial on the search range (an elite re-scored later is the same trial)."""
    per_year = float(ev.get("bars_per_year") or math.nan)
    record_trial(
        con,
        kind="genome",
        dataset=symbol,
        data_start=search_range[0],
        data_end=search_range[1],
        config={"search_id": search_id, "stage": "search"},
        genome=row["genome"],
        sharpe=float(ev.get("sharpe", math.nan)),
        n_obs=int(ev.get("n_obs") or 0),
        # A failed individual has no stream: its trial counts, with the symbol's days per year.
        periods_per_year=per_year if per_year > 0 else periods_per_year(symbol),
        created_at=datetime.now(UTC),
    )


def _judge(
    config: EvolveConfig,
    best: dict[str, Any],
    bars: pl.DataFrame,
    spec: FeatureSpec,
    folds: list[SearchFold],
    test_range: tuple[datetime, datetime],
    base: dict[str, Any],
    costs: dict[str, float],
    rule: dict[str, Any],
    warehouse: str,
) -> tuple[GateDecision | None, str | None]:
    """The winner against the default genome and the baselines on the judging range (models.search).

    Both are trained on the whole search range with the search's seeds and budget. Returns
    the gate's decision, or None and why when the judging range cannot be evaluated (e.g.
    no bars there): the winner is then not promoted. An overlap with the search's folds is
    never caught: it is a broken procedure, not a missing day.
    """
    genome = Genome.from_dict(best["genome"])
    args = (bars, spec, folds, test_range, DQNParams.from_dict(base), Costs(**costs), config.seeds)
    try:
        candidate = judging_streams(genome, *args, SessionRule(**rule))
        champion = judging_streams(default_genome(), *args, SessionRule(**rule))
    except JudgingOverlapError:
        raise
    except Exception as exc:  # noqa: BLE001 -- no judging data: reported, and nothing promoted
        return None, f"not judged: {' '.join(str(exc).split())[:300]}"
    search_id = config.search_id()
    with connect(warehouse) as con:
        record_trial(
            con,
            kind="genome",
            dataset=spec.traded,
            data_start=test_range[0],
            data_end=test_range[1],
            config={"search_id": search_id, "stage": "judging"},
            genome=best["genome"],
            sharpe=core_metrics.sharpe(candidate.returns["agent"], candidate.bars_per_year),
            n_obs=int(candidate.returns["agent"].size),
            periods_per_year=candidate.bars_per_year,
            created_at=datetime.now(UTC),
        )
        trials = load_trial_sharpes(con, spec.traded, "genome")
    sharpes = trials.get_column("sharpe").drop_nulls().to_numpy()
    decision = judge_genome(
        f"genome-{genome.hash()}",
        spec.traded,
        candidate,
        champion,
        test_range,
        n_trials=trials.height,
        trial_sharpes=sharpes if sharpes.size >= 2 else None,
        champion_id=f"default-genome-{default_genome().hash()}",
        details={"search_id": search_id, "search_fitness": best["fitness"]},
    )
    return decision, None


def _store_verdict(
    warehouse: str, decision: GateDecision | None, registered: str | None, note: str | None
) -> dict[str, Any]:
    """Store the decision (promotion_decisions); promote a registered winner only if it passed."""
    if decision is None:
        return {"judged": False, "passed": False, "promoted": False, "line": note or "not judged"}
    now = datetime.now(UTC)
    passed = decision.verdict.passed
    promoted = passed and registered is not None
    with connect(warehouse) as con:
        if promoted and registered is not None:
            promote(con, registered, now, actor="gate", reason=decision.verdict.reason)
        write_promotion_decisions(
            con, [decision.row(now, str(flow_run.id) if flow_run.id else None, promoted)]
        )
    send_gate_verdicts([decision], {decision.candidate_id: promoted})
    head = "PROMOTED" if promoted else ("passed" if passed else "rejected")
    return {
        "judged": True,
        "passed": passed,
        "promoted": promoted,
        "reason": decision.verdict.reason,
        **decision.statistics,
        "candidate_sharpe": decision.candidate.objective,
        "champion_sharpe": decision.reference.objective,
        "line": f"{decision.candidate_id} {head}: {decision.verdict.reason}",
    }


class SearchFailedError(RuntimeError):
    """Every individual of a search failed: there is no genome to report or register."""


def best_evaluated(everyone: list[dict[str, Any]], search_id: str) -> dict[str, Any]:
    """The fittest individual that was evaluated; a failed one (scored -1e9) is never the best."""
    evaluated = [r for r in everyone if r["status"] == "ok" and math.isfinite(float(r["fitness"]))]
    if evaluated:
        return max(evaluated, key=lambda r: r["fitness"])
    first = min(everyone, key=lambda r: (r["generation"], r["individual"]))
    reason = " ".join(str(first["error"] or first["status"]).split())[:300]
    raise SearchFailedError(
        f"{search_id}: all {len(everyone)} individuals failed, nothing registered; "
        f"generation {first['generation']} individual {first['individual']}: {reason} "
        "(see select status, error from nas_individuals)"
    )


def _plot_fitness(summary: pl.DataFrame, search_id: str, label: str, folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    gens = summary["generation"].to_list()
    ax.plot(gens, summary["best"].to_list(), marker="o", label="best")
    ax.plot(gens, summary["median"].to_list(), marker="s", label="median")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (mean over folds x seeds of\nvalidation return - max drawdown)")
    ax.set_title(f"{search_id}: fitness by generation\n{label}", fontsize=9)
    ax.set_xticks(gens)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = folder / f"{search_id}-fitness.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _register_genome(
    best: dict[str, Any],
    spec: FeatureSpec,
    warehouse: str,
    search_id: str,
    decision: GateDecision | None,
) -> str:
    """The best genome as a registry candidate, with the gate's numbers; promoted later only if it passed."""
    genome = Genome.from_dict(best["genome"])
    model_id = f"genome-{genome.hash()}"
    path = get_settings().data_dir / "models" / f"{model_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(genome.to_dict(), indent=2, sort_keys=True))
    with connect(warehouse) as con:
        write_model(
            con,
            {
                "model_id": model_id,
                "kind": "genome",
                "symbol": spec.traded,
                "feature_schema_hash": genome.feature_spec(spec).schema_hash(),
                "architecture": genome.to_dict(),
                "params": {"search_id": search_id},
                "metrics": {
                    "objective": best["fitness"],
                    "fitness_std": best["fitness_std"],
                    "gate_passed": None if decision is None else decision.verdict.passed,
                    **({} if decision is None else decision.statistics),
                },
                "artifact_path": str(path),
                "artifact_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "stage": "candidate",
                "created_at": datetime.now(UTC),
                "promoted_at": None,
            },
        )
    return model_id
