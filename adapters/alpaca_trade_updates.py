"""Fills as they happen: Alpaca's trade_updates websocket (alpaca-py's TradingStream).

The stream runs on its own thread and keeps the order state of every `fill` and
`partial_fill` event; the trading loop takes them with `drain()` and books them through
the REST fill poller's bookkeeping (trading.reconcile.StreamedFills), so a fill seen by the
stream and by a REST poll has one fill id -- (broker order id, cumulative filled qty) -- and
is booked once. The poller stays the fallback: fills the stream missed (a drop, a
reconnect, a lost event) are still found by polling the open orders.

alpaca-py reconnects by itself (exponential backoff); keys it cannot authenticate make it
retry for ever, which is harmless here -- trading goes on from the poller -- and is logged.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from datetime import datetime
from typing import Any

from alpaca.trading.stream import TradingStream

from adapters.alpaca import AlpacaError, parse_order
from adapters.protocols import Order

log = logging.getLogger(__name__)

FILL_EVENTS = ("fill", "partial_fill")


class AlpacaTradeUpdates:
    """The account's trade updates on a background thread: `start()`, `drain()`, `stop()`."""

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        paper: bool = True,
        url: str | None = None,
    ) -> None:
        options: dict[str, Any] = {"url_override": url} if url else {}
        self._stream = TradingStream(api_key, secret_key, paper=paper, raw_data=True, **options)
        self._stream.subscribe_trade_updates(self._on_update)
        self._updates: queue.Queue[tuple[Order, datetime | None]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.received = 0
        """trade_updates events received (every kind)."""
        self.malformed = 0
        """Events whose order could not be read (logged and skipped)."""

    async def _on_update(self, message: Any) -> None:
        # raw_data: the whole frame, {"stream": "trade_updates", "data": {"event": ...}}.
        self.received += 1
        data = message.get("data") if isinstance(message, dict) else None
        if not isinstance(data, dict) or data.get("event") not in FILL_EVENTS:
            return
        try:
            order = parse_order(data.get("order"))
        except (AlpacaError, KeyError, TypeError, ValueError) as err:
            self.malformed += 1
            log.warning("trade update skipped: unreadable order (%s)", err)
            return
        stamp = data.get("timestamp")
        when: datetime | None = None
        if isinstance(stamp, str):
            try:
                when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                when = None
        self._updates.put((order, when))

    def start(self) -> AlpacaTradeUpdates:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._stream.run, name="alpaca-trade-updates", daemon=True
            )
            self._thread.start()
        return self

    def drain(self) -> list[tuple[Order, datetime | None]]:
        """Every fill's order state received since the last drain, in arrival order."""
        out: list[tuple[Order, datetime | None]] = []
        while True:
            try:
                out.append(self._updates.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        loop = getattr(self._stream, "_loop", None)
        # Closing the socket makes alpaca-py log "websocket error, restarting connection"
        # before it sees the stop flag and returns: not news at a session's end.
        stream_log = logging.getLogger("alpaca.trading.stream")
        level = stream_log.level
        stream_log.setLevel(logging.ERROR)
        try:
            if self._thread is not None and loop is not None and loop.is_running():
                try:
                    self._stream.stop()
                    # alpaca-py looks at its stop flag between 5-second reads: closing the
                    # socket ends the wait at once (its reconnect sees the flag, returns).
                    asyncio.run_coroutine_threadsafe(self._stream.close(), loop).result(5)
                except (RuntimeError, TimeoutError) as err:  # the loop ended meanwhile
                    log.debug("trade updates stop: %s", err)
            if self._thread is not None:
                self._thread.join(timeout=10)
        finally:
            stream_log.setLevel(level)
        self._thread = None

    def __enter__(self) -> AlpacaTradeUpdates:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
