"""Bar validation: split a batch into good rows and quarantined rows, each with a reason."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import polars as pl

from core.bar_schema import BAR_COLUMNS, BAR_KEY, PRICE_COLUMNS, TIMEFRAMES, conform_bars
from core.universe import is_coin

# Reasons in priority order: a row is quarantined under the first one it fails.
REASONS: dict[str, str] = {
    "missing_key": "symbol, timeframe or timestamp is missing or unparsable",
    "bad_timeframe": f"timeframe is not one of {', '.join(TIMEFRAMES)}",
    "nan_price": "a price is missing, NaN or infinite",
    "partial_ohlc": "some but not all of open, high and low are missing (a bar is either full "
    "OHLC or close-only)",
    "non_positive_price": "a price is zero or negative",
    "high_below_low": "high is below low",
    "ohlc_outside_range": "open or close lies outside [low, high]",
    "bad_volume": "volume is negative, NaN or infinite",
    "future_timestamp": "bar starts after the ingest time",
    "duplicate_key": "another row in the batch has the same (symbol, timeframe, ts); the last one was kept",
    "out_of_order": "timestamp is earlier than one already delivered for this series in the batch",
    "suspected_split": "close jumped by a stock-split ratio vs the previous accepted close",
    "price_jump": "close jumped beyond the asset class's limit vs the previous accepted close",
    "outside_regular_hours": "an intraday bar of an exchange-traded symbol outside its regular "
    "session (pre- or post-market); ingest with regular_hours_only: false to keep it",
    "scale_mismatch": "an imported series' closes are an order of magnitude off the stored "
    "history nearest in time (core.bar_scale)",
}
JUMP_REASONS: tuple[str, ...] = ("suspected_split", "price_jump")

QUARANTINE_COLUMNS: tuple[str, ...] = ("row_hash", "reason", "detail", *BAR_COLUMNS, "raw")

# Split ratios checked (price after / price before): 2:1 ... 100:1 splits and their reverses.
_FORWARD = (2.0, 3.0, 4.0, 5.0, 8.0, 10.0, 20.0, 50.0, 100.0)
SPLIT_RATIOS: tuple[float, ...] = tuple(1.0 / k for k in _FORWARD) + _FORWARD


@dataclass(frozen=True)
class JumpRule:
    """How far one bar's close may move from the previous accepted close of its series.

    A ratio close/previous within `split_tolerance` (relative) of a split ratio is quarantined
    as `suspected_split`; any other ratio above `max_factor` or below 1/max_factor as
    `price_jump`. Bars after a quarantined jump are compared with the last ACCEPTED close,
    so a series that split stays quarantined at its new level until warehouse.bars.apply_split
    back-adjusts the stored history and releases them: the stored series never holds a
    10:1 split as a -90% bar.
    """

    max_factor: float
    split_ratios: tuple[float, ...] = ()
    split_tolerance: float = 0.05

    def __post_init__(self) -> None:
        if not self.max_factor > 1.0:
            raise ValueError("max_factor must be above 1")
        if not 0.0 <= self.split_tolerance < 0.25:
            raise ValueError("split_tolerance is a small fraction in [0, 0.25)")

    def classify(self, ratio: float) -> tuple[str, str] | None:
        """(reason, what the ratio looks like) for a suspicious ratio, else None."""
        if not math.isfinite(ratio) or ratio <= 0:
            return None
        for k in self.split_ratios:
            if abs(ratio / k - 1.0) <= self.split_tolerance:
                a, b = (round(1 / k), 1) if k < 1 else (1, round(k))
                kind = "split" if k < 1 else "reverse split"
                return "suspected_split", f"suspected {a}:{b} {kind}"
        if ratio > self.max_factor or ratio < 1.0 / self.max_factor:
            return (
                "price_jump",
                f"beyond the limit x{1 / self.max_factor:.3g}..x{self.max_factor:g}",
            )
        return None


@dataclass(frozen=True)
class JumpRules:
    """Per asset class. Equities: split ratios within 5%, anything beyond x2.5 / x0.4.
    Coins do not split: only a move beyond x4 / x0.25 in one bar."""

    equity: JumpRule = field(default_factory=lambda: JumpRule(2.5, SPLIT_RATIOS, 0.05))
    crypto: JumpRule = field(default_factory=lambda: JumpRule(4.0))

    def for_symbol(self, symbol: str) -> JumpRule:
        return self.crypto if is_coin(symbol) else self.equity


DEFAULT_JUMP_RULES = JumpRules()


@dataclass(frozen=True)
class ValidatedBars:
    """Rows safe to upsert (keys unique) and rows to quarantine (with reason and row_hash)."""

    good: pl.DataFrame
    quarantine: pl.DataFrame


def _bad(col: str) -> pl.Expr:
    c = pl.col(col)
    return c.is_null() | c.is_nan() | c.is_infinite()


def row_hash(row: dict[str, object]) -> str:
    # A stable content hash (unlike polars' hash_rows, which may change between versions),
    # so re-running an ingest maps a bad row onto the quarantine row it made last time.
    text = json.dumps(row, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _jump_flags(
    kept: pl.DataFrame, previous: pl.DataFrame | None, rules: JumpRules
) -> dict[int, tuple[str, str]]:
    """_i -> (reason, detail) of rows whose close jumps vs the previous accepted close.

    `kept`: rows that passed every other rule (columns _i, symbol, timeframe, ts, close),
    keys unique; judged in ts order within a series. `previous`: per series the newest
    stored bar before the batch (symbol, timeframe, ts, close), the first row's reference.
    """
    if kept.height == 0:
        return {}
    series = ["symbol", "timeframe"]
    frame = (
        kept.sort("ts", maintain_order=True)
        .select("_i", *series, "ts", "close")
        .with_columns(
            pl.col("close").shift(1).over(series).alias("_ref"),
            pl.col("ts").shift(1).over(series).alias("_ref_ts"),
        )
    )
    if previous is not None and previous.height:
        prev = previous.select(
            pl.col("symbol").cast(pl.String),
            pl.col("timeframe").cast(pl.String),
            pl.col("close").cast(pl.Float64).alias("_stored"),
            pl.col("ts").cast(pl.Datetime("us", "UTC")).alias("_stored_ts"),
        ).unique(series, keep="last")
        frame = frame.join(prev, on=series, how="left").with_columns(
            pl.coalesce("_ref", "_stored").alias("_ref"),
            pl.coalesce("_ref_ts", "_stored_ts").alias("_ref_ts"),
        )
    # Vectorised first pass: only a series with a suspicious ratio needs the row loop.
    ratio = pl.col("close") / pl.col("_ref")
    is_coin = pl.col("symbol").str.contains("/", literal=True)
    suspicious = (
        pl.when(is_coin).then(_band(ratio, rules.crypto)).otherwise(_band(ratio, rules.equity))
    )
    flagged = frame.filter(suspicious.fill_null(False)).select(series).unique()
    if flagged.height == 0:
        return {}
    out: dict[int, tuple[str, str]] = {}
    for (symbol, _tf), rows in frame.join(flagged, on=series).group_by(series, maintain_order=True):
        rule = rules.for_symbol(str(symbol))
        ref: float | None = None
        ref_ts: object = None
        first = True
        for i, ts, close, start_ref, start_ts in (
            rows.sort("ts", maintain_order=True)
            .select("_i", "ts", "close", "_ref", "_ref_ts")
            .iter_rows()
        ):
            if first:
                ref, ref_ts, first = start_ref, start_ts, False
            verdict = rule.classify(close / ref) if ref else None
            if verdict is None:
                ref, ref_ts = close, ts
                continue
            reason, what = verdict
            out[i] = (
                reason,
                f"close {close:g} is x{close / ref:.4g} the previous accepted close {ref:g}"
                f" ({ref_ts}): {what}; not stored until adjusted (warehouse.bars.apply_split)",
            )
    return out


def _band(ratio: pl.Expr, rule: JumpRule) -> pl.Expr:
    """True where a ratio may be suspicious under `rule` (a superset; classify() decides)."""
    cond = (ratio > rule.max_factor) | (ratio < 1.0 / rule.max_factor)
    for k in rule.split_ratios:
        cond = cond | ((ratio / k - 1.0).abs() <= rule.split_tolerance)
    return cond


# ---- the rules that judge a row alone, each written once for a batch and for one row -------
#
# A bar is full OHLC or close-only (open, high, low all null: sources such as skfolio publish
# only a close). The value rules judge the columns a row has: in a batch a null compares as
# null, which validate_bars reads as "not broken" (fill_null(False)); the row form skips a
# comparison with a None the same way. trading.live.BarStore's fast path judges each streamed
# row with the row forms (row_reason) and hands anything they reject to validate_bars.


class BarRow(NamedTuple):
    """One bar's values as the row rules read them."""

    symbol: str | None
    timeframe: str | None
    ts: datetime | None
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    raw: str | None = None


