"""Reconciliation: our book against the broker's account; the broker wins and every difference is recorded."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from adapters.protocols import Broker, Fill, Order, Position, Side, TradeUpdates
from trading.alerts import Alert, send
from trading.engine import FINAL, MINUTE, Book, TradingEngine, decision_id
from trading.ledger import Ledger
from trading.orders import OrderManager, OrderOutcome, client_order_id, transient
from warehouse.trade_history import (
    booked_fills,
    net_positions,
    order_statuses,
    ordered_symbols,
    recorded_fill_ids,
)

log = logging.getLogger(__name__)


def warehouse_positions(con: Any, *, run_id: str | None, mode: str) -> dict[str, float]:
    """Net quantity per symbol from stored fills: of one run (replay), or of the whole account (paper/live)."""
    return net_positions(con, run_id=run_id, mode=mode)


def account_positions(con: Any, mode: str) -> dict[str, float]:
    """What reconcile's `others` reads: net quantity per symbol of every run on the mode's
    account, with every symbol one of them ordered (a flat one, or an order whose fill is
    not stored yet: 0.0)."""
    return {
        **dict.fromkeys(ordered_symbols(con, mode=mode), 0.0),
        **net_positions(con, run_id=None, mode=mode),
    }


UNEXPLAINED_FOR = timedelta(minutes=2)
"""How long a position in a symbol the account's ledger does not know may wait before it is a
difference (another flow's first order in it is written just after the broker filled it)."""


def _unexplained_since(
    waiting: dict[str, tuple[float, datetime]], symbol: str, qty: float, now: datetime
) -> datetime:
    """Since when `qty` of `symbol` has gone unexplained (now, if it is new or it moved)."""
    seen = waiting.get(symbol)
    if seen is None or abs(seen[0] - qty) > 1e-9:
        waiting[symbol] = seen = (qty, now)
    return seen[1]


def _account_snapshot(
    broker: Broker, shared: bool, tries: int = 3
) -> tuple[list[Position], float] | None:
    """The broker's positions and cash as of one moment; None when no such read was had.

    Two reads, not one: with another flow on the account (`shared`), its order can fill
    between them -- the cash spent without the position bought, the book's equity short by
    the position's value for a reconciliation interval (a daily-loss kill switch from
    nothing). Cash read before and after the positions: equal, the two are of one moment.
    """
    for _ in range(tries if shared else 1):
        cash = broker.get_account().cash
        positions = broker.get_positions()
        if not shared or abs(broker.get_account().cash - cash) <= 0.01:
            return positions, cash
    return None


def reconcile(
    book: Book,
    broker: Broker,
    ledger: Ledger,
    *,
    account: str,
    run_id: str,
    now: datetime,
    own: Collection[str] | None = None,
    others: Callable[[], Mapping[str, float] | None] | None = None,
    unexplained: dict[str, tuple[float, datetime]] | None = None,
) -> int:
    """Make the book match the broker's positions and cash; returns how many differences were found.

    A rate-limited or unreachable broker skips this reconciliation (logged): the next one
    runs at its interval, and a stale book cannot double an order (open orders block).

    One account, several flows (live-trading's SPY, crypto-trading's coins): `own` are the
    symbols this session trades (None: all of them). A position in another symbol the
    account's ledger knows (`others()`: net quantity per symbol of every run on the account
    and every symbol one of them ordered, account_positions; None when the warehouse cannot
    be read now) is another flow's, which reconciles it: adopted into the book without a
    difference or an alert (its quantity is not compared with the stored fills: another
    flow stores a fill with its next decision, up to a minute after the broker filled
    it; its order, with the decision), and marked at the
    broker's price -- the book's equity is then the account's, and a flow's daily loss
    does not count another flow's purchase as money gone. The account's cash, which every
    flow on it moves, is adopted the same way unless a difference was found. A position in
    a symbol no stored fill knows (bought by hand) is a difference, as before; while the
    warehouse cannot say, another symbol's waits for the next reconciliation.

    `unexplained` (kept by the caller from one reconciliation to the next: symbol -> the
    quantity and since when): a symbol the ledger does not know may be another flow's first
    order in it, filled at the broker a moment before its row is written. While one waits (up to UNEXPLAINED_FOR; then it is a
    difference) or the warehouse cannot say, the book keeps its last view of the other
    flows -- their positions and the cash together, never the cash of a purchase without
    its position. Without `unexplained`, such a position is a difference at once and,
    while the warehouse cannot say, the cash is adopted and the positions wait.
    """
    shared = own is not None and others is not None
    try:
        snapshot = _account_snapshot(broker, shared)
    except Exception as err:
        if not transient(err):
            raise
        log.warning("reconciliation skipped: broker rate-limited or unavailable (%s)", err)
        return 0
    if snapshot is None:
        log.warning("reconciliation skipped: another flow's orders kept filling while it read")
        return 0
    positions, cash = snapshot
    theirs = {p.symbol: p.qty for p in positions}
    values = {p.symbol: p.market_value for p in positions}
    found = 0
    differences: list[str] = []
    stored: Mapping[str, float] | None = None
    asked = False
    other_flows = False
    waiting: dict[str, tuple[float, datetime]] = unexplained if unexplained is not None else {}
    deferred = False
    """Something of another flow unknown now: its part of the book waits (with `unexplained`)."""
    adopted: dict[str, float] = {}
    """Other flows' positions to take into the book."""
    for symbol in sorted(set(theirs) | {s for s, q in book.qty.items() if q} | set(waiting)):
        ours, broker_qty = book.qty.get(symbol, 0.0), theirs.get(symbol, 0.0)
        moved = abs(ours - broker_qty) > 1e-9
        if shared and own is not None and symbol not in own:
            assert others is not None
            if not moved and symbol not in waiting and (unexplained is None or not broker_qty):
                continue  # (with `unexplained`, a held one is looked up: its mark)
            if not asked:
                stored, asked = others(), True
            if stored is None:
                other_flows = True  # unknown now: checked at the next reconciliation
                deferred = deferred or unexplained is not None
                continue
            if symbol in stored:
                other_flows = True
                waiting.pop(symbol, None)
                if broker_qty:
                    book.marks[symbol] = values[symbol] / broker_qty
                if moved:
                    log.info("%s: %g held by another flow on the account", symbol, broker_qty)
                    adopted[symbol] = broker_qty
                continue
            if not moved:
                waiting.pop(symbol, None)  # a difference adopted before: nothing new
                continue
            if (
                unexplained is not None
                and now - _unexplained_since(unexplained, symbol, broker_qty, now) < UNEXPLAINED_FOR
            ):
                other_flows = deferred = True  # perhaps another flow's first fill, not stored yet
                continue
            waiting.pop(symbol, None)
            ours = 0.0  # no run on the account ordered it
        elif not moved:
            continue
        found += 1
        differences.append(f"{symbol}: ours {ours:g}, the broker's {broker_qty:g}")
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
    adopt = found > 0 or not deferred
    if adopt:
        book.qty.update(adopted)
    if abs(book.cash - cash) > 0.01:
        if shared and not other_flows and not found:
            # Another flow may have traded and come back to the same positions since the
            # last look (its round trip moved the cash): any other symbol on the account.
            assert own is not None and others is not None
            if not asked:
                stored, asked = others(), True
            other_flows = stored is None or any(
                s not in own for s in [*stored, *theirs, *(s for s, q in book.qty.items() if q)]
            )
        if book.cash != 0 and (found or not other_flows):
            found += 1
            differences.append(f"cash: ours {book.cash:,.2f}, the broker's {cash:,.2f}")
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
        if adopt or found:
            book.cash = cash
    if differences:
        send(
            Alert(
                "reconcile.difference",
                account,
                f"{found} difference(s) with the broker, its view adopted: "
                + "; ".join(differences),
                {"run_id": run_id, "differences": differences, "at": now},
            )
        )
    return found


def fill_id(order: Order) -> str:
    """(broker order id, cumulative filled quantity): the same order state is the same fill id."""
    return f"{order.id}:{order.filled_qty:g}"


@runtime_checkable
class _ListsOrders(Protocol):
    def list_orders(
        self, status: Literal["open", "closed", "all"] = "open", limit: int = 500
    ) -> list[Order]: ...


def session_client_ids(
    run_id: str, symbol: str, session_open: datetime, until: datetime
) -> dict[str, str]:
    """client_order_id -> decision_id of every decision this run could have made so far."""
    out: dict[str, str] = {}
    when = session_open + MINUTE
    while when <= until + MINUTE:
        did = decision_id(run_id, symbol, when)
        out[client_order_id(did)] = did
        when += MINUTE
    return out


def recover_orders(
    engine: TradingEngine,
    poller: OrderFillPoller,
    broker: Broker,
    con: Any,
    *,
    candidates: dict[str, str],
    now: datetime,
) -> list[Fill]:
    """After a restart: orders of this run the broker has but the warehouse has not recorded in full.

    A process killed between the broker's accept and the ledger's flush leaves an order
    (and its fill) only at the broker. Each such order is written to the ledger with its
    decision, its fills up to the broker's filled_qty are recorded and booked (quantity
    only: the book's cash comes from the broker already), an order still open is watched
    again, and nothing is ever resubmitted: the fill ids are the poller's, so a later
    poll of the same state is the same row.
    """
    if not candidates:
        return []
    # Fills already recorded are booked already: a route that repeats one after the
    # restart (stream replay, a poll) must not book it again.
    engine.seen_fills.update(recorded_fill_ids(con, list(candidates)))
    if not isinstance(broker, _ListsOrders):
        return []
    recorded = order_statuses(con, list(candidates))
    booked = booked_fills(con, list(candidates))
    recovered: list[Fill] = []
    for order in broker.list_orders(status="all", limit=500):
        did = candidates.get(order.client_order_id)
        if did is None:
            continue
        cid = order.client_order_id
        poller.filled[cid] = booked.get(cid, (0.0, 0.0))
        fill = poller.advance(order)
        if recorded.get(cid) != order.status or fill is not None:
            engine.ledger.order(order, did, now)
        if order.status not in FINAL:
            engine.open_orders[cid] = did
            poller.track(order)
        if fill is None:
            continue
        engine.seen_fills.add(fill.fill_id)
        sign = 1.0 if fill.side == "buy" else -1.0
        engine.book.qty[fill.symbol] = engine.book.qty.get(fill.symbol, 0.0) + sign * fill.qty
        engine.ledger.fill(fill, "rest")
        engine.ledger.event(
            {
                "event_id": f"{engine.config.run_id}|{fill.fill_id}|missing_fill",
                "ts": now,
                "account": engine.config.account,
                "symbol": fill.symbol,
                "kind": "missing_fill",
                "warehouse_qty": booked.get(cid, (0.0, 0.0))[0],
                "broker_qty": order.filled_qty,
                "action": "recorded_broker_fill",
                "detail": f"order {cid} ({order.status}) was at the broker but not in the "
                "warehouse (a run stopped before its flush); its fill recorded, nothing resent",
            }
        )
        recovered.append(fill)
    if recovered:
        log.warning(
            "recovered %d fill(s) the broker had and the warehouse did not: %s",
            len(recovered),
            ", ".join(f.fill_id for f in recovered),
        )
    return recovered


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
        open_now = set(self.open_ids())
        self.watch |= open_now
        for cid in sorted(self.watch):
            try:
                order = self.broker.get_order_by_client_id(cid)
            except Exception as err:
                # Rate-limited or unreachable: hand back what this poll found so far (its
                # progress is already counted in self.filled); the rest comes next poll.
                if not out or not transient(err):
                    raise
                log.warning("fill poll cut short: broker unavailable (%s)", err)
                break
            if order is None:
                if cid not in open_now:
                    self.watch.discard(cid)  # never placed (a rate-limited submit)
                continue
            fill = self.advance(order)
            if fill is not None:
                out.append(fill)
            if order.status in ("filled", "canceled", "rejected", "expired"):
                self.watch.discard(cid)
        return out

    def advance(self, order: Order, *, ts: datetime | None = None) -> Fill | None:
        """The fill that takes this order from what was booked to its filled_qty, if any."""
        cid = order.client_order_id
        before, cost_before = self.filled.get(cid, (0.0, 0.0))
        if order.filled_qty <= before + 1e-12 or order.filled_avg_price is None:
            return None
        qty = order.filled_qty - before
        cost = order.filled_qty * order.filled_avg_price
        self.filled[cid] = (order.filled_qty, cost)
        return Fill(
            fill_id=fill_id(order),
            order_id=order.id,
            client_order_id=cid,
            symbol=order.symbol,
            side=order.side,
            qty=qty,
            price=(cost - cost_before) / qty,
            ts=ts or order.submitted_at or datetime.now().astimezone(),
        )


class StreamedFills:
    """Fills from the broker's trade-updates stream as they happen, then from the REST poller.

    A streamed order state goes through the poller's own bookkeeping (`advance`), so a fill
    has one id whichever route brings it first -- (broker order id, cumulative filled qty)
    -- and the other route finds nothing new: booked once. The poller still polls every
    open order each minute: what the stream missed (dropped, reconnecting, an event lost)
    is found there (`seen_via` says which route booked each fill).

    The stream carries the whole account's updates: another flow's orders on the same
    account (crypto-trading's, to live-trading) are not this engine's and are skipped --
    only orders the poller watches (placed by this run, or open) or has booked count.
    """

    def __init__(self, poller: OrderFillPoller, updates: TradeUpdates) -> None:
        self.poller = poller
        self.updates = updates
        self.streamed = 0
        self.polled = 0
        self.foreign = 0
        """Streamed fills of orders that are not this run's (skipped)."""

    def track(self, order: Order) -> None:
        self.poller.track(order)

    def __call__(self) -> list[Fill]:
        out: list[Fill] = []
        updates = self.updates.drain()
        ours = self.poller.watch | set(self.poller.open_ids()) if updates else set()
        for order, ts in updates:
            cid = order.client_order_id
            if cid not in ours and cid not in self.poller.filled:
                self.foreign += 1
                continue
            fill = self.poller.advance(order, ts=ts)
            if fill is not None:
                out.append(replace(fill, extra={**fill.extra, "seen_via": "stream"}))
        polled = [replace(f, extra={**f.extra, "seen_via": "rest"}) for f in self.poller()]
        self.streamed += len(out)
        self.polled += len(polled)
        return out + polled


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
