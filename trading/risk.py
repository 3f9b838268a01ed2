"""The risk engine: every target position passes here before an order is made, in live and backtest alike."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from core.account_rules import AccountRules, pdt_refusal, trading_date
from trading.alerts import Alert, send

if TYPE_CHECKING:
    from adapters.sim_broker import SimulatedBroker

Verdict = Literal["accepted", "rejected", "reduced"]

KILL_SWITCH_FILE = "KILL_SWITCH"
"""The manual kill switch: a file of this name in the data folder (see RiskEngine)."""


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


BUYING_POWER_MARGIN = 0.0
"""The share of the account's buying power kept unspent. 0: an increase is cut to what the
broker's stated buying power pays for at the last close; a market order that then fills
higher than its buying power allows is refused by the broker and recorded as rejected."""


@dataclass
class BuyingPower:
    """The account's buying power as the broker last reported it, shared by every risk engine
    on the account in this run and spent down by the increases they allow until the next
    report (trading.account_risk refreshes it each minute). None: unknown, not checked (a
    replay's simulated account, which has its own rules)."""

    left: float | None = None
    unsettled: float = 0.0
    """Sale proceeds the broker holds but a cash account may not spend yet (T+1), for the
    reason of a refusal."""

    def refresh(self, value: float, unsettled: float = 0.0) -> None:
        self.left = max(0.0, value)
        self.unsettled = max(0.0, unsettled)

    def spend(self, notional: float) -> None:
        if self.left is not None:
            self.left = max(0.0, self.left - notional)


@dataclass
class DayTrades:
    """The account's day trades as the broker last reported them, for the pattern-day-trader
    rule of `rules` (core.account_rules): a sell that would close a position opened today is
    refused when the broker would refuse it. Refreshed before each decision (the backtest
    refreshes it from the simulated broker)."""

    rules: AccountRules
    coin: bool = False
    count: int = 0
    """Day trades within the rules' window (Alpaca's daytrade_count)."""
    opened_today: bool = False
    """The position was bought today: selling now would be a day trade."""
    day: date | None = None

    def refresh(self, *, count: int, opened_today: bool, day: date) -> None:
        self.count, self.opened_today, self.day = count, opened_today, day

    def refusal(self, equity: float) -> str | None:
        """Why a sell now would be refused (None: it would not be a day trade, or is allowed)."""
        if not self.opened_today or self.day is None:
            return None
        return pdt_refusal(
            self.rules, day=self.day, coin=self.coin, day_trades=self.count, equity=equity
        )


class RiskDecision(NamedTuple):
    """What the engine allows: the target quantity to move to, and why (a tuple: one per bar)."""

    verdict: Verdict
    target_qty: float
    reason: str | None = None


@dataclass
class RiskEngine:
    """Stateful checks over one run: orders per minute and the kill switches remember the past.

    Two kill switches stop new risk (what they allow is `limits.kill_action`: only orders
    that reduce the position, or closing it):
    - the daily-loss switch trips when equity falls `daily_loss_limit` below the day's
      start and stays on until the next trading day (`start_day`);
    - the manual switch is the file `kill_file` (the live-trading flow uses
      `<data_dir>/KILL_SWITCH`): engage it with `touch <data_dir>/KILL_SWITCH`, from any
      shell, while a run is going -- it is looked for at every decision; delete the file
      to clear it.
    Separately, `set_reduce_only(reason)` is the data-health switch the live loop sets
    while the bar stream is silent or reconnecting (decisions then rest on back-filled
    bars) and clears with `set_reduce_only(None)` once live bars flow again: orders that
    would increase |position| are rejected with the reason, reducing ones pass.

    With `alert_as` set (the traded symbol: trading sessions set it, backtests do not), a
    kill switch that engages sends the alert `kill-switch.engaged` (trading.alerts) about
    that subject, once each time it engages.
    """

    limits: RiskLimits = field(default_factory=RiskLimits)
    kill_file: Path | None = None
    alert_as: str | None = None
    _manual_engaged: bool = field(default=False, repr=False)
    _orders: deque[datetime] = field(default_factory=deque, repr=False)
    _day: date | None = None
    _day_start_equity: float = 0.0
    killed: bool = False
    kill_reason: str | None = None
    reduce_only_reason: str | None = None
    account_reason: str | None = None
    """Set by trading.account_risk.AccountRisk: the whole account's limit that holds now."""
    account_kill: bool = False
    """Whether that limit is the account's daily-loss kill switch (kill_action applies) rather
    than its exposure limit (reduce-only)."""
    buying_power: BuyingPower | None = None
    """The account's buying power (set by AccountRisk on paper/live): an increase the broker
    could not pay for is cut to what it can, or rejected, before it is sent."""
    fractional: bool = False
    """Units may be fractional (coins); whole shares otherwise."""
    buy_cost_rate: float = 0.0
    """What a buy costs beyond its price, as a rate (slippage and fee: the simulated broker
    checks buying power against price x (1 + slippage) x (1 + fee)); an increase is cut to
    what the buying power pays for at that cost."""
    day_trades: DayTrades | None = None
    """The pattern-day-trader rule (a margin account's): a sell that would make a day trade
    the broker refuses is rejected here first, with the reason."""

    def set_reduce_only(self, reason: str | None) -> None:
        """Only reductions from now on, because of `reason`; None lifts it."""
        self.reduce_only_reason = reason

    def set_account_limit(self, reason: str | None, *, kill: bool = False) -> None:
        """The account-wide verdict (all flows on the account): a kill switch when `kill`
        (this engine's kill_action), else reduce-only; None lifts it."""
        self.account_reason = reason
        self.account_kill = kill and reason is not None

    def manual_kill_reason(self) -> str | None:
        """Why the manual switch is engaged (how to clear it included), or None."""
        if self.kill_file is not None and self.kill_file.exists():
            return f"manual kill switch: {self.kill_file} exists (delete the file to clear it)"
        return None

    def start_day(self, day: date, equity: float) -> None:
        """A new trading day: the kill switch resets and the loss limit is measured from `equity`."""
        if day != self._day:
            self._day = day
            self._day_start_equity = equity
            self.killed = False
            self.kill_reason = None

    def resume_day(self, day: date, start_equity: float) -> None:
        """A run restarted during `day`: measure the loss limit from the day's recorded start.

        Without it a restart would measure the day's loss from the equity at the restart,
        lifting a tripped daily-loss switch and granting a fresh loss budget; with it, the
        switch trips again at the first decision if the day's loss is past the limit.
        """
        self.start_day(day, start_equity)
        self._day_start_equity = start_equity

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
        q_values: np.ndarray | list[float],
        current_qty: float,
        target_qty: float,
        price: float,
        equity: float,
    ) -> RiskDecision:
        """The allowed target for a decision; the first rule that objects decides the reason."""
        qs = q_values if isinstance(q_values, list) else q_values.tolist()
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
            self._alert_kill(
                self.kill_reason,
                {"switch": "daily-loss", "day_loss": loss, "equity": equity, "at": now},
            )
        verdict: Verdict = "accepted"
        reason: str | None = None
        manual = self.manual_kill_reason()
        if (manual is not None) != self._manual_engaged:
            self._manual_engaged = manual is not None
            if manual is not None:
                self._alert_kill(manual, {"switch": "manual", "at": now})
        account_kill = self.account_reason if self.account_kill else None
        kill_reason = (
            None
            if manual is None and not self.killed and account_kill is None
            else "; ".join(
                r for r in (manual, self.kill_reason if self.killed else None, account_kill) if r
            )
        )
        if kill_reason:
            if self.limits.kill_action == "flatten":
                if target_qty != 0 or current_qty != 0:
                    verdict, reason = "reduced", f"{kill_reason}; flatten"
                target_qty = 0.0
            elif _increases(current_qty, target_qty):
                return RiskDecision("rejected", current_qty, f"{kill_reason}; reduce-only")
        if self.account_reason is not None and not self.account_kill:
            why = f"reduce-only: {self.account_reason}"
            if _increases(current_qty, target_qty):
                return RiskDecision("rejected", current_qty, why)
            reason = why if reason is None else f"{reason}; {why}"
        if self.reduce_only_reason is not None:
            why = f"reduce-only: {self.reduce_only_reason}"
            if _increases(current_qty, target_qty):
                return RiskDecision("rejected", current_qty, why)
            reason = why if reason is None else f"{reason}; {why}"
        if self.day_trades is not None and current_qty > 0 and target_qty < current_qty:
            pdt = self.day_trades.refusal(equity)
            if pdt is not None:
                return RiskDecision("rejected", current_qty, pdt)
        cap = self.limits.max_position_notional / price
        if abs(target_qty) > cap:
            # Whole shares for a stock; a coin keeps its 1e-6 units (a floor to whole coins
            # would cut a BTC position over the cap to 0).
            units = math.floor(cap * 1e6) / 1e6 if self.fractional else float(math.floor(cap))
            target_qty = math.copysign(units, target_qty)
            capped = f"position capped at {self.limits.max_position_notional:,.0f} notional"
            verdict, reason = "reduced", capped if reason is None else f"{reason}; {capped}"
        if self.buying_power is not None and self.buying_power.left is not None:
            cut = self._afford(current_qty, target_qty, price)
            if cut is not None:
                target_qty, why = cut
                if target_qty == current_qty:
                    return RiskDecision("rejected", current_qty, why)
                verdict, reason = "reduced", why if reason is None else f"{reason}; {why}"
        if target_qty != current_qty:
            used = self._orders_last_minute(now)
            if used >= self.limits.max_orders_per_minute:
                return RiskDecision(
                    "rejected",
                    current_qty,
                    f"order rate: {used} orders in the last 60 s (max {self.limits.max_orders_per_minute})",
                )
        if self.buying_power is not None and _increases(current_qty, target_qty):
            added = abs(target_qty) - (abs(current_qty) if current_qty * target_qty > 0 else 0.0)
            self.buying_power.spend(added * price * (1.0 + self.buy_cost_rate))
        return RiskDecision(verdict, target_qty, reason)

    def _afford(
        self, current_qty: float, target_qty: float, price: float
    ) -> tuple[float, str] | None:
        """The target cut to the buying power left (None: affordable as it is)."""
        if not _increases(current_qty, target_qty):
            return None
        assert self.buying_power is not None and self.buying_power.left is not None
        left = self.buying_power.left
        kept = abs(current_qty) if current_qty * target_qty > 0 else 0.0
        added = abs(target_qty) - kept
        usable = left * (1.0 - BUYING_POWER_MARGIN)
        unit_cost = price * (1.0 + self.buy_cost_rate)
        if added * unit_cost <= usable:
            return None
        units = usable / unit_cost
        units = math.floor(units * 1e6) / 1e6 if self.fractional else float(math.floor(units))
        unsettled = self.buying_power.unsettled
        why = (
            f"buying power: {left:,.2f} left"
            + (f" ({unsettled:,.2f} of sale proceeds not settled yet)" if unsettled > 0 else "")
            + f", the order needs {added * unit_cost:,.2f}; "
            + (f"cut to {units:g} units" if units > 0 else "nothing sent")
        )
        if units <= 0:
            return current_qty, why
        return math.copysign(kept + units, target_qty), why

    def _alert_kill(self, reason: str, details: dict[str, object]) -> None:
        if self.alert_as is None:
            return
        action = self.limits.kill_action
        send(
            Alert(
                "kill-switch.engaged",
                self.alert_as,
                f"{reason}; {action} until {'the file is deleted' if details['switch'] == 'manual' else 'the next trading day'}",
                {**details, "kill_action": action},
            )
        )


