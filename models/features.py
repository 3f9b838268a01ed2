"""Features for the agents: pure polars functions shared by training, backtest and live, with a schema hash.

Point in time: the feature row of bar t uses bars up to and including t (known once
bar t has closed); the outcome column `ret_next` (bar t's close to bar t+1's close) is
for rewards only and is never a feature.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from core.assets import CALENDAR_24_5, CALENDAR_24_7, OWN_CALENDARS
from core.sessions import calendar_zone, timeframe_span
from core.universe import EQUITY_SYMBOLS, is_coin

FEATURE_VERSION = "1"

# The sentiment aggregates an agent may take beside its price features (FeatureSpec.sentiment_inputs):
# the mean VADER compound of the posts mentioning the traded symbol ('symbol') or of every
# post ('market'), over the last 60 minutes or 24 hours, each post counted from its
# created_utc + the sentiment lag (models.sentiment.compute_sentiment_inputs); 0 without posts.
SENTIMENT_INPUTS: tuple[str, ...] = ("symbol_60m", "symbol_24h", "market_60m", "market_24h")


def stale_column(i: int) -> str:
    """The staleness column of asset `i` (FeatureSpec.stale_bars)."""
    return f"a{i}_stale"


def staleness(age_bars: float | None, stale_bars: int) -> float:
    """How old a carried-forward bar is: age / (stale_bars + 1) within reach (below 1), 1.0 beyond it or with none."""
    if age_bars is None or age_bars > stale_bars:
        return 1.0
    return age_bars / (stale_bars + 1)


def sentiment_input_column(name: str) -> str:
    """The feature column of one sentiment input ('symbol_60m' -> 'sentiment_symbol_60m')."""
    return f"sentiment_{name}"


@dataclass(frozen=True)
class FeatureSpec:
    """Which features an agent sees; its hash is stored with every model trained on it."""

    symbols: tuple[str, ...] = EQUITY_SYMBOLS
    """Assets whose bars feed the features; the first is the one traded."""
    timeframe: str = "1Min"
    """Bar timeframe of every asset."""
    return_windows: tuple[int, ...] = (1, 5, 15, 60)
    """Log-return horizons, in bars."""
    vol_windows: tuple[int, ...] = (15, 60)
    """Realised-volatility windows, in bars."""
    volume_window: int = 60
    """Window of the volume z-score, in bars."""
    sentiment: bool = False
    """Include the traded symbol's point-in-time sentiment."""
    forecast: bool = False
    """Include the traded symbol's point-in-time forecast (its production forecaster's, models/forecaster.py)."""
    version: str = FEATURE_VERSION
    """Bumped whenever a feature's definition changes."""
    sentiment_inputs: tuple[str, ...] = ()
    """Sentiment aggregates to include, from SENTIMENT_INPUTS (kept in that order): one column each."""
    stale_bars: int = 0
    """Carry a missing bar of a non-traded asset forward for up to this many bars: its
    features keep the newest bar's values and a{i}_stale (age in bars / (stale_bars + 1),
    so below 1; exactly 1.0 when no bar is within reach, and the features then read 0)
    says how old they are.
    0: a missing bar of another asset reads 0 and there is no staleness column."""

    def __post_init__(self) -> None:
        unknown = [x for x in self.sentiment_inputs if x not in SENTIMENT_INPUTS]
        if unknown:
            raise ValueError(f"unknown sentiment inputs {unknown}; choose from {SENTIMENT_INPUTS}")
        # One canonical order: the same set of inputs is one spec, one hash, one column order.
        ordered = tuple(x for x in SENTIMENT_INPUTS if x in self.sentiment_inputs)
        object.__setattr__(self, "sentiment_inputs", ordered)
        if self.stale_bars < 0:
            raise ValueError(f"stale_bars must be >= 0, got {self.stale_bars}")

    @property
    def traded(self) -> str:
        return self.symbols[0]

    @property
    def intraday(self) -> bool:
        return self.timeframe != "1Day"

    def names(self) -> list[str]:
        cols: list[str] = []
        for i in range(len(self.symbols)):
            cols += [f"a{i}_{f.name}" for f in asset_features(self)]
            if i and self.stale_bars:
                cols.append(stale_column(i))
        cols += ["time_of_session", "time_to_close"]
        if self.sentiment:
            cols.append("sentiment")
        cols += self.sentiment_columns()
        if self.forecast:
            cols.append("forecast")
        return cols

    def sentiment_columns(self) -> list[str]:
        """The feature columns of sentiment_inputs, in order."""
        return [sentiment_input_column(x) for x in self.sentiment_inputs]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-able values; `forecast`, `sentiment_inputs` and `stale_bars` appear only when set.

        Leaving the defaults out keeps the dict, and so schema_hash(), of every spec made
        before the fields existed exactly as it was: registered models store that hash.
        """
        d = asdict(self)
        if not self.forecast:
            del d["forecast"]
        if not self.stale_bars:
            del d["stale_bars"]
        if not self.sentiment_inputs:
            del d["sentiment_inputs"]
        else:
            d["sentiment_inputs"] = list(self.sentiment_inputs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        fields: dict[str, Any] = {}
        for key, value in d.items():
            if key in cls.__dataclass_fields__:
                fields[key] = tuple(value) if isinstance(value, list) else value
        return cls(**fields)

    def schema_hash(self) -> str:
        """sha256 of the spec and its feature names: models trained on another spec refuse to load."""
        payload = json.dumps({"spec": self.to_dict(), "names": self.names()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@lru_cache(maxsize=8)
def _exchange_sessions(calendar: str) -> pl.DataFrame:
    """session (the local date), session_open, session_close (UTC) of an exchange calendar."""
    import warnings

    import exchange_calendars as xcals

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        sched = xcals.get_calendar(calendar, start="1990-01-02", end="2035-12-31").schedule
    return pl.DataFrame(
        {
            "session": [d.date() for d in sched.index],
            "session_open": sched["open"].dt.tz_localize(None).to_numpy().astype("datetime64[us]"),
            "session_close": sched["close"]
            .dt.tz_localize(None)
            .to_numpy()
            .astype("datetime64[us]"),
        }
    ).with_columns(pl.col("session_open", "session_close").dt.replace_time_zone("UTC"))


@lru_cache(maxsize=8)
def _session_minutes(calendar: str) -> float:
    """Length of an exchange calendar's regular session in minutes (390 on NYSE): the unit of
    time_of_session, so early closes end short of 1."""
    return float(
        _exchange_sessions(calendar)
        .select((pl.col("session_close") - pl.col("session_open")).dt.total_minutes().median())
        .item()
    )


@lru_cache(maxsize=8)
def _session_bounds(calendar: str) -> dict[date, tuple[datetime, datetime]]:
    """_exchange_sessions as a dict by local date: the live path's one-bar lookup."""
    frame = _exchange_sessions(calendar)
    return {
        day: (open_, close)
        for day, open_, close in frame.select(
            "session", "session_open", "session_close"
        ).iter_rows()
    }


