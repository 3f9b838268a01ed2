"""Buy-and-hold and the momentum rule beside a strategy: positions, fills, equity, metrics (train, evaluate, backtest).

Each benchmark is a 0/1 position path traded as a book: every change of position is a
fill with the simulated broker's cost model (price moved against us by the slippage, a
fee on the traded notional), and the equity is the cash and units those fills leave.
So the equity pays exactly the costs its fills list, and :func:`core.metrics.summarize`
counts the benchmarks' trades, turnover, fees and exposure as it counts the strategy's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from core.fills import fill_fee, fill_price
from core.metrics import summarize

MOMENTUM_WINDOW = 30
"""Bars of the momentum rule's look-back, counted across the whole window (not per episode)."""

BUY_AND_HOLD = "buy_and_hold"
MOMENTUM = "baseline"
"""Keys of the benchmarks in metrics and equity frames (``baseline`` is the momentum rule)."""


def momentum_label(window: int = MOMENTUM_WINDOW) -> str:
    """The momentum rule's name as reports show it, from its look-back."""
    return f"Momentum ({window} bars)"


BENCHMARK_LABELS: dict[str, str] = {BUY_AND_HOLD: "Buy & hold", MOMENTUM: momentum_label()}
"""Column names of the benchmarks in every report and table."""

BENCHMARK_RULES: dict[str, str] = {
    BUY_AND_HOLD: "long from the first bar's close to the end",
    MOMENTUM: f"long while the close rose over the last {MOMENTUM_WINDOW} bars, else flat",
}
"""What each benchmark does, for the reports' legend."""


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


def periods_per_year(symbol: str) -> float:
    """Trading days per year of a symbol's daily returns: 365 for a coin pair ("BTC/USD"), else 252."""
    return 365.0 if "/" in symbol else 252.0


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
) -> PositionBook:
    """Trade a 0/1 position path with the simulated broker's costs (core.fills).

    ``positions[t]`` is decided on bar t's close. Without ``opens`` it fills at that close
    moved against us by ``slippage_bps``, with a fee of ``fee_bps`` of the notional: a buy
    spends all cash (``qty = cash / (price * (1 + fee))``, fractional units), a sell sells
    every unit (the benchmarks' rule).

    With ``opens`` (each bar's open) it fills as the backtest's engine and simulated broker
    do: at the next bar's open moved against us by the slippage, a buy sized on the decision
    bar's close (``qty = equity / close``, fractional units: the engine rounds to whole
    shares or 6-decimal coin units), a sell of every unit; a decision on the last bar never
    fills, and a forced flat before a session's close fills at the next session's open.
    The fills are stamped with the ``ts`` of the bar they fill on.
    """
    c = np.asarray(close, dtype=np.float64).reshape(-1)
    p = np.asarray(positions, dtype=np.float64).reshape(-1)
    if p.size != c.size or ts.len() != c.size:
        raise ValueError(f"{ts.len()} times, {c.size} closes and {p.size} positions differ")
    if not np.isin(p, (0.0, 1.0)).all():
        raise ValueError("positions must be 0 (flat) or 1 (long)")
    fee_rate, slip = fee_bps / 1e4, slippage_bps / 1e4
    change = np.diff(np.concatenate(([0.0], p)))
    if opens is None:
        decided = np.flatnonzero(change)
        turns = decided
        reference = c
    else:
        reference = np.asarray(opens, dtype=np.float64).reshape(-1)
        if reference.size != c.size:
            raise ValueError(f"{reference.size} opens and {c.size} closes differ")
        # A decision fills on the next bar; the last bar's has no bar to fill on.
        decided = np.flatnonzero(change[:-1])
        turns = decided + 1
    sides: list[str] = []
    qtys: list[float] = []
    prices: list[float] = []
    fees: list[float] = []
    units_after = np.empty(turns.size)
    cash_after = np.empty(turns.size)
    units, money = 0.0, float(cash)
    for i, (d, t) in enumerate(zip(decided.tolist(), turns.tolist(), strict=True)):
        side = "buy" if change[d] > 0 else "sell"
        price = fill_price(float(reference[t]), side, slip)
        if side == "sell":
            qty = units
        elif opens is None:
            qty = money / (price * (1.0 + fee_rate))
        else:
            # The engine's size: the equity on the decision bar's close (flat: the cash).
            qty = money / float(c[d])
        fee = fill_fee(qty, price, fee_rate)
        if side == "buy":
            money -= qty * price + fee
            units = qty
        else:
            money += qty * price - fee
            units = 0.0
        sides.append(side)
        qtys.append(qty)
        prices.append(price)
        fees.append(fee)
        units_after[i], cash_after[i] = units, money
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
) -> dict[str, PositionBook]:
    """Buy-and-hold and the momentum rule on ``frame``'s bars (ts, close, in time order), same costs."""
    close = frame.get_column("close").to_numpy().astype(np.float64)
    paths = {BUY_AND_HOLD: np.ones(close.size), MOMENTUM: momentum_positions(frame)}
    ts = frame.get_column("ts")
    return {
        key: trade_positions(
            ts,
            close,
            path,
            symbol=symbol,
            cash=cash,
            fee_bps=fee_bps,
            slippage_bps=slippage_bps,
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
