"""`train-agent` flow: bars from the warehouse -> features -> Double DQN per seed -> held-out evaluation -> registry."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from core.settings import get_settings
from flows.config import TrainAgentConfig, utc_midnight
from models.dqn import DQNParams
from models.env import Costs
from models.features import FeatureSpec
from models.qnet import Architecture
from models.registry import load_registered_genome
from models.train import prepare_data
from tasks.agents import train_agent_seed
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.registry import resolve_genome

METRIC_KEYS = ("total_return", "mean_session_log_return", "t_stat", "hit_rate", "max_drawdown")


def summarise_seeds(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """mean +- std over seeds of each policy's held-out metrics."""
    rows = []
    for policy in results[0]["metrics"]:
        row: dict[str, Any] = {"policy": policy}
        for key in METRIC_KEYS:
            values = np.array([r["metrics"][policy][key] for r in results])
            row[key] = float(values.mean())
            row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
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
    spec = FeatureSpec(symbols=tuple(config.symbols), timeframe=config.timeframe)
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
        arch = Architecture.from_dict({**genome.architecture().to_dict(), **config.architecture})
        params = DQNParams.from_dict({**genome.params(params).to_dict(), **config.params})
        logger.info("architecture from %s", genome_used)
    costs = Costs(config.fee_bps, config.slippage_bps)
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
    data = prepare_data(
        bars,
        spec,
        (utc_midnight(config.train_start), utc_midnight(config.train_end)),
        (utc_midnight(config.test_start), utc_midnight(config.test_end)),
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
        # Provenance of the training bars; 'synthetic...' marks a model trained on generated data.
        "data_sources": sorted(str(x) for x in bars.get_column("source").unique().to_list()),
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
    lines = [
        f"## train-agent {spec.traded} ({config.timeframe}), held-out {config.test_start} to {config.test_end}",
        "",
        "| policy | total return | t-stat | hit rate | max drawdown |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in table:
        lines.append(
            f"| {row['policy']} | {100 * row['total_return']:.2f}% ± {100 * row['total_return_std']:.2f} "
            f"| {row['t_stat']:.2f} | {row['hit_rate']:.2f} | {100 * row['max_drawdown']:.2f}% |"
        )
    create_markdown_artifact(key="train-agent-evaluation", markdown="\n".join(lines))
    return {
        "symbol": spec.traded,
        "timeframe": config.timeframe,
        "feature_schema_hash": spec.schema_hash(),
        "models": [r["model_id"] for r in results],
        "evaluation": table,
        "train_sessions": len(data.train),
        "test_sessions": len(data.test),
    }


if __name__ == "__main__":
    train_agent()
