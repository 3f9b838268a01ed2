"""Asset classes and calendars per symbol: defaults, conflicts, the FX week, the stored rows, and
the check that a series' intraday stamps sit in its calendar's sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from core.assets import (
    SymbolConflictError,
    SymbolInfo,
    UnknownCalendarError,
    check_calendar,
    in_fx_week,
    infer_asset_class,
    resolve_symbol_info,
)
from core.stamp_shift import find_stamp_shift
from warehouse.db import connect
from warehouse.symbols import load_symbols, write_symbols

NY = ZoneInfo("America/New_York")
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)


@pytest.mark.parametrize(
    ("symbol", "klass"),
    [("BTC/USD", "crypto"), ("SPY", "etf"), ("AAPL", "stock"), ("EURUSD", "stock")],
)
def test_inferred_asset_class_is_what_the_project_always_guessed(symbol: str, klass: str) -> None:
    assert infer_asset_class(symbol) == klass


def test_calendar_names() -> None:
    assert check_calendar("xnys") == "XNYS"
    assert check_calendar("NYSE") == "XNYS"  # an exchange-calendars alias
    assert check_calendar("XLON") == "XLON"
    assert check_calendar("24/5") == "24/5"
    with pytest.raises(UnknownCalendarError, match="unknown calendar 'NASDAQQ'"):
        check_calendar("NASDAQQ")


def test_resolution_order_options_then_stored_then_defaults() -> None:
    assert resolve_symbol_info("EURUSD", None, asset_class="fx").calendar == "24/5"
    assert resolve_symbol_info("BTC/USD", None).calendar == "24/7"
    assert resolve_symbol_info("VOD", None, calendar="xlon").calendar == "XLON"
    stored = SymbolInfo("EURUSD", "fx", "24/5", "Etc/GMT", "file:a.csv")
    again = resolve_symbol_info("EURUSD", stored, timezone="Etc/GMT", source="file:b.csv")
    assert (again.asset_class, again.calendar, again.source) == ("fx", "24/5", "file:b.csv")
    # Naming what is stored is no conflict.
    assert resolve_symbol_info("EURUSD", stored, asset_class="fx", calendar="24/5") == (
        again.__class__("EURUSD", "fx", "24/5", None, "")
    )


def test_a_different_class_or_calendar_for_a_stored_symbol_needs_reclassify() -> None:
    stored = SymbolInfo("EURUSD", "fx", "24/5", first_seen=datetime(2025, 3, 1, tzinfo=UTC))
    with pytest.raises(SymbolConflictError) as caught:
        resolve_symbol_info("EURUSD", stored, asset_class="stock")
    assert str(caught.value) == (
        "EURUSD is stored as fx on calendar 24/5 (table symbols, since 2025-03-01); to change "
        "it to --asset-class stock, import again with --reclassify as well"
    )
    with pytest.raises(SymbolConflictError, match="to change it to --calendar XLON"):
        resolve_symbol_info("EURUSD", stored, calendar="XLON")
    changed = resolve_symbol_info("EURUSD", stored, asset_class="stock", reclassify=True)
    assert (changed.asset_class, changed.calendar, changed.first_seen) == (
        "stock",
        "XNYS",
        stored.first_seen,
    )


@pytest.mark.parametrize(
    ("local", "open_"),
    [
        (datetime(2024, 1, 7, 16, 59), False),  # Sunday before 17:00 New York
        (datetime(2024, 1, 7, 17, 0), True),
        (datetime(2024, 1, 10, 3, 0), True),
        (datetime(2024, 1, 12, 16, 59), True),  # Friday
        (datetime(2024, 1, 12, 17, 0), False),
        (datetime(2024, 1, 13, 12, 0), False),  # Saturday
        (datetime(2024, 7, 12, 16, 59), True),  # summer time: still 17:00 New York
        (datetime(2024, 7, 12, 17, 0), False),
    ],
)
def test_the_fx_week_runs_sunday_to_friday_17_00_new_york(local: datetime, open_: bool) -> None:
    assert in_fx_week(local.replace(tzinfo=NY)) is open_


def _nyse_minutes(shift: timedelta = timedelta(0), minutes: int = 390) -> pl.Series:
    days = [datetime(2024, 1, d, 9, 30, tzinfo=NY) for d in (2, 3, 4, 5, 8)]
    return pl.Series([d.astimezone(UTC) + shift + i * MINUTE for d in days for i in range(minutes)])


def _fx_hours(shift: timedelta = timedelta(0)) -> pl.Series:
    start = datetime(2024, 1, 7, 22, tzinfo=UTC)  # 17:00 New York
    return pl.Series(
        [start + shift + timedelta(days=7 * w) + i * HOUR for w in (0, 1) for i in range(120)]
    )


def test_stamps_hours_off_the_sessions_are_found_with_the_zone_to_pass() -> None:
    late = find_stamp_shift(_nyse_minutes(5 * HOUR), "XNYS", MINUTE, "America/New_York")
    assert late is not None and (late.hours, late.outside_shifted) == (-5, 0.0)
    assert late.suggested_tz == "Etc/GMT"
    # Written in Berlin time (UTC+1 in January), read as New York: 6 hours late.
    berlin = find_stamp_shift(_nyse_minutes(6 * HOUR), "XNYS", MINUTE, "America/New_York")
    assert berlin is not None and (berlin.hours, berlin.suggested_tz) == (-6, "Etc/GMT-1")
    early = find_stamp_shift(_nyse_minutes(-3 * HOUR), "XNYS", MINUTE, None)
    assert early is not None and early.hours == 3
    assert "look 3 hours early" in early.message("X") and "check its export" in early.message("X")
    fx = find_stamp_shift(_fx_hours(5 * HOUR), "24/5", HOUR, "America/New_York")
    assert fx is not None and (fx.hours, fx.suggested_tz) == (-5, "Etc/GMT")


@pytest.mark.parametrize(
    ("stamps", "calendar", "step"),
    [
        (_nyse_minutes(), "XNYS", MINUTE),  # right
        (_nyse_minutes(-5 * HOUR - 30 * MINUTE, minutes=960), "XNYS", MINUTE),  # 04:00-20:00
        (_nyse_minutes(-30 * MINUTE, minutes=7 * 60)[::60], "XNYS", HOUR),  # hourly at 09:00
        (_nyse_minutes(30 * MINUTE, minutes=7 * 60)[::60], "XNYS", HOUR),  # hourly at bar end
        (_fx_hours(), "24/5", HOUR),
        (_fx_hours(5 * HOUR), "24/7", HOUR),  # open around the clock: nothing to check
        (_nyse_minutes(5 * HOUR), "XNYS", timedelta(days=1)),  # daily stamps are dates
    ],
)
def test_right_or_unknowable_stamps_raise_no_warning(
    stamps: pl.Series, calendar: str, step: timedelta
) -> None:
    assert find_stamp_shift(stamps, calendar, step, "America/New_York") is None


def test_symbols_rows_are_upserted_idempotently(warehouse_path: Path) -> None:
    t0, t1 = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    info = SymbolInfo("EURUSD", "fx", "24/5", "Etc/GMT", "file:a.csv")
    with connect(warehouse_path) as con:
        assert write_symbols(con, [info], t0) == {"EURUSD": "new"}
        assert write_symbols(con, [info], t1) == {"EURUSD": "unchanged"}
        assert load_symbols(con)["EURUSD"].updated_at == t0
        moved = SymbolInfo("EURUSD", "fx", "24/5", "Europe/London", "file:b.csv")
        assert write_symbols(con, [moved], t1) == {"EURUSD": "updated"}
        row = load_symbols(con, ["EURUSD"])["EURUSD"]
    assert (row.timezone, row.source, row.first_seen, row.updated_at) == (
        "Europe/London",
        "file:b.csv",
        t0,
        t1,
    )