def feature_calendar(traded: str, calendar: str | None) -> str:
    """The calendar the time-of-session features follow: the given one, else inferred from the
    traded symbol (24/7 for a coin pair, else NYSE), as before calendars were stored."""
    return calendar or (CALENDAR_24_7 if is_coin(traded) else "XNYS")


_NEW_YORK = ZoneInfo("America/New_York")


def session_times(ts: datetime, calendar: str) -> tuple[float, float]:
    """(time_of_session, time_to_close) of one intraday bar starting at `ts` (UTC), exactly as
    compute_features has them on `calendar`: the live path's one-bar version of the same
    definitions and the same session table. NaN (0 after the null rule) outside any session."""
    if calendar == CALENDAR_24_5:
        # The FX day opens at 17:00 New York: shifted by 7 hours it is a calendar day.
        fx = (ts + timedelta(hours=7)).astimezone(_NEW_YORK)
        frac = (fx.hour * 60 + fx.minute) / 1440.0
        return frac, 1.0 - frac
    if calendar == CALENDAR_24_7:
        utc = ts.astimezone(UTC)
        frac = (utc.hour * 60 + utc.minute) / 1440.0
        return frac, 1.0 - frac
    bounds = _session_bounds(calendar).get(ts.astimezone(ZoneInfo(calendar_zone(calendar))).date())
    if bounds is None:
        return float("nan"), float("nan")
    length = _session_minutes(calendar)
    # polars' total_minutes truncates toward zero; int() does the same.
    return (
        int((ts - bounds[0]).total_seconds() / 60) / length,
        int((bounds[1] - ts).total_seconds() / 60) / length,
    )


