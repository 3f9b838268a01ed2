"""nightly-retrain's SPY agent trains with the promoted genome of SPY (SYNTHETIC minute bars, tiny budgets)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.synthetic import SyntheticBarSource
from core.universe import EQUITY_SYMBOLS
from flows.nightly_retrain import nightly_retrain
from models.genome import Genome
from models.qnet import Architecture
from models.registry import META
from tests.integration.nightly_budget import tiny_nightly
from warehouse.bars import ingest_bar_frames
from warehouse.db import connect
from warehouse.registry import load_model_row, promote, write_model

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]

START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 3, 22, tzinfo=UTC)

# Every gene off the built-in choice where the gene has room, small enough to train in seconds.
GENOME: dict[str, Any] = {
    "fast_hidden": 16,
    "fast_layers": 2,
    "slow_hidden": 8,
    "slow_layers": 2,
    "slow_stride": 30,
    "head_hidden": 16,
    "dueling": True,
    "return_windows": [1, 5, 30],
    "lr": 0.003,
    "gamma": 0.95,
    "batch_sessions": 8,
    "target_update_every": 5,
    "sentiment_inputs": ["symbol_60m", "market_60m"],
}


def _register_genome(warehouse: Path, folder: Path, genome: Genome, promoted: bool) -> str:
    """A genome registered as the evolve-architecture flow registers one; promoted if asked."""
    model_id = f"genome-{genome.hash()}"
    path = folder / f"{model_id}.json"
    path.write_text(json.dumps(genome.to_dict(), indent=2, sort_keys=True))
    with connect(warehouse) as con:
        write_model(
            con,
            {
                "model_id": model_id,
                "kind": "genome",
                "symbol": "SPY",
                "feature_schema_hash": "-",
                "architecture": genome.to_dict(),
                "params": {"search_id": "test"},
                "metrics": {"objective": 0.01},
                "artifact_path": str(path),
                "artifact_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "stage": "candidate",
                "created_at": START,
                "promoted_at": None,
            },
        )
        if promoted:
            promote(con, model_id, datetime(2024, 3, 25, tzinfo=UTC))
    return model_id


def test_the_nightly_spy_agent_trains_with_the_promoted_genome(tmp_path: Path) -> None:
    warehouse = tmp_path / "w.duckdb"
    source = SyntheticBarSource()
    now = datetime(2024, 4, 1, tzinfo=UTC)
    ingest_bar_frames(source.fetch_bars(list(EQUITY_SYMBOLS), "1Min", START, END), warehouse, now)
    genome = Genome.from_dict(GENOME)
    # A candidate that was never promoted must not be picked up.
    _register_genome(warehouse, tmp_path, Genome.from_dict({**GENOME, "fast_hidden": 32}), False)
    genome_id = _register_genome(warehouse, tmp_path, genome, True)

    config = tiny_nightly(
        warehouse,
        tmp_path / "models",
        coins=[],
        include_spy=True,
        architecture={},  # nothing overrides the genome's network
        params={"train_every": 2, "batch_sessions": 2, "replay_capacity": 16},
    )
    result = nightly_retrain(config)
    [agent] = result["symbols"]["SPY"]["agents"]
    with connect(warehouse) as con:
        row = load_model_row(con, agent["model_id"])
    assert row is not None and row["kind"] == "dqn"
    wanted = genome.architecture().to_dict()
    assert wanted != Architecture().to_dict()
    assert row["architecture"] == wanted
    assert row["params"]["genome"] == genome_id
    # The genome's training choices, then the config's explicit params on top (as train-agent).
    assert row["params"]["lr"] == 0.003 and row["params"]["gamma"] == 0.95
    assert row["params"]["batch_sessions"] == 2 and row["params"]["cycles"] == 4

    meta = json.loads((Path(row["artifact_path"]) / META).read_text())
    assert meta["architecture"] == wanted
    assert meta["genome"] == genome_id
    assert meta["feature_spec"]["return_windows"] == [1, 5, 30]
    assert meta["feature_spec"]["sentiment_inputs"] == ["symbol_60m", "market_60m"]
    assert meta["feature_spec"]["symbols"] == list(EQUITY_SYMBOLS)
