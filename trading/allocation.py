"""Portfolio weights for the coin agents: the production SVM allocator's, or equal weights without one."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from models.allocator import load_allocator
from models.gate import ALLOCATOR_SYMBOL
from models.portfolio import compute_allocator_panel, compute_q_advantage
from models.registry import AgentPolicy
from trading.inputs import input_loader
from warehouse.bars import load_bars
from warehouse.registry import load_model_row, production_model_id

ALLOCATOR_KIND = "svm_allocator"
HISTORY = timedelta(days=35)  # the panel's drawdown window (30 days) and a margin


def coin_weights(
    con: Any,
    agents: dict[str, tuple[dict[str, Any], AgentPolicy]],
    day_start: datetime,
) -> tuple[dict[str, float], str]:
    """Each traded coin's weight for the UTC day that starts at `day_start`, and where it came from.

    With a production allocator: its weights on the panel row stamped `day_start` (the end
    of the day before: every input known), computed from each coin's agent exactly as the
    nightly retrain built its training panel. Without one: 1/N each.
    """
    equal = {coin: 1.0 / len(agents) for coin in agents}
    chosen = production_model_id(con, ALLOCATOR_KIND, ALLOCATOR_SYMBOL)
    if chosen is None:
        return equal, "equal weight (no production allocator)"
    row = load_model_row(con, chosen)
    assert row is not None
    allocator = load_allocator(Path(str(row["artifact_path"])), str(row["artifact_sha256"]))
    drawdown_days = int((row.get("params") or {}).get("drawdown_days", 30))
    rows = []
    for coin, (agent_row, policy) in sorted(agents.items()):
        bars = load_bars(con, [coin], "1Min", day_start - HISTORY, day_start)
        if bars.height == 0:
            continue
        loader = input_loader(policy.spec, agent_row.get("params") or {})
        sentiment, forecasts = (
            loader(con, day_start - HISTORY, day_start) if loader else (None, None)
        )
        q_adv = compute_q_advantage(policy, bars, sentiment, forecasts)
        panel = compute_allocator_panel(
            coin, bars, q_adv, sentiment, forecasts, drawdown_days=drawdown_days
        )
        rows.append(panel.filter(pl.col("period") == day_start))
    frame = pl.concat(rows) if rows else pl.DataFrame()
    if frame.height == 0:
        return equal, f"equal weight (no panel rows for {day_start:%Y-%m-%d} for {chosen})"
    weights = allocator.weights(frame.with_columns(pl.lit(None, pl.Float64).alias("next_return")))
    out = {coin: 0.0 for coin in agents}
    for symbol, weight in weights.select("symbol", "weight").iter_rows():
        out[str(symbol)] = float(weight)
    return out, f"allocator {chosen}"
