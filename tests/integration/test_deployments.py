"""prefect.yaml against a real local Prefect server: deploy everything, run a deployment on a worker."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.prefect_server import api as _api
from tests.prefect_server import prefect_cli as _prefect
from tests.prefect_server import running_prefect_server
from warehouse.db import connect

pytestmark = [pytest.mark.slow, pytest.mark.prefect]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with running_prefect_server(tmp_path_factory.mktemp("prefect-server-home")) as env:
        yield env


@pytest.fixture(scope="module")
def deployed(prefect_server: dict[str, str]) -> str:
    """The `local` process pool and every deployment of prefect.yaml; the deploy command's output."""
    _prefect(prefect_server, "work-pool", "create", "local", "--type", "process")
    return _prefect(prefect_server, "--no-prompt", "deploy", "--all")


def _run_on_worker(env: dict[str, str], deployment: str, params: dict[str, Any]) -> dict[str, Any]:
    """Start a run of the deployment, let a process worker execute it, and return the run."""
    out = _prefect(env, "deployment", "run", deployment, "--params", json.dumps(params))
    found = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert found, out
    _prefect(env, "worker", "start", "--pool", "local", "--run-once", timeout=400)
    run: dict[str, Any] = _api(env, f"/flow_runs/{found.group(1)}")
    return run


def test_deploy_all_and_run_ingest_on_a_process_worker(
    prefect_server: dict[str, str], deployed: str, tmp_path: Path
) -> None:
    env = prefect_server
    for name in (
        "ingest-bars/ingest-bars",
        "ingest-bars/hourly",
        "ingest-bars/nightly-backfill",
        "scrape-reddit/every-15-minutes",
        "train-agent/train-agent",
        "evolve-architecture/evolve-architecture",
        "nightly-retrain/nightly-retrain",
        "live-trading/live-trading",
        "crypto-trading/crypto-trading",
        "backtest/backtest",
        "evaluate/evaluate",
        "demo/demo",
    ):
        assert name in deployed, name

    warehouse = tmp_path / "deployed.duckdb"
    params = {"config": {"source": "arch", "start": "2018-01-01", "warehouse": str(warehouse)}}
    run = _run_on_worker(env, "ingest-bars/ingest-bars", params)
    assert (run["deployment_id"] is not None, run["state_type"]) == (True, "COMPLETED")
    with connect(warehouse) as con:
        rows = con.execute(
            "SELECT symbol, count(*) FROM bars GROUP BY symbol ORDER BY symbol"
        ).fetchall()
    assert rows == [("^GSPC", 251), ("^IXIC", 251)]  # NYSE sessions in 2018


@pytest.mark.parametrize(
    ("deployment", "cron", "zone"),
    [
        ("ingest-bars/ingest-bars", "15 17 * * 1-5", "America/New_York"),
        ("ingest-bars/hourly", "5 * * * *", "UTC"),
        ("ingest-bars/nightly-backfill", "30 1 * * *", "America/New_York"),
        ("scrape-reddit/every-15-minutes", "*/15 * * * *", "UTC"),
        ("nightly-retrain/nightly-retrain", "0 2 * * *", "America/New_York"),
        ("live-trading/live-trading", "25 9 * * 1-5", "America/New_York"),
        ("crypto-trading/crypto-trading", "0 0 * * *", "UTC"),
    ],
)
def test_the_schedules_are_defined_but_off(
    prefect_server: dict[str, str], deployed: str, deployment: str, cron: str, zone: str
) -> None:
    out = _prefect(prefect_server, "deployment", "inspect", deployment)
    assert cron in out
    assert zone in out
    assert "'active': False" in out or '"active": false' in out


