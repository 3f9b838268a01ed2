"""Alpaca over alpaca-py: historical bars (stocks and coins) and the trading account, rate-limited."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from datetime import time as dtime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, NamedTuple, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import polars as pl
import requests
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from alpaca.data.enums import Adjustment, CryptoFeed, DataFeed
from alpaca.data.historical.corporate_actions import CorporateActionsClient
from alpaca.data.historical.crypto import CryptoHistoricalDataClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    GetCalendarRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
)

from adapters.protocols import (
    Account,
    DuplicateOrderError,
    MarketClock,
    Order,
    OrderRequest,
    Position,
)
from core.bar_schema import BAR_SCHEMA, TIMEFRAMES, conform_bars
from core.corporate_actions import CorporateAction
from core.universe import is_coin

SOURCE = "alpaca"
NEW_YORK = ZoneInfo("America/New_York")

# alpaca-py's own defaults (alpaca.common.constants): 3 retries, 3 s apart, on 429 and 504.
DEFAULT_RETRY_ATTEMPTS = 3
DEFAULT_RETRY_WAIT_SECONDS = 3.0
DEFAULT_RETRY_CODES: tuple[int, ...] = (429, 504)
# A 429 says how long to wait (Retry-After, or X-RateLimit-Reset when Remaining is 0); each
# client waits at most this long for it. History backfills wait out Alpaca's one-minute
# window; the broker, in a minute loop, does not block: it raises, and the cycle is skipped.
HISTORY_MAX_RETRY_WAIT_S = 65.0
BROKER_MAX_RETRY_WAIT_S = 5.0
# Alpaca serves at most 10,000 bars per request.
MAX_PAGE_LIMIT = 10_000

_TIMEFRAMES: dict[str, TimeFrame] = {
    "1Min": TimeFrame(1, TimeFrameUnit.Minute),
    "5Min": TimeFrame(5, TimeFrameUnit.Minute),
    "15Min": TimeFrame(15, TimeFrameUnit.Minute),
    "30Min": TimeFrame(30, TimeFrameUnit.Minute),
    "1Hour": TimeFrame(1, TimeFrameUnit.Hour),
    "1Day": TimeFrame(1, TimeFrameUnit.Day),
}
# Alpaca bar field -> canonical column, and the dtype it must already have in the JSON.
_BAR_FIELDS: tuple[tuple[str, str, pl.DataType], ...] = (
    ("o", "open", pl.Float64()),
    ("h", "high", pl.Float64()),
    ("l", "low", pl.Float64()),
    ("c", "close", pl.Float64()),
    ("v", "volume", pl.Float64()),
    ("n", "trade_count", pl.Int64()),
    ("vw", "vwap", pl.Float64()),
)
# RFC 3339 with optional fraction and either Z or an offset (`%#z` takes both).
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"
# Quote currencies Alpaca glues to the base in position symbols ("BTCUSD" for BTC/USD).
_CRYPTO_QUOTES = ("USDT", "USDC", "USD", "BTC")

T = TypeVar("T")


# ----------------------------------------------------------------------------- errors


class AlpacaError(RuntimeError):
    """Alpaca answered with an error (or with something that is not a valid answer)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        alpaca_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.alpaca_message = alpaca_message or ""


class AlpacaAuthError(AlpacaError):
    """Alpaca refused the credentials (401/403)."""


class DuplicateClientOrderIdError(AlpacaError, DuplicateOrderError):
    """An order with this client_order_id exists already: look it up instead of resubmitting."""

    def __init__(self, client_order_id: str, *, status: int | None = 422) -> None:
        super().__init__(
            f"Alpaca already has an order with client_order_id {client_order_id!r} "
            "(422 client_order_id must be unique); confirm it with get_order_by_client_id",
            status=status,
            alpaca_message="client_order_id must be unique",
        )
        self.client_order_id = client_order_id


