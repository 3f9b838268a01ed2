"""The demo's minute agent: promoted only through the statistical gate, judged on the selection
range, reported on months used neither to train nor to select (issue 16, item 7)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from core.configs import DEMO_END, DEMO_START, DemoConfig, utc_midnight
from flows.demo import NOT_PROMOTED, PROMOTED, demo_ranges, gate_minute_agent, report_configs
from models.evaluation import GateVerdict, judge_candidate
from models.gate import VerdictFunction
from tests.integration.planted import PLANTED, planted_agent, planted_bars
from warehouse.bars import ingest_bar_frames
from warehouse.db import connect
from warehouse.gate import load_promotion_decisions
from warehouse.registry import production_model_id
from warehouse.trials import load_trial_sharpes

FALLING_THEN_RISING = [0.0, 0.0, 0.0, -0.03, -0.03, -0.03, 0.05, 0.05, 0.05]
"""Selection days fall (nothing beats cash or holding there); report days rise."""
SELECTION_BARS = 3 * 1440  # a coin trades every minute


def forced(promoted: Callable[[GateVerdict], bool]) -> VerdictFunction:
    """judge_candidate's real statistics with a planted promotion decision: tests the mechanics."""

    def verdict(*args: Any, **kwargs: Any) -> GateVerdict:
        v = judge_candidate(*args, **kwargs)
        return replace(v, promoted=promoted(v))

    return verdict


def planted_warehouse(warehouse: Path, models: Path) -> DemoConfig:
    """SYNTHETIC planted minutes of one coin in the warehouse and two constant-action candidates."""
    ingest_bar_frames(
        [planted_bars(FALLING_THEN_RISING)], warehouse, datetime(2024, 4, 1, tzinfo=UTC)
    )
    with connect(warehouse) as con:
        planted_agent(con, models, "always-flat", 0)
        planted_agent(con, models, "always-long", 2)
    # planted_bars starts on 1 March 2024: three days each to train, to select, to report.
    return DemoConfig(
        start=date(2024, 3, 1),
        train_end=date(2024, 3, 4),
        report_start=date(2024, 3, 7),
        end=date(2024, 3, 10),
        warehouse=str(warehouse),
    )


def test_a_candidate_the_gate_refuses_is_not_promoted_and_is_reported_after_selection(
    warehouse_path: Path, tmp_path: Path
) -> None:
    config = planted_warehouse(warehouse_path, tmp_path)
    candidates = ["always-flat", "always-long"]
    gated = gate_minute_agent(str(warehouse_path), PLANTED, candidates, config, datetime.now(UTC))

    # Cash is no better than the flat baseline, holding is buy-and-hold: both refused.
    assert not gated.promoted and gated.label == NOT_PROMOTED == "candidate, not promoted"
    assert gated.model_id == "always-flat"  # the better selection Sharpe (0 > falling)
    assert [d.verdict.passed for d in gated.decisions] == [False, False]
    with connect(warehouse_path) as con:
        assert production_model_id(con, "dqn", PLANTED) is None
        stored = load_promotion_decisions(con).sort("candidate_id")
        trials = load_trial_sharpes(con, PLANTED, "agent")
    # Judged on the selection range only: its bars, no report bar.
    select = (utc_midnight(config.train_end), utc_midnight(config.report_start))
    assert stored.select("candidate_id", "test", "promoted").rows() == [
        ("always-flat", "spa+dsr", False),
        ("always-long", "spa+dsr", False),
    ]
    assert set(stored.get_column("eval_start")) == {select[0]}
    assert set(stored.get_column("eval_end")) == {select[1]}
    assert set(stored.get_column("n_obs")) == {SELECTION_BARS}
    # Each candidate counted as a trial on that range before it was judged (the DSR deflates by them).
    assert trials.height == 2 and set(trials.get_column("data_start")) == {select[0]}
    assert set(stored.get_column("n_trials")) == {2}

    # The backtest covers the report range only; backtest and replay name the candidate.
    backtest, replay = report_configs(config, str(warehouse_path), gated, PLANTED)
    assert (backtest.start, backtest.end) == (config.report_start, config.end)
    assert backtest.start >= config.report_start > config.train_end  # no selection day in it
    assert backtest.model_id == replay.model_id == "always-flat"
    assert replay.mode == "replay"


def test_a_candidate_the_gate_passes_is_promoted_by_the_gate(
    warehouse_path: Path, tmp_path: Path
) -> None:
    config = planted_warehouse(warehouse_path, tmp_path)
    # The mechanics with a planted pass (constant actions cannot beat the baselines).
    gated = gate_minute_agent(
        str(warehouse_path),
        PLANTED,
        ["always-flat", "always-long"],
        config,
        datetime.now(UTC),
        verdict_function=forced(lambda v: v.drawdown_ok),
    )
    assert gated.promoted and gated.label == PROMOTED and gated.model_id == "always-flat"
    with connect(warehouse_path) as con:
        assert production_model_id(con, "dqn", PLANTED) == "always-flat"
    # A re-run does not judge the production model again; it stays the one shown.
    again = gate_minute_agent(
        str(warehouse_path), PLANTED, ["always-flat"], config, datetime.now(UTC)
    )
    assert again.promoted and again.model_id == "always-flat" and again.decisions == ()


@pytest.mark.parametrize(
    ("train_end", "report_start", "end"),
    [
        (date(2024, 5, 1), date(2024, 5, 1), DEMO_END),  # empty selection range
        (date(2024, 6, 1), date(2024, 5, 1), DEMO_END),  # report before selection: overlap
        (date(2024, 5, 1), DEMO_END, DEMO_END),  # empty report range
        (DEMO_START, date(2024, 6, 1), DEMO_END),  # empty training range
        (date(2024, 5, 1), date(2024, 6, 1), date(2024, 5, 15)),  # report ends before it starts
    ],
)
def test_demo_config_refuses_overlapping_or_empty_ranges(
    train_end: date, report_start: date, end: date
) -> None:
    with pytest.raises(ValidationError) as err:
        DemoConfig(train_end=train_end, report_start=report_start, end=end)
    [error] = err.value.errors()
    assert "need start < train_end < report_start < end" in error["msg"]
    assert "\n" not in error["msg"]


def test_the_default_demo_ranges_are_disjoint_months_of_the_synthetic_data() -> None:
    config = DemoConfig()
    assert (config.start, config.end) == (DEMO_START, DEMO_END)
    assert config.start < config.train_end < config.report_start < config.end
    assert demo_ranges(config) == (
        "train 2024-01-01 to 2024-04-30, select (the gate) 2024-05-01 to 2024-05-31, "
        "report 2024-06-01 to 2024-06-30"
    )
    assert config.train_end - config.start > timedelta(days=90)
