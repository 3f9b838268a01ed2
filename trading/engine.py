"""The one execution path: policy -> risk engine -> order manager -> broker -> ledger.

Backtests, replayed sessions, paper and live trading all call `TradingEngine.decide` once
per closed bar. Only two things differ between them, both injected: where Q-values come
from (`StepwiseQ` walks the agent's LSTMs bar by bar as live must; `PrecomputedQ` reads
the same Q-values computed for a whole session in one pass, which is what makes a year
of minutes fast) and which Broker fills the orders.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from adapters.protocols import Broker, Fill, Order, Side
from adapters.sim_broker import SimulatedBroker
from models.actions import LEGACY, ActionSet
from models.qnet import RecurrentState
from models.registry import AgentPolicy
from trading.ledger import Ledger
from trading.orders import (
    OrderInDoubtError,
    OrderManager,
    client_order_id,
    rate_limited,
    transient,
)
from trading.risk import RiskEngine

log = logging.getLogger(__name__)

MINUTE = timedelta(minutes=1)
FINAL = ("filled", "canceled", "rejected", "expired", "not_placed")
RATE_LIMITED = "rate_limited"
"""An order whose submit met the broker's rate limit: unknown until a lookup answers."""


class QSource(Protocol):
    actions: ActionSet
    """What the Q-values' actions do and the grid of positions their rows are for."""

    def begin_session(self, key: str) -> None: ...

    def q(self, row: np.ndarray, step: int) -> np.ndarray:
        """Q-values [P grid positions (actions.grid), A actions] at this bar of the session."""
        ...


class StepwiseQ:
    """Live inference: one LSTM step per bar through the registry's policy (AgentPolicy.q_step),
    the recurrent state carried through the session."""

    def __init__(self, policy: AgentPolicy) -> None:
        self.policy = policy
        self.actions = policy.net.actions
        self.state: RecurrentState | None = None

    def begin_session(self, key: str) -> None:
        self.state = None

    def q(self, row: np.ndarray, step: int) -> np.ndarray:
        q, self.state = self.policy.q_step(row, self.state, episode_start=self.state is None)
        return q


class PrecomputedQ:
    """Backtests: Q-values of whole sessions from one batched pass (models.dqn.greedy_q_paths)."""

    def __init__(self, q_by_session: dict[str, np.ndarray], actions: ActionSet = LEGACY) -> None:
        self.q_by_session = q_by_session
        self.actions = actions
        self.current: list[list[list[float]]] | None = None

    def begin_session(self, key: str) -> None:
        # Plain nested lists: indexing them per bar is several times cheaper than numpy's.
        self.current = self.q_by_session[key].tolist()

    def q(self, row: np.ndarray, step: int) -> Any:
        assert self.current is not None, "begin_session first"
        return self.current[step]


@dataclass
class Book:
    """Our own view of the account, moved by fills and marked by bars; reconciled against the broker."""

    cash: float
    qty: dict[str, float] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)

    def apply(self, fill: Fill) -> None:
        sign = 1.0 if fill.side == "buy" else -1.0
        self.cash -= sign * fill.qty * fill.price + fill.fee
        self.qty[fill.symbol] = self.qty.get(fill.symbol, 0.0) + sign * fill.qty
        if abs(self.qty[fill.symbol]) < 1e-12:
            self.qty[fill.symbol] = 0.0

    def positions_value(self) -> float:
        total = 0.0
        for symbol, qty in self.qty.items():
            if qty:
                total += qty * self.marks.get(symbol, 0.0)
        return total

    def equity(self) -> float:
        return self.cash + self.positions_value()


@dataclass(frozen=True)
class EngineConfig:
    run_id: str
    mode: str
    account: str
    symbol: str
    model_id: str
    feature_names: tuple[str, ...]
    allocation: float = 1.0
    """Fraction of equity held when long (the allocator's weight, when there is one)."""
    fractional: bool = False
    """Coins trade in fractions (6 decimals); stocks in whole shares."""
    flatten_before_close_min: float = 1.0
    """Decisions this close to the session's end go flat (0 keeps positions overnight)."""
    store_inputs: bool = True
    """Write each decision's feature values to the ledger (backtests skip it for speed)."""
    allow_short: bool = False
    """Let a model with negative action levels trade (the trading flows' risk.allow_short);
    refused at start otherwise, and always on the simulated broker, which cannot hold a
    negative position."""


