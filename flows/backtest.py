"""`backtest` flow: a registered agent over a warehouse date range through the live execution path."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.logging import get_run_logger
from tqdm import tqdm

from core.account_rules import account_rules
from core.assets import infer_asset_class
from core.configs import BacktestConfig, utc_midnight
from core.costs import configured_costs
from core.provenance import data_sources
from core.sessions import SessionRule, session_rule
from core.settings import get_settings, require_writable
from flows.data_defaults import resolve_backtest_config, say
from models.env import Costs
from models.features import unavailable_note
from models.registry import AgentPolicy, load_registered_agent
from trading.backtest import BacktestResult, run_backtest, warmup_days
from trading.inputs import input_loader
from trading.ledger import Ledger
from trading.report import report_markdown, write_report
from trading.risk import RiskLimits
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.registry import choose_model
from warehouse.summary import hourly_sentiment, load_symbol_coverage
from warehouse.symbols import load_symbols


@dataclass(frozen=True)
class _Setup:
    """A backtest's resolved inputs: the model, its bars and inputs, costs and episode rule."""

    config: BacktestConfig
    row: dict[str, Any]
    policy: AgentPolicy
    bars: pl.DataFrame
    sentiment: pl.DataFrame | None
    forecasts: pl.DataFrame | None
    costs: Costs
    rule: SessionRule
    run_id: str


def _setup(config: BacktestConfig, warehouse: Path, logger: Any) -> _Setup:
    """The model (production or named), the range it defaults to, its costs (the symbol's asset
    class), its episode rule (the stored calendar, as trained), its bars and inputs with warm-up."""
    with connect(warehouse) as con:
        row = choose_model(con, config.symbol, config.model_id)
    policy = load_registered_agent(row)
    spec = policy.spec
    with connect(warehouse) as con:
        coverage = load_symbol_coverage(con, [config.symbol])
    config, using = resolve_backtest_config(config, coverage, spec.timeframe, row.get("params"))
    if using is not None:
        say(logger, using)
    start, end = utc_midnight(config.start), utc_midnight(config.end)
    trained = row.get("params") or {}
    with connect(warehouse) as con:
        stored = load_symbols(con, [spec.traded]).get(spec.traded)
    # Costs follow the symbol's asset class (stored at import, else inferred from its name).
    asset_class = stored.asset_class if stored is not None else infer_asset_class(spec.traded)
    costs = configured_costs(asset_class, config.fee_bps, config.slippage_bps)
    say(logger, costs.describe(asset_class))
    # The calendar stored with the symbol at import; the episodes the model was trained on.
    episode_bars = config.episode_bars
    if episode_bars is None and trained.get("episode_bars") is not None:
        episode_bars = int(trained["episode_bars"])
    rule = session_rule(
        spec.traded,
        spec.timeframe,
        stored.calendar if stored is not None else None,
        flatten_at_close=config.flatten_before_close_min > 0,
        episode_bars=episode_bars,
        flatten_min=config.flatten_before_close_min,
    )
    # Enough bars before `start` for the longest feature window, in bars of the timeframe.
    warm_start = start - timedelta(days=warmup_days(spec, rule))
    with connect(warehouse) as con:
        bars = load_bars(con, list(spec.symbols), spec.timeframe, warm_start, end)
    if bars.height == 0:
        raise ValueError(
            f"no {spec.timeframe} bars for {list(spec.symbols)} between {config.start} and "
            f"{config.end} in {warehouse}; run ingest-bars (or make demo) first"
        )
    note = unavailable_note(bars, spec)
    if note is not None:
        say(logger, note)  # close-only series (skfolio) lack what these need
    loader = input_loader(spec, trained)
    sentiment = forecasts = None
    if loader is not None:
        with connect(warehouse) as con:
            sentiment, forecasts = loader(con, warm_start, end)
    key = hashlib.sha256(config.model_dump_json().encode() + str(row["model_id"]).encode())
    run_id = (
        f"bt-{config.symbol.replace('/', '-')}-{config.start}-{config.end}-{key.hexdigest()[:8]}"
    )
    return _Setup(config, row, policy, bars, sentiment, forecasts, costs, rule, run_id)


