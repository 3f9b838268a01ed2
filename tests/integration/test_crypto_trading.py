"""crypto-trading: the coin agents as one equal-weight portfolio on the live execution path (replay)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flows.config import CryptoTradingConfig, IngestBarsConfig, TrainAgentConfig
from flows.crypto_trading import crypto_trading
from flows.ingest_bars import ingest_bars
from flows.live_trading import LiveTradingRefused, load_compatible_model
from flows.train_agent import train_agent
from models.allocator import AllocatorConfig, save_allocator, train_allocator
from trading.allocation import coin_weights
from warehouse.db import connect
from warehouse.registry import promote, write_model

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

COINS = ["BTC/USD", "ETH/USD"]
BARS_START, BARS_END = date(2024, 6, 1), date(2024, 6, 9)
TRAIN_END = date(2024, 6, 6)
DAY = date(2024, 6, 8)


@dataclass(frozen=True)
class Shared:
    warehouse: Path
    models: dict[str, str]


@pytest.fixture(scope="module")
def shared(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Shared:
    tmp = tmp_path_factory.mktemp("crypto-trading")
    warehouse = tmp / "warehouse.duckdb"
    ingest_bars(
        IngestBarsConfig(
            source="synthetic",
            symbols=[*COINS, "LTC/USD"],
            start=BARS_START,
            end=BARS_END,
            warehouse=str(warehouse),
        )
    )
    models = {}
    for coin in COINS:
        trained = train_agent(
            TrainAgentConfig(
                symbols=[coin],
                train_start=BARS_START,
                train_end=TRAIN_END,
                test_start=TRAIN_END,
                test_end=BARS_END,
                cycles=4,
                seeds=[1],
                architecture={"fast_hidden": 8, "slow_hidden": 4, "head_hidden": 8},
                params={"batch_sessions": 2, "train_every": 2},
                checkpoint_every=4,
                warehouse=str(warehouse),
                models_dir=str(tmp / "models"),
            )
        )
        (models[coin],) = trained["models"]
        with connect(warehouse) as con:
            promote(con, models[coin], datetime(2024, 6, 8, tzinfo=UTC))
    return Shared(warehouse, models)


def test_replay_decides_every_coin_each_minute_from_one_account(shared: Shared) -> None:
    result = crypto_trading(
        CryptoTradingConfig(
            coins=[*COINS, "LTC/USD"],
            mode="replay",
            replay_date=DAY,
            start_minute=600,
            max_minutes=30,
            warehouse=str(shared.warehouse),
        )
    )
    assert result["status"] == "traded"
    assert result["coins"] == COINS
    assert result["skipped"] == ["LTC/USD"]  # no production agent: not traded
    assert result["weight_each"] == 0.5
    assert result["decisions"] == {coin: 30 for coin in COINS}
    with connect(shared.warehouse) as con:
        models = dict(
            con.execute(
                "SELECT symbol, any_value(model_id) FROM decisions WHERE run_id = ? GROUP BY symbol",
                [result["run_id"]],
            ).fetchall()
        )
        equity = con.execute(
            "SELECT count(*), count(DISTINCT ts) FROM equity WHERE account = ?",
            [result["account"]],
        ).fetchall()[0]
        first = con.execute(
            "SELECT min(ts) FROM decisions WHERE run_id = ?", [result["run_id"]]
        ).fetchall()[0][0]
    assert models == shared.models
    # One account: one equity point per minute, not one per coin.
    assert equity == (30, 30)
    assert first == datetime(2024, 6, 8, 10, 0, tzinfo=UTC)  # decision on the 09:59 bar, at 10:00


def test_a_rerun_writes_nothing_new(shared: Shared) -> None:
    config = CryptoTradingConfig(
        coins=COINS,
        mode="replay",
        replay_date=DAY,
        start_minute=60,
        max_minutes=10,
        warehouse=str(shared.warehouse),
    )
    first = crypto_trading(config)

    def counts() -> tuple[int, int]:
        with connect(shared.warehouse) as con:
            row = con.execute(
                "SELECT (SELECT count(*) FROM decisions WHERE run_id = ?),"
                " (SELECT count(*) FROM equity WHERE account = ?)",
                [first["run_id"], first["account"]],
            ).fetchall()[0]
        return int(row[0]), int(row[1])

    before = counts()
    again = crypto_trading(config)
    assert again["run_id"] == first["run_id"]
    assert counts() == before == (20, 10)


def test_refusals(shared: Shared) -> None:
    with pytest.raises(LiveTradingRefused, match="no coin has a production dqn model"):
        crypto_trading(
            CryptoTradingConfig(coins=["LTC/USD"], mode="replay", warehouse=str(shared.warehouse))
        )
    with pytest.raises(LiveTradingRefused, match="not built yet"):
        crypto_trading(
            CryptoTradingConfig(coins=COINS, mode="paper", warehouse=str(shared.warehouse))
        )


def test_the_production_allocator_sets_the_day_weights(shared: Shared, tmp_path: Path) -> None:
    """With a promoted SVM allocator, each coin trades the allocator's weight for the day."""
    rng = np.random.default_rng(0)
    periods = pl.datetime_range(
        datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 12, 1, tzinfo=UTC), "1d", eager=True
    )
    rows = []
    for period in periods:
        for coin in COINS:
            q_adv, forecast = rng.normal(), rng.normal() / 50
            rows.append(
                {
                    "period": period,
                    "symbol": coin,
                    "q_adv": q_adv,
                    "forecast": forecast,
                    "sentiment": rng.normal() / 5,
                    "vol": abs(rng.normal()) / 100,
                    "drawdown": -abs(rng.normal()) / 10,
                    "next_return": 0.01 * q_adv + rng.normal() / 200,
                }
            )
    fit = train_allocator(pl.DataFrame(rows), AllocatorConfig())
    artifact = tmp_path / "allocator"
    sha = save_allocator(artifact, fit.allocator)
    warehouse = tmp_path / "w.duckdb"
    shutil.copy(shared.warehouse, warehouse)
    with connect(warehouse) as con:
        write_model(
            con,
            {
                "model_id": "svm-test",
                "kind": "svm_allocator",
                "symbol": "CRYPTO",
                "feature_schema_hash": "test",
                "architecture": {},
                "params": {},
                "metrics": {},
                "artifact_path": str(artifact),
                "artifact_sha256": sha,
                "stage": "candidate",
                "created_at": datetime(2024, 6, 8, tzinfo=UTC),
                "promoted_at": None,
            },
        )
        promote(con, "svm-test", datetime(2024, 6, 8, tzinfo=UTC))
        agents = {coin: load_compatible_model(con, coin, None) for coin in COINS}
        expected, source = coin_weights(con, agents, datetime(2024, 6, 8, tzinfo=UTC))
    assert source == "allocator svm-test"
    assert sum(expected.values()) <= 1.0 + 1e-9

    result = crypto_trading(
        CryptoTradingConfig(
            coins=COINS, mode="replay", replay_date=DAY, max_minutes=5, warehouse=str(warehouse)
        )
    )
    assert result["weights"] == expected
    assert result["weights_from"] == "allocator svm-test"
    with connect(warehouse) as con:
        used = dict(
            con.execute(
                "SELECT symbol, any_value(allocation) FROM decisions WHERE run_id = ? GROUP BY symbol",
                [result["run_id"]],
            ).fetchall()
        )
    assert used == pytest.approx(expected)
