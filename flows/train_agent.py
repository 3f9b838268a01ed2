"""`train-agent` flow: bars from the warehouse -> features -> Double DQN per seed -> held-out evaluation -> registry."""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from core.assets import infer_asset_class
from core.costs import configured_costs
from core.sessions import session_rule
from core.settings import get_settings
from flows.config import TrainAgentConfig, utc_midnight
from flows.data_defaults import resolve_train_config
from models.dqn import DQNParams
from models.features import FeatureSpec, unavailable_note
from models.qnet import Architecture
from models.registry import load_registered_genome
from models.train import prepare_data
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
        # Once, on the console before the long work: what the unset options became.
        sys.stderr.write(using + "\n")
        logger.info(using)
    spec = FeatureSpec(
        symbols=tuple(config.symbols),
        timeframe=config.timeframe,
        sentiment_inputs=tuple(config.sentiment_inputs),
        forecast=config.forecast,
    )
    params = DQNParams.from_dict(
        {**config.params, "cycles": config.cycles, "checkpoint_every": config.checkpoint_every}
    )
    arch = Architecture.from_dict(config.architecture)
    genome_used = "builtin"
    with connect(warehouse) as con:
        genome_row = resolve_genome(con, config.genome_id, spec.traded)
    if genome_row is not None:
        genome = load_registered_genome(genome_row)
        genome_used = str(genome_row["model_id"])
        spec = genome.feature_spec(spec)
        arch, params = genome.with_overrides(config.architecture, params, config.params)
        logger.info("architecture from %s", genome_used)
    with connect(warehouse) as con:
        bars = load_bars(
            con,
            config.symbols,
            config.timeframe,
            utc_midnight(config.train_start),
            utc_midnight(config.test_end),
        )
    if bars.height == 0:
        raise ValueError(
            f"no {config.timeframe} bars for {config.symbols} between {config.train_start} and "
            f"{config.test_end} in {warehouse}; run ingest-bars (or make demo) first"
        )
    note = unavailable_note(bars, spec)
    if note is not None:
        # Once, on the console too: close-only series (skfolio) lack what these need.
        sys.stderr.write(note + "\n")
        logger.info(note)
    with connect(warehouse) as con:
        stored = load_symbols(con, [spec.traded]).get(spec.traded)
    # Costs follow the symbol's asset class (stored at import, else inferred from its name).
    asset_class = stored.asset_class if stored is not None else infer_asset_class(spec.traded)
    costs = configured_costs(asset_class, config.fee_bps, config.slippage_bps)
    sys.stderr.write(costs.describe(asset_class) + "\n")
    logger.info(costs.describe(asset_class))
    # Episodes and the end-of-session rule follow the timeframe and the symbol's stored calendar.
    rule = session_rule(
        spec.traded,
        config.timeframe,
        stored.calendar if stored is not None else None,
        flatten_at_close=config.flatten_at_close,
        episode_bars=config.episode_bars,
    )
    # The spec's sentiment and forecast inputs (the genome's spec may ask for them too), as
    # backtest and live trading will read them back through trading.inputs.input_loader.
    with connect(warehouse) as con:
        inputs = load_training_inputs(
            con, spec, utc_midnight(config.train_start), utc_midnight(config.test_end)
        )
    for line in inputs.notes:
        sys.stderr.write(line + "\n")
        logger.info(line)
    data = prepare_data(
        bars,
        spec,
        (utc_midnight(config.train_start), utc_midnight(config.train_end)),
        (utc_midnight(config.test_start), utc_midnight(config.test_end)),
        inputs.sentiment,
        inputs.forecasts,
        rule=rule,
    )
    logger.info(
        "features %s: %d training and %d held-out sessions of %s",
        spec.schema_hash(),
        len(data.train),
        len(data.test),
        spec.traded,
    )
    # The run id names the config AND the data: changed bars never resume an old run's checkpoint.
    fingerprint = hashlib.sha256()
    for tensor in (data.train.features, data.train.returns, data.test.returns):
        fingerprint.update(tensor.numpy().tobytes())
    fingerprint.update(genome_used.encode())
    key = f"{config.run_key()}-{fingerprint.hexdigest()[:8]}"
    description = {
        "train_range": [str(config.train_start), str(config.train_end)],
        "test_range": [str(config.test_start), str(config.test_end)],
        "symbols": config.symbols,
        "timeframe": config.timeframe,
        "genome": genome_used,
        # How the ranges were cut: `backtest` of this model cuts its range the same way.
        "calendar": rule.calendar,
        "episode_bars": rule.episode_bars,
        # Provenance of the training bars; 'synthetic...' marks a model trained on generated data.
        "data_sources": sorted(str(x) for x in bars.get_column("source").unique().to_list()),
        # How its sentiment/forecast inputs were read (trading.inputs.input_loader reads them).
        **inputs.params,
    }
    results = [
        train_agent_seed(
            data,
            f"{key}-s{seed}",
            seed,
            arch,
            params,
            costs,
            models_dir,
            warehouse,
            config.resume,
            description,
            config.budget_s,
        )
        for seed in config.seeds
    ]
    table = summarise_seeds(results)
    rows = seed_rows(results, table)
    lines = [
        f"## train-agent {spec.traded} ({config.timeframe}), held-out {config.test_start} to {config.test_end}",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|---|---|" + "---:|" * len(SEED_COLUMNS),
        *("| " + " | ".join(row.values()) + " |" for row in rows),
    ]
    create_markdown_artifact(key="train-agent-evaluation", markdown="\n".join(lines))
    return {
        "symbol": spec.traded,
        "timeframe": config.timeframe,
        "feature_schema_hash": spec.schema_hash(),
        "models": [r["model_id"] for r in results],
        "evaluation": table,
        "seed_rows": rows,
        "train_sessions": len(data.train),
        "test_sessions": len(data.test),
    }


if __name__ == "__main__":
    train_agent()