class CloseAllPositionsError(AlpacaError):
    """Some positions could not be closed; `orders` holds the closing orders that were placed."""

    def __init__(self, orders: list[Order], failures: dict[str, str]) -> None:
        detail = "; ".join(f"{sym}: {why}" for sym, why in failures.items())
        super().__init__(f"Alpaca could not close {len(failures)} position(s): {detail}")
        self.orders = orders
        self.failures = failures


# ----------------------------------------------------------------------- rate limiting


class TokenBucket:
    """A thread-safe token bucket: `rate_per_min` sustained, at most `burst` at once.

    With burst + rate_per_min <= 200 no 60-second window ever holds more than Alpaca's
    200 requests, whichever way its own limiter counts.
    """

    def __init__(
        self,
        rate_per_min: float,
        burst: int = 10,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_min <= 0:
            raise ValueError(f"rate_per_min must be positive, got {rate_per_min}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate = rate_per_min / 60.0
        self.burst = float(burst)
        self._sleep = sleep
        self._monotonic = monotonic
        self._tokens = float(burst)
        self._last = monotonic()
        self._lock = threading.Lock()
        self.acquired = 0
        self.waited_s = 0.0

    def acquire(self) -> float:
        """Take one token, sleeping until one is there; returns the seconds slept."""
        waited = 0.0
        # Held while sleeping on purpose: waiters queue up instead of racing for tokens.
        with self._lock:
            while True:
                now = self._monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1.0)
                    self.acquired += 1
                    self.waited_s += waited
                    return waited
                pause = (1.0 - self._tokens) / self.rate
                self._sleep(pause)
                waited += pause


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds a 429 (or 503) answer asks the client to wait, from its headers, else None.

    `Retry-After` (seconds, or an HTTP date) first; else, when `X-RateLimit-Remaining` is 0,
    until `X-RateLimit-Reset` (epoch seconds: when Alpaca's one-minute window refills).
    `now`: the current epoch time. Never negative."""
    lower = {k.lower(): v for k, v in headers.items()}
    after = lower.get("retry-after")
    if after:
        try:
            return max(0.0, float(after))
        except ValueError:
            try:
                when = parsedate_to_datetime(after)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                return max(0.0, when.timestamp() - now)
    remaining, reset = lower.get("x-ratelimit-remaining"), lower.get("x-ratelimit-reset")
    if remaining is not None and reset is not None:
        try:
            if float(remaining) <= 0:
                return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


class _Guard:
    """Per-request policy shared by our client subclasses: rate limit, retries, error mapping.

    A retryable answer (429, 504) is retried after the wait its headers ask for
    (rate_limit_wait), else after `retry_wait_seconds`; a wait longer than
    `max_retry_wait_s` is not taken: the error is raised at once, saying how long Alpaca
    asked for (the broker's minute loop skips that cycle rather than block past it).
    """

    def __init__(
        self,
        limiter: TokenBucket,
        sleep: Callable[[float], None],
        retry_attempts: int,
        retry_wait_seconds: float,
        retry_codes: Sequence[int],
        secrets: Sequence[str],
        max_retry_wait_s: float = float("inf"),
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.limiter = limiter
        self.sleep = sleep
        self.retry_attempts = max(0, retry_attempts)
        self.retry_wait_seconds = max(0.0, retry_wait_seconds)
        self.retry_codes = frozenset(retry_codes)
        self.max_retry_wait_s = max_retry_wait_s
        self.wall = wall
        self._secrets = [s for s in secrets if s]
        self.requests = 0
        self.waits: list[float] = []
        """Each wait before a retry, in seconds (what the headers asked, or the default)."""

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def send(self, one: Callable[[], T], method: str, url: str) -> T:
        path = urlsplit(url).path
        attempt = 0
        while True:
            self.limiter.acquire()
            self.requests += 1
            try:
                return one()
            except APIError as err:
                if err.status_code in self.retry_codes and attempt < self.retry_attempts:
                    response = err.response
                    asked = (
                        rate_limit_wait(response.headers, self.wall())
                        if response is not None
                        else None
                    )
                    wait = self.retry_wait_seconds if asked is None else asked
                    if wait <= self.max_retry_wait_s:
                        attempt += 1
                        self.waits.append(wait)
                        self.sleep(wait)
                        continue
                    raise self._translate(
                        err,
                        method,
                        path,
                        f"Alpaca asks to wait {wait:.0f} s, more than "
                        f"this client waits ({self.max_retry_wait_s:g} s)",
                    ) from err
                raise self._translate(err, method, path) from err
            except requests.JSONDecodeError as err:
                raise AlpacaError(
                    f"Alpaca sent a response that is not valid JSON on {method} {path}"
                ) from err
            except requests.RequestException as err:
                raise AlpacaError(
                    self.scrub(f"could not reach Alpaca on {method} {path}: {type(err).__name__}")
                ) from err

    def _translate(
        self, err: APIError, method: str, path: str, note: str | None = None
    ) -> AlpacaError:
        status = err.status_code
        body = str(err)
        code: int | None = None
        message = body.strip()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            raw_code = parsed.get("code")
            code = raw_code if isinstance(raw_code, int) else None
            message = str(parsed.get("message", message))
        message = self.scrub(message[:300])
        # Alpaca also answers 403 for order rejections ("insufficient buying power"): those
        # are not a credentials problem and must not send the user hunting for keys.
        if status == 401 or (status == 403 and "insufficient" not in message.lower()):
            return AlpacaAuthError(
                f"Alpaca refused the request {method} {path} with {status} ({message}): set "
                "APCA_API_KEY_ID and APCA_API_SECRET_KEY to a valid key pair; paper-account "
                "keys only work with the paper endpoint and live keys only with live "
                "(a 403 can also mean the key's plan does not cover the request, e.g. feed='sip')",
                status=status,
                code=code,
                alpaca_message=message,
            )
        return AlpacaError(
            f"Alpaca answered {status} to {method} {path}: {message}"
            + (f" ({note})" if note else ""),
            status=status,
            code=code,
            alpaca_message=message,
        )


class _Guarded(RESTClient):
    """Mixin over an alpaca-py client: every single HTTP request goes through our _Guard."""

    _guard: _Guard
    _timeout_s: float | None = None
    """Seconds to connect / between bytes read; alpaca-py sets none, so a broker that never
    answers would hang the run forever. A timed-out request raises AlpacaError with no
    status: for a submit, the order manager looks the order up before anything else."""

    def _one_request(self, method: str, url: str, opts: dict, retry: int) -> dict:
        # retry=0 makes alpaca-py raise APIError at once (no RetryException, no time.sleep):
        # the retries happen in _Guard.send, each one taking a rate-limit token.
        if self._timeout_s is not None and "timeout" not in opts:
            opts = {**opts, "timeout": self._timeout_s}
        return self._guard.send(
            lambda: super(_Guarded, self)._one_request(method, url, opts, 0), method, url
        )


class _StockClient(_Guarded, StockHistoricalDataClient):
    pass


class _CryptoClient(_Guarded, CryptoHistoricalDataClient):
    pass


class _TradingClient(_Guarded, TradingClient):
    pass


class _ActionsClient(_Guarded, CorporateActionsClient):
    pass


ADJUSTMENTS = tuple(a.value for a in Adjustment)
"""Alpaca's stock-bar adjustments: raw, split, dividend, all."""
# Alpaca's corporate-action types that change the price basis, and what each becomes here.
_ACTION_TYPES = {
    "forward_splits": "split",
    "reverse_splits": "split",
    "cash_dividends": "dividend",
}


# ------------------------------------------------------------------------------ parsing


def _utc(when: datetime) -> datetime:
    # alpaca-py reads naive datetimes as UTC; so do we, explicitly.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _column(values: list[Any], dtype: pl.DataType) -> pl.Series:
    """Values as `dtype`; anything not already of the JSON type it should be becomes null."""
    try:
        return pl.Series(values=values, dtype=dtype, strict=True)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
        pass
    # Slow path, only for a page with a bad value: a number sent as a string is not
    # trusted (strict=False would parse "101.5"), it is nulled and the row quarantined.
    if dtype == pl.String():
        ok: tuple[type, ...] = (str,)
    elif dtype == pl.Int64():
        ok = (int,)
    else:
        ok = (int, float)
    cleaned = [v if type(v) in ok else None for v in values]
    return pl.Series(values=cleaned, dtype=dtype, strict=False)


def bars_frame(
    symbol: str,
    timeframe: str,
    bars: list[Any],
    start: datetime | None = None,
    end: datetime | None = None,
) -> pl.DataFrame:
    """Alpaca bar dicts (t,o,h,l,c,v,n,vw) of one symbol as a canonical frame (+ `raw`).

    Built column-wise with a vectorised timestamp parse. A malformed bar never raises:
    its bad fields become null and its original JSON goes to `raw`, so validate_bars
    quarantines it with a reason and the good bars of the page survive. Bars starting
    outside [start, end) are dropped (Alpaca's `end` is inclusive); bars without a
    usable timestamp are kept for the quarantine.
    """
    if not bars:
        return pl.DataFrame(schema={**BAR_SCHEMA, "raw": pl.String()})
    rows = bars if all(type(b) is dict for b in bars) else [_as_dict(b) for b in bars]
    cols: dict[str, pl.Series] = {
        "t": _column([b.get("t") for b in rows], pl.String()),
    }
    for key, name, dtype in _BAR_FIELDS:
        cols[name] = _column([b.get(key) for b in rows], dtype)
    df = pl.DataFrame(cols).select(
        pl.lit(symbol, dtype=pl.String()).alias("symbol"),
        pl.lit(timeframe, dtype=pl.String()).alias("timeframe"),
        pl.col("t")
        .str.to_datetime(format=_TS_FORMAT, strict=False, time_unit="us", time_zone="UTC")
        .alias("ts"),
        *(pl.col(name) for _, name, _ in _BAR_FIELDS),
        pl.lit(SOURCE, dtype=pl.String()).alias("source"),
    )
    # Every field of a well-formed bar is non-null, so the common page costs one check.
    if sum(df.null_count().row(0)) == 0:
        df = df.with_columns(pl.lit(None, dtype=pl.String()).alias("raw"))
    else:
        flagged = df.select(pl.any_horizontal(pl.all().is_null())).to_series()
        raw: list[str | None] = [None] * df.height
        for i in flagged.arg_true().to_list():
            raw[i] = json.dumps(bars[i], default=str)
        df = df.with_columns(pl.Series("raw", raw, dtype=pl.String()))
    if start is not None or end is not None:
        inside = pl.lit(True)
        if start is not None:
            inside = inside & (pl.col("ts") >= _utc(start))
        if end is not None:
            inside = inside & (pl.col("ts") < _utc(end))
        df = df.filter(pl.col("ts").is_null() | inside)
    return conform_bars(df)


def _as_dict(bar: Any) -> dict[str, Any]:
    return bar if isinstance(bar, dict) else {}


def _num(value: Any, default: float = 0.0) -> float:
    if value is None or value == "":
        return default
    return float(value)


def _opt_num(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise AlpacaError(f"Alpaca sent {value!r} where a timestamp belongs")
    # Python 3.11 reads RFC 3339 with Z and up to nanoseconds (truncated to microseconds).
    return _utc(datetime.fromisoformat(value))


def _opt_time(value: Any) -> datetime | None:
    return None if value in (None, "") else _time(value)


def _side(value: Any) -> Literal["buy", "sell"]:
    if value == "buy":
        return "buy"
    if value == "sell":
        return "sell"
    raise AlpacaError(f"Alpaca sent order side {value!r}")


def parse_order(raw: Any) -> Order:
    """An order as the REST API and the trade_updates stream send it."""
    d = _mapping(raw, "order")
    return Order(
        id=str(d["id"]),
        client_order_id=str(d.get("client_order_id") or ""),
        symbol=str(d["symbol"]),
        side=_side(d.get("side")),
        qty=_num(d.get("qty")),
        filled_qty=_num(d.get("filled_qty")),
        filled_avg_price=_opt_num(d.get("filled_avg_price")),
        status=str(d.get("status", "")),
        submitted_at=_opt_time(d.get("submitted_at")),
    )


def _position_symbol(symbol: str, asset_class: Any) -> str:
    # Alpaca lists crypto positions as "BTCUSD" but trades and streams "BTC/USD".
    if asset_class == "crypto" and not is_coin(symbol):
        for quote in _CRYPTO_QUOTES:
            if symbol.endswith(quote) and len(symbol) > len(quote):
                return f"{symbol[: -len(quote)]}/{quote}"
    return symbol


def _mapping(raw: Any, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise AlpacaError(f"Alpaca sent {type(raw).__name__} where a {what} object belongs")
    return raw


def _listing(raw: Any, what: str) -> list[Any]:
    if not isinstance(raw, list):
        raise AlpacaError(f"Alpaca sent {type(raw).__name__} where a list of {what} belongs")
    return raw


def _guard_client(
    client: _Guarded,
    limiter: TokenBucket,
    sleep: Callable[[float], None],
    retry_attempts: int,
    retry_wait_seconds: float,
    retry_exception_codes: Sequence[int],
    secrets: Sequence[str],
    max_retry_wait_s: float,
    wall: Callable[[], float],
) -> None:
    client._guard = _Guard(
        limiter,
        sleep,
        retry_attempts,
        retry_wait_seconds,
        retry_exception_codes,
        secrets,
        max_retry_wait_s,
        wall,
    )


# ---------------------------------------------------------------------------- bars


class AlpacaBarSource:
    """BarSource over Alpaca market data: stocks (feed iex/sip) and coins (crypto/us).

    Pages are followed by `next_page_token` here rather than inside alpaca-py (whose
    get_*_bars gathers every page before returning), so a long backfill streams one
    frame per symbol per page. Every HTTP request, retries included, takes a token from
    one bucket shared by both clients (~200 requests/min is Alpaca's limit).
    """

    name = SOURCE

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        base_url: str | None = None,
        feed: str = "iex",
        max_requests_per_min: float = 190,
        burst: int = 10,
        page_limit: int = MAX_PAGE_LIMIT,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        retry_attempts: int = DEFAULT_RETRY_ATTEMPTS,
        retry_wait_seconds: float = DEFAULT_RETRY_WAIT_SECONDS,
        retry_exception_codes: Sequence[int] = DEFAULT_RETRY_CODES,
        max_retry_wait_s: float = HISTORY_MAX_RETRY_WAIT_S,
        wall: Callable[[], float] = time.time,
        adjustment: str = "all",
    ) -> None:
        if not api_key or not secret_key:
            raise AlpacaAuthError(
                "Alpaca needs an API key pair: set APCA_API_KEY_ID and APCA_API_SECRET_KEY"
            )
        if adjustment not in ADJUSTMENTS:
            raise ValueError(
                f"unknown Alpaca adjustment {adjustment!r}; use one of {', '.join(ADJUSTMENTS)}"
            )
        self.adjustment = Adjustment(adjustment)
        try:
            self.feed = DataFeed(feed)
        except ValueError:
            known = ", ".join(f.value for f in DataFeed)
            raise ValueError(f"unknown Alpaca stock feed {feed!r}; use one of {known}") from None
        if not 1 <= page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"page_limit must be within 1..{MAX_PAGE_LIMIT}, got {page_limit}")
        self.page_limit = page_limit
        self.limiter = TokenBucket(max_requests_per_min, burst, sleep=sleep, monotonic=monotonic)
        url = base_url.rstrip("/") if base_url else None
        self._stocks = _StockClient(api_key, secret_key, raw_data=True, url_override=url)
        self._crypto = _CryptoClient(api_key, secret_key, raw_data=True, url_override=url)
        self._actions = _ActionsClient(api_key, secret_key, raw_data=True, url_override=url)
        for client in (self._stocks, self._crypto, self._actions):
            _guard_client(
                client,
                self.limiter,
                sleep,
                retry_attempts,
                retry_wait_seconds,
                retry_exception_codes,
                (api_key, secret_key),
                max_retry_wait_s,
                wall,
            )

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (retries included)."""
        return sum(c._guard.requests for c in (self._stocks, self._crypto, self._actions))

    def fetch_bars(
        self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime
    ) -> Iterator[pl.DataFrame]:
        """Bars starting in [start, end): stocks first, then coins, one frame per symbol per page."""
        if timeframe not in _TIMEFRAMES:
            raise ValueError(f"timeframe {timeframe!r} is not one of {', '.join(TIMEFRAMES)}")
        start, end = _utc(start), _utc(end)
        if start >= end:
            return
        tf = _TIMEFRAMES[timeframe]
        stocks = list(dict.fromkeys(s for s in symbols if not is_coin(s)))
        coins = list(dict.fromkeys(s for s in symbols if is_coin(s)))
        if stocks:
            stock_req = StockBarsRequest(
                symbol_or_symbols=stocks,
                timeframe=tf,
                start=start,
                end=end,
                feed=self.feed,
                adjustment=self.adjustment,
            )
            params = stock_req.to_request_fields()
            yield from self._pages(self._stocks, "/stocks/bars", params, timeframe, start, end)
        if coins:
            coin_req = CryptoBarsRequest(
                symbol_or_symbols=coins, timeframe=tf, start=start, end=end
            )
            path = f"/crypto/{CryptoFeed.US.value}/bars"
            params = coin_req.to_request_fields()
            yield from self._pages(self._crypto, path, params, timeframe, start, end)

    def fetch_corporate_actions(
        self, symbols: Sequence[str], start: date, end: date
    ) -> list[CorporateAction]:
        """The stocks' splits and cash dividends with an ex-date in [start, end] (Alpaca's
        GET /v1/corporate-actions; coins have none). Those that change the basis of the
        bars this source serves: none with adjustment='raw', splits only with 'split'."""
        stocks = sorted({s for s in symbols if not is_coin(s)})
        wanted = {
            Adjustment.RAW: set(),
            Adjustment.SPLIT: {"split"},
            Adjustment.DIVIDEND: {"dividend"},
            Adjustment.ALL: {"split", "dividend"},
        }[self.adjustment]
        if not stocks or not wanted or start > end:
            return []
        types = [t for t, kind in _ACTION_TYPES.items() if kind in wanted]
        params: dict[str, Any] = {
            "symbols": ",".join(stocks),
            "types": ",".join(t.removesuffix("s") for t in types),
            "start": start.isoformat(),
            "end": end.isoformat(),
            "limit": 1000,
        }
        actions: list[CorporateAction] = []
        seen: set[str] = set()
        while True:
            payload = _mapping(self._actions.get("/corporate-actions", params), "actions")
            by_type = _mapping(payload.get("corporate_actions") or {}, "corporate actions")
            for kind_name in types:
                for raw in by_type.get(kind_name) or []:
                    actions.append(_corporate_action(_ACTION_TYPES[kind_name], raw))
            token = payload.get("next_page_token")
            if not token:
                return actions
            if token in seen:
                raise AlpacaError(f"Alpaca repeated page token {token!r} on corporate actions")
            seen.add(token)
            params["page_token"] = token

    def _pages(
        self,
        client: _Guarded,
        path: str,
        params: dict[str, Any],
        timeframe: str,
        start: datetime,
        end: datetime,
    ) -> Iterator[pl.DataFrame]:
        # Without an explicit limit Alpaca pages by 1,000; alpaca-py asks for 10,000 too.
        params["limit"] = self.page_limit
        seen: set[str] = set()
        while True:
            payload = _mapping(client.get(path, params), "bars response")
            by_symbol = payload.get("bars") or {}
            if not isinstance(by_symbol, dict):
                raise AlpacaError(f"Alpaca sent malformed bars on GET {path}: not a symbol map")
            for symbol, bars in by_symbol.items():
                if bars is None:
                    continue
                if not isinstance(bars, list):
                    raise AlpacaError(f"Alpaca sent malformed bars for {symbol}: not a list")
                frame = bars_frame(str(symbol), timeframe, bars, start, end)
                if frame.height:
                    yield frame
            token = payload.get("next_page_token")
            if not token:
                return
            if token in seen:
                raise AlpacaError(f"Alpaca repeated page token {token!r} on GET {path}")
            seen.add(token)
            params["page_token"] = token


def _corporate_action(kind: str, raw: Any) -> CorporateAction:
    """One of Alpaca's forward/reverse splits (new_rate per old_rate) or cash dividends (rate)."""
    try:
        ex_date = date.fromisoformat(str(raw["ex_date"]))
        if kind == "split":
            value = float(raw["new_rate"]) / float(raw["old_rate"])
        else:
            value = float(raw["rate"])
        return CorporateAction(
            str(raw["symbol"]), ex_date, "split" if kind == "split" else "dividend", value
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        raise AlpacaError(f"Alpaca sent a malformed corporate action ({err}): {raw!r}") from None


# --------------------------------------------------------------------------- broker


class TradingDay(NamedTuple):
    """One market day: its date and its session open/close (tz-aware UTC)."""

    date: date
    open: datetime
    close: datetime


class AlpacaBroker:
    """Broker over Alpaca's trading API; paper by default, live only with live_opt_in=True."""

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        paper: bool = True,
        live_opt_in: bool = False,
        base_url: str | None = None,
        max_requests_per_min: float = 190,
        burst: int = 10,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        retry_attempts: int = DEFAULT_RETRY_ATTEMPTS,
        retry_wait_seconds: float = DEFAULT_RETRY_WAIT_SECONDS,
        retry_exception_codes: Sequence[int] = DEFAULT_RETRY_CODES,
        timeout_s: float | None = 30.0,
        max_retry_wait_s: float = BROKER_MAX_RETRY_WAIT_S,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not paper and not live_opt_in:
            raise ValueError(
                "AlpacaBroker(paper=False) trades real money and is refused unless constructed "
                "with live_opt_in=True (set TRADINGML_MODE=live and "
                "TRADINGML_LIVE_TRADING_OPT_IN=true); use paper=True for the paper account"
            )
        if not api_key or not secret_key:
            raise AlpacaAuthError(
                "Alpaca needs an API key pair: set APCA_API_KEY_ID and APCA_API_SECRET_KEY"
            )
        self.paper = paper
        self.limiter = TokenBucket(max_requests_per_min, burst, sleep=sleep, monotonic=monotonic)
        url = base_url.rstrip("/") if base_url else None
        self._client = _TradingClient(
            api_key, secret_key, paper=paper, raw_data=True, url_override=url
        )
        self._client._timeout_s = timeout_s
        # Retrying POST /orders after a 429/504 is safe only because every order carries a
        # client_order_id: a retry of an order that did land gets 422, which we surface as
        # DuplicateClientOrderIdError for the caller to confirm by lookup.
        _guard_client(
            self._client,
            self.limiter,
            sleep,
            retry_attempts,
            retry_wait_seconds,
            retry_exception_codes,
            (api_key, secret_key),
            max_retry_wait_s,
            wall,
        )

    @property
    def endpoint(self) -> str:
        """The trading API base URL in use (paper, live or an override), for logs."""
        base = self._client._base_url
        return str(getattr(base, "value", base))

    def get_account(self) -> Account:
        d = _mapping(self._client.get_account(), "account")
        return Account(
            cash=_num(d.get("cash")),
            equity=_num(d.get("equity")),
            buying_power=_num(d.get("buying_power")),
            currency=str(d.get("currency") or "USD"),
            paper=self.paper,
        )

    def get_clock(self) -> MarketClock:
        d = _mapping(self._client.get_clock(), "clock")
        return MarketClock(
            timestamp=_time(d.get("timestamp")),
            is_open=bool(d.get("is_open")),
            next_open=_time(d.get("next_open")),
            next_close=_time(d.get("next_close")),
        )

    def get_calendar(self, start: date, end: date) -> list[TradingDay]:
        """Market days from start to end, both inclusive (as Alpaca counts them)."""
        if isinstance(start, datetime):
            start = start.date()
        if isinstance(end, datetime):
            end = end.date()
        raw = _listing(
            self._client.get_calendar(GetCalendarRequest(start=start, end=end)), "market days"
        )
        days: list[TradingDay] = []
        for item in raw:
            d = _mapping(item, "market day")
            day = date.fromisoformat(str(d["date"]))
            # Alpaca gives wall-clock New York times ("09:30"): early closes included.
            opens = datetime.combine(day, dtime.fromisoformat(str(d["open"])), NEW_YORK)
            closes = datetime.combine(day, dtime.fromisoformat(str(d["close"])), NEW_YORK)
            days.append(TradingDay(day, opens.astimezone(UTC), closes.astimezone(UTC)))
        return days

    def get_positions(self) -> list[Position]:
        positions = []
        for item in _listing(self._client.get_all_positions(), "positions"):
            d = _mapping(item, "position")
            positions.append(
                Position(
                    symbol=_position_symbol(str(d["symbol"]), d.get("asset_class")),
                    qty=_num(d.get("qty")),
                    avg_entry_price=_num(d.get("avg_entry_price")),
                    market_value=_num(d.get("market_value")),
                )
            )
        return positions

    def list_orders(
        self, status: Literal["open", "closed", "all"] = "open", limit: int = 500
    ) -> list[Order]:
        """Orders, newest first; open ones by default (Alpaca caps `limit` at 500)."""
        req = GetOrdersRequest(status=QueryOrderStatus(status), limit=limit)
        return [parse_order(o) for o in _listing(self._client.get_orders(req), "orders")]

    def submit_order(self, request: OrderRequest) -> Order:
        """Place a market or limit order under request.client_order_id.

        Raises DuplicateClientOrderIdError when Alpaca already has that id (e.g. a
        retried submit whose first attempt landed): look it up, do not resubmit.
        """
        tif = TimeInForce(request.time_in_force)
        if is_coin(request.symbol) and tif == TimeInForce.DAY:
            tif = TimeInForce.GTC  # Alpaca's crypto orders take only gtc or ioc
        common: dict[str, Any] = {
            "symbol": request.symbol,
            "qty": request.qty,
            "side": OrderSide(request.side),
            "time_in_force": tif,
            "client_order_id": request.client_order_id,
        }
        order_req: MarketOrderRequest | LimitOrderRequest
        if request.order_type == "market":
            order_req = MarketOrderRequest(**common)
        else:
            if request.limit_price is None:
                raise ValueError(f"limit order {request.client_order_id!r} has no limit_price")
            order_req = LimitOrderRequest(**common, limit_price=request.limit_price)
        try:
            raw = self._client.submit_order(order_req)
        except AlpacaError as err:
            if err.status == 422 and "client_order_id must be unique" in err.alpaca_message:
                raise DuplicateClientOrderIdError(request.client_order_id) from err
            raise
        return parse_order(raw)

    def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        try:
            raw = self._client.get_order_by_client_id(client_order_id)
        except AlpacaError as err:
            if err.status == 404:
                return None
            raise
        return parse_order(raw)

    def cancel_order(self, order_id: str) -> None:
        self._client.cancel_order_by_id(order_id)

    def close_all_positions(self) -> list[Order]:
        """Cancel every open order, then liquidate every position; returns the closing orders."""
        raw = _listing(self._client.close_all_positions(cancel_orders=True), "close results")
        orders: list[Order] = []
        failures: dict[str, str] = {}
        for item in raw:
            d = _mapping(item, "close result")
            status = d.get("status")
            body = d.get("body")
            if isinstance(status, int) and 200 <= status < 300 and isinstance(body, dict):
                orders.append(parse_order(body))
            else:
                why = body.get("message") if isinstance(body, dict) else body
                failures[str(d.get("symbol"))] = f"{status} {why}"
        if failures:
            raise CloseAllPositionsError(orders, failures)
        return orders