def refuse_short(actions: ActionSet, config: EngineConfig, broker: Broker) -> None:
    """Refuse, at start, a model whose action levels go short where shorting is not allowed.

    Without allow_short (the risk config's) any negative level is refused; with it the
    simulated broker still refuses: it rejects a sell beyond the units held, so it cannot
    hold a negative position and a short model's backtest would be half a simulation.
    """
    if not actions.allows_short:
        return
    if not config.allow_short:
        raise ValueError(
            f"model {config.model_id} has short action levels {actions.levels}; the risk "
            "config does not allow short positions (risk.allow_short is false)"
        )
    if isinstance(broker, SimulatedBroker):
        raise ValueError(
            f"model {config.model_id} has short action levels {actions.levels}; the simulated "
            "broker cannot hold a negative position, so its backtest or paper run is refused"
        )


def decision_id(run_id: str, symbol: str, when: datetime) -> str:
    return f"{run_id}|{symbol}|{when.isoformat()}"


class TradingEngine:
    """Decides once per closed bar and sends what the risk engine allows; writes everything to the ledger."""

    def __init__(
        self,
        config: EngineConfig,
        q_source: QSource,
        broker: Broker,
        risk: RiskEngine,
        orders: OrderManager,
        ledger: Ledger,
        book: Book,
        fills: Callable[[], list[Fill]],
        seen_via: str = "sim",
    ) -> None:
        self.config = config
        self.q_source = q_source
        self.broker = broker
        self.risk = risk
        self.orders = orders
        self.ledger = ledger
        self.book = book
        self._fills = fills
        self.seen_via = seen_via
        self.session_key: str | None = None
        self.seen_fills: set[str] = set()
        self.open_orders: dict[str, str] = {}  # client_order_id -> decision_id
        self.unconfirmed: dict[str, Order] = {}  # submits the rate limit cut off, by cid
        self.skipped_cycles = 0
        self.decisions = 0
        self.orders_sent = 0
        self._now: datetime | None = None
        self.actions: ActionSet = getattr(q_source, "actions", LEGACY)
        self._grid = self.actions.grid
        self._flat = self.actions.index_of(0.0)
        refuse_short(self.actions, config, broker)

    def sync_fills(self) -> list[Fill]:
        """Apply and record fills not seen before (each fill is booked once, whatever repeats it).

        A fill carries the route it came by in `extra["seen_via"]` (stream, rest); without
        one it is the engine's. A broker that is rate-limited or unreachable leaves the
        rest of this sync to the next one: nothing is lost, since the sources hand back
        what they have not delivered yet, and open orders keep new ones from being sent.
        """
        new: list[Fill] = []
        try:
            fills = self._fills()
        except Exception as err:
            if not transient(err):
                raise
            log.warning("fills not synced this cycle: broker unavailable (%s)", err)
            return new
        for fill in fills:
            if fill.fill_id in self.seen_fills:
                continue
            self.seen_fills.add(fill.fill_id)
            self.book.apply(fill)
            self.ledger.fill(fill, fill.extra.get("seen_via", self.seen_via))
            new.append(fill)
        now = self._now or datetime.now(UTC)
        for cid in list(self.open_orders):
            try:
                order = self.broker.get_order_by_client_id(cid)
            except Exception as err:
                if not transient(err):
                    raise
                log.warning(
                    "open order %s not checked this cycle: broker unavailable (%s)", cid, err
                )
                break
            unsent = self.unconfirmed.pop(cid, None)
            if order is None and unsent is not None:
                # The rate limit refused the submit and the broker has no such order: it was
                # never placed. The decision stays recorded; a later one trades instead.
                log.info("order %s was not placed (rate-limited submit); slot freed", cid)
                self.ledger.order(
                    replace(unsent, status="not_placed"), self.open_orders.pop(cid), now
                )
            elif order is not None and order.status in FINAL:
                self.ledger.order(order, self.open_orders.pop(cid), now)
            elif order is not None and unsent is not None:
                # It landed after all (an earlier attempt got through): an open order now,
                # which the fill poller watches like any other.
                self.ledger.order(order, self.open_orders[cid], now)
        return new

    def mark(self, symbol: str, price: float) -> None:
        self.book.marks[symbol] = price

    def begin_session(self, key: str, day: Any = None) -> None:
        """A new episode of the policy (its recurrent state restarts); with `day`, also a new
        trading day. Episodes and trading days differ outside minute bars: a 63-bar episode
        of daily bars holds 63 trading days, each with its own daily-loss budget."""
        self.session_key = key
        self.q_source.begin_session(key)
        if day is not None:
            self.start_day(day)

    def start_day(self, day: Any) -> None:
        """A new trading day: the daily-loss limit is measured from the equity now."""
        self.risk.start_day(day, self.book.equity())

    def warm_up(self, row: np.ndarray, step: int) -> None:
        """Feed a past bar of the session to the policy without deciding (restart mid-session)."""
        self.q_source.q(row, step)

    def grid_index(self, current: float, equity: float, price: float) -> int:
        """The grid position (index into actions.grid) the book holds.

        Flat when no unit is held; otherwise the grid level of the held side nearest to the
        exposure qty * price / (equity * allocation), the fraction _target_qty sized it to.
        Read from the book, not remembered: exact after a restart, a partial fill or a risk
        cap, and for the legacy grid (0, 1) it is 1 exactly when long, as before levels.
        """
        if current == 0:
            return self._flat
        side = [i for i, x in enumerate(self._grid) if x != 0 and (x > 0) == (current > 0)]
        if not side:
            return self._flat  # a held side the grid lacks: the book is not the model's
        budget = equity * self.config.allocation
        ok = math.isfinite(price) and price > 0 and math.isfinite(budget) and budget > 0
        exposure = current * price / budget if ok else math.copysign(math.inf, current)
        return min(side, key=lambda i: abs(self._grid[i] - exposure))

    def _target_qty(
        self, flag: float, held: float, current: float, equity: float, price: float
    ) -> float:
        """Units for target exposure `flag` (a fraction of equity times the allocation, signed)
        from the grid level `held` the book is at now."""
        if not math.isfinite(price) or price <= 0:
            return current  # no size from a bad price: the risk check rejects it with the reason
        if flag == held:
            return current  # no re-sizing churn while the position is unchanged
        if flag == 0:
            return 0.0
        budget = max(equity, 0.0) * self.config.allocation * abs(flag) / price
        units = (
            math.floor(budget * 1e6) / 1e6 if self.config.fractional else float(math.floor(budget))
        )
        return math.copysign(units, flag)

    def decide(
        self,
        *,
        now: datetime,
        bar_ts: datetime,
        price: float,
        row: np.ndarray,
        step: int,
        session_close: datetime | None,
        allocation: float | None = None,
        bar_close: datetime | None = None,
    ) -> str:
        """One decision on the bar that started at bar_ts and closed at bar_close (default bar_ts + 1 min).

        session_close is the close of the bar's own session where positions go flat before
        it (None: no forced flat, as for daily bars and 24/7 or 24/5 markets).
        """
        cfg = self.config
        symbol = cfg.symbol
        when = bar_ts + MINUTE if bar_close is None else bar_close
        self._now = now
        current = self.book.qty.get(symbol, 0.0)
        q_grid = self.q_source.q(row, step)
        equity = self.book.equity()
        position = self.grid_index(current, equity, price)
        q = q_grid[position]
        qs: list[float] = q if isinstance(q, list) else q.tolist()
        # A sum is finite exactly when every term is (NaN and inf propagate).
        finite = math.isfinite(sum(qs))
        aset = self.actions
        action = qs.index(max(qs)) if finite else aset.hold_action(position)
        held = self._grid[position]
        # The target exposure: the chosen level (legacy: flat 0, long 1, hold the held level).
        flag = aset.target(action, position)
        reason_prefix = None
        # Only a bar of the session that closes within the window: a bar after the close
        # (extended hours) is not "before the close" of anything.
        if (
            cfg.flatten_before_close_min > 0
            and session_close is not None
            and 0 <= (session_close - when).total_seconds() <= cfg.flatten_before_close_min * 60
        ):
            # An override whenever the model wanted a position, whether or not it moves.
            reason_prefix = "flatten before the close" if flag != 0 else None
            flag = 0.0
        target = self._target_qty(flag, held, current, equity, price)
        verdict = self.risk.check(
            now=now,
            bar_close=when,
            q_values=qs,
            current_qty=current,
            target_qty=target,
            price=price,
            equity=equity,
        )
        did = decision_id(cfg.run_id, symbol, when)
        reason = verdict.reason
        if reason_prefix:
            reason = reason_prefix if reason is None else f"{reason_prefix}; {reason}"
        self.ledger.decision(
            {
                "decision_id": did,
                "run_id": cfg.run_id,
                "mode": cfg.mode,
                "symbol": symbol,
                "ts": when,
                "model_id": cfg.model_id,
                "inputs": json.dumps(
                    {n: round(float(v), 6) for n, v in zip(cfg.feature_names, row, strict=True)}
                )
                if cfg.store_inputs
                else None,
                "q_values": qs,
                "action": aset.names[action],
                "allocation": cfg.allocation if allocation is None else allocation,
                "risk_verdict": verdict.verdict,
                "risk_reason": reason,
                "created_at": now,
            }
        )
        self.decisions += 1
        if verdict.verdict != "accepted":
            log.log(
                logging.WARNING if verdict.verdict == "rejected" else logging.INFO,
                "risk engine %s decision %s (%s): %s",
                verdict.verdict,
                did,
                aset.names[action],
                reason,
            )
        delta = verdict.target_qty - current
        if abs(delta) > 1e-9 and not self.open_orders:
            side: Side = "buy" if delta > 0 else "sell"
            self.risk.record_order(now)
            try:
                order = self.orders.place(did, symbol, side, abs(delta)).order
            except OrderInDoubtError as err:
                # Unknown whether it exists: keep it open so every sync looks it up again.
                log.error("order for %s in doubt: %s", did, err)
                order = self._unsent(did, symbol, side, abs(delta), "in_doubt", now)
            except Exception as err:  # noqa: BLE001 -- a broker rejection ends this order, not the session
                if rate_limited(err):
                    # Not sent (429), as far as anyone knows: keep it open, unconfirmed, so
                    # no other order goes out until a lookup says whether it landed.
                    self.skipped_cycles += 1
                    log.warning(
                        "skipped: broker rate-limited; no order for %s this cycle (%s %g %s): %s",
                        did,
                        side,
                        abs(delta),
                        symbol,
                        err,
                    )
                    order = self._unsent(did, symbol, side, abs(delta), RATE_LIMITED, now)
                    self.unconfirmed[order.client_order_id] = order
                    self.ledger.order(order, did, now)
                    self.open_orders[order.client_order_id] = did
                    return aset.names[action]
                log.warning("order for %s rejected by the broker: %s", did, err)
                order = self._unsent(did, symbol, side, abs(delta), "rejected", now)
            self.ledger.order(order, did, now)
            if order.status not in FINAL:
                self.open_orders[order.client_order_id] = did
            self.orders_sent += 1
        return aset.names[action]

    def _unsent(
        self, did: str, symbol: str, side: Side, qty: float, status: str, now: datetime
    ) -> Order:
        return Order(
            id="",
            client_order_id=client_order_id(did),
            symbol=symbol,
            side=side,
            qty=qty,
            filled_qty=0.0,
            filled_avg_price=None,
            status=status,
            submitted_at=now,
        )

    def record_equity(self, when: datetime) -> None:
        self.ledger.equity(self.config.account, when, self.book.cash, self.book.positions_value())
