"""`evaluate` flow: walk-forward folds of a stored series -> the agent trained per fold and seed beside the baselines -> statistics, warehouse tables, HTML report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from tqdm import tqdm

from core.assets import AssetClass, infer_asset_class
from core.configs import EvaluateConfig
from core.costs import configured_costs
from core.sessions import session_rule
from core.settings import get_settings, require_writable
from models.dqn import DQNParams
from models.env import Costs
from models.evaluation import Fold, walk_forward_folds
from models.features import FeatureSpec, unavailable_note
from models.qnet import Architecture
from models.threads import threads_for_tasks
from models.walk_forward import (
    FoldResult,
    WalkForwardPlan,
    WalkForwardSummary,
    bars_per_year,
    result_frame,
    seed_sharpes,
    summarize_walk_forward,
    verdict_columns,
)
from tasks.evaluate import evaluate_fold
from trading.evaluation_report import overall_rows, verdict_lines, write_evaluation_report
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.evaluations import write_evaluation
from warehouse.summary import load_symbol_coverage
from warehouse.symbols import load_symbols
from warehouse.trials import load_trial_sharpes, record_trial


@flow(name="evaluate-folds", validate_parameters=False)
def evaluate_folds(
    bars: pl.DataFrame,
    plan: WalkForwardPlan,
    ts: pl.Series,
    per_year: float,
    on_seed: Callable[[Fold, int], None],
    threads: int | None = None,
) -> list[FoldResult]:
    """Every fold at once, as many as the task runner's workers allow; results in fold order."""
    futures = [
        evaluate_fold.submit(bars, plan, f, ts, per_year, on_seed, threads) for f in plan.folds
    ]
    return [f.result() for f in futures]


def _load(
    config: EvaluateConfig, warehouse: Path
) -> tuple[pl.DataFrame, str, str | None, AssetClass]:
    """The symbol's stored bars (all of them), their timeframe, the symbol's calendar and asset class."""
    with connect(warehouse) as con:
        coverage = load_symbol_coverage(con, [config.symbol])
        stored = load_symbols(con, [config.symbol]).get(config.symbol)
    rows = coverage.filter(pl.col("symbol") == config.symbol)
    if config.timeframe is not None:
        rows = rows.filter(pl.col("timeframe") == config.timeframe)
    if rows.height == 0:
        hint = "ingest-bars --source skfolio" if config.symbol == "SPX" else "ingest-bars"
        which = f" ({config.timeframe})" if config.timeframe else ""
        raise ValueError(
            f"no stored bars of {config.symbol}{which} in {warehouse}; run `tradingml {hint}` first"
        )
    # The timeframe with the most bars when several are stored.
    row = rows.sort("bars", descending=True).row(0, named=True)
    timeframe = str(row["timeframe"])
    with connect(warehouse) as con:
        bars = load_bars(
            con, [config.symbol], timeframe, row["first_bar"], row["last_bar"] + timedelta(days=1)
        )
    # Costs follow the asset class stored at import, else the one inferred from the name.
    asset_class = stored.asset_class if stored is not None else infer_asset_class(config.symbol)
    return bars, timeframe, stored.calendar if stored is not None else None, asset_class


def recipe(config: EvaluateConfig, costs: Costs) -> dict[str, Any]:
    """What shapes the result: the config with the cost model it resolved to (per asset class)."""
    return {**config.recipe(), "costs": dataclasses.asdict(costs)}


def eval_id(config: EvaluateConfig, costs: Costs, bars: pl.DataFrame) -> str:
    """The same config and costs over the same bars is the same evaluation (its rows are rewritten)."""
    digest = hashlib.sha256(json.dumps(recipe(config, costs), sort_keys=True).encode())
    digest.update(bars.select("ts", "close").write_csv().encode())
    return f"ev-{config.symbol.replace('/', '-')}-{digest.hexdigest()[:12]}"


def _seed_table(summary_overall: pl.DataFrame) -> list[str]:
    """The overall table as markdown lines (for the console and the artifact)."""
    rows = overall_rows(summary_overall)
    head = "| policy | return | CAGR | Sharpe | Sortino | max drawdown | Calmar | exposure | turnover/yr |"
    lines = [head, "|---|" + "---:|" * 8]
    lines += ["| " + " | ".join([label, *cells]) + " |" for label, cells in rows]
    return lines


