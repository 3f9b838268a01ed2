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

Size impact (opt-in, `impact_bps`): a fill's slippage grows with the square root of its
share of the bar's volume (core.fills.sized_slippage_rate); 0 by default.

Account rules (opt-in, `rules`, core.account_rules): buying power per account type, T+1
settlement of stock sales for a cash account, the pattern-day-trader limit. An order the
rules refuse is answered `rejected` at submission, as Alpaca answers it (HTTP 403), and
never fills; `reject_reasons` says why. A buy is checked at submission against its cost at
the last mark (price with slippage, plus fee) and the buying power left after the open
buys; its fill at the next open may cost a little more, as a real market order may. The
default rules ("ideal") refuse nothing, so backtests and replays keep their numbers.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

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
from core.account_rules import (
    AccountRules,
    buy_refusal,
    buying_power,
    pdt_refusal,
    settlement_date,
    trading_date,
    window_start,
)
from core.fills import fill_fee, fill_price, sized_slippage_rate
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
    """Long-only account with next-bar fills under `rules`; deterministic ids (sim-1, sim-2, ...)
    for reproducible ledgers."""

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
        impact_bps: float = 0.0,
        rules: AccountRules | None = None,
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
        if impact_bps < 0:
            raise ValueError("impact_bps must be 0 or more")
        self.impact_rate = impact_bps / 1e4
        self.rules = rules or AccountRules()
        self.reject_reasons: dict[str, str] = {}  # client_order_id -> why it was rejected
        self._unsettled: list[tuple[date, float]] = []  # (settles on, sale proceeds)
        self._opened: dict[str, date] = {}  # stock bought on that day, not sold since
        self._day_trades: list[date] = []
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
            fill = self._execute(order, open_, ts, qty, volume)
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

    def _execute(
        self, order: Order, open_: float, ts: datetime, qty: float, volume: float | None = None
    ) -> Fill | None:
        held = self._holdings.setdefault(order.symbol, _Holding())
        slip = sized_slippage_rate(self.slip_rate, self.impact_rate, qty, volume)
        price = fill_price(open_, order.side, slip)
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
        if not is_coin(order.symbol):
            self._stock_fill(order.symbol, order.side, trading_date(ts), notional - fee)
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

    def _stock_fill(self, symbol: str, side: str, day: date, proceeds: float) -> None:
        """Day trades and settlement of a stock fill on `day` (coins have neither)."""
        if side == "buy":
            self._opened[symbol] = day
            return
        if self._opened.get(symbol) == day:  # buy then sell on one day: a day trade
            self._day_trades.append(day)
            del self._opened[symbol]
        if self.rules.settlement_days > 0:
            self._unsettled.append((settlement_date(day, self.rules.settlement_days), proceeds))

    def unsettled(self) -> float:
        """Sale proceeds not settled today (they are in `cash`, but not yet spendable)."""
        today = trading_date(self.clock.now())
        self._unsettled = [(d, v) for d, v in self._unsettled if d > today]
        return sum(v for _, v in self._unsettled)

    def daytrade_count(self) -> int:
        """Day trades within the rules' business-day window ending today (Alpaca's daytrade_count)."""
        if not self._day_trades:
            return 0
        start = window_start(trading_date(self.clock.now()), self.rules.pdt_window_days)
        self._day_trades = [d for d in self._day_trades if d >= start]
        return len(self._day_trades)

    def could_day_trade(self, symbol: str, side: str) -> bool:
        """Whether an order of `side` in `symbol` now could make a day trade: a sell of a stock
        bought today, or (Alpaca counts open orders, whatever order they fill in) a buy and a
        sell of it open together."""
        if is_coin(symbol):
            return False
        today = trading_date(self.clock.now())
        if side == "sell" and self._opened.get(symbol) == today:
            return True
        other = "buy" if side == "sell" else "sell"
        return any(
            self._orders[c].symbol == symbol and self._orders[c].side == other
            for c in self._pending
        )

    def buying_power(self, symbol: str | None = None) -> float:
        """What a buy may spend now (of `symbol`'s kind: coins are not marginable), less the
        estimated cost of the buys still open. Ideal rules: the cash, as before the rules."""
        if not self.rules.enforced:
            return max(self.cash, 0.0)
        stock = coin = 0.0
        for pos in self.get_positions():
            if is_coin(pos.symbol):
                coin += pos.market_value
            else:
                stock += pos.market_value
        power = buying_power(
            self.rules,
            cash=self.cash,
            unsettled=self.unsettled(),
            equity=self.cash + stock + coin,
            stock_value=stock,
            coin_value=coin,
            coin=symbol is not None and is_coin(symbol),
        )
        reserved = sum(
            self._buy_cost(o.symbol, o.qty - o.filled_qty)
            for o in (self._orders[c] for c in self._pending)
            if o.side == "buy"
        )
        return max(0.0, power - reserved)

    def _buy_cost(self, symbol: str, qty: float) -> float:
        """A buy's estimated cost at the last mark: price with slippage, plus fee (0: no mark)."""
        mark = self._marks.get(symbol)
        if mark is None:
            return 0.0
        price = fill_price(mark, "buy", self.slip_rate)
        return qty * price + fill_fee(qty, price, self.fee_rate, side="buy")

    def _refusal(self, request: OrderRequest) -> str | None:
        """Why the account's rules refuse this order now (None: accepted)."""
        if not self.rules.enforced:
            return None
        symbol = request.symbol
        today = trading_date(self.clock.now())
        if self.rules.pdt_applies(is_coin(symbol), today) and self.could_day_trade(
            symbol, request.side
        ):
            equity = self.cash + sum(p.market_value for p in self.get_positions())
            why = pdt_refusal(
                self.rules,
                day=today,
                coin=False,
                day_trades=self.daytrade_count(),
                equity=equity,
            )
            if why is not None:
                return why
        if request.side == "buy":
            return buy_refusal(
                self.rules,
                cost=self._buy_cost(symbol, request.qty),
                power=self.buying_power(symbol),
                unsettled=self.unsettled(),
            )
        return None

    def new_fills(self) -> list[Fill]:
        """Fills since the last call (what a trade-updates stream would have pushed)."""
        out, self._fills = self._fills, []
        return out

    # ---- the Broker protocol -------------------------------------------------------------

    def get_account(self) -> Account:
        equity = self.cash + sum(p.market_value for p in self.get_positions())
        return Account(
            cash=self.cash,
            equity=equity,
            buying_power=self.buying_power(),
            paper=True,
            daytrade_count=self.daytrade_count(),
        )

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
        refused = self._refusal(request)
        order = Order(
            id=f"{self.id_prefix}-{next(self._ids)}",
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            qty=float(request.qty),
            filled_qty=0.0,
            filled_avg_price=None,
            status="accepted" if refused is None else "rejected",
            submitted_at=self.clock.now(),
        )
        self._orders[request.client_order_id] = order
        if refused is None:
            self._pending.append(request.client_order_id)
        else:
            self.reject_reasons[request.client_order_id] = refused
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
