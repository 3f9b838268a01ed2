"""nightly-retrain's allocator on a small SYNTHETIC warehouse: out-of-sample panel, traded P&L, the statistical gate."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from adapters.synthetic import SyntheticBarSource
from core.configs import NightlyRetrainConfig
from flows.nightly_retrain import nightly_retrain
from tests.integration.nightly_budget import tiny_nightly
from warehouse.bars import ingest_bar_frames
from warehouse.db import connect
from warehouse.gate import load_promotion_decisions
from warehouse.registry import load_model_row
from warehouse.trials import load_trial_sharpes

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]

START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 3, 22, tzinfo=UTC)  # exclusive: the newest bar is on 21 March
TEST_START = datetime(2024, 3, 8, tzinfo=UTC)  # 14 held-out days
COINS = ["BTC/USD", "ETH/USD"]


def config(warehouse: Path, models: Path) -> NightlyRetrainConfig:
    """Tiny budgets (tests/integration/nightly_budget.py), the two coins only: the allocator
    needs out-of-sample days to fit on and later ones to be judged on."""
    return tiny_nightly(warehouse, models, coins=COINS, include_spy=False)


def test_the_allocator_is_fitted_and_judged_out_of_sample_with_its_statistics_stored(
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "w.duckdb"
    source = SyntheticBarSource()
    ingest_bar_frames(
        source.fetch_bars(COINS, "1Min", START, END), warehouse, datetime(2024, 4, 1, tzinfo=UTC)
    )
    result = nightly_retrain(config(warehouse, tmp_path / "models"))
    allocator: dict[str, Any] = result["allocator"]
    assert result["failures"] == [], result["failures"]
    assert allocator["status"] == "trained"
    with connect(warehouse) as con:
        row = load_model_row(con, allocator["model_id"])
        decisions = load_promotion_decisions(con).filter(pl.col("kind") == "svm_allocator")
        trials = load_trial_sharpes(con, "CRYPTO", "allocator")
    assert row is not None
    # Nested walk-forward: the agents trained before TEST_START; the allocator was fitted on
    # the earlier held-out days (the day straddling the split left out) and judged after them.
    split = row["params"]["split"]
    fit_first = datetime.fromisoformat(split["fit"][0])
    judged_first = datetime.fromisoformat(split["judged"][0])
    assert fit_first - timedelta(days=1) >= TEST_START
    assert datetime.fromisoformat(split["validation"][1]) < judged_first
    assert datetime.fromisoformat(row["params"]["fitted_until"]) <= judged_first
    # The verdict is the statistical gate's on the judged days, with its statistics stored.
    [d] = decisions.iter_rows(named=True)
    assert d["candidate_id"] == allocator["model_id"]
    assert d["test"] == "spa+dsr"
    assert 0.0 <= d["spa_p"] <= 1.0 and 0.0 <= d["dsr"] <= 1.0
    assert d["n_trials"] == 1 and trials.height == 1  # recorded as a trial before judging
    assert d["n_obs"] == (END - judged_first).days  # one return per judged day with an outcome
    assert d["eval_start"] == judged_first
    assert d["reference"] in {
        "baseline:equal_weight_agents",
        "baseline:buy_and_hold",
        "baseline:cash",
    }
    details = json.loads(d["details"])
    assert set(details["held_out"]) >= {"allocator", "equal_weight_agents", "buy_and_hold", "cash"}