def _ohl_missing() -> list[pl.Expr]:
    return [pl.col(x).is_null() for x in ("open", "high", "low")]


def _partial() -> pl.Expr:
    missing = _ohl_missing()
    return pl.any_horizontal(*missing) & ~pl.all_horizontal(*missing)


def _row_partial(r: BarRow) -> bool:
    missing = [x is None for x in (r.open, r.high, r.low)]
    return any(missing) and not all(missing)


def _not_finite(x: float | None) -> bool:
    """A value present but NaN or infinite."""
    return x is not None and not math.isfinite(x)


def _above(a: float | None, b: float | None) -> bool:
    """a > b, False when either is missing (a null comparison reads as not broken)."""
    return a is not None and b is not None and a > b


def _batch_nan_price(_now: datetime) -> pl.Expr:
    o, h, lo = (pl.col(x) for x in ("open", "high", "low"))
    # A source adapter nulls a value it could not parse and keeps the row's text in `raw`:
    # such a null is a bad price that was sent (nan_price), not one the source lacks.
    return (
        _bad("close")
        | pl.any_horizontal(*(x.is_nan() | x.is_infinite() for x in (o, h, lo)))
        | (_partial() & pl.col("raw").is_not_null())
    )


def _row_nan_price(r: BarRow, _now: datetime) -> bool:
    return (
        r.close is None
        or not math.isfinite(r.close)
        or any(_not_finite(x) for x in (r.open, r.high, r.low))
        or (_row_partial(r) and r.raw is not None)
    )


