"""The nightly SVM allocator: its out-of-sample daily panel from the coin agents, its nested
walk-forward fit, its registry entry and the gate's decision on it.

The agents were trained on [start, test_start); the panel holds their outputs and their own
trading on the held-out days only. The allocator is tuned and fitted on the older part of
those days and judged on the newer part (models.allocator.split_out_of_sample), beside the
champion allocator on the same rows and the baselines (the agents at equal weights, the
coins' buy-and-hold, cash). The caller stores the decision (tasks.gate.apply_gate).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core import metrics as core_metrics
from core.jsonable import json_safe, parse_ts
from core.provenance import fingerprint
from models.allocator import ALLOCATOR as ALLOCATOR_NAME
from models.allocator import BASELINES as ALLOCATOR_BASELINES
from models.allocator import FEATURES as ALLOCATOR_FEATURES
from models.allocator import INPUT_SPAN as ALLOCATOR_INPUT_SPAN
from models.allocator import (
    AllocatorConfig,
    AllocatorFit,
    StrategyReturns,
    allocator_returns,
    load_allocator,
    save_allocator,
    split_out_of_sample,
    train_allocator,
)
from models.env import Costs
from models.gate import ALLOCATOR_SYMBOL, GateDecision, agent_decision
from models.portfolio import (
    compute_allocator_panel,
    compute_q_advantage,
    daily_trading_returns,
    with_agent_trading,
)
from models.registry import load_registered_agent
from tasks.gate import AGENT_KIND, GateLevels, RetrainWindow, held_out_trading
from warehouse.db import connect
from warehouse.registry import load_model_row, production_model_id, write_model
from warehouse.trials import load_trial_sharpes, record_trial

ALLOCATOR_KIND = "svm_allocator"
ALLOCATOR_TRIAL_KIND = "allocator"  # the trials table's kind for svm_allocator candidates


@dataclass(frozen=True)
class AllocatorJob:
    """What one nightly allocator fit needs from its run."""

    warehouse: str
    models_dir: Path
    window: RetrainWindow
    overrides: dict[str, Any]
    """The run config's AllocatorConfig overrides (JSON lists become grids)."""
    drawdown_days: int
    gate: GateLevels


@dataclass(frozen=True)
class CoinData:
    """One coin's bars and inputs as the night loaded them."""

    symbol: str
    bars: pl.DataFrame
    costs: Costs
    sentiment: pl.DataFrame | None
    forecasts: pl.DataFrame | None


@dataclass(frozen=True)
class AllocatorOutcome:
    """The run summary's allocator entry, and the gate's decision when the candidate was judged."""

    result: dict[str, Any]
    decision: GateDecision | None


def allocator_config(overrides: dict[str, Any], costs: Costs | None = None) -> AllocatorConfig:
    """The config's overrides of AllocatorConfig; unless it sets cost_bps, a weight change pays
    the coins' own round trip (buy and sell at their asset class's costs)."""
    values: dict[str, Any] = {"periods_per_year": 365.0}
    if costs is not None:
        values["cost_bps"] = 2.0 * (costs.fee_bps + costs.slippage_bps) + costs.sell_fee_bps
    for key, value in overrides.items():
        values[key] = tuple(value) if isinstance(value, list) else value  # JSON lists -> grids
    return AllocatorConfig(**values)


def panel_agent(warehouse: str, symbol: str, candidate_ids: list[str]) -> dict[str, Any] | None:
    """The agent whose outputs feed the allocator: the coin's production agent after the gate,
    else tonight's first trained candidate."""
    with connect(warehouse) as con:
        prod = production_model_id(con, AGENT_KIND, symbol)
        chosen = prod or (candidate_ids[0] if candidate_ids else None)
        return load_model_row(con, chosen) if chosen else None


def trained_until(row: dict[str, Any]) -> datetime:
    """The (exclusive) end of an agent's training data, from its registered train_range."""
    trained = (row.get("params") or {}).get("train_range")
    end = parse_ts(trained[-1]) if trained else None
    if end is None:
        raise ValueError(
            f"agent {row['model_id']} has no train_range: its out-of-sample days are unknown"
        )
    return end if end.tzinfo is not None else end.replace(tzinfo=UTC)


