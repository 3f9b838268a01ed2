"""One risk view of the broker account, shared by every trading flow on it.

live-trading (SPY) and crypto-trading run as separate flows on one Alpaca account; each
RiskEngine sees only its own book. `AccountRisk` looks at the whole account -- the broker's
equity and positions -- once a minute in each flow, against limits stored in the warehouse
(`account_limits`, set with `tradingml account-limits`; defaults below) and one start
equity per UTC day (`account_days`, recorded by whichever flow looks first, read by both).
Paper and live only: a replay's simulated account is its own, and a replay trades as the
backtest of its bars does.

- account daily loss: equity `daily_loss_limit` below the day's start engages the account
  kill switch in every flow (each RiskEngine's `kill_action`: reduce-only or flatten) until
  the next UTC day, and sends the alert `kill-switch.engaged` (switch `account-daily-loss`);
- gross exposure: sum of |position value| above `max_gross_exposure` x equity makes every
  flow reduce-only until it is back under.

A check that cannot read the broker (rate limit, outage) keeps the last verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from adapters.protocols import Broker
from trading.alerts import Alert, send
from trading.orders import transient
from trading.risk import BuyingPower, RiskEngine
from warehouse.account_risk import account_day_start, load_account_limits
from warehouse.db import WarehouseLockedError, connect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccountLimits:
    """Account-wide limits (defaults when the warehouse holds none for the account)."""

    daily_loss_limit: float = 0.05
    """A loss of this fraction of the account's equity at the start of the UTC day."""
    max_gross_exposure: float = 1.0
    """Largest sum of |position value| as a multiple of account equity (1.0: no leverage)."""

    def __post_init__(self) -> None:
        if not 0 < self.daily_loss_limit < 1:
            raise ValueError("daily_loss_limit is a fraction in (0, 1)")
        if self.max_gross_exposure <= 0:
            raise ValueError("max_gross_exposure must be positive")


@dataclass(frozen=True)
class AccountView:
    """What one check saw of the account."""

    day: date
    equity: float
    start_equity: float
    recorded_by: str
    gross_exposure: float
    limits: AccountLimits
    buying_power: float | None = None
    """What the broker said the account could still buy."""

    @property
    def day_loss(self) -> float:
        return 1.0 - self.equity / self.start_equity if self.start_equity > 0 else 0.0

    @property
    def killed(self) -> bool:
        return self.day_loss >= self.limits.daily_loss_limit

    @property
    def over_exposed(self) -> bool:
        return self.gross_exposure > self.limits.max_gross_exposure + 1e-9

    def reason(self) -> str | None:
        """Why the account allows no new risk now, or None."""
        if self.killed:
            return (
                f"account kill switch: account day loss {100 * self.day_loss:.2f}% >= "
                f"{100 * self.limits.daily_loss_limit:.2f}% (all flows on the account)"
            )
        if self.over_exposed:
            return (
                f"account exposure {self.gross_exposure:.2f}x equity > "
                f"{self.limits.max_gross_exposure:.2f}x (all flows on the account)"
            )
        return None


class AccountRisk:
    """The account-wide check one flow runs every minute (see the module docstring)."""

    def __init__(
        self,
        account: str,
        run_id: str,
        warehouse: Path,
        lock_timeout_s: float | None = None,
        *,
        enabled: bool = True,
    ) -> None:
        self.account, self.run_id = account, run_id
        self.warehouse, self.lock_timeout_s = warehouse, lock_timeout_s
        self.enabled = enabled
        """False for a replay: its simulated account holds one flow only, and a replay must
        trade as the backtest of the same bars does (which has no account)."""
        self.view: AccountView | None = None
        self.buying_power = BuyingPower()
        """The account's buying power, shared by this flow's risk engines (apply)."""
        self._day_start: tuple[date, float, str] | None = None
        self._alerted_day: date | None = None

    def limits(self, con: Any) -> AccountLimits:
        stored = load_account_limits(con, self.account)
        return AccountLimits() if stored is None else AccountLimits(*stored)

    def check(self, con: Any, broker: Broker, now: datetime) -> AccountView | None:
        """Look at the account; None (the last verdict stands) when the broker cannot answer."""
        try:
            account = broker.get_account()
            positions = broker.get_positions()
        except Exception as err:
            if not transient(err):
                raise
            log.warning("account risk check skipped: broker unavailable (%s)", err)
            return None
        self.buying_power.refresh(account.buying_power)  # spent down again until the next look
        day = now.astimezone(UTC).date()
        if self._day_start is None or self._day_start[0] != day:
            start, by = account_day_start(con, self.account, day, account.equity, now, self.run_id)
            self._day_start = (day, start, by)
        _, start, by = self._day_start
        gross = sum(abs(p.market_value) for p in positions)
        self.view = AccountView(
            day=day,
            equity=account.equity,
            start_equity=start,
            recorded_by=by,
            gross_exposure=gross / account.equity if account.equity > 0 else float("inf"),
            limits=self.limits(con),
            buying_power=account.buying_power,
        )
        return self.view

    def tick(
        self, broker: Broker, risks: Iterable[RiskEngine], now: datetime, con: Any = None
    ) -> AccountView | None:
        """Check the account (through `con`, else a short connection of its own) and apply
        the verdict to `risks`; a warehouse locked by another process skips this minute."""
        if not self.enabled:
            return None
        if con is not None:
            self.check(con, broker, now)
        else:
            try:
                with connect(self.warehouse, timeout_s=self.lock_timeout_s) as own:
                    self.check(own, broker, now)
            except WarehouseLockedError as err:
                log.warning("account risk check skipped: %s", err)
        self.apply(risks)
        return self.view

    def apply(self, risks: Iterable[RiskEngine]) -> None:
        """Hand the last verdict to this flow's risk engines; alert once a day on the kill."""
        view = self.view
        if view is None:
            return
        reason = view.reason()
        for risk in risks:
            risk.set_account_limit(reason, kill=view.killed)
            risk.buying_power = self.buying_power
        if view.killed and self._alerted_day != view.day:
            self._alerted_day = view.day
            send(
                Alert(
                    "kill-switch.engaged",
                    self.account,
                    f"{reason}; until the next UTC day",
                    {
                        "switch": "account-daily-loss",
                        "equity": view.equity,
                        "start_equity": view.start_equity,
                        "day_loss": view.day_loss,
                        "run_id": self.run_id,
                    },
                )
            )
