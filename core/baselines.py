"""Benchmarks beside a strategy (buy-and-hold, momentum, flat, trend, volatility target): positions, fills, equity, metrics.

Each benchmark is a position path (0 flat, 1 all in, fractions between) traded as a book:
every change of position is a fill with the simulated broker's cost model (price moved
against us by the slippage, a fee on the traded notional), and the equity is the cash and
units those fills leave. So the equity pays exactly the costs its fills list, and
:func:`core.metrics.summarize` counts the benchmarks' trades, turnover, fees and exposure
as it counts the strategy's. Where the bars have opens, a benchmark's decision fills at
the next bar's open, as the agent's does (train, evaluate, backtest alike).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from core.fills import fill_fee, fill_price, fill_references
from core.metrics import summarize
from core.universe import is_coin

MOMENTUM_WINDOW = 30
"""Bars of the momentum rule's look-back, counted across the whole window (not per episode)."""

TREND_WINDOW = 200
"""Bars of the trend rule's simple moving average: the classic 200-day average on daily bars.
Like the momentum look-back it is counted in bars of whatever timeframe is traded (200 hours
on hourly bars, 200 minutes on minute bars): a rule defined in bars needs no calendar."""

VOL_WINDOW = 20
"""Bars of the volatility target's trailing realised volatility (about a month of daily bars;
counted in bars of the timeframe, as the other rules' windows are)."""

VOL_TARGET = 0.10
"""Annualised volatility the volatility-targeted buy-and-hold aims at (never levered above 1)."""

BUY_AND_HOLD = "buy_and_hold"
MOMENTUM = "baseline"
"""Keys of the benchmarks in metrics and equity frames (``baseline`` is the momentum rule)."""
FLAT = "flat"
TREND = "trend"
VOL_TARGETED = "vol_target"
"""Keys of the opt-in benchmarks (benchmark_books(extra=...))."""
EXTRA_BENCHMARKS: tuple[str, ...] = (FLAT, TREND, VOL_TARGETED)


def momentum_label(window: int = MOMENTUM_WINDOW) -> str:
    """The momentum rule's name as reports show it, from its look-back."""
    return f"Momentum ({window} bars)"


def trend_label(window: int = TREND_WINDOW) -> str:
    """The trend rule's name as reports show it, from its moving average's length."""
    return f"Trend ({window}-bar average)"


def vol_target_label(target: float = VOL_TARGET, window: int = VOL_WINDOW) -> str:
    """The volatility-targeted buy-and-hold's name as reports show it."""
    return f"Vol target ({100 * target:g}%, {window} bars)"


BENCHMARK_LABELS: dict[str, str] = {
    BUY_AND_HOLD: "Buy & hold",
    MOMENTUM: momentum_label(),
    FLAT: "Flat",
    TREND: trend_label(),
    VOL_TARGETED: vol_target_label(),
}
"""Column names of the benchmarks in every report and table."""

BENCHMARK_RULES: dict[str, str] = {
    BUY_AND_HOLD: "long from the first bar's decision to the end",
    MOMENTUM: f"long while the close rose over the last {MOMENTUM_WINDOW} bars, else flat",
    FLAT: "never invested: keeps its cash",
    TREND: f"long while the close is above its {TREND_WINDOW}-bar simple moving average, else flat",
    VOL_TARGETED: (
        f"invested min(1, {100 * VOL_TARGET:g}% / annualised realised volatility of the last"
        f" {VOL_WINDOW} bars), flat until that window is full"
    ),
}
"""What each benchmark does, for the reports' legend; every decision fills at the next bar's
open where the bars have opens (as the agent's), else at the decision bar's close."""


def momentum_positions(frame: pl.DataFrame, window: int = MOMENTUM_WINDOW) -> np.ndarray:
    """Long (1) while the close rose over the last `window` bars, else flat (0); past bars only.

    ``frame`` has close, one row per bar in time order. The look-back runs across the whole
    window, through session and episode boundaries, so episodes shorter than `window` do
    not matter: the rule is flat for the window's first `window` bars, then follows the
    close of `window` bars back.
    """
    close = frame.select(
        (pl.col("close").log() - pl.col("close").log().shift(window)).fill_null(0.0).alias("m")
    )
    return (close.get_column("m").to_numpy() > 0).astype(np.float64)


def flat_positions(frame: pl.DataFrame) -> np.ndarray:
    """Always flat (0): what keeping the cash earns (nothing, and pays nothing)."""
    return np.zeros(frame.height)


def trend_positions(frame: pl.DataFrame, window: int = TREND_WINDOW) -> np.ndarray:
    """Long (1) while the close is above its simple moving average of the last `window` bars
    (bar t's own close included), else flat (0); past bars only.

    Flat until `window` closes exist, counted across the whole window as momentum_positions is.
    """
    if window < 1:
        raise ValueError("the trend rule's window must be at least one bar")
    sma = pl.col("close").rolling_mean(window, min_samples=window)
    above = frame.select((pl.col("close") > sma).fill_null(False).alias("up"))
    return above.get_column("up").to_numpy().astype(np.float64)


