"""An ensemble of K Q-networks behind the single network's interface (encode, q, encode_step, initial_state).

Every consumer of a Q-network (training's evaluation, the backtest's batched Q paths, the
engine's stepwise Q, AgentPolicy.predict, the registry) handles an ensemble unchanged: its
encoding is the members' encodings side by side on the last axis (so any leading shape a
caller slices, expands or gathers works), and q() returns one score per action whose argmax
is the ensemble's decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.qnet import NestedLSTMQNet, RecurrentState

MEAN_Q = "mean_q"
VOTE = "vote"
RULES = (MEAN_Q, VOTE)


def member_seed(seed: int, member: int) -> int:
    """The training seed of an ensemble's member `member` for an agent of seed `seed`.

    Member 0 trains with the agent's own seed (so it is exactly the single agent of that
    seed); member k > 0 with the first 32-bit word of numpy's SeedSequence([seed, k]), so
    agents of neighbouring seeds never share members (seed + k would: agent 1's member 1 would
    be agent 2's member 0).
    """
    if member == 0:
        return seed
    return int(np.random.SeedSequence([seed, member]).generate_state(1)[0])


@dataclass
class EnsembleState(RecurrentState):
    """What predict() carries between bars of one session for an ensemble: every member's state.

    The inherited fields are member 0's (so code reading a RecurrentState, e.g. its step,
    sees the same bar count); the members' own states drive encode_step.
    """

    members: tuple[RecurrentState, ...] = ()


class EnsembleQNet(NestedLSTMQNet):
    """K member networks of one architecture deciding together, by their mean Q or a vote.

    A subclass of NestedLSTMQNet only so every signature typed with the single network takes
    it; it owns none of the single network's layers, only its members (state-dict keys
    'members.<k>.<member key>').
    """

    def __init__(self, members: Sequence[NestedLSTMQNet], rule: str = MEAN_Q) -> None:
        # nn.Module's init, not NestedLSTMQNet's: the ensemble has no layers of its own.
        nn.Module.__init__(self)
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        if rule not in RULES:
            raise ValueError(f"ensemble rule {rule!r} is not one of {RULES}")
        first = members[0]
        for m in members[1:]:
            if (m.arch, m.n_features, m.actions) != (first.arch, first.n_features, first.actions):
                raise ValueError("ensemble members must share architecture, features and actions")
        self.members = nn.ModuleList(members)
        self.rule = rule
        self.arch = first.arch
        self.n_features = first.n_features
        self.actions = first.actions
        self.n_actions = first.n_actions
        self.n_positions = first.n_positions
        self._member_width = first.encoding_size

    @property
    def size(self) -> int:
        return len(self.members)

    def nets(self) -> list[NestedLSTMQNet]:
        """The member networks, in order."""
        return [m for m in self.members if isinstance(m, NestedLSTMQNet)]

    @property
    def encoding_size(self) -> int:
        return self.size * self._member_width

    def _split(self, encoding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if encoding.shape[-1] != self.encoding_size:
            raise ValueError(
                f"ensemble encoding has width {encoding.shape[-1]}, expected {self.encoding_size}"
            )
        return torch.split(encoding, self._member_width, dim=-1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Whole sessions [B, T, F] -> the members' encodings side by side [B, T, K * H]."""
        return torch.cat([m.encode(x) for m in self.nets()], dim=-1)

    def member_q(self, encoding: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Every member's Q-values [K, ..., A] from an ensemble encoding [..., K * H]."""
        parts = self._split(encoding)
        return torch.stack([m.q(e, position) for m, e in zip(self.nets(), parts, strict=True)])

    def q(self, encoding: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Scores [..., A] whose argmax is the ensemble's action.

        'mean_q': the members' mean Q-values. 'vote': (votes + softmax(mean Q)) / (K + 1),
        votes being how many members' greedy action each action is; the softmax term is < 1
        apart between any two actions, so it only orders actions with equal votes (ties go to
        the higher mean Q). A non-finite member Q makes the scores non-finite, as a single
        network's would (callers hold on NaN).
        """
        qs = self.member_q(encoding, position)
        mean = qs.mean(dim=0)
        if self.rule == MEAN_Q:
            return mean
        votes = nn.functional.one_hot(qs.argmax(dim=-1), self.n_actions).sum(dim=0)
        return (votes.to(mean.dtype) + torch.softmax(mean, dim=-1)) / (self.size + 1)

    def initial_state(self, batch: int = 1) -> EnsembleState:
        states = tuple(m.initial_state(batch) for m in self.nets())
        return _ensemble_state(states)

    def encode_step(
        self, x: torch.Tensor, state: RecurrentState
    ) -> tuple[torch.Tensor, EnsembleState]:
        """One bar [B, F] -> encoding [B, K * H]; identical to encode() over the session so far."""
        if not isinstance(state, EnsembleState) or len(state.members) != self.size:
            raise TypeError(
                f"an ensemble of {self.size} steps from its own initial_state(), not a "
                f"{type(state).__name__}"
            )
        outs = [m.encode_step(x, s) for m, s in zip(self.nets(), state.members, strict=True)]
        enc = torch.cat([e for e, _ in outs], dim=-1)
        return enc, _ensemble_state(tuple(s for _, s in outs))


def _ensemble_state(states: tuple[RecurrentState, ...]) -> EnsembleState:
    first = states[0]
    return EnsembleState(
        fast=first.fast, slow=first.slow, slow_out=first.slow_out, step=first.step, members=states
    )