@dataclass(frozen=True)
class BarRule:
    """One rule that judges a row alone: `batch(now)` is True on the rows of a frame that
    break it, `row(bar, now)` on one row; REASONS[reason] says why."""

    reason: str
    batch: Callable[[datetime], pl.Expr]
    row: Callable[[BarRow, datetime], bool]


STATIC_RULES: tuple[BarRule, ...] = (
    BarRule(
        "missing_key",
        lambda _now: pl.any_horizontal(*(pl.col(k).is_null() for k in BAR_KEY)),
        lambda r, _now: r.symbol is None or r.timeframe is None or r.ts is None,
    ),
    BarRule(
        "bad_timeframe",
        lambda _now: ~pl.col("timeframe").is_in(list(TIMEFRAMES)),
        lambda r, _now: r.timeframe is not None and r.timeframe not in TIMEFRAMES,
    ),
    BarRule("nan_price", _batch_nan_price, _row_nan_price),
    BarRule("partial_ohlc", lambda _now: _partial(), lambda r, _now: _row_partial(r)),
    BarRule(
        "non_positive_price",
        lambda _now: pl.any_horizontal(*(pl.col(x) <= 0 for x in PRICE_COLUMNS)),
        lambda r, _now: any(x is not None and x <= 0 for x in (r.open, r.high, r.low, r.close)),
    ),
    BarRule(
        "high_below_low",
        lambda _now: pl.col("high") < pl.col("low"),
        lambda r, _now: _above(r.low, r.high),
    ),
    BarRule(
        "ohlc_outside_range",
        lambda _now: (
            (pl.col("open") > pl.col("high"))
            | (pl.col("open") < pl.col("low"))
            | (pl.col("close") > pl.col("high"))
            | (pl.col("close") < pl.col("low"))
        ),
        lambda r, _now: (
            _above(r.open, r.high)
            or _above(r.low, r.open)
            or _above(r.close, r.high)
            or _above(r.low, r.close)
        ),
    ),
    BarRule(
        "bad_volume",
        lambda _now: pl.col("volume").is_not_null() & (_bad("volume") | (pl.col("volume") < 0)),
        lambda r, _now: r.volume is not None and (not math.isfinite(r.volume) or r.volume < 0),
    ),
    BarRule(
        "future_timestamp",
        lambda now: pl.col("ts") > pl.lit(now).cast(pl.Datetime("us", "UTC")),
        lambda r, now: r.ts is not None and r.ts > now,
    ),
)
"""The static rules in priority order (a row is quarantined under the first it breaks)."""


