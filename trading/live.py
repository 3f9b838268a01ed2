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

import numpy as np
import polars as pl

from adapters.protocols import Broker
from adapters.schema import BAR_SCHEMA
from core.bar_quality import validate_bars
from models.features import FeatureSpec, compute_features
from trading.calendar import Session
from trading.engine import MINUTE, TradingEngine
from trading.ledger import Ledger
from warehouse.bars import ingest_bar_frames, write_bars, write_quarantine
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
    """A connection held for a whole fast replay; None opens one per minute (live: never hold one)."""

    def _connect(self) -> Any:
        return nullcontext(self.con) if self.con is not None else connect(self.warehouse)

    def _features(self, con: Any, start: datetime, end: datetime) -> pl.DataFrame:
        """Feature rows of the traded symbol's bars in [start, end), with enough history before."""
        tail = load_tail(con, self.spec.symbols, self.spec.timeframe, start)
        cols = ", ".join(BAR_SCHEMA)
        recent = load_frame(
            con,
            f"SELECT {cols} FROM bars WHERE timeframe = ? AND list_contains(?, symbol)"
            " AND ts >= ? AND ts < ? ORDER BY symbol, ts",
            [self.spec.timeframe, list(self.spec.symbols), start, end],
        )
        bars = pl.concat([tail, recent]) if tail.height else recent
        if bars.filter(pl.col("symbol") == self.spec.traded).height == 0:
            return pl.DataFrame()
        frame = compute_features(bars, self.spec)
        return frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end))

    def start(self, now: datetime) -> int:
        """Reconcile-free warm-up: feed the session's closed bars before the current minute to the policy."""
        self.engine.begin_session(str(self.session.day), self.session.day)
        last_closed = _floor_minute(now) - MINUTE
        with self._connect() as con:
            frame = self._features(con, self.session.open, last_closed)
        names = self.spec.names()
        x = frame.select(names).to_numpy() if frame.height else np.zeros((0, len(names)))
        for i in range(x.shape[0]):
            self.engine.warm_up(x[i], i)
        self.warmed = True
        return int(x.shape[0])

    def on_bar_stored(self, now: datetime, arrived: float | None = None) -> str | None:
        """Decide on the bar that closed at the last minute boundary; None when it is missing or done."""
        bar_ts = _floor_minute(now) - MINUTE
        if bar_ts in self.decided or not self.session.contains(bar_ts):
            return None
        started = arrived if arrived is not None else time.perf_counter()
        self.engine.sync_fills()
        with self._connect() as con:
            frame = self._features(con, bar_ts, bar_ts + MINUTE)
            if frame.height == 0:
                log.warning("no %s bar for %s yet; no decision", self.spec.traded, bar_ts)
                return None
            price = float(
                con.execute(
                    "SELECT close FROM bars WHERE symbol = ? AND timeframe = ? AND ts = ?",
                    [self.spec.traded, self.spec.timeframe, bar_ts],
                ).fetchall()[0][0]
            )
            row = frame.select(self.spec.names()).to_numpy()[0]
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
    write_bars(con, checked.good, now)
    return frame.height
