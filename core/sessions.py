"""Sessions per timeframe: the episode, trading day and end-of-session rule of a symbol's calendar."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import polars as pl

from core.assets import CALENDAR_24_5, CALENDAR_24_7, default_calendar, infer_asset_class

TIMEFRAME_SPANS: dict[str, timedelta] = {
    "1Min": timedelta(minutes=1),
    "5Min": timedelta(minutes=5),
    "15Min": timedelta(minutes=15),
    "30Min": timedelta(minutes=30),
    "1Hour": timedelta(hours=1),
    "1Day": timedelta(days=1),
    "1Week": timedelta(weeks=1),
}

DEFAULT_EPISODE_BARS: dict[str, int] = {
    "1Hour": 120,  # one FX week (24 x 5 hourly bars); about three NYSE weeks
    "1Day": 63,  # a quarter of trading days
    "1Week": 52,
}
"""Episode length in bars where one trading day is too short an episode; 0 (the default for
minute bars) means one trading day/session per episode."""


def timeframe_span(timeframe: str) -> timedelta:
    """How long one bar of `timeframe` lasts (a bar starting at ts closes at ts + span)."""
    span = TIMEFRAME_SPANS.get(timeframe)
    if span is None:
        raise ValueError(
            f"unknown timeframe {timeframe!r}: use one of {', '.join(TIMEFRAME_SPANS)}"
        )
    return span


def is_intraday(timeframe: str) -> bool:
    return timeframe_span(timeframe) < timedelta(days=1)


@dataclass(frozen=True)
class SessionRule:
    """How bars of one symbol and timeframe are cut into trading days and episodes, and whether
    positions go flat at the close. Built once in a flow (calendar from the symbols table) and
    passed down as a value: training, evaluation and backtest share it."""

    calendar: str = "XNYS"
    """'24/7', '24/5' (the FX week) or an exchange-calendars name."""
    timeframe: str = "1Min"
    """Bar timeframe."""
    flatten_at_close: bool = True
    """Intraday bars on an exchange calendar go flat before each session's close; ignored
    for daily and longer bars and for 24/7 and 24/5 calendars, which never force a flat."""
    episode_bars: int = 0
    """Bars per episode (counted from the first bar of the range); 0: one trading day."""
    flatten_min: float = 1.0
    """Where positions go flat at the close: decisions on bars that close this many minutes
    or less before it (and not after it)."""

    def __post_init__(self) -> None:
        timeframe_span(self.timeframe)
        if self.episode_bars < 0:
            raise ValueError("episode_bars must be 0 (one trading day) or a positive bar count")

    @property
    def has_close(self) -> bool:
        """An exchange calendar, whose sessions end at a real close (24/7 and 24/5 do not)."""
        return self.calendar not in (CALENDAR_24_7, CALENDAR_24_5)

    @property
    def flattens(self) -> bool:
        """Positions are forced flat before a session's close."""
        return (
            self.flatten_at_close
            and self.flatten_min > 0
            and self.has_close
            and is_intraday(self.timeframe)
        )


def session_rule(
    symbol: str,
    timeframe: str,
    calendar: str | None = None,
    *,
    flatten_at_close: bool = True,
    episode_bars: int | None = None,
    flatten_min: float = 1.0,
) -> SessionRule:
    """The rule of `symbol`: its stored calendar when given, else the one its asset class infers;
    episode_bars None takes the timeframe's default (DEFAULT_EPISODE_BARS)."""
    cal = calendar or default_calendar(infer_asset_class(symbol))
    bars = DEFAULT_EPISODE_BARS.get(timeframe, 0) if episode_bars is None else episode_bars
    return SessionRule(cal, timeframe, flatten_at_close, bars, flatten_min)


@lru_cache(maxsize=16)
def calendar_zone(calendar: str) -> str:
    """The IANA zone whose calendar day is the trading day ('UTC' for 24/7)."""
    if calendar == CALENDAR_24_7:
        return "UTC"
    if calendar in (CALENDAR_24_5, "XNYS"):
        return "America/New_York"
    import exchange_calendars as xcals

    return str(xcals.get_calendar(calendar).tz)


def trading_day(rule: SessionRule, ts: pl.Expr | None = None) -> pl.Expr:
    """The trading day of each bar (a Date): the calendar day in the calendar's zone; for the FX
    week (24/5) the day that starts at 17:00 New York; for daily and longer bars the bar's own date."""
    ts = pl.col("ts") if ts is None else ts
    if not is_intraday(rule.timeframe):
        return ts.dt.convert_time_zone(calendar_zone(rule.calendar)).dt.date()
    local = ts.dt.convert_time_zone(calendar_zone(rule.calendar))
    if rule.calendar == CALENDAR_24_5:
        # The FX day rolls at 17:00 New York: 17:00 Monday belongs to Tuesday.
        local = local.dt.offset_by("7h")
    return local.dt.date()


@lru_cache(maxsize=8)
def _closes(calendar: str) -> pl.DataFrame:
    import warnings

    import exchange_calendars as xcals

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        sched = xcals.get_calendar(calendar, start="1990-01-02", end="2035-12-31").schedule
    return pl.DataFrame(
        {
            "day": [d.date() for d in sched.index],
            "session_close": sched["close"]
            .dt.tz_localize(None)
            .to_numpy()
            .astype("datetime64[us]"),
        }
    ).with_columns(pl.col("session_close").dt.replace_time_zone("UTC"))


def session_closes(calendar: str) -> pl.DataFrame:
    """day (Date), session_close (UTC) of every session of an exchange calendar."""
    return _closes(calendar)


def with_forced_flat(frame: pl.DataFrame, rule: SessionRule) -> pl.DataFrame:
    """Add `session_close` (the close of each bar's own session where the rule flattens, else
    null) and `force_flat` (the bar closes within rule.flatten_min before it, not after it).

    `frame` needs ts and day (trading_day). The engine's own check (TradingEngine.decide)
    is the same inequality, so training's evaluation and the backtest flatten the same bars.
    """
    if not rule.flattens:
        return frame.with_columns(
            pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("session_close"),
            pl.lit(False).alias("force_flat"),
        )
    bar_close = pl.col("ts") + timeframe_span(rule.timeframe)
    left = (pl.col("session_close") - bar_close).dt.total_microseconds() / 1e6
    closes = session_closes(rule.calendar)
    return frame.join(closes, on="day", how="left", maintain_order="left").with_columns(
        ((left >= 0) & (left <= rule.flatten_min * 60)).fill_null(False).alias("force_flat")
    )
