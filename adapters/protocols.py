"""The Protocols every external system is reached through; implementations live beside this file."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

import polars as pl

from core.posts import Post


@runtime_checkable
class Clock(Protocol):
    """Injected time: `now()` is timezone-aware UTC."""

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


@runtime_checkable
class BarSource(Protocol):
    """Historical bars. Yields frames in the canonical schema (core.bar_schema.BAR_SCHEMA)."""

    name: str

    def fetch_bars(
        self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime
    ) -> Iterator[pl.DataFrame]:
        """Bars with start time in [start, end), one or more frames per symbol, in delivery order."""
        ...


BarHandler = Callable[[pl.DataFrame], Awaitable[None]]


@runtime_checkable
class BarStream(Protocol):
    """Live bars pushed to an async handler, one canonical-schema frame per message."""

    def subscribe(self, symbols: Sequence[str], handler: BarHandler) -> None: ...

    def run(self) -> None:
        """Block, delivering bars, until stop() is called."""
        ...

    def stop(self) -> None: ...


@runtime_checkable
class PostSource(Protocol):
    """New posts from subreddits, newest last, strictly after `since` when given."""

    def fetch_posts(
        self, subreddits: Sequence[str], since: datetime | None, limit: int
    ) -> Iterator[Post]: ...


Side = Literal["buy", "sell"]


@dataclass(frozen=True)
class OrderRequest:
    """A market or limit order; client_order_id is deterministic per decision (idempotency key)."""

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    order_type: Literal["market", "limit"] = "market"
    limit_price: float | None = None
    time_in_force: Literal["day", "gtc", "ioc"] = "day"


@dataclass(frozen=True)
class Order:
    """The broker's view of one order."""

    id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    filled_qty: float
    filled_avg_price: float | None
    status: str
    submitted_at: datetime | None


@dataclass(frozen=True)
class Position:
    symbol: str
    qty: float
    avg_entry_price: float
    market_value: float


@dataclass(frozen=True)
class Account:
    cash: float
    equity: float
    buying_power: float
    currency: str = "USD"
    paper: bool = True
    daytrade_count: int = 0
    """Day trades in the last 5 business days (Alpaca's field; the PDT rule counts them)."""


@dataclass(frozen=True)
class MarketClock:
    timestamp: datetime
    is_open: bool
    next_open: datetime
    next_close: datetime


@dataclass(frozen=True)
class Fill:
    fill_id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    ts: datetime
    fee: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


class DuplicateOrderError(RuntimeError):
    """The broker already has an order with this client_order_id: look it up, never resubmit."""

    client_order_id: str


@runtime_checkable
class Broker(Protocol):
    """Trading account access (Alpaca trading or the simulated broker)."""

    def get_account(self) -> Account: ...

    def get_clock(self) -> MarketClock: ...

    def get_positions(self) -> list[Position]: ...

    def submit_order(self, request: OrderRequest) -> Order: ...

    def get_order_by_client_id(self, client_order_id: str) -> Order | None: ...

    def cancel_order(self, order_id: str) -> None: ...

    def close_all_positions(self) -> list[Order]: ...


@runtime_checkable
class TradeUpdates(Protocol):
    """Order states pushed by the broker as orders fill (Alpaca's trade_updates stream)."""

    def start(self) -> Any: ...

    def drain(self) -> list[tuple[Order, datetime | None]]:
        """Each filled order state received since the last drain (with its event time)."""
        ...

    def stop(self) -> None: ...
