"""Live features, one bar at a time: the same values as models.features.compute_features, in microseconds.

Recomputing the batch polars features for every minute costs ~10 ms of fixed overhead;
a live decision has a 5 ms budget. This keeps, per asset, the few dozen past bars the
feature windows need and evaluates each feature for the newest bar only, by the rule
models.features defines beside each feature's batch expression (models.features.asset_features:
same windows, ddof=1 standard deviations, the same null -> 0 rules and float32 cast). The time-of-session pair follows the traded symbol's calendar
through models.features.session_times, the batch function's own definition.
tests/unit/test_live_features.py holds the two equal, feature by feature, over whole
sessions on NYSE, 24/5 FX and 24/7 calendars.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from math import nan

import numpy as np
import polars as pl

from core.sessions import timeframe_span
from models.features import (
    FeatureSpec,
    asset_features,
    feature_calendar,
    session_times,
    staleness,
)


class _Asset:
    """The recent bars of one asset and the features of its newest bar (models.features.RecentBars)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.defs = asset_features(spec)
        keep = max([*spec.return_windows, *spec.vol_windows, spec.volume_window]) + 2
        self.ts: deque[datetime] = deque(maxlen=keep)
        self.logc: deque[float] = deque(maxlen=keep)
        self.lr: deque[float | None] = deque(maxlen=keep)
        self.vol: deque[float] = deque(maxlen=keep)
        self.newest: tuple[float, float, float, float | None] = (nan, nan, nan, None)
        self.last: dict[str, float] = {}
        self.history: deque[tuple[datetime, dict[str, float]]] = deque(maxlen=keep)
        """(bar ts, its features), newest last: what a carried-forward row reads."""
        self.close = nan
        """The newest bar's close."""

    def push(
        self,
        ts: datetime,
        o: float,
        h: float,
        lo: float,
        c: float,
        v: float | None,
        vwap: float | None,
    ) -> None:
        if self.ts and ts <= self.ts[-1]:
            if ts == self.ts[-1]:  # a revised bar replaces the newest one
                self.ts.pop()
                self.logc.pop()
                self.lr.pop()
                self.vol.pop()
                self.history.pop()
            else:
                return  # an older bar than we have: the batch features sort by ts; ignore
        logc = math.log(c) if c > 0 else nan
        self.lr.append(logc - self.logc[-1] if self.logc else None)
        self.ts.append(ts)
        self.logc.append(logc)
        self.vol.append(0.0 if v is None else float(v))
        self.close = c
        self.newest = (h, lo, c, vwap)
        # Each feature's own bar-by-bar rule, defined beside its batch expression.
        self.last = {f.name: f.step(self) for f in self.defs}
        self.history.append((ts, self.last))

    def as_of(self, ts: datetime) -> tuple[datetime | None, dict[str, float]]:
        """The newest bar at or before `ts` and its features ((None, {}) without one)."""
        for seen, features in reversed(self.history):
            if seen <= ts:
                return seen, features
        return None, {}


class LiveFeatures:
    """Feature rows of the traded symbol's newest bar, kept up to date bar by bar."""

    def __init__(self, spec: FeatureSpec, calendar: str | None = None) -> None:
        """`calendar` is the traded symbol's, as compute_features takes it (the symbols
        table's, or the SessionRule's); None infers it from the symbol the same way."""
        if not spec.intraday:
            raise ValueError("live features are for intraday bars")
        self.spec = spec
        self.calendar = feature_calendar(spec.traded, calendar)
        self.assets = {sym: _Asset(spec) for sym in spec.symbols}
        self.names = spec.names()
        self.span = timeframe_span(spec.timeframe)

    def push_frame(self, bars: pl.DataFrame) -> None:
        """Add bars (canonical schema, any symbols); each asset's must come in ts order."""
        cols = ("symbol", "ts", "open", "high", "low", "close", "volume", "vwap")
        if bars.height <= 64:  # a minute's bars: plain Python beats polars' fixed costs
            rows = sorted(
                (r for r in bars.select(cols).rows() if r[0] in self.assets),
                key=lambda r: (r[0], r[1]),
            )
        else:
            rows = (
                bars.filter(pl.col("symbol").is_in(list(self.assets)))
                .sort("symbol", "ts")
                .select(cols)
                .rows()
            )
        for sym, ts, o, h, lo, c, v, vw in rows:
            self.assets[sym].push(ts, o, h, lo, c, v, vw)

    def row(
        self,
        ts: datetime,
        sentiment: float | None = None,
        forecast: float | None = None,
        inputs: Mapping[str, float | None] | None = None,
    ) -> np.ndarray | None:
        """The feature row of the traded symbol's bar at `ts` (None when that bar is not the newest).

        The extra inputs come as `sentiment`/`forecast`, or as `inputs` (column -> value,
        trading.inputs.values_at), which also carries the spec's sentiment_columns(); a
        missing or None value reads 0, as compute_features reads a bar with no row yet.
        """
        traded = self.assets[self.spec.traded]
        if not traded.ts or traded.ts[-1] != ts:
            return None
        values: list[float] = []
        stale_bars = self.spec.stale_bars
        for i, sym in enumerate(self.spec.symbols):
            asset = self.assets[sym]
            if i and stale_bars:
                # Carried forward, as compute_features' as-of join: the newest bar within reach.
                seen, f = asset.as_of(ts)
                age = None if seen is None else (ts - seen) / self.span
                within = age is not None and age <= stale_bars
                values += [f.get(d.name, nan) if within else nan for d in asset.defs]
                values.append(staleness(age, stale_bars))
                continue
            present = bool(asset.ts) and asset.ts[-1] == ts
            f = asset.last if present else {}
            values += [f.get(d.name, nan) for d in asset.defs]
        values += list(session_times(ts, self.calendar))
        extra: dict[str, float | None] = {"sentiment": sentiment, "forecast": forecast}
        extra |= inputs or {}
        for column in self.names[len(values) :]:
            value = extra.get(column)
            values.append(0.0 if value is None else value)
        x = np.asarray(values, dtype=np.float64)
        # The batch rules: NaN -> null -> 0, then float32.
        return np.where(np.isfinite(x), x, 0.0).astype(np.float32)
