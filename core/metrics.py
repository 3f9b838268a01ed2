"""Performance metrics of an equity curve and its fills (train, evaluate and backtest share them): pure numpy/polars, no I/O.

Conventions shared by every function here:

- ``returns`` are simple (not log) per-period returns ``r[t] = e[t] / e[t-1] - 1`` as a
  1-D float array without NaN (a NaN propagates into the result).
- Ratios that are undefined return NaN rather than raising or returning infinity: fewer
  than two returns for Sharpe/Sortino, zero dispersion, zero drawdown, no round trips.
  This mirrors empyrical except where empyrical returns +-inf (Sharpe of a constant
  series, Sortino without a downside), which we report as NaN as well.
- ``max_drawdown`` is a positive fraction (0.25 = a 25% peak-to-trough fall);
  ``drawdown_series`` is the signed curve (values <= 0) for plots.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import polars as pl

FloatArray = npt.NDArray[np.float64]

_POSITION_EPS = 1e-9
"""A position (in units) or a position value smaller than this counts as flat."""

SUMMARY_KEYS = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "hit_rate",
    "turnover",
    "exposure",
    "fees",
    "trades",
    "round_trips",
)
"""The keys of :func:`summarize`'s result, in display order."""


def _as_float_array(values: npt.ArrayLike) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def returns_from_equity(equity: npt.ArrayLike) -> FloatArray:
    """Simple returns of an equity curve: ``r[t] = e[t] / e[t-1] - 1`` (length ``len(e) - 1``)."""
    e = _as_float_array(equity)
    if e.size < 2:
        return np.empty(0, dtype=np.float64)
    return e[1:] / e[:-1] - 1.0


def total_return(returns: npt.ArrayLike) -> float:
    """Compounded return over the whole series: ``prod(1 + r) - 1`` (NaN when empty)."""
    r = _as_float_array(returns)
    if r.size == 0:
        return math.nan
    return float(np.prod(1.0 + r) - 1.0)


def cagr(returns: npt.ArrayLike, periods_per_year: float) -> float:
    """Compound annual growth rate: ``(prod(1 + r)) ** (periods_per_year / n) - 1``.

    ``n / periods_per_year`` is the length of the sample in years, so a short sample is
    extrapolated to a full year (as empyrical's ``annual_return`` does). NaN when empty
    or when the curve ends below zero; -1 when it ends at exactly zero; inf past the
    largest float (+3.7% over five minute bars, say).
    """
    r = _as_float_array(returns)
    if r.size == 0:
        return math.nan
    ending = float(np.prod(1.0 + r))
    if ending < 0.0:
        return math.nan
    try:
        return float(ending ** (periods_per_year / r.size) - 1.0)
    except OverflowError:  # a few minutes' gain extrapolated to a year: past any float
        return math.inf


def sharpe(returns: npt.ArrayLike, periods_per_year: float, risk_free: float = 0.0) -> float:
    """Annualised Sharpe ratio: ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods_per_year)``.

    ``risk_free`` is a per-period rate. NaN with fewer than two returns or zero dispersion.
    """
    excess = _as_float_array(returns) - risk_free
    if excess.size < 2:
        return math.nan
    # Identical values can leave a ~1e-18 residue in std; treat them as zero dispersion.
    if np.ptp(excess) == 0.0:
        return math.nan
    std = float(np.std(excess, ddof=1))
    if std == 0.0:
        return math.nan
    return float(np.mean(excess) / std * math.sqrt(periods_per_year))


def downside_deviation(returns: npt.ArrayLike, required_return: float = 0.0) -> float:
    """Per-period downside deviation as empyrical defines it: ``sqrt(mean(min(r - req, 0) ** 2))``.

    The mean runs over *all* periods (not only the losing ones). NaN when empty.
    """
    r = _as_float_array(returns)
    if r.size == 0:
        return math.nan
    shortfall = np.minimum(r - required_return, 0.0)
    return float(np.sqrt(np.mean(shortfall * shortfall)))


def sortino(returns: npt.ArrayLike, periods_per_year: float, required_return: float = 0.0) -> float:
    """Annualised Sortino ratio: ``mean(r - req) / downside_deviation(r, req) * sqrt(periods_per_year)``.

    ``required_return`` is per period. NaN with fewer than two returns or when no period
    falls below ``required_return`` (empyrical returns +inf there).
    """
    r = _as_float_array(returns)
    if r.size < 2:
        return math.nan
    dd = downside_deviation(r, required_return)
    if dd == 0.0:
        return math.nan
    return float(np.mean(r - required_return) / dd * math.sqrt(periods_per_year))


def drawdown_series(equity: npt.ArrayLike) -> FloatArray:
    """Drawdown at each point of an equity curve: ``e[t] / max(e[0..t]) - 1`` (values <= 0)."""
    e = _as_float_array(equity)
    if e.size == 0:
        return np.empty(0, dtype=np.float64)
    return e / np.maximum.accumulate(e) - 1.0


