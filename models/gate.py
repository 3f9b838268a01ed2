"""The promotion gate: does a candidate beat the champion and the naive baselines out of sample, beyond luck? Pure.

Agents, the SVM allocator and a searched genome are judged statistically
(:func:`agent_decision`, models.evaluation.judge_candidate): on the same held-out bars and
costs, SPA p <= alpha against the champion and every baseline, a deflated Sharpe ratio >=
dsr_min counting every trial recorded, and a max drawdown within the margin of the
reference's. The allocator's stream is its daily traded P&L (each agent's trading scaled by
its weight, costs included); a genome's is its agent's, on a range disjoint from the search's
validation folds. Forecasters (:func:`forecaster_decision`): the out-of-fold rank IC is
significantly > 0 by a Hansen-Hodrick t-test that accounts for overlapping labels, with
enough independent labels, and above the champion's.

Each verdict keeps its statistics (STATISTICS_COLUMNS of promotion_decisions). Non-finite
numbers are read conservatively: a candidate whose objective is not a number fails; a
reference objective that is not a number counts as -inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from core import metrics
from models.evaluation import GateVerdict, judge_candidate

ALLOCATOR_SYMBOL = "CRYPTO"
"""`models.symbol` of the SVM allocator: one portfolio model over the coins (a real value, so
promote() and production_model_id() find it)."""


@dataclass(frozen=True)
class Score:
    """One model's numbers on the gate's data: its objective, and its max drawdown where one applies."""

    objective: float
    max_drawdown: float | None = None


@dataclass(frozen=True)
class GateRule:
    """The margins recorded with a decision (objective margin 0: strictly better)."""

    objective_margin: float = 0.0
    """The candidate must beat the reference's objective by MORE than this (0: strictly better)."""
    drawdown_margin: float | None = 0.02
    """Its max drawdown may exceed the reference's by at most this (absolute fraction); None: not checked."""


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one candidate, with its two tests."""

    passed: bool
    beats_objective: bool
    drawdown_ok: bool
    reason: str


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


STATISTICS_COLUMNS = (
    "test",
    "spa_p",
    "dsr",
    "n_trials",
    "sharpe_diff",
    "sharpe_diff_lo",
    "sharpe_diff_hi",
    "p_value",
    "n_obs",
)
"""promotion_decisions' statistics columns (migration 0013), null where a test does not apply."""

AGENT_TEST = "spa+dsr"
"""`test` of an agent's verdict: models.evaluation.judge_candidate."""
FORECASTER_TEST = "hac_rank_ic"
"""`test` of a forecaster's verdict: the Hansen-Hodrick t-test of the out-of-fold rank IC."""


@dataclass(frozen=True)
class GateDecision:
    """A candidate judged against its reference, with the baseline's numbers kept beside."""

    candidate_id: str
    kind: str
    symbol: str
    objective: str
    """What the objective is, in words (stored with the decision)."""
    candidate: Score
    reference: Score
    reference_name: str
    """'champion' or 'baseline:<name>'."""
    reference_id: str | None
    baseline_name: str
    baseline: Score
    rule: GateRule
    verdict: Verdict
    eval_start: datetime | None = None
    eval_end: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
    statistics: dict[str, Any] = field(default_factory=dict)
    """The statistical test's numbers, stored in promotion_decisions' columns of the same names
    (STATISTICS_COLUMNS)."""

    def row(self, decided_at: datetime, flow_run_id: str | None, promoted: bool) -> dict[str, Any]:
        """The promotion_decisions row of this decision."""
        return {
            "decided_at": decided_at,
            "candidate_id": self.candidate_id,
            "kind": self.kind,
            "symbol": self.symbol,
            "flow_run_id": flow_run_id,
            "objective": self.objective,
            "candidate_objective": self.candidate.objective,
            "candidate_max_drawdown": self.candidate.max_drawdown,
            "reference": self.reference_name,
            "reference_id": self.reference_id,
            "reference_objective": self.reference.objective,
            "reference_max_drawdown": self.reference.max_drawdown,
            "baseline": self.baseline_name,
            "baseline_objective": self.baseline.objective,
            "baseline_max_drawdown": self.baseline.max_drawdown,
            "objective_margin": self.rule.objective_margin,
            "drawdown_margin": self.rule.drawdown_margin,
            "beats_objective": self.verdict.beats_objective,
            "drawdown_ok": self.verdict.drawdown_ok,
            "passed": self.verdict.passed,
            "promoted": promoted,
            "reason": self.verdict.reason,
            "eval_start": self.eval_start,
            "eval_end": self.eval_end,
            "details": self.details,
            **{name: self.statistics.get(name) for name in STATISTICS_COLUMNS},
        }


