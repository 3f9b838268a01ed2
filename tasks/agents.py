"""Prefect tasks around agent training: one task per seed, with a progress bar and registry writes.

Training and storing are apart: `train_seed` trains, evaluates and packs the artifact as bytes
(with its sha256, the registry row and the per-cycle rows) without touching the warehouse or
the model store, so it can run on a Dask worker that shares no disk with the flow;
`store_trained_agent` writes it, in the flow's process.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from tqdm import tqdm

from core.sessions import SessionRule, session_rule
from models.dqn import CycleStats, DQNParams
from models.env import Costs
from models.features import FeatureSpec
from models.qnet import Architecture
from models.registry import pack_folder, save_agent, unpack_folder
from models.threads import use_threads
from models.train import PreparedData, evaluate, objective, prepare_data, train_dqn
from warehouse.db import connect
from warehouse.registry import write_model, write_training_runs


def train_seed(
    data: PreparedData,
    run_id: str,
    seed: int,
    arch: Architecture,
    params: DQNParams,
    costs: Costs,
    checkpoint_dir: Path | None,
    resume: bool,
    description: dict[str, Any],
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Train one seed (resuming from its checkpoint), evaluate it on held-out sessions, pack it.

    Writes nothing but the checkpoints (none when checkpoint_dir is None). Returns plain
    values: model_id, seed, metrics, the artifact's files as bytes and their sha256, the
    registry row (without artifact_path: the flow decides where models live) and the
    per-cycle training rows.
    """
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
        budget_s=budget_s,
    )
    bar.n = len(history)
    bar.close()
    metrics = evaluate(module, data.test, costs, data.test_bars, data.spec.traded)
    agent = metrics["agent"]
    model_id = f"dqn-{data.spec.traded.replace('/', '-')}-{run_id}"
    with tempfile.TemporaryDirectory(prefix="tradingml-artifact-") as tmp:
        sha = save_agent(
            Path(tmp) / model_id,
            module.online,
            data.spec,
            data.scaler,
            {"params": params.to_dict(), "costs": asdict(costs), "seed": seed, **description},
        )
        files = pack_folder(Path(tmp) / model_id)
    row = {
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
        "artifact_sha256": sha,
        "stage": "candidate",
        "promoted_at": None,
    }
    cycles = [
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
        }
        for h in history
    ]
    return {
        "model_id": model_id,
        "seed": seed,
        "metrics": metrics,
        "artifact": {"files": files, "sha256": sha},
        "row": row,
        "cycles": cycles,
    }


def store_trained_agent(
    trained: dict[str, Any], models_dir: Path, warehouse: Path | str
) -> dict[str, Any]:
    """Write what train_seed returned: the artifact under models_dir (sha256 checked before it is
    in place), its registry row and its training rows. Runs where the warehouse and the model
    store are: the flow's process. Idempotent (same folder, same rows)."""
    model_id = str(trained["model_id"])
    artifact = models_dir / model_id
    unpack_folder(trained["artifact"]["files"], artifact, str(trained["artifact"]["sha256"]))
    now = datetime.now(UTC)
    rows = pl.DataFrame(
        [{**c, "recorded_at": now} for c in trained["cycles"]],
        schema_overrides={"loss": pl.Float64, "recorded_at": pl.Datetime("us", "UTC")},
    )
    with connect(Path(warehouse)) as con:
        write_model(con, {**trained["row"], "artifact_path": str(artifact), "created_at": now})
        write_training_runs(con, rows)
    metrics = trained["metrics"]
    get_run_logger().info(
        "%s: held-out total return %.2f%% (buy-and-hold %.2f%%), %d cycles",
        model_id,
        100 * metrics["agent"]["total_return"],
        100 * metrics["buy_and_hold"]["total_return"],
        len(trained["cycles"]),
    )
    return {"model_id": model_id, "seed": trained["seed"], "metrics": metrics}


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
    """Train one seed in this process and register it (train-agent's task)."""
    trained = train_seed(
        data,
        run_id,
        seed,
        arch,
        params,
        costs,
        models_dir / "checkpoints" / run_id,
        resume,
        description,
        budget_s,
    )
    return store_trained_agent(trained, models_dir, warehouse)


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
    checkpoint_dir: str | None,
    description: dict[str, Any],
    budget_s: float | None = None,
    rule: dict[str, Any] | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """train_seed with the features computed where the task runs (a thread, a process, a Dask worker).

    Plain values in and out, and no path to the warehouse or the model store: the result
    carries the artifact as bytes (store_trained_agent writes it in the flow's process), so
    a worker on another machine needs no shared disk. checkpoint_dir None trains without
    checkpoints (a remote worker); a local runner passes the model store's checkpoint folder
    so an interrupted run resumes. `threads` torch threads: the worker's share of the cores,
    chosen by the flow (models.threads.task_threads) so every runner trains with the same
    count and a seed's weights do not depend on the runner. `rule` (a
    core.sessions.SessionRule as a dict) cuts the episodes as `train` cuts them; None infers
    it from the traded symbol and timeframe (core.sessions.session_rule).
    """
    use_threads(threads)
    feature_spec = FeatureSpec.from_dict(spec)
    cut = (
        SessionRule(**rule)
        if rule is not None
        else session_rule(feature_spec.traded, feature_spec.timeframe)
    )
    data = prepare_data(bars, feature_spec, train_range, test_range, sentiment, forecasts, rule=cut)
    result: dict[str, Any] = train_seed(
        data,
        run_id,
        seed,
        Architecture.from_dict(arch),
        DQNParams.from_dict(params),
        Costs(**costs),
        Path(checkpoint_dir) if checkpoint_dir is not None else None,
        checkpoint_dir is not None,
        description,
        budget_s,
    )
    return {**result, "train_sessions": len(data.train), "test_sessions": len(data.test)}
