"""Reconciliation: our book against the broker's account; the broker wins and every difference is recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from adapters.protocols import Broker, Fill, Order, Side
from trading.engine import Book
from trading.ledger import Ledger
from trading.orders import OrderManager, OrderOutcome


def warehouse_positions(con: Any, *, run_id: str | None, mode: str) -> dict[str, float]:
    """Net quantity per symbol from stored fills: of one run (replay), or of the whole account (paper/live)."""
    if run_id is not None:
        rows = con.execute(
            "SELECT f.symbol, sum(CASE f.side WHEN 'buy' THEN f.qty ELSE -f.qty END) FROM fills f"
            " JOIN orders o USING (client_order_id) JOIN decisions d ON d.decision_id = o.decision_id"
            " WHERE d.run_id = ? GROUP BY f.symbol",
            [run_id],
        ).fetchall()
    else:
        rows = con.execute(
            "SELECT symbol, sum(CASE side WHEN 'buy' THEN qty ELSE -qty END) FROM fills"
            " WHERE mode = ? GROUP BY symbol",
            [mode],
        ).fetchall()
    return {str(s): float(q) for s, q in rows if q is not None and abs(float(q)) > 1e-12}


def reconcile(
    book: Book, broker: Broker, ledger: Ledger, *, account: str, run_id: str, now: datetime
) -> int:
    """Make the book match the broker's positions and cash; returns how many differences were found."""
    theirs = {p.symbol: p.qty for p in broker.get_positions()}
    found = 0
    for symbol in sorted(set(theirs) | {s for s, q in book.qty.items() if q}):
        ours, broker_qty = book.qty.get(symbol, 0.0), theirs.get(symbol, 0.0)
        if abs(ours - broker_qty) > 1e-9:
            found += 1
            ledger.event(
                {
                    "event_id": f"{run_id}|{symbol}|{now.isoformat()}|position",
                    "ts": now,
                    "account": account,
                    "symbol": symbol,
                    "kind": "position_mismatch",
                    "warehouse_qty": ours,
                    "broker_qty": broker_qty,
                    "action": "adopted_broker",
                    "detail": f"our book had {ours:g}, the broker {broker_qty:g}; the broker wins",
                }
            )
            book.qty[symbol] = broker_qty
    cash = broker.get_account().cash
    if abs(book.cash - cash) > 0.01:
        if book.cash != 0:
            found += 1
            ledger.event(
                {
                    "event_id": f"{run_id}|*|{now.isoformat()}|cash",
                    "ts": now,
                    "account": account,
                    "symbol": None,
                    "kind": "cash_mismatch",
                    "warehouse_qty": book.cash,
                    "broker_qty": cash,
                    "action": "adopted_broker",
                    "detail": f"our cash {book.cash:,.2f}, the broker's {cash:,.2f}",
                }
            )
        book.cash = cash
    return found


class OrderFillPoller:
    """Fills from order status (Alpaca paper/live): each increase of filled_qty becomes one fill.

    The fill id is (broker order id, cumulative filled quantity), so seeing the same state
    again -- after a restart, or on the next poll -- yields the same id and is booked once.
    """

    def __init__(self, broker: Broker, open_ids: Callable[[], Iterable[str]]) -> None:
        self.broker = broker
        self.open_ids = open_ids
        self.filled: dict[str, tuple[float, float]] = {}  # cid -> (filled qty, its cost)
        self.watch: set[str] = set()

    def track(self, order: Order) -> None:
        self.watch.add(order.client_order_id)

    def __call__(self) -> list[Fill]:
        out: list[Fill] = []
        self.watch |= set(self.open_ids())
        for cid in sorted(self.watch):
            order = self.broker.get_order_by_client_id(cid)
            if order is None:
                continue
            before, cost_before = self.filled.get(cid, (0.0, 0.0))
            if order.filled_qty > before + 1e-12 and order.filled_avg_price is not None:
                qty = order.filled_qty - before
                cost = order.filled_qty * order.filled_avg_price
                out.append(
                    Fill(
                        fill_id=f"{order.id}:{order.filled_qty:g}",
                        order_id=order.id,
                        client_order_id=cid,
                        symbol=order.symbol,
                        side=order.side,
                        qty=qty,
                        price=(cost - cost_before) / qty,
                        ts=order.submitted_at or datetime.now().astimezone(),
                    )
                )
                self.filled[cid] = (order.filled_qty, cost)
            if order.status in ("filled", "canceled", "rejected", "expired"):
                self.watch.discard(cid)
        return out


class TrackedOrderManager(OrderManager):
    """An OrderManager that hands every order it places to the fill poller.

    The engine keeps an order among its open orders -- all the poller would otherwise
    watch -- only when the broker's answer is not final yet. An order that comes back
    already filled (Alpaca answering a submit with the order filled, or the lookup after a
    timed-out submit finding it filled) would never be polled: its fill never booked, the
    book left flat while the broker holds the position.
    """

    def __init__(
        self,
        broker: Broker,
        poller: OrderFillPoller,
        *,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(broker, sleep=sleep)
        self.poller = poller

    def place(self, decision_id: str, symbol: str, side: Side, qty: float) -> OrderOutcome:
        outcome = super().place(decision_id, symbol, side, qty)
        self.poller.track(outcome.order)
        return outcome
