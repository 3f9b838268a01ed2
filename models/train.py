"""Train and evaluate a DQN agent on warehouse bars: data preparation, the Lightning fit, held-out evaluation."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytorch_lightning as pl_lightning
import torch

from core.baselines import (
    BUY_AND_HOLD,
    MOMENTUM,
    PositionBook,
    benchmark_books,
    benchmark_metrics,
    periods_per_year,
    trade_positions,
)
from core.baselines import FLAT as FLAT_BENCHMARK
from core.metrics import returns_from_equity
from core.sessions import SessionRule
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
from models.ensemble import EnsembleQNet, member_seed
from models.env import (
    Costs,
    Sessions,
    assign_episodes,
    build_sessions,
    play_positions,
)
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet, greedy_q_paths


@dataclass(frozen=True)
class PreparedData:
    spec: FeatureSpec
    scaler: FeatureScaler
    train: Sessions
    test: Sessions
    test_bars: pl.DataFrame | None = None
    """The held-out bars (ts, session, step, open, close) the test sessions were built from."""


@dataclass
class EnsembleDQN:
    """What train_dqn returns when params.ensemble_size > 1: the trained members, and their
    online and target networks each as one EnsembleQNet (the rule is params.ensemble_rule)."""

    members: list[DQNLightning]
    online: EnsembleQNet
    target: EnsembleQNet

    @classmethod
    def of(cls, members: list[DQNLightning], rule: str) -> EnsembleDQN:
        return cls(
            members,
            EnsembleQNet([m.online for m in members], rule),
            EnsembleQNet([m.target for m in members], rule),
        )


TrainedDQN = DQNLightning | EnsembleDQN
"""A trained agent: one network's Lightning module, or an ensemble of them; `.online` is the policy."""


def split_frame(frame: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    return frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end))


def episode_frame(
    frame: pl.DataFrame,
    bars: pl.DataFrame,
    spec: FeatureSpec,
    span: tuple[datetime, datetime],
    rule: SessionRule | None,
) -> pl.DataFrame:
    """The feature rows of `span`, cut into the rule's episodes (None: the feature sessions).

    The range is cut first, then the episodes: fixed-length episodes count from the range's
    first bar, in training, its held-out evaluation and the backtest alike.
    """
    part = split_frame(frame, *span)
    if rule is None or part.height == 0:
        return part
    closes = bars.filter(pl.col("symbol") == spec.traded).select("ts", "close")
    return assign_episodes(part, closes, rule)


def prepare_data(
    bars: pl.DataFrame,
    spec: FeatureSpec,
    train_range: tuple[datetime, datetime],
    test_range: tuple[datetime, datetime],
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
    rule: SessionRule | None = None,
) -> PreparedData:
    """Features for both ranges; the scaler is fitted on the training range only.

    `sentiment` (ts, symbol, sentiment) and `forecasts` (ts, symbol, forecast) feed the
    spec's sentiment and forecast columns (see compute_features); without them they read 0.
    `rule` cuts the episodes (core.sessions.session_rule); None keeps the feature sessions.
    """
    # The time-of-session features follow the rule's calendar (None: inferred from the symbol).
    frame = compute_features(
        bars, spec, sentiment, forecasts, calendar=rule.calendar if rule is not None else None
    )
    train_f = episode_frame(frame, bars, spec, train_range, rule)
    test_f = episode_frame(frame, bars, spec, test_range, rule)
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
    prices = bars.filter(pl.col("symbol") == spec.traded).select("ts", "open", "close")
    test_bars = test_f.select("ts", "session", "step").join(
        prices, on="ts", how="left", maintain_order="left"
    )
    return PreparedData(spec, scaler, train, test, test_bars)


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
) -> tuple[TrainedDQN, list[CycleStats]]:
    """Train from scratch, or resume from checkpoint_dir; the same seed gives the same weights either way.

    stop_after_cycles ends the run early at a checkpoint boundary (used to simulate a kill).
    budget_s ends it after that many seconds, at the next block of cycles; what was learned
    so far is checkpointed and returned (a later run with resume continues from there).
    params.ensemble_size > 1 trains an ensemble (see train_ensemble) and returns an EnsembleDQN.
    """
    if params.ensemble_size > 1:
        return train_ensemble(
            sessions, arch, params, costs, seed, checkpoint_dir, resume, on_cycle,
            stop_after_cycles, budget_s,
        )  # fmt: skip
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


