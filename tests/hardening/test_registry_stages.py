"""Issue 20: registry stages change only by promote, the gate, demote or rollback, each a history row;
a failed or never-evaluated model is not promoted; a flow whose every unit failed fails."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import torch

from adapters.synthetic import SyntheticBarSource
from core.configs import IngestBarsConfig, NightlyRetrainConfig, TrainAgentConfig
from core.universe import EQUITY_SYMBOLS
from flows.cli import main
from models.features import FeatureScaler, FeatureSpec
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import save_agent
from models.search import WORST_FITNESS
from warehouse.bars import ingest_bar_frames
from warehouse.db import connect
from warehouse.registry import (
    FAILED_OBJECTIVE,
    demote,
    load_model_row,
    load_promotion_history,
    production_model_id,
    promote,
    rollback,
    write_model,
)

T0 = datetime(2024, 2, 1, tzinfo=UTC)


def agent_row(tmp_path: Path, model_id: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """A registry row for a tiny SPY agent with a real, checked artifact, as train writes it."""
    torch.manual_seed(0)
    spec = FeatureSpec(symbols=("SPY",))
    n = len(spec.names())
    net = NestedLSTMQNet(n, Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8))
    sha = save_agent(
        tmp_path / model_id, net, spec, FeatureScaler(spec.names(), [0.0] * n, [1.0] * n), {}
    )
    return {
        "model_id": model_id,
        "kind": "dqn",
        "symbol": "SPY",
        "feature_schema_hash": spec.schema_hash(),
        "architecture": net.arch.to_dict(),
        "params": {},
        "metrics": metrics,
        "artifact_path": str(tmp_path / model_id),
        "artifact_sha256": sha,
        "stage": "candidate",
        "created_at": T0,
        "promoted_at": None,
    }


def register(con: duckdb.DuckDBPyConnection, tmp_path: Path, *ids: str) -> None:
    for model_id in ids:
        write_model(con, agent_row(tmp_path, model_id, {"objective": 0.1}))


def history(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return (
        load_promotion_history(con, "dqn", "SPY")
        .select("model_id", "from_stage", "to_stage", "actor", "replaced_model_id")
        .rows()
    )


def stage(con: duckdb.DuckDBPyConnection, model_id: str) -> str:
    row = load_model_row(con, model_id)
    assert row is not None
    return str(row["stage"])


# ---- re-registration keeps the stage ----


def test_registering_a_production_model_again_keeps_it_production(
    warehouse_path: Path, tmp_path: Path
) -> None:
    with connect(warehouse_path) as con:
        register(con, tmp_path, "m1")
        promote(con, "m1", T0)
        before = load_model_row(con, "m1")
        # What `tradingml train` writes on a re-run with the same config: same id, candidate.
        again = agent_row(tmp_path, "m1", {"objective": 0.2})
        write_model(con, {**again, "created_at": T0 + timedelta(days=1)})
        after = load_model_row(con, "m1")
        assert production_model_id(con, "dqn", "SPY") == "m1"
        assert len(history(con)) == 1  # re-registering is not a stage change
    assert before is not None and after is not None
    assert after["stage"] == "production" and after["promoted_at"] == before["promoted_at"]
    assert after["metrics"] == {"objective": 0.2}  # the rest of the row is updated


def test_a_new_row_cannot_be_written_straight_into_production(
    warehouse_path: Path, tmp_path: Path
) -> None:
    row = {**agent_row(tmp_path, "m1", {"objective": 0.1}), "stage": "production"}
    with connect(warehouse_path) as con:
        with pytest.raises(ValueError, match="promote"):
            write_model(con, row)
        assert load_model_row(con, "m1") is None


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_training_again_with_the_same_config_leaves_production_where_it_was(
    tmp_path: Path,
) -> None:
    from flows.ingest_bars import ingest_bars
    from flows.train_agent import train_agent

    warehouse = tmp_path / "warehouse.duckdb"
    symbols = ["SPY", "VTI", "VXUS", "BND"]
    start, split, end = date(2024, 6, 17), date(2024, 6, 24), date(2024, 6, 27)
    ingest_bars(
        IngestBarsConfig(
            source="synthetic", symbols=symbols, start=start, end=end, warehouse=str(warehouse)
        )
    )
    config = TrainAgentConfig(
        symbols=symbols,
        train_start=start,
        train_end=split,
        test_start=split,
        test_end=end,
        cycles=2,
        seeds=[3],
        architecture={"fast_hidden": 8, "slow_hidden": 4, "head_hidden": 8},
        params={"batch_sessions": 2, "train_every": 2},
        checkpoint_every=2,
        warehouse=str(warehouse),
        models_dir=str(tmp_path / "models"),
    )
    (model_id,) = train_agent(config)["models"]
    assert main(["promote", model_id, "--warehouse", str(warehouse)]) == 0
    with connect(warehouse) as con:
        promoted_at = load_model_row(con, model_id)["promoted_at"]  # type: ignore[index]
    assert train_agent(config)["models"] == [model_id]
    with connect(warehouse) as con:
        row = load_model_row(con, model_id)
    assert row is not None and (row["stage"], row["promoted_at"]) == ("production", promoted_at)


# ---- promotion history, demote, rollback ----


def test_every_stage_change_is_a_history_row(warehouse_path: Path, tmp_path: Path) -> None:
    with connect(warehouse_path) as con:
        register(con, tmp_path, "m1", "m2")
        assert promote(con, "m1", T0) is None
        assert promote(con, "m2", T0, actor="gate", reason="beats champion m1") == "m1"
        assert promote(con, "m2", T0 + timedelta(days=1)) is None  # already production: no-op
        assert history(con) == [
            ("m1", "candidate", "production", "promote", None),
            ("m1", "production", "archived", "gate", None),
            ("m2", "candidate", "production", "gate", "m1"),
        ]
        rows = load_promotion_history(con).to_dicts()
        view = con.execute("SELECT count(*) FROM v_promotion_history").fetchall()[0][0]
    assert [r["reason"] for r in rows] == [None, "replaced by m2", "beats champion m1"]
    assert all(r["changed_at"] == T0 for r in rows) and view == 3


def test_demote_leaves_no_production_model_and_says_so(
    warehouse_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with connect(warehouse_path) as con:
        register(con, tmp_path, "m1", "m2")
        promote(con, "m1", T0)
    assert main(["demote", "m1", "--warehouse", str(warehouse_path)]) == 0
    out = capsys.readouterr().out
    assert "no production dqn model for SPY" in out and "tradingml promote MODEL_ID" in out
    with connect(warehouse_path) as con:
        assert production_model_id(con, "dqn", "SPY") is None
        assert stage(con, "m1") == "archived"
        assert history(con)[-1] == ("m1", "production", "archived", "demote", None)
        with pytest.raises(ValueError, match="m2 is not in production"):
            demote(con, "m2", T0)
    assert main(["demote", "nope", "--warehouse", str(warehouse_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no model 'nope'")


def test_rollback_walks_back_through_earlier_production_models(
    warehouse_path: Path, tmp_path: Path
) -> None:
    with connect(warehouse_path) as con:
        register(con, tmp_path, "m1", "m2", "m3")
        for i, model_id in enumerate(("m1", "m2", "m3")):
            promote(con, model_id, T0 + timedelta(days=i))
        assert rollback(con, "dqn", "SPY", T0 + timedelta(days=5)) == ("m2", "m3")
        assert (production_model_id(con, "dqn", "SPY"), stage(con, "m3")) == ("m2", "archived")
        assert rollback(con, "dqn", "SPY", T0 + timedelta(days=6)) == ("m1", "m2")
        assert history(con)[-2:] == [
            ("m2", "production", "archived", "rollback", None),
            ("m1", "archived", "production", "rollback", "m2"),
        ]
        with pytest.raises(ValueError, match="no previous production dqn model for SPY"):
            rollback(con, "dqn", "SPY", T0 + timedelta(days=7))
        assert production_model_id(con, "dqn", "SPY") == "m1"  # the refusal changed nothing


def test_rollback_after_a_demote_restores_the_model_before_it(
    warehouse_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with connect(warehouse_path) as con:
        register(con, tmp_path, "m1", "m2")
        promote(con, "m1", T0)
        promote(con, "m2", T0 + timedelta(days=1))
    assert main(["demote", "m2", "--warehouse", str(warehouse_path)]) == 0
    assert "tradingml rollback dqn SPY restores m1" in capsys.readouterr().out
    assert main(["rollback", "dqn", "SPY", "--warehouse", str(warehouse_path)]) == 0
    assert "m1 is production again" in capsys.readouterr().out
    with connect(warehouse_path) as con:
        assert production_model_id(con, "dqn", "SPY") == "m1"
        assert stage(con, "m2") == "archived"


def test_rollback_without_a_previous_production_model_is_refused(
    warehouse_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rollback", "dqn", "SPY", "--warehouse", str(warehouse_path)]) == 2
    assert "nothing to roll back" in capsys.readouterr().err
    with connect(warehouse_path) as con:
        register(con, tmp_path, "m1")
        promote(con, "m1", T0)
    assert main(["rollback", "dqn", "SPY", "--warehouse", str(warehouse_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "m1 replaced no production model" in err
    with connect(warehouse_path) as con:
        assert production_model_id(con, "dqn", "SPY") == "m1"


# ---- promote refuses what was never (validly) evaluated ----


@pytest.mark.parametrize(
    ("metrics", "why"),
    [
        ({}, "no evaluation"),
        ({"total_return": 0.1}, "no objective"),
        ({"objective": math.nan}, "objective is nan"),
        ({"objective": math.inf}, "objective is inf"),
        ({"objective": WORST_FITNESS}, "evaluation failed"),
    ],
)
def test_promote_refuses_a_model_without_a_valid_evaluation(
    warehouse_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    metrics: dict[str, Any],
    why: str,
) -> None:
    with connect(warehouse_path) as con:
        write_model(con, agent_row(tmp_path, "m1", metrics))
    assert main(["promote", "m1", "--warehouse", str(warehouse_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: m1 cannot be promoted") and why in err
    with connect(warehouse_path) as con:
        assert production_model_id(con, "dqn", "SPY") is None
        assert history(con) == []


def test_promote_refuses_a_genome_of_a_failed_search(
    warehouse_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert FAILED_OBJECTIVE == WORST_FITNESS  # the registry knows the search's failure score
    path = tmp_path / "genome-x.json"
    path.write_text(json.dumps({"fast_hidden": 32}))
    with connect(warehouse_path) as con:
        write_model(
            con,
            {
                **agent_row(tmp_path, "unused", {}),
                "model_id": "genome-x",
                "kind": "genome",
                "metrics": {"objective": WORST_FITNESS, "fitness_std": 0.0},
                "artifact_path": str(path),
                "artifact_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            },
        )
    assert main(["promote", "genome-x", "--warehouse", str(warehouse_path)]) == 2
    assert "genome-x cannot be promoted: its evaluation failed" in capsys.readouterr().err
    with connect(warehouse_path) as con:
        assert production_model_id(con, "genome", "SPY") is None


# ---- flows whose every unit failed fail ----


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_evolve_with_every_candidate_failing_exits_non_zero_and_registers_nothing(
    tmp_path: Path,
) -> None:
    """The issue's case: bars, but none in the search's fixed validation window (May-June 2024).

    No capsys here: Prefect's console log handler would keep capsys's stream after the test
    closes it. tests/integration/test_evolve.py checks the message and the Failed state.
    """
    warehouse = tmp_path / "warehouse.duckdb"
    frames = SyntheticBarSource().fetch_bars(
        list(EQUITY_SYMBOLS),
        "1Min",
        datetime(2024, 1, 2, tzinfo=UTC),
        datetime(2024, 1, 6, tzinfo=UTC),
    )
    ingest_bar_frames(frames, warehouse, datetime(2025, 1, 1, tzinfo=UTC))
    argv = ["evolve", "--population", "3", "--generations", "1", "--cycles", "1"]
    assert main([*argv, "--runner", "serial", "--warehouse", str(warehouse)]) == 2
    with connect(warehouse) as con:
        assert con.execute("SELECT count(*) FROM models").fetchall()[0][0] == 0
        failed = con.execute("SELECT DISTINCT status FROM nas_individuals").fetchall()
    assert failed == [("failed",)]  # the failures are kept, to be read


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_nightly_retrain_with_every_symbol_failing_ends_failed(tmp_path: Path) -> None:
    from flows.nightly_retrain import nightly_retrain

    warehouse = tmp_path / "warehouse.duckdb"
    end = datetime(2024, 3, 22, tzinfo=UTC)
    # Two days of one coin: too few labeled rows for its forecaster; no SPY bars; no NOPE bars.
    frames = SyntheticBarSource().fetch_bars(["LTC/USD"], "1Min", end - timedelta(days=2), end)
    ingest_bar_frames(frames, warehouse, datetime(2024, 4, 1, tzinfo=UTC))
    config = NightlyRetrainConfig(
        coins=["LTC/USD", "NOPE/USD"],
        include_spy=True,
        agent_test_days=1,
        horizon_minutes=720,
        forecaster={"n_folds": 3, "n_estimators": 20, "min_train_rows": 50},
        cycles=2,
        seeds=[1],
        warehouse=str(warehouse),
        models_dir=str(tmp_path / "models"),
    )
    state = nightly_retrain(config, return_state=True)
    assert state.is_failed()
    with pytest.raises(RuntimeError, match=r"trained no agent: all 3 symbol\(s\) failed"):
        state.result()
    with connect(warehouse) as con:
        assert con.execute("SELECT count(*) FROM models WHERE kind = 'dqn'").fetchall()[0][0] == 0
