"""Registry rows in DuckDB: promotion keeps exactly one production model; rows load their checked artifact."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from flows.cli import main
from models.features import FeatureScaler, FeatureSpec
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import ModelLoadError, load_registered_agent, save_agent
from warehouse.db import connect
from warehouse.registry import load_model_row, production_model_id, promote, write_model


def register(con: object, tmp_path: Path, model_id: str) -> None:
    torch.manual_seed(0)
    spec = FeatureSpec(symbols=("SPY",))
    n = len(spec.names())
    net = NestedLSTMQNet(n, Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8))
    scaler = FeatureScaler(spec.names(), [0.0] * n, [1.0] * n)
    sha = save_agent(tmp_path / model_id, net, spec, scaler, {})
    write_model(
        con,  # type: ignore[arg-type]
        {
            "model_id": model_id,
            "kind": "dqn",
            "symbol": "SPY",
            "feature_schema_hash": spec.schema_hash(),
            "architecture": net.arch.to_dict(),
            "params": {},
            "metrics": {"objective": 0.1},
            "artifact_path": str(tmp_path / model_id),
            "artifact_sha256": sha,
            "stage": "candidate",
            "created_at": datetime(2024, 1, 1, tzinfo=UTC),
            "promoted_at": None,
        },
    )


def test_promotion_keeps_one_production_model(warehouse_path: Path, tmp_path: Path) -> None:
    with connect(warehouse_path) as con:
        register(con, tmp_path, "m1")
        register(con, tmp_path, "m2")
        assert production_model_id(con, "dqn", "SPY") is None
        assert promote(con, "m1", datetime(2024, 2, 1, tzinfo=UTC)) is None
        assert promote(con, "m2", datetime(2024, 3, 1, tzinfo=UTC)) == "m1"
        stages = dict(con.execute("SELECT model_id, stage FROM models ORDER BY 1").fetchall())
        assert stages == {"m1": "archived", "m2": "production"}
        assert production_model_id(con, "dqn", "SPY") == "m2"
        with pytest.raises(KeyError, match="nope"):
            promote(con, "nope", datetime(2024, 3, 1, tzinfo=UTC))
        row = load_model_row(con, "m2")
    assert row is not None and row["metrics"] == {"objective": 0.1}
    policy = load_registered_agent(row, running_spec=FeatureSpec(symbols=("SPY",)))
    action, q, _ = policy.predict(([0.0] * len(policy.spec.names()), 0.0), None, True)
    assert action in (0, 1, 2) and q.shape == (3,)


def test_promote_command_refuses_an_altered_artifact(
    warehouse_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with connect(warehouse_path) as con:
        register(con, tmp_path, "m1")
    meta = tmp_path / "m1" / "meta.json"
    meta.write_text(meta.read_text().replace('"n_actions": 3', '"n_actions": 3 '))
    assert main(["promote", "m1", "--warehouse", str(warehouse_path)]) == 2
    assert "sha256" in capsys.readouterr().err
    with connect(warehouse_path) as con:
        assert production_model_id(con, "dqn", "SPY") is None
    with pytest.raises(ModelLoadError):
        with connect(warehouse_path) as con:
            row = load_model_row(con, "m1")
        assert row is not None
        load_registered_agent(row)
