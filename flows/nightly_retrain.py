"""`nightly-retrain` flow: coin forecasters -> SPY and coin agents in parallel -> SVM allocator -> promotion gate.

Steps, over one window of minute bars (default: the year up to the newest stored bar):

a. data: bars per symbol from the warehouse; each coin's point-in-time sentiment (the mean
   VADER compound of the posts mentioning it, counted from created_utc + lag); no posts:
   sentiment reads 0, and a log line says so;
b. forecasters: per coin, purged walk-forward CV, a final model and point-in-time
   walk-forward forecasts (one task per coin) -> `xgb_forecaster` candidates + artifacts,
   forecasts into `forecasts`;
c. agents: the SPY agent (as train-agent trains it) and one agent per coin whose inputs
   stack the coin's forecast and sentiment, trained in parallel through the Prefect task
   runner (thread pool by default, a process pool, or Dask) with the same weights for a
   seed on each; newest `agent_test_days` days held out;
d. the SVM allocator on a daily per-coin panel of the coin agents' outputs on the held-out
   days only (models/portfolio.py), its objective their trading P&L scaled by its weights:
   fitted on the earlier held-out days, judged on the later ones (nested walk-forward);
e. the gate (models/gate.py): each candidate against the champion on the same
   out-of-sample data and the naive baselines -- agents by SPA + deflated Sharpe on per-bar
   held-out returns (each recorded in `trials` first), forecasters by a HAC test of the
   out-of-fold rank IC for overlapping labels, the allocator by SPA + deflated Sharpe on its
   daily traded returns over its judged days (recorded in `trials` first);
   every decision and its statistics into `promotion_decisions` and a Prefect artifact;
   the best passing candidate per kind and symbol is promoted;
f. a summary per coin (forecaster, agents, verdicts) and the failures.

A symbol that fails (no bars, too few labeled rows, an exception in its task) is recorded
in the summary and the others go on. Re-running the flow on the same data trains nothing
twice: forecasters and the allocator are refitted identically and not re-registered,
agents already registered are reused, and a model already in production is not re-judged.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from core.configs import NightlyRetrainConfig
from core.settings import get_settings
from flows.alerts import alerting
from flows.wiring import build_task_runner, share_api_with_workers
from tasks.nightly import (
    allocator_step,
    fail_if_nothing_trained,
    gate_symbols,
    load_symbols_of_run,
    start_run,
    train_symbols,
)
from tasks.retrain_report import RetrainOutcome, publish_retrain_report, retrain_summary


def _task_runner(
    config: NightlyRetrainConfig, dask_address: str | None, scratch: Path
) -> TaskRunner[Any]:
    if config.runner == "thread":
        # wiring.build_task_runner knows 'serial' (one thread), 'process' and 'dask'.
        return ThreadPoolTaskRunner(max_workers=config.workers)
    share_api_with_workers()
    return build_task_runner(config.runner, config.workers, dask_address, scratch)


@flow(name="nightly-retrain", log_prints=True)
def nightly_retrain(config: NightlyRetrainConfig | None = None) -> dict[str, Any]:
    """Retrain forecasters, agents and the allocator on the newest data; promote what beats production."""
    config = config or NightlyRetrainConfig()
    settings = get_settings()
    dask_address = config.dask_address or settings.dask_address
    # A local Dask cluster's scratch space, removed once the run (and its cluster) ended.
    with tempfile.TemporaryDirectory(prefix="tradingml-dask-") as scratch:
        runner = _task_runner(config, dask_address, Path(scratch))
        with alerting("nightly"):  # the gate's verdicts become Prefect events
            return retrain_and_gate.with_options(task_runner=runner)(config, datetime.now(UTC))


# ---------------------------------------------------------------------------- the flow body


@flow(name="nightly-retrain-models")
def retrain_and_gate(config: NightlyRetrainConfig, decided_at: datetime) -> dict[str, Any]:
    """The steps of nightly-retrain, in the task runner the parent flow chose."""
    logger = get_run_logger()
    run, coins, spy = start_run(config, decided_at, logger.info)
    symbols = load_symbols_of_run(run, coins, spy, logger.info)  # a. data
    train_symbols(run, symbols, spy[:1], logger)  # b. forecasters, c. agents
    gate_symbols(run, symbols, logger)  # e. the gate for forecasters and agents
    # d. the allocator over the coins' agents, and its gate
    allocator = allocator_step(run, [s for s in symbols.values() if s.spec.forecast], logger)
    units = [*spy[:1], *coins]
    outcome = RetrainOutcome(
        run.window,
        run.decided_at,
        config.runner,
        units,
        symbols,
        allocator,
        run.decisions,
        run.failures,
        run.notes,
    )
    summary = retrain_summary(outcome)
    publish_retrain_report(outcome, summary)
    fail_if_nothing_trained(run, units, symbols)
    return summary


if __name__ == "__main__":
    nightly_retrain()
