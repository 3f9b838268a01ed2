"""A live (or replayed, or paper) trading session: stored bars in, one decision per closed minute out.

The bar handler only stores bars. Decisions run on minute boundaries: read the bars the
features need back from the warehouse, compute the closed bar's feature row with the
same functions training used, and call the shared TradingEngine. A run that starts
after the open first walks the session so far through the policy (no orders), instead
of the old 10-minute wait for history.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from adapters.protocols import Broker
from adapters.schema import BAR_SCHEMA
from core.bar_quality import validate_bars
from models.features import FeatureSpec
from trading.calendar import Session
from trading.engine import MINUTE, TradingEngine
from trading.inputs import InputLoader, value_at
from trading.ledger import Ledger
from trading.live_features import LiveFeatures
from warehouse.bars import ingest_bar_frames, write_quarantine, write_stream_bars
from warehouse.db import connect
from warehouse.io import load_frame

log = logging.getLogger(__name__)

# Bars of history per asset the features need before the bar decided on (longest window 60,
# plus one for the first difference); more is harmless.
HISTORY_BARS = 130


class LiveRunLockedError(RuntimeError):
    """Another live-trading run holds the lock."""


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """One live run at a time on this machine (beside the deployment's concurrency limit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise LiveRunLockedError(
                f"another live-trading run holds {path} ({holder}); one run at a time"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def load_tail(
    con: Any, symbols: tuple[str, ...], timeframe: str, until: datetime, n: int = HISTORY_BARS
) -> pl.DataFrame:
    """The last `n` bars of each symbol that start before `until` (searching 10 days back)."""
    cols = ", ".join(BAR_SCHEMA)
    return load_frame(
        con,
        f"SELECT {cols} FROM bars WHERE timeframe = ? AND list_contains(?, symbol)"
        " AND ts < ? AND ts >= ? QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) <= ?"
        " ORDER BY symbol, ts",
        [timeframe, list(symbols), until, until - timedelta(days=10), n],
    )


@dataclass
class LiveRunner:
    """Drives a TradingEngine through one session from warehouse bars."""

    engine: TradingEngine
    spec: FeatureSpec
    session: Session
    warehouse: Path
    broker: Broker
    ledger: Ledger
    latencies_ms: list[float] = field(default_factory=list)
    decided: set[datetime] = field(default_factory=set)
    warmed: bool = False
    con: Any = None
    inputs: InputLoader | None = None
    """The model's sentiment/forecast inputs (trading.inputs.input_loader); None: it has none."""
    features: LiveFeatures = field(init=False)
    """A connection held for a whole fast replay; None opens one per minute (live: never hold one)."""

    def _connect(self) -> Any:
        return nullcontext(self.con) if self.con is not None else connect(self.warehouse)

    def __post_init__(self) -> None:
        self.features = LiveFeatures(self.spec, self._session_times)

    def _session_times(self, ts: datetime) -> tuple[float, float]:
        """time_of_session and time_to_close exactly as models.features.compute_features has them."""
        if "/" in self.spec.traded:
            frac = (ts.hour * 60 + ts.minute) / 1440.0
            return frac, 1.0 - frac
        return (
            int((ts - self.session.open).total_seconds() // 60) / 390.0,
            int((self.session.close - ts).total_seconds() // 60) / 390.0,
        )

    def _bars(self, con: Any, start: datetime, end: datetime) -> pl.DataFrame:
        cols = ", ".join(BAR_SCHEMA)
        return load_frame(
            con,
            f"SELECT {cols} FROM bars WHERE timeframe = ? AND list_contains(?, symbol)"
            " AND ts >= ? AND ts < ? ORDER BY ts, symbol",
            [self.spec.timeframe, list(self.spec.symbols), start, end],
        )

    def start(self, now: datetime) -> int:
        """Load the history the features need, then feed the session's closed bars so far to the policy."""
        self.engine.begin_session(str(self.session.day), self.session.day)
        last_closed = _floor_minute(now) - MINUTE
        with self._connect() as con:
            history = load_tail(con, self.spec.symbols, self.spec.timeframe, self.session.open)
            so_far = self._bars(con, self.session.open, last_closed)
            extra = (
                self.inputs(con, self.session.open, last_closed) if self.inputs else (None, None)
            )
        self.features.push_frame(history)
        warmed = 0
        for (minute,), frame in so_far.group_by(["ts"], maintain_order=True):
            assert isinstance(minute, datetime)
            self.features.push_frame(frame)
            row = self.features.row(
                minute,
                value_at(extra[0], "sentiment", minute),
                value_at(extra[1], "forecast", minute),
            )
            if row is not None:
                self.engine.warm_up(row, warmed)
                warmed += 1
        self.warmed = True
        return warmed

    def on_bar_stored(
        self,
        now: datetime,
        arrived: float | None = None,
        *,
        fresh: pl.DataFrame | None = None,
        flush: bool = True,
    ) -> str | None:
        """Decide on the bar that closed at the last minute boundary; None when it is missing or done.

        `fresh`: that minute's bars, already read back from the warehouse by a caller that
        decides several symbols at once (one read for all); `flush=False` leaves the ledger
        write to that caller, after every symbol has decided.
        """
        bar_ts = _floor_minute(now) - MINUTE
        if bar_ts in self.decided or not self.session.contains(bar_ts):
            return None
        started = arrived if arrived is not None else time.perf_counter()
        self.engine.sync_fills()
        with self._connect() as con:
            # The fresh bars come back from the warehouse (what the stream handler stored).
            if fresh is None:
                fresh = self._bars(con, bar_ts, bar_ts + MINUTE)
            self.features.push_frame(fresh)
            sentiment = forecast = None
            if self.inputs is not None:
                extra = self.inputs(con, bar_ts, bar_ts + MINUTE)
                sentiment = value_at(extra[0], "sentiment", bar_ts)
                forecast = value_at(extra[1], "forecast", bar_ts)
            row = self.features.row(bar_ts, sentiment, forecast)
            if row is None:
                log.warning("no %s bar for %s yet; no decision", self.spec.traded, bar_ts)
                return None
            price = float(fresh.filter(pl.col("symbol") == self.spec.traded).get_column("close")[0])
            step = int((bar_ts - self.session.open).total_seconds() // 60)
            self.engine.mark(self.spec.traded, price)
            action = self.engine.decide(
                now=now,
                bar_ts=bar_ts,
                price=price,
                row=row,
                step=step,
                session_close=self.session.close,
            )
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            self.engine.record_equity(bar_ts + MINUTE)
            if flush:
                self.ledger.flush(con)
        self.decided.add(bar_ts)
        return action


def _floor_minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def store_bars(warehouse: Path, frame: pl.DataFrame, now: datetime, con: Any = None) -> int:
    """The stream handler's whole job: validate and upsert the bars (bad ones quarantined)."""
    if con is None:
        return ingest_bar_frames([frame], warehouse, now).received
    checked = validate_bars(frame, now)
    write_quarantine(con, checked.quarantine, now)
    write_stream_bars(con, checked.good, now)
    return frame.height