def train_ensemble(
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
) -> tuple[EnsembleDQN, list[CycleStats]]:
    """Train params.ensemble_size members one after another on the same sessions, as one agent.

    Member k is train_dqn with seed models.ensemble.member_seed(seed, k) (member 0: the agent's
    own seed) and params with ensemble_size 1. Its checkpoints live in checkpoint_dir/member-<k>,
    so resume continues each member from its own (a finished member reloads, an unstarted one
    starts). budget_s is shared: member k gets an equal share of what is left,
    (budget_s - elapsed) / (K - k), so time an early member leaves unused goes to the later
    ones. stop_after_cycles stops every member at its first checkpoint at or after that cycle.
    on_cycle sees each member's cycles in turn. The history has one row per cycle every member
    completed (fewer than params.cycles when a budget cut any member short): the members'
    mean final and max money, steps and loss, their summed seconds.
    """
    size = params.ensemble_size
    single = replace(params, ensemble_size=1)
    started = time.perf_counter()
    members: list[DQNLightning] = []
    histories: list[list[CycleStats]] = []
    for k in range(size):
        share = (
            None
            if budget_s is None
            else max(0.0, budget_s - (time.perf_counter() - started)) / (size - k)
        )
        module, history = train_dqn(
            sessions,
            arch,
            single,
            costs,
            member_seed(seed, k),
            checkpoint_dir / f"member-{k}" if checkpoint_dir is not None else None,
            resume,
            on_cycle,
            stop_after_cycles,
            share,
        )
        assert isinstance(module, DQNLightning)  # ensemble_size 1: one network
        members.append(module)
        histories.append(history)
    return EnsembleDQN.of(members, params.ensemble_rule), _merge_histories(histories)


def _merge_histories(histories: list[list[CycleStats]]) -> list[CycleStats]:
    out: list[CycleStats] = []
    for i in range(min(len(h) for h in histories)):
        row = [h[i] for h in histories]
        losses = [s.loss for s in row if s.loss is not None]
        out.append(
            CycleStats(
                cycle=row[0].cycle,
                final_money=float(np.mean([s.final_money for s in row])),
                max_money=float(np.mean([s.max_money for s in row])),
                epsilon=row[0].epsilon,
                steps=round(float(np.mean([s.steps for s in row]))),
                loss=float(np.mean(losses)) if losses else None,
                seconds=float(sum(s.seconds for s in row)),
            )
        )
    return out


def held_out_sessions(
    bars: pl.DataFrame,
    spec: FeatureSpec,
    scaler: FeatureScaler,
    test_range: tuple[datetime, datetime],
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
    rule: SessionRule | None = None,
) -> Sessions:
    """A trained model's sessions over test_range: its own features and scaler, as prepare_data builds them.

    `bars` should reach back before test_range, so the feature windows are filled as they
    were for a model trained just before it.
    """
    return held_out_data(bars, spec, scaler, test_range, sentiment, forecasts, rule)[0]


def held_out_data(
    bars: pl.DataFrame,
    spec: FeatureSpec,
    scaler: FeatureScaler,
    test_range: tuple[datetime, datetime],
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
    rule: SessionRule | None = None,
) -> tuple[Sessions, pl.DataFrame]:
    """held_out_sessions and the bars (ts, session, step, open, close) they were built from, for evaluate_network."""
    # The time-of-session features follow the rule's calendar (None: inferred from the symbol).
    frame = compute_features(
        bars, spec, sentiment, forecasts, calendar=rule.calendar if rule is not None else None
    )
    test_f = episode_frame(frame, bars, spec, test_range, rule)
    if test_f.height == 0:
        raise ValueError(
            f"no bars of {spec.traded} in the test range {test_range[0]} to {test_range[1]}"
        )
    sessions = build_sessions(test_f, scaler.transform(test_f.select(spec.names()).to_numpy()))
    prices = bars.filter(pl.col("symbol") == spec.traded).select("ts", "open", "close")
    test_bars = test_f.select("ts", "session", "step").join(
        prices, on="ts", how="left", maintain_order="left"
    )
    return sessions, test_bars


def greedy_positions(module: TrainedDQN, sessions: Sessions, costs: Costs) -> np.ndarray:
    """Greedy positions of each session played on its own from flat (as in training)."""
    return _session_positions(module.online, sessions, costs)


