"""Per-bar rewards of the DQN agent (log growth, drawdown-penalised, differential Sharpe), one implementation for batch and step-wise play.

Both the batch rollout (models.dqn.act_sessions) and the step-wise environment
(models.env.VecMarketEnv) feed a RewardShaper one bar's log growth of money at a time,
so the same path earns the same rewards in either. Every kind is multiplied by
reward_scale. State is per session and starts afresh with each session.

- 'log_growth': g_t = log(m_t / m_{t-1}).
- 'drawdown': g_t - reward_dd_weight * max(0, dd_t - dd_{t-1}), with the drawdown on log
  money dd_t = max_{s<=t} log m_s - log m_t (the session's start, log m_0 = 0, included):
  a bar that deepens the drawdown pays for the deepening; a recovery earns only its growth.
- 'diff_sharpe': Moody & Saffell's differential Sharpe ratio on R_t = g_t (the log return
  of the bar, costs included). A_t = A_{t-1} + eta (R_t - A_{t-1}), B_t likewise on R_t^2,
  both starting at 0 each session; D_t = (B_{t-1} dA_t - 0.5 A_{t-1} dB_t) /
  (B_{t-1} - A_{t-1}^2)^{3/2} with dA_t = R_t - A_{t-1}, dB_t = R_t^2 - B_{t-1}; the
  reward is eta * D_t, the first-order change of the session's EMA Sharpe ratio, so that
  at the defaults (eta 0.01, scale 100) it is about the bar's return in standard
  deviations. Guard: D_t = 0 while B_{t-1} - A_{t-1}^2 <= DSR_MIN_VARIANCE, which always
  holds on a session's first bar (A = B = 0) and on every bar before its first non-zero
  return (a flat start); A and B are still updated on those bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

REWARD_KINDS = ("log_growth", "drawdown", "diff_sharpe")
DSR_MIN_VARIANCE = 1e-16
"""Below this EMA variance of per-bar log returns (a standard deviation of 1e-8, far under any
real bar's) the differential Sharpe ratio is taken as 0: its denominator is ~0."""


class RewardSettings(Protocol):
    """The reward fields of models.dqn.DQNParams (which satisfies this)."""

    @property
    def reward(self) -> str: ...

    @property
    def reward_scale(self) -> float: ...

    @property
    def reward_dd_weight(self) -> float: ...

    @property
    def dsr_eta(self) -> float: ...


@dataclass(frozen=True)
class RewardSpec:
    """Reward settings on their own (the env's default: log growth times 100)."""

    reward: str = "log_growth"
    reward_scale: float = 100.0
    reward_dd_weight: float = 1.0
    dsr_eta: float = 0.01

    def __post_init__(self) -> None:
        if self.reward not in REWARD_KINDS:
            raise ValueError(f"reward {self.reward!r} is not one of {REWARD_KINDS}")


DEFAULT_REWARD = RewardSpec()
"""Log growth of money times 100 (DQNParams' defaults)."""


class RewardShaper:
    """Per-session reward state for n sessions played side by side, fed one bar at a time."""

    def __init__(self, settings: RewardSettings, n: int) -> None:
        if settings.reward not in REWARD_KINDS:
            raise ValueError(f"reward {settings.reward!r} is not one of {REWARD_KINDS}")
        self.kind = settings.reward
        self.scale = float(settings.reward_scale)
        self.dd_weight = float(settings.reward_dd_weight)
        self.eta = float(settings.dsr_eta)
        self.n = n
        self.reset()

    def reset(self) -> None:
        """Every session starts afresh: log money 0 at its peak, A = B = 0."""
        self.log_money = np.zeros(self.n)
        self.peak = np.zeros(self.n)
        self.mean = np.zeros(self.n)  # A: EMA of R
        self.second = np.zeros(self.n)  # B: EMA of R^2

    def step(self, growth: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Scaled rewards [n] (float64) for one bar's log growth of money [n]; 0 where not
        active, and an inactive session's state is left as it was."""
        g = np.where(active, np.asarray(growth, dtype=np.float64), 0.0)
        if self.kind == "log_growth":
            shaped = g
        elif self.kind == "drawdown":
            drawdown = self.peak - self.log_money
            log_money = self.log_money + g
            peak = np.maximum(self.peak, log_money)
            deeper = np.maximum(0.0, (peak - log_money) - drawdown)
            shaped = g - self.dd_weight * deeper
            self.log_money = np.where(active, log_money, self.log_money)
            self.peak = np.where(active, peak, self.peak)
        else:
            a, b = self.mean, self.second
            d_a, d_b = g - a, g * g - b
            var = b - a * a
            ok = var > DSR_MIN_VARIANCE
            safe = np.where(ok, var, 1.0)
            dsr = np.where(ok, (b * d_a - 0.5 * a * d_b) / safe**1.5, 0.0)
            shaped = self.eta * dsr
            self.mean = np.where(active, a + self.eta * d_a, a)
            self.second = np.where(active, b + self.eta * d_b, b)
        return np.where(active, shaped * self.scale, 0.0)


def shape_rewards(settings: RewardSettings, growth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Scaled rewards [B, T] (float32) of whole played sessions from their per-bar log growth
    [B, T]; `valid` [B, T] marks the bars that were played (0 reward elsewhere)."""
    if settings.reward == "log_growth":
        # Stateless: the step-wise shaper's arithmetic on the whole array at once (the default
        # reward; the loop below would cost a Python step per bar of every rollout).
        g = np.where(valid, np.asarray(growth, dtype=np.float64), 0.0)
        return np.where(valid, g * float(settings.reward_scale), 0.0).astype(np.float32)
    shaper = RewardShaper(settings, growth.shape[0])
    out = np.zeros(growth.shape, dtype=np.float32)
    for t in range(growth.shape[1]):
        if valid[:, t].any():
            out[:, t] = shaper.step(growth[:, t], valid[:, t])
    return out
