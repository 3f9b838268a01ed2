"""The simulated broker: the Broker protocol over replayed bars, used by replay sessions and backtests.

Market orders fill at the open of the first bar that starts at or after the order was
submitted (the next bar: a decision is made on a closed bar), moved against us by
`slippage_bps`, with a fee of `fee_bps` of the traded value and `sell_fee_bps` more on a sell
(core.fills, the rule train's held-out evaluation fills with; core.costs gives the numbers) -- the same cost model the agents are trained with
(models.env.Costs). Long-only: a sell larger than the position
is rejected, as a cash account would.

Partial fills (opt-in, `max_volume_share`): an order fills at most that share of each bar's
volume (the bar's volume given to `on_bar`); the rest stays open (`partially_filled`) for
the next bars until it is filled or canceled. Off by default: backtests and replays fill
whole orders, as training's evaluation does (one execution path); the soak turns it on.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from adapters.protocols import (
    Account,
    Clock,
    DuplicateOrderError,
    Fill,
    MarketClock,
    Order,
    OrderRequest,
    Position,
)
from core.fills import fill_fee, fill_price
from core.universe import is_coin


class SimDuplicateOrderError(DuplicateOrderError):
    def __init__(self, client_order_id: str) -> None:
        super().__init__(f"an order with client_order_id {client_order_id!r} exists already")
        self.client_order_id = client_order_id


@dataclass
class _Holding:
    qty: float = 0.0
    cost: float = 0.0  # sum of qty * fill price of the open quantity (average-cost basis)


class SimulatedBroker:
    """Cash account with next-bar fills; deterministic ids (sim-1, sim-2, ...) for reproducible ledgers."""

    def __init__(
        self,
        clock: Clock,
        *,
        cash: float = 100_000.0,
        fee_bps: float = 1.0,
        slippage_bps: float = 1.0,
        id_prefix: str = "sim",
        sell_fee_bps: float = 0.0,
        max_volume_share: float | None = None,
    ) -> None:
        if cash <= 0:
            raise ValueError("starting cash must be positive")
        if max_volume_share is not None and not 0 < max_volume_share <= 1:
            raise ValueError("max_volume_share is a fraction in (0, 1]")
        self.max_volume_share = max_volume_share
        self.clock = clock
        self.cash = float(cash)
        self.fee_rate = fee_bps / 1e4
        self.slip_rate = slippage_bps / 1e4
        self.sell_fee_rate = sell_fee_bps / 1e4
        self.id_prefix = id_prefix
        self._ids = itertools.count(1)
        self._orders: dict[str, Order] = {}  # by client_order_id
        self._pending: list[str] = []  # client_order_ids waiting for their bar
        self._holdings: dict[str, _Holding] = {}
        self._marks: dict[str, float] = {}
        self._fills: list[Fill] = []
        self._executions: dict[str, int] = {}  # order id -> fills so far
        self.market_open: bool = True
        self.next_open: datetime | None = None
        self.next_close: datetime | None = None

    # ---- market data pushed in by the replay -------------------------------------------

    def on_bar(
        self,
        symbol: str,
        ts: datetime,
        open_: float,
        close: float,
        volume: float | None = None,
    ) -> list[Fill]:
        """A bar starting at `ts`: fill the symbol's pending orders at its open, then mark at its
        close. With `max_volume_share` and the bar's `volume`, each order fills at most that
        share of it (whole shares for stocks); what is left waits for the next bar."""
        fills: list[Fill] = []
        still: list[str] = []
        room = (
            None
            if self.max_volume_share is None or volume is None
            else max(0.0, self.max_volume_share * volume)
        )
        for cid in self._pending:
            order = self._orders[cid]
            if order.symbol != symbol or (
                order.submitted_at is not None and order.submitted_at > ts
            ):
                still.append(cid)
                continue
            left = order.qty - order.filled_qty
            qty = left if room is None else min(left, self._lot(symbol, room))
            if qty <= 1e-12:
                still.append(cid)  # no volume for it in this bar
                continue
            fill = self._execute(order, open_, ts, qty)
            if fill is not None:
                fills.append(fill)
                if room is not None:
                    room -= qty
            if self._orders[cid].status == "partially_filled":
                still.append(cid)
        self._pending = still
        self._marks[symbol] = close
        self._fills.extend(fills)
        return fills

    def mark(self, symbol: str, price: float) -> None:
        self._marks[symbol] = price

    @staticmethod
    def _lot(symbol: str, qty: float) -> float:
        """What can trade of `qty`: whole shares for stocks, any amount for a coin pair."""
        return qty if is_coin(symbol) else math.floor(qty + 1e-9)

    def _execute(self, order: Order, open_: float, ts: datetime, qty: float) -> Fill | None:
        held = self._holdings.setdefault(order.symbol, _Holding())
        price = fill_price(open_, order.side, self.slip_rate)
        if order.side == "sell" and qty > held.qty + 1e-9:
            self._orders[order.client_order_id] = replace(order, status="rejected")
            return None
        notional = qty * price
        fee = fill_fee(qty, price, self.fee_rate, side=order.side, sell_fee_rate=self.sell_fee_rate)
        if order.side == "buy":
            self.cash -= notional + fee
            held.cost += notional
            held.qty += qty
        else:
            avg = held.cost / held.qty if held.qty else 0.0
            self.cash += notional - fee
            held.qty -= qty
            held.cost = held.qty * avg if held.qty > 1e-12 else 0.0
            if held.qty <= 1e-12:
                held.qty = 0.0
        filled = order.filled_qty + qty
        average = ((order.filled_avg_price or 0.0) * order.filled_qty + price * qty) / filled
        done = filled >= order.qty - 1e-9
        self._orders[order.client_order_id] = replace(
            order,
            filled_qty=order.qty if done else filled,
            filled_avg_price=price if order.filled_qty == 0 else average,
            status="filled" if done else "partially_filled",
        )
        executions = self._executions.get(order.id, 0) + 1
        self._executions[order.id] = executions
        return Fill(
            fill_id=f"{order.id}-{executions}",
            order_id=order.id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=qty,
            price=price,
            ts=ts,
            fee=fee,
        )

    def new_fills(self) -> list[Fill]:
        """Fills since the last call (what a trade-updates stream would have pushed)."""
        out, self._fills = self._fills, []
        return out

    # ---- the Broker protocol -------------------------------------------------------------

    def get_account(self) -> Account:
        equity = self.cash + sum(p.market_value for p in self.get_positions())
        return Account(cash=self.cash, equity=equity, buying_power=max(self.cash, 0.0), paper=True)

    def get_clock(self) -> MarketClock:
        now = self.clock.now()
        return MarketClock(
            timestamp=now,
            is_open=self.market_open,
            next_open=self.next_open or now,
            next_close=self.next_close or now + timedelta(hours=1),
        )

    def get_positions(self) -> list[Position]:
        out = []
        for symbol, held in sorted(self._holdings.items()):
            if held.qty > 1e-12:
                mark = self._marks.get(symbol, held.cost / held.qty)
                out.append(Position(symbol, held.qty, held.cost / held.qty, held.qty * mark))
        return out

    def submit_order(self, request: OrderRequest) -> Order:
        if request.client_order_id in self._orders:
            raise SimDuplicateOrderError(request.client_order_id)
        if not (math.isfinite(request.qty) and request.qty > 0):
            raise ValueError(f"order quantity must be positive, got {request.qty}")
        order = Order(
            id=f"{self.id_prefix}-{next(self._ids)}",
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            qty=float(request.qty),
            filled_qty=0.0,
            filled_avg_price=None,
            status="accepted",
            submitted_at=self.clock.now(),
        )
        self._orders[request.client_order_id] = order
        self._pending.append(request.client_order_id)
        return order

    def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id)

    def cancel_order(self, order_id: str) -> None:
        for cid in list(self._pending):
            order = self._orders[cid]
            if order.id == order_id:
                self._pending.remove(cid)
                self._orders[cid] = replace(order, status="canceled")

    def close_all_positions(self) -> list[Order]:
        for cid in list(self._pending):
            self.cancel_order(self._orders[cid].id)
        orders = []
        for pos in self.get_positions():
            orders.append(
                self.submit_order(
                    OrderRequest(
                        client_order_id=f"close-{pos.symbol}-{self.clock.now().isoformat()}",
                        symbol=pos.symbol,
                        side="sell",
                        qty=pos.qty,
                    )
                )
            )
        return orders

    def orders(self) -> list[Order]:
        return list(self._orders.values())

    def partially_filled_orders(self) -> int:
        """Orders filled in more than one execution so far."""
        return sum(1 for n in self._executions.values() if n > 1)

    def executions(self) -> int:
        """Fills (executions) so far, over all orders."""
        return sum(self._executions.values())