def greedy_net_positions(net: NestedLSTMQNet, sessions: Sessions, costs: Costs) -> np.ndarray:
    """The positions [N, T] a network holds after each bar's decision, trading the sessions
    one after another as the backtest's engine does.

    Greedy on the same Q-values (ties to the first action, NaN outputs hold); a decision on
    every bar, an episode's last included; the position carried from one episode into the
    next (the recurrent state restarts, the position does not); flat where the end-of-session
    rule forces it (Sessions.forced_flat). Episodes are in time order (build_sessions sorts
    their keys). `costs` do not change a greedy decision. Positions are levels of the net's
    action set (net.actions): 0/1 for the legacy flat / hold / long.
    """
    aset = net.actions
    grid = np.asarray(aset.grid, dtype=np.float32)
    q = greedy_q_paths(net, sessions.features)
    b, t = sessions.mask.shape
    lengths = sessions.lengths.numpy()
    forced = (
        np.zeros((b, t), dtype=bool)
        if sessions.forced_flat is None
        else sessions.forced_flat.numpy().astype(bool)
    )
    rows = np.arange(b)
    # Every episode played from every starting grid position at once; then stitched in order.
    # `pos` is the grid index of the position held.
    held = np.zeros((aset.n_positions, b, t), dtype=np.int64)
    flat = aset.index_of(0.0)
    for start in range(aset.n_positions):
        pos = np.full(b, start, dtype=np.int64)
        for step in range(t):
            qs = q[rows, step, pos]
            finite = np.isfinite(qs).all(axis=1)
            a = np.where(
                finite,
                np.nan_to_num(qs, nan=-np.inf).argmax(axis=1),
                aset.hold_actions(grid[pos]),
            )
            new = aset.index_np(aset.next_position_np(grid[pos], a))
            new = np.where(forced[:, step], flat, new)
            pos = np.where(step < lengths, new, pos)
            held[start, :, step] = pos
    out = np.zeros((b, t), dtype=np.float32)
    start = flat
    for i in range(b):
        out[i] = grid[held[start, i]]
        if lengths[i] > 0:
            start = int(held[start, i, int(lengths[i]) - 1])
    return out


def _session_positions(net: NestedLSTMQNet, sessions: Sessions, costs: Costs) -> np.ndarray:
    """The positions a network holds acting greedily over each session from flat (no exploration)."""
    played = act_sessions(net, sessions, costs, 0.0, np.random.default_rng(0))
    pos = played["positions"].copy()
    # positions[t] is the position before action t; the held position after it is next_position.
    return net.actions.next_position_np(pos, played["actions"])


def session_log_returns(sessions: Sessions, positions: np.ndarray, costs: Costs) -> np.ndarray:
    """Each session's log return of a position path played from flat, with the env's costs and
    its forced end-of-session exit (models.env.play_positions)."""
    money = play_positions(
        sessions.returns, sessions.mask, torch.from_numpy(positions), costs, sessions.forced_flat
    )
    return np.log(money.numpy())


def positions_on_bars(sessions: Sessions, positions: np.ndarray, bars: pl.DataFrame) -> np.ndarray:
    """Per bar of `bars` (session, step columns, as build_sessions read them), the held position.

    Bars of an episode too short to play (build_sessions' min_len) are flat.
    """
    row_of = {key: i for i, key in enumerate(sessions.keys)}
    # str() of the numpy values, exactly as build_sessions names its keys.
    rows = np.array([row_of.get(str(k), -1) for k in bars.get_column("session").to_numpy()])
    steps = bars.get_column("step").to_numpy().astype(np.int64)
    out = np.zeros(bars.height, dtype=np.float64)
    ok = rows >= 0
    out[ok] = positions[rows[ok], steps[ok]]
    return out


def _chained_bars(sessions: Sessions) -> pl.DataFrame:
    """Bars rebuilt from the sessions' own returns when no prices are at hand, one bar a day.

    The return between sessions is not in Sessions, so pass the real bars where there are any.
    """
    mask = sessions.mask.numpy()
    rows, steps = np.nonzero(mask)
    rets = sessions.returns.numpy().astype(np.float64)[rows, steps]
    # ret[t] is bar t -> t+1, so bar t's close is the product of the returns before it.
    close = np.exp(np.concatenate(([0.0], np.cumsum(rets)[:-1])))
    start = datetime(2000, 1, 3, 21, tzinfo=UTC)
    return pl.DataFrame(
        {
            "ts": pl.datetime_range(
                start, start + timedelta(days=max(len(close) - 1, 0)), "1d", eager=True
            ).head(len(close)),
            "close": close,
            "session": np.asarray(sessions.keys)[rows],
            "step": steps,
        }
    )


def evaluate(
    module: TrainedDQN,
    sessions: Sessions,
    costs: Costs,
    bars: pl.DataFrame | None = None,
    symbol: str = "",
) -> dict[str, dict[str, float]]:
    """The agent beside the baselines on the same held-out sessions and costs."""
    return evaluate_network(module.online, sessions, costs, bars, symbol)


