"""Splits and cash dividends, and what they do to the bars stored before them (pure polars).

Alpaca serves stock history adjusted for the corporate actions it knows at the time of the
request (`adjustment='all'`): prices before a split's ex-date divided by the split ratio,
volume multiplied by it; prices before a dividend's ex-date multiplied by
(close before - dividend) / close before. Bars stored before an action was known are on the
old basis; warehouse.corporate_actions brings them onto the new one, so the bars that come after the ex-date
(backfilled or streamed, raw and adjusted alike) continue the stored series instead of
jumping by the split ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

ActionKind = Literal["split", "dividend"]
_NEW_YORK = ZoneInfo("America/New_York")


@dataclass(frozen=True)
class CorporateAction:
    """One split (value: new shares per old share, 4.0 for 4-for-1, 0.1 for 1-for-10) or
    cash dividend (value: cash per share) of a stock, effective at the open of `ex_date`."""

    symbol: str
    ex_date: date
    kind: ActionKind
    value: float

    def __post_init__(self) -> None:
        if not self.value > 0:
            raise ValueError(f"{self.kind} of {self.symbol} on {self.ex_date}: value must be > 0")

    def starts(self) -> datetime:
        """The ex-date's start in UTC (midnight in New York): bars before it are adjusted."""
        d = self.ex_date
        return datetime(d.year, d.month, d.day, tzinfo=_NEW_YORK).astimezone(UTC)

    def factors(self, close_before: float | None) -> tuple[float, float]:
        """(price factor, volume factor) for bars before the ex-date; a dividend needs the
        last close before it (None: none stored, nothing to adjust)."""
        if self.kind == "split":
            return 1.0 / self.value, self.value
        if close_before is None or close_before <= self.value:
            return 1.0, 1.0
        return (close_before - self.value) / close_before, 1.0

    def describe(self) -> str:
        if self.kind == "split":
            ratio = f"{self.value:g}-for-1" if self.value >= 1 else f"1-for-{1 / self.value:g}"
            return f"{self.symbol} {ratio} split, ex-date {self.ex_date}"
        return f"{self.symbol} dividend {self.value:g} per share, ex-date {self.ex_date}"