def choose_promotions(decisions: Iterable[GateDecision]) -> dict[tuple[str, str], str]:
    """Per (kind, symbol), the passing candidate with the highest objective: the one to promote.

    Several candidates of one kind and symbol (e.g. one agent per seed) may pass; promoting
    each in turn would leave the last, not the best, in production. Ties go to the first.
    """
    best: dict[tuple[str, str], GateDecision] = {}
    for d in decisions:
        if not d.verdict.passed:
            continue
        key = (d.kind, d.symbol)
        if key not in best or d.candidate.objective > best[key].candidate.objective:
            best[key] = d
    return {key: d.candidate_id for key, d in best.items()}


# ---- the objectives, one per kind ----


def forecaster_score(metrics: Mapping[str, Any]) -> Score:
    """A forecaster's out-of-fold rank IC (no drawdown)."""
    return Score(float(metrics.get("rank_ic", math.nan)))


# ---- the statistical rule: agents and forecasters ----

VerdictFunction = Callable[..., GateVerdict]
"""models.evaluation.judge_candidate's signature; injectable so tests can plant a verdict."""


def _sharpe_or_zero(returns: npt.NDArray[np.float64], periods_per_year: float) -> float:
    """core.metrics.sharpe, reading an all-zero stream (cash) as 0 rather than undefined."""
    if returns.size >= 2 and not np.any(returns):
        return 0.0
    return metrics.sharpe(returns, periods_per_year)


def _stream_score(returns: npt.NDArray[np.float64], periods_per_year: float) -> Score:
    """A return stream's annualised Sharpe (the objective compared) and its max drawdown."""
    return Score(_sharpe_or_zero(returns, periods_per_year), metrics.max_drawdown(returns))