def row_reason(bar: BarRow, now: datetime) -> str | None:
    """The first static rule `bar` breaks (None: it passes them all), as validate_bars judges it."""
    for rule in STATIC_RULES:
        if rule.row(bar, now):
            return rule.reason
    return None


def validate_bars(
    df: pl.DataFrame,
    now: datetime,
    *,
    previous: pl.DataFrame | None = None,
    jumps: JumpRules | None = DEFAULT_JUMP_RULES,
) -> ValidatedBars:
    """Apply the data-quality rules to one batch, in delivery order.

    `now` is the ingest time: bars starting after it are rejected. Rules that need
    context (duplicates, ordering, price jumps) look within (symbol, timeframe) series
    only. `previous` (symbol, timeframe, ts, close): the newest stored bar of each series
    before this batch, so the first bar of an incremental batch is checked for a jump too
    (warehouse.bars.previous_closes reads it). `jumps=None` turns the jump rule off.
    """
    bars = conform_bars(df)
    if "raw" not in bars.columns:
        bars = bars.with_columns(pl.lit(None, dtype=pl.String).alias("raw"))
    bars = bars.with_row_index("_i")

    static_rules = [(r.reason, r.batch(now)) for r in STATIC_RULES]
    reason = pl.lit(None, dtype=pl.String)
    for name, cond in reversed(static_rules):
        reason = pl.when(cond.fill_null(False)).then(pl.lit(name)).otherwise(reason)
    bars = bars.with_columns(reason.alias("reason"))

    # Context rules on the rows that passed the static ones, in delivery order.
    passed = bars.filter(pl.col("reason").is_null())
    series = ["symbol", "timeframe"]
    key = pl.struct(list(BAR_KEY))
    passed = passed.with_columns(
        key.is_last_distinct().alias("_last"), key.is_first_distinct().alias("_first")
    )
    dup_ids = passed.filter(~pl.col("_last")).get_column("_i")
    # Order is judged where a key was FIRST delivered: a revision of an earlier bar sent
    # later in the batch replaces it (last delivery wins) and is not out of order.
    firsts = passed.filter(pl.col("_first")).with_columns(
        pl.col("ts").cum_max().shift(1).over(series).alias("_prev_max")
    )
    late_keys = firsts.filter(pl.col("ts") < pl.col("_prev_max")).select(BAR_KEY)
    kept = passed.filter(pl.col("_last"))
    ooo_ids = kept.join(late_keys, on=list(BAR_KEY), how="semi").get_column("_i")
    in_order = kept.join(late_keys, on=list(BAR_KEY), how="anti")
    jumped = _jump_flags(in_order, previous, jumps) if jumps is not None else {}
    jump_ids = pl.Series("_i", list(jumped), dtype=pl.UInt32)
    bars = bars.with_columns(
        pl.when(pl.col("_i").is_in(dup_ids.implode()))
        .then(pl.lit("duplicate_key"))
        .when(pl.col("_i").is_in(ooo_ids.implode()))
        .then(pl.lit("out_of_order"))
        .when(pl.col("_i").is_in(jump_ids.implode()))
        .then(
            pl.col("_i").replace_strict(
                {i: r for i, (r, _) in jumped.items()}, default=None, return_dtype=pl.String
            )
        )
        .otherwise(pl.col("reason"))
        .alias("reason")
    )

    good = bars.filter(pl.col("reason").is_null()).select(BAR_COLUMNS)
    return ValidatedBars(good=good, quarantine=_quarantine_rows(bars, jumped))