def vol_target_positions(
    frame: pl.DataFrame,
    bars_per_year: float,
    target: float = VOL_TARGET,
    window: int = VOL_WINDOW,
) -> np.ndarray:
    """Buy-and-hold scaled to a volatility target: ``min(1, target / realised vol)``; past bars only.

    The realised volatility at bar t is the standard deviation of the last `window` bar log
    returns ending at bar t's close (bars t - window .. t), annualised by ``sqrt(bars_per_year)``;
    a decision on bar t reads nothing after it. Flat (0) until `window` returns exist; fully
    invested (1) where the window did not move at all.
    """
    if window < 2:
        raise ValueError("the volatility window needs at least two returns")
    lr = pl.col("close").log().diff()
    vol = frame.select(lr.rolling_std(window, min_samples=window).alias("v")).get_column("v")
    v = vol.to_numpy().astype(np.float64) * np.sqrt(bars_per_year)
    known = np.isfinite(v)
    with np.errstate(divide="ignore"):
        scale = np.where(v > 0, target / np.where(v > 0, v, 1.0), 1.0)
    return np.where(known, np.minimum(1.0, scale), 0.0)


def bar_opens(frame: pl.DataFrame) -> npt.NDArray[np.float64] | None:
    """The opens a benchmark's fills read: None without an ``open`` column (fills at the
    decision bar's close); a missing (null) open reads as that bar's close, so a close-only
    bar fills at the next bar's close."""
    if "open" not in frame.columns:
        return None
    return fill_references(
        frame.get_column("open").cast(pl.Float64).to_numpy(),
        frame.get_column("close").cast(pl.Float64).to_numpy(),
    )


def periods_per_year(symbol: str) -> float:
    """Trading days per year of a symbol's daily returns: 365 for a coin pair ("BTC/USD"), else 252."""
    return 365.0 if is_coin(symbol) else 252.0


@dataclass(frozen=True)
class PositionBook:
    """A 0/1 position path traded as a book: what it held, paid and was worth."""

    ts: pl.Series
    equity: npt.NDArray[np.float64]
    """Cash + units x close after the bar's fill, per bar."""
    position_value: npt.NDArray[np.float64]
    """Units x close after the bar's fill, per bar."""
    fills: pl.DataFrame
    """ts, symbol, side, qty, price, fee: one row per change of position."""
    cash: float = 0.0
    """What the book held before its first bar (its metrics are measured from it)."""

    def curve(self) -> pl.DataFrame:
        """ts, equity, position_value: what :func:`summarize` reads."""
        return pl.DataFrame(
            {"ts": self.ts, "equity": self.equity, "position_value": self.position_value}
        )


