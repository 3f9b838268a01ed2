"""When markets trade: the NYSE calendar (holidays, half days, DST) and the 24/7 crypto market."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

import pandas as pd

from core.universe import is_coin


@dataclass(frozen=True)
class Session:
    """One trading session: bars start in [open, close), both UTC."""

    day: date
    open: datetime
    close: datetime

    def contains(self, when: datetime) -> bool:
        return self.open <= when < self.close

    @property
    def minutes(self) -> int:
        return int((self.close - self.open).total_seconds() // 60)


class MarketCalendar(Protocol):
    name: str

    def session_at(self, when: datetime) -> Session | None:
        """The session open at `when` (UTC), or None while the market is closed."""
        ...

    def next_session(self, when: datetime) -> Session:
        """The session open at `when`, else the next one to open."""
        ...


_NY = ZoneInfo("America/New_York")


@lru_cache(maxsize=1)
def _xnys() -> pd.DataFrame:
    import exchange_calendars as xcals

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        schedule: pd.DataFrame = xcals.get_calendar(
            "XNYS", start="1990-01-02", end="2035-12-31"
        ).schedule
    return schedule


@lru_cache(maxsize=65536)
def _nyse_session(day: date) -> Session | None:
    """One day's row of the schedule (pandas' .loc costs ~0.5 ms; backtests ask per day)."""
    schedule = _xnys()
    key = pd.Timestamp(day)
    if key not in schedule.index:
        return None
    row = schedule.loc[key]
    return Session(day, row["open"].to_pydatetime(), row["close"].to_pydatetime())


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError(f"{when!r} has no timezone; pass UTC times")
    return when.astimezone(UTC)


class NYSECalendar:
    """Regular NYSE sessions from exchange_calendars: holidays closed, half days close at 13:00 ET."""

    name = "XNYS"

    def _row(self, day: date) -> Session | None:
        return _nyse_session(day)

    def session_on(self, day: date) -> Session | None:
        """The session of a New York calendar day (None on weekends and holidays)."""
        return self._row(day)

    def session_at(self, when: datetime) -> Session | None:
        when = _utc(when)
        day = when.astimezone(_NY).date()
        session = self._row(day)
        return session if session is not None and session.contains(when) else None

    def next_session(self, when: datetime) -> Session:
        when = _utc(when)
        day = when.astimezone(_NY).date()
        for offset in range(0, 15):
            session = self._row(day + timedelta(days=offset))
            if session is not None and when < session.close:
                return session
        raise ValueError(f"no NYSE session within two weeks after {when}")

    def sessions_between(self, start: date, end: date) -> list[Session]:
        """Sessions of the New York days in [start, end)."""
        schedule = _xnys()
        rows = schedule.loc[
            (schedule.index >= pd.Timestamp(start)) & (schedule.index < pd.Timestamp(end))
        ]
        return [
            Session(
                pd.Timestamp(str(idx)).date(), r["open"].to_pydatetime(), r["close"].to_pydatetime()
            )
            for idx, r in rows.iterrows()
        ]


class CryptoCalendar:
    """Crypto trades around the clock; a 'session' is one UTC day (the agents' episode)."""

    name = "24/7"

    def session_at(self, when: datetime) -> Session | None:
        when = _utc(when)
        start = datetime(when.year, when.month, when.day, tzinfo=UTC)
        return Session(start.date(), start, start + timedelta(days=1))

    def next_session(self, when: datetime) -> Session:
        session = self.session_at(when)
        assert session is not None
        return session


def calendar_for(symbol: str, calendar: str | None = None) -> NYSECalendar | CryptoCalendar:
    """The live calendar of `symbol`: its stored calendar name when given (symbols table),
    else the one inferred from the name. Live trading knows XNYS and 24/7 only."""
    if calendar is None:
        return CryptoCalendar() if is_coin(symbol) else NYSECalendar()
    if calendar == CryptoCalendar.name:
        return CryptoCalendar()
    if calendar == NYSECalendar.name:
        return NYSECalendar()
    raise ValueError(
        f"{symbol} trades on calendar {calendar}; live trading supports XNYS and 24/7 only"
    )
