"""The promotion gate against the warehouse: registered models evaluated on held-out data by
one code path, each candidate recorded as a trial, judged (models.gate), stored and promoted.

nightly-retrain, the demo and the tests judge agents through `agent_decisions` and store the
verdicts with `apply_gate`; the statistics themselves are models.gate's and models.evaluation's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import polars as pl

from core import metrics as core_metrics
from core.baselines import periods_per_year
from core.jsonable import json_safe, parse_ts
from models.env import Costs, Sessions
from models.evaluation import judge_candidate
from models.gate import (
    GateDecision,
    HeldOutStreams,
    VerdictFunction,
    agent_decisions_on_streams,
    choose_promotions,
    forecaster_decision,
    streams_bars_per_year,
)
from models.qnet import NestedLSTMQNet
from models.registry import load_registered_agent, verify_artifact
from models.train import evaluate_network, evaluate_network_with_returns, held_out_data
from trading.alerts import send_gate_verdicts
from trading.inputs import input_loader
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.forecasts import FORECASTER_KIND
from warehouse.gate import write_promotion_decisions
from warehouse.registry import load_model_row, production_model_id, promote
from warehouse.symbols import stored_session_rule
from warehouse.trials import load_trial_sharpes, record_trial

TIMEFRAME = "1Min"
AGENT_KIND = "dqn"


class GateLevels(Protocol):
    """The gate's significance levels and margins (core.configs.GateConfig is one)."""

    @property
    def alpha(self) -> float: ...
    @property
    def dsr_min(self) -> float: ...
    @property
    def drawdown_margin(self) -> float: ...
    @property
    def forecaster_min_independent_labels(self) -> float: ...


@dataclass(frozen=True)
class RetrainWindow:
    """A nightly run's data: [start, end), the agents trained before test_start and held out after."""

    start: datetime
    end: datetime
    test_start: datetime

    @property
    def span(self) -> tuple[datetime, datetime]:
        return (self.start, self.end)

    @property
    def train_range(self) -> tuple[datetime, datetime]:
        return (self.start, self.test_start)

    @property
    def test_range(self) -> tuple[datetime, datetime]:
        return (self.test_start, self.end)

    @property
    def last_day(self) -> date:
        return (self.end - timedelta(days=1)).date()


@dataclass(frozen=True)
class HeldOutAgent:
    """A registered agent's network with its held-out sessions and bars, ready to be evaluated."""

    net: NestedLSTMQNet
    sessions: Sessions
    bars: pl.DataFrame
    symbol: str


def held_out_agent(
    warehouse: str,
    row: dict[str, Any],
    bars: pl.DataFrame,
    window: tuple[datetime, datetime],
    test_start: datetime,
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
) -> HeldOutAgent:
    """Load a registered agent (sha256 checked) and cut its held-out sessions (see evaluate_registered_agent)."""
    policy = load_registered_agent(row)
    have = set(bars.get_column("symbol").unique().to_list())
    trained = row.get("params") or {}
    episode_bars = trained.get("episode_bars")
    with connect(warehouse) as con:
        if policy.spec.timeframe != TIMEFRAME or not set(policy.spec.symbols) <= have:
            bars = load_bars(con, list(policy.spec.symbols), policy.spec.timeframe, *window)
        # Its episodes as it was trained on them (the stored calendar, its episode length).
        rule = stored_session_rule(
            con,
            policy.spec.traded,
            policy.spec.timeframe,
            None if episode_bars is None else int(episode_bars),
        )
        wanted = (["sentiment"] if policy.spec.sentiment else []) + policy.spec.sentiment_columns()
        if wanted and (sentiment is None or not set(wanted) <= set(sentiment.columns)):
            # A model with other sentiment inputs than tonight's (a champion trained on
            # another config): its own inputs, read as backtest and live trading read them.
            loader = input_loader(policy.spec, trained)
            assert loader is not None  # it needs sentiment columns
            sentiment = loader(con, *window)[0]
    sessions, held_out = held_out_data(
        bars, policy.spec, policy.scaler, (test_start, window[1]), sentiment, forecasts, rule
    )
    return HeldOutAgent(policy.net, sessions, held_out, policy.spec.traded)


