"""`backtest` flow: a registered agent over a warehouse date range through the live execution path."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.logging import get_run_logger
from tqdm import tqdm

from core.assets import infer_asset_class
from core.costs import configured_costs
from core.sessions import session_rule
from core.settings import get_settings, require_writable
from flows.config import BacktestConfig, utc_midnight
from flows.data_defaults import resolve_backtest_config
from models.features import unavailable_note
from models.registry import load_registered_agent
from trading.backtest import run_backtest, warmup_days
from trading.inputs import input_loader
from trading.ledger import Ledger
from trading.report import report_markdown, write_report
from trading.risk import RiskLimits
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.io import load_frame
from warehouse.registry import choose_model
from warehouse.summary import load_symbol_coverage
from warehouse.symbols import load_symbols


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
    with connect(warehouse) as con:
        row = choose_model(con, config.symbol, config.model_id)
    policy = load_registered_agent(row)
    spec = policy.spec
    with connect(warehouse) as con:
        coverage = load_symbol_coverage(con, [config.symbol])
    config, using = resolve_backtest_config(config, coverage, spec.timeframe, row.get("params"))
    if using is not None:
        sys.stderr.write(using + "\n")
        logger.info(using)
    start, end = utc_midnight(config.start), utc_midnight(config.end)
    from datetime import timedelta

    trained = row.get("params") or {}
    with connect(warehouse) as con:
        stored = load_symbols(con, [spec.traded]).get(spec.traded)
    # Costs follow the symbol's asset class (stored at import, else inferred from its name).
    asset_class = stored.asset_class if stored is not None else infer_asset_class(spec.traded)
    costs = configured_costs(asset_class, config.fee_bps, config.slippage_bps)
    sys.stderr.write(costs.describe(asset_class) + "\n")
    logger.info(costs.describe(asset_class))
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
        # Once, on the console too: close-only series (skfolio) lack what these need.
        sys.stderr.write(note + "\n")
        logger.info(note)
    loader = input_loader(spec, row.get("params") or {})
    sentiment = forecasts = None
    if loader is not None:
        with connect(warehouse) as con:
            sentiment, forecasts = loader(con, warm_start, end)
    key = hashlib.sha256(config.model_dump_json().encode() + str(row["model_id"]).encode())
    run_id = (
        f"bt-{config.symbol.replace('/', '-')}-{config.start}-{config.end}-{key.hexdigest()[:8]}"
    )
    ledger = Ledger(warehouse, mode="backtest")
    bar = tqdm(
        total=1, desc=f"backtest {config.symbol}", unit="bar", file=sys.stderr, mininterval=1.0
    )

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    result = run_backtest(
        policy,
        bars,
        model_id=str(row["model_id"]),
        run_id=run_id,
        start=start,
        end=end,
        ledger=ledger,
        cash=config.cash,
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        sell_fee_bps=costs.sell_fee_bps,
        limits=RiskLimits(**config.risk.limits()),
        flatten_before_close_min=config.flatten_before_close_min,
        rule=rule,
        progress=progress,
        sentiment=sentiment,
        forecasts=forecasts,
    )
    bar.close()
    sources = sorted(str(s) for s in bars.get_column("source").unique().to_list())
    notes = [f"Bars from: {', '.join(sources)}; model {row['model_id']} (stage {row['stage']})."]
    if any(s.startswith("synthetic") for s in sources):
        notes.insert(0, "SYNTHETIC data: these are generated minute bars, not market prices.")
    with connect(warehouse) as con:
        hourly = load_frame(
            con,
            "SELECT hour AS ts, symbol, avg(mean_compound) AS sentiment FROM v_sentiment_hourly"
            " WHERE symbol = ? AND hour >= ? AND hour < ? GROUP BY ALL ORDER BY ts",
            [config.symbol, start, end],
        )
    # The report first, under a temporary name; then the ledger rows in one transaction;
    # then the report under its name. A failure at any step leaves neither behind: never
    # a ledger without its report, nor a report of rows that were not stored.
    partial = reports / f".{run_id}.html.partial"
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
    path = partial.replace(reports / f"{run_id}.html")
    create_markdown_artifact(
        key="backtest-report", markdown=report_markdown(result.metrics, path), description=run_id
    )
    create_link_artifact(
        key="backtest-report-file", link=path.resolve().as_uri(), link_text=path.name
    )
    s = result.metrics["strategy"]
    logger.info(
        "%s: %d decisions, %d orders; total return %.2f%% (buy-and-hold %.2f%%), max drawdown %.2f%%",
        run_id,
        result.decisions,
        result.orders,
        100 * s["total_return"],
        100 * result.metrics["buy_and_hold"]["total_return"],
        100 * s["max_drawdown"],
    )
    return {
        "run_id": run_id,
        "model_id": row["model_id"],
        "symbol": config.symbol,
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
