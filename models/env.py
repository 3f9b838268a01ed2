"""Vectorised market environment: N trading sessions at once as torch tensors, one episode per session.

The replayed market does not react to our orders, so an episode is fully described by
its feature rows and next-bar returns; the agent's only state is its position. The
session close is a time limit (truncation), not a terminal state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from core.costs import CostModel
from core.sessions import SessionRule, trading_day, with_forced_flat

# Re-exported: the legacy action indices, imported from here before models.actions existed.
from models.actions import FLAT as FLAT
from models.actions import HOLD as HOLD
from models.actions import LEGACY, LEGACY_NAMES, ActionSet
from models.actions import LONG as LONG
from models.rewards import DEFAULT_REWARD, RewardSettings, RewardShaper

ACTIONS = LEGACY_NAMES
"""The legacy action names (models.actions.ActionSet names them for any set)."""


@dataclass(frozen=True)
class Sessions:
    """Padded session tensors: features [N, T, F], next-bar log returns [N, T], valid mask [N, T]."""

    features: torch.Tensor
    returns: torch.Tensor
    mask: torch.Tensor
    keys: list[str]
    forced_flat: torch.Tensor | None = None
    """[N, T] bars whose decision the end-of-session rule forces flat (None: none are)."""

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def subset(self, idx: list[int] | np.ndarray) -> Sessions:
        index = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return Sessions(
            self.features[index],
            self.returns[index],
            self.mask[index],
            [self.keys[i] for i in index.tolist()],
            None if self.forced_flat is None else self.forced_flat[index],
        )


def build_sessions(frame: pl.DataFrame, x: np.ndarray, min_len: int = 2) -> Sessions:
    """Group (already scaled) feature rows `x` of `frame` into padded session tensors."""
    sess = frame.get_column("session").to_numpy()
    step = frame.get_column("step").to_numpy()
    ret = frame.get_column("ret_next").to_numpy()
    uniq, inverse, counts = np.unique(sess, return_inverse=True, return_counts=True)
    keep = counts >= min_len
    remap = -np.ones(len(uniq), dtype=np.int64)
    remap[keep] = np.arange(keep.sum())
    n, t, f = int(keep.sum()), int(counts[keep].max()) if keep.any() else 0, x.shape[1]
    feats = np.zeros((n, t, f), dtype=np.float32)
    rets = np.zeros((n, t), dtype=np.float32)
    mask = np.zeros((n, t), dtype=bool)
    rows = remap[inverse]
    ok = rows >= 0
    feats[rows[ok], step[ok]] = x[ok]
    rets[rows[ok], step[ok]] = ret[ok]
    mask[rows[ok], step[ok]] = True
    # The last bar of a session has no next bar inside it: nothing to earn there.
    last = mask.sum(axis=1) - 1
    rets[np.arange(n), last] = 0.0
    forced = None
    if "force_flat" in frame.columns:
        flat = np.zeros((n, t), dtype=bool)
        flat[rows[ok], step[ok]] = frame.get_column("force_flat").to_numpy()[ok]
        forced = torch.from_numpy(flat)
    return Sessions(
        torch.from_numpy(feats),
        torch.from_numpy(rets),
        torch.from_numpy(mask),
        [str(k) for k in uniq[keep]],
        forced,
    )


def assign_episodes(frame: pl.DataFrame, closes: pl.DataFrame, rule: SessionRule) -> pl.DataFrame:
    """Re-cut a feature frame (compute_features) into the rule's episodes.

    Adds `day` (the trading day, which the daily-loss limit follows), `session_close` and
    `force_flat` (core.sessions.with_forced_flat) and replaces `session`
    (the episode key), `step` and `ret_next` (now close to next close within the episode, from
    `closes`: ts, close of the traded symbol). Episodes are one trading day each, or
    `rule.episode_bars` bars counted from the frame's first bar: training, its held-out
    evaluation and the backtest cut the same range the same way.
    """
    f = (
        frame.drop("session", "step", "ret_next")
        .join(closes.select("ts", "close"), on="ts", how="left")
        .sort("ts")
        .with_columns(trading_day(rule).alias("day"))
    )
    if rule.episode_bars > 0:
        key = (pl.int_range(pl.len()) // rule.episode_bars).cast(pl.Int64)
        f = f.with_columns(key.alias("session"))
    else:
        f = f.with_columns(pl.col("day").alias("session"))
    f = f.with_columns(
        pl.int_range(pl.len()).over("session").alias("step"),
        (pl.col("close").shift(-1).log() - pl.col("close").log())
        .over("session")
        .fill_null(0.0)
        .alias("ret_next"),
    )
    f = with_forced_flat(f, rule)
    names = [c for c in frame.columns if c not in ("ts", "session", "step", "ret_next")]
    return f.select(
        "ts", "session", "step", "ret_next", "day", "session_close", "force_flat", *names
    )


Costs = CostModel
"""Trading costs (core.costs.CostModel): commission and half-spread on every change of position,
a regulatory fee on sells, in basis points of the traded value."""


def next_position(position: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """The legacy actions: flat -> 0, hold -> unchanged, long -> 1 (ActionSet.next_position)."""
    return LEGACY.next_position(position, action)


def step_money(
    money: torch.Tensor,
    position: torch.Tensor,
    new_position: torch.Tensor,
    ret: torch.Tensor,
    costs: Costs,
) -> torch.Tensor:
    """Money after re-positioning at a bar's close and holding to the next bar's close.

    A change of position pays commission + half-spread on the value traded; the part that
    sells (a lower position) also pays the sell-side fee (core.costs.CostModel).
    """
    change = new_position - position
    cost = costs.rate * change.abs() + costs.sell_fee_rate * (-change).clamp(min=0.0)
    after_costs = money * (1.0 - cost)
    return after_costs * (1.0 + new_position * torch.expm1(ret))


class VecMarketEnv:
    """Step-by-step interface over N sessions (used by tests, evaluation and live-like loops).

    obs = (features of the current bar [N, F], position [N]); reward = `reward`'s
    (models.rewards; default log growth of money times 100); truncated is True on each session's last decision. Where the
    end-of-session rule forces flat (Sessions.forced_flat) the position goes flat whatever the
    action, paying the exit; a session whose last bar is forced flat also closes the position
    held into it at the last decision (the engine's flatten before the close). `actions`
    (models.actions.ActionSet) say what each action index does; default the legacy three.
    """

    def __init__(
        self,
        sessions: Sessions,
        costs: Costs | None = None,
        initial_money: float = 10_000.0,
        reward: RewardSettings = DEFAULT_REWARD,
        actions: ActionSet = LEGACY,
    ) -> None:
        self.actions = actions
        self.n_actions = actions.n_actions
        self.sessions = sessions
        self.costs = costs or Costs()
        self.initial_money = initial_money
        self.n = len(sessions)
        # Per-session reward state (drawdown, Sharpe EMAs); reset() starts it afresh.
        self._shaper = RewardShaper(reward, self.n)
        self.t = 0
        self.position = torch.zeros(self.n)
        # float64 money, as batch play (models.dqn.act_sessions) keeps it: the same path earns
        # the same rewards there and here (float32 noise would move the Sharpe-ratio reward).
        self.money = torch.full((self.n,), initial_money, dtype=torch.float64)
        self.max_money = self.money.clone()
        self.done = torch.zeros(self.n, dtype=torch.bool)
        self._forced = torch.from_numpy(forced_flat_mask(sessions))
        self._ends_flat = ends_flat(sessions.mask, sessions.forced_flat)

    @property
    def n_features(self) -> int:
        return int(self.sessions.features.shape[2])

    def reset(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.t = 0
        self.position = torch.zeros(self.n)
        self.money = torch.full((self.n,), self.initial_money, dtype=torch.float64)
        self.max_money = self.money.clone()
        self.done = self.sessions.lengths < 2
        self._shaper.reset()
        return self.sessions.features[:, 0], self.position.clone()

    def step(
        self, action: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Apply actions at bar t's close; returns (obs at t+1, reward, terminated, truncated)."""
        if bool(self.done.all()):
            raise RuntimeError("every session has ended; call reset()")
        action = action.to(torch.long)
        if action.shape != (self.n,) or bool(((action < 0) | (action >= self.n_actions)).any()):
            raise ValueError(
                f"actions must be a length-{self.n} tensor of values in 0..{self.n_actions - 1}"
            )
        active = ~self.done
        new_pos = torch.where(
            active, self.actions.next_position(self.position, action), self.position
        )
        # The end-of-session rule overrides the action: flat, paying the exit.
        new_pos = torch.where(active & self._forced[:, self.t], 0.0, new_pos)
        ret = torch.where(active, self.sessions.returns[:, self.t], torch.zeros(self.n))
        money = step_money(
            self.money, self.position.double(), new_pos.double(), ret.double(), self.costs
        )
        last_decision = self.sessions.lengths - 2
        truncated = active & (self.t >= last_decision)
        # A session whose last bar is forced flat closes the held position at that bar's close.
        money = torch.where(
            truncated & self._ends_flat, exit_money(money, new_pos.double(), self.costs), money
        )
        money = torch.where(active, money, self.money)
        growth = torch.log(money / self.money).numpy()
        reward = torch.from_numpy(self._shaper.step(growth, active.numpy())).float()
        self.money, self.position = money, new_pos
        self.max_money = torch.maximum(self.max_money, money)
        self.t += 1
        self.done = self.done | truncated
        terminated = torch.zeros(self.n, dtype=torch.bool)  # a session close is never terminal
        t_obs = min(self.t, self.sessions.features.shape[1] - 1)
        return (
            (self.sessions.features[:, t_obs], self.position.clone()),
            reward,
            terminated,
            truncated,
        )


def forced_flat_mask(sessions: Sessions) -> np.ndarray:
    """[N, T] bars whose decision the end-of-session rule forces flat (all False without a rule)."""
    if sessions.forced_flat is None:
        return np.zeros(tuple(sessions.mask.shape), dtype=bool)
    return sessions.forced_flat.numpy().astype(bool)


def ends_flat(mask: torch.Tensor, forced: torch.Tensor | None) -> torch.Tensor:
    """[N] sessions whose last bar is forced flat: the position held into it is closed at its
    close and pays the exit, as the engine's flatten before the close does."""
    n = mask.shape[0]
    if forced is None:
        return torch.zeros(n, dtype=torch.bool)
    lengths = mask.sum(dim=1)
    last = (lengths - 1).clamp(min=0)
    return forced[torch.arange(n), last].to(torch.bool) & (lengths >= 2)


def exit_money(money: torch.Tensor, position: torch.Tensor, costs: Costs) -> torch.Tensor:
    """Money after closing `position` at the current close (the forced end-of-session exit)."""
    zero = torch.zeros_like(position)
    return step_money(money, position, zero, zero, costs)


def play_positions(
    returns: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    costs: Costs,
    forced: torch.Tensor | None = None,
) -> torch.Tensor:
    """Final money (per 1.0 start) of a fixed position path [N, T] over sessions, same cost model as the env.

    `forced` (Sessions.forced_flat) overrides the path with flat where the end-of-session rule
    forces it, and a session whose last bar is forced flat ends flat, paying the exit; without
    it, positions left open at the close are valued at the close (no rule: no forced exit).
    """
    money = torch.ones(returns.shape[0], dtype=torch.float64)
    prev = torch.zeros(returns.shape[0], dtype=torch.float64)
    r = returns.to(torch.float64)
    flat = torch.zeros_like(mask) if forced is None else forced.to(torch.bool)
    for t in range(returns.shape[1] - 1):
        active = mask[:, t + 1]
        pos = torch.where(active, positions[:, t].to(torch.float64), prev)
        pos = torch.where(active & flat[:, t], 0.0, pos)
        stepped = step_money(money, prev, pos, r[:, t], costs)
        money = torch.where(active, stepped, money)
        prev = pos
    return torch.where(ends_flat(mask, forced), exit_money(money, prev, costs), money)
