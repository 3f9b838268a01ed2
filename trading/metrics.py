"""Performance metrics of an equity curve and its fills: re-exported from core.metrics, where train and backtest share them."""

from __future__ import annotations

from core.metrics import (
    SUMMARY_KEYS,
    FloatArray,
    cagr,
    calmar,
    daily_equity,
    downside_deviation,
    drawdown_series,
    exposure,
    hit_rate,
    max_drawdown,
    returns_from_equity,
    round_trips,
    sharpe,
    sortino,
    summarize,
    total_return,
    turnover,
)

__all__ = [
    "SUMMARY_KEYS",
    "FloatArray",
    "cagr",
    "calmar",
    "daily_equity",
    "downside_deviation",
    "drawdown_series",
    "exposure",
    "hit_rate",
    "max_drawdown",
    "returns_from_equity",
    "round_trips",
    "sharpe",
    "sortino",
    "summarize",
    "total_return",
    "turnover",
]