def test_only_one_live_trading_run_at_a_time_and_backtests_are_unscheduled(
    prefect_server: dict[str, str], deployed: str
) -> None:
    live = _api(prefect_server, "/deployments/name/live-trading/live-trading")
    # Prefect 3.8 keeps a deployment's concurrency_limit as a global concurrency limit.
    assert live["global_concurrency_limit"]["limit"] == 1
    assert live["entrypoint"] == "flows/live_trading.py:live_trading"
    backtest = _api(prefect_server, "/deployments/name/backtest/backtest")
    assert backtest["schedules"] == [] and backtest["global_concurrency_limit"] is None
    assert backtest["entrypoint"] == "flows/backtest.py:backtest"


def _prepare_replay_warehouse(warehouse: Path, models: Path) -> str:
    """Two sessions of synthetic SPY bars and a small (untrained) SPY agent, promoted."""
    import torch

    from adapters.synthetic import SyntheticBarSource
    from models.features import FeatureScaler, FeatureSpec
    from models.qnet import Architecture, NestedLSTMQNet
    from models.registry import save_agent
    from warehouse.bars import ingest_bar_frames
    from warehouse.registry import promote, write_model

    frames = SyntheticBarSource().fetch_bars(
        ["SPY"], "1Min", datetime(2024, 6, 28, tzinfo=UTC), datetime(2024, 7, 2, tzinfo=UTC)
    )
    assert ingest_bar_frames(frames, warehouse, datetime(2024, 7, 2, tzinfo=UTC)).inserted == 780
    torch.manual_seed(0)
    spec = FeatureSpec(symbols=("SPY",))
    n = len(spec.names())
    net = NestedLSTMQNet(n, Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8))
    model_id = "dqn-SPY-deployed"
    sha = save_agent(
        models / model_id, net, spec, FeatureScaler(spec.names(), [0.0] * n, [1.0] * n), {}
    )
    with connect(warehouse) as con:
        write_model(
            con,
            {
                "model_id": model_id,
                "kind": "dqn",
                "symbol": "SPY",
                "feature_schema_hash": spec.schema_hash(),
                "architecture": net.arch.to_dict(),
                "params": {},
                "metrics": {"objective": 0.0},
                "artifact_path": str(models / model_id),
                "artifact_sha256": sha,
                "stage": "candidate",
                "created_at": datetime(2024, 6, 30, tzinfo=UTC),
                "promoted_at": None,
            },
        )
        promote(con, model_id, datetime(2024, 6, 30, tzinfo=UTC))
    return model_id


def test_live_trading_deployment_replays_a_session_on_a_process_worker(
    prefect_server: dict[str, str], deployed: str, tmp_path: Path
) -> None:
    warehouse = tmp_path / "replay.duckdb"
    model_id = _prepare_replay_warehouse(warehouse, tmp_path / "models")
    config = {
        "mode": "replay",
        "replay_date": "2024-07-01",
        "max_minutes": 20,
        "warehouse": str(warehouse),
    }
    run = _run_on_worker(prefect_server, "live-trading/live-trading", {"config": config})
    assert (run["deployment_id"] is not None, run["state_type"]) == (True, "COMPLETED")
    with connect(warehouse) as con:
        decisions = con.execute(
            "SELECT run_id, model_id, mode, min(ts), count(*) FROM decisions GROUP BY ALL"
        ).fetchall()
        fills = con.execute(
            "SELECT count(*), count(d.decision_id) FROM fills f LEFT JOIN orders o"
            " USING (client_order_id) LEFT JOIN decisions d ON d.decision_id = o.decision_id"
        ).fetchall()[0]
        equity = con.execute("SELECT count(*) FROM equity").fetchall()[0][0]
    # The open is 09:30 New York (13:30 UTC); the first decision comes when that bar closes.
    [(run_id, used, mode, first, n)] = decisions
    assert (used, mode, n) == (model_id, "replay", 20)
    assert run_id.startswith("replay-SPY-2024-07-01-")
    assert first == datetime(2024, 7, 1, 13, 31, tzinfo=UTC)
    # Fills there may or may not be (an untrained agent); each one traces back to a decision.
    assert fills[0] == fills[1] and equity == 20
