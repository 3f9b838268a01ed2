"""Real adjusted daily closes of the S&P 500 index (1990-2022) and five factor ETFs (2014-2022), vendored from skfolio."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

import polars as pl

from adapters.bundled_daily import fetch_bundled_daily
from core.bar_schema import conform_bars

DATA_DIR = Path(__file__).parent / "datasets" / "skfolio"
"""The two vendored skfolio 1.12.2 files, their license and a README naming the source."""

SkfolioFile = Literal["sp500_index", "factors"]

# symbol -> (vendored file, column in it, asset class). Closes only: skfolio ships no
# open, high, low or volume, and none is invented here.
_DATASETS: dict[str, tuple[SkfolioFile, str, Literal["stock", "etf"]]] = {
    # 'SPX', not '^GSPC': the arch source stores ^GSPC's unadjusted OHLC (1999-2018). An index
    # is no fund: it is stored as the equity class the symbols table knows, 'stock'.
    "SPX": ("sp500_index", "SP500", "stock"),
    "MTUM": ("factors", "MTUM", "etf"),
    "QUAL": ("factors", "QUAL", "etf"),
    "SIZE": ("factors", "SIZE", "etf"),
    "USMV": ("factors", "USMV", "etf"),
    "VLUE": ("factors", "VLUE", "etf"),
}
_FILES: dict[SkfolioFile, str] = {
    "sp500_index": "sp500_index.csv.gz",
    "factors": "factors_dataset.csv.gz",
}


def _check_symbol(symbol: str) -> tuple[SkfolioFile, str, Literal["stock", "etf"]]:
    try:
        return _DATASETS[symbol]
    except KeyError:
        raise ValueError(
            f"the skfolio source has no symbol {symbol!r}; it knows {', '.join(_DATASETS)}"
        ) from None


def asset_class(symbol: str) -> Literal["stock", "etf"]:
    """What the symbol is, for the symbols table: SPX an equity index ('stock'), the rest ETFs."""
    return _check_symbol(symbol)[2]


@lru_cache(maxsize=2)
def read_file(name: SkfolioFile) -> pl.DataFrame:
    """One vendored file as read: a Date column (pl.Date) and one Float64 column per series."""
    with gzip.open(DATA_DIR / _FILES[name], "rb") as fh:
        raw = fh.read()
    df = pl.read_csv(raw, try_parse_dates=False)
    return df.with_columns(
        pl.col("Date").str.to_date("%Y-%m-%d"),
        pl.exclude("Date").cast(pl.Float64),
    ).sort("Date")


@lru_cache(maxsize=8)
def load_daily(symbol: str) -> pl.DataFrame:
    """The whole daily series in the canonical bar schema, sorted by ts: close only."""
    name, column, _ = _check_symbol(symbol)
    day = read_file(name).select("Date", pl.col(column).alias("close"))
    df = day.with_columns(
        # Daily bars start at 00:00 New York (as the arch source and Alpaca stamp them).
        pl.col("Date")
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("America/New_York")
        .dt.convert_time_zone("UTC")
        .alias("ts"),
        pl.lit(symbol).alias("symbol"),
        pl.lit("1Day").alias("timeframe"),
        pl.lit(f"skfolio:{name}").alias("source"),
    )
    # conform_bars adds open/high/low/volume/trade_count/vwap as nulls: a close-only bar.
    return conform_bars(
        df.with_columns(
            pl.lit(None, dtype=pl.Float64).alias("open"),
            pl.lit(None, dtype=pl.Float64).alias("high"),
            pl.lit(None, dtype=pl.Float64).alias("low"),
        )
    ).sort("ts")


class SkfolioDailyBarSource:
    """BarSource over skfolio's real adjusted closes (timeframe 1Day only, close-only bars)."""

    name = "skfolio"

    def fetch_bars(
        self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime
    ) -> Iterator[pl.DataFrame]:
        return fetch_bundled_daily(
            "skfolio", "closes", load_daily, list(_DATASETS), symbols, timeframe, start, end
        )
