"""A fake Alpaca REST server (market data + trading, aiohttp, loopback, its own thread) for tests."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import socket
import threading
import time as time_module
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from aiohttp import web

NEW_YORK = ZoneInfo("America/New_York")
STOCK_BARS_PATH = "/v2/stocks/bars"
CRYPTO_BARS_PATH = "/v1beta3/crypto/us/bars"
STOCK_FEEDS = ("iex", "sip", "delayed_sip", "otc", "boats", "overnight")
TIMEFRAMES = ("1Min", "5Min", "15Min", "30Min", "1Hour", "1Day")
DEFAULT_LIMIT = 1_000  # Alpaca's page size when the request names no limit
MAX_LIMIT = 10_000

# What malformed_bars can do to a bar (the first bars of each symbol in a page, in order).
MALFORMED_BAR_KINDS = (
    "missing_nvw",  # no n and no vw (alpaca-py's models would refuse the bar)
    "string_number",  # o as a string ("101.5")
    "string_ts",  # t that is no timestamp at all
    "missing_price",  # no c
    "not_a_dict",  # a string where the bar object belongs
)

_ERRORS: dict[int, tuple[int, str]] = {
    400: (40010000, "bad request"),
    401: (40110000, "request is not authorized"),
    403: (40310000, "forbidden"),
    404: (40410000, "not found"),
    422: (42210000, "unprocessable entity"),
    429: (42910000, "rate limit exceeded"),
    500: (50010000, "internal server error"),
}
# Per-request note from the fault middleware to the bars handler.
_MALFORMED = web.RequestKey("malformed_bars", tuple)
_OPEN_STATUSES = ("new", "accepted", "partially_filled", "pending_new")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it (headers are not kept: they carry the secret)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any = None
    authorized: bool = True
    at: float = 0.0
    """When it arrived, on the fake's `request_clock` (time.monotonic unless a test sets one)."""


@dataclass
class Fault:
    """Applied to the next `times` requests whose path starts with `path_prefix`."""

    path_prefix: str
    times: int = 1
    method: str | None = None
    status: int | None = None
    body: str | None = None
    delay: float = 0.0
    malformed_json: bool = False
    malformed_bars: tuple[str, ...] = ()
    after: bool = False
    """With `status`: run the real handler first (an order is created), then answer
    `status` instead of its response -- a request that landed but whose answer was lost."""
    delay_after: float = 0.0
    """Run the real handler, then wait this long before answering: a client with a shorter
    read timeout gives up on a request that did land (a submit that "timed out")."""
    until: float | None = None
    """Also stop applying once `request_clock` reaches this (a storm that lasts a while)."""
    reset_in: float = 60.0
    """A 429's X-RateLimit-Reset: this many seconds from now (Alpaca's window refill)."""
    retry_after: str | None = None
    """A 429's Retry-After header, when set (Alpaca sends none; a proxy in front may)."""

    def matches(self, method: str, path: str, now: float = 0.0) -> bool:
        return (
            self.times > 0
            and (self.until is None or now < self.until)
            and path.startswith(self.path_prefix)
            and (self.method is None or self.method == method)
        )


@dataclass
class _Series:
    """One symbol's bars of one timeframe, sorted: epoch-µs keys and ready-made JSON objects."""

    frame: pl.DataFrame
    keys: list[int] = field(default_factory=list)
    json: list[str] = field(default_factory=list)


def random_walk_bars(
    symbol: str,
    start: datetime,
    periods: int,
    *,
    timeframe: str = "1Min",
    step: timedelta | None = None,
    price: float = 100.0,
    volatility: float = 0.001,
    seed: int = 0,
) -> pl.DataFrame:
    """`periods` consecutive bars (no sessions, no gaps) in the canonical schema, source 'fake'."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    step = step or _STEPS[timeframe]
    rng = np.random.default_rng(seed)
    closes = price * np.exp(np.cumsum(rng.normal(0.0, volatility, periods)))
    opens = np.concatenate([[price], closes[:-1]])
    spread = np.abs(rng.normal(0.0, volatility / 2, periods)) * closes
    highs = np.maximum(opens, closes) + spread
    lows = np.minimum(opens, closes) - spread
    ts = pl.datetime_range(
        start.astimezone(UTC),
        start.astimezone(UTC) + step * (periods - 1),
        interval=step,
        time_unit="us",
        time_zone="UTC",
        eager=True,
    )
    return pl.DataFrame(
        {
            "symbol": [symbol] * periods,
            "timeframe": [timeframe] * periods,
            "ts": ts,
            "open": opens.round(4),
            "high": highs.round(4),
            "low": lows.round(4),
            "close": closes.round(4),
            "volume": rng.integers(100, 10_000, periods).astype(np.float64),
            "trade_count": rng.integers(1, 200, periods),
            "vwap": ((highs + lows + closes) / 3).round(4),
            "source": ["fake"] * periods,
        }
    )


_STEPS = {
    "1Min": timedelta(minutes=1),
    "5Min": timedelta(minutes=5),
    "15Min": timedelta(minutes=15),
    "30Min": timedelta(minutes=30),
    "1Hour": timedelta(hours=1),
    "1Day": timedelta(days=1),
}


def _num_text(col: str) -> pl.Expr:
    return (
        pl.when(pl.col(col).is_null()).then(pl.lit("null")).otherwise(pl.col(col).cast(pl.String))
    )


def _bar_json(frame: pl.DataFrame) -> list[str]:
    """Each bar as Alpaca's JSON object, built vectorised once at load time."""
    return (
        frame.select(
            pl.concat_str(
                pl.lit('{"t":"'),
                pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                pl.lit('","o":'),
                _num_text("open"),
                pl.lit(',"h":'),
                _num_text("high"),
                pl.lit(',"l":'),
                _num_text("low"),
                pl.lit(',"c":'),
                _num_text("close"),
                pl.lit(',"v":'),
                _num_text("volume"),
                pl.lit(',"n":'),
                _num_text("trade_count"),
                pl.lit(',"vw":'),
                _num_text("vwap"),
                pl.lit("}"),
            )
        )
        .to_series()
        .to_list()
    )