def evaluate_registered_agent(
    warehouse: str,
    row: dict[str, Any],
    bars: pl.DataFrame,
    window: tuple[datetime, datetime],
    test_start: datetime,
    costs: Costs,
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
) -> dict[str, dict[str, float]]:
    """A registered agent (sha256 checked on load) on the held-out sessions [test_start, window end).

    Its own features and scaler over the same bars, sentiment and forecasts as every other
    model judged on them; bars of assets its spec needs beyond `bars` are loaded.
    Returns evaluate_network's table: 'agent' beside 'buy_and_hold', 'flat', 'momentum_rule'.
    """
    h = held_out_agent(warehouse, row, bars, window, test_start, sentiment, forecasts)
    return evaluate_network(h.net, h.sessions, costs, h.bars, h.symbol)


def held_out_trading(
    warehouse: str,
    row: dict[str, Any],
    bars: pl.DataFrame,
    window: RetrainWindow,
    costs: Costs,
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
) -> tuple[pl.Series, np.ndarray]:
    """A registered agent's per-bar trading returns on the held-out days, with their bars' ts:
    the book the agent gate judges (evaluate_network_with_returns), for the allocator's panel."""
    h = held_out_agent(warehouse, row, bars, window.span, window.test_start, sentiment, forecasts)
    _, streams = evaluate_network_with_returns(h.net, h.sessions, costs, h.bars, h.symbol)
    return h.bars.sort("ts").get_column("ts"), streams["agent"]


def agent_decisions(
    warehouse: str,
    symbol: str,
    candidate_ids: list[str],
    bars: pl.DataFrame,
    window: tuple[datetime, datetime],
    test_start: datetime,
    costs: Costs,
    gate: GateLevels,
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
    *,
    verdict_function: VerdictFunction = judge_candidate,
) -> list[GateDecision]:
    """The gate's decisions for a symbol's agent candidates (models.gate.agent_decisions_on_streams).

    Every candidate and the champion (the symbol's production dqn) are evaluated by the same
    code on the same held-out bars and costs, as per-bar return streams beside buy-and-hold,
    flat and the momentum rule (models.train.evaluate_network_with_returns: one pass). Each candidate is recorded
    as a trial (kind 'agent', dataset = the symbol, the held-out range) before any is
    judged, so the deflated Sharpe ratio counts tonight's seeds and every earlier trial on
    the symbol. Without a champion (or with one that cannot be evaluated) it must beat the
    baselines only. A candidate already in production is not judged again.
    ``verdict_function`` is models.evaluation.judge_candidate; tests may plant another.
    """
    span = (test_start, window[1])

    def streams(model_id: str, row: dict[str, Any]) -> HeldOutStreams:
        h = held_out_agent(warehouse, row, bars, window, test_start, sentiment, forecasts)
        table, returns = evaluate_network_with_returns(h.net, h.sessions, costs, h.bars, h.symbol)
        return HeldOutStreams(model_id, returns, table)

    with connect(warehouse) as con:
        rows = {m: load_model_row(con, m) for m in candidate_ids}
        champ_id = production_model_id(con, AGENT_KIND, symbol)
        champ_row = load_model_row(con, champ_id) if champ_id else None
    champion: np.ndarray | None = None
    details: dict[str, Any] = {}
    if champ_id is not None and champ_row is not None and champ_id not in rows:
        try:
            champion = streams(champ_id, champ_row).returns["agent"]
            trained = (champ_row["params"] or {}).get("train_range")
            if trained and str(trained[-1]) > str(test_start):
                details["note"] = (
                    f"the champion trained until {trained[-1]}, into the held-out days: "
                    "its numbers there are in-sample (the comparison favours it)"
                )
        except Exception as exc:  # noqa: BLE001 -- an unusable champion: judged by the baselines
            details["note"] = f"champion {champ_id} could not be evaluated: {exc}"
    judged = {
        m: (row, streams(m, row))
        for m, row in rows.items()
        if row is not None and row["stage"] != "production"
    }
    if not judged:
        return []
    per_year = streams_bars_per_year(next(iter(judged.values()))[1], periods_per_year(symbol))
    with connect(warehouse) as con:
        for model_id, (row, st) in judged.items():
            record_trial(
                con,
                kind="agent",
                dataset=symbol,
                data_start=span[0],
                data_end=span[1],
                config={"model_id": model_id, "architecture": row.get("architecture")},
                seed=(row.get("params") or {}).get("seed"),
                sharpe=core_metrics.sharpe(st.returns["agent"], per_year),
                n_obs=int(st.returns["agent"].size),
                periods_per_year=per_year,
                created_at=datetime.now(UTC),
            )
        trials = load_trial_sharpes(con, symbol, "agent")
    trial_sharpes = trials.get_column("sharpe").drop_nulls().to_numpy()
    return agent_decisions_on_streams(
        [st for _, st in judged.values()],
        kind=AGENT_KIND,
        symbol=symbol,
        bars_per_year=per_year,
        n_trials=trials.height,
        trial_sharpes=trial_sharpes if trial_sharpes.size >= 2 else None,
        champion_id=champ_id,
        champion_returns=champion,
        alpha=gate.alpha,
        dsr_min=gate.dsr_min,
        drawdown_margin=gate.drawdown_margin,
        eval_start=span[0],
        eval_end=span[1],
        details=details,
        verdict_function=verdict_function,
    )