def agent_decision(
    *,
    candidate_id: str,
    kind: str,
    symbol: str,
    candidate_returns: npt.ArrayLike,
    baseline_returns: Mapping[str, npt.ArrayLike],
    periods_per_year: float,
    n_trials: int,
    trial_sharpes: npt.ArrayLike | None = None,
    champion_id: str | None = None,
    champion_returns: npt.ArrayLike | None = None,
    alpha: float = 0.05,
    dsr_min: float = 0.95,
    drawdown_margin: float = 0.02,
    eval_start: datetime | None = None,
    eval_end: datetime | None = None,
    details: Mapping[str, Any] | None = None,
    verdict_function: VerdictFunction = judge_candidate,
) -> GateDecision:
    """An agent judged by judge_candidate on per-bar held-out returns (same bars, same costs).

    Promoted only if it beats the champion (when one was evaluated) and every baseline with
    SPA p <= alpha, its deflated Sharpe ratio over ``n_trials`` is >= dsr_min, and its drawdown
    is within the margin. The stored objective is the annualised Sharpe ratio; the reference
    is the champion, else the baseline with the highest Sharpe ratio (the hardest to beat).
    ``baseline_returns`` must hold 'buy_and_hold' (recorded as the decision's baseline).
    """
    c = np.asarray(candidate_returns, dtype=np.float64)
    bases = {k: np.asarray(v, dtype=np.float64) for k, v in baseline_returns.items()}
    champ = None if champion_returns is None else np.asarray(champion_returns, dtype=np.float64)
    v = verdict_function(
        c,
        champ,
        bases,
        n_trials,
        periods_per_year,
        trial_sharpes=trial_sharpes,
        alpha=alpha,
        dsr_min=dsr_min,
        drawdown_margin=drawdown_margin,
    )
    if champ is not None and champion_id is not None:
        reference, ref_name, ref_id = (
            _stream_score(champ, periods_per_year),
            "champion",
            champion_id,
        )
        label = f"champion {champion_id} and the baselines"
    else:
        scores = {k: _stream_score(r, periods_per_year) for k, r in bases.items()}
        best = max(
            scores,
            key=lambda k: scores[k].objective if math.isfinite(scores[k].objective) else -math.inf,
        )
        reference, ref_name, ref_id = scores[best], f"baseline:{best}", None
        label = "the baselines"
    beats = v.spa_ok and v.dsr_ok
    if v.promoted:
        head = f"beats {label}"
    elif not beats:
        head = f"does not clearly beat {label}"
    else:
        head = f"riskier than {v.drawdown_reference}"
    reason = f"{head}: " + "; ".join(v.reasons)
    return GateDecision(
        candidate_id=candidate_id,
        kind=kind,
        symbol=symbol,
        objective=(
            f"held-out annualised Sharpe; SPA p <= {alpha} vs champion and baselines, "
            f"DSR >= {dsr_min}, drawdown margin {drawdown_margin}"
        ),
        candidate=Score(_sharpe_or_zero(c, periods_per_year), v.max_drawdown),
        reference=reference,
        reference_name=ref_name,
        reference_id=ref_id,
        baseline_name="buy_and_hold",
        baseline=_stream_score(bases["buy_and_hold"], periods_per_year),
        rule=GateRule(0.0, drawdown_margin),
        verdict=Verdict(v.promoted, beats, v.drawdown_ok, reason),
        eval_start=eval_start,
        eval_end=eval_end,
        details={
            **dict(details or {}),
            "spa_p_by_reference": dict(v.spa_p_by_reference),
            "sharpe_diff_reference": v.reference,
            "drawdown_reference": v.drawdown_reference,
            "periods_per_year": periods_per_year,
            "alpha": alpha,
            "dsr_min": dsr_min,
        },
        statistics={
            "test": AGENT_TEST,
            "spa_p": v.spa_p,
            "dsr": v.dsr,
            "n_trials": v.n_trials,
            "sharpe_diff": v.sharpe_diff.estimate,
            "sharpe_diff_lo": v.sharpe_diff.low,
            "sharpe_diff_hi": v.sharpe_diff.high,
            "n_obs": v.n_obs,
        },
    )


def forecaster_decision(
    *,
    candidate_id: str,
    kind: str,
    symbol: str,
    metrics_: Mapping[str, Any],
    champion_id: str | None = None,
    champion_metrics: Mapping[str, Any] | None = None,
    alpha: float = 0.05,
    min_independent_labels: float = 10.0,
    eval_start: datetime | None = None,
    eval_end: datetime | None = None,
    details: Mapping[str, Any] | None = None,
) -> GateDecision:
    """A forecaster judged on its out-of-fold rank IC with a test for overlapping labels.

    ``metrics_`` is the CV report (models.forecaster.CVReport.to_dict): its rank IC and the
    test of it (``rank_ic_p``: one-sided p of "mean rank IC > 0" by the Hansen-Hodrick t-test,
    ``rank_ic_independent_labels``: rows / label horizon in rows). Promoted only when there
    are at least ``min_independent_labels`` independent labels, p <= alpha, and the rank IC
    beats the champion's (cross-validated on the same folds) when there is one. Too few
    labels, or no test in the metrics, is a refusal: never promoted by default.
    """
    candidate = forecaster_score(metrics_)
    champion = forecaster_score(champion_metrics) if champion_metrics is not None else None
    baseline = Score(float(metrics_.get("naive_rank_ic", 0.0)))
    if champion is not None and champion_id is not None:
        reference, ref_name, ref_id, label = (
            champion,
            "champion",
            champion_id,
            f"champion {champion_id}",
        )
    else:
        reference, ref_name, ref_id, label = baseline, "baseline:zero_forecast", None, "zero"
    p = float(metrics_.get("rank_ic_p", math.nan))
    independent = float(metrics_.get("rank_ic_independent_labels", math.nan))
    horizon = metrics_.get("rank_ic_label_horizon")
    ic = candidate.objective
    ref_ic = reference.objective if _finite(reference.objective) else -math.inf
    beats_reference = _finite(ic) and ic > ref_ic
    significant = _finite(p) and p <= alpha and _finite(ic) and ic > 0.0
    if not (_finite(independent) and independent >= min_independent_labels):
        passed = False
        reason = (
            f"not promoted: too few independent labels ({independent:.1f} < "
            f"{min_independent_labels:g}; horizon {horizon} rows)"
        )
    else:
        passed = significant and beats_reference
        test_text = (
            f"rank IC {ic:.4f}, HAC p = {p:.4f} {'<=' if significant else '>'} {alpha} "
            f"over {independent:.1f} independent labels"
        )
        ref_text = f"rank IC {ic:.4f} {'>' if beats_reference else '<='} {label} {ref_ic:.4f}"
        if passed:
            reason = f"beats {label}: {test_text}; {ref_text}"
        elif not significant:
            reason = f"rank IC not significantly > 0: {test_text}"
        else:
            reason = f"does not beat {label}: {ref_text}"
    return GateDecision(
        candidate_id=candidate_id,
        kind=kind,
        symbol=symbol,
        objective=(
            "out-of-fold rank IC (purged walk-forward CV); HAC test for overlapping labels, "
            f"p <= {alpha}, >= {min_independent_labels:g} independent labels"
        ),
        candidate=candidate,
        reference=reference,
        reference_name=ref_name,
        reference_id=ref_id,
        baseline_name="zero_forecast",
        baseline=baseline,
        rule=GateRule(0.0, None),
        verdict=Verdict(passed, beats_reference and significant, True, reason),
        eval_start=eval_start,
        eval_end=eval_end,
        details={
            **dict(details or {}),
            "rank_ic_t": metrics_.get("rank_ic_t"),
            "rank_ic_label_horizon": horizon,
            "rank_ic_independent_labels": independent,
        },
        statistics={
            "test": FORECASTER_TEST,
            "p_value": p,
            "n_obs": metrics_.get("rank_ic_n"),
        },
    )


