"""The promotion gate's rule on plain numbers, which candidate gets promoted, the objectives, and the decisions table."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from models.gate import (
    GateDecision,
    GateRule,
    Score,
    allocator_score,
    choose_promotions,
    decide,
    forecaster_score,
    judge,
)
from warehouse.db import connect
from warehouse.gate import load_promotion_decisions, write_promotion_decisions

RULE = GateRule(objective_margin=0.0, drawdown_margin=0.02)


def test_a_clearly_better_candidate_passes() -> None:
    v = decide(Score(0.10, 0.05), Score(0.02, 0.04), RULE, "champion X")
    assert (v.passed, v.beats_objective, v.drawdown_ok) == (True, True, True)
    assert v.reason == (
        "beats champion X: objective 0.1000 > 0.0200 + 0.0000; max drawdown 0.0500 <= 0.0400 + 0.0200"
    )


def test_a_worse_candidate_and_a_tie_are_rejected() -> None:
    worse = decide(Score(0.01, 0.0), Score(0.02, 0.04), RULE, "champion X")
    assert (worse.passed, worse.beats_objective, worse.drawdown_ok) == (False, False, True)
    assert worse.reason.startswith("does not beat champion X")
    tie = decide(Score(0.02, 0.04), Score(0.02, 0.04), RULE, "champion X")
    assert not tie.passed  # "beats" is strict: equal is not better


def test_a_better_but_riskier_candidate_is_rejected_unless_within_the_margin() -> None:
    riskier = decide(Score(0.30, 0.10), Score(0.02, 0.04), RULE, "champion X")
    assert (riskier.passed, riskier.beats_objective, riskier.drawdown_ok) == (False, True, False)
    assert riskier.reason == "riskier than champion X: max drawdown 0.1000 > 0.0400 + 0.0200"
    # Exactly at the margin is allowed; past it is not.
    at_margin = decide(Score(0.30, 0.06), Score(0.02, 0.04), RULE, "c")
    assert at_margin.passed
    wider = decide(Score(0.30, 0.10), Score(0.02, 0.04), GateRule(0.0, 0.07), "c")
    assert wider.passed


def test_the_objective_margin_must_be_exceeded() -> None:
    rule = GateRule(objective_margin=0.05, drawdown_margin=0.02)
    assert not decide(Score(0.06, 0.0), Score(0.02, 0.0), rule, "c").passed  # 0.04 better
    assert decide(Score(0.08, 0.0), Score(0.02, 0.0), rule, "c").passed  # 0.06 better


def test_non_finite_numbers_are_read_conservatively() -> None:
    assert not decide(Score(math.nan, 0.0), Score(0.0, 0.0), RULE, "c").passed
    assert not decide(Score(0.1, math.nan), Score(0.0, 0.0), RULE, "c").passed
    # A reference whose objective is not a number (a curve gone below zero) is beaten by
    # any finite candidate; a reference drawdown that is not a number counts as 0.
    assert decide(Score(-5.0, 0.01), Score(math.nan, 0.5), RULE, "c").passed
    assert not decide(Score(0.1, 0.03), Score(0.0, math.nan), RULE, "c").passed
    assert decide(Score(0.1, 0.02), Score(0.0, math.nan), RULE, "c").passed


def test_drawdown_is_not_compared_where_it_does_not_apply() -> None:
    v = decide(Score(0.05), Score(0.0), GateRule(0.0, None), "the zero_forecast baseline")
    assert (v.passed, v.drawdown_ok) == (True, True)
    assert v.reason.endswith("drawdown not compared")


def _decision(candidate_id: str, symbol: str, objective: float, passed: bool) -> GateDecision:
    return judge(
        candidate_id=candidate_id,
        kind="dqn",
        symbol=symbol,
        objective="o",
        candidate=Score(objective, 0.0),
        baseline_name="buy_and_hold",
        baseline=Score(objective - 1.0 if passed else objective + 1.0, 0.0),
        rule=RULE,
    )


def test_judge_uses_the_champion_when_there_is_one_else_the_baseline() -> None:
    with_champion = judge(
        candidate_id="new",
        kind="dqn",
        symbol="BTC/USD",
        objective="o",
        candidate=Score(0.1, 0.0),
        baseline_name="buy_and_hold",
        baseline=Score(0.5, 0.0),
        rule=RULE,
        champion_id="old",
        champion=Score(0.05, 0.0),
    )
    assert (with_champion.reference_name, with_champion.reference_id) == ("champion", "old")
    assert with_champion.verdict.passed  # beats the champion, though not buy-and-hold
    assert with_champion.baseline == Score(0.5, 0.0)  # kept beside for the record
    alone = _decision("new", "BTC/USD", 0.1, passed=False)
    assert (alone.reference_name, alone.reference_id) == ("baseline:buy_and_hold", None)
    assert not alone.verdict.passed


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
    # Calmar with a drawdown floor: a curve that never fell is not infinitely good.
    assert allocator_score({"cagr": 0.5, "max_drawdown": 0.0}, 0.02) == Score(25.0, 0.0)
    assert allocator_score({"cagr": 0.5, "max_drawdown": 0.25}, 0.02) == Score(2.0, 0.25)
    assert allocator_score({"cagr": math.nan, "max_drawdown": 1.2}, 0.02).objective == -math.inf


def test_decisions_are_stored_once_per_run_and_candidate(tmp_path: Path) -> None:
    when = datetime(2024, 3, 22, 7, tzinfo=UTC)
    d = judge(
        candidate_id="svm-1",
        kind="svm_allocator",
        symbol="CRYPTO",
        objective="calmar",
        candidate=Score(1.5, 0.03),
        baseline_name="equal_weight",
        baseline=Score(-math.inf, 0.2),
        rule=RULE,
        details={"held_out_periods": 4},
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
        "baseline:equal_weight",
    )
    assert row["reference_objective"] is None  # -inf is stored as null
    assert row["baseline_objective"] is None and row["candidate_objective"] == 1.5
    assert '"held_out_periods": 4' in row["details"]
