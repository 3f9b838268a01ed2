"""Real daily bars of the S&P 500 and NASDAQ indices (1999-2018), shipped inside the `arch` package."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from functools import lru_cache

import numpy as np
import polars as pl

from adapters.bundled_daily import fetch_bundled_daily
from core.bar_schema import conform_bars

# symbol -> (arch.data module, source label). These are real series, not synthetic.
_DATASETS: dict[str, tuple[str, str]] = {
    "^GSPC": ("sp500", "arch:sp500"),
    "^IXIC": ("nasdaq", "arch:nasdaq"),
}


def _check_symbol(symbol: str) -> tuple[str, str]:
    try:
        return _DATASETS[symbol]
    except KeyError:
        raise ValueError(
            f"the arch source has no symbol {symbol!r}; it knows {', '.join(_DATASETS)}"
        ) from None


@lru_cache(maxsize=8)
def load_daily(symbol: str) -> pl.DataFrame:
    """The whole daily series in the canonical bar schema, sorted by ts."""
    module, label = _check_symbol(symbol)
    pdf = importlib.import_module(f"arch.data.{module}").load()
    # Unadjusted OHLC; 'Adj Close' is not used. Daily bars start at 00:00 New York.
    df = pl.DataFrame(
        {
            "day": pdf.index.to_numpy(dtype="datetime64[us]"),
            "open": pdf["Open"].to_numpy(dtype=np.float64),
            "high": pdf["High"].to_numpy(dtype=np.float64),
            "low": pdf["Low"].to_numpy(dtype=np.float64),
            "close": pdf["Close"].to_numpy(dtype=np.float64),
            "volume": pdf["Volume"].to_numpy(dtype=np.float64),
        }
    )
    df = df.with_columns(
        pl.col("day")
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("America/New_York")
        .dt.convert_time_zone("UTC")
        .alias("ts"),
        pl.lit(symbol).alias("symbol"),
        pl.lit("1Day").alias("timeframe"),
        pl.lit(label).alias("source"),
    )
    return conform_bars(df).sort("ts")


def daily_log_returns(symbol: str = "^GSPC") -> np.ndarray:
    """Close-to-close log returns of the real series (for calibrating the generator)."""
    close = load_daily(symbol).get_column("close").to_numpy()
    return np.diff(np.log(close))


class ArchDailyBarSource:
    """BarSource over the real index series bundled with `arch` (timeframe 1Day only)."""

    name = "arch"

    def fetch_bars(
        self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime
    ) -> Iterator[pl.DataFrame]:
        return fetch_bundled_daily(
            "arch", "bars", load_daily, list(_DATASETS), symbols, timeframe, start, end
        )