def _run(b: _Setup, ledger: Ledger) -> BacktestResult:
    """The backtest through the live execution path, with a progress bar."""
    config = b.config
    bar = tqdm(
        total=1, desc=f"backtest {config.symbol}", unit="bar", file=sys.stderr, mininterval=1.0
    )

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    result = run_backtest(
        b.policy,
        b.bars,
        model_id=str(b.row["model_id"]),
        run_id=b.run_id,
        start=utc_midnight(config.start),
        end=utc_midnight(config.end),
        ledger=ledger,
        cash=config.cash,
        fee_bps=b.costs.fee_bps,
        slippage_bps=b.costs.slippage_bps,
        sell_fee_bps=b.costs.sell_fee_bps,
        account_rules=account_rules(config.account_rules),
        impact_bps=config.impact_bps,
        max_volume_share=config.max_volume_share,
        limits=RiskLimits(**config.risk.limits()),
        flatten_before_close_min=config.flatten_before_close_min,
        rule=b.rule,
        progress=progress,
        sentiment=b.sentiment,
        forecasts=b.forecasts,
    )
    bar.close()
    return result


def _store(
    b: _Setup, result: BacktestResult, ledger: Ledger, warehouse: Path, reports: Path
) -> tuple[Path, dict[str, int], list[str]]:
    """The report first, under a temporary name; then the ledger rows in one transaction; then
    the report under its name. A failure at any step leaves neither behind: never a ledger
    without its report, nor a report of rows that were not stored."""
    config = b.config
    sources = data_sources(b.bars)
    notes = [
        f"Bars from: {', '.join(sources)}; model {b.row['model_id']} (stage {b.row['stage']})."
    ]
    if any(s.startswith("synthetic") for s in sources):
        notes.insert(0, "SYNTHETIC data: these are generated minute bars, not market prices.")
    with connect(warehouse) as con:
        start, end = utc_midnight(config.start), utc_midnight(config.end)
        hourly = hourly_sentiment(con, [config.symbol], start, end)
    partial = reports / f".{b.run_id}.html.partial"
    try:
        write_report(
            partial,
            title=f"Backtest {config.symbol} {config.start} to {config.end}",
            equity=result.equity.select("ts", "strategy", "buy_and_hold", "baseline"),
            prices=result.prices,
            fills=result.fills,
            metrics=result.metrics,
            actions=result.actions,
            sentiment=hourly if hourly.height else None,
            notes=notes,
        )
        with connect(warehouse) as con:
            written = ledger.flush(con)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial.replace(reports / f"{b.run_id}.html"), written, sources


@flow(name="backtest", log_prints=True)
def backtest(config: BacktestConfig | None = None) -> dict[str, Any]:
    """Run a registered agent over [start, end) with the simulated broker; ledger, metrics, report."""
    config = config or BacktestConfig()
    settings = get_settings()
    logger = get_run_logger()
    warehouse = Path(config.warehouse) if config.warehouse else settings.warehouse_path
    reports = Path(config.reports_dir) if config.reports_dir else settings.data_dir / "reports"
    # Found now, not after the whole backtest has run.
    require_writable(reports, f"the reports folder {reports}", "reports_dir or TRADINGML_DATA_DIR")
    require_writable(
        warehouse.parent, f"the warehouse {warehouse}", "warehouse or TRADINGML_WAREHOUSE"
    )
    b = _setup(config, warehouse, logger)
    ledger = Ledger(warehouse, mode="backtest")
    result = _run(b, ledger)
    path, written, sources = _store(b, result, ledger, warehouse, reports)
    create_markdown_artifact(
        key="backtest-report", markdown=report_markdown(result.metrics, path), description=b.run_id
    )
    create_link_artifact(
        key="backtest-report-file", link=path.resolve().as_uri(), link_text=path.name
    )
    s = result.metrics["strategy"]
    logger.info(
        "%s: %d decisions, %d orders; total return %.2f%% (buy-and-hold %.2f%%), max drawdown %.2f%%",
        b.run_id,
        result.decisions,
        result.orders,
        100 * s["total_return"],
        100 * result.metrics["buy_and_hold"]["total_return"],
        100 * s["max_drawdown"],
    )
    return {
        "run_id": b.run_id,
        "model_id": b.row["model_id"],
        "symbol": b.config.symbol,
        "decisions": result.decisions,
        "orders": result.orders,
        "fills": result.fills.height,
        "metrics": result.metrics,
        "report": str(path),
        "written": written,
        "synthetic": any(s.startswith("synthetic") for s in sources),
    }


if __name__ == "__main__":
    backtest()