def _evaluation_books(
    net: NestedLSTMQNet,
    sessions: Sessions,
    costs: Costs,
    bars: pl.DataFrame | None,
    symbol: str,
) -> tuple[pl.DataFrame, dict[str, PositionBook]]:
    """The held-out bars and the books of the agent and the benchmarks on them (see evaluate_network)."""
    frame = (bars if bars is not None else _chained_bars(sessions)).sort("ts")
    ts = frame.get_column("ts")
    close = frame.get_column("close").to_numpy().astype(np.float64)
    opens = (
        frame.get_column("open").to_numpy().astype(np.float64)
        if "open" in frame.columns
        else np.concatenate((close[:1], close[:-1]))
    )
    agent = trade_positions(
        ts,
        close,
        positions_on_bars(sessions, greedy_net_positions(net, sessions, costs), frame),
        symbol=symbol or "agent",
        cash=1.0,
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        sell_fee_bps=costs.sell_fee_bps,
        opens=opens,
    )
    # The benchmarks read the same opens, so they pay the agent's fill rule.
    benchmarks = benchmark_books(
        frame.with_columns(pl.Series("open", opens)),
        symbol=symbol or "agent",
        cash=1.0,
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        sell_fee_bps=costs.sell_fee_bps,
        extra=(FLAT_BENCHMARK,),
    )
    books = {
        "agent": agent,
        "buy_and_hold": benchmarks[BUY_AND_HOLD],
        "flat": benchmarks[FLAT_BENCHMARK],
        "momentum_rule": benchmarks[MOMENTUM],
    }
    return frame, books


def held_out_returns(
    net: NestedLSTMQNet,
    sessions: Sessions,
    costs: Costs,
    bars: pl.DataFrame | None = None,
    symbol: str = "",
) -> dict[str, np.ndarray]:
    """Per-bar simple returns of the agent and the benchmarks, from the books evaluate_network measures.

    Keys 'agent', 'buy_and_hold', 'flat', 'momentum_rule'; each stream starts from the book's
    cash, so it has one return per held-out bar (the first bar's from the starting cash) and
    all streams cover the same bars: what the statistical promotion gate compares.
    """
    _, books = _evaluation_books(net, sessions, costs, bars, symbol)
    return _book_returns(books)


def _book_returns(books: Mapping[str, PositionBook]) -> dict[str, np.ndarray]:
    return {
        name: returns_from_equity(np.concatenate(([book.cash], book.equity)))
        for name, book in books.items()
    }


def evaluate_network(
    net: NestedLSTMQNet,
    sessions: Sessions,
    costs: Costs,
    bars: pl.DataFrame | None = None,
    symbol: str = "",
) -> dict[str, dict[str, float]]:
    """A Q-network beside buy-and-hold, flat and the momentum rule on the same bars and costs.

    `bars` are the held-out bars the sessions were built from (ts, open, close, session,
    step, in time order; without an open each bar opens at the previous close). Every policy
    is traded as one book over the whole window with core.baselines.trade_positions and
    measured with core.metrics.summarize, as the backtest does: every decision, the agent's
    and the benchmarks' (core.baselines.benchmark_books), fills at the next bar's open with
    the simulated broker's slippage and fee (core.fills), as the backtest's engine and
    broker fill them (buy-and-hold held to the end, returns between sessions included);
    drawdown is per bar. `symbol` picks the days per year
    (core.baselines.periods_per_year). Each result also carries `sessions`,
    `mean_session_log_return` and `t_stat` over the episodes.
    """
    return _book_table(*_evaluation_books(net, sessions, costs, bars, symbol), symbol)


def evaluate_network_with_returns(
    net: NestedLSTMQNet,
    sessions: Sessions,
    costs: Costs,
    bars: pl.DataFrame | None = None,
    symbol: str = "",
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """evaluate_network's table and held_out_returns' streams from one pass over the network."""
    frame, books = _evaluation_books(net, sessions, costs, bars, symbol)
    return _book_table(frame, books, symbol), _book_returns(books)


def _book_table(
    frame: pl.DataFrame, books: Mapping[str, PositionBook], symbol: str
) -> dict[str, dict[str, float]]:
    episode = frame.get_column("session").cast(pl.String).to_numpy()
    last = np.flatnonzero(np.append(episode[1:] != episode[:-1], True))
    out: dict[str, dict[str, float]] = {}
    for name, book in books.items():
        per_episode = np.diff(np.log(np.concatenate(([1.0], book.equity[last]))))
        out[name] = {
            **benchmark_metrics({name: book}, periods_per_year=periods_per_year(symbol))[name],
            **_episode_stats(per_episode),
        }
    return out


def _episode_stats(per_episode: np.ndarray) -> dict[str, float]:
    n = len(per_episode)
    mean = float(per_episode.mean()) if n else 0.0
    std = float(per_episode.std(ddof=1)) if n > 1 else 0.0
    return {
        "sessions": float(n),
        "mean_session_log_return": mean,
        "t_stat": float(mean / (std / np.sqrt(n))) if std > 0 else 0.0,
    }


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