def coin_panel(job: AllocatorJob, coin: CoinData, row: dict[str, Any]) -> pl.DataFrame:
    """The coin's out-of-sample panel rows: the agent's inputs and its own trading on the held-out days.

    The agent's trading is its held-out book (greedy positions, the coin's costs) played by
    the code the agent gate uses (tasks.gate.held_out_trading), compounded to UTC days.
    Only rows whose input day starts at or after both the agent's training end and the
    held-out start are kept: the days the agent trained on, and the day straddling the split,
    are in-sample (models.allocator.check_out_of_sample refuses them).
    """
    until = trained_until(row)
    policy = load_registered_agent(row)
    q = compute_q_advantage(policy, coin.bars, coin.sentiment, coin.forecasts)
    panel = compute_allocator_panel(
        coin.symbol, coin.bars, q, coin.sentiment, coin.forecasts, drawdown_days=job.drawdown_days
    )
    ts, returns = held_out_trading(
        job.warehouse, row, coin.bars, job.window, coin.costs, coin.sentiment, coin.forecasts
    )
    daily = daily_trading_returns(ts, returns)
    first_input_day = max(until, job.window.test_start)
    return with_agent_trading(panel, daily, str(row["model_id"]), until).filter(
        pl.col("period") - ALLOCATOR_INPUT_SPAN >= first_input_day
    )


def _register(
    job: AllocatorJob,
    model_id: str,
    fit: AllocatorFit,
    streams_table: dict[str, dict[str, Any]],
    sharpe: float,
    agents: dict[str, str],
    sources: list[str],
    split: dict[str, list[str]],
) -> tuple[str, str | None, dict[str, Any] | None]:
    """Write the candidate's artifact and registry row (once); returns its stage and the champion."""
    coins = sorted(agents)
    artifact = job.models_dir / model_id
    extra = {
        "nightly": True,
        "coins": coins,
        "agents": agents,
        "split": split,
        "fitted_until": str(fit.fitted_until),
        "held_out": streams_table,
        "validation": fit.validation.to_dicts(),
    }
    sha = save_allocator(artifact, fit.allocator, extra)
    with connect(job.warehouse) as con:
        existing = load_model_row(con, model_id)
        if existing is None:
            write_model(
                con,
                {
                    "model_id": model_id,
                    "kind": ALLOCATOR_KIND,
                    "symbol": ALLOCATOR_SYMBOL,
                    "feature_schema_hash": hashlib.sha256(
                        json.dumps({"features": ALLOCATOR_FEATURES, "coins": coins}).encode()
                    ).hexdigest()[:16],
                    "architecture": {"model": "rbf-svc+platt", "params": vars(fit.params)},
                    "params": {
                        "config": job.overrides,
                        "agents": agents,
                        "nightly": True,
                        "data_sources": sources,
                        "split": split,
                        "fitted_until": str(fit.fitted_until),
                    },
                    "metrics": json_safe(
                        {
                            **streams_table[ALLOCATOR_NAME],
                            "objective": sharpe,
                            "objective_name": "daily traded P&L annualised Sharpe (judged days)",
                            "baselines": {
                                k: v for k, v in streams_table.items() if k != ALLOCATOR_NAME
                            },
                        }
                    ),
                    "artifact_path": str(artifact),
                    "artifact_sha256": sha,
                    "stage": "candidate",
                    "created_at": datetime.now(UTC),
                    "promoted_at": None,
                },
            )
        champ_id = production_model_id(con, ALLOCATOR_KIND, ALLOCATOR_SYMBOL)
        champ_row = load_model_row(con, champ_id) if champ_id else None
    stage = existing["stage"] if existing is not None else "candidate"
    return stage, champ_id, champ_row


def _champion_returns(
    champ_id: str | None,
    champ_row: dict[str, Any] | None,
    model_id: str,
    judged: pl.DataFrame,
    judge_start: datetime,
    details: dict[str, Any],
) -> np.ndarray | None:
    """The champion allocator's daily traded returns on the judged rows (None: none usable;
    why, and whether its numbers there are in-sample, go into `details`)."""
    if champ_row is None or champ_id == model_id:
        return None
    try:
        champ = load_allocator(
            Path(str(champ_row["artifact_path"])), str(champ_row["artifact_sha256"])
        )
        returns = allocator_returns(champ, judged).returns[ALLOCATOR_NAME]
        fitted = parse_ts((champ.meta.get("extra") or {}).get("fitted_until"))
        if fitted is None or fitted > judge_start:
            details["note"] = (
                f"the champion was fitted until {fitted or 'an unknown day'}, into the "
                "judged days: its numbers there are in-sample (the comparison favours it)"
            )
        return returns
    except Exception as exc:  # noqa: BLE001 -- an unusable champion: judged by the baselines
        details["note"] = f"champion {champ_id} could not be evaluated: {exc}"
        return None