def max_drawdown(returns: npt.ArrayLike) -> float:
    """Largest peak-to-trough fall of the compounded curve, as a positive fraction.

    ``-min(W[t] / max(W[0..t]) - 1)`` with ``W = cumprod(1 + r)`` anchored at ``W = 1``
    before the first return, so a loss on the first period counts. 0 when the curve never
    falls; NaN when empty.
    """
    r = _as_float_array(returns)
    if r.size == 0:
        return math.nan
    wealth = np.concatenate(([1.0], np.cumprod(1.0 + r)))
    # `+ 0.0` turns the -0.0 of a never-falling curve into 0.0.
    return float(-np.min(drawdown_series(wealth))) + 0.0


def calmar(returns: npt.ArrayLike, periods_per_year: float) -> float:
    """Calmar ratio: ``cagr(r) / max_drawdown(r)``; NaN when the drawdown is 0 (or NaN)."""
    mdd = max_drawdown(returns)
    if not mdd > 0.0:
        return math.nan
    ratio = cagr(returns, periods_per_year) / mdd
    return ratio if math.isfinite(ratio) else math.nan


def hit_rate(round_trip_pnls: npt.ArrayLike) -> float:
    """Share of round trips whose pnl is strictly positive: ``count(pnl > 0) / n`` (NaN when none)."""
    pnl = _as_float_array(round_trip_pnls)
    if pnl.size == 0:
        return math.nan
    return float(np.count_nonzero(pnl > 0.0) / pnl.size)


_ROUND_TRIP_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "opened_at": pl.Datetime("us", "UTC"),
        "closed_at": pl.Datetime("us", "UTC"),
        "pnl": pl.Float64(),
        "return": pl.Float64(),
    }
)
"""Columns of :func:`round_trips` (the datetimes keep the fills' own ts type when there are fills)."""


def round_trips(fills: pl.DataFrame) -> pl.DataFrame:
    """Closed round trips of a long-only book, one row per trip.

    Per symbol, fills are taken in ``ts`` order; a trip opens with the buy that lifts the
    position from 0 and closes with the sell that brings it back to 0 (|position| < 1e-9
    units). Partial buys and sells in between belong to the same trip.

    - ``pnl = sum(sell qty * price) - sum(buy qty * price) - sum(fee)`` over the trip's fills;
    - ``return = pnl / sum(buy qty * price)``.

    Input columns: ts, symbol, side ('buy' | 'sell'), qty (> 0), price, fee. Output:
    symbol, opened_at, closed_at, pnl, return, ordered by closed_at then symbol. A trip still
    open at the end is left out. Raises ``ValueError`` on a sell larger than the position
    (this book does not short) or an unknown side.
    """
    if fills.height == 0:
        return pl.DataFrame(schema=_ROUND_TRIP_SCHEMA)
    sides = set(fills.get_column("side").unique().to_list())
    if not sides <= {"buy", "sell"}:
        raise ValueError(f"unknown side(s) in fills: {sorted(map(str, sides - {'buy', 'sell'}))}")
    buy = pl.col("side") == "buy"
    notional = pl.col("qty") * pl.col("price")
    legs = (
        fills.with_row_index("_row")
        .sort("symbol", "ts", "_row")
        .with_columns(signed=pl.when(buy).then(pl.col("qty")).otherwise(-pl.col("qty")))
        .with_columns(position=pl.col("signed").cum_sum().over("symbol"))
        .with_columns(
            opens=(buy & ((pl.col("position") - pl.col("signed")).abs() < _POSITION_EPS)).cast(
                pl.Int64
            )
        )
        .with_columns(trip=pl.col("opens").cum_sum().over("symbol"))
    )
    if (legs.get_column("position") < -_POSITION_EPS).any():
        raise ValueError("a sell exceeds the open position: round_trips handles long-only books")
    trips = (
        legs.group_by("symbol", "trip", maintain_order=True)
        .agg(
            opened_at=pl.col("ts").first(),
            closed_at=pl.col("ts").last(),
            final_position=pl.col("position").last(),
            cost=notional.filter(buy).sum(),
            proceeds=notional.filter(~buy).sum(),
            fees=pl.col("fee").sum(),
        )
        .filter(pl.col("final_position").abs() < _POSITION_EPS)
        .with_columns(pnl=pl.col("proceeds") - pl.col("cost") - pl.col("fees"))
        .with_columns(**{"return": pl.col("pnl") / pl.col("cost")})
        .sort("closed_at", "symbol")
    )
    return trips.select(
        pl.col("symbol").cast(pl.String),
        "opened_at",
        "closed_at",
        pl.col("pnl").cast(pl.Float64),
        pl.col("return").cast(pl.Float64),
    )


def turnover(fills: pl.DataFrame, mean_equity: float, years: float) -> float:
    """Annual turnover: ``sum(qty * price) / mean_equity / years`` (both sides counted).

    0 for no fills; NaN when ``mean_equity`` or ``years`` is not positive.
    """
    if not (mean_equity > 0.0 and years > 0.0):
        return math.nan
    if fills.height == 0:
        return 0.0
    traded = float(fills.select((pl.col("qty") * pl.col("price")).sum()).item())
    return traded / mean_equity / years