def _corrupt(bar_json: str, kind: str) -> str:
    bar = json.loads(bar_json)
    if kind == "missing_nvw":
        bar.pop("n", None)
        bar.pop("vw", None)
    elif kind == "string_number":
        bar["o"] = str(bar["o"])
    elif kind == "string_ts":
        bar["t"] = "not-a-timestamp"
    elif kind == "missing_price":
        bar.pop("c", None)
    elif kind == "not_a_dict":
        return json.dumps("garbage")
    else:
        raise ValueError(f"unknown malformed bar kind {kind!r}; use one of {MALFORMED_BAR_KINDS}")
    return json.dumps(bar)


def _dec(x: float) -> str:
    """A number as Alpaca writes amounts: a decimal string without trailing zeros."""
    text = f"{x:.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _is_coin(symbol: str) -> bool:
    return "/" in symbol


class _Reject(Exception):
    """Raised by a handler to answer with Alpaca's JSON error."""

    def __init__(self, status: int, message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message or _ERRORS.get(status, (0, "error"))[1]


def _error(status: int, message: str | None = None) -> web.Response:
    code, default = _ERRORS.get(status, (status * 100000, "error"))
    return web.json_response({"code": code, "message": message or default}, status=status)


def _fault_response(fault: Fault) -> web.Response:
    """What an injected fault answers with its `status` (and `body`, when given)."""
    status, body = fault.status, fault.body
    assert status is not None
    if body is not None:
        return web.Response(status=status, text=body)
    if status == 429:
        # Alpaca's rate limiter: JSON error plus its X-RateLimit-* headers (no Retry-After);
        # the reset is an epoch second, rounded up as Alpaca's is.
        response = _error(429)
        response.headers["X-RateLimit-Limit"] = "200"
        response.headers["X-RateLimit-Remaining"] = "0"
        response.headers["X-RateLimit-Reset"] = str(math.ceil(time_module.time() + fault.reset_in))
        if fault.retry_after is not None:
            response.headers["Retry-After"] = fault.retry_after
        return response
    if status == 504:
        # A gateway timeout comes from the proxy in front, as HTML, not Alpaca's JSON.
        return web.Response(
            status=504,
            text="<html><body><h1>504 Gateway Time-out</h1></body></html>",
            content_type="text/html",
        )
    return _error(status)


def _parse_time(text: str | None, name: str) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise _Reject(400, f"invalid {name}: {text!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _float(value: Any, missing: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Reject(422, missing)
    try:
        return float(value)
    except ValueError:
        raise _Reject(422, missing) from None


def _us(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000 + when.microsecond


class FakeAlpacaRest:
    """Speaks the parts of Alpaca's REST API we use, on http://127.0.0.1:<random port>.

    Market data: GET /v2/stocks/bars and /v1beta3/crypto/us/bars (symbols, timeframe,
    start, end (inclusive, like Alpaca), limit, page_token, sort, feed), paginated
    with next_page_token, at most `page_limit` bars a page. Trading: /v2/account,
    /v2/clock, /v2/calendar, /v2/positions (GET, DELETE = close all), /v2/orders (GET,
    POST, DELETE), /v2/orders/{id} (GET, DELETE), /v2/orders:by_client_order_id.

    Market orders (and marketable limit orders) fill at once at `price(symbol)`: the
    last bar's close unless set_price() says otherwise. Faults: inject() and its
    shorthands. Every request is recorded in `requests` (method, path, query, body).
    """

    def __init__(
        self,
        api_key: str = "fake-key-id",
        secret_key: str = "fake-secret-key",
        *,
        page_limit: int = MAX_LIMIT,
        cash: float = 100_000.0,
        default_price: float = 100.0,
    ) -> None:
        self.api_key = api_key
        self.secret_key = secret_key
        self.page_limit = page_limit
        self.default_price = default_price
        self.sip_allowed = True
        self.holidays: set[date] = set()
        self.early_closes: dict[date, time] = {}
        self.requests: list[RecordedRequest] = []
        self.request_clock: Callable[[], float] = time_module.monotonic
        self._initial_cash = cash
        self._cash = cash
        self._now: datetime | None = None
        self._series: dict[tuple[str, str], _Series] = {}
        self._actions: list[tuple[str, dict[str, Any]]] = []
        self._prices: dict[str, float] = {}
        self._orders: dict[str, dict[str, Any]] = {}
        self._by_client_id: dict[str, str] = {}
        self._positions: dict[str, dict[str, float]] = {}
        self._faults: list[Fault] = []
        self.trade_stream: Any = None
        """A FakeAlpacaStreamServer: every fill also goes out on its trade_updates stream."""
        self.lose_trade_updates = 0
        """The next this many fills send no trade update (a stream that missed them)."""
        self.repeat_trade_updates = False
        """Send every fill's trade update twice (a stream replaying after a reconnect)."""
        self.trade_updates_sent = 0
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What alpaca-py's url_override wants: scheme, host and port, no path."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeAlpacaRest:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="fake-alpaca-rest", daemon=True
        )
        self._thread.start()

        async def up() -> web.AppRunner:
            app = web.Application(middlewares=[self._middleware], client_max_size=1 << 20)
            self._routes(app)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            return runner

        self._runner = asyncio.run_coroutine_threadsafe(up(), loop).result(10)
        return self

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        self._loop, self._thread, self._runner = None, None, None
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    def __enter__(self) -> FakeAlpacaRest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- bars ------------------------------------------------------------------------

    def load_bars(self, frame: pl.DataFrame, timeframe: str = "1Min") -> int:
        """Store bars (canonical columns; `timeframe` column wins over the argument).

        A bar at an existing (symbol, timeframe, ts) replaces the old one, as Alpaca's
        revised bars do. Returns the rows loaded.
        """
        if "timeframe" not in frame.columns:
            frame = frame.with_columns(pl.lit(timeframe).alias("timeframe"))
        for col in ("volume", "trade_count", "vwap"):
            if col not in frame.columns:
                frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(col))
        frame = frame.select(
            pl.col("symbol").cast(pl.String),
            pl.col("timeframe").cast(pl.String),
            pl.col("ts").cast(pl.Datetime("us", "UTC")),
            *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")),
            pl.col("trade_count").cast(pl.Int64),
            pl.col("vwap").cast(pl.Float64),
        )
        with self._lock:
            for (symbol, tf), part in frame.group_by("symbol", "timeframe", maintain_order=True):
                key = (str(symbol), str(tf))
                old = self._series.get(key)
                merged = part if old is None else pl.concat([old.frame, part])
                merged = merged.unique(subset=["ts"], keep="last").sort("ts")
                keys = merged.get_column("ts").dt.epoch("us").to_list()
                self._series[key] = _Series(merged, keys, _bar_json(merged))
        return frame.height

    def add_random_walk(
        self,
        symbol: str,
        start: datetime,
        periods: int,
        *,
        timeframe: str = "1Min",
        price: float = 100.0,
        seed: int = 0,
    ) -> pl.DataFrame:
        """Generate and load a random walk (see random_walk_bars); returns the frame."""
        frame = random_walk_bars(
            symbol, start, periods, timeframe=timeframe, price=price, seed=seed
        )
        self.load_bars(frame)
        return frame

    def bars(self, symbol: str, timeframe: str = "1Min") -> pl.DataFrame:
        """The stored bars of one series, sorted by ts."""
        with self._lock:
            series = self._series.get((symbol, timeframe))
            return series.frame if series is not None else pl.DataFrame()

    def clear_bars(self) -> None:
        with self._lock:
            self._series.clear()

    # ---- corporate actions -------------------------------------------------------------

    def add_split(self, symbol: str, ex_date: date, new_rate: float, old_rate: float = 1.0) -> None:
        """A split now known: GET /v1/corporate-actions lists it, and stock bars asked for
        with adjustment split/all come back with prices before its ex-date divided by
        new_rate/old_rate and volume multiplied by it (the raw bars stay as loaded)."""
        with self._lock:
            self._actions.append(
                ("forward_splits" if new_rate >= old_rate else "reverse_splits",
                 {"symbol": symbol, "cusip": "000000000", "old_cusip": "000000000",
                  "new_cusip": "000000000", "new_rate": new_rate, "old_rate": old_rate,
                  "process_date": ex_date.isoformat(), "ex_date": ex_date.isoformat()})
            )  # fmt: skip

    def _adjusted(self, series: _Series, symbol: str, adjustment: str) -> _Series:
        """The series as Alpaca serves it with `adjustment` (splits only: what the tests use)."""
        if adjustment not in ("split", "all"):
            return series
        frame = series.frame
        for kind, action in self._actions:
            if action["symbol"] != symbol or kind not in ("forward_splits", "reverse_splits"):
                continue
            ratio = action["new_rate"] / action["old_rate"]
            ex = date.fromisoformat(action["ex_date"])
            starts = datetime(ex.year, ex.month, ex.day, tzinfo=ZoneInfo("America/New_York"))
            starts = starts.astimezone(UTC)
            before = pl.col("ts") < starts
            frame = frame.with_columns(
                *(pl.when(before).then(pl.col(c) / ratio).otherwise(pl.col(c)).alias(c)
                  for c in ("open", "high", "low", "close", "vwap")),
                pl.when(before).then(pl.col("volume") * ratio).otherwise(pl.col("volume")),
            )  # fmt: skip
        if frame is series.frame:
            return series
        return _Series(frame, series.keys, _bar_json(frame))

    async def _corporate_actions(self, request: web.Request) -> web.Response:
        q = request.query
        symbols = {s for s in q.get("symbols", "").split(",") if s}
        types = {t + "s" for t in q.get("types", "").split(",") if t}
        start = date.fromisoformat(q["start"]) if q.get("start") else date.min
        end = date.fromisoformat(q["end"]) if q.get("end") else date.max
        found: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            for kind, action in self._actions:
                ex = date.fromisoformat(action["ex_date"])
                wanted = (not symbols or action["symbol"] in symbols) and (
                    not types or kind in types
                )
                if wanted and start <= ex <= end:
                    found.setdefault(kind, []).append(action)
        return web.json_response({"corporate_actions": found, "next_page_token": None})

    # ---- trading state ---------------------------------------------------------------

    def set_price(self, symbol: str, price: float) -> None:
        """The price market orders in `symbol` fill at (default: the last bar's close)."""
        with self._lock:
            self._prices[symbol] = price

    def price(self, symbol: str) -> float:
        with self._lock:
            if symbol in self._prices:
                return self._prices[symbol]
            for (sym, _tf), series in self._series.items():
                if sym == symbol and series.frame.height:
                    return float(series.frame.get_column("close")[-1])
            return self.default_price

    def set_now(self, when: datetime | None) -> None:
        """Freeze the fake's clock (None: follow the real time)."""
        with self._lock:
            self._now = None if when is None else when.astimezone(UTC)

    def now(self) -> datetime:
        return self._now or datetime.now(UTC)

    @property
    def cash(self) -> float:
        return self._cash

    @property
    def orders(self) -> list[dict[str, Any]]:
        """All orders as Alpaca would show them, oldest first."""
        with self._lock:
            return [dict(o) for o in self._orders.values()]

    @property
    def positions(self) -> dict[str, float]:
        """Open position quantity per symbol (as ordered: BTC/USD, not BTCUSD)."""
        with self._lock:
            return {s: p["qty"] for s, p in self._positions.items()}

    def reset(self) -> None:
        """Forget orders, positions, faults and recorded requests (bars stay)."""
        with self._lock:
            self._orders.clear()
            self._by_client_id.clear()
            self._positions.clear()
            self._faults.clear()
            self.requests.clear()
            self._cash = self._initial_cash

    # ---- faults ----------------------------------------------------------------------

    def inject(
        self,
        path_prefix: str,
        *,
        times: int = 1,
        method: str | None = None,
        status: int | None = None,
        body: str | None = None,
        delay: float = 0.0,
        malformed_json: bool = False,
        malformed_bars: Sequence[str] = (),
        after: bool = False,
        delay_after: float = 0.0,
        until: float | None = None,
        reset_in: float = 60.0,
        retry_after: str | None = None,
    ) -> Fault:
        """A fault for the next `times` requests to paths starting with `path_prefix`.

        Faults are used up in the order they were injected: a request meets the first
        one that matches and still has uses left. `delay` sleeps before answering;
        `status` answers with Alpaca's JSON error (or `body`) instead; `malformed_json`
        answers 200 with truncated JSON; `malformed_bars` corrupts the first bars of each
        symbol in a bars page, one kind per bar (see MALFORMED_BAR_KINDS). With
        `after=True` the real handler runs first (its effects, e.g. a new order, stay)
        and `status` replaces its response: a 504 after the order was accepted.
        `delay_after` waits after the real handler ran (a submit that times out at the
        client but landed); `until` ends the fault at that `request_clock` time (e.g.
        `times=10**9, status=429, until=t` is a rate-limit storm until t). A 429 carries
        Alpaca's X-RateLimit-* headers, the reset `reset_in` seconds away, and a
        `Retry-After: retry_after` header when that is given.
        """
        for kind in malformed_bars:
            if kind not in MALFORMED_BAR_KINDS:
                raise ValueError(f"unknown malformed bar kind {kind!r}")
        fault = Fault(
            path_prefix,
            times,
            method.upper() if method else None,
            status,
            body,
            delay,
            malformed_json,
            tuple(malformed_bars),
            after,
            delay_after,
            until,
            reset_in,
            retry_after,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail_next(self, path_prefix: str, status: int, times: int = 1, **kw: Any) -> Fault:
        return self.inject(path_prefix, status=status, times=times, **kw)

    def delay_next(self, path_prefix: str, seconds: float, times: int = 1) -> Fault:
        return self.inject(path_prefix, delay=seconds, times=times)

    def malformed_json_next(self, path_prefix: str, times: int = 1) -> Fault:
        return self.inject(path_prefix, malformed_json=True, times=times)

    def malformed_bars_next(
        self, path_prefix: str, kinds: Sequence[str] = MALFORMED_BAR_KINDS, times: int = 1
    ) -> Fault:
        return self.inject(path_prefix, malformed_bars=kinds, times=times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # ---- records ---------------------------------------------------------------------

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path equals `path` (and method, when given)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path == path and (method is None or r.method == method.upper())
            ]

    # ---- HTTP plumbing ---------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(STOCK_BARS_PATH, self._stock_bars)
        r.add_get(CRYPTO_BARS_PATH, self._crypto_bars)
        r.add_get("/v1/corporate-actions", self._corporate_actions)
        r.add_get("/v2/account", self._account)
        r.add_get("/v2/clock", self._clock)
        r.add_get("/v2/calendar", self._calendar)
        r.add_get("/v2/positions", self._list_positions)
        r.add_delete("/v2/positions", self._close_all)
        r.add_get("/v2/orders:by_client_order_id", self._order_by_client_id)
        r.add_get("/v2/orders", self._list_orders)
        r.add_post("/v2/orders", self._submit)
        r.add_delete("/v2/orders", self._cancel_all)
        r.add_get("/v2/orders/{order_id}", self._get_order)
        r.add_delete("/v2/orders/{order_id}", self._cancel)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            text = await request.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = text
        authorized = (
            request.headers.get("APCA-API-KEY-ID") == self.api_key
            and request.headers.get("APCA-API-SECRET-KEY") == self.secret_key
        )
        with self._lock:
            now = self.request_clock()
            self.requests.append(
                RecordedRequest(
                    request.method, request.path, dict(request.query), body, authorized, now
                )
            )
            fault = next(
                (f for f in self._faults if f.matches(request.method, request.path, now)), None
            )
            if fault is not None:
                fault.times -= 1
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None and not fault.after:
            return _fault_response(fault)
        if fault is not None and fault.malformed_json:
            return web.Response(
                status=200, text='{"bars": {"SPY": [{"t": ', content_type="application/json"
            )
        if not authorized:
            return _error(401)
        request[_MALFORMED] = fault.malformed_bars if fault is not None else ()
        try:
            response: web.StreamResponse = await handler(request)
        except _Reject as rej:
            response = _error(rej.status, rej.message)
        except web.HTTPNotFound:
            response = _error(404, "endpoint not found")
        if fault is not None and fault.status is not None and fault.after:
            # The handler's work is done (and kept); only its answer is lost.
            return _fault_response(fault)
        if fault is not None and fault.delay_after:
            await asyncio.sleep(fault.delay_after)
        return response

    # ---- market data -----------------------------------------------------------------

    async def _stock_bars(self, request: web.Request) -> web.Response:
        feed = request.query.get("feed", "iex")
        if feed not in STOCK_FEEDS:
            raise _Reject(400, f"invalid feed: {feed}")
        if feed == "sip" and not self.sip_allowed:
            raise _Reject(403, "subscription does not permit querying recent SIP data")
        return self._bars(request)

    async def _crypto_bars(self, request: web.Request) -> web.Response:
        return self._bars(request)

    def _bars(self, request: web.Request) -> web.Response:
        q = request.query
        symbols = sorted({s for s in q.get("symbols", "").split(",") if s})
        if not symbols:
            raise _Reject(400, "symbols is required")
        timeframe = q.get("timeframe", "")
        if timeframe not in TIMEFRAMES:
            raise _Reject(400, f"invalid timeframe: {timeframe!r}")
        try:
            limit = int(q.get("limit") or DEFAULT_LIMIT)
        except ValueError:
            raise _Reject(400, "invalid limit") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise _Reject(422, f"invalid limit: must be between 1 and {MAX_LIMIT}")
        limit = min(limit, self.page_limit)
        descending = q.get("sort", "asc") == "desc"
        start = _parse_time(q.get("start"), "start")
        end = _parse_time(q.get("end"), "end")
        lo_us = _us(start) if start else -(2**62)
        hi_us = _us(end) if end else 2**62
        resume: tuple[str, int] | None = None
        if q.get("page_token"):
            try:
                sym, _, at = base64.b64decode(q["page_token"]).decode().rpartition("|")
                resume = (sym, int(at))
            except (ValueError, binascii.Error, UnicodeDecodeError):
                raise _Reject(400, "invalid page token") from None
        kinds: tuple[str, ...] = request.get(_MALFORMED, ())

        parts: list[str] = []
        left = limit
        token: str | None = None
        with self._lock:
            for symbol in symbols:
                if resume is not None and symbol < resume[0]:
                    continue
                series = self._series.get((symbol, timeframe))
                if series is None:
                    continue
                if self._actions and not _is_coin(symbol):
                    series = self._adjusted(series, symbol, q.get("adjustment", "raw"))
                a = bisect_left(series.keys, lo_us)
                b = bisect_right(series.keys, hi_us)  # Alpaca's end is inclusive
                if resume is not None and symbol == resume[0]:
                    if descending:
                        b = min(b, bisect_right(series.keys, resume[1]))
                    else:
                        a = max(a, bisect_left(series.keys, resume[1]))
                if a >= b:
                    continue
                if left == 0:
                    token = self._token(symbol, series.keys[b - 1 if descending else a])
                    break
                take = min(left, b - a)
                if descending:
                    chunk = series.json[b - take : b][::-1]
                    rest_at = b - take - 1
                else:
                    chunk = series.json[a : a + take]
                    rest_at = a + take
                left -= take
                if kinds:
                    chunk = list(chunk)
                    for i, kind in enumerate(kinds[: len(chunk)]):
                        chunk[i] = _corrupt(chunk[i], kind)
                parts.append(f"{json.dumps(symbol)}:[{','.join(chunk)}]")
                if take < b - a:
                    token = self._token(symbol, series.keys[rest_at])
                    break
        text = (
            '{"bars":{'
            + ",".join(parts)
            + '},"next_page_token":'
            + (json.dumps(token) if token else "null")
            + "}"
        )
        return web.Response(text=text, content_type="application/json")

    @staticmethod
    def _token(symbol: str, key: int) -> str:
        return base64.b64encode(f"{symbol}|{key}".encode()).decode()

    # ---- account, clock, calendar ----------------------------------------------------

    def _session(self, day: date) -> tuple[datetime, datetime] | None:
        if day.weekday() >= 5 or day in self.holidays:
            return None
        close = self.early_closes.get(day, time(16, 0))
        return (
            datetime.combine(day, time(9, 30), NEW_YORK),
            datetime.combine(day, close, NEW_YORK),
        )

    async def _account(self, request: web.Request) -> web.Response:
        with self._lock:
            market = sum(p["qty"] * self.price(s) for s, p in self._positions.items())
            long_mv = sum(
                p["qty"] * self.price(s) for s, p in self._positions.items() if p["qty"] > 0
            )
            equity = self._cash + market
            cash = self._cash
        return web.json_response(
            {
                "id": "00000000-0000-4000-8000-000000000001",
                "account_number": "PA0FAKE0001",
                "status": "ACTIVE",
                "crypto_status": "ACTIVE",
                "currency": "USD",
                "cash": _dec(cash),
                "buying_power": _dec(max(cash, 0.0)),
                "regt_buying_power": _dec(max(cash, 0.0)),
                "daytrading_buying_power": "0",
                "non_marginable_buying_power": _dec(max(cash, 0.0)),
                "equity": _dec(equity),
                "last_equity": _dec(equity),
                "portfolio_value": _dec(equity),
                "long_market_value": _dec(long_mv),
                "short_market_value": _dec(market - long_mv),
                "multiplier": "1",
                "initial_margin": "0",
                "maintenance_margin": "0",
                "sma": "0",
                "daytrade_count": 0,
                "pattern_day_trader": False,
                "trading_blocked": False,
                "transfers_blocked": False,
                "account_blocked": False,
                "shorting_enabled": True,
                "created_at": "2024-01-01T00:00:00Z",
            }
        )

    async def _clock(self, request: web.Request) -> web.Response:
        now = self.now().astimezone(NEW_YORK)
        today = self._session(now.date())
        is_open = today is not None and today[0] <= now < today[1]
        day = now.date()
        next_open: datetime | None = None
        next_close: datetime | None = None
        for _ in range(30):
            session = self._session(day)
            if session is not None:
                if next_open is None and session[0] > now:
                    next_open = session[0]
                if next_close is None and session[1] > now:
                    next_close = session[1]
            if next_open is not None and next_close is not None:
                break
            day += timedelta(days=1)
        assert next_open is not None and next_close is not None
        return web.json_response(
            {
                "timestamp": now.isoformat(),
                "is_open": is_open,
                "next_open": next_open.isoformat(),
                "next_close": next_close.isoformat(),
            }
        )

    async def _calendar(self, request: web.Request) -> web.Response:
        today = self.now().astimezone(NEW_YORK).date()
        try:
            start = date.fromisoformat(request.query.get("start") or today.isoformat())
            end = date.fromisoformat(
                request.query.get("end") or (today + timedelta(days=30)).isoformat()
            )
        except ValueError:
            raise _Reject(400, "invalid date") from None
        days = []
        day = start
        while day <= end:
            session = self._session(day)
            if session is not None:
                settle = day + timedelta(days=1)
                while self._session(settle) is None:
                    settle += timedelta(days=1)
                days.append(
                    {
                        "date": day.isoformat(),
                        "open": session[0].strftime("%H:%M"),
                        "close": session[1].strftime("%H:%M"),
                        "session_open": "0400",
                        "session_close": "2000",
                        "settlement_date": settle.isoformat(),
                    }
                )
            day += timedelta(days=1)
        return web.json_response(days)

    # ---- positions -------------------------------------------------------------------

    def _position_json(self, symbol: str, pos: dict[str, float]) -> dict[str, Any]:
        price = self.price(symbol)
        qty = pos["qty"]
        coin = _is_coin(symbol)
        return {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
            # Alpaca lists crypto positions without the slash.
            "symbol": symbol.replace("/", "") if coin else symbol,
            "exchange": "CRYPTO" if coin else "ARCA",
            "asset_class": "crypto" if coin else "us_equity",
            "asset_marginable": not coin,
            "qty": _dec(qty),
            "qty_available": _dec(qty),
            "avg_entry_price": _dec(pos["avg"]),
            "side": "long" if qty >= 0 else "short",
            "market_value": _dec(qty * price),
            "cost_basis": _dec(qty * pos["avg"]),
            "unrealized_pl": _dec(qty * (price - pos["avg"])),
            "unrealized_plpc": _dec((price - pos["avg"]) / pos["avg"] if pos["avg"] else 0.0),
            "unrealized_intraday_pl": "0",
            "unrealized_intraday_plpc": "0",
            "current_price": _dec(price),
            "lastday_price": _dec(price),
            "change_today": "0",
        }

    async def _list_positions(self, request: web.Request) -> web.Response:
        with self._lock:
            body = [self._position_json(s, p) for s, p in self._positions.items()]
        return web.json_response(body)

    async def _close_all(self, request: web.Request) -> web.Response:
        cancel = request.query.get("cancel_orders", "").lower() == "true"
        results = []
        with self._lock:
            if cancel:
                for order in self._orders.values():
                    if order["status"] in _OPEN_STATUSES:
                        self._mark_canceled(order)
            for symbol, pos in list(self._positions.items()):
                side = "sell" if pos["qty"] > 0 else "buy"
                order = self._new_order(
                    {
                        "symbol": symbol,
                        "qty": abs(pos["qty"]),
                        "side": side,
                        "type": "market",
                        "time_in_force": "gtc" if _is_coin(symbol) else "day",
                    }
                )
                results.append(
                    {
                        "symbol": symbol.replace("/", "") if _is_coin(symbol) else symbol,
                        "status": 200,
                        "body": order,
                    }
                )
        return web.json_response(results, status=207)

    # ---- orders ----------------------------------------------------------------------

    def _fill(self, order: dict[str, Any], price: float) -> None:
        qty = float(order["qty"])
        signed = qty if order["side"] == "buy" else -qty
        symbol = order["symbol"]
        pos = self._positions.get(symbol, {"qty": 0.0, "avg": 0.0})
        new_qty = pos["qty"] + signed
        if abs(new_qty) < 1e-12:
            self._positions.pop(symbol, None)
        else:
            if pos["qty"] == 0 or (pos["qty"] > 0) == (signed > 0):
                avg = (pos["qty"] * pos["avg"] + signed * price) / new_qty
            elif (pos["qty"] > 0) != (new_qty > 0):
                avg = price  # crossed through zero: the remainder was opened at this price
            else:
                avg = pos["avg"]  # a partial close keeps the entry price
            self._positions[symbol] = {"qty": new_qty, "avg": avg}
        self._cash -= signed * price
        stamp = _iso(self.now())
        order.update(
            status="filled",
            filled_qty=order["qty"],
            filled_avg_price=_dec(price),
            filled_at=stamp,
            updated_at=stamp,
        )
        self._send_trade_update(order, price, qty, new_qty, stamp)

    def _send_trade_update(
        self, order: dict[str, Any], price: float, qty: float, position: float, stamp: str
    ) -> None:
        """Alpaca's trade_updates `fill` event for this execution, when a stream is attached."""
        if self.trade_stream is None:
            return
        if self.lose_trade_updates > 0:
            self.lose_trade_updates -= 1
            return
        for _ in range(2 if self.repeat_trade_updates else 1):
            self.trade_stream.push_trade_update(
                "fill",
                order,
                wait=False,
                price=_dec(price),
                qty=_dec(qty),
                position_qty=_dec(position),
                timestamp=stamp,
                execution_id=str(uuid.uuid4()),
            )
            self.trade_updates_sent += 1

    def _mark_canceled(self, order: dict[str, Any]) -> None:
        stamp = _iso(self.now())
        order.update(status="canceled", canceled_at=stamp, updated_at=stamp)

    def _new_order(self, data: dict[str, Any]) -> dict[str, Any]:
        """Validate, create and (when marketable) fill an order; the caller holds the lock."""
        symbol = data.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise _Reject(422, "symbol is required")
        side = data.get("side")
        if side not in ("buy", "sell"):
            raise _Reject(422, "invalid side")
        kind = data.get("type")
        if kind not in ("market", "limit"):
            raise _Reject(422, f"order type {kind!r} is not supported by the fake")
        tif = data.get("time_in_force")
        if tif not in ("day", "gtc", "ioc", "fok", "opg", "cls"):
            raise _Reject(422, "invalid time_in_force")
        coin = _is_coin(symbol)
        if coin and tif not in ("gtc", "ioc"):
            raise _Reject(422, "invalid crypto time_in_force")
        if data.get("notional") is not None:
            raise _Reject(422, "notional orders are not supported by the fake")
        qty = _float(data.get("qty"), "qty is required")
        if not qty > 0:
            raise _Reject(422, "qty must be > 0")
        limit_price: float | None = None
        if kind == "limit":
            limit_price = _float(
                data.get("limit_price"), "limit_price is required for limit orders"
            )
        client_id = data.get("client_order_id") or str(uuid.uuid4())
        if client_id in self._by_client_id:
            raise _Reject(422, "client_order_id must be unique")
        price = self.price(symbol)
        if side == "buy" and qty * price > self._cash:
            raise _Reject(403, "insufficient buying power")
        if (
            coin
            and side == "sell"
            and qty > self._positions.get(symbol, {"qty": 0.0})["qty"] + 1e-12
        ):
            raise _Reject(403, f"insufficient balance for {symbol.split('/')[0]}")
        stamp = _iso(self.now())
        order: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "client_order_id": client_id,
            "created_at": stamp,
            "updated_at": stamp,
            "submitted_at": stamp,
            "filled_at": None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
            "symbol": symbol,
            "asset_class": "crypto" if coin else "us_equity",
            "notional": None,
            "qty": _dec(qty),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "",
            "order_type": kind,
            "type": kind,
            "side": side,
            "position_intent": "buy_to_open" if side == "buy" else "sell_to_close",
            "time_in_force": tif,
            "limit_price": _dec(limit_price) if limit_price is not None else None,
            "stop_price": None,
            "status": "new",
            "extended_hours": bool(data.get("extended_hours", False)),
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "expires_at": None,
        }
        self._orders[order["id"]] = order
        self._by_client_id[client_id] = order["id"]
        marketable = kind == "market" or (
            limit_price is not None
            and (limit_price >= price if side == "buy" else limit_price <= price)
        )
        if marketable:
            self._fill(order, price)
        elif tif in ("ioc", "fok"):
            self._mark_canceled(order)
        return dict(order)

    async def _submit(self, request: web.Request) -> web.Response:
        data = await request.json()
        if not isinstance(data, dict):
            raise _Reject(400, "request body must be a JSON object")
        with self._lock:
            order = self._new_order(data)
        return web.json_response(order)

    async def _list_orders(self, request: web.Request) -> web.Response:
        q = request.query
        status = q.get("status", "open")
        try:
            limit = int(q.get("limit") or 50)
        except ValueError:
            raise _Reject(400, "invalid limit") from None
        symbols = {s for s in q.get("symbols", "").split(",") if s}
        with self._lock:
            chosen = [
                dict(o)
                for o in self._orders.values()
                if (status == "all" or (status == "open") == (o["status"] in _OPEN_STATUSES))
                and (not symbols or o["symbol"] in symbols)
            ]
        if q.get("direction", "desc") == "desc":
            chosen.reverse()
        return web.json_response(chosen[:limit])

    async def _get_order(self, request: web.Request) -> web.Response:
        with self._lock:
            order = self._orders.get(request.match_info["order_id"])
            if order is None:
                raise _Reject(404, "order not found")
            return web.json_response(dict(order))

    async def _order_by_client_id(self, request: web.Request) -> web.Response:
        client_id = request.query.get("client_order_id", "")
        with self._lock:
            order_id = self._by_client_id.get(client_id)
            if order_id is None:
                raise _Reject(404, f"order not found for {client_id}")
            return web.json_response(dict(self._orders[order_id]))

    async def _cancel(self, request: web.Request) -> web.Response:
        with self._lock:
            order = self._orders.get(request.match_info["order_id"])
            if order is None:
                raise _Reject(404, "order not found")
            if order["status"] not in _OPEN_STATUSES:
                raise _Reject(422, f'order is already in "{order["status"]}" state')
            self._mark_canceled(order)
        return web.Response(status=204)

    async def _cancel_all(self, request: web.Request) -> web.Response:
        with self._lock:
            results = []
            for order in self._orders.values():
                if order["status"] in _OPEN_STATUSES:
                    self._mark_canceled(order)
                    results.append({"id": order["id"], "status": 200, "body": None})
        return web.json_response(results, status=207)


@pytest.fixture
def fake_alpaca_rest() -> Iterator[FakeAlpacaRest]:
    """A started FakeAlpacaRest (keys fake-key-id / fake-secret-key), stopped after the test."""
    server = FakeAlpacaRest().start()
    try:
        yield server
    finally:
        server.stop()
