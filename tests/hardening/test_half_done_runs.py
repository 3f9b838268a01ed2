"""A run leaves its whole result or a clear failure: no ledger without its report, no empty "traded".

A backtest whose report cannot be written stores none of its ledger rows (and one whose
ledger cannot be written leaves no report); a replay of an open session with no stored
bars -- SPY's live-trading or the coins' crypto-trading -- fails with "no bars for <date>"
(a Failed flow run, a non-zero exit) instead of reporting an empty session as traded.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from core.configs import CryptoTradingConfig, LiveTradingConfig, utc_midnight
from core.settings import get_settings
from flows.cli import main
from flows.crypto_trading import crypto_trading
from flows.live_trading import live_trading
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import save_agent
from tests.hardening.trading_world import World, build_world
from trading.ledger import Ledger
from trading.report import write_report
from warehouse.bars import ingest_bar_frames, load_bars
from warehouse.db import connect
from warehouse.registry import promote, write_model

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

OPEN_DAY_WITHOUT_BARS = date(2024, 7, 8)  # a Monday session after the world's bars end
HOLIDAY = date(2024, 7, 4)
COIN = "BTC/USD"
COIN_DAYS = (date(2024, 6, 28), date(2024, 7, 1))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("half-done"))


def error_lines(text: str) -> list[str]:
    """What the command said on stderr, less the backtest's progress bar and its costs line."""
    assert "Traceback" not in text
    return [
        line
        for line in text.splitlines()
        if line.strip() and "bar/s]" not in line and not line.startswith("costs: ")
    ]


def count(warehouse: Path, sql: str, params: list[Any]) -> int:
    with connect(warehouse) as con:
        return int(con.execute(sql, params).fetchall()[0][0])


def backtest_rows(warehouse: Path) -> int:
    """Every ledger row a backtest writes: decisions, orders, fills, equity."""
    return count(
        warehouse,
        "SELECT (SELECT count(*) FROM decisions WHERE mode = 'backtest')"
        " + (SELECT count(*) FROM orders WHERE mode = 'backtest')"
        " + (SELECT count(*) FROM fills WHERE mode = 'backtest')"
        " + (SELECT count(*) FROM equity WHERE account LIKE 'backtest:%')",
        [],
    )


# ---- backtest: report and ledger together, or neither ---------------------------------