def exposure(position_values: npt.ArrayLike, equity: npt.ArrayLike) -> float:
    """Fraction of bars invested: ``mean(|position_value| > 1e-9)`` (NaN when there are no bars).

    ``equity`` only fixes the number of bars and must have the same length.
    """
    pv = _as_float_array(position_values)
    e = _as_float_array(equity)
    if pv.size != e.size:
        raise ValueError(f"position_values has {pv.size} bars, equity {e.size}")
    if pv.size == 0:
        return math.nan
    return float(np.mean(np.abs(pv) > _POSITION_EPS))


def daily_equity(equity: pl.DataFrame, calendar_tz: str = "America/New_York") -> FloatArray:
    """The curve's first value followed by its last value on each local calendar date.

    ``equity`` has columns ts (UTC datetime) and equity. Keeping the first bar as the
    anchor means the first day's return is measured from where the curve started, so the
    daily and per-bar curves have the same total return.
    """
    if equity.height == 0:
        return np.empty(0, dtype=np.float64)
    ordered = equity.sort("ts")
    closes = (
        ordered.with_columns(
            day=pl.col("ts").dt.convert_time_zone(calendar_tz).dt.date(),
        )
        .group_by("day", maintain_order=True)
        .agg(pl.col("equity").last())
        .get_column("equity")
        .to_numpy()
    )
    first = float(ordered.get_column("equity")[0])
    return np.concatenate(([first], _as_float_array(closes)))


def summarize(
    equity: pl.DataFrame,
    fills: pl.DataFrame,
    *,
    periods_per_year: float = 252.0,
    daily: bool = True,
    calendar_tz: str = "America/New_York",
    initial_equity: float | None = None,
) -> dict[str, float]:
    """All metrics of one backtest, keyed as in :data:`SUMMARY_KEYS`.

    ``initial_equity``, when given, is what the book held before its first bar: returns and
    drawdown are then measured from it, so costs paid on the first bar's fill count
    (without it the curve starts after that fill).

    ``equity``: ts (UTC datetime), equity, position_value, one row per bar.
    ``fills``: ts, symbol, side, qty, price, fee (may be empty).

    - Return statistics (total_return, cagr, sharpe, sortino, calmar's numerator) use
      *daily* returns when ``daily`` is true: the curve is cut to its first value plus the
      last value of each ``calendar_tz`` date (:func:`daily_equity`), and
      ``periods_per_year`` must then be trading days per year (252 for equities, 365 for
      crypto with ``calendar_tz="UTC"``: the caller decides). With ``daily=False`` they use
      per-bar returns and ``periods_per_year`` must be bars per year. A curve that spans
      one date has one daily return: Sharpe and Sortino are then NaN (they need two) and
      CAGR extrapolates that day; pass ``daily=False`` with bars per year for such runs.
    - max_drawdown uses the full per-bar curve, so intraday drawdowns count;
      calmar = cagr / max_drawdown.
    - turnover = traded notional / mean per-bar equity / years, with
      ``years = number of returns / periods_per_year`` (the sample length CAGR uses).
    - exposure = share of bars with a non-zero position_value; hit_rate, round_trips from
      :func:`round_trips` over the fills; fees = sum of fee; trades = number of fills.

    Values may be NaN where a metric is undefined (see the module docstring); counts
    are returned as floats so the result is a plain ``dict[str, float]``.
    """
    ordered = equity.sort("ts")
    per_bar = ordered.get_column("equity").to_numpy().astype(np.float64)
    curve = daily_equity(ordered, calendar_tz) if daily else per_bar
    drawn = per_bar
    if initial_equity is not None and per_bar.size:
        # The daily curve's anchor is the first bar's value: replace it; per bar, prepend.
        curve = (
            np.concatenate(([initial_equity], curve[1:]))
            if daily
            else np.concatenate(([initial_equity], curve))
        )
        drawn = np.concatenate(([initial_equity], per_bar))
    rets = returns_from_equity(curve)
    years = rets.size / periods_per_year if periods_per_year > 0 else math.nan
    trips = round_trips(fills)
    fees = float(fills.get_column("fee").sum()) if fills.height else 0.0
    mdd = max_drawdown(returns_from_equity(drawn))
    growth = cagr(rets, periods_per_year)
    return {
        "total_return": total_return(rets),
        "cagr": growth,
        "sharpe": sharpe(rets, periods_per_year),
        "sortino": sortino(rets, periods_per_year),
        "max_drawdown": mdd,
        "calmar": growth / mdd if mdd > 0.0 and math.isfinite(growth / mdd) else math.nan,
        "hit_rate": hit_rate(trips.get_column("pnl").to_numpy()),
        "turnover": turnover(fills, float(np.mean(per_bar)) if per_bar.size else math.nan, years),
        "exposure": exposure(ordered.get_column("position_value").to_numpy(), per_bar),
        "fees": fees,
        "trades": float(fills.height),
        "round_trips": float(trips.height),
    }
