"""Planted agents and bars whose held-out results are known in advance: the gate tests' fixtures (nightly, demo)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from models.features import FeatureScaler, FeatureSpec
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import save_agent
from warehouse.registry import write_model

PLANTED = "ZZZ/USD"
PLANTED_SPEC = FeatureSpec(symbols=(PLANTED,))
START = datetime(2024, 3, 1, tzinfo=UTC)
"""The first planted bar: 1 March 2024, 00:00 UTC."""
DAY = timedelta(days=1)


def planted_bars(daily_returns: list[float]) -> pl.DataFrame:
    """SYNTHETIC minute bars of one coin from START: each UTC day moves by its given return, smoothly."""
    steps: list[float] = []
    for r in daily_returns:
        steps += [float(np.log1p(r)) / 1439] * 1439 + [0.0]  # the move happens inside the day
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(steps)[:-1]]))
    ts = pl.datetime_range(START, START + timedelta(minutes=len(close) - 1), "1m", eager=True)
    return pl.DataFrame(
        {
            "symbol": PLANTED,
            "timeframe": "1Min",
            "ts": ts,
            "open": close,
            "high": close * 1.0005,
            "low": close * 0.9995,
            "close": close,
            "volume": 1.0,
            "trade_count": 1,
            "vwap": close,
            "source": "synthetic:test",
        }
    )


def planted_agent(con: Any, models: Path, model_id: str, action: int) -> None:
    """A registered agent (trained on START's first 3 days) that always takes `action` (0 flat,
    2 long): every weight 0, one bias 1."""
    torch.manual_seed(0)
    n = len(PLANTED_SPEC.names())
    net = NestedLSTMQNet(n, Architecture(fast_hidden=4, slow_hidden=2, head_hidden=4))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.advantage.bias[action] = 1.0
    scaler = FeatureScaler(PLANTED_SPEC.names(), [0.0] * n, [1.0] * n)
    sha = save_agent(models / model_id, net, PLANTED_SPEC, scaler, {})
    write_model(
        con,
        {
            "model_id": model_id,
            "kind": "dqn",
            "symbol": PLANTED,
            "feature_schema_hash": PLANTED_SPEC.schema_hash(),
            "architecture": net.arch.to_dict(),
            "params": {
                "train_range": [str(START), str(START + 3 * DAY)],
                "data_sources": ["synthetic:test"],
            },
            "metrics": {},
            "artifact_path": str(models / model_id),
            "artifact_sha256": sha,
            "stage": "candidate",
            "created_at": START,
            "promoted_at": None,
        },
    )