def _trial(
    job: AllocatorJob,
    model_id: str,
    fit: AllocatorFit,
    agents: dict[str, str],
    streams: StrategyReturns,
    cfg: AllocatorConfig,
) -> tuple[int, np.ndarray | None]:
    """Record the candidate as a trial before it is judged; returns the trial count and Sharpes."""
    candidate = streams.returns[ALLOCATOR_NAME]
    with connect(job.warehouse) as con:
        record_trial(
            con,
            kind=ALLOCATOR_TRIAL_KIND,
            dataset=ALLOCATOR_SYMBOL,
            data_start=streams.periods[0],
            data_end=job.window.end,
            config={"model_id": model_id, "params": vars(fit.params), "agents": agents},
            sharpe=core_metrics.sharpe(candidate, cfg.periods_per_year),
            n_obs=int(candidate.size),
            periods_per_year=cfg.periods_per_year,
            created_at=datetime.now(UTC),
        )
        trials = load_trial_sharpes(con, ALLOCATOR_SYMBOL, ALLOCATOR_TRIAL_KIND)
    sharpes = trials.get_column("sharpe").drop_nulls().to_numpy()
    return trials.height, sharpes if sharpes.size >= 2 else None


def train_and_judge_allocator(
    job: AllocatorJob,
    panel: pl.DataFrame,
    agents: dict[str, str],
    sources: list[str],
    costs: Costs,
    log: Callable[..., None],
) -> AllocatorOutcome:
    """Nested walk-forward: fit on the earlier out-of-sample days, judge on the later ones.

    The candidate is registered (once: a re-run refits it identically) and recorded as a
    trial (kind 'allocator') before it is judged, so the deflated Sharpe ratio counts every
    allocator tried on these coins; one already in production is not judged again.
    """
    cfg = allocator_config(job.overrides, costs)
    fit_part, judged = split_out_of_sample(panel, cfg.judge_fraction)
    fit = train_allocator(fit_part, cfg)
    streams = allocator_returns(fit.allocator, judged)
    by = {
        str(r.pop("strategy")): r for r in streams.table(cfg.periods_per_year).iter_rows(named=True)
    }
    judge_start, judge_end = streams.periods[0], job.window.end
    candidate = streams.returns[ALLOCATOR_NAME]
    sharpe = core_metrics.sharpe(candidate, cfg.periods_per_year)
    model_id = (
        f"svm-allocator-{job.window.last_day:%Y%m%d}-{fingerprint(panel, job.overrides, agents)}"
    )
    split = {k: [str(v[0]), str(v[1])] for k, v in fit.split.items()}
    split["judged"] = [str(judge_start), str(streams.periods[-1])]
    stage, champ_id, champ_row = _register(job, model_id, fit, by, sharpe, agents, sources, split)
    result: dict[str, Any] = {
        "status": "trained",
        "model_id": model_id,
        "coins": sorted(agents),
        "agents": agents,
        "params": vars(fit.params),
        "held_out": by,
    }
    if stage == "production":
        log("%s is already the production allocator; not judged again", model_id)
        return AllocatorOutcome(result, None)
    details: dict[str, Any] = {
        "judged_periods": len(streams.periods),
        "fit_periods": split["fit"],
        "validation_periods": split["validation"],
        "held_out": json_safe(by),
    }
    champion = _champion_returns(champ_id, champ_row, model_id, judged, judge_start, details)
    n_trials, trial_sharpes = _trial(job, model_id, fit, agents, streams, cfg)
    decision = agent_decision(
        candidate_id=model_id,
        kind=ALLOCATOR_KIND,
        symbol=ALLOCATOR_SYMBOL,
        candidate_returns=candidate,
        baseline_returns={name: streams.returns[name] for name in ALLOCATOR_BASELINES},
        periods_per_year=cfg.periods_per_year,
        n_trials=n_trials,
        trial_sharpes=trial_sharpes,
        champion_id=champ_id if champion is not None else None,
        champion_returns=champion,
        alpha=job.gate.alpha,
        dsr_min=job.gate.dsr_min,
        drawdown_margin=job.gate.drawdown_margin,
        eval_start=judge_start,
        eval_end=judge_end,
        details=details,
    )
    return AllocatorOutcome(result, decision)
