"""Live one-minute bars over Alpaca's market-data websocket, with reconnect backoff, a silence watchdog and REST gap-fill."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import re
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgpack
import polars as pl
from alpaca.data.enums import CryptoFeed, DataFeed
from alpaca.data.live.crypto import CryptoDataStream
from alpaca.data.live.stock import StockDataStream
from websockets.exceptions import WebSocketException

from adapters.clock import SystemClock
from adapters.protocols import BarHandler, BarSource, Clock
from core.bar_schema import BAR_SCHEMA, conform_bars
from core.universe import is_coin

log = logging.getLogger(__name__)

TIMEFRAME = "1Min"
SOURCE = "alpaca"
GAP_FILL_SOURCE = "alpaca-gapfill"
"""`source` of the bars the REST gap-fill delivered (live bars: SOURCE); features ignore it."""
_MINUTE = timedelta(minutes=1)
_KEY_HELP = (
    "set APCA_API_KEY_ID and APCA_API_SECRET_KEY to a valid Alpaca key pair "
    "(paper and live accounts have different keys)"
)

Sleep = Callable[[float], Awaitable[None]]
Kind = Literal["stock", "crypto"]


class AlpacaStreamError(RuntimeError):
    """The stream cannot go on (retrying would not help)."""


class AlpacaStreamAuthError(AlpacaStreamError):
    """Alpaca refused the API keys. Never carries the secret."""


class AlpacaStreamConnectionLimitError(AlpacaStreamError):
    """Alpaca answered 406: the account already holds its one stream connection."""


@dataclass
class StreamCounters:
    """What the stream has done so far (all endpoints together)."""

    connects: int = 0  # connections that got through connect + auth
    reconnects: int = 0  # of those, the ones after an endpoint's first
    connect_failures: int = 0  # connect/auth attempts that failed and were retried
    silence_timeouts: int = 0  # connections closed by the watchdog
    bars_delivered: int = 0  # new bars handed to handlers (live and gap-filled)
    gap_filled: int = 0  # of those, the ones that came from the REST gap-fill
    bars_revised: int = 0  # revised bars ('updatedBars') handed on as updates
    duplicates_dropped: int = 0  # bars already delivered (by the other path), not handed on
    dropped_malformed: int = 0  # frames or bars that could not be read
    handler_errors: int = 0  # exceptions raised by the handler (logged, stream went on)
    gap_fill_errors: int = 0  # gap-fill fetches that raised (those minutes stay missing)


class _MalformedBar(ValueError):
    pass


class _TransientConnectError(Exception):
    pass


# alpaca-py turns an error reply to auth into ValueError(msg) and drops the code; these
# are Alpaca's documented texts for 402/401, 406 and 409.
_AUTH_TEXTS = ("auth failed", "not authenticated", "unauthorized", "forbidden")
_LIMIT_TEXT = "connection limit exceeded"
_FATAL_STREAM_CODES = {
    405: "symbol limit exceeded",
    409: "insufficient subscription (the SIP feed needs a paid plan; use feed='iex')",
    410: "invalid subscribe action for this feed",
}
_RFC3339_FRACTION = re.compile(r"(\.\d{6})\d+")


def backoff_delay(failures: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(failures - 1))]."""
    ceiling = min(cap_s, base_s * 2.0 ** max(0, failures - 1))
    return rng.uniform(0.0, ceiling)


