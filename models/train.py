"""Train and evaluate a DQN agent on warehouse bars: data preparation, the Lightning fit, held-out evaluation."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytorch_lightning as pl_lightning
import torch

from models.dqn import (
    CycleStats,
    DQNLightning,
    DQNParams,
    ExperienceDataModule,
    ExperienceStream,
    OutOfBudget,
    ReplayMemory,
    TrainState,
    act_sessions,
    latest_checkpoint,
    load_checkpoint,
    n_updates,
    save_checkpoint,
)
from models.env import Costs, Sessions, build_sessions, play_positions
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet


@dataclass(frozen=True)
class PreparedData:
    spec: FeatureSpec
    scaler: FeatureScaler
    train: Sessions
    test: Sessions


def split_frame(frame: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    return frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end))


def prepare_data(
    bars: pl.DataFrame,
    spec: FeatureSpec,
    train_range: tuple[datetime, datetime],
    test_range: tuple[datetime, datetime],
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
) -> PreparedData:
    """Features for both ranges; the scaler is fitted on the training range only.

    `sentiment` (ts, symbol, sentiment) and `forecasts` (ts, symbol, forecast) feed the
    spec's sentiment and forecast columns (see compute_features); without them they read 0.
    """
    frame = compute_features(bars, spec, sentiment, forecasts)
    train_f, test_f = split_frame(frame, *train_range), split_frame(frame, *test_range)
    if train_f.height == 0:
        raise ValueError(
            f"no bars of {spec.traded} in the training range {train_range[0]} to {train_range[1]}"
        )
    if test_f.height == 0:
        raise ValueError(
            f"no bars of {spec.traded} in the test range {test_range[0]} to {test_range[1]}"
        )
    names = spec.names()
    scaler = FeatureScaler.fit(train_f, names)
    train = build_sessions(train_f, scaler.transform(train_f.select(names).to_numpy()))
    test = build_sessions(test_f, scaler.transform(test_f.select(names).to_numpy()))
    return PreparedData(spec, scaler, train, test)


_INIT_LOCK = threading.Lock()


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")


def train_dqn(
    sessions: Sessions,
    arch: Architecture,
    params: DQNParams,
    costs: Costs,
    seed: int,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_cycle: Callable[[CycleStats], None] | None = None,
    stop_after_cycles: int | None = None,
    budget_s: float | None = None,
) -> tuple[DQNLightning, list[CycleStats]]:
    """Train from scratch, or resume from checkpoint_dir; the same seed gives the same weights either way.

    stop_after_cycles ends the run early at a checkpoint boundary (used to simulate a kill).
    budget_s ends it after that many seconds, at the next block of cycles; what was learned
    so far is checkpointed and returned (a later run with resume continues from there).
    """
    _quiet_lightning()
    # Initial weights come from torch's process-wide generator: seeding and drawing under one
    # lock gives a seed the same weights when several agents train in threads of one process.
    with _INIT_LOCK:
        torch.manual_seed(seed)
        module = DQNLightning(int(sessions.features.shape[2]), arch, params)
    memory = ReplayMemory(params.replay_capacity, int(sessions.features.shape[1]))
    state = TrainState()
    if resume and checkpoint_dir is not None and latest_checkpoint(checkpoint_dir) is not None:
        load_checkpoint(checkpoint_dir, module, memory, state)
    started = time.perf_counter()
    last = [started]

    def record(stats: CycleStats) -> None:
        now = time.perf_counter()
        stats.seconds = now - last[0]
        last[0] = now
        state.history.append(stats)
        if on_cycle is not None:
            on_cycle(stats)

    def over_budget() -> bool:
        return budget_s is not None and time.perf_counter() - started > budget_s

    def checkpoint() -> None:
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, module, memory, state, {"seed": seed})
        if stop_after_cycles is not None and state.cycle >= stop_after_cycles:
            raise _Stop

    stream = ExperienceStream(
        module, sessions, costs, seed, memory, state, record, checkpoint, over_budget
    )
    steps = n_updates(params, state.cycle)
    if steps > 0:
        trainer = pl_lightning.Trainer(
            max_steps=steps,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=True,
        )
        try:
            trainer.fit(module, datamodule=ExperienceDataModule(stream))
        except _Stop:
            return module, state.history
        except OutOfBudget:
            pass
    if checkpoint_dir is not None:
        save_checkpoint(checkpoint_dir, module, memory, state, {"seed": seed})
    return module, state.history


class _Stop(Exception):
    """Raised inside the data stream to end a run at a checkpoint (simulated kill)."""


def held_out_sessions(
    bars: pl.DataFrame,
    spec: FeatureSpec,
    scaler: FeatureScaler,
    test_range: tuple[datetime, datetime],
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
) -> Sessions:
    """A trained model's sessions over test_range: its own features and scaler, as prepare_data builds them.

    `bars` should reach back before test_range, so the feature windows are filled as they
    were for a model trained just before it.
    """
    test_f = split_frame(compute_features(bars, spec, sentiment, forecasts), *test_range)
    if test_f.height == 0:
        raise ValueError(
            f"no bars of {spec.traded} in the test range {test_range[0]} to {test_range[1]}"
        )
    return build_sessions(test_f, scaler.transform(test_f.select(spec.names()).to_numpy()))


def greedy_positions(module: DQNLightning, sessions: Sessions, costs: Costs) -> np.ndarray:
    return greedy_net_positions(module.online, sessions, costs)


def greedy_net_positions(net: NestedLSTMQNet, sessions: Sessions, costs: Costs) -> np.ndarray:
    """The positions a network holds acting greedily over the sessions (no exploration)."""
    played = act_sessions(net, sessions, costs, 0.0, np.random.default_rng(0))
    pos = played["positions"].copy()
    # positions[t] is the position before action t; the held position after it is next_position.
    a = played["actions"]
    held = np.where(a == 0, 0.0, np.where(a == 2, 1.0, pos))
    return held.astype(np.float32)


def session_log_returns(sessions: Sessions, positions: np.ndarray, costs: Costs) -> np.ndarray:
    money = play_positions(sessions.returns, sessions.mask, torch.from_numpy(positions), costs)
    return np.log(money.numpy())


def baseline_positions(sessions: Sessions) -> dict[str, np.ndarray]:
    """Buy-and-hold, flat, and a simple rule: long while the last 30 bars rose (past data only)."""
    n, t = sessions.returns.shape
    # returns[:, t] is bar t -> t+1; at bar t the known past is returns[:, :t].
    past = torch.cat([torch.zeros(n, 1), torch.cumsum(sessions.returns, dim=1)[:, :-1]], dim=1)
    window = 30
    lagged = (
        torch.cat([torch.zeros(n, window), past[:, :-window]], dim=1)
        if t > window
        else torch.zeros(n, t)
    )
    return {
        "buy_and_hold": np.ones((n, t), dtype=np.float32),
        "flat": np.zeros((n, t), dtype=np.float32),
        "momentum_rule": ((past - lagged) > 0).to(torch.float32).numpy(),
    }


def summarise(per_session: np.ndarray) -> dict[str, float]:
    n = len(per_session)
    mean = float(per_session.mean()) if n else 0.0
    std = float(per_session.std(ddof=1)) if n > 1 else 0.0
    t_stat = mean / (std / np.sqrt(n)) if std > 0 else 0.0
    peak = np.maximum.accumulate(np.concatenate([[0.0], np.cumsum(per_session)]))
    drawdown = float(np.max(peak - np.concatenate([[0.0], np.cumsum(per_session)])))
    return {
        "sessions": float(n),
        "mean_session_log_return": mean,
        "total_return": float(np.expm1(per_session.sum())),
        "t_stat": float(t_stat),
        "hit_rate": float((per_session > 0).mean()) if n else 0.0,
        "max_drawdown": float(-np.expm1(-drawdown)),
    }


def evaluate(module: DQNLightning, sessions: Sessions, costs: Costs) -> dict[str, dict[str, float]]:
    """The agent beside the baselines on the same held-out sessions and costs."""
    return evaluate_network(module.online, sessions, costs)


def evaluate_network(
    net: NestedLSTMQNet, sessions: Sessions, costs: Costs
) -> dict[str, dict[str, float]]:
    """A Q-network (trained now or loaded from the registry) beside the baselines on the same sessions."""
    out = {
        "agent": summarise(
            session_log_returns(sessions, greedy_net_positions(net, sessions, costs), costs)
        )
    }
    for name, pos in baseline_positions(sessions).items():
        out[name] = summarise(session_log_returns(sessions, pos, costs))
    return out


def objective(metrics: dict[str, float], drawdown_penalty: float = 1.0) -> float:
    """Return with a drawdown penalty: what the promotion gate and the search maximise."""
    return metrics["total_return"] - drawdown_penalty * metrics["max_drawdown"]


def describe_history(history: list[CycleStats]) -> dict[str, Any]:
    if not history:
        return {}
    final = np.array([h.final_money for h in history])
    return {
        "cycles": len(history),
        "mean_final_money_last_10pct": float(final[-max(1, len(final) // 10) :].mean()),
    }