def trade_positions(
    ts: pl.Series,
    close: npt.ArrayLike,
    positions: npt.ArrayLike,
    *,
    symbol: str,
    cash: float,
    fee_bps: float,
    slippage_bps: float,
    opens: npt.ArrayLike | None = None,
    sell_fee_bps: float = 0.0,
) -> PositionBook:
    """Trade a position path (0 flat, 1 all in, fractions between) with the simulated broker's costs (core.fills).

    ``positions[t]`` is decided on bar t's close. Without ``opens`` it fills at that close
    moved against us by ``slippage_bps``, with a fee of ``fee_bps`` of the notional: from
    flat, going all in spends all cash (``qty = cash / (price * (1 + fee))``, fractional
    units), going flat sells every unit (the benchmarks' rule).

    With ``opens`` (each bar's open) it fills as the backtest's engine and simulated broker
    do: at the next bar's open moved against us by the slippage, a buy sized on the decision
    bar's close (``qty = equity / close``, fractional units: the engine rounds to whole
    shares or 6-decimal coin units), a sell of every unit; a decision on the last bar never
    fills, and a forced flat before a session's close fills at the next session's open.
    The fills are stamped with the ``ts`` of the bar they fill on. A sell's fee adds
    ``sell_fee_bps`` of its notional (core.costs.CostModel: the US equities' SEC fee).

    A fraction ``w`` holds ``w`` of the equity valued at the decision bar's close: each change
    of ``w`` trades the difference (a buy of the missing value, sized as above; a sell of
    the excess units), so 0/1 paths trade exactly as described. A negative ``w`` is short
    (down to -1, a short agent's levels): going flat from it buys back every unit.
    """
    c = np.asarray(close, dtype=np.float64).reshape(-1)
    p = np.asarray(positions, dtype=np.float64).reshape(-1)
    if p.size != c.size or ts.len() != c.size:
        raise ValueError(f"{ts.len()} times, {c.size} closes and {p.size} positions differ")
    if not (np.isfinite(p) & (p >= -1.0) & (p <= 1.0)).all():
        raise ValueError("positions must be between -1 (all short) and 1 (all in)")
    fee_rate, slip, sell_rate = fee_bps / 1e4, slippage_bps / 1e4, sell_fee_bps / 1e4
    change = np.diff(np.concatenate(([0.0], p)))
    if opens is None:
        decided = np.flatnonzero(change)
        turns = decided
        reference = c
    else:
        # A close-only bar (no open) fills at its close: core.fills.fill_references.
        reference = fill_references(opens, c)
        # A decision fills on the next bar; the last bar's has no bar to fill on.
        decided = np.flatnonzero(change[:-1])
        turns = decided + 1
    sides: list[str] = []
    qtys: list[float] = []
    prices: list[float] = []
    fees: list[float] = []
    filled: list[int] = []
    units_list: list[float] = []
    cash_list: list[float] = []
    units, money = 0.0, float(cash)
    for d, t in zip(decided.tolist(), turns.tolist(), strict=True):
        target, mark = float(p[d]), float(c[d])
        # The value to add (> 0) or take out (< 0) to hold `target` of the equity at the mark.
        shift = target * (money + units * mark) - units * mark
        if target == 0.0:
            if units == 0.0:
                continue
            side = "sell" if units > 0 else "buy"
        elif shift == 0.0:
            continue
        else:
            side = "buy" if shift > 0 else "sell"
        price = fill_price(float(reference[t]), side, slip)
        if target == 0.0:
            qty = abs(units)
        elif side == "sell":
            qty = -shift / mark
        elif opens is None:
            qty = shift / (price * (1.0 + fee_rate))
        else:
            # The engine's size: the equity on the decision bar's close (flat: the cash).
            qty = shift / mark
        fee = fill_fee(qty, price, fee_rate, side=side, sell_fee_rate=sell_rate)
        if side == "buy":
            money -= qty * price + fee
            units = 0.0 if target == 0.0 else units + qty
        else:
            money += qty * price - fee
            units = 0.0 if target == 0.0 else units - qty
        sides.append(side)
        qtys.append(qty)
        prices.append(price)
        fees.append(fee)
        filled.append(t)
        units_list.append(units)
        cash_list.append(money)
    turns = np.asarray(filled, dtype=np.int64)
    units_after = np.asarray(units_list, dtype=np.float64)
    cash_after = np.asarray(cash_list, dtype=np.float64)
    # Each bar holds what the last fill at or before it left (index 0 before the first
    # fill: the starting book, prepended).
    last = np.searchsorted(turns, np.arange(c.size), side="right")
    held = np.concatenate(([0.0], units_after))[last]
    cash_held = np.concatenate(([float(cash)], cash_after))[last]
    position_value = held * c
    fills = pl.DataFrame(
        [
            ts.gather(turns).alias("ts"),
            pl.Series("symbol", [symbol] * turns.size, dtype=pl.String),
            pl.Series("side", sides, dtype=pl.String),
            pl.Series("qty", qtys, dtype=pl.Float64),
            pl.Series("price", prices, dtype=pl.Float64),
            pl.Series("fee", fees, dtype=pl.Float64),
        ]
    )
    return PositionBook(ts, cash_held + position_value, position_value, fills, float(cash))


def benchmark_books(
    frame: pl.DataFrame,
    *,
    symbol: str,
    cash: float,
    fee_bps: float,
    slippage_bps: float,
    extra: Sequence[str] = (),
    bars_per_year: float | None = None,
    sell_fee_bps: float = 0.0,
) -> dict[str, PositionBook]:
    """Buy-and-hold and the momentum rule on ``frame``'s bars (ts, close, optional open, in time order), same costs.

    With an ``open`` column every decision fills at the next bar's open, as the agent's
    does (trade_positions(opens=...); a null open reads as that bar's close, see bar_opens);
    without one, at the decision bar's close. ``extra`` adds opt-in benchmarks by key
    (FLAT, TREND, VOL_TARGETED; EXTRA_BENCHMARKS for all): they are not traded by default,
    because the volatility target rebalances on every bar and would cost the backtest's
    speed goal a Python fill loop per bar. VOL_TARGETED needs ``bars_per_year`` (bars of the
    timeframe in a year) to annualise its volatility.
    """
    close = frame.get_column("close").to_numpy().astype(np.float64)
    paths = {BUY_AND_HOLD: np.ones(close.size), MOMENTUM: momentum_positions(frame)}
    for key in extra:
        if key == FLAT:
            paths[key] = flat_positions(frame)
        elif key == TREND:
            paths[key] = trend_positions(frame)
        elif key == VOL_TARGETED:
            if bars_per_year is None:
                raise ValueError("the volatility target needs bars_per_year")
            paths[key] = vol_target_positions(frame, bars_per_year)
        else:
            raise ValueError(f"unknown benchmark {key!r}: use one of {', '.join(EXTRA_BENCHMARKS)}")
    ts = frame.get_column("ts")
    opens = bar_opens(frame)
    return {
        key: trade_positions(
            ts,
            close,
            path,
            symbol=symbol,
            cash=cash,
            fee_bps=fee_bps,
            slippage_bps=slippage_bps,
            opens=opens,
            sell_fee_bps=sell_fee_bps,
        )
        for key, path in paths.items()
    }


def benchmark_metrics(
    books: Mapping[str, PositionBook], **summarize_kw: Any
) -> dict[str, dict[str, float]]:
    """summarize() of each benchmark's own curve and fills from its starting cash, keyed as ``books``."""
    return {
        key: summarize(book.curve(), book.fills, initial_equity=book.cash, **summarize_kw)
        for key, book in books.items()
    }
