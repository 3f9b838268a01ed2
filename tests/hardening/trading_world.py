"""A small trading world for the hardening tests, built without any flow run (~2 s).

A week of synthetic SPY/VTI/VXUS/BND minute bars (24 June - 2 July 2024) and an untrained
tiny SPY agent, made to trade on 1 July (tests.integration.test_trading_flows.make_it_trade),
registered and promoted to production: what the live-trading flow needs in every mode.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import torch

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from core.configs import utc_midnight
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import save_agent
from tests.integration.test_trading_flows import DAY, SYMBOLS, make_it_trade
from warehouse.bars import ingest_bar_frames, load_bars
from warehouse.db import connect
from warehouse.registry import load_model_row, promote, write_model

BARS_START, BARS_END = date(2024, 6, 24), date(2024, 7, 3)
MODEL_ID = "dqn-SPY-hardening"

__all__ = ["DAY", "SYMBOLS", "World", "build_world"]


@dataclass(frozen=True)
class World:
    """A warehouse with bars and a production SPY agent."""

    warehouse: Path
    model_id: str
    artifact: Path

    def copy(self, to: Path) -> World:
        """The same world in `to` (warehouse and artifact), registry pointing at the copy."""
        to.mkdir(parents=True, exist_ok=True)
        warehouse = to / self.warehouse.name
        shutil.copy(self.warehouse, warehouse)
        artifact = to / self.artifact.name
        shutil.copytree(self.artifact, artifact)
        with connect(warehouse) as con:
            con.execute(
                "UPDATE models SET artifact_path = ? WHERE model_id = ?",
                [str(artifact), self.model_id],
            )
        return World(warehouse, self.model_id, artifact)


def build_world(tmp: Path) -> World:
    warehouse = tmp / "warehouse.duckdb"
    source = SyntheticBarSource(SyntheticConfig(seed=11))
    frames = source.fetch_bars(SYMBOLS, "1Min", utc_midnight(BARS_START), utc_midnight(BARS_END))
    ingest_bar_frames(frames, warehouse, datetime(2024, 7, 3, tzinfo=UTC))
    with connect(warehouse) as con:
        bars = load_bars(con, SYMBOLS, "1Min", utc_midnight(BARS_START), utc_midnight(BARS_END))
    spec = FeatureSpec(symbols=tuple(SYMBOLS))
    features = compute_features(bars, spec)
    scaler = FeatureScaler.fit(features.filter(features["session"] < DAY), spec.names())
    torch.manual_seed(5)
    arch = Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8)
    net = NestedLSTMQNet(len(spec.names()), arch)
    first = tmp / "models" / MODEL_ID
    sha = save_agent(first, net, spec, scaler, {"seed": 5})
    row = {
        "model_id": MODEL_ID,
        "kind": "dqn",
        "symbol": spec.traded,
        "feature_schema_hash": spec.schema_hash(),
        "architecture": arch.to_dict(),
        "params": {"seed": 5},
        "metrics": {"objective": 0.0},
        "artifact_path": str(first),
        "artifact_sha256": sha,
        "stage": "candidate",
        "created_at": datetime(2024, 6, 30, tzinfo=UTC),
        "promoted_at": None,
    }
    with connect(warehouse) as con:
        write_model(con, row)
    artifact = tmp / "models" / f"{MODEL_ID}-trading"
    make_it_trade(warehouse, row, bars, artifact)
    with connect(warehouse) as con:
        promote(con, MODEL_ID, datetime(2024, 6, 30, 12, tzinfo=UTC))
        stored = load_model_row(con, MODEL_ID)
    assert stored is not None and stored["stage"] == "production"
    assert stored["artifact_path"] == str(artifact)
    return World(warehouse, MODEL_ID, artifact)