def test_a_backtest_leaves_its_whole_result_or_nothing(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reports = tmp_path / "data" / "reports"
    monkeypatch.setenv("TRADINGML_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    mine = world.copy(tmp_path / "world")
    argv = [
        "backtest",
        "--start",
        "2024-07-01",
        "--end",
        "2024-07-03",
        "--warehouse",
        str(mine.warehouse),
    ]

    # The report step fails (a full disk): not one ledger row of the run stays.
    def no_space(path: Path, **kw: Any) -> Path:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr("flows.backtest.write_report", no_space)
    assert main(argv) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: [Errno 28] No space left on device: '{reports}/"), lines
    assert backtest_rows(mine.warehouse) == 0
    assert not reports.exists() or list(reports.iterdir()) == []
    monkeypatch.setattr("flows.backtest.write_report", write_report)

    # The ledger write fails: the report written before it is taken back.
    def locked(self: Ledger, con: Any = None) -> dict[str, int]:
        raise RuntimeError("the warehouse went away")

    real_flush = Ledger.flush
    monkeypatch.setattr(Ledger, "flush", locked)
    assert main(argv) == 2
    assert error_lines(capsys.readouterr().err) == ["error: the warehouse went away"]
    assert backtest_rows(mine.warehouse) == 0
    assert list(reports.iterdir()) == []  # no report, not even the partial one
    monkeypatch.setattr(Ledger, "flush", real_flush)

    # Nothing failing: both, the report under its own name.
    assert main(argv) == 0
    assert backtest_rows(mine.warehouse) > 0
    made = list(reports.iterdir())
    assert len(made) == 1 and made[0].suffix == ".html" and not made[0].name.startswith(".")


# ---- replay of a day with no stored bars ----------------------------------------------


def test_replaying_an_open_day_without_bars_fails(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    config = LiveTradingConfig(
        mode="replay", replay_date=OPEN_DAY_WITHOUT_BARS, warehouse=str(world.warehouse)
    )
    state = live_trading(config, return_state=True)
    assert state.is_failed()
    with pytest.raises(RuntimeError, match=f"^no bars for {OPEN_DAY_WITHOUT_BARS}: "):
        state.result()
    argv = [
        "trade",
        "--replay-date",
        str(OPEN_DAY_WITHOUT_BARS),
        "--warehouse",
        str(world.warehouse),
    ]
    assert main(argv) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"error: no bars for {OPEN_DAY_WITHOUT_BARS}")
    run_rows = count(
        world.warehouse,
        "SELECT count(*) FROM decisions WHERE run_id LIKE ?",
        [f"replay-SPY-{OPEN_DAY_WITHOUT_BARS}-%"],
    )
    assert run_rows == 0
    # A market holiday is still "closed", not a failure.
    closed = live_trading(
        LiveTradingConfig(mode="replay", replay_date=HOLIDAY, warehouse=str(world.warehouse))
    )
    assert closed["status"] == "closed"


def coin_warehouse(tmp: Path) -> Path:
    """Two days of synthetic BTC/USD minutes and an untrained coin agent in production."""
    warehouse = tmp / "warehouse.duckdb"
    start, end = utc_midnight(COIN_DAYS[0]), utc_midnight(COIN_DAYS[1])
    frames = SyntheticBarSource(SyntheticConfig(seed=3)).fetch_bars([COIN], "1Min", start, end)
    ingest_bar_frames(frames, warehouse, end)
    with connect(warehouse) as con:
        bars = load_bars(con, [COIN], "1Min", start, end)
    spec = FeatureSpec(symbols=(COIN,))
    scaler = FeatureScaler.fit(compute_features(bars, spec), spec.names())
    torch.manual_seed(2)
    arch = Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8)
    artifact = tmp / "models" / "dqn-BTC-hardening"
    sha = save_agent(artifact, NestedLSTMQNet(len(spec.names()), arch), spec, scaler, {"seed": 2})
    with connect(warehouse) as con:
        write_model(
            con,
            {
                "model_id": "dqn-BTC-hardening",
                "kind": "dqn",
                "symbol": COIN,
                "feature_schema_hash": spec.schema_hash(),
                "architecture": arch.to_dict(),
                "params": {"seed": 2},
                "metrics": {"objective": 0.0},
                "artifact_path": str(artifact),
                "artifact_sha256": sha,
                "stage": "candidate",
                "created_at": datetime(2024, 6, 30, tzinfo=UTC),
                "promoted_at": None,
            },
        )
        promote(con, "dqn-BTC-hardening", datetime(2024, 6, 30, 12, tzinfo=UTC))
    return warehouse


def test_replaying_a_crypto_day_without_bars_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = coin_warehouse(tmp_path)
    day = date(2024, 7, 10)  # coins trade every day: this one is simply not stored
    config = CryptoTradingConfig(
        coins=[COIN], mode="replay", replay_date=day, warehouse=str(warehouse)
    )
    state = crypto_trading(config, return_state=True)
    assert state.is_failed()
    with pytest.raises(RuntimeError, match=f"^no bars for {day}: no 1Min bars of {COIN}"):
        state.result()
    argv = ["crypto", "--coins", COIN, "--replay-date", str(day), "--warehouse", str(warehouse)]
    assert main(argv) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"error: no bars for {day}"), lines
    # A stored day still trades.
    stored = crypto_trading(
        CryptoTradingConfig(
            coins=[COIN],
            mode="replay",
            replay_date=date(2024, 6, 29),
            max_minutes=5,
            warehouse=str(warehouse),
        )
    )
    assert stored["status"] == "traded" and stored["minutes"] == 5
