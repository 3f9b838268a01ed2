"""Scale check of an imported batch against its series' stored history: an order of magnitude off is quarantined."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from core.bar_quality import JUMP_REASONS, QUARANTINE_COLUMNS, ValidatedBars, row_hash
from core.bar_schema import BAR_COLUMNS

SCALE_REASON = "scale_mismatch"
# A median close this many times above (or below 1/this) the stored history is not a market
# move but a unit: a decimal separator read wrongly (x10,000), cents for dollars (x100).
MAX_SCALE_FACTOR = 8.0
# Only stored bars this close in time to the batch are a reference: over years a price
# can move tenfold for real.
SCALE_WINDOW = timedelta(days=31)
# The stored bars nearest in time that are compared (and as many of the batch's).
SCALE_REFERENCE_BARS = 500


@dataclass(frozen=True)
class ScaleMismatch:
    """One series of a batch whose closes are `factor` times its stored history's."""

    symbol: str
    timeframe: str
    factor: float
    batch_median: float
    stored_median: float
    stored_bars: int
    stored_from: datetime
    stored_to: datetime

    def detail(self) -> str:
        return (
            f"closes are {format_factor(self.factor)} the stored {self.symbol} {self.timeframe} "
            f"history nearest in time (median {self.batch_median:.6g} vs {self.stored_median:.6g} "
            f"over {self.stored_bars} stored bars, {self.stored_from:%Y-%m-%d %H:%M} to "
            f"{self.stored_to:%Y-%m-%d %H:%M} UTC); not stored: a wrong decimal separator "
            "(--decimal), another unit or an unadjusted split?"
        )


def format_factor(factor: float) -> str:
    """x10,000 / x1/100 / x12.3: a factor as a person reads it."""
    if factor >= 1:
        return f"x{factor:,.0f}" if factor >= 100 else f"x{factor:.3g}"
    inverse = 1.0 / factor
    return f"x1/{inverse:,.0f}" if inverse >= 100 else f"x1/{inverse:.3g}"


def compute_scale_mismatches(
    batch: pl.DataFrame,
    reference: pl.DataFrame,
    max_factor: float = MAX_SCALE_FACTOR,
    reference_bars: int = SCALE_REFERENCE_BARS,
) -> list[ScaleMismatch]:
    """Series of `batch` whose closes are beyond x`max_factor` (or 1/x) of `reference`'s.

    `batch` (symbol, timeframe, ts, close): the rows that passed validation. `reference`
    (symbol, timeframe, ts, close): the stored bars of the same series nearest in time to the
    batch (warehouse.bars.scale_references); a series without any is not checked (a first
    import). The batch side is its `len(reference)` bars nearest in time to a stored bar --
    the same timestamps where the two overlap -- and the medians of both sides are compared.
    """
    if not max_factor > 1.0:
        raise ValueError("max_factor must be above 1")
    if batch.height == 0 or reference.height == 0:
        return []
    series = ["symbol", "timeframe"]
    cols = [
        pl.col("symbol").cast(pl.String),
        pl.col("timeframe").cast(pl.String),
        pl.col("ts").cast(pl.Datetime("us", "UTC")),
        pl.col("close").cast(pl.Float64),
    ]
    ok = pl.col("close").is_finite() & (pl.col("close") > 0)
    ref = reference.select(cols).drop_nulls().filter(ok).sort("ts")
    rows = batch.select(cols).drop_nulls().filter(ok).sort("ts")
    if ref.height == 0 or rows.height == 0:
        return []
    nearest = rows.join_asof(
        ref.select(*series, pl.col("ts").alias("_ref_ts")),
        left_on="ts",
        right_on="_ref_ts",
        by=series,
        strategy="nearest",
        check_sortedness=False,  # both sorted by ts above; polars cannot check it per group
    ).filter(pl.col("_ref_ts").is_not_null())
    out: list[ScaleMismatch] = []
    for (symbol, timeframe), stored in ref.group_by(series, maintain_order=True):
        stored = stored.sort("ts").tail(reference_bars)
        mine = nearest.filter((pl.col("symbol") == symbol) & (pl.col("timeframe") == timeframe))
        if mine.height == 0:
            continue
        closest = mine.with_columns((pl.col("ts") - pl.col("_ref_ts")).abs().alias("_gap")).sort(
            "_gap", "ts"
        )
        picked = closest.head(min(stored.height, reference_bars))
        batch_median = statistics.median(picked.get_column("close").to_list())
        stored_median = statistics.median(stored.get_column("close").to_list())
        factor = batch_median / stored_median
        if factor > max_factor or factor < 1.0 / max_factor:
            out.append(
                ScaleMismatch(
                    symbol=str(symbol),
                    timeframe=str(timeframe),
                    factor=factor,
                    batch_median=batch_median,
                    stored_median=stored_median,
                    stored_bars=stored.height,
                    stored_from=stored.get_column("ts").min(),  # type: ignore[arg-type]
                    stored_to=stored.get_column("ts").max(),  # type: ignore[arg-type]
                )
            )
    return out


def check_scale(
    checked: ValidatedBars,
    reference: pl.DataFrame,
    max_factor: float = MAX_SCALE_FACTOR,
) -> ValidatedBars:
    """Move every accepted row of a series that is an order of magnitude off its stored
    history to the quarantine as `scale_mismatch` (rows held for a price jump too: the jump
    is the scale); rows quarantined for anything else keep their reason.
    """
    jumped = checked.quarantine.filter(pl.col("reason").is_in(list(JUMP_REASONS)))
    candidates = pl.concat([checked.good.select(BAR_COLUMNS), jumped.select(BAR_COLUMNS)])
    mismatches = compute_scale_mismatches(candidates, reference, max_factor)
    if not mismatches:
        return checked
    details = pl.DataFrame(
        {
            "symbol": [m.symbol for m in mismatches],
            "timeframe": [m.timeframe for m in mismatches],
            "_detail": [m.detail() for m in mismatches],
        }
    )
    series = ["symbol", "timeframe"]
    good = checked.good.join(details, on=series, how="left", maintain_order="left")
    off = good.filter(pl.col("_detail").is_not_null())
    moved = off.with_columns(
        pl.lit(None, dtype=pl.String).alias("raw"),
        pl.lit(SCALE_REASON).alias("reason"),
        pl.col("_detail").alias("detail"),
    )
    hashes = [row_hash(r) for r in moved.select(*BAR_COLUMNS, "raw").iter_rows(named=True)]
    moved = moved.with_columns(pl.Series("row_hash", hashes, dtype=pl.String))
    held = checked.quarantine.join(details, on=series, how="left", maintain_order="left")
    relabel = pl.col("_detail").is_not_null() & pl.col("reason").is_in(list(JUMP_REASONS))
    held = held.with_columns(
        pl.when(relabel).then(pl.lit(SCALE_REASON)).otherwise(pl.col("reason")).alias("reason"),
        pl.when(relabel).then(pl.col("_detail")).otherwise(pl.col("detail")).alias("detail"),
    )
    quarantine = pl.concat(
        [held.select(QUARANTINE_COLUMNS), moved.select(QUARANTINE_COLUMNS)], how="vertical_relaxed"
    ).unique(subset=["row_hash", "reason"], keep="first", maintain_order=True)
    kept = good.filter(pl.col("_detail").is_null()).select(checked.good.columns)
    return ValidatedBars(good=kept, quarantine=quarantine)