# Per-asset features and the bar columns they are computed from. Where an asset's bars hold
# none of a column (close-only series such as skfolio's adjusted closes), the feature has no
# information: compute_features' null rule makes it the constant 0.0, which the scaler keeps
# at 0 (std 0 -> 1). The column stays so the schema hash does not depend on the data.
# ---------------------------------------------------------------------------- per-asset features
#
# Each per-asset feature is defined once, here: its batch expression over an asset's bars
# (compute_features) and its value for the newest bar from the recent bars
# (trading.live_features, live), side by side with the same window and the same null rule
# (a null batch value is NaN bar by bar; both become 0.0 in the row).
# tests/unit/test_live_features.py holds the two equal over whole sessions.


class RecentBars(Protocol):
    """What a bar-by-bar value reads: an asset's newest bars (oldest first) -- log closes, log
    returns (None before the first), volumes (null read as 0) -- and the newest bar's prices."""

    @property
    def logc(self) -> Sequence[float]: ...
    @property
    def lr(self) -> Sequence[float | None]: ...
    @property
    def vol(self) -> Sequence[float]: ...
    @property
    def newest(self) -> tuple[float, float, float, float | None]:
        """high, low, close, vwap of the newest bar."""
        ...


@dataclass(frozen=True)
class AssetFeature:
    """One per-asset feature: its name, the bar columns it needs beyond the close, its batch
    expression and its value for the newest bar."""

    name: str
    inputs: tuple[str, ...]
    batch: Callable[[], pl.Expr]
    """Over one asset's bars sorted by ts: past and present bars only; null = no value."""
    step: Callable[[RecentBars], float]
    """The same value for the newest bar; NaN = no value."""


def _sample_std(values: Sequence[float | None]) -> float:
    """ddof=1 standard deviation of the non-null values (polars' rolling_std with
    min_samples=2 over the same window); NaN under 2 values."""
    xs = [v for v in values if v is not None and not math.isnan(v)]
    n = len(xs)
    if n < 2:
        return math.nan
    mean = sum(xs) / n
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))


def _ret(w: int) -> AssetFeature:
    def step(b: RecentBars) -> float:
        return b.logc[-1] - b.logc[-1 - w] if len(b.logc) > w else math.nan

    log_close = pl.col("close").log()
    return AssetFeature(f"ret_{w}", (), lambda: log_close - log_close.shift(w), step)


def _vol(w: int) -> AssetFeature:
    def step(b: RecentBars) -> float:
        return _sample_std(list(b.lr)[-w:])

    return AssetFeature(
        f"vol_{w}", (), lambda: pl.col("close").log().diff().rolling_std(w, min_samples=2), step
    )


def _volz(w: int) -> AssetFeature:
    """The newest volume's z-score over the last w volumes, clipped to [-10, 10]."""

    def batch() -> pl.Expr:
        vol = pl.col("volume").fill_null(0.0)
        mean = vol.rolling_mean(w, min_samples=2)
        std = vol.rolling_std(w, min_samples=2)
        return ((vol - mean) / pl.when(std > 0).then(std).otherwise(None)).clip(-10, 10)

    def step(b: RecentBars) -> float:
        vols = list(b.vol)[-w:]
        known = [v for v in vols if not math.isnan(v)]
        std = _sample_std(known)
        if len(known) < 2 or not std > 0:
            return math.nan
        return min(10.0, max(-10.0, (vols[-1] - sum(known) / len(known)) / std))

    return AssetFeature("volz", ("volume",), batch, step)


def _vwap_dev_step(b: RecentBars) -> float:
    _, _, close, vwap = b.newest
    return math.log(close / vwap) if vwap and vwap > 0 and close > 0 else math.nan


def _range_step(b: RecentBars) -> float:
    high, low, _, _ = b.newest
    return math.log(high / low) if low > 0 and high > 0 else math.nan


VWAP_DEV = AssetFeature(
    "vwap_dev", ("vwap",), lambda: (pl.col("close") / pl.col("vwap")).log(), _vwap_dev_step
)
RANGE = AssetFeature(
    "range", ("high", "low"), lambda: (pl.col("high") / pl.col("low")).log(), _range_step
)


def asset_features(spec: FeatureSpec) -> tuple[AssetFeature, ...]:
    """The per-asset features of `spec`, in column order."""
    return (
        *(_ret(w) for w in spec.return_windows),
        *(_vol(w) for w in spec.vol_windows),
        _volz(spec.volume_window),
        VWAP_DEV,
        RANGE,
    )


