"""The risk engine: every target position passes here before an order is made, in live and backtest alike."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

import numpy as np

Verdict = Literal["accepted", "rejected", "reduced"]


@dataclass(frozen=True)
class RiskLimits:
    """Limits of one trading run (defaults suit a $100k paper account)."""

    max_position_notional: float = 100_000.0
    """Largest position value in one symbol, in account currency."""
    max_orders_per_minute: int = 10
    """Orders allowed in any 60-second window; more are rejected."""
    daily_loss_limit: float = 0.03
    """Kill switch: a loss of this fraction of the day's starting equity stops new risk."""
    kill_action: Literal["reduce-only", "flatten"] = "reduce-only"
    """After the kill switch: only reduce positions, or close them all."""
    stale_after_s: float = 150.0
    """A decision on a bar that closed longer ago than this is rejected (stale data)."""
    max_abs_q: float = 1e6
    """Model outputs beyond this (or NaN/inf) are rejected as broken."""

    def __post_init__(self) -> None:
        if self.max_position_notional <= 0:
            raise ValueError("max_position_notional must be positive")
        if self.max_orders_per_minute < 1:
            raise ValueError("max_orders_per_minute must be at least 1")
        if not 0 < self.daily_loss_limit < 1:
            raise ValueError("daily_loss_limit is a fraction in (0, 1)")


@dataclass(frozen=True)
class RiskDecision:
    """What the engine allows: the target quantity to move to, and why."""

    verdict: Verdict
    target_qty: float
    reason: str | None = None


@dataclass
class RiskEngine:
    """Stateful checks over one run: orders per minute and the daily-loss kill switch remember the past."""

    limits: RiskLimits = field(default_factory=RiskLimits)
    _orders: deque[datetime] = field(default_factory=deque, repr=False)
    _day: date | None = None
    _day_start_equity: float = 0.0
    killed: bool = False
    kill_reason: str | None = None

    def start_day(self, day: date, equity: float) -> None:
        """A new trading day: the kill switch resets and the loss limit is measured from `equity`."""
        if day != self._day:
            self._day = day
            self._day_start_equity = equity
            self.killed = False
            self.kill_reason = None

    def record_order(self, when: datetime) -> None:
        self._orders.append(when)

    def _orders_last_minute(self, now: datetime) -> int:
        horizon = now - timedelta(seconds=60)
        while self._orders and self._orders[0] <= horizon:
            self._orders.popleft()
        return len(self._orders)

    def check(
        self,
        *,
        now: datetime,
        bar_close: datetime,
        q_values: np.ndarray,
        current_qty: float,
        target_qty: float,
        price: float,
        equity: float,
    ) -> RiskDecision:
        """The allowed target for a decision; the first rule that objects decides the reason."""
        qs = q_values.tolist() if isinstance(q_values, np.ndarray) else list(q_values)
        if not math.isfinite(sum(qs)):  # NaN and inf propagate through a sum
            return RiskDecision("rejected", current_qty, "model output contains NaN or inf")
        biggest = max(map(abs, qs))
        if biggest > self.limits.max_abs_q:
            return RiskDecision(
                "rejected",
                current_qty,
                f"model output {biggest:.3g} beyond +-{self.limits.max_abs_q:g}",
            )
        if not math.isfinite(price) or price <= 0:
            return RiskDecision("rejected", current_qty, f"no valid price ({price})")
        age = (now - bar_close).total_seconds()
        if age > self.limits.stale_after_s:
            return RiskDecision(
                "rejected", current_qty, f"stale data: last bar closed {age:.0f} s ago"
            )
        if (
            not self.killed
            and self._day_start_equity > 0
            and equity <= self._day_start_equity * (1 - self.limits.daily_loss_limit)
        ):
            self.killed = True
            loss = 1 - equity / self._day_start_equity
            self.kill_reason = f"kill switch: day loss {100 * loss:.2f}% >= {100 * self.limits.daily_loss_limit:.2f}%"
        verdict: Verdict = "accepted"
        reason: str | None = None
        if self.killed:
            if self.limits.kill_action == "flatten":
                if target_qty != 0 or current_qty != 0:
                    verdict, reason = "reduced", f"{self.kill_reason}; flatten"
                target_qty = 0.0
            elif abs(target_qty) > abs(current_qty):
                return RiskDecision("rejected", current_qty, f"{self.kill_reason}; reduce-only")
        cap = self.limits.max_position_notional / price
        if abs(target_qty) > cap:
            target_qty = math.copysign(math.floor(cap), target_qty)
            verdict, reason = (
                "reduced",
                (f"position capped at {self.limits.max_position_notional:,.0f} notional"),
            )
        if target_qty != current_qty:
            used = self._orders_last_minute(now)
            if used >= self.limits.max_orders_per_minute:
                return RiskDecision(
                    "rejected",
                    current_qty,
                    f"order rate: {used} orders in the last 60 s (max {self.limits.max_orders_per_minute})",
                )
        return RiskDecision(verdict, target_qty, reason)
