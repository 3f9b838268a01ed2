"""Buy-and-hold and the momentum rule beside a strategy: re-exported from core.baselines, the one implementation train and backtest share."""

from __future__ import annotations

from core.baselines import (
    BENCHMARK_LABELS,
    BENCHMARK_RULES,
    BUY_AND_HOLD,
    MOMENTUM,
    MOMENTUM_WINDOW,
    PositionBook,
    benchmark_books,
    benchmark_metrics,
    momentum_label,
    momentum_positions,
    periods_per_year,
    trade_positions,
)

__all__ = [
    "BENCHMARK_LABELS",
    "BENCHMARK_RULES",
    "BUY_AND_HOLD",
    "MOMENTUM",
    "MOMENTUM_WINDOW",
    "PositionBook",
    "benchmark_books",
    "benchmark_metrics",
    "momentum_label",
    "momentum_positions",
    "periods_per_year",
    "trade_positions",
]
