"""Double DQN on whole sessions: the LightningModule, the replay memory, acting, and safe checkpoints.

Training never re-encodes sliding windows: a replayed session is unrolled through the
LSTMs once and every one of its transitions is learned from that single pass.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, IterableDataset

from models.actions import ActionSet
from models.env import (
    Costs,
    Sessions,
    ends_flat,
    exit_money,
    forced_flat_mask,
    step_money,
)
from models.qnet import Architecture, NestedLSTMQNet, greedy_q_paths
from models.rewards import DEFAULT_REWARD, REWARD_KINDS, RewardSettings, shape_rewards

REWARDS = REWARD_KINDS
ENSEMBLE_RULES = ("mean_q", "vote")


@dataclass(frozen=True)
class DQNParams:
    """Training hyper-parameters."""

    cycles: int = 1000
    """Training cycles; one cycle = the agent plays one whole training session."""
    gamma: float = 0.99
    """Discount per bar."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_sessions: int = 32
    """Replayed sessions per gradient update (x ~390 transitions each)."""
    train_every: int = 8
    """Cycles played between blocks of gradient updates; replay ratio =
    batch_sessions * updates_per_block / train_every."""
    target_update_every: int = 10
    """Gradient updates between hard target-network copies (0: soft updates with tau)."""
    tau: float = 0.05
    """Soft-update rate when target_update_every is 0."""
    eps_start: float = 1.0
    """Initial exploration rate."""
    eps_end: float = 0.05
    """Final exploration rate."""
    exploration_fraction: float = 0.5
    """Share of the cycles over which epsilon decays linearly."""
    replay_capacity: int = 2000
    """Sessions kept in replay memory."""
    checkpoint_every: int = 100
    """Cycles between checkpoints (rounded up to a multiple of train_every)."""
    reward_scale: float = 100.0
    """Every reward (models.rewards; log growth of money by default) is multiplied by this."""
    grad_clip: float = 10.0
    """Gradient-norm clip."""
    action_levels: tuple[float, ...] = ()
    """Target exposures (fractions of the allowed notional) the actions choose between, e.g.
    (0, 0.25, 0.5, 0.75, 1); negative levels are short. (): the three actions flat / hold / long."""
    reward: str = "log_growth"
    """Reward per bar: 'log_growth' (log growth of money), 'drawdown' (log growth minus
    reward_dd_weight times the growth of the session's drawdown) or 'diff_sharpe' (the
    differential Sharpe ratio of Moody & Saffell, EMA rate dsr_eta, times dsr_eta: the change of
    the session's EMA Sharpe ratio); models.rewards defines each exactly."""
    reward_dd_weight: float = 1.0
    """Weight of the drawdown penalty (reward='drawdown' only)."""
    dsr_eta: float = 0.01
    """EMA rate of the differential Sharpe ratio (reward='diff_sharpe' only)."""
    updates_per_block: int = 1
    """Gradient updates after each block of train_every played cycles."""
    ensemble_size: int = 1
    """Members trained per agent (seeds derived from the agent's seed); >1 saves one ensemble."""
    ensemble_rule: str = "mean_q"
    """How an ensemble decides: 'mean_q' (argmax of the members' mean Q) or 'vote' (majority)."""

    def __post_init__(self) -> None:
        levels = self.action_levels
        if levels and (
            0.0 not in levels
            or len(set(levels)) != len(levels)
            or len(levels) < 2
            or any(not -1.0 <= x <= 1.0 for x in levels)
        ):
            raise ValueError(
                f"action_levels {levels}: at least two distinct exposures in [-1, 1], 0 among "
                "them (the end-of-session rule forces flat)"
            )
        if self.reward not in REWARDS:
            raise ValueError(f"reward {self.reward!r} is not one of {REWARDS}")
        if not 0.0 < self.dsr_eta <= 1.0 or self.reward_dd_weight < 0:
            raise ValueError("dsr_eta must be in (0, 1] and reward_dd_weight >= 0")
        if self.ensemble_rule not in ENSEMBLE_RULES:
            raise ValueError(f"ensemble_rule {self.ensemble_rule!r} is not one of {ENSEMBLE_RULES}")
        if self.ensemble_size < 1 or self.updates_per_block < 1:
            raise ValueError("ensemble_size and updates_per_block must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values; the fields added with #17 appear only when not at their default,
        so the dict (and every fingerprint and run key hashed from it) of an older run is unchanged."""
        d = asdict(self)
        d["action_levels"] = list(self.action_levels)
        for name in _LATER_FIELDS:
            if d[name] == _DEFAULTS[name]:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DQNParams:
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "action_levels" in fields:
            fields["action_levels"] = tuple(float(x) for x in fields["action_levels"])
        return cls(**fields)

    def epsilon(self, cycle: int) -> float:
        span = max(1.0, self.exploration_fraction * self.cycles)
        return max(self.eps_end, self.eps_start + (self.eps_end - self.eps_start) * cycle / span)


_LATER_FIELDS = (
    "action_levels",
    "reward",
    "reward_dd_weight",
    "dsr_eta",
    "updates_per_block",
    "ensemble_size",
    "ensemble_rule",
)
_DEFAULTS: dict[str, Any] = {
    name: (list(v) if isinstance(v := getattr(DQNParams(), name), tuple) else v)
    for name in _LATER_FIELDS
}


class ReplayBatch(NamedTuple):
    """Whole sessions for one update: their features [B, T, F] and mask [B, T], the actions
    taken, the positions held before them and the rewards [B, T], and where the
    end-of-session rule forced flat (None: nowhere)."""

    features: torch.Tensor
    mask: torch.Tensor
    actions: torch.Tensor
    positions: torch.Tensor
    rewards: torch.Tensor
    forced: torch.Tensor | None = None


class ReplayMemory:
    """Whole played sessions: which session, the actions, the positions before them, the rewards."""

    def __init__(self, capacity: int, length: int) -> None:
        self.capacity = capacity
        self.session = np.zeros(capacity, dtype=np.int64)
        self.actions = np.zeros((capacity, length), dtype=np.int8)
        self.positions = np.zeros((capacity, length), dtype=np.float32)
        self.rewards = np.zeros((capacity, length), dtype=np.float32)
        self.size = 0
        self.cursor = 0

    def add(
        self, session: int, actions: np.ndarray, positions: np.ndarray, rewards: np.ndarray
    ) -> None:
        i = self.cursor
        self.session[i] = session
        self.actions[i], self.positions[i], self.rewards[i] = actions, positions, rewards
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(0, self.size, size=n)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {
            "session": self.session,
            "actions": self.actions,
            "positions": self.positions,
            "rewards": self.rewards,
            "meta": np.array([self.size, self.cursor], dtype=np.int64),
        }

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.session, self.actions = arrays["session"].copy(), arrays["actions"].copy()
        self.positions, self.rewards = arrays["positions"].copy(), arrays["rewards"].copy()
        self.size, self.cursor = (int(v) for v in arrays["meta"])


@dataclass
class CycleStats:
    cycle: int
    final_money: float
    max_money: float
    epsilon: float
    steps: int
    loss: float | None = None
    seconds: float = 0.0


class DQNLightning(pl.LightningModule):
    """Double DQN with a target network and Huber loss over unrolled sessions."""

    def __init__(self, n_features: int, arch: Architecture, params: DQNParams) -> None:
        super().__init__()
        self.arch = arch
        self.params = params
        self.actions = ActionSet.from_levels(params.action_levels)
        self.online = NestedLSTMQNet(n_features, arch, actions=self.actions)
        self.target = copy.deepcopy(self.online)
        self.target.requires_grad_(False)
        self.updates = 0
        self.last_loss: float | None = None
        self.pending_optimizer_state: dict[str, Any] | None = None

    def td_loss(self, batch: ReplayBatch) -> torch.Tensor:
        x, mask = batch.features, batch.mask
        actions, pos, rewards = batch.actions.long(), batch.positions, batch.rewards
        aset = self.actions
        # The net reads positions as grid indices (the legacy grid's are the positions).
        pos_next = aset.index(aset.next_position(pos, actions))
        enc = self.online.encode(x)
        q_taken = (
            self.online.q(enc[:, :-1], aset.index(pos[:, :-1]))
            .gather(-1, actions[:, :-1, None])
            .squeeze(-1)
        )
        with torch.no_grad():
            enc_target = self.target.encode(x)
            # Double DQN: the online net picks the next action, the target net values it.
            best = self.online.q(enc[:, 1:].detach(), pos_next[:, :-1]).argmax(dim=-1, keepdim=True)
            forced = batch.forced
            if forced is not None:
                # Where the end-of-session rule forces flat, flat is the only action taken there.
                best = torch.where(forced[:, 1:, None], aset.flat, best)
            q_next = self.target.q(enc_target[:, 1:], pos_next[:, :-1]).gather(-1, best).squeeze(-1)
            # A session close is a time limit: bootstrap from the final bar, never treat it as terminal.
            target = rewards[:, :-1] + self.params.gamma * q_next
        valid = mask[:, 1:].to(q_taken.dtype)
        loss = torch.nn.functional.smooth_l1_loss(q_taken, target, reduction="none")
        return (loss * valid).sum() / valid.sum().clamp(min=1.0)

    def training_step(self, dataloader_iter: Iterator[Any]) -> torch.Tensor:
        # Fetching here, not letting Lightning prefetch: the next block of cycles must be
        # played with the weights this update produces (and checkpoints fall between updates).
        batch, _, _ = next(dataloader_iter)
        loss = self.td_loss(batch)
        self.last_loss = float(loss.detach())
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        torch.nn.utils.clip_grad_norm_(self.online.parameters(), self.params.grad_clip)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.updates += 1
        p = self.params
        if p.target_update_every > 0:
            if self.updates % p.target_update_every == 0:
                self.target.load_state_dict(self.online.state_dict())
        else:
            with torch.no_grad():
                for t, o in zip(self.target.parameters(), self.online.parameters(), strict=True):
                    t.mul_(1 - p.tau).add_(o, alpha=p.tau)

    def on_train_start(self) -> None:
        if self.pending_optimizer_state is not None:
            self.trainer.optimizers[0].load_state_dict(self.pending_optimizer_state)
            self.pending_optimizer_state = None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.online.parameters(), lr=self.params.lr)


def act_sessions(
    net: NestedLSTMQNet,
    sessions: Sessions,
    costs: Costs,
    epsilon: float,
    rng: np.random.Generator,
    reward: RewardSettings = DEFAULT_REWARD,
) -> dict[str, np.ndarray]:
    """Play sessions epsilon-greedily; the policy only changes position, so Q comes from one pass.

    Where the end-of-session rule forces flat (Sessions.forced_flat) the action taken is flat,
    and a session whose last bar is forced flat pays the exit in its last reward: training pays
    the forced end-of-session exit the backtest and live pay. The actions are the net's
    (net.actions, models.actions.ActionSet); positions are the grid levels held.
    """
    aset = net.actions
    q = greedy_q_paths(net, sessions.features)
    forced = forced_flat_mask(sessions)
    closes = ends_flat(sessions.mask, sessions.forced_flat).numpy()
    b, t = sessions.returns.shape
    lengths = sessions.lengths.numpy()
    actions = np.zeros((b, t), dtype=np.int8)
    actions[:] = aset.hold_actions(np.zeros(b))[:, None]
    positions = np.zeros((b, t), dtype=np.float32)
    growth = np.zeros((b, t))  # log growth of money per bar; shaped into rewards after the loop
    money = torch.ones(b, dtype=torch.float64)
    max_money = money.clone()
    pos = np.zeros(b, dtype=np.float32)
    explore = rng.random((b, t)) < epsilon
    random_actions = rng.integers(0, aset.n_actions, size=(b, t))
    rets = sessions.returns.to(torch.float64)
    rows = np.arange(b)
    for step in range(t - 1):
        active = step < lengths - 1
        if not active.any():
            break
        greedy = q[rows, step, aset.index_np(pos)].argmax(axis=1)
        a = np.where(explore[:, step], random_actions[:, step], greedy)
        a = np.where(forced[:, step], aset.flat, a)
        new_pos = aset.next_position_np(pos, a)
        held = torch.from_numpy(new_pos).double()
        stepped = step_money(money, torch.from_numpy(pos).double(), held, rets[:, step], costs)
        exits = active & closes & (step == lengths - 2)
        if exits.any():  # most steps close no session: skip the exit's arithmetic there
            stepped = torch.where(
                torch.from_numpy(exits), exit_money(stepped, held, costs), stepped
            )
        act = torch.from_numpy(active)
        new_money = torch.where(act, stepped, money)
        growth[:, step] = np.where(active, np.log((new_money / money).numpy()), 0.0)
        actions[:, step] = np.where(active, a, aset.hold_actions(pos))
        positions[:, step] = pos
        pos = np.where(active, new_pos, pos)
        money = new_money
        max_money = torch.maximum(max_money, money)
    return {
        "actions": actions,
        "positions": positions,
        # `reward` (DQNParams) picks and scales the reward; bars past a session's end earn 0.
        "rewards": shape_rewards(reward, growth, np.arange(t)[None, :] < lengths[:, None] - 1),
        "final_money": money.numpy(),
        "max_money": max_money.numpy(),
        "steps": np.maximum(lengths - 1, 0),
    }


class OutOfBudget(Exception):
    """The experience stream ends a run whose time budget is spent (at a block boundary)."""


@dataclass
class TrainState:
    """Everything a resumed run needs besides the network weights and the optimizer."""

    cycle: int = 0
    history: list[CycleStats] = field(default_factory=list)


class ExperienceStream(IterableDataset[ReplayBatch]):
    """Plays train_every cycles with the current weights, then yields updates_per_block replay
    batches to learn from, each drawn on its own."""

    def __init__(
        self,
        module: DQNLightning,
        sessions: Sessions,
        costs: Costs,
        seed: int,
        memory: ReplayMemory,
        state: TrainState,
        on_cycle: Callable[[CycleStats], None],
        on_checkpoint: Callable[[], None],
        out_of_budget: Callable[[], bool] = lambda: False,
    ) -> None:
        self.module, self.sessions, self.costs, self.seed = module, sessions, costs, seed
        self.memory, self.state = memory, state
        self.on_cycle, self.on_checkpoint = on_cycle, on_checkpoint
        self.out_of_budget = out_of_budget

    def __iter__(self) -> Iterator[ReplayBatch]:
        p = self.module.params
        every = max(1, p.train_every)
        ckpt_every = max(every, math.ceil(p.checkpoint_every / every) * every)
        while self.state.cycle < p.cycles:
            start = self.state.cycle
            if start > 0 and start % ckpt_every == 0:
                self.on_checkpoint()
            if self.out_of_budget():
                raise OutOfBudget
            n = min(every, p.cycles - start)
            # Per-block RNG from (seed, cycle): a resumed run replays the same choices.
            rng = np.random.default_rng([self.seed, start])
            chosen = rng.integers(0, len(self.sessions), size=n)
            eps = p.epsilon(start)
            played = act_sessions(
                self.module.online,
                self.sessions.subset(chosen),
                self.costs,
                eps,
                rng,
                p,
            )
            for j, sess in enumerate(chosen):
                self.memory.add(
                    int(sess), played["actions"][j], played["positions"][j], played["rewards"][j]
                )
                self.state.cycle += 1
                self.on_cycle(
                    CycleStats(
                        cycle=self.state.cycle,
                        final_money=float(played["final_money"][j]),
                        max_money=float(played["max_money"][j]),
                        epsilon=eps,
                        steps=int(played["steps"][j]),
                        loss=self.module.last_loss,
                    )
                )
            # Each update draws its own batch from the block's RNG, after the play: the draws
            # depend on (seed, cycle) and the memory only, so a resumed run draws the same.
            for _ in range(p.updates_per_block):
                yield self._replay_batch(rng)

    def _replay_batch(self, rng: np.random.Generator) -> ReplayBatch:
        idx = self.memory.sample(rng, self.module.params.batch_sessions)
        sess_idx = torch.as_tensor(self.memory.session[idx])
        forced = self.sessions.forced_flat
        return ReplayBatch(
            features=self.sessions.features[sess_idx],
            mask=self.sessions.mask[sess_idx],
            actions=torch.as_tensor(self.memory.actions[idx]),
            positions=torch.as_tensor(self.memory.positions[idx]),
            rewards=torch.as_tensor(self.memory.rewards[idx]),
            forced=None if forced is None else forced[sess_idx],
        )


class ExperienceDataModule(pl.LightningDataModule):
    """The training data: batches of replayed sessions produced by playing with the current weights."""

    def __init__(self, stream: ExperienceStream) -> None:
        super().__init__()
        self.stream = stream

    def train_dataloader(self) -> DataLoader[ReplayBatch]:
        # batch_size=None: the stream yields ready batches; one process, because the stream
        # acts with the very module being trained. Its own generator: the loader's seed draw
        # must not move torch's global one while another thread seeds and builds a network.
        return DataLoader(
            self.stream, batch_size=None, num_workers=0, generator=torch.Generator().manual_seed(0)
        )


def n_updates(params: DQNParams, start_cycle: int) -> int:
    """Gradient updates left from start_cycle: updates_per_block after each block of train_every cycles."""
    blocks = math.ceil(max(0, params.cycles - start_cycle) / max(1, params.train_every))
    return blocks * params.updates_per_block


# ---- checkpoints: safetensors (weights, optimizer tensors), npz (replay), JSON (the rest) ----


def _optimizer_to_safe(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entry in state["state"].items():
        plain["state"][str(pid)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.contiguous()
                plain["state"][str(pid)][key] = {"tensor": f"{pid}.{key}"}
            else:
                plain["state"][str(pid)][key] = value
    return tensors, plain


def _optimizer_from_safe(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in plain["state"].items():
        state[int(pid)] = {
            k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
            for k, v in entry.items()
        }
    return {"state": state, "param_groups": plain["param_groups"]}


LATEST = "LATEST"


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint under directory, or None."""
    pointer = directory / LATEST
    if not pointer.exists():
        return None
    target = directory / pointer.read_text().strip()
    return target if (target / "manifest.json").exists() else None


def save_checkpoint(
    directory: Path,
    module: DQNLightning,
    memory: ReplayMemory,
    state: TrainState,
    extra: dict[str, Any],
) -> Path:
    """Write a complete checkpoint into its own folder, then point LATEST at it.

    A kill at any moment leaves LATEST on the previous complete checkpoint: the new
    folder only counts once every file in it is written, and the pointer is replaced
    atomically.
    """
    target = directory / f"cycle-{state.cycle:07d}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in module.online.state_dict().items()},
        target / "online.safetensors",
    )
    save_file(
        {k: v.contiguous() for k, v in module.target.state_dict().items()},
        target / "target.safetensors",
    )
    opt_tensors: dict[str, torch.Tensor] = {}
    opt_plain: dict[str, Any] = {}
    if module._trainer is not None and module.trainer.optimizers:
        opt_tensors, opt_plain = _optimizer_to_safe(module.trainer.optimizers[0].state_dict())
    save_file(opt_tensors or {"_empty": torch.zeros(1)}, target / "optimizer.safetensors")
    arrays: dict[str, Any] = memory.state_arrays()
    np.savez(target / "replay.npz", **arrays)
    manifest = {
        "cycle": state.cycle,
        "updates": module.updates,
        "last_loss": module.last_loss,
        "optimizer": opt_plain,
        "history": [asdict(h) for h in state.history],
        **extra,
    }
    (target / "manifest.json").write_text(json.dumps(manifest))
    _fsync_dir(target)
    tmp = directory / (LATEST + ".tmp")
    tmp.write_text(target.name)
    os.replace(tmp, directory / LATEST)
    for old in directory.glob("cycle-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())


def load_checkpoint(
    directory: Path, module: DQNLightning, memory: ReplayMemory, state: TrainState
) -> dict[str, Any]:
    """Restore weights, optimizer (applied when training starts), replay memory and history
    from the newest complete checkpoint under directory."""
    found = latest_checkpoint(directory)
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint under {directory}")
    directory = found
    manifest: dict[str, Any] = json.loads((directory / "manifest.json").read_text())
    module.online.load_state_dict(load_file(directory / "online.safetensors"))
    module.target.load_state_dict(load_file(directory / "target.safetensors"))
    if manifest["optimizer"]:
        module.pending_optimizer_state = _optimizer_from_safe(
            load_file(directory / "optimizer.safetensors"), manifest["optimizer"]
        )
    module.updates = int(manifest["updates"])
    module.last_loss = manifest["last_loss"]
    with np.load(directory / "replay.npz", allow_pickle=False) as arrays:
        memory.load_arrays({k: arrays[k] for k in arrays.files})
    state.cycle = int(manifest["cycle"])
    state.history = [CycleStats(**h) for h in manifest["history"]]
    return manifest
