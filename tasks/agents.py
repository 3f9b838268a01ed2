"""Prefect tasks around agent training: one task per seed, with a progress bar and registry writes."""

from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from tqdm import tqdm

from core.sessions import SessionRule, session_rule
from models.dqn import CycleStats, DQNParams
from models.env import Costs
from models.features import FeatureSpec
from models.qnet import Architecture
from models.registry import save_agent
from models.train import PreparedData, evaluate, objective, prepare_data, train_dqn
from warehouse.db import connect
from warehouse.registry import write_model, write_training_runs


@task(name="train-agent-seed", task_run_name="train-{run_id}", cache_policy=NO_CACHE)
def train_agent_seed(
    data: PreparedData,
    run_id: str,
    seed: int,
    arch: Architecture,
    params: DQNParams,
    costs: Costs,
    models_dir: Path,
    warehouse: Path,
    resume: bool,
    description: dict[str, Any],
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Train one seed (resuming from its checkpoint), evaluate on held-out sessions, register it."""
    logger = get_run_logger()
    checkpoint_dir = models_dir / "checkpoints" / run_id
    bar = tqdm(
        total=params.cycles, desc=f"{run_id}", unit="cycle", file=sys.stderr, mininterval=1.0
    )

    def on_cycle(stats: CycleStats) -> None:
        bar.n = stats.cycle
        bar.set_postfix(
            final=f"{stats.final_money:.4f}",
            max=f"{stats.max_money:.4f}",
            eps=f"{stats.epsilon:.2f}",
        )

    module, history = train_dqn(
        data.train,
        arch,
        params,
        costs,
        seed,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        on_cycle=on_cycle,
    )
    bar.n = len(history)
    bar.close()
    metrics = evaluate(module, data.test, costs, data.test_bars, data.spec.traded)
    agent = metrics["agent"]
    model_id = f"dqn-{data.spec.traded.replace('/', '-')}-{run_id}"
    artifact = models_dir / model_id
    now = datetime.now(UTC)
    sha = save_agent(
        artifact,
        module.online,
        data.spec,
        data.scaler,
        {"params": params.to_dict(), "costs": asdict(costs), "seed": seed, **description},
    )
    with connect(warehouse) as con:
        write_model(
            con,
            {
                "model_id": model_id,
                "kind": "dqn",
                "symbol": data.spec.traded,
                "feature_schema_hash": data.spec.schema_hash(),
                "architecture": arch.to_dict(),
                "params": {**params.to_dict(), "seed": seed, **description},
                "metrics": {
                    **agent,
                    "objective": objective(agent),
                    "baselines": {k: v for k, v in metrics.items() if k != "agent"},
                },
                "artifact_path": str(artifact),
                "artifact_sha256": sha,
                "stage": "candidate",
                "created_at": now,
                "promoted_at": None,
            },
        )
        rows = pl.DataFrame(
            [
                {
                    "run_id": run_id,
                    "cycle": h.cycle,
                    "model_id": model_id,
                    "symbol": data.spec.traded,
                    "final_money": h.final_money,
                    "max_money": h.max_money,
                    "loss": h.loss,
                    "epsilon": h.epsilon,
                    "steps": h.steps,
                    "seconds": h.seconds,
                    "recorded_at": now,
                }
                for h in history
            ],
            schema_overrides={"loss": pl.Float64, "recorded_at": pl.Datetime("us", "UTC")},
        )
        write_training_runs(con, rows)
    logger.info(
        "%s: held-out total return %.2f%% (buy-and-hold %.2f%%), %d cycles",
        model_id,
        100 * agent["total_return"],
        100 * metrics["buy_and_hold"]["total_return"],
        len(history),
    )
    return {"model_id": model_id, "seed": seed, "metrics": metrics}


@task(name="train-agent-on-bars", task_run_name="train-{run_id}", cache_policy=NO_CACHE)
def train_agent_on_bars(
    bars: pl.DataFrame,
    spec: dict[str, Any],
    train_range: tuple[datetime, datetime],
    test_range: tuple[datetime, datetime],
    sentiment: pl.DataFrame | None,
    forecasts: pl.DataFrame | None,
    run_id: str,
    seed: int,
    arch: dict[str, Any],
    params: dict[str, Any],
    costs: dict[str, float],
    models_dir: str,
    warehouse: str,
    description: dict[str, Any],
    budget_s: float | None = None,
    rule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """train_agent_seed with the features computed where the task runs (a thread, a process, a Dask worker).

    Plain values in and out. One torch thread, whatever the runner: a seed's weights then do
    not depend on how many threads a worker process was given. `rule` (a
    core.sessions.SessionRule as a dict) cuts the episodes as `train` cuts them; None infers
    it from the traded symbol and timeframe (core.sessions.session_rule).
    """
    torch.set_num_threads(1)
    feature_spec = FeatureSpec.from_dict(spec)
    cut = (
        SessionRule(**rule)
        if rule is not None
        else session_rule(feature_spec.traded, feature_spec.timeframe)
    )
    data = prepare_data(bars, feature_spec, train_range, test_range, sentiment, forecasts, rule=cut)
    result: dict[str, Any] = train_agent_seed.fn(
        data,
        run_id,
        seed,
        Architecture.from_dict(arch),
        DQNParams.from_dict(params),
        Costs(**costs),
        Path(models_dir),
        Path(warehouse),
        True,
        description,
        budget_s,
    )
    return {**result, "train_sessions": len(data.train), "test_sessions": len(data.test)}
