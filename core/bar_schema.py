"""The canonical bar frame every BarSource yields and the warehouse stores (a domain type, so it lives in core)."""

from __future__ import annotations

import polars as pl

# Bars are stamped with their START time (Alpaca's convention), in UTC.
# Daily bars start at midnight America/New_York, also as Alpaca stamps them.
BAR_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "timeframe": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "trade_count": pl.Int64(),
    "vwap": pl.Float64(),
    "source": pl.String(),
}
BAR_COLUMNS: tuple[str, ...] = tuple(BAR_SCHEMA)
BAR_KEY: tuple[str, ...] = ("symbol", "timeframe", "ts")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

# Timeframes we accept, named as Alpaca names them.
TIMEFRAMES: tuple[str, ...] = ("1Min", "5Min", "15Min", "30Min", "1Hour", "1Day")

# Provenance labels. Anything generated carries SYNTHETIC so it can never pass for real data.
SYNTHETIC = "synthetic"


def empty_bars() -> pl.DataFrame:
    """A zero-row frame with the canonical bar schema."""
    return pl.DataFrame(schema=BAR_SCHEMA)


def conform_bars(df: pl.DataFrame) -> pl.DataFrame:
    """Select and cast to the canonical schema, in canonical column order.

    Missing optional columns (volume, trade_count, vwap) become nulls; a missing required
    column raises ValueError naming it.
    """
    optional = {"volume", "trade_count", "vwap"}
    missing = [c for c in BAR_COLUMNS if c not in df.columns and c not in optional]
    if missing:
        raise ValueError(f"bar frame lacks required column(s): {', '.join(missing)}")
    exprs = []
    for name, dtype in BAR_SCHEMA.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype, strict=False).alias(name))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    extra = [pl.col("raw")] if "raw" in df.columns else []
    return df.select(exprs + extra)