def check_jumps(
    good: pl.DataFrame,
    previous: pl.DataFrame | None,
    jumps: JumpRules | None = DEFAULT_JUMP_RULES,
) -> ValidatedBars:
    """The jump/split rule alone, on bars that already passed validate_bars.

    For a writer that validated a batch without the stored history (the live stream's
    one-minute batches): `previous` is the newest stored bar per series before `good`.
    """
    if jumps is None or good.height == 0:
        return ValidatedBars(good=good, quarantine=_quarantine_rows(good.clear(), {}))
    if good.height <= 64 and not _any_jump(good, previous, jumps):
        return ValidatedBars(good=good, quarantine=_quarantine_rows(good.clear(), {}))
    bars = conform_bars(good).sort("ts", maintain_order=True)
    if "raw" not in bars.columns:
        bars = bars.with_columns(pl.lit(None, dtype=pl.String).alias("raw"))
    bars = bars.with_row_index("_i")
    jumped = _jump_flags(bars, previous, jumps)
    if not jumped:
        return ValidatedBars(good=good, quarantine=_quarantine_rows(good.clear(), {}))
    bars = bars.with_columns(
        pl.col("_i")
        .replace_strict(
            {i: r for i, (r, _) in jumped.items()}, default=None, return_dtype=pl.String
        )
        .alias("reason")
    )
    kept = bars.filter(pl.col("reason").is_null()).select(BAR_COLUMNS)
    return ValidatedBars(good=kept, quarantine=_quarantine_rows(bars, jumped))


def _any_jump(good: pl.DataFrame, previous: pl.DataFrame | None, jumps: JumpRules) -> bool:
    """A plain-Python look at a handful of bars (the stream's minute): may any of them jump?

    The polars path costs milliseconds of fixed overhead; this costs microseconds.
    """
    ref: dict[tuple[str, str], float] = {}
    if previous is not None and previous.height:
        for sym, tf, close in previous.select("symbol", "timeframe", "close").iter_rows():
            if close is not None:
                ref[(sym, tf)] = close
    rows = good.select("symbol", "timeframe", "ts", "close").sort("ts", maintain_order=True)
    for sym, tf, _ts, close in rows.iter_rows():
        before = ref.get((sym, tf))
        if before and close is not None and jumps.for_symbol(sym).classify(close / before):
            return True
        ref[(sym, tf)] = close
    return False


def _quarantine_rows(bars: pl.DataFrame, jumped: dict[int, tuple[str, str]]) -> pl.DataFrame:
    """QUARANTINE_COLUMNS rows of `bars` whose `reason` is set (none when it lacks one)."""
    if "reason" not in bars.columns or "_i" not in bars.columns:
        bars = conform_bars(bars).with_columns(
            pl.lit(None, dtype=pl.String).alias("raw"),
            pl.lit(None, dtype=pl.UInt32).alias("_i"),
            pl.lit(None, dtype=pl.String).alias("reason"),
        )
    bad = bars.filter(pl.col("reason").is_not_null())
    if bad.height:
        hashes = [row_hash(r) for r in bad.select(*BAR_COLUMNS, "raw").iter_rows(named=True)]
        bad = bad.with_columns(
            pl.Series("row_hash", hashes, dtype=pl.String),
            pl.col("_i")
            .replace_strict(
                {i: d for i, (_, d) in jumped.items()}, default=None, return_dtype=pl.String
            )
            .fill_null(pl.col("reason").replace_strict(REASONS, return_dtype=pl.String))
            .alias("detail"),
        )
    else:
        bad = bad.with_columns(
            pl.lit(None, dtype=pl.String).alias("row_hash"),
            pl.lit(None, dtype=pl.String).alias("detail"),
        )
    return bad.select(QUARANTINE_COLUMNS).unique(
        subset=["row_hash", "reason"], keep="first", maintain_order=True
    )
