"""`train-agent` flow: bars from the warehouse -> features -> Double DQN per seed -> held-out evaluation -> registry."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from core.assets import infer_asset_class
from core.configs import TrainAgentConfig, utc_midnight
from core.costs import configured_costs
from core.provenance import data_sources
from core.sessions import session_rule
from core.settings import get_settings
from flows.data_defaults import resolve_train_config, say
from models.dqn import DQNParams
from models.env import Costs
from models.features import FeatureSpec, unavailable_note
from models.qnet import Architecture
from models.registry import load_registered_genome
from models.train import PreparedData, prepare_data
from tasks.agents import train_agent_seed
from trading.baselines import momentum_label
from trading.inputs import load_training_inputs
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.registry import resolve_genome
from warehouse.summary import load_symbol_coverage
from warehouse.symbols import load_symbols

METRIC_KEYS = (
    "total_return",
    "sharpe",
    "max_drawdown",
    "trades",
    "exposure",
    "mean_session_log_return",
    "t_stat",
    "hit_rate",
)
SEED_COLUMNS = {
    "total_return": "return",
    "sharpe": "Sharpe",
    "max_drawdown": "max drawdown",
    "trades": "trades",
    "exposure": "exposure",
}
"""What the per-seed table shows, per policy (models.train.evaluate_network's keys: headers)."""
POLICY_LABELS = {
    "agent": "agent",
    "buy_and_hold": "Buy & hold",
    "momentum_rule": momentum_label(),
    "flat": "flat",
}


def _cell(key: str, value: float | None, std: float | None = None) -> str:
    if value is None or math.isnan(value):
        return "-"
    pct = key in ("total_return", "max_drawdown", "exposure")
    text = f"{100 * value:+.2f}%" if key == "total_return" else f"{100 * value:.2f}%"
    if not pct:
        text = f"{value:.0f}" if key == "trades" else f"{value:+.2f}"
    if std is not None and math.isfinite(std):
        text += f" ± {100 * std:.2f}" if pct else f" ± {std:.2f}"
    return text


def seed_rows(results: list[dict[str, Any]], table: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The agent per seed, its mean ± std over seeds, and each baseline beside it (same bars)."""
    rows: list[dict[str, str]] = []
    for r in results:
        agent = r["metrics"]["agent"]
        rows.append(
            {"policy": "agent", "seed": str(r["seed"])}
            | {label: _cell(k, float(agent[k])) for k, label in SEED_COLUMNS.items()}
        )
    for row in table:
        # Baselines do not depend on the seed: one row each, the agent's as mean ± std.
        spread = row["policy"] == "agent"
        rows.append(
            {
                "policy": POLICY_LABELS.get(row["policy"], row["policy"]),
                "seed": f"mean ± std ({len(results)})" if spread else "all",
            }
            | {
                label: _cell(k, row[k], row[f"{k}_std"] if spread else None)
                for k, label in SEED_COLUMNS.items()
            }
        )
    return rows


def summarise_seeds(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """mean +- std over seeds of each policy's held-out metrics."""
    rows = []
    for policy in results[0]["metrics"]:
        row: dict[str, Any] = {"policy": policy}
        for key in METRIC_KEYS:
            values = np.array([r["metrics"][policy][key] for r in results], dtype=np.float64)
            mean = float(values.mean())
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            # An undefined metric (a Sharpe without trades) is None: NaN != NaN would make
            # two identical runs' results compare unequal.
            row[key] = mean if math.isfinite(mean) else None
            row[f"{key}_std"] = std if math.isfinite(std) else None
        rows.append(row)
    return rows


@dataclass(frozen=True)
class _Recipe:
    """What the agents are: features, DQN params and architecture (a genome's, if one is named)."""

    spec: FeatureSpec
    params: DQNParams
    arch: Architecture
    genome: str
    """The genome's registry id, or 'builtin'."""


def _recipe(config: TrainAgentConfig, warehouse: Path, logger: Any) -> _Recipe:
    spec = FeatureSpec(
        symbols=tuple(config.symbols),
        timeframe=config.timeframe,
        sentiment_inputs=tuple(config.sentiment_inputs),
        forecast=config.forecast,
        stale_bars=config.stale_bars if len(config.symbols) > 1 else 0,
    )
    params = DQNParams.from_dict(
        {**config.params, "cycles": config.cycles, "checkpoint_every": config.checkpoint_every}
    )
    arch = Architecture.from_dict(config.architecture)
    with connect(warehouse) as con:
        genome_row = resolve_genome(con, config.genome_id, spec.traded)
    if genome_row is None:
        return _Recipe(spec, params, arch, "builtin")
    genome = load_registered_genome(genome_row)
    arch, params = genome.with_overrides(config.architecture, params, config.params)
    logger.info("architecture from %s", genome_row["model_id"])
    return _Recipe(genome.feature_spec(spec), params, arch, str(genome_row["model_id"]))


@dataclass(frozen=True)
class _Data:
    """The prepared sessions and how they were cut, charged and sourced."""

    data: PreparedData
    costs: Costs
    description: dict[str, Any]
    """What each model records of its training (ranges, calendar, episodes, sources, inputs)."""


def _data(config: TrainAgentConfig, r: _Recipe, warehouse: Path, logger: Any) -> _Data:
    """Bars, costs (the symbol's asset class), the episode rule (its stored calendar) and the
    spec's sentiment/forecast inputs as backtest and live will read them back; prepared."""
    spec = r.spec
    train = (utc_midnight(config.train_start), utc_midnight(config.train_end))
    test = (utc_midnight(config.test_start), utc_midnight(config.test_end))
    with connect(warehouse) as con:
        bars = load_bars(con, config.symbols, config.timeframe, train[0], test[1])
        stored = load_symbols(con, [spec.traded]).get(spec.traded)
    if bars.height == 0:
        raise ValueError(
            f"no {config.timeframe} bars for {config.symbols} between {config.train_start} and "
            f"{config.test_end} in {warehouse}; run ingest-bars (or make demo) first"
        )
    note = unavailable_note(bars, spec)
    if note is not None:
        say(logger, note)  # close-only series (skfolio) lack what these need
    asset_class = stored.asset_class if stored is not None else infer_asset_class(spec.traded)
    costs = configured_costs(asset_class, config.fee_bps, config.slippage_bps)
    say(logger, costs.describe(asset_class))
    rule = session_rule(
        spec.traded,
        config.timeframe,
        stored.calendar if stored is not None else None,
        flatten_at_close=config.flatten_at_close,
        episode_bars=config.episode_bars,
    )
    with connect(warehouse) as con:
        inputs = load_training_inputs(con, spec, train[0], test[1])
    for line in inputs.notes:
        say(logger, line)
    data = prepare_data(bars, spec, train, test, inputs.sentiment, inputs.forecasts, rule=rule)
    description = {
        "train_range": [str(config.train_start), str(config.train_end)],
        "test_range": [str(config.test_start), str(config.test_end)],
        "symbols": config.symbols,
        "timeframe": config.timeframe,
        "genome": r.genome,
        # How the ranges were cut: `backtest` of this model cuts its range the same way.
        "calendar": rule.calendar,
        "episode_bars": rule.episode_bars,
        # Provenance of the training bars; 'synthetic...' marks a model trained on generated data.
        "data_sources": data_sources(bars),
        # How its sentiment/forecast inputs were read (trading.inputs.input_loader reads them).
        **inputs.params,
    }
    return _Data(data, costs, description)


def _run_key(config: TrainAgentConfig, r: _Recipe, data: PreparedData) -> str:
    """The run id names the config AND the data: changed bars never resume an old run's checkpoint."""
    digest = hashlib.sha256()
    for tensor in (data.train.features, data.train.returns, data.test.returns):
        digest.update(tensor.numpy().tobytes())
    digest.update(r.genome.encode())
    return f"{config.run_key()}-{digest.hexdigest()[:8]}"


@flow(name="train-agent", log_prints=True)
def train_agent(config: TrainAgentConfig | None = None) -> dict[str, Any]:
    """Train one Double-DQN agent per seed on warehouse bars and evaluate each on held-out sessions."""
    config = config or TrainAgentConfig()
    settings = get_settings()
    logger = get_run_logger()
    warehouse = Path(config.warehouse) if config.warehouse else settings.warehouse_path
    models_dir = Path(config.models_dir) if config.models_dir else settings.data_dir / "models"
    with connect(warehouse) as con:
        coverage = load_symbol_coverage(con, list(config.symbols))
    config, using = resolve_train_config(config, coverage)
    if using is not None:
        say(logger, using)  # what the unset options became, before the long work
    r = _recipe(config, warehouse, logger)
    d = _data(config, r, warehouse, logger)
    logger.info(
        "features %s: %d training and %d held-out sessions of %s",
        r.spec.schema_hash(),
        len(d.data.train),
        len(d.data.test),
        r.spec.traded,
    )
    key = _run_key(config, r, d.data)
    results = [
        train_agent_seed(
            d.data,
            f"{key}-s{seed}",
            seed,
            r.arch,
            r.params,
            d.costs,
            models_dir,
            warehouse,
            config.resume,
            d.description,
            config.budget_s,
        )
        for seed in config.seeds
    ]
    table = summarise_seeds(results)
    rows = seed_rows(results, table)
    lines = [
        f"## train-agent {r.spec.traded} ({config.timeframe}), held-out {config.test_start} to {config.test_end}",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|---|---|" + "---:|" * len(SEED_COLUMNS),
        *("| " + " | ".join(row.values()) + " |" for row in rows),
    ]
    create_markdown_artifact(key="train-agent-evaluation", markdown="\n".join(lines))
    return {
        "symbol": r.spec.traded,
        "timeframe": config.timeframe,
        "feature_schema_hash": r.spec.schema_hash(),
        "models": [x["model_id"] for x in results],
        "evaluation": table,
        "seed_rows": rows,
        "train_sessions": len(d.data.train),
        "test_sessions": len(d.data.test),
    }


if __name__ == "__main__":
    train_agent()
