"""The agent's actions: what each action index means, the grid of positions it can hold, and the move.

One implementation for training, held-out evaluation, the backtest and the live engine.
`ActionSet()` (no levels) is the original three actions flat / hold / long over the
positions 0 and 1; `ActionSet((0, 0.5, 1))` has one action per target exposure (action i
goes to levels[i]; choosing the current level holds) over the positions given by the levels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

FLAT, HOLD, LONG = 0, 1, 2
LEGACY_NAMES = ("flat", "hold", "long")
LEGACY_GRID = (0.0, 1.0)
META_KEY = "action_levels"
"""The key of a model's metadata (and DQNParams) that stores the levels; absent or []: legacy."""


@dataclass(frozen=True)
class ActionSet:
    """Actions over a grid of positions; `levels` empty = the legacy flat / hold / long."""

    levels: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        levels = tuple(float(x) for x in self.levels)
        object.__setattr__(self, "levels", levels)
        if levels and (0.0 not in levels or len(set(levels)) != len(levels) or len(levels) < 2):
            raise ValueError(
                f"action levels {levels}: at least two distinct exposures, 0 among them"
            )

    @classmethod
    def from_levels(cls, levels: Sequence[float] | None) -> ActionSet:
        return cls(tuple(float(x) for x in (levels or ())))

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ActionSet:
        """A saved model's action set; artifacts written before #17 carry none: legacy."""
        return cls.from_levels(meta.get(META_KEY) or ())

    def to_meta(self) -> dict[str, Any]:
        """What a saved model's metadata holds: nothing for the legacy set (older artifacts' bytes)."""
        return {META_KEY: list(self.levels)} if self.levels else {}

    @property
    def legacy(self) -> bool:
        return not self.levels

    @property
    def n_actions(self) -> int:
        return len(LEGACY_NAMES) if self.legacy else len(self.levels)

    @property
    def grid(self) -> tuple[float, ...]:
        """The positions that can be held, in grid-index order (the net's position input)."""
        return LEGACY_GRID if self.legacy else self.levels

    @property
    def n_positions(self) -> int:
        return len(self.grid)

    @property
    def names(self) -> tuple[str, ...]:
        """Action names as decisions record them: flat/hold/long, or each level ('0.5')."""
        return LEGACY_NAMES if self.legacy else tuple(f"{x:g}" for x in self.levels)

    @property
    def flat(self) -> int:
        """The action the end-of-session rule forces: the one whose target is 0."""
        return FLAT if self.legacy else self.levels.index(0.0)

    @property
    def allows_short(self) -> bool:
        return any(x < 0 for x in self.grid)

    # ---- positions -> grid indices ----

    def index(self, position: torch.Tensor) -> torch.Tensor:
        """Grid index (long) of each position value: the nearest grid level."""
        if self.legacy:
            return position.long().clamp(0, 1)
        grid = torch.tensor(self.grid, dtype=position.dtype, device=position.device)
        return (position[..., None] - grid).abs().argmin(dim=-1)

    def index_np(self, position: np.ndarray) -> np.ndarray:
        """numpy twin of index()."""
        if self.legacy:
            return np.clip(np.asarray(position).astype(np.int64), 0, 1)
        grid = np.asarray(self.grid, dtype=np.float64)
        return np.abs(np.asarray(position, dtype=np.float64)[..., None] - grid).argmin(axis=-1)

    def index_of(self, position: float) -> int:
        return int(self.index_np(np.asarray([position]))[0])

    # ---- the move ----

    def next_position(self, position: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The position held after `action` from `position` (legacy: flat 0, hold same, long 1)."""
        if self.legacy:
            return torch.where(action == FLAT, 0.0, torch.where(action == LONG, 1.0, position))
        grid = torch.tensor(self.levels, dtype=position.dtype, device=position.device)
        return grid[action.long()]

    def next_position_np(self, position: np.ndarray, action: np.ndarray) -> np.ndarray:
        """numpy twin of next_position (float32 like the replay memory's positions)."""
        if self.legacy:
            out = np.where(action == FLAT, 0.0, np.where(action == LONG, 1.0, position))
        else:
            out = np.asarray(self.levels, dtype=np.float64)[np.asarray(action, dtype=np.int64)]
        return np.asarray(out, dtype=np.float32)

    def hold_actions(self, position: np.ndarray) -> np.ndarray:
        """The action that keeps each position (legacy: hold; else the position's own level)."""
        if self.legacy:
            return np.full(np.shape(position), HOLD, dtype=np.int64)
        return self.index_np(position).astype(np.int64)

    def hold_action(self, grid_index: int) -> int:
        """The action keeping the position at `grid_index`."""
        return HOLD if self.legacy else grid_index

    def target(self, action: int, grid_index: int) -> float:
        """The position (target exposure) `action` chooses from the position at `grid_index`."""
        if self.legacy:
            return 0.0 if action == FLAT else 1.0 if action == LONG else self.grid[grid_index]
        return self.levels[action]


LEGACY = ActionSet()
