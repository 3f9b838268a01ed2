"""Do a series' intraday timestamps sit in its calendar's sessions, or a whole number of hours off?"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import polars as pl

from core.assets import CALENDAR_24_5, CALENDAR_24_7, FX_WEEK_CLOSE, FX_WEEK_OPEN, FX_ZONE

SHIFTS = range(-12, 13)
"""Whole hours tried either way: a file read in the wrong zone is off by the difference of two
UTC offsets, within 12 hours for the usual mix-ups (UTC, Europe, Asia vs New York)."""
SAMPLE = 5000
"""Bars checked per series, evenly spaced: enough to see a pattern, cheap on millions."""
MIN_OUTSIDE_BARS = 3
MIN_OUTSIDE_SHARE = 0.02
"""A series is suspect only when this many bars (and this share) lie outside the sessions..."""
MAX_SHIFTED_SHARE = 0.1
IMPROVEMENT = 4.0
"""...and a whole-hour shift leaves at most 10% outside, a quarter of the share unshifted."""


@dataclass(frozen=True)
class StampShift:
    """A series whose bars fit the calendar far better `hours` later (negative: earlier)."""

    calendar: str
    hours: int
    outside: float
    """Share of the bars outside the sessions as stored."""
    outside_shifted: float
    """Share outside once moved by `hours`."""
    read_as: str | None
    """The zone the naive timestamps were read in; None when they carried an offset."""
    suggested_tz: str | None
    """An Etc/GMT zone that would have put the bars inside the sessions."""

    def message(self, symbol: str) -> str:
        """One line for the log and the summary, saying what to pass."""
        n = abs(self.hours)
        late = "late" if self.hours < 0 else "early"
        move = "earlier" if self.hours < 0 else "later"
        text = (
            f"{symbol}: timestamps look {n} hour{'s' if n != 1 else ''} {late} against the "
            f"{self.calendar} sessions ({self.outside:.0%} of bars outside them, "
            f"{self.outside_shifted:.0%} when moved {n} h {move})"
        )
        if self.read_as is None:
            return text + "; the file's timestamps carry their own offset: check its export"
        return (
            f"{text}; they were read as {self.read_as} time: import again with "
            f"--tz {self.suggested_tz} (or the zone the file was written in)"
        )


def suggest_zone(read_as: str, hours: int, around: datetime) -> str:
    """The Etc/GMT zone whose naive times are `hours` off those of `read_as` (as of `around`)."""
    offset = ZoneInfo(read_as).utcoffset(around.replace(tzinfo=None)) or timedelta(0)
    # Stored as naive - offset(read_as); they belong at that + hours = naive - (offset - hours).
    east = round(offset / timedelta(hours=1)) - hours
    # Etc/GMT names count the other way round: Etc/GMT-2 is UTC+2.
    return "Etc/GMT" if east == 0 else f"Etc/GMT{-east:+d}"


def regular_sessions(calendar: str, first: date, last: date) -> pl.DataFrame:
    """Regular sessions (open, close in UTC, in time order) of an exchange calendar over
    [first, last]; none for a span without a session."""
    return _sessions(calendar, first, last)


@lru_cache(maxsize=16)
def _sessions(calendar: str, first: date, last: date) -> pl.DataFrame:
    """Regular sessions (open, close in UTC) of an exchange calendar over [first, last]."""
    import exchange_calendars as xcals

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            cal = xcals.get_calendar(calendar, start=str(first), end=str(last))
    except xcals.errors.CalendarError:  # no session in the span, or outside the calendar's bounds
        return pl.DataFrame(
            schema={"open": pl.Datetime("us", "UTC"), "close": pl.Datetime("us", "UTC")}
        )
    sched = cal.schedule[["open", "close"]].reset_index(drop=True)
    return pl.from_pandas(sched).select(
        pl.col("open").cast(pl.Datetime("us", "UTC")),
        pl.col("close").cast(pl.Datetime("us", "UTC")),
    )


def _inside(ts: pl.Series, calendar: str, sessions: pl.DataFrame | None) -> pl.Series:
    """Whether each instant (UTC) lies in a session of the calendar."""
    if calendar == CALENDAR_24_5:
        local = ts.dt.convert_time_zone(str(FX_ZONE))
        day = local.dt.weekday() - 1  # polars: Monday = 1; Python: Monday = 0
        clock = local.dt.time()
        frame = pl.DataFrame({"day": day, "clock": clock})
        return frame.select(
            pl.when(pl.col("day") == 5)
            .then(False)
            .when(pl.col("day") == FX_WEEK_OPEN[0])
            .then(pl.col("clock") >= FX_WEEK_OPEN[1])
            .when(pl.col("day") == FX_WEEK_CLOSE[0])
            .then(pl.col("clock") < FX_WEEK_CLOSE[1])
            .otherwise(True)
        ).to_series()
    assert sessions is not None
    left = pl.DataFrame({"ts": ts}).with_row_index("i").sort("ts")
    joined = left.join_asof(sessions, left_on="ts", right_on="open", strategy="backward")
    inside = joined.select(
        "i", (pl.col("close").is_not_null() & (pl.col("ts") < pl.col("close"))).alias("in")
    )
    return inside.sort("i").get_column("in")


def find_stamp_shift(
    ts: pl.Series, calendar: str, step: timedelta, read_as: str | None = None
) -> StampShift | None:
    """A whole-hour shift that moves a suspect share of intraday bars into the sessions.

    `ts`: the bars' start times (UTC); `step`: the bar length. A bar counts as inside when it
    starts or ends in a session, and shifts of one bar or less are not tried, so vendors
    that stamp hourly bars at 09:00 or at their close are not suspects. Calendars open around the clock have nothing to check, nor do
    daily and longer bars (their stamps are dates). `read_as`: the zone naive timestamps
    were read in (None when they carried an offset), for the suggested --tz.
    """
    if calendar == CALENDAR_24_7 or step >= timedelta(days=1):
        return None
    stamps = ts.drop_nulls().cast(pl.Datetime("us", "UTC"))
    if stamps.len() < MIN_OUTSIDE_BARS:
        return None
    if stamps.len() > SAMPLE:
        stamps = stamps.gather_every(stamps.len() // SAMPLE)
    sessions = None
    if calendar != CALENDAR_24_5:
        lo, hi = stamps.min(), stamps.max()
        assert isinstance(lo, datetime) and isinstance(hi, datetime)
        sessions = _sessions(
            calendar, (lo - timedelta(days=3)).date(), (hi + timedelta(days=3)).date()
        )
        if sessions.height == 0:
            return None
    end = step - timedelta(microseconds=1)
    outside: dict[int, float] = {}
    for h in SHIFTS:
        moved = stamps + timedelta(hours=h)
        inside = _inside(moved, calendar, sessions) | _inside(moved + end, calendar, sessions)
        outside[h] = 1.0 - int(inside.sum()) / inside.len()
    # A shift of one bar or less may be the stamping convention (bar start vs bar end), not
    # a time zone: hourly bars stamped at their close sit one hour "late".
    candidates = [h for h in SHIFTS if h == 0 or abs(h) * timedelta(hours=1) > step]
    best = min(candidates, key=lambda h: (outside[h], abs(h)))
    now, then = outside[0], outside[best]
    suspect = now >= MIN_OUTSIDE_SHARE and now * stamps.len() >= MIN_OUTSIDE_BARS
    if best == 0 or not suspect or then > MAX_SHIFTED_SHARE or then * IMPROVEMENT > now:
        return None
    middle = stamps.sort().gather([stamps.len() // 2]).item()
    zone = suggest_zone(read_as, best, middle) if read_as else None
    return StampShift(calendar, best, now, then, read_as, zone)