def forecaster_gate_decision(
    symbol: str, forecaster: dict[str, Any], gate: GateLevels
) -> GateDecision:
    """The gate's decision on a forecaster candidate from its fit task's result (models.gate.forecaster_decision):
    its out-of-fold rank IC, beside the champion's on the same folds when its recipe was cross-validated."""
    metrics = forecaster.get("metrics") or {}
    champion = forecaster.get("champion") or {}
    champ_cv = forecaster.get("champion_cv")
    return forecaster_decision(
        candidate_id=str(forecaster["model_id"]),
        kind=FORECASTER_KIND,
        symbol=symbol,
        metrics_=metrics,
        champion_id=champion.get("id") if champ_cv is not None else None,
        champion_metrics=champ_cv,
        alpha=gate.alpha,
        min_independent_labels=gate.forecaster_min_independent_labels,
        eval_start=parse_ts(forecaster.get("eval_start")),
        eval_end=parse_ts(forecaster.get("eval_end")),
        details={
            "champion": champion,
            "rows": metrics.get("n"),
            "rmse": metrics.get("rmse"),
            "naive_rmse": metrics.get("naive_rmse"),
            "directional_accuracy": metrics.get("directional_accuracy"),
            "champion_cv": {k: v for k, v in (champ_cv or {}).items() if k != "folds"},
        },
    )


def apply_gate(
    warehouse: str,
    decisions: list[GateDecision],
    decided_at: datetime,
    *,
    promote_passing: bool = True,
    flow_run_id: str | None = None,
) -> dict[str, bool]:
    """Store the decisions in promotion_decisions and promote the best passing candidate of each
    kind and symbol (its artifact verified first); returns candidate_id -> promoted."""
    chosen = set(choose_promotions(decisions).values()) if promote_passing else set()
    promoted = {d.candidate_id: d.candidate_id in chosen for d in decisions}
    if not decisions:
        return promoted
    with connect(warehouse) as con:
        for d in decisions:
            if promoted[d.candidate_id]:
                row = load_model_row(con, d.candidate_id)
                if row is None:
                    raise KeyError(f"no model {d.candidate_id!r} in the registry")
                verify_artifact(row)  # never promote an artifact that is missing or altered
                promote(con, d.candidate_id, decided_at, actor="gate", reason=d.verdict.reason)
        write_promotion_decisions(
            con, [d.row(decided_at, flow_run_id, promoted[d.candidate_id]) for d in decisions]
        )
    send_gate_verdicts(decisions, promoted)
    return promoted


def verdict_summary(d: GateDecision, promoted: bool) -> dict[str, Any]:
    """One decision as a run summary lists it."""
    return {
        "candidate_id": d.candidate_id,
        "kind": d.kind,
        "reference": d.reference_name,
        "reference_id": d.reference_id,
        "candidate_objective": d.candidate.objective,
        "reference_objective": d.reference.objective,
        "candidate_max_drawdown": d.candidate.max_drawdown,
        "reference_max_drawdown": d.reference.max_drawdown,
        "passed": d.verdict.passed,
        "promoted": promoted,
        "reason": d.verdict.reason,
        "statistics": json_safe(d.statistics),
    }
