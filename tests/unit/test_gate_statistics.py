"""The statistical promotion gate (models.gate.agent_decision / forecaster_decision) on SYNTHETIC return streams and labels, and its stored statistics."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.evaluation import GateVerdict, judge_candidate
from models.forecaster import rank_ic, rank_ic_terms, rank_ic_test
from models.gate import (
    AGENT_TEST,
    FORECASTER_TEST,
    GateDecision,
    agent_decision,
    forecaster_decision,
)
from warehouse.db import connect
from warehouse.gate import load_promotion_decisions, write_promotion_decisions

BARS_PER_YEAR = 252.0 * 390.0  # minute bars of an equity session
REPS = 300  # bootstrap draws: enough for p-values far from the 5% line, and quick


def market(seed: int, n: int = 390 * 20, drift: float = 0.0) -> np.ndarray:
    """SYNTHETIC per-minute returns: about 1% daily volatility and the given drift per bar."""
    return np.random.default_rng(seed).normal(drift, 0.01 / math.sqrt(390), n)


def baselines(bh: np.ndarray) -> dict[str, np.ndarray]:
    return {"buy_and_hold": bh, "flat": np.zeros_like(bh)}


def verdict(*args: Any, **kwargs: Any) -> GateVerdict:
    """judge_candidate with fewer bootstrap draws."""
    return judge_candidate(*args, reps=REPS, **kwargs)


def decide_agent(
    candidate: np.ndarray,
    bases: dict[str, np.ndarray],
    n_trials: int = 1,
    **kw: Any,
) -> GateDecision:
    return agent_decision(
        candidate_id="cand",
        kind="dqn",
        symbol="SPY",
        candidate_returns=candidate,
        baseline_returns=bases,
        periods_per_year=BARS_PER_YEAR,
        n_trials=n_trials,
        verdict_function=verdict,
        **kw,
    )


def test_a_flat_agent_in_a_falling_month_is_not_promoted() -> None:
    # The case issue 16 found: on ~20 falling days, cash "beats" buy-and-hold on the old point
    # rule. It is not better than the flat baseline (it *is* flat), so the SPA test refuses it.
    falling = market(1, drift=-0.02 / 390)
    d = decide_agent(np.zeros_like(falling), baselines(falling))
    assert not d.verdict.passed
    assert d.statistics["test"] == AGENT_TEST
    assert d.statistics["spa_p"] == 1.0


def test_a_noise_agent_is_refused_and_a_large_real_edge_is_promoted() -> None:
    bh = market(2)
    noise = market(3)  # another draw of the same market: no edge
    refused = decide_agent(noise, baselines(bh))
    assert not refused.verdict.passed
    assert refused.statistics["spa_p"] > 0.05
    # A planted edge: the candidate earns the market plus ~0.2% a day, far beyond luck.
    edge = bh + 0.002 / 390 + market(4) * 0.2
    promoted = decide_agent(edge, baselines(bh))
    s = promoted.statistics
    assert promoted.verdict.passed, promoted.verdict.reason
    assert s["spa_p"] <= 0.05 and s["dsr"] >= 0.95 and s["n_trials"] == 1
    assert s["sharpe_diff_lo"] <= s["sharpe_diff"] <= s["sharpe_diff_hi"]
    assert s["n_obs"] == bh.size
    assert promoted.reference_name == "baseline:buy_and_hold"
    # The same streams deflated by many trials with widely spread Sharpes: DSR fails.
    spread = np.linspace(-20.0, 20.0, 500)
    deflated = decide_agent(edge, baselines(bh), n_trials=500, trial_sharpes=spread)
    assert deflated.statistics["dsr"] < promoted.statistics["dsr"]


def test_an_agent_against_a_champion_must_beat_it_too() -> None:
    bh = market(5)
    champion = bh + 0.002 / 390 + market(6) * 0.2
    candidate = champion + market(7) * 0.05  # the champion again, with noise: no better
    d = decide_agent(candidate, baselines(bh), champion_id="champ", champion_returns=champion)
    assert d.reference_name == "champion" and d.reference_id == "champ"
    assert not d.verdict.passed
    assert "not clearly better than champion" in d.verdict.reason


def test_rank_ic_terms_average_to_the_rank_ic_and_the_test_sees_overlap() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=3000)
    pred = 0.3 * y + rng.normal(size=3000)
    assert np.mean(rank_ic_terms(y, pred)) == pytest.approx(rank_ic(y, pred))
    strong = rank_ic_test(y, pred, 12)
    assert strong["rank_ic_p"] < 1e-6 and strong["rank_ic_independent_labels"] == 250.0
    # Noise with overlapping labels (a 48-row moving sum): the naive t-test is fooled far more
    # often than the HAC test, which stays near its level.
    naive_hits = hac_hits = 0
    for seed in range(200):
        r = np.random.default_rng(100 + seed)
        label = np.convolve(r.normal(size=2000 + 47), np.ones(48), "valid")
        noise_pred = np.convolve(r.normal(size=2000 + 47), np.ones(48), "valid")
        hac_hits += rank_ic_test(label, noise_pred, 48)["rank_ic_p"] <= 0.05
        naive_hits += rank_ic_test(label, noise_pred, 1)["rank_ic_p"] <= 0.05
    assert hac_hits <= 0.10 * 200 < naive_hits


def forecaster_metrics(ic: float, p: float, independent: float) -> dict[str, float]:
    return {
        "rank_ic": ic,
        "naive_rank_ic": 0.0,
        "rank_ic_t": 3.0,
        "rank_ic_p": p,
        "rank_ic_n": independent * 672,
        "rank_ic_label_horizon": 672.0,
        "rank_ic_independent_labels": independent,
    }


def decide_forecaster(
    m: dict[str, float], champion: dict[str, float] | None = None
) -> GateDecision:
    return forecaster_decision(
        candidate_id="xgb",
        kind="xgb_forecaster",
        symbol="BTC/USD",
        metrics_=m,
        champion_id="champ" if champion is not None else None,
        champion_metrics=champion,
    )


def test_forecasters_need_significance_enough_labels_and_to_beat_the_champion() -> None:
    good = decide_forecaster(forecaster_metrics(0.08, 0.01, 40.0))
    assert good.verdict.passed and good.statistics["p_value"] == 0.01
    assert good.statistics["test"] == FORECASTER_TEST
    # About 13 independent 4-week labels a year: too few, never promoted by default.
    few = decide_forecaster(forecaster_metrics(0.08, 0.01, 9.0))
    assert not few.verdict.passed
    assert few.verdict.reason.startswith("not promoted: too few independent labels")
    assert not decide_forecaster(forecaster_metrics(0.03, 0.2, 40.0)).verdict.passed
    assert not decide_forecaster({"rank_ic": 0.2}).verdict.passed  # no test: refused
    better_champ = forecaster_metrics(0.10, 0.001, 40.0)
    beaten = decide_forecaster(forecaster_metrics(0.08, 0.01, 40.0), better_champ)
    assert not beaten.verdict.passed and beaten.reference_name == "champion"


def test_the_statistics_are_stored_with_the_decision(tmp_path: Path) -> None:
    bh = market(8)
    d = decide_agent(bh + 0.002 / 390 + market(9) * 0.2, baselines(bh))
    f = decide_forecaster(forecaster_metrics(0.08, 0.01, 40.0))
    when = datetime(2024, 3, 22, 7, tzinfo=UTC)
    with connect(tmp_path / "w.duckdb") as con:
        write_promotion_decisions(
            con,
            [d.row(when, None, promoted=True), f.row(when, None, promoted=True)],
        )
        rows = {r["candidate_id"]: r for r in load_promotion_decisions(con).to_dicts()}
    agent, forecaster = rows["cand"], rows["xgb"]
    assert agent["test"] == AGENT_TEST and agent["n_trials"] == 1 and agent["n_obs"] == bh.size
    assert agent["spa_p"] == pytest.approx(d.statistics["spa_p"])
    assert agent["dsr"] == pytest.approx(d.statistics["dsr"])
    assert agent["sharpe_diff_lo"] < agent["sharpe_diff"] < agent["sharpe_diff_hi"]
    assert agent["p_value"] is None
    assert forecaster["test"] == FORECASTER_TEST and forecaster["p_value"] == 0.01
    assert forecaster["spa_p"] is None and forecaster["n_obs"] == 40 * 672
