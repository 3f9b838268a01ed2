"""Which candidate gets promoted, the objectives, and the decisions table (the statistical rules: test_gate_statistics.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.gate import (
    GateDecision,
    GateRule,
    Score,
    Verdict,
    choose_promotions,
    forecaster_score,
)
from warehouse.db import connect
from warehouse.gate import load_promotion_decisions, write_promotion_decisions

RULE = GateRule(objective_margin=0.0, drawdown_margin=0.02)


def _decision(
    candidate_id: str,
    symbol: str,
    objective: float,
    passed: bool,
    *,
    kind: str = "dqn",
    baseline: Score | None = None,
    details: dict[str, Any] | None = None,
    statistics: dict[str, Any] | None = None,
) -> GateDecision:
    """A decision as agent_decision / forecaster_decision build it (their tests: test_gate_statistics.py)."""
    base = baseline or Score(objective - 1.0 if passed else objective + 1.0, 0.0)
    return GateDecision(
        candidate_id=candidate_id,
        kind=kind,
        symbol=symbol,
        objective="o",
        candidate=Score(objective, 0.0),
        reference=base,
        reference_name="baseline:buy_and_hold",
        reference_id=None,
        baseline_name="buy_and_hold",
        baseline=base,
        rule=RULE,
        verdict=Verdict(passed, passed, True, "planted"),
        details=dict(details or {}),
        statistics=dict(statistics or {}),
    )


def test_only_the_best_passing_candidate_of_a_kind_and_symbol_is_promoted() -> None:
    decisions = [
        _decision("btc-s1", "BTC/USD", 0.10, passed=True),
        _decision("btc-s2", "BTC/USD", 0.20, passed=True),
        _decision("btc-s3", "BTC/USD", 0.90, passed=False),
        _decision("eth-s1", "ETH/USD", -0.10, passed=True),
        _decision("sol-s1", "SOL/USD", 0.50, passed=False),
    ]
    assert choose_promotions(decisions) == {
        ("dqn", "BTC/USD"): "btc-s2",
        ("dqn", "ETH/USD"): "eth-s1",
    }


def test_the_objectives_of_each_kind() -> None:
    # Agents are scored by their held-out Sharpe ratio: see test_gate_statistics.py.
    assert forecaster_score({"rank_ic": 0.07}) == Score(0.07)
    assert math.isnan(forecaster_score({}).objective)  # no folds: no score, so no promotion
    # The allocator is judged like an agent (agent_decision on its traded daily returns).


def test_decisions_are_stored_once_per_run_and_candidate(tmp_path: Path) -> None:
    when = datetime(2024, 3, 22, 7, tzinfo=UTC)
    d = _decision(
        "svm-1",
        "CRYPTO",
        1.5,
        True,
        kind="svm_allocator",
        baseline=Score(-math.inf, 0.2),
        details={"held_out_periods": 4},
        statistics={"test": "spa+dsr", "spa_p": 0.01, "dsr": 0.97, "n_trials": 3},
    )
    with connect(tmp_path / "w.duckdb") as con:
        first = write_promotion_decisions(con, [d.row(when, "run-1", promoted=True)])
        again = write_promotion_decisions(con, [d.row(when, "run-1", promoted=True)])
        stored = load_promotion_decisions(con).to_dicts()
    assert (first.inserted, again.inserted, again.unchanged) == (1, 0, 1)
    [row] = stored
    assert row["decided_at"] == when and row["candidate_id"] == "svm-1"
    assert (row["passed"], row["promoted"], row["reference"]) == (
        True,
        True,
        "baseline:buy_and_hold",
    )
    assert row["reference_objective"] is None  # -inf is stored as null
    assert row["baseline_objective"] is None and row["candidate_objective"] == 1.5
    assert '"held_out_periods": 4' in row["details"]
    assert (row["test"], row["spa_p"], row["dsr"], row["n_trials"]) == ("spa+dsr", 0.01, 0.97, 3)
