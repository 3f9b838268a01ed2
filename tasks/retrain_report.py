"""nightly-retrain's summary (the flow's return value) and its report: the gate's decisions as
a table artifact and a markdown artifact of the run."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from models.gate import GateDecision
from tasks.allocator import ALLOCATOR_KIND
from tasks.gate import RetrainWindow, verdict_summary

FORECASTER_METRICS = (
    "n",
    "rank_ic",
    "rmse",
    "naive_rmse",
    "directional_accuracy",
    "mean_fold_rank_ic",
)


class SymbolOutcome(Protocol):
    """What a run made of one symbol: its forecaster's result (None: none) and its agents."""

    forecaster: dict[str, Any] | None
    agents: list[dict[str, Any]]


@dataclass(frozen=True)
class RetrainOutcome:
    """Everything a nightly run's summary and report say."""

    window: RetrainWindow
    decided_at: datetime
    runner: str
    units: list[str]
    """The symbols the run was asked for, SPY first."""
    symbols: Mapping[str, SymbolOutcome]
    allocator: dict[str, Any]
    decisions: Sequence[tuple[GateDecision, bool]]
    """Every gate decision with whether it was promoted."""
    failures: list[dict[str, str]]
    notes: list[str]


def _forecaster_summary(f: dict[str, Any]) -> dict[str, Any] | None:
    if "stored" not in f:
        return None
    metrics = f.get("metrics") or {}
    return {
        "model_id": f.get("model_id"),
        "forecasts_stored": f.get("stored"),
        **{k: metrics.get(k) for k in FORECASTER_METRICS},
    }


def retrain_summary(run: RetrainOutcome) -> dict[str, Any]:
    """The run's summary: per symbol its forecaster, agents, verdicts and failures; the allocator."""
    per_symbol: dict[str, dict[str, Any]] = {}
    for name in run.units:
        s = run.symbols.get(name)
        per_symbol[name] = {
            "forecaster": _forecaster_summary((s.forecaster if s else None) or {}),
            "agents": list(s.agents) if s else [],
            "gate": [verdict_summary(d, p) for d, p in run.decisions if d.symbol == name],
            "failures": [x for x in run.failures if x["symbol"] == name],
        }
    return {
        "window": {
            "start": str(run.window.start.date()),
            "last_day": str(run.window.last_day),
            "test_start": str(run.window.test_start.date()),
        },
        "decided_at": run.decided_at.isoformat(),
        "runner": run.runner,
        "symbols": per_symbol,
        "allocator": {
            **run.allocator,
            "gate": [verdict_summary(d, p) for d, p in run.decisions if d.kind == ALLOCATOR_KIND],
        },
        "promoted": [d.candidate_id for d, p in run.decisions if p],
        "failures": run.failures,
        "notes": run.notes,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def publish_retrain_report(run: RetrainOutcome, summary: dict[str, Any]) -> None:
    """The gate's decisions as a table artifact, and a markdown report of the run."""
    rows = [
        {
            "kind": d.kind,
            "symbol": d.symbol,
            "candidate": d.candidate_id,
            "objective": d.objective,
            "candidate_objective": _cell(d.candidate.objective),
            "reference": d.reference_name + (f" {d.reference_id}" if d.reference_id else ""),
            "reference_objective": _cell(d.reference.objective),
            "candidate_max_drawdown": _cell(d.candidate.max_drawdown),
            "reference_max_drawdown": _cell(d.reference.max_drawdown),
            "verdict": "promoted" if p else ("passed" if d.verdict.passed else "rejected"),
            "reason": d.verdict.reason,
        }
        for d, p in run.decisions
    ]
    create_table_artifact(
        key="nightly-retrain-gate",
        table=rows,
        description=f"promotion gate decisions of {run.decided_at:%Y-%m-%d %H:%M} UTC "
        "(also in the promotion_decisions table)",
    )
    cols = [
        "kind",
        "symbol",
        "candidate",
        "candidate_objective",
        "reference",
        "reference_objective",
        "verdict",
    ]
    lines = [
        f"# nightly-retrain {summary['window']['start']} to {summary['window']['last_day']} "
        f"(held out from {summary['window']['test_start']})",
        "",
        "## Gate",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(r[c] for c in cols) + " |" for r in rows),
        "",
        f"Promoted: {', '.join(summary['promoted']) or 'nothing'}",
    ]
    if run.failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {f['symbol']} ({f['stage']}): {f['error']}" for f in run.failures]
    if run.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in run.notes)]
    create_markdown_artifact(key="nightly-retrain-report", markdown="\n".join(lines))
