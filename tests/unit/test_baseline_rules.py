"""The benchmarks fill as the agent does (next bar's open), and the flat, trend and volatility-target rules hold hand-computed positions without look-ahead."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core.baselines import (
    BENCHMARK_LABELS,
    BUY_AND_HOLD,
    EXTRA_BENCHMARKS,
    FLAT,
    MOMENTUM,
    TREND,
    TREND_WINDOW,
    VOL_TARGETED,
    benchmark_books,
    momentum_positions,
    trade_positions,
    trend_positions,
    vol_target_positions,
)

CASH = 100.0


def _frame(close: list[float], open_: list[float | None] | None = None) -> pl.DataFrame:
    """Synthetic daily bars (ts, close[, open])."""
    start = datetime(2024, 1, 2, 21, tzinfo=UTC)
    cols: dict[str, object] = {
        "ts": pl.Series([start + timedelta(days=i) for i in range(len(close))]).cast(
            pl.Datetime("us", "UTC")
        ),
        "close": close,
    }
    if open_ is not None:
        cols["open"] = pl.Series(open_, dtype=pl.Float64)
    return pl.DataFrame(cols)


def test_benchmarks_fill_at_the_next_bars_open_as_the_agent() -> None:
    # Synthetic bars that gap: each opens 2% above the previous close.
    close = [100.0, 110.0, 120.0, 130.0]
    frame = _frame(close, [99.0, 102.0, 112.2, 122.4])
    bh = benchmark_books(frame, symbol="X", cash=CASH, fee_bps=10.0, slippage_bps=5.0)[BUY_AND_HOLD]
    (ts,) = bh.fills["ts"].to_list()
    (price,) = bh.fills["price"].to_list()
    (qty,) = bh.fills["qty"].to_list()
    assert ts == frame["ts"][1]  # decided on bar 0, filled on bar 1
    assert price == pytest.approx(102.0 * 1.0005, rel=1e-12)
    assert qty == pytest.approx(CASH / 100.0, rel=1e-12)  # sized on the decision close
    fee = qty * price * 1e-3
    assert bh.equity.tolist() == pytest.approx(
        [CASH] + [CASH - qty * price - fee + qty * c for c in close[1:]], rel=1e-12
    )
    # The agent's own fill rule on the same path gives the same book.
    agent = trade_positions(
        frame["ts"],
        close,
        np.ones(4),
        symbol="X",
        cash=CASH,
        fee_bps=10.0,
        slippage_bps=5.0,
        opens=frame["open"].to_numpy(),
    )
    assert agent.equity.tolist() == bh.equity.tolist()


def test_a_null_open_fills_at_that_bars_close() -> None:
    frame = _frame([100.0, 110.0, 120.0], [None, None, 121.0])
    bh = benchmark_books(frame, symbol="X", cash=CASH, fee_bps=0.0, slippage_bps=0.0)[BUY_AND_HOLD]
    assert bh.fills["price"].to_list() == [110.0]
    assert bh.equity[-1] == pytest.approx(CASH - 110.0 + 120.0)


def test_without_opens_the_benchmarks_fill_at_the_decision_close() -> None:
    bh = benchmark_books(
        _frame([100.0, 110.0]), symbol="X", cash=CASH, fee_bps=0.0, slippage_bps=0.0
    )[BUY_AND_HOLD]
    assert bh.fills["price"].to_list() == [100.0]
    assert bh.equity.tolist() == pytest.approx([CASH, 110.0])


def test_trend_rule_positions_by_hand() -> None:
    frame = _frame([1.0, 2.0, 3.0, 2.0, 1.0, 5.0])
    # 3-bar averages from bar 2: 2, 7/3, 2, 8/3; long where the close is above.
    assert trend_positions(frame, window=3).tolist() == [0, 0, 1, 0, 0, 1]
    assert TREND_WINDOW == 200
    assert BENCHMARK_LABELS[TREND] == "Trend (200-bar average)"


def test_vol_target_positions_by_hand() -> None:
    frame = _frame([100.0, 110.0, 100.0, 110.0, 110.0, 110.0])
    a = math.log(1.1)
    # Two-return windows (sample std): a*sqrt(2) at bars 2 and 3, a/sqrt(2) at bar 4, 0 at 5.
    expected = [0.0, 0.0, 0.1 / (a * math.sqrt(2)), 0.1 / (a * math.sqrt(2)), 1.0, 1.0]
    got = vol_target_positions(frame, bars_per_year=1.0, target=0.1, window=2)
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    # Annualising: 100 bars a year scale the volatility by 10.
    got = vol_target_positions(frame, bars_per_year=100.0, target=0.1, window=2)
    assert got[2] == pytest.approx(0.01 / (a * math.sqrt(2)), rel=1e-12)


def test_no_rule_looks_ahead() -> None:
    rng = np.random.default_rng(3)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.02, 400)))
    base = _frame(close.tolist())

    def vol(f: pl.DataFrame) -> np.ndarray:
        return vol_target_positions(f, 252.0)

    rules: dict[str, Callable[[pl.DataFrame], np.ndarray]] = {
        "momentum": momentum_positions,
        "trend": trend_positions,
        "vol": vol,
    }
    before = {name: rule(base) for name, rule in rules.items()}
    assert 0 < before["trend"].mean() < 1 and 0 < before["vol"].mean() < 1
    for t in (20, 199, 250, 398):
        moved = close.copy()
        moved[t + 1 :] *= 3.0  # a jump after bar t: no decision up to t may see it
        frame = _frame(moved.tolist())
        for name, rule in rules.items():
            after = rule(frame)
            assert after[: t + 1].tolist() == before[name][: t + 1].tolist(), (name, t)


def test_fractional_positions_trade_the_difference() -> None:
    close = [100.0, 110.0, 121.0, 110.0, 100.0, 120.0]
    w = [0.0, 0.5, 0.5, 1.0, 0.25, 0.0]
    book = trade_positions(
        _frame(close)["ts"], close, w, symbol="X", cash=CASH, fee_bps=0.0, slippage_bps=0.0
    )
    # Without costs, by hand: a change of w trades to w of the equity at that close; an
    # unchanged w keeps its units (no rebalancing while the price drifts).
    # bar 1: buy 50/110 units; bar 2: 50 + 50/110 * 121 = 105; bar 3: 50 + 50 = 100, then
    # buy 50/110 more (all in: 100/110 units); bar 4: 100/110 * 100 = 1000/11, then sell down
    # to a quarter of it; bar 5: three quarters in cash, a quarter up 20%.
    equity = [CASH, CASH, 105.0, 100.0, 1000 / 11, 1000 / 11 * (0.75 + 0.25 * 1.2)]
    assert book.equity.tolist() == pytest.approx(equity, rel=1e-12)
    assert book.fills["side"].to_list() == ["buy", "buy", "sell", "sell"]
    assert book.position_value[-1] == 0.0
    # Next-open fills on the same path work as well (the last decision never fills).
    nxt = trade_positions(
        _frame(close)["ts"],
        close,
        w,
        symbol="X",
        cash=CASH,
        fee_bps=1.0,
        slippage_bps=1.0,
        opens=close,
    )
    assert nxt.fills["ts"].to_list() == [_frame(close)["ts"][t] for t in (2, 4, 5)]
    with pytest.raises(ValueError, match="between -1"):
        trade_positions(
            _frame(close)["ts"], close, [1.5] * 6, symbol="X", cash=CASH, fee_bps=0, slippage_bps=0
        )


def test_the_extra_benchmarks_are_opt_in() -> None:
    rng = np.random.default_rng(1)
    # A synthetic walk that drifts up: the trend rule goes long after its 200 bars.
    close = (50.0 * np.exp(np.cumsum(rng.normal(0.003, 0.02, 300)))).tolist()
    frame = _frame(close, close)
    default = benchmark_books(frame, symbol="X", cash=CASH, fee_bps=1.0, slippage_bps=1.0)
    assert set(default) == {BUY_AND_HOLD, MOMENTUM}
    every = benchmark_books(
        frame,
        symbol="X",
        cash=CASH,
        fee_bps=1.0,
        slippage_bps=1.0,
        extra=EXTRA_BENCHMARKS,
        bars_per_year=252.0,
    )
    assert set(every) == {BUY_AND_HOLD, MOMENTUM, FLAT, TREND, VOL_TARGETED}
    assert every[FLAT].fills.height == 0 and every[FLAT].equity.tolist() == [CASH] * 300
    trend = trend_positions(frame)
    # One fill per change of the rule's position, the last bar's decision never fills.
    assert trend.sum() > 0
    assert every[TREND].fills.height == np.count_nonzero(np.diff(np.r_[0.0, trend])[:-1])
    assert 0 < every[VOL_TARGETED].position_value[-1] < every[VOL_TARGETED].equity[-1]
    with pytest.raises(ValueError, match="bars_per_year"):
        benchmark_books(
            frame, symbol="X", cash=CASH, fee_bps=1.0, slippage_bps=1.0, extra=(VOL_TARGETED,)
        )