def _increases(current_qty: float, target_qty: float) -> bool:
    """Moving from current to target adds risk: a bigger position, or one on the other side."""
    return abs(target_qty) > abs(current_qty) or current_qty * target_qty < 0


def enforce_account_rules(
    risk: RiskEngine, rules: AccountRules, *, coin: bool, fee_bps: float, slippage_bps: float
) -> None:
    """Make `risk` refuse what a simulated broker with `rules` would refuse (a backtest's or a
    replay's): its buying power, net of each buy's slippage and fee, and -- where the rules
    have it -- the pattern-day-trader limit; see_simulated_account() refreshes them."""
    if not rules.enforced:
        return
    risk.buying_power = BuyingPower()
    risk.fractional = coin
    risk.buy_cost_rate = (1 + slippage_bps / 1e4) * (1 + fee_bps / 1e4) - 1
    if rules.pdt:
        risk.day_trades = DayTrades(rules, coin=coin)


def see_simulated_account(
    risk: RiskEngine, sim: SimulatedBroker, symbol: str, now: datetime
) -> None:
    """Before a decision on `symbol` at `now`: the simulated account's buying power, unsettled
    proceeds and day trades, as its broker would judge an order now."""
    if risk.buying_power is None:
        return
    risk.buying_power.refresh(sim.buying_power(symbol), sim.unsettled())
    if risk.day_trades is not None:
        risk.day_trades.refresh(
            count=sim.daytrade_count(),
            opened_today=sim.could_day_trade(symbol, "sell"),
            day=trading_date(now),
        )
