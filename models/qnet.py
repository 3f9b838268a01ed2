"""The Q-network: a fast LSTM over bars nested with a slow LSTM over its block summaries, plus a Q head.

The LSTMs read market features only; the position enters the head. Because our orders do
not move the replayed market, a whole session is encoded in one pass and Q-values for
every position come from the head alone -- the source of the training speed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.actions import LEGACY, ActionSet


@dataclass(frozen=True)
class Architecture:
    """Sizes of the nested-LSTM Q-network (the genome of the architecture search)."""

    fast_hidden: int = 64
    """Hidden size of the fast LSTM over every bar."""
    fast_layers: int = 1
    """Stacked layers of the fast LSTM."""
    slow_hidden: int = 32
    """Hidden size of the slow LSTM over block summaries."""
    slow_layers: int = 1
    """Stacked layers of the slow LSTM."""
    slow_stride: int = 15
    """Bars per block: the slow LSTM steps once per block, on the fast state at its end."""
    head_hidden: int = 64
    """Width of the Q head's hidden layer."""
    dueling: bool = False
    """Split the head into state value + action advantages."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Architecture:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class RecurrentState:
    """What predict() carries between bars of one session."""

    fast: tuple[torch.Tensor, torch.Tensor]
    slow: tuple[torch.Tensor, torch.Tensor]
    slow_out: torch.Tensor
    step: int


class NestedLSTMQNet(nn.Module):
    def __init__(
        self,
        n_features: int,
        arch: Architecture,
        n_actions: int | None = None,
        actions: ActionSet = LEGACY,
    ) -> None:
        """`actions` (models.actions.ActionSet) fix the head's width and the position grid;
        `n_actions`, when given, must agree with them (older callers pass it)."""
        super().__init__()
        if n_actions is not None and n_actions != actions.n_actions:
            raise ValueError(f"n_actions {n_actions} but the action set has {actions.n_actions}")
        self.arch = arch
        self.n_features = n_features
        self.actions = actions
        self.n_actions = actions.n_actions
        self.n_positions = actions.n_positions
        self.fast = nn.LSTM(n_features, arch.fast_hidden, arch.fast_layers, batch_first=True)
        self.slow = nn.LSTM(arch.fast_hidden, arch.slow_hidden, arch.slow_layers, batch_first=True)
        width = arch.fast_hidden + arch.slow_hidden + self.n_positions
        self.body = nn.Sequential(nn.Linear(width, arch.head_hidden), nn.ReLU())
        self.advantage = nn.Linear(arch.head_hidden, self.n_actions)
        self.value = nn.Linear(arch.head_hidden, 1) if arch.dueling else None

    @property
    def encoding_size(self) -> int:
        return self.arch.fast_hidden + self.arch.slow_hidden

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Whole sessions [B, T, F] -> market encodings [B, T, fast+slow], causally."""
        fast_out, _ = self.fast(x)
        b, t, _ = fast_out.shape
        s = self.arch.slow_stride
        blocks = t // s
        zeros = fast_out.new_zeros(b, 1, self.arch.slow_hidden)
        if blocks:
            slow_out, _ = self.slow(fast_out[:, s - 1 :: s][:, :blocks])
            slow_seq = torch.cat([zeros, slow_out], dim=1)
        else:
            slow_seq = zeros
        # Bar t sees the slow state of the last block that ended at or before t.
        idx = (torch.arange(t, device=x.device) + 1) // s
        return torch.cat([fast_out, slow_seq[:, idx]], dim=2)

    def q(self, encoding: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Q-values [..., A] from encodings [..., H] and grid indices of positions [...]
        (ActionSet.index; the legacy grid's indices are the positions 0 and 1 themselves)."""
        p = self.n_positions
        onehot = nn.functional.one_hot(position.long().clamp(0, p - 1), p).to(encoding.dtype)
        z = self.body(torch.cat([encoding, onehot], dim=-1))
        adv = self.advantage(z)
        if self.value is None:
            return adv
        return self.value(z) + adv - adv.mean(dim=-1, keepdim=True)

    def initial_state(self, batch: int = 1) -> RecurrentState:
        a = self.arch
        return RecurrentState(
            fast=(
                torch.zeros(a.fast_layers, batch, a.fast_hidden),
                torch.zeros(a.fast_layers, batch, a.fast_hidden),
            ),
            slow=(
                torch.zeros(a.slow_layers, batch, a.slow_hidden),
                torch.zeros(a.slow_layers, batch, a.slow_hidden),
            ),
            slow_out=torch.zeros(batch, a.slow_hidden),
            step=0,
        )

    def encode_step(
        self, x: torch.Tensor, state: RecurrentState
    ) -> tuple[torch.Tensor, RecurrentState]:
        """One bar [B, F] -> encoding [B, H]; identical to encode() over the session so far."""
        out, fast = self.fast(x[:, None, :], state.fast)
        fast_t = out[:, 0]
        slow, slow_out = state.slow, state.slow_out
        if (state.step + 1) % self.arch.slow_stride == 0:
            s_out, slow = self.slow(fast_t[:, None, :], state.slow)
            slow_out = s_out[:, 0]
        enc = torch.cat([fast_t, slow_out], dim=1)
        return enc, RecurrentState(fast=fast, slow=slow, slow_out=slow_out, step=state.step + 1)


def greedy_q_paths(net: NestedLSTMQNet, features: torch.Tensor) -> np.ndarray:
    """Q-values for every grid position at every bar: [B, T, P positions, A] (net.actions.grid)."""
    with torch.no_grad():
        enc = net.encode(features)
        zeros = torch.zeros(enc.shape[:2])
        q = torch.stack([net.q(enc, zeros + p) for p in range(net.n_positions)], dim=2)
    return q.numpy()