def unavailable_features(bars: pl.DataFrame, spec: FeatureSpec) -> dict[str, str]:
    """Feature name -> why it is unavailable: its asset's bars hold none of an input column.

    Such a feature is the constant 0.0 (no information), never a made-up value; callers
    say so once (train and backtest log it).
    """
    out: dict[str, str] = {}
    for i, sym in enumerate(spec.symbols):
        own = bars.filter(pl.col("symbol") == sym)
        if own.height == 0:
            continue
        for name, inputs in ((f.name, f.inputs) for f in asset_features(spec) if f.inputs):
            absent = [
                c
                for c in inputs
                if c not in own.columns or own.get_column(c).null_count() == own.height
            ]
            if absent:
                out[f"a{i}_{name}"] = f"{sym} bars have no {'/'.join(absent)}"
    return out


def unavailable_note(bars: pl.DataFrame, spec: FeatureSpec) -> str | None:
    """The one line that says which features are unavailable and why (None: all are available)."""
    unavailable = unavailable_features(bars, spec)
    if not unavailable:
        return None
    return "features unavailable, kept as constant 0: " + "; ".join(
        f"{name} ({why})" for name, why in unavailable.items()
    )


def _asset_features(bars: pl.DataFrame, i: int, spec: FeatureSpec) -> pl.DataFrame:
    """One asset's features on its own bars (sorted by ts); past and present bars only."""
    exprs = [pl.col("ts"), *(f.batch().alias(f"a{i}_{f.name}") for f in asset_features(spec))]
    return bars.sort("ts").select(exprs)


def _carry_forward(
    frame: pl.DataFrame, other: pl.DataFrame, i: int, spec: FeatureSpec
) -> pl.DataFrame:
    """Asset i's features as of each traded bar: its newest bar at or before it, within
    spec.stale_bars bars, and how old that bar is (staleness(); trading.live_features does
    the same bar by bar)."""
    span = timeframe_span(spec.timeframe)
    seen = f"a{i}_seen"
    frame = frame.sort("ts").join_asof(
        other.with_columns(pl.col("ts").alias(seen)),
        on="ts",
        strategy="backward",
        tolerance=span * spec.stale_bars,
    )
    age = (pl.col("ts") - pl.col(seen)).dt.total_microseconds() / (span.total_seconds() * 1e6)
    return frame.with_columns(
        (age / (spec.stale_bars + 1)).fill_null(1.0).alias(stale_column(i))
    ).drop(seen)