def _plan(
    config: EvaluateConfig, ts: pl.Series, timeframe: str, calendar: str | None, costs: Costs
) -> WalkForwardPlan:
    """The folds and the training of `config` over the stored bars' stamps."""
    folds = walk_forward_folds(
        ts,
        first_test_year=config.first_test_year,
        window=config.window,
        train_size=config.train_bars,
        min_train=config.min_train_bars,
        embargo=config.embargo_bars,
    )
    if config.last_test_year is not None:
        # Yearly folds are labelled by their year and come in time order: cutting the tail
        # keeps their indices 0, 1, ...
        folds = [f for f in folds if int(f.label) <= config.last_test_year]
    if not folds:
        last = f" to {config.last_test_year}" if config.last_test_year is not None else ""
        raise ValueError(
            f"no walk-forward fold: {config.symbol} has {ts.len()} bars from {ts[0]:%Y-%m-%d} to "
            f"{ts[-1]:%Y-%m-%d}; need test years from {config.first_test_year}{last} with at "
            f"least {config.min_train_bars} training bars before each"
        )
    return WalkForwardPlan(
        FeatureSpec(symbols=(config.symbol,), timeframe=timeframe),
        session_rule(config.symbol, timeframe, calendar, episode_bars=config.episode_bars),
        folds,
        list(config.seeds),
        Architecture.from_dict(_overrides(config.architecture, Architecture, "architecture")),
        DQNParams.from_dict(
            {**_overrides(config.params, DQNParams, "params"), "cycles": config.cycles}
        ),
        costs,
        config.budget_s,
    )


def _overrides(given: dict[str, Any], cls: type[Any], option: str) -> dict[str, Any]:
    """`given`, refused when it names a field `cls` lacks (from_dict would drop a typo silently)."""
    unknown = sorted(set(given) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(
            f"{option} names {', '.join(unknown)}, not fields of {cls.__name__}; it has "
            f"{', '.join(cls.__dataclass_fields__)}"
        )
    return given


def _run_folds(
    bars: pl.DataFrame, plan: WalkForwardPlan, ts: pl.Series, per_year: float, workers: int
) -> pl.DataFrame:
    """Every fold through the subflow, with a progress bar counting trained agents."""
    progress = tqdm(
        total=len(plan.folds) * len(plan.seeds),
        desc=f"evaluate {plan.spec.traded}",
        unit="agent",
        file=sys.stderr,
        mininterval=1.0,
    )
    lock = threading.Lock()

    def tick(_: Fold, __: int) -> None:
        with lock:
            progress.update(1)

    runner: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=workers)
    # Each fold's torch work on its share of the cores: `workers` folds that each used every
    # core would contend for them (models.threads).
    try:
        with threads_for_tasks(workers) as threads:
            results = evaluate_folds.with_options(task_runner=runner)(
                bars, plan, ts, per_year, tick, threads
            )
    finally:
        progress.close()
    return result_frame(results)


def _judge(
    warehouse: Path,
    config: EvaluateConfig,
    costs: Costs,
    frame: pl.DataFrame,
    per_year: float,
    now: datetime,
) -> WalkForwardSummary:
    """Record each seed's chained out-of-sample stream as a trial, then judge with every trial counted.

    The deflated Sharpe ratio counts every trial ever evaluated on this series, this run's
    seeds and every earlier evaluation's, plus ``config.prior_trials`` (those spent choosing
    the configuration that the trials table does not hold, e.g. development-fold candidates).
    """
    first: datetime = frame["ts"].min()  # type: ignore[assignment]
    last: datetime = frame["ts"].max()  # type: ignore[assignment]
    trial_config = {k: v for k, v in recipe(config, costs).items() if k != "seeds"}
    with connect(warehouse) as con:
        for seed, (sharpe, n_obs) in seed_sharpes(frame, per_year).items():
            record_trial(
                con,
                kind="agent",
                dataset=config.symbol,
                data_start=first,
                data_end=last,
                config=trial_config,
                sharpe=sharpe,
                n_obs=n_obs,
                periods_per_year=per_year,
                created_at=now,
                seed=seed,
            )
        trials = load_trial_sharpes(con, config.symbol)
    return summarize_walk_forward(
        frame,
        per_year,
        n_trials=max(1, trials.height + config.prior_trials),
        trial_sharpes=trials["sharpe"].drop_nulls().to_numpy() if trials.height > 1 else None,
        reps=config.reps,
    )


def _say(logger: Any, line: str | None) -> None:
    """A line for the console (once) and the run's log."""
    if line is not None:
        sys.stderr.write(line + "\n")
        logger.info(line)


def _title(config: EvaluateConfig, timeframe: str, folds: Sequence[Fold]) -> str:
    return (
        f"Walk-forward evaluation: {config.symbol} ({timeframe}), "
        f"test {folds[0].label} to {folds[-1].label}"
    )


def _choice_notes(config: EvaluateConfig) -> list[str]:
    """What the report says of a non-default agent and of the trials spent choosing it."""
    notes = []
    if config.params or config.architecture:
        chosen = {**config.params, **config.architecture}
        notes.append("Agent settings: " + json.dumps(chosen, sort_keys=True) + ".")
    if config.prior_trials:
        notes.append(
            f"{config.prior_trials} earlier trials spent choosing this configuration are counted "
            "by the deflated Sharpe ratio."
        )
    return notes