def floor_minute(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(second=0, microsecond=0)


def _number(msg: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = msg.get(name)
    if value is None:
        if required:
            raise _MalformedBar(f"field {name!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _MalformedBar(f"field {name!r} is {value!r}, not a number")
    return float(value)


def _timestamp(value: object) -> datetime:
    # alpaca-py calls `t.to_datetime()` and so silently drops (after logging) any bar whose
    # `t` is not a msgpack Timestamp; we read the Timestamp, and also an RFC 3339 string
    # with a zone (what Alpaca's JSON mode sends), rather than lose a readable bar.
    if isinstance(value, msgpack.Timestamp):
        try:
            return value.to_datetime().astimezone(UTC)
        except (OverflowError, ValueError, OSError) as exc:
            raise _MalformedBar(f"timestamp out of range: {exc}") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(_RFC3339_FRACTION.sub(r"\1", value))
        except ValueError:
            raise _MalformedBar(f"timestamp {value!r} is not RFC 3339") from None
        if parsed.tzinfo is None:
            raise _MalformedBar(f"timestamp {value!r} has no time zone")
        return parsed.astimezone(UTC)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    raise _MalformedBar(f"timestamp is {type(value).__name__}, not a msgpack Timestamp")


def parse_bar(msg: Mapping[str, Any]) -> dict[str, Any]:
    """One Alpaca bar message -> one canonical row; raises ValueError when it cannot be read."""
    symbol = msg.get("S")
    if not isinstance(symbol, str) or not symbol:
        raise _MalformedBar(f"symbol is {symbol!r}")
    if "t" not in msg:
        raise _MalformedBar("field 't' is missing")
    n = msg.get("n")
    if n is not None and (
        isinstance(n, bool)
        or not isinstance(n, int | float)
        or (isinstance(n, float) and not n.is_integer())
    ):
        raise _MalformedBar(f"field 'n' is {n!r}, not a count")
    return {
        "symbol": symbol,
        "timeframe": TIMEFRAME,
        "ts": _timestamp(msg["t"]),
        "open": _number(msg, "o", required=True),
        "high": _number(msg, "h", required=True),
        "low": _number(msg, "l", required=True),
        "close": _number(msg, "c", required=True),
        "volume": _number(msg, "v", required=True),
        "trade_count": None if n is None else int(n),
        "vwap": _number(msg, "vw", required=False),
        "source": SOURCE,
    }


def _rows_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return conform_bars(pl.DataFrame(rows, schema=BAR_SCHEMA, orient="row"))


def _collect(
    source: BarSource, symbols: list[str], start: datetime, end: datetime
) -> list[pl.DataFrame]:
    # Runs in a worker thread: BarSource is synchronous and may block on HTTP.
    return list(source.fetch_bars(symbols, TIMEFRAME, start, end))


def _start_error_kind(text: str) -> Literal["auth", "limit", "fatal", "transient"]:
    lowered = text.lower()
    if _LIMIT_TEXT in lowered:
        return "limit"
    if any(t in lowered for t in _AUTH_TEXTS):
        return "auth"
    if "insufficient subscription" in lowered:
        return "fatal"
    return "transient"


@dataclass
class _Endpoint:
    """One alpaca-py stream (stocks or crypto) and what we know about its symbols."""

    kind: Kind
    stream: StockDataStream | CryptoDataStream
    url: str
    symbols: list[str]
    watermark: dict[str, datetime] = field(default_factory=dict)  # newest bar ts delivered
    first_connected: datetime | None = None
    connects: int = 0
    bars_this_connection: int = 0

    @property
    def ws(self) -> Any:
        # alpaca-py keeps the socket in a private attribute typed as None.
        return self.stream._ws

    async def close(self) -> None:
        try:
            await self.stream.close()
        except (OSError, WebSocketException, RuntimeError) as exc:
            log.debug("closing the %s stream socket: %s", self.kind, exc)
            self.stream._ws = None


class AlpacaBarStream:
    """`BarStream` over alpaca-py's StockDataStream / CryptoDataStream, run by our own loop.

    alpaca-py's `run()` retries forever (bad keys included) with its own backoff and
    has no gap-fill, so we drive its pieces ourselves: `_start_ws` (connect + auth),
    `_send_subscribe_msg` (its fragmented subscribe), then we read `_ws` directly,
    decoding each msgpack frame, so one bad frame or bar is dropped rather than
    breaking the read loop. Stocks and coins (core.universe.is_coin) go to their own
    endpoints, both in one event loop.

    Delivery: one canonical frame (BAR_SCHEMA, timeframe 1Min, source alpaca; gap-filled
    bars: source alpaca-gapfill) per websocket frame, per handler. Each symbol's bars reach the handler in strictly
    increasing ts, each (symbol, ts) once: a bar at or before the newest one already
    delivered (live or gap-filled) is dropped as a duplicate. Alpaca may revise a bar
    ~30 s later ('updatedBars', T "u"): with `updated_bars=True` the revision is handed
    on as a second frame with the same key, which an upsert by BAR_KEY applies.

    After a reconnect, minutes from each symbol's last bar + 1 min up to the start of
    the current minute (only finished bars) are fetched from `gap_fill` and handed on
    before any live bar read on the new connection. The silence watchdog closes and
    reconnects a connection that has sent nothing for `silence_timeout_s`; stock
    streams are legitimately silent outside market hours, where this means a cheap
    reconnect every so often (it backs off while connections bring no bars).
    alpaca-py's own `data_timeout` lives in its `_consume`, which we do not use.

    `stale_reason` says why the data cannot be trusted to be live: set when the watchdog
    closes a silent connection or a connection drops, kept through the reconnect and the
    gap-fill, cleared by the first live bar on the new connection (None: healthy). The
    live-trading loop goes reduce-only while it is set.
    """

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        feed: str = "iex",
        stock_url: str | None = None,
        crypto_url: str | None = None,
        gap_fill: BarSource | None = None,
        clock: Clock | None = None,
        silence_timeout_s: float | None = 90.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        rng: random.Random | None = None,
        sleep: Sleep | None = None,
        connect_timeout_s: float = 30.0,
        max_limit_retries: int = 3,
        max_consecutive_failures: int | None = None,
        updated_bars: bool = True,
        websocket_params: dict[str, Any] | None = None,
    ) -> None:
        if not api_key or not secret_key:
            raise AlpacaStreamAuthError(f"Alpaca API keys are missing: {_KEY_HELP}")
        if silence_timeout_s is not None and silence_timeout_s <= 0:
            raise ValueError("silence_timeout_s must be positive (or None to disable)")
        if backoff_base_s < 0 or backoff_cap_s < backoff_base_s:
            raise ValueError("need 0 <= backoff_base_s <= backoff_cap_s")
        self._api_key = api_key
        self._secret_key = secret_key
        self._feed = DataFeed(feed.lower())
        if self._feed not in (DataFeed.IEX, DataFeed.SIP):
            raise ValueError("the stock stream serves feed 'iex' or 'sip'")
        self._stock_url = stock_url
        self._crypto_url = crypto_url
        self._gap_fill = gap_fill
        self._clock: Clock = clock or SystemClock()
        self._silence = silence_timeout_s
        self._base = backoff_base_s
        self._cap = backoff_cap_s
        self._rng = rng or random.Random()
        self._sleep: Sleep = sleep or asyncio.sleep
        self._connect_timeout = connect_timeout_s
        self._max_limit_retries = max_limit_retries
        self._max_failures = max_consecutive_failures
        self._updated_bars = updated_bars
        # Without a close_timeout the legacy client waits 10 s for a dead peer's close.
        self._ws_params = websocket_params or {
            "ping_interval": 20,
            "ping_timeout": 20,
            "max_queue": 1024,
            "close_timeout": 2,
            "open_timeout": connect_timeout_s,
        }
        self._handlers: dict[str, BarHandler] = {}
        self._counters = StreamCounters()
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._running = False
        self._stale: dict[Kind, str] = {}

    def __repr__(self) -> str:
        return f"AlpacaBarStream(symbols={sorted(self._handlers)!r}, feed={self._feed.value!r})"

    # ---- BarStream -------------------------------------------------------------------

    def subscribe(self, symbols: Sequence[str], handler: BarHandler) -> None:
        """Route these symbols' bars to `handler` (an async callable). Call before run()."""
        if isinstance(symbols, str):
            raise TypeError("symbols must be a sequence of symbols, not one string")
        call = getattr(handler, "__call__", None)  # noqa: B004 - async callable objects count too
        if not (inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)):
            raise TypeError("handler must be an async function: async def handler(frame)")
        with self._lock:
            if self._running:
                raise RuntimeError("subscribe() before run(): the stream is already running")
            for symbol in symbols:
                if not isinstance(symbol, str) or not symbol.strip():
                    raise ValueError(f"bad symbol {symbol!r}")
                self._handlers[symbol.strip()] = handler

    def run(self) -> None:
        """Block, delivering bars, until stop(); raises AlpacaStreamError when it cannot go on."""
        asyncio.run(self.run_async())

    def stop(self) -> None:
        """Ask run() to return; safe from any thread, before or during run().

        A stopped stream stays stopped: a later run() returns at once (make a new one).
        A gap-fill fetch already running in its worker thread is waited for.
        """
        self._stop_requested.set()
        with self._lock:
            loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            # RuntimeError: the loop has already closed, run() is over.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    @property
    def counters(self) -> StreamCounters:
        """A snapshot of the counters."""
        return replace(self._counters)

    @property
    def symbols(self) -> list[str]:
        return list(self._handlers)

    @property
    def stale_reason(self) -> str | None:
        """Why the bars may not be live (silent or dropped connection, not yet healthy again); None when they are."""
        with self._lock:
            reasons = [self._stale[k] for k in sorted(self._stale)]
        return "; ".join(reasons) if reasons else None

    def set_clock(self, clock: Clock) -> None:
        """Use this clock from now on (gap-fill ends, connection times): e.g. one on broker time."""
        self._clock = clock

    def _mark_stale(self, ep: _Endpoint, why: str) -> None:
        with self._lock:
            self._stale.setdefault(ep.kind, why)

    # ---- the loop --------------------------------------------------------------------

    async def run_async(self) -> None:
        """run() for callers that already have an event loop."""
        if not self._handlers:
            raise RuntimeError("nothing to stream: call subscribe() first")
        stop_event = asyncio.Event()
        with self._lock:
            if self._running:
                raise RuntimeError("the stream is already running")
            self._loop, self._stop_event, self._running = (
                asyncio.get_running_loop(),
                stop_event,
                True,
            )
        if self._stop_requested.is_set():
            stop_event.set()
        endpoints = self._endpoints()
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(self._run_endpoint(ep), name=f"alpaca-{ep.kind}-stream")
            for ep in endpoints
        ]
        stopper: asyncio.Task[Any] = asyncio.create_task(stop_event.wait())
        error: BaseException | None = None
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task in done and not task.cancelled():
                    error = task.exception()
                    if error is not None:
                        break
        finally:
            for task in (*tasks, stopper):
                task.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
            for ep in endpoints:
                await ep.close()
            with self._lock:
                self._loop, self._stop_event, self._running = None, None, False
        if error is not None:
            raise error

    def _endpoints(self) -> list[_Endpoint]:
        stocks = [s for s in self._handlers if not is_coin(s)]
        coins = [s for s in self._handlers if is_coin(s)]
        endpoints: list[_Endpoint] = []
        if stocks:
            stock = StockDataStream(
                self._api_key,
                self._secret_key,
                raw_data=True,
                feed=self._feed,
                websocket_params=dict(self._ws_params),
                url_override=self._stock_url,
            )
            endpoints.append(_Endpoint("stock", stock, stock._endpoint, stocks))
        if coins:
            crypto = CryptoDataStream(
                self._api_key,
                self._secret_key,
                raw_data=True,
                feed=CryptoFeed.US,
                websocket_params=dict(self._ws_params),
                url_override=self._crypto_url,
            )
            endpoints.append(_Endpoint("crypto", crypto, crypto._endpoint, coins))
        for ep in endpoints:
            # Registering handlers is what makes alpaca-py's _send_subscribe_msg list the
            # symbols; frames never reach them because we read the socket ourselves.
            ep.stream.subscribe_bars(_never_called, *ep.symbols)
            if self._updated_bars:
                ep.stream.subscribe_updated_bars(_never_called, *ep.symbols)
        return endpoints

    async def _run_endpoint(self, ep: _Endpoint) -> None:
        failures = 0  # consecutive connections that failed or brought no bar
        limit_hits = 0
        while True:
            try:
                await self._connect(ep)
            except AlpacaStreamConnectionLimitError as exc:
                limit_hits += 1
                if limit_hits > self._max_limit_retries:
                    raise
                failures += 1
                self._counters.connect_failures += 1
                log.warning("%s; retrying (%d of %d)", exc, limit_hits, self._max_limit_retries)
                await self._backoff(ep, failures)
                continue
            except _TransientConnectError as exc:
                failures += 1
                self._counters.connect_failures += 1
                if self._max_failures is not None and failures >= self._max_failures:
                    raise AlpacaStreamError(
                        f"could not connect to the Alpaca {ep.kind} stream at {ep.url} "
                        f"{failures} times in a row; last error: {exc}"
                    ) from None
                log.warning("could not connect to the Alpaca %s stream: %s", ep.kind, exc)
                await self._backoff(ep, failures)
                continue
            limit_hits = 0
            try:
                await ep.stream._send_subscribe_msg()
                if ep.connects > 1:
                    await self._fill_gap(ep)
                await self._consume(ep)
            except (OSError, WebSocketException) as exc:
                log.warning("the Alpaca %s stream dropped: %s", ep.kind, exc)
                self._mark_stale(ep, f"the {ep.kind} stream dropped ({exc}); reconnecting")
            finally:
                await ep.close()
            failures = 1 if ep.bars_this_connection else failures + 1
            await self._backoff(ep, failures)

    async def _connect(self, ep: _Endpoint) -> None:
        ep.bars_this_connection = 0
        try:
            # alpaca-py's _connect/_auth wait for replies with no timeout of their own.
            await asyncio.wait_for(ep.stream._start_ws(), self._connect_timeout)
        except ValueError as exc:
            await ep.close()
            # Its message is the server's error text (or a msgpack error), never our secret.
            text = str(exc)
            kind = _start_error_kind(text)
            if kind == "auth":
                raise AlpacaStreamAuthError(
                    f"Alpaca rejected the API keys on the {ep.kind} stream ({text}): {_KEY_HELP}"
                ) from None
            if kind == "limit":
                raise AlpacaStreamConnectionLimitError(
                    f"Alpaca refused the {ep.kind} stream: connection limit exceeded (406). "
                    "An account may hold one market-data stream connection per endpoint; "
                    "stop the other client using these keys (another process, or a "
                    "connection Alpaca has not reaped yet)"
                ) from None
            if kind == "fatal":
                raise AlpacaStreamError(f"Alpaca refused the {ep.kind} stream: {text}") from None
            raise _TransientConnectError(text or type(exc).__name__) from None
        except (OSError, TimeoutError, WebSocketException, KeyError, IndexError, TypeError) as exc:
            await ep.close()
            raise _TransientConnectError(f"{type(exc).__name__}: {exc}") from None
        now = self._clock.now()
        if ep.first_connected is None:
            ep.first_connected = now
        ep.connects += 1
        self._counters.connects += 1
        if ep.connects > 1:
            self._counters.reconnects += 1
        log.info("connected to the Alpaca %s stream (connection #%d)", ep.kind, ep.connects)

    async def _backoff(self, ep: _Endpoint, failures: int) -> None:
        delay = backoff_delay(failures, self._base, self._cap, self._rng)
        log.info(
            "reconnecting the Alpaca %s stream in %.2fs (attempt %d)", ep.kind, delay, failures
        )
        await self._sleep(delay)

    async def _consume(self, ep: _Endpoint) -> None:
        """Read frames until the connection drops (raises) or goes silent (returns)."""
        ws = ep.ws
        while True:
            try:
                if self._silence is None:
                    raw = await ws.recv()
                else:
                    # Cancelling the legacy client's recv() is safe: no frame is lost.
                    raw = await asyncio.wait_for(ws.recv(), self._silence)
            except TimeoutError:
                self._counters.silence_timeouts += 1
                self._mark_stale(
                    ep,
                    f"the {ep.kind} stream was silent for {self._silence:g} s (watchdog); "
                    "reconnecting, gap-filling, waiting for live bars",
                )
                log.warning(
                    "the Alpaca %s stream sent nothing for %.1fs: treating it as dead, reconnecting",
                    ep.kind,
                    self._silence,
                )
                return
            await self._on_frame(ep, raw)

    # ---- frames ----------------------------------------------------------------------

    def _malformed(self, ep: _Endpoint, why: str) -> None:
        self._counters.dropped_malformed += 1
        log.warning("dropped a malformed message on the Alpaca %s stream: %s", ep.kind, why)

    async def _on_frame(self, ep: _Endpoint, raw: object) -> None:
        if not isinstance(raw, bytes):
            self._malformed(ep, f"a {type(raw).__name__} frame, expected binary msgpack")
            return
        try:
            messages = msgpack.unpackb(raw)
        except ValueError as exc:  # msgpack's errors are all ValueErrors
            self._malformed(ep, f"not msgpack ({type(exc).__name__}: {exc})")
            return
        if not isinstance(messages, list):
            self._malformed(ep, f"a {type(messages).__name__}, expected a list of messages")
            return
        rows: list[dict[str, Any]] = []
        revisions = 0
        for msg in messages:
            if not isinstance(msg, dict):
                self._malformed(ep, f"a {type(msg).__name__} message, expected a map")
                continue
            kind = msg.get("T")
            if kind in ("b", "u"):
                try:
                    row = parse_bar(msg)
                except ValueError as exc:
                    self._malformed(ep, f"bar {msg.get('S')!r}: {exc}")
                    continue
                symbol, ts = row["symbol"], row["ts"]
                if symbol not in self._handlers:
                    log.debug("ignoring a bar for unsubscribed %s", symbol)
                    continue
                newest = ep.watermark.get(symbol)
                if newest is not None and ts <= newest:
                    if kind == "u" and self._updated_bars:
                        rows.append(row)
                        revisions += 1
                    else:
                        self._counters.duplicates_dropped += 1
                    continue
                # A revision of a bar we never had is simply that minute's bar.
                ep.watermark[symbol] = ts
                ep.bars_this_connection += 1
                rows.append(row)
            elif kind == "error":
                self._on_server_error(ep, msg)
            elif kind == "subscription":
                log.info("Alpaca %s stream subscription: bars %s", ep.kind, msg.get("bars"))
            # 'success' and data we did not ask for are ignored.
        if rows:
            with self._lock:
                # A live bar on this connection: the data is live again.
                self._stale.pop(ep.kind, None)
            frame = _rows_frame(rows)
            if revisions:
                frame = frame.unique(subset=["symbol", "ts"], keep="last", maintain_order=True)
            self._counters.bars_revised += revisions
            self._counters.bars_delivered += len(rows) - revisions
            await self._deliver(frame)

    def _on_server_error(self, ep: _Endpoint, msg: Mapping[str, Any]) -> None:
        code, text = msg.get("code"), msg.get("msg")
        if code == 402:
            raise AlpacaStreamAuthError(
                f"Alpaca rejected the API keys on the {ep.kind} stream ({text}): {_KEY_HELP}"
            )
        if isinstance(code, int) and code in _FATAL_STREAM_CODES:
            raise AlpacaStreamError(
                f"Alpaca {ep.kind} stream error {code}: {text} ({_FATAL_STREAM_CODES[code]})"
            )
        log.warning("Alpaca %s stream error %s: %s", ep.kind, code, text)

    async def _deliver(self, frame: pl.DataFrame) -> None:
        groups: dict[int, tuple[BarHandler, list[str]]] = {}
        for symbol in frame["symbol"].unique(maintain_order=True).to_list():
            handler = self._handlers[symbol]
            groups.setdefault(id(handler), (handler, []))[1].append(symbol)
        for handler, symbols in groups.values():
            part = frame if len(groups) == 1 else frame.filter(pl.col("symbol").is_in(symbols))
            try:
                await handler(part)
            except Exception:
                # The handler is the caller's code: its failure must not end the stream.
                self._counters.handler_errors += 1
                log.exception("the bar handler raised; the stream goes on")

    # ---- gap-fill --------------------------------------------------------------------

    async def _fill_gap(self, ep: _Endpoint) -> None:
        if self._gap_fill is None:
            return
        end = floor_minute(self._clock.now())
        by_start: dict[datetime, list[str]] = {}
        for symbol in ep.symbols:
            newest = ep.watermark.get(symbol)
            if newest is not None:
                start = newest + _MINUTE
            elif ep.first_connected is not None:
                start = floor_minute(ep.first_connected)
            else:
                continue
            if start < end:
                by_start.setdefault(start, []).append(symbol)
        for start, symbols in sorted(by_start.items()):
            log.info("gap-filling %d %s symbol(s) over [%s, %s)", len(symbols), ep.kind, start, end)
            try:
                frames = await asyncio.to_thread(_collect, self._gap_fill, symbols, start, end)
            except Exception:
                # A failed fetch must not stop live bars; the minutes stay missing and
                # later ingestion can fill them.
                self._counters.gap_fill_errors += 1
                log.exception(
                    "gap-fill of %s over [%s, %s) failed; those minutes stay missing",
                    ", ".join(symbols),
                    start,
                    end,
                )
                continue
            for frame in frames:
                fresh = self._new_gap_rows(ep, frame, symbols, end)
                if fresh is not None:
                    await self._deliver(fresh)

    def _new_gap_rows(
        self, ep: _Endpoint, frame: pl.DataFrame, symbols: list[str], end: datetime
    ) -> pl.DataFrame | None:
        try:
            # Canonical columns only: a REST source may add a `raw` column for flagged rows,
            # and a handler must get the same frame shape from both paths.
            df = conform_bars(frame).select(list(BAR_SCHEMA))
        except ValueError as exc:
            self._malformed(ep, f"gap-fill frame: {exc}")
            return None
        df = df.filter(
            pl.col("symbol").is_in(symbols) & pl.col("ts").is_not_null() & (pl.col("ts") < end)
        ).with_columns(
            pl.col("timeframe").fill_null(TIMEFRAME),
            # Marked, so the warehouse tells back-filled minutes from streamed ones.
            pl.lit(GAP_FILL_SOURCE, dtype=pl.String()).alias("source"),
        )
        parts: list[pl.DataFrame] = []
        for symbol in df["symbol"].unique(maintain_order=True).to_list():
            part = (
                df.filter(pl.col("symbol") == symbol).unique(subset=["ts"], keep="last").sort("ts")
            )
            newest = ep.watermark.get(symbol)
            if newest is not None:
                before = part.height
                part = part.filter(pl.col("ts") > newest)
                self._counters.duplicates_dropped += before - part.height
            if part.height:
                ep.watermark[symbol] = part["ts"][-1]
                parts.append(part)
        if not parts:
            return None
        fresh = pl.concat(parts)
        self._counters.gap_filled += fresh.height
        self._counters.bars_delivered += fresh.height
        return fresh


async def _never_called(_: object) -> None:  # pragma: no cover - see _endpoints
    return None


__all__ = [
    "GAP_FILL_SOURCE",
    "AlpacaBarStream",
    "AlpacaStreamAuthError",
    "AlpacaStreamConnectionLimitError",
    "AlpacaStreamError",
    "StreamCounters",
    "backoff_delay",
    "floor_minute",
    "parse_bar",
]
