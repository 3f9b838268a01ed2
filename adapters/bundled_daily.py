"""The one fetch rule of daily series shipped inside the project or a package (arch, skfolio)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

import polars as pl


def fetch_bundled_daily(
    source: str,
    what: str,
    load: Callable[[str], pl.DataFrame],
    known: Sequence[str],
    symbols: Sequence[str],
    timeframe: str,
    start: datetime,
    end: datetime,
) -> Iterator[pl.DataFrame]:
    """Each symbol's stored series (every known one if none is named) cut to [start, end).

    `what` names what the source holds in the error for another timeframe ('bars', 'closes').
    """
    # "" asks for the source's native timeframe (the ingest task passes it for file-like sources).
    if timeframe not in ("1Day", ""):
        raise ValueError(f"the {source} source only has daily {what} (1Day), not {timeframe!r}")
    for symbol in symbols or list(known):
        yield load(symbol).filter((pl.col("ts") >= start) & (pl.col("ts") < end))