def out_of_sample(config: EvaluateConfig, warehouse: Path) -> tuple[pl.DataFrame, float]:
    """The walk-forward result frame of `config` (models.walk_forward.result_frame) and its bars
    per year, recording nothing (no trial, no evaluation): what a development-fold selection scores."""
    bars, timeframe, calendar, asset_class = _load(config, warehouse)
    ts = bars.sort("ts")["ts"]
    costs = configured_costs(asset_class, config.fee_bps, config.slippage_bps)
    plan = _plan(config, ts, timeframe, calendar, costs)
    per_year = bars_per_year(config.symbol, timeframe, ts)
    return _run_folds(bars, plan, ts, per_year, config.workers), per_year


def _store(
    warehouse: Path,
    reports: Path,
    config: EvaluateConfig,
    run_id: str,
    timeframe: str,
    sources: list[str],
    frame: pl.DataFrame,
    summary: WalkForwardSummary,
    folds: Sequence[Fold],
    now: datetime,
    costs: Costs,
) -> Path:
    """The HTML report, then the evaluation's rows (the row names the report); the report's path."""
    synthetic = any(s.startswith("synthetic") for s in sources)
    path = write_evaluation_report(
        reports / f"{run_id}.html",
        title=_title(config, timeframe, folds),
        summary=summary,
        returns=frame,
        notes=[
            ("SYNTHETIC data: " if synthetic else "Real data: ") + ", ".join(sources) + ".",
            f"{len(folds)} walk-forward folds ({config.window} training window, "
            f"{config.embargo_bars}-bar embargo), {len(config.seeds)} seeds per fold, "
            f"{config.cycles} training cycles per seed; {costs.describe()}.",
            *_choice_notes(config),
        ],
        config=recipe(config, costs),
    )
    run = {
        "eval_id": run_id,
        "created_at": now,
        "symbol": config.symbol,
        "timeframe": timeframe,
        "data_sources": ",".join(sources),
        "config": recipe(config, costs),
        "n_folds": len(folds),
        "n_seeds": len(config.seeds),
        "test_start": frame["ts"].min(),
        "test_end": frame["ts"].max(),
        "report_path": str(path),
        **verdict_columns(summary),
    }
    with connect(warehouse) as con:
        write_evaluation(con, run, summary.folds, summary.overall, frame)
    return path


@flow(name="evaluate", log_prints=True)
def evaluate(config: EvaluateConfig | None = None) -> dict[str, Any]:
    """Walk-forward evaluation: per test year, train each seed on the past, trade the year beside the baselines; judge."""
    config = config or EvaluateConfig()
    settings = get_settings()
    logger = get_run_logger()
    warehouse = Path(config.warehouse) if config.warehouse else settings.warehouse_path
    reports = Path(config.reports_dir) if config.reports_dir else settings.data_dir / "reports"
    require_writable(reports, f"the reports folder {reports}", "reports_dir or TRADINGML_DATA_DIR")
    bars, timeframe, calendar, asset_class = _load(config, warehouse)
    ts = bars.sort("ts")["ts"]
    costs = configured_costs(asset_class, config.fee_bps, config.slippage_bps)
    plan = _plan(config, ts, timeframe, calendar, costs)
    folds = plan.folds
    sources = sorted(str(s) for s in bars["source"].unique().to_list())
    _say(
        logger,
        f"evaluate {config.symbol} ({timeframe}, {', '.join(sources)}): {len(folds)} folds "
        f"{folds[0].label}..{folds[-1].label} x {len(config.seeds)} seeds, {config.cycles} cycles each",
    )
    _say(logger, costs.describe(asset_class))
    # Close-only series (skfolio) lack what some features need.
    _say(logger, unavailable_note(bars, plan.spec))
    per_year = bars_per_year(config.symbol, timeframe, ts)
    frame = _run_folds(bars, plan, ts, per_year, config.workers)
    now = datetime.now(UTC)
    summary = _judge(warehouse, config, costs, frame, per_year, now)
    run_id = eval_id(config, costs, bars)
    path = _store(
        warehouse, reports, config, run_id, timeframe, sources, frame, summary, folds, now, costs
    )
    title = _title(config, timeframe, folds)
    table = _seed_table(summary.overall)
    verdict = verdict_lines(summary)
    markdown = "\n".join([f"## {title}", "", *table, "", *(f"- {x}" for x in verdict)])
    create_markdown_artifact(key="evaluation", markdown=markdown, description=run_id)
    create_link_artifact(key="evaluation-report", link=path.resolve().as_uri(), link_text=path.name)
    return {
        "eval_id": run_id,
        "symbol": config.symbol,
        "timeframe": timeframe,
        "folds": len(folds),
        "seeds": len(config.seeds),
        "promoted": summary.verdict.promoted,
        "spa_p": summary.verdict.spa_p,
        "dsr": summary.verdict.dsr,
        "n_trials": summary.n_trials,
        "prior_trials": config.prior_trials,
        "table": table,
        "verdict": verdict,
        "report": str(path),
    }
