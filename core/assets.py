"""What a symbol is: its asset class and trading calendar, set at import and stored with it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, time
from functools import lru_cache
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from core.universe import EQUITY_SYMBOLS, is_coin

AssetClass = Literal["stock", "etf", "crypto", "fx"]
ASSET_CLASSES: tuple[AssetClass, ...] = get_args(AssetClass)

CALENDAR_24_7 = "24/7"
"""Around the clock, every day (crypto)."""
CALENDAR_24_5 = "24/5"
"""The FX week: open from Sunday 17:00 to Friday 17:00 New York time (not exchange-calendars'
own '24/5', which runs Monday to Friday in UTC days)."""
OWN_CALENDARS: tuple[str, ...] = (CALENDAR_24_7, CALENDAR_24_5)

DEFAULT_CALENDARS: dict[AssetClass, str] = {
    "stock": "XNYS",
    "etf": "XNYS",
    "crypto": CALENDAR_24_7,
    "fx": CALENDAR_24_5,
}

FX_ZONE = ZoneInfo("America/New_York")
FX_WEEK_OPEN = (6, time(17, 0))  # Sunday (weekday 6) 17:00 New York
FX_WEEK_CLOSE = (4, time(17, 0))  # Friday (weekday 4) 17:00 New York


class UnknownCalendarError(ValueError):
    """A calendar name that is neither 24/7, 24/5 nor an exchange-calendars name."""


class SymbolConflictError(ValueError):
    """An import asks for an asset class or calendar other than the one stored for the symbol."""


@dataclass(frozen=True)
class SymbolInfo:
    """One row of the `symbols` table: what a symbol is and where its bars came from."""

    symbol: str
    asset_class: AssetClass
    """stock | etf | crypto | fx."""
    calendar: str
    """An exchange-calendars name (XNYS, XLON, ...), '24/7' or '24/5' (the FX week)."""
    timezone: str | None = None
    """IANA zone the source's naive timestamps were read in; None when they carried an offset."""
    source: str = ""
    """Provenance of the import that last set the row (as bars.source)."""
    first_seen: datetime | None = None
    """When the symbol was first stored (None until it is)."""
    updated_at: datetime | None = None
    """When the row last changed (None until it is stored)."""


def infer_asset_class(symbol: str) -> AssetClass:
    """The asset class a symbol gets when none is given or stored.

    As the project always guessed: BASE/QUOTE pairs are crypto, everything else a stock
    (the default universe's ETFs are named as such). An FX pair such as EURUSD cannot be
    told from a ticker: it needs --asset-class fx.
    """
    if is_coin(symbol):
        return "crypto"
    return "etf" if symbol in EQUITY_SYMBOLS else "stock"


def default_calendar(asset_class: AssetClass) -> str:
    """The calendar an asset class trades on unless one is named."""
    return DEFAULT_CALENDARS[asset_class]


@lru_cache(maxsize=1)
def _exchange_calendar_names() -> dict[str, str]:
    """Upper-cased exchange-calendars name or alias -> its canonical name."""
    import exchange_calendars as xcals

    names = xcals.get_calendar_names(include_aliases=True)
    # exchange-calendars' own '24/5' (Monday-Friday UTC days) is not ours: ours win.
    return {n.upper(): xcals.resolve_alias(n) for n in names if n not in OWN_CALENDARS}


def check_calendar(name: str) -> str:
    """The canonical calendar name ('24/7', '24/5' or an exchange-calendars name such as XNYS)."""
    wanted = name.strip()
    if wanted in OWN_CALENDARS:
        return wanted
    canonical = _exchange_calendar_names().get(wanted.upper())
    if canonical is None:
        raise UnknownCalendarError(
            f"unknown calendar {name!r}: use 24/7 (crypto), 24/5 (FX: Sunday 17:00 to Friday "
            "17:00 New York) or an exchange-calendars name such as XNYS, XLON, XETR, XTKS"
        )
    return canonical


def check_asset_class(name: str) -> AssetClass:
    """`name` as an AssetClass, or a ValueError naming the choices."""
    for choice in ASSET_CLASSES:
        if name == choice:
            return choice
    raise ValueError(f"unknown asset class {name!r}: use one of {', '.join(ASSET_CLASSES)}")


def resolve_symbol_info(
    symbol: str,
    stored: SymbolInfo | None,
    *,
    asset_class: AssetClass | None = None,
    calendar: str | None = None,
    timezone: str | None = None,
    source: str = "",
    reclassify: bool = False,
) -> SymbolInfo:
    """The row an import stores for `symbol`: named options first, then what is stored, then
    the defaults (infer_asset_class, default_calendar).

    An asset class or calendar named for a symbol already stored with another one is a
    SymbolConflictError unless `reclassify`: bars imported as one kind of market must not
    silently become another.
    """
    cal = check_calendar(calendar) if calendar else None
    if stored is not None and not reclassify:
        since = f", since {stored.first_seen:%Y-%m-%d}" if stored.first_seen else ""
        asked = []
        if asset_class is not None and asset_class != stored.asset_class:
            asked.append(f"--asset-class {asset_class}")
        if cal is not None and cal != stored.calendar:
            asked.append(f"--calendar {cal}")
        if asked:
            raise SymbolConflictError(
                f"{symbol} is stored as {stored.asset_class} on calendar {stored.calendar} "
                f"(table symbols{since}); to change it to {' '.join(asked)}, import again with "
                "--reclassify as well"
            )
    klass = asset_class or (stored.asset_class if stored else None) or infer_asset_class(symbol)
    if cal is None:
        same = stored is not None and stored.asset_class == klass
        cal = stored.calendar if same and stored is not None else default_calendar(klass)
    base = stored or SymbolInfo(symbol=symbol, asset_class=klass, calendar=cal)
    return replace(base, asset_class=klass, calendar=cal, timezone=timezone, source=source)


def in_fx_week(when: datetime) -> bool:
    """Is the FX market (calendar '24/5') open at `when` (an aware datetime)?"""
    local = when.astimezone(FX_ZONE)
    day, clock = local.weekday(), local.time()
    if day == 5:  # Saturday
        return False
    if day == FX_WEEK_OPEN[0]:
        return clock >= FX_WEEK_OPEN[1]
    if day == FX_WEEK_CLOSE[0]:
        return clock < FX_WEEK_CLOSE[1]
    return True