@dataclass(frozen=True)
class HeldOutStreams:
    """One agent's held-out per-bar returns beside the baselines', and evaluate_network's table."""

    model_id: str
    returns: Mapping[str, np.ndarray]
    """'agent' and each baseline (models.train.held_out_returns' keys)."""
    table: Mapping[str, Mapping[str, float]]


def streams_bars_per_year(streams: HeldOutStreams, periods_per_year: float) -> float:
    """Bars per year of held-out streams: held-out bars per session x sessions per year."""
    sessions = max(float(streams.table["agent"]["sessions"]), 1.0)
    return float(streams.returns["agent"].size / sessions * periods_per_year)


def agent_decisions_on_streams(
    candidates: Iterable[HeldOutStreams],
    *,
    kind: str,
    symbol: str,
    bars_per_year: float,
    n_trials: int,
    trial_sharpes: npt.ArrayLike | None,
    champion_id: str | None,
    champion_returns: np.ndarray | None,
    alpha: float,
    dsr_min: float,
    drawdown_margin: float,
    eval_start: datetime,
    eval_end: datetime,
    details: Mapping[str, Any],
    verdict_function: VerdictFunction = judge_candidate,
) -> list[GateDecision]:
    """agent_decision for each candidate, all on the same held-out bars as the champion's."""
    out: list[GateDecision] = []
    for c in candidates:
        agent = c.returns["agent"]
        if champion_returns is not None and champion_returns.size != agent.size:
            raise ValueError(
                f"champion {champion_id} has {champion_returns.size} held-out bars, "
                f"{c.model_id} {agent.size}: not the same bars"
            )
        out.append(
            agent_decision(
                candidate_id=c.model_id,
                kind=kind,
                symbol=symbol,
                candidate_returns=agent,
                baseline_returns={k: v for k, v in c.returns.items() if k != "agent"},
                periods_per_year=bars_per_year,
                n_trials=n_trials,
                trial_sharpes=trial_sharpes,
                champion_id=champion_id if champion_returns is not None else None,
                champion_returns=champion_returns,
                alpha=alpha,
                dsr_min=dsr_min,
                drawdown_margin=drawdown_margin,
                eval_start=eval_start,
                eval_end=eval_end,
                details={
                    **details,
                    "sessions": c.table["agent"]["sessions"],
                    "candidate": dict(c.table["agent"]),
                    "baselines": {k: dict(v) for k, v in c.table.items() if k != "agent"},
                },
                verdict_function=verdict_function,
            )
        )
    return out