def compute_features(
    bars: pl.DataFrame,
    spec: FeatureSpec,
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
    calendar: str | None = None,
) -> pl.DataFrame:
    """Feature rows on the traded symbol's bar grid.

    Columns: ts (bar start), session (episode key), step (bar index in the session),
    ret_next (outcome, not a feature), then spec.names().

    `calendar` is the traded symbol's ('24/7', '24/5' or an exchange-calendars name, as
    core.sessions.SessionRule.calendar): the intraday time-of-session features follow it.
    None infers it from the symbol (24/7 for a coin pair, else NYSE).

    `sentiment` (ts, symbol, sentiment and/or the spec's sentiment_columns(), as
    models.sentiment.compute_sentiment_inputs builds it) and `forecasts` (ts, symbol,
    forecast) are joined as of each bar (the newest row at or before its ts, for the traded
    symbol); 0.0 where there is none yet, or when the frame is not given.
    """
    traded = bars.filter(pl.col("symbol") == spec.traded).sort("ts")
    if traded.height == 0:
        raise ValueError(f"no {spec.timeframe} bars for {spec.traded} in the requested range")
    frame = _asset_features(traded, 0, spec).join(traded.select("ts", "close"), on="ts")
    for i, sym in enumerate(spec.symbols[1:], start=1):
        other = bars.filter(pl.col("symbol") == sym)
        if other.height == 0:
            raise ValueError(f"no {spec.timeframe} bars for {sym} in the requested range")
        if spec.stale_bars:
            frame = _carry_forward(frame, _asset_features(other, i, spec), i, spec)
        else:
            # Left join on the traded grid: a missing bar of another asset reads as "no news" (0).
            frame = frame.join(_asset_features(other, i, spec), on="ts", how="left")

    # Episodes: one trading session intraday (the calendar's trading day), a month for daily
    # bars (a SessionRule recuts them). The time of session follows the traded symbol's
    # calendar: an exchange's own open and close, the FX day (17:00 to 17:00 New York), or
    # the UTC day around the clock; None infers it as before (24/7 for coins, else NYSE).
    # trading.live_features computes the same values bar by bar with session_times().
    cal = feature_calendar(spec.traded, calendar)
    if spec.intraday and cal not in OWN_CALENDARS:
        local_day = pl.col("ts").dt.convert_time_zone(calendar_zone(cal)).dt.date()
        sessions = _exchange_sessions(cal)
        length = _session_minutes(cal)
        frame = frame.with_columns(local_day.alias("session")).join(
            sessions, on="session", how="left"
        )
        frame = frame.with_columns(
            ((pl.col("ts") - pl.col("session_open")).dt.total_minutes() / length).alias(
                "time_of_session"
            ),
            ((pl.col("session_close") - pl.col("ts")).dt.total_minutes() / length).alias(
                "time_to_close"
            ),
        ).drop("session_open", "session_close")
    elif spec.intraday and cal == CALENDAR_24_5:
        # The FX day opens at 17:00 New York: shifted by 7 hours it is a calendar day.
        fx = pl.col("ts").dt.convert_time_zone("America/New_York").dt.offset_by("7h")
        frame = frame.with_columns(
            fx.dt.date().alias("session"),
            ((fx.dt.hour().cast(pl.Int32) * 60 + fx.dt.minute().cast(pl.Int32)) / 1440.0).alias(
                "time_of_session"
            ),
        ).with_columns((1.0 - pl.col("time_of_session")).alias("time_to_close"))
    elif spec.intraday:
        frame = frame.with_columns(
            pl.col("ts").dt.date().alias("session"),
            (
                # dt.hour()/minute() are Int8: widen before multiplying (02:08 would wrap to -128).
                (
                    pl.col("ts").dt.hour().cast(pl.Int32) * 60
                    + pl.col("ts").dt.minute().cast(pl.Int32)
                )
                / 1440.0
            ).alias("time_of_session"),
        ).with_columns((1.0 - pl.col("time_of_session")).alias("time_to_close"))
    else:
        frame = frame.with_columns(
            pl.col("ts")
            .dt.convert_time_zone("America/New_York")
            .dt.truncate("1mo")
            .dt.date()
            .alias("session"),
            (pl.col("ts").dt.weekday() / 7.0).alias("time_of_session"),
            pl.lit(0.0).alias("time_to_close"),
        )
    wanted = (["sentiment"] if spec.sentiment else []) + spec.sentiment_columns()
    if wanted:
        if sentiment is None:
            frame = frame.with_columns(pl.lit(0.0).alias(c) for c in wanted)
        else:
            missing = [c for c in wanted if c not in sentiment.columns]
            if missing:
                # Never read 0 for an input that was not loaded: a silent 0 is a different model.
                raise ValueError(f"the sentiment frame has no {missing} columns the spec needs")
            s = sentiment.filter(pl.col("symbol") == spec.traded).select("ts", *wanted).sort("ts")
            frame = frame.sort("ts").join_asof(s, on="ts", strategy="backward")
    if spec.forecast:
        if forecasts is None:
            frame = frame.with_columns(pl.lit(0.0).alias("forecast"))
        else:
            f = (
                forecasts.filter(pl.col("symbol") == spec.traded)
                .select("ts", "forecast")
                .sort("ts")
            )
            frame = frame.sort("ts").join_asof(f, on="ts", strategy="backward")
    frame = frame.sort("ts").with_columns(
        pl.int_range(pl.len()).over("session").alias("step"),
        # The outcome of holding from this bar's close to the next bar's close, within the session.
        (pl.col("close").shift(-1).log() - pl.col("close").log()).over("session").alias("ret_next"),
    )
    names = spec.names()
    return frame.select(
        "ts",
        "session",
        "step",
        pl.col("ret_next").fill_null(0.0),
        *(pl.col(n).fill_nan(None).fill_null(0.0).cast(pl.Float32) for n in names),
    )


@dataclass
class FeatureScaler:
    """Per-feature mean and std, fitted on training rows only, saved as JSON with the model."""

    names: list[str]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, frame: pl.DataFrame, names: list[str]) -> FeatureScaler:
        x = frame.select(names).to_numpy().astype(np.float64)
        std = x.std(axis=0)
        return cls(names, x.mean(axis=0).tolist(), np.where(std > 1e-12, std, 1.0).tolist())

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        return np.clip(z, -8.0, 8.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"names": self.names, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureScaler:
        return cls(list(d["names"]), list(d["mean"]), list(d["std"]))
