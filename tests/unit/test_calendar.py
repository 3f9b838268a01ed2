"""Market calendars: NYSE sessions (holidays, half days, DST) and the 24/7 crypto day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from trading.calendar import CryptoCalendar, NYSECalendar, Session, calendar_for

NY = ZoneInfo("America/New_York")
NYSE = NYSECalendar()


def _ny(y: int, m: int, d: int, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=NY)


@pytest.mark.parametrize(
    ("open_utc", "day"),
    [
        (datetime(2024, 1, 5, 14, 30, tzinfo=UTC), date(2024, 1, 5)),  # EST: UTC-5
        (datetime(2024, 7, 1, 13, 30, tzinfo=UTC), date(2024, 7, 1)),  # EDT: UTC-4
    ],
)
def test_regular_session_opens_at_0930_new_york(open_utc: datetime, day: date) -> None:
    session = NYSE.session_at(open_utc)
    assert session is not None
    assert session.day == day
    assert session.open == open_utc
    assert session.close == open_utc + timedelta(hours=6, minutes=30)
    assert session.minutes == 390
    assert NYSE.session_at(open_utc - timedelta(seconds=1)) is None


@pytest.mark.parametrize("day", [date(2024, 1, 5), date(2024, 7, 1)])
def test_closed_at_and_after_1600_new_york(day: date) -> None:
    before = _ny(day.year, day.month, day.day, 15, 59, 59)
    assert NYSE.session_at(before) is not None
    assert NYSE.session_at(_ny(day.year, day.month, day.day, 16, 0, 0)) is None
    assert NYSE.session_at(_ny(day.year, day.month, day.day, 16, 0, 1)) is None


def test_closed_on_a_weekend() -> None:
    assert NYSE.session_at(_ny(2024, 1, 6, 12, 0)) is None  # Saturday
    assert NYSE.session_at(_ny(2024, 1, 7, 12, 0)) is None  # Sunday
    assert NYSE.session_on(date(2024, 1, 6)) is None


@pytest.mark.parametrize("day", [date(2024, 7, 4), date(2024, 12, 25)])
def test_closed_on_holidays(day: date) -> None:
    assert day.weekday() < 5  # a weekday, closed only for the holiday
    assert NYSE.session_at(_ny(day.year, day.month, day.day, 11, 0)) is None
    assert NYSE.session_on(day) is None


def test_half_day_closes_at_1300_new_york() -> None:
    session = NYSE.session_at(_ny(2024, 11, 29, 12, 59))
    assert session is not None
    assert session.close == _ny(2024, 11, 29, 13, 0)
    assert session.minutes == 210
    assert NYSE.session_at(_ny(2024, 11, 29, 13, 0, 0)) is None
    assert NYSE.session_at(_ny(2024, 11, 29, 13, 0, 1)) is None


def test_dst_switch_days() -> None:
    # Clocks sprang forward on Sunday 2024-03-10: Friday opened 14:30Z, Monday 13:30Z.
    friday = NYSE.session_on(date(2024, 3, 8))
    monday = NYSE.session_on(date(2024, 3, 11))
    assert friday is not None and friday.open == datetime(2024, 3, 8, 14, 30, tzinfo=UTC)
    assert monday is not None and monday.open == datetime(2024, 3, 11, 13, 30, tzinfo=UTC)
    assert NYSE.session_at(datetime(2024, 3, 11, 13, 30, tzinfo=UTC)) == monday
    assert NYSE.session_at(datetime(2024, 3, 11, 13, 29, tzinfo=UTC)) is None
    # And back on Sunday 2024-11-03: Monday opens 14:30Z again.
    nov = NYSE.session_on(date(2024, 11, 4))
    assert nov is not None and nov.open == datetime(2024, 11, 4, 14, 30, tzinfo=UTC)
    assert NYSE.session_at(datetime(2024, 11, 4, 13, 30, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    "friday_evening",
    [
        _ny(2024, 1, 5, 16, 0),  # the moment Friday closes
        _ny(2024, 1, 5, 20, 0),  # already Saturday 01:00 in UTC
        datetime(2024, 1, 6, 12, 0, tzinfo=UTC),  # Saturday
    ],
)
def test_next_session_from_friday_evening_is_mondays(friday_evening: datetime) -> None:
    session = NYSE.next_session(friday_evening)
    assert session.day == date(2024, 1, 8)
    assert session.open == datetime(2024, 1, 8, 14, 30, tzinfo=UTC)


def test_next_session_is_the_open_one_or_todays_before_the_open() -> None:
    during = _ny(2024, 1, 5, 11, 0)
    assert NYSE.next_session(during) == NYSE.session_at(during)
    early = NYSE.next_session(_ny(2024, 1, 5, 7, 0))
    assert early.day == date(2024, 1, 5)
    # Across a holiday: the evening before July 4th leads to July 5th.
    assert NYSE.next_session(_ny(2024, 7, 3, 18, 0)).day == date(2024, 7, 5)


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2024, 1, 5, 15, 0)
    with pytest.raises(ValueError, match="timezone"):
        NYSE.session_at(naive)
    with pytest.raises(ValueError, match="timezone"):
        NYSE.next_session(naive)
    with pytest.raises(ValueError, match="timezone"):
        CryptoCalendar().session_at(naive)


def test_sessions_between_skips_weekends_and_holidays() -> None:
    sessions = NYSE.sessions_between(date(2024, 7, 1), date(2024, 7, 8))
    assert [s.day for s in sessions] == [
        date(2024, 7, 1),
        date(2024, 7, 2),
        date(2024, 7, 3),
        date(2024, 7, 5),
    ]
    # The day before Independence Day is a half day.
    assert [s.minutes for s in sessions] == [390, 390, 210, 390]


@pytest.mark.parametrize(
    "when",
    [
        datetime(2024, 1, 6, 12, 0, tzinfo=UTC),  # a Saturday
        datetime(2024, 12, 25, 3, 0, tzinfo=UTC),  # Christmas
        datetime(2024, 3, 10, 23, 59, 59, tzinfo=UTC),
    ],
)
def test_crypto_is_always_open_and_its_session_is_the_utc_day(when: datetime) -> None:
    session = CryptoCalendar().session_at(when)
    assert session is not None
    start = datetime(when.year, when.month, when.day, tzinfo=UTC)
    assert session == Session(start.date(), start, start + timedelta(days=1))
    assert session.contains(when)
    assert CryptoCalendar().next_session(when) == session


def test_crypto_session_of_a_non_utc_time_is_its_utc_day() -> None:
    # 23:30 at UTC-5 on the 5th is 04:30 UTC on the 6th.
    when = datetime(2024, 1, 5, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    session = CryptoCalendar().session_at(when)
    assert session is not None and session.day == date(2024, 1, 6)


def test_calendar_for_picks_by_symbol() -> None:
    assert isinstance(calendar_for("BTC/USD"), CryptoCalendar)
    assert isinstance(calendar_for("SPY"), NYSECalendar)
