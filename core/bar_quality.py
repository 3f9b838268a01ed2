"""Bar validation: split a batch into good rows and quarantined rows, each with a reason."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from adapters.schema import BAR_COLUMNS, BAR_KEY, PRICE_COLUMNS, TIMEFRAMES, conform_bars

# Reasons in priority order: a row is quarantined under the first one it fails.
REASONS: dict[str, str] = {
    "missing_key": "symbol, timeframe or timestamp is missing or unparsable",
    "bad_timeframe": f"timeframe is not one of {', '.join(TIMEFRAMES)}",
    "nan_price": "a price is missing, NaN or infinite",
    "non_positive_price": "a price is zero or negative",
    "high_below_low": "high is below low",
    "ohlc_outside_range": "open or close lies outside [low, high]",
    "bad_volume": "volume is negative, NaN or infinite",
    "future_timestamp": "bar starts after the ingest time",
    "duplicate_key": "another row in the batch has the same (symbol, timeframe, ts); the last one was kept",
    "out_of_order": "timestamp is earlier than one already delivered for this series in the batch",
}

QUARANTINE_COLUMNS: tuple[str, ...] = ("row_hash", "reason", "detail", *BAR_COLUMNS, "raw")


@dataclass(frozen=True)
class ValidatedBars:
    """Rows safe to upsert (keys unique) and rows to quarantine (with reason and row_hash)."""

    good: pl.DataFrame
    quarantine: pl.DataFrame


def _bad(col: str) -> pl.Expr:
    c = pl.col(col)
    return c.is_null() | c.is_nan() | c.is_infinite()


def _row_hash(row: dict[str, object]) -> str:
    # A stable content hash (unlike polars' hash_rows, which may change between versions),
    # so re-running an ingest maps a bad row onto the quarantine row it made last time.
    text = json.dumps(row, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def validate_bars(df: pl.DataFrame, now: datetime) -> ValidatedBars:
    """Apply the data-quality rules to one batch, in delivery order.

    `now` is the ingest time: bars starting after it are rejected. Rules that need
    context (duplicates, ordering) look within (symbol, timeframe) series only.
    """
    bars = conform_bars(df)
    if "raw" not in bars.columns:
        bars = bars.with_columns(pl.lit(None, dtype=pl.String).alias("raw"))
    bars = bars.with_row_index("_i")

    o, h, lo, c = (pl.col(x) for x in PRICE_COLUMNS)
    static_rules: list[tuple[str, pl.Expr]] = [
        ("missing_key", pl.any_horizontal(*(pl.col(k).is_null() for k in BAR_KEY))),
        ("bad_timeframe", ~pl.col("timeframe").is_in(list(TIMEFRAMES))),
        ("nan_price", pl.any_horizontal(*(_bad(x) for x in PRICE_COLUMNS))),
        ("non_positive_price", pl.any_horizontal(*(pl.col(x) <= 0 for x in PRICE_COLUMNS))),
        ("high_below_low", h < lo),
        ("ohlc_outside_range", (o > h) | (o < lo) | (c > h) | (c < lo)),
        ("bad_volume", pl.col("volume").is_not_null() & (_bad("volume") | (pl.col("volume") < 0))),
        ("future_timestamp", pl.col("ts") > pl.lit(now).cast(pl.Datetime("us", "UTC"))),
    ]
    reason = pl.lit(None, dtype=pl.String)
    for name, cond in reversed(static_rules):
        reason = pl.when(cond.fill_null(False)).then(pl.lit(name)).otherwise(reason)
    bars = bars.with_columns(reason.alias("reason"))

    # Context rules on the rows that passed the static ones, in delivery order.
    passed = bars.filter(pl.col("reason").is_null())
    series = ["symbol", "timeframe"]
    passed = passed.with_columns(
        pl.struct(list(BAR_KEY)).is_last_distinct().alias("_last"),
    )
    dup_ids = passed.filter(~pl.col("_last")).get_column("_i")
    kept = passed.filter(pl.col("_last")).with_columns(
        pl.col("ts").cum_max().shift(1).over(series).alias("_prev_max")
    )
    ooo_ids = kept.filter(pl.col("ts") < pl.col("_prev_max")).get_column("_i")
    bars = bars.with_columns(
        pl.when(pl.col("_i").is_in(dup_ids.implode()))
        .then(pl.lit("duplicate_key"))
        .when(pl.col("_i").is_in(ooo_ids.implode()))
        .then(pl.lit("out_of_order"))
        .otherwise(pl.col("reason"))
        .alias("reason")
    )

    good = bars.filter(pl.col("reason").is_null()).select(BAR_COLUMNS)
    bad = bars.filter(pl.col("reason").is_not_null())
    if bad.height:
        hashes = [_row_hash(r) for r in bad.select(*BAR_COLUMNS, "raw").iter_rows(named=True)]
        bad = bad.with_columns(
            pl.Series("row_hash", hashes, dtype=pl.String),
            pl.col("reason").replace_strict(REASONS, return_dtype=pl.String).alias("detail"),
        )
    else:
        bad = bad.with_columns(
            pl.lit(None, dtype=pl.String).alias("row_hash"),
            pl.lit(None, dtype=pl.String).alias("detail"),
        )
    quarantine = bad.select(QUARANTINE_COLUMNS).unique(
        subset=["row_hash", "reason"], keep="first", maintain_order=True
    )
    return ValidatedBars(good=good, quarantine=quarantine)
