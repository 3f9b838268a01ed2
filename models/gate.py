"""The promotion gate: does a candidate beat the reference (champion, else a naive baseline) out of sample? Pure.

Rule, for every kind of model: a candidate passes when

    candidate.objective > reference.objective + objective_margin            (it is better)
    AND candidate.max_drawdown <= reference.max_drawdown + drawdown_margin  (and not riskier)

The reference is the champion -- the production model of the same kind and symbol,
evaluated on the same out-of-sample data -- or, when there is none, the naive baseline on
that data. The drawdown test applies where both sides have a drawdown (agents, the
allocator); forecasters have none and are judged on their objective alone.

Non-finite numbers are read conservatively: a candidate whose objective or drawdown is not
a number fails; a reference objective that is not a number (e.g. a curve that went below
zero) counts as -inf, and a reference drawdown that is not a number counts as 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.train import objective as agent_objective

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
    """The margins of the rule (see the module docstring)."""

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


def decide(candidate: Score, reference: Score, rule: GateRule, reference_name: str) -> Verdict:
    """Apply the rule to a candidate and its reference (named in the reason, e.g. 'champion dqn-...')."""
    if not _finite(candidate.objective):
        return Verdict(False, False, False, "the candidate's objective is not a number")
    ref_obj = reference.objective if _finite(reference.objective) else -math.inf
    beats = candidate.objective > ref_obj + rule.objective_margin
    check_dd = (
        rule.drawdown_margin is not None
        and candidate.max_drawdown is not None
        and reference.max_drawdown is not None
    )
    if not check_dd:
        dd_ok, dd_text = True, "drawdown not compared"
    elif not _finite(candidate.max_drawdown):
        dd_ok, dd_text = False, "the candidate's max drawdown is not a number"
    else:
        assert candidate.max_drawdown is not None and rule.drawdown_margin is not None
        ref_dd = reference.max_drawdown if _finite(reference.max_drawdown) else 0.0
        assert ref_dd is not None
        limit = ref_dd + rule.drawdown_margin
        dd_ok = candidate.max_drawdown <= limit
        dd_text = (
            f"max drawdown {candidate.max_drawdown:.4f} {'<=' if dd_ok else '>'} "
            f"{ref_dd:.4f} + {rule.drawdown_margin:.4f}"
        )
    obj_text = (
        f"objective {candidate.objective:.4f} {'>' if beats else '<='} "
        f"{ref_obj:.4f} + {rule.objective_margin:.4f}"
    )
    passed = beats and dd_ok
    if passed:
        reason = f"beats {reference_name}: {obj_text}; {dd_text}"
    elif not beats:
        reason = f"does not beat {reference_name}: {obj_text}"
    else:
        reason = f"riskier than {reference_name}: {dd_text}"
    return Verdict(passed, beats, dd_ok, reason)


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
        }


def judge(
    *,
    candidate_id: str,
    kind: str,
    symbol: str,
    objective: str,
    candidate: Score,
    baseline_name: str,
    baseline: Score,
    rule: GateRule,
    champion_id: str | None = None,
    champion: Score | None = None,
    eval_start: datetime | None = None,
    eval_end: datetime | None = None,
    details: Mapping[str, Any] | None = None,
) -> GateDecision:
    """The decision against the champion when one was evaluated, else against the baseline."""
    if champion_id is not None and champion is not None:
        reference, name, ref_id = champion, "champion", champion_id
        label = f"champion {champion_id}"
    else:
        reference, name, ref_id = baseline, f"baseline:{baseline_name}", None
        label = f"the {baseline_name} baseline"
    return GateDecision(
        candidate_id=candidate_id,
        kind=kind,
        symbol=symbol,
        objective=objective,
        candidate=candidate,
        reference=reference,
        reference_name=name,
        reference_id=ref_id,
        baseline_name=baseline_name,
        baseline=baseline,
        rule=rule,
        verdict=decide(candidate, reference, rule, label),
        eval_start=eval_start,
        eval_end=eval_end,
        details=dict(details or {}),
    )


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


def agent_score(metrics: Mapping[str, float], drawdown_penalty: float) -> Score:
    """An agent (or a baseline policy) on held-out sessions: total return - penalty * max drawdown."""
    return Score(agent_objective(dict(metrics), drawdown_penalty), float(metrics["max_drawdown"]))


def forecaster_score(metrics: Mapping[str, Any]) -> Score:
    """A forecaster's out-of-fold rank IC (no drawdown)."""
    return Score(float(metrics.get("rank_ic", math.nan)))


def allocator_score(metrics: Mapping[str, float], min_drawdown: float) -> Score:
    """Calmar with a drawdown floor: cagr / max(max_drawdown, min_drawdown), as the allocator is tuned.

    The floor keeps a curve that never fell (Calmar undefined) comparable: all cash scores 0,
    and a tiny drawdown cannot win on its denominator alone.
    """
    growth, mdd = float(metrics["cagr"]), float(metrics["max_drawdown"])
    if not math.isfinite(growth):
        return Score(-math.inf, mdd)
    floor = max(mdd, min_drawdown) if math.isfinite(mdd) else min_drawdown
    return Score(growth / floor, mdd)
