"""`evolve-architecture` flow: an evolutionary search of the Q-network, individuals evaluated in parallel."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from core.assets import infer_asset_class
from core.costs import configured_costs
from core.sessions import session_rule
from core.settings import get_settings
from flows.config import EvolveConfig, utc_midnight
from flows.wiring import build_task_runner, share_api_with_workers
from models.dqn import DQNParams
from models.features import FeatureSpec
from models.genome import Genome
from models.search import Scored, SearchSettings, initial_population, next_generation
from tasks.search import evaluate_individual
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.registry import write_model
from warehouse.search import generation_summary, load_individuals, write_individual
from warehouse.symbols import load_symbols


@flow(name="evolve-architecture-generations")
def search_generations(config: EvolveConfig, bars: pl.DataFrame, warehouse: str) -> dict[str, Any]:
    """Run (or resume) the generations; each individual is stored as soon as it is scored."""
    logger = get_run_logger()
    settings = SearchSettings(
        config.population,
        config.generations,
        config.elite,
        config.tournament,
        config.mutation_rate,
        config.search_seed,
    )
    search_id = config.search_id()
    spec = FeatureSpec(symbols=tuple(config.symbols), timeframe=config.timeframe)
    base = DQNParams(cycles=config.cycles, checkpoint_every=config.cycles).to_dict()
    train_range = (utc_midnight(config.train_start), utc_midnight(config.train_end))
    valid_range = (utc_midnight(config.valid_start), utc_midnight(config.valid_end))
    with connect(warehouse) as con:
        stored = load_individuals(con, search_id)
        info = load_symbols(con, [spec.traded]).get(spec.traded)
    # Costs follow the symbol's asset class (stored at import, else inferred from its name).
    asset_class = info.asset_class if info is not None else infer_asset_class(spec.traded)
    cost_model = configured_costs(asset_class, config.fee_bps, config.slippage_bps)
    logger.info(cost_model.describe(asset_class))
    costs = asdict(cost_model)
    # Episodes as `train` cuts them: the timeframe and the calendar stored with the symbol.
    rule = asdict(
        session_rule(spec.traded, spec.timeframe, info.calendar if info is not None else None)
    )
    if stored:
        logger.info("resuming %s: %d individuals already scored", search_id, len(stored))
    population = initial_population(settings)
    everyone: list[dict[str, Any]] = []
    for gen in range(settings.generations):
        done = {r["individual"]: r for r in stored if r["generation"] == gen}
        for i, r in done.items():
            if r["genome_hash"] != population[i].hash():
                raise RuntimeError(
                    f"{search_id}: stored generation {gen} differs from a replay of the search"
                )
        futures = {
            i: evaluate_individual.submit(
                gen,
                i,
                g.to_dict(),
                bars,
                spec.to_dict(),
                train_range,
                valid_range,
                base,
                costs,
                config.seeds,
                config.individual_timeout_s,
                rule,
            )
            # Largest first: two workers finish a generation together instead of one waiting.
            for i, g in sorted(enumerate(population), key=lambda ig: -ig[1].cost())
            if i not in done
        }
        rows = dict(done)
        for i, future in futures.items():
            ev = future.result()
            row = {
                "search_id": search_id,
                "generation": gen,
                "individual": i,
                "genome": population[i].to_dict(),
                "genome_hash": population[i].hash(),
                "fitness": ev["fitness"],
                "fitness_std": ev["fitness_std"],
                "fitness_per_seed": ev["per_seed"],
                "train_seconds": ev["seconds"],
                "status": ev["status"],
                "error": ev["error"],
                "created_at": datetime.now(UTC),
            }
            with connect(warehouse) as con:
                write_individual(con, row)
            rows[i] = row
            if ev["status"] != "ok":
                logger.warning("gen %d individual %d %s: %s", gen, i, ev["status"], ev["error"])
        ranked = sorted(rows.values(), key=lambda r: r["fitness"], reverse=True)
        everyone += ranked
        lines = [
            f"## {search_id}, generation {gen}",
            "",
            "| rank | individual | fitness | std | status | genome |",
            "|---:|---:|---:|---:|---|---|",
        ]
        for rank, r in enumerate(ranked[:5], start=1):
            lines.append(
                f"| {rank} | {r['individual']} | {r['fitness']:.4f} | {r['fitness_std']:.4f} | {r['status']} "
                f"| `{json.dumps(r['genome'], sort_keys=True)}` |"
            )
        create_markdown_artifact(key=f"evolve-gen-{gen}", markdown="\n".join(lines))
        logger.info(
            "generation %d: best fitness %.4f (%s)",
            gen,
            ranked[0]["fitness"],
            ranked[0]["genome_hash"],
        )
        if gen + 1 < settings.generations:
            scored = [
                Scored(population[i], float(rows[i]["fitness"])) for i in range(len(population))
            ]
            population = next_generation(scored, gen + 1, settings)

    best = _best_evaluated(everyone, search_id)
    with connect(warehouse) as con:
        summary = generation_summary(con, search_id)
    sources = sorted(set(bars.get_column("source").unique().to_list()))
    label = f"{spec.traded} {spec.timeframe}, data: {', '.join(sources)}"
    if any(str(src).startswith("synthetic") for src in sources):
        label += " (SYNTHETIC)"
    plot = _plot_fitness(summary, search_id, label, get_settings().data_dir / "reports")
    registered = (
        _register_genome(best, spec, warehouse, search_id) if config.register_best else None
    )
    return {
        "search_id": search_id,
        "best": {
            k: best[k]
            for k in ("generation", "individual", "genome", "genome_hash", "fitness", "fitness_std")
        },
        "generations": summary.to_dicts(),
        "plot": str(plot),
        "registered": registered,
    }


class SearchFailedError(RuntimeError):
    """Every individual of a search failed: there is no genome to report or register."""


def _best_evaluated(everyone: list[dict[str, Any]], search_id: str) -> dict[str, Any]:
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
    ax.set_ylabel("fitness (validation return - max drawdown)")
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
    best: dict[str, Any], spec: FeatureSpec, warehouse: str, search_id: str
) -> str:
    """The best genome as a registry candidate; `tradingml promote` makes it train-agent's default."""
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
                "metrics": {"objective": best["fitness"], "fitness_std": best["fitness_std"]},
                "artifact_path": str(path),
                "artifact_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "stage": "candidate",
                "created_at": datetime.now(UTC),
                "promoted_at": None,
            },
        )
    return model_id


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
            utc_midnight(config.train_start),
            utc_midnight(config.valid_end),
        )
    if bars.height == 0:
        raise ValueError(
            f"no {config.timeframe} bars for {config.symbols} in {warehouse}; run ingest-bars first"
        )
    share_api_with_workers()
    scratch = Path(tempfile.mkdtemp(prefix="tradingml-dask-"))
    runner = build_task_runner(config.runner, config.workers, config.dask_address, scratch)
    return search_generations.with_options(task_runner=runner)(config, bars, warehouse)


if __name__ == "__main__":
    evolve_architecture()
