"""The flows pass the session rule down: `train` then `backtest` of real daily S&P 500 bars hold the same positions."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from core.configs import (
    BacktestConfig,
    IngestBarsConfig,
    RiskConfig,
    TrainAgentConfig,
    utc_midnight,
)
from core.sessions import SessionRule, session_rule
from flows.backtest import backtest
from flows.ingest_bars import ingest_bars
from flows.train_agent import train_agent
from models.env import FLAT, HOLD, LONG, Costs
from models.qnet import greedy_q_paths
from models.registry import load_registered_agent, save_agent
from models.train import greedy_net_positions, held_out_sessions
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.registry import load_model_row, write_model

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

SYMBOL = "^GSPC"
START, SPLIT, END = date(2012, 1, 1), date(2016, 1, 1), date(2017, 1, 1)


def _make_it_trade(
    warehouse: Path,
    row: dict[str, Any],
    bars: pl.DataFrame,
    test_range: tuple[datetime, datetime],
    rule: SessionRule,
    directory: Path,
) -> None:
    """Re-centre the Q head of an agent too briefly trained to leave cash (as
    test_trading_flows.make_it_trade does): `hold` far below, `long` shifted by the median
    of Q(long) - Q(flat) over the held-out bars, so the choice flips with the features."""
    policy = load_registered_agent(row)
    test = held_out_sessions(bars, policy.spec, policy.scaler, test_range, rule=rule)
    q = greedy_q_paths(policy.net, test.features)[test.mask.numpy()]
    gap = float(np.median(q[:, 0, LONG] - q[:, 0, FLAT]))
    with torch.no_grad():
        policy.net.advantage.bias[HOLD] -= 1_000.0
        policy.net.advantage.bias[LONG] -= gap
    standard = {"feature_spec", "feature_schema_hash", "scaler", "architecture"}
    extra = {
        k: v for k, v in policy.meta.items() if k not in standard | {"n_features", "n_actions"}
    }
    sha = save_agent(directory, policy.net, policy.spec, policy.scaler, extra)
    with connect(warehouse) as con:
        write_model(con, {**row, "artifact_path": str(directory), "artifact_sha256": sha})


def test_daily_train_and_backtest_cut_the_same_episodes_and_never_force_a_flat(
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    ingest_bars(
        IngestBarsConfig(
            source="arch", symbols=[SYMBOL], start=START, end=END, warehouse=str(warehouse)
        )
    )
    trained = train_agent(
        TrainAgentConfig(
            symbols=[SYMBOL],
            timeframe="1Day",
            train_start=START,
            train_end=SPLIT,
            test_start=SPLIT,
            test_end=END,
            cycles=4,
            seeds=[1],
            architecture={"fast_hidden": 8, "slow_hidden": 4, "head_hidden": 8},
            params={"batch_sessions": 2, "train_every": 2},
            checkpoint_every=4,
            warehouse=str(warehouse),
            models_dir=str(tmp_path / "models"),
        )
    )
    (model_id,) = trained["models"]
    with connect(warehouse) as con:
        row = load_model_row(con, model_id)
        assert row is not None
        bars = load_bars(con, [SYMBOL], "1Day", utc_midnight(START), utc_midnight(END))
    # The model remembers how its ranges were cut: one quarter of trading days per episode.
    assert (row["params"]["calendar"], row["params"]["episode_bars"]) == ("XNYS", 63)
    rule = session_rule(SYMBOL, "1Day", "XNYS", episode_bars=63)
    test_range = (utc_midnight(SPLIT), utc_midnight(END))
    _make_it_trade(warehouse, row, bars, test_range, rule, tmp_path / "trading-agent")

    result = backtest(
        BacktestConfig(
            symbol=SYMBOL,
            model_id=model_id,
            start=SPLIT,
            end=END,
            warehouse=str(warehouse),
            reports_dir=str(tmp_path / "reports"),
            # Wide limits: 2016 has a -3.6% day (24 June), which the daily-loss switch would
            # rightly act on; this test is about the execution path, not the limits.
            risk=RiskConfig(daily_loss_limit=0.5, max_position_notional=1e12),
        )
    )
    with connect(warehouse) as con:
        decisions = con.sql(
            "SELECT ts, risk_reason FROM decisions WHERE run_id = ? ORDER BY ts",
            params=[result["run_id"]],
        ).pl()
        positions = con.sql(
            "SELECT ts, positions_value > 0 AS long FROM equity WHERE account = ? ORDER BY ts",
            params=[f"backtest:{result['run_id']}"],
        ).pl()
    # Daily bars: one step per bar, no forced flat (today's code flattened most months).
    assert decisions.height == 252
    reasons = [r for r in decisions.get_column("risk_reason").to_list() if r]
    assert not [r for r in reasons if "flatten" in r], reasons

    with connect(warehouse) as con:
        row = load_model_row(con, model_id)
    assert row is not None
    policy = load_registered_agent(row)
    test = held_out_sessions(bars, policy.spec, policy.scaler, test_range, rule=rule)
    held = greedy_net_positions(policy.net, test, Costs())
    evaluated = held[test.mask.numpy()]
    backtested = positions.get_column("long").to_numpy().astype(np.float32)
    assert 0.2 < evaluated.mean() < 0.8, "the re-centred agent should trade"
    # The backtest holds a decision's position from the next bar on.
    assert backtested[0] == 0.0
    assert np.array_equal(backtested[1:], evaluated[:-1])
