"""The HTML report of a traded (or replayed) session, built from the ledger the session wrote."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from core.universe import is_coin
from trading.baselines import BUY_AND_HOLD, benchmark_books, benchmark_metrics
from trading.metrics import summarize
from trading.report import write_report
from warehouse.bars import minute_open_close
from warehouse.summary import hourly_sentiment
from warehouse.trade_history import (
    account_equity,
    net_positions,
    recent_decisions,
    run_actions,
    run_fills,
)

MINUTE = timedelta(minutes=1)


def session_report(
    con: Any,
    *,
    run_id: str,
    account: str,
    symbols: list[str],
    start: datetime,
    end: datetime,
    path: Path,
    title: str,
    notes: list[str],
    fee_bps: float = 1.0,
    slippage_bps: float = 1.0,
) -> tuple[Path, dict[str, dict[str, float]]] | None:
    """Equity vs buy-and-hold and a momentum rule, drawdown, trades over price, sentiment.

    Everything comes from the warehouse: `equity` of the account, the run's fills and
    decisions, the session's bars and the hourly post sentiment. None when the run wrote
    no equity (nothing was decided).
    """
    traded = _curve_and_benchmarks(
        con,
        account=account,
        symbols=symbols,
        start=start,
        end=end,
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
    )
    if traded is None:
        return None
    bars, curve, books = traded
    fills = run_fills(con, run_id)
    actions = run_actions(con, run_id)
    frame = curve.select("ts", pl.col("equity").alias("strategy")).with_columns(
        **{key: pl.Series(book.equity) for key, book in books.items()}
    )
    held = curve.select("ts", (pl.col("positions_value") > 0).cast(pl.Int8).alias("position"))
    acts = (
        actions.with_columns((pl.col("ts") + MINUTE).alias("at"))
        .join(held.rename({"ts": "at"}), on="at", how="left")
        .select("ts", "symbol", "action", pl.col("position").fill_null(0))
    )
    sentiment = hourly_sentiment(con, symbols, start - timedelta(hours=1), end)
    # One session is too short for daily returns: per-bar ratios, annualised by bars per year.
    bars_per_year = 525_600.0 if is_coin(symbols[0]) else 252.0 * 390
    metrics = {
        "strategy": summarize(
            curve.select("ts", "equity", pl.col("positions_value").alias("position_value")),
            fills,
            daily=False,
            periods_per_year=bars_per_year,
        ),
        **benchmark_metrics(books, daily=False, periods_per_year=bars_per_year),
    }
    out = write_report(
        path,
        title=title,
        equity=frame,
        prices=bars,
        fills=fills,
        metrics=metrics,
        sentiment=sentiment if sentiment.height else None,
        actions=acts,
        notes=notes,
    )
    return out, metrics


def _curve_and_benchmarks(
    con: Any,
    *,
    account: str,
    symbols: list[str],
    start: datetime,
    end: datetime,
    fee_bps: float,
    slippage_bps: float,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]] | None:
    """The session's bars, the account's equity curve on the first symbol's bar closes and the
    benchmarks' books on the same bars (core.baselines: the one implementation); None before
    two equity points."""
    equity = account_equity(con, account, start, end)
    if equity.height < 2:
        return None
    bars = minute_open_close(con, symbols, start - MINUTE, end)
    # Benchmarks on the first symbol's bars, aligned to the equity points (a bar's close);
    # with each bar's open, so a benchmark's decision fills at the next bar's open as the
    # session's own orders do.
    main = (
        bars.filter(pl.col("symbol") == symbols[0])
        .with_columns((pl.col("ts") + MINUTE).alias("ts"))
        .join(equity.select("ts"), on="ts", how="inner")
        .with_columns(pl.col("ts").dt.date().alias("session"))
    )
    curve = equity.join(main.select("ts", "open", "close", "session"), on="ts", how="inner")
    if curve.height < 2:
        return None
    books = benchmark_books(
        curve,
        symbol=symbols[0],
        cash=float(curve["equity"][0]),
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
    )
    return bars, curve, books


def session_standing(
    con: Any,
    *,
    run_id: str,
    account: str,
    symbols: list[str],
    start: datetime,
    end: datetime,
    fee_bps: float = 1.0,
    slippage_bps: float = 1.0,
    last: int = 10,
) -> dict[str, Any]:
    """Where a session stands so far, from what it wrote: equity beside buy-and-hold (the
    report's numbers, computed the same way), positions from its fills, and its last
    decisions with their orders (newest first)."""
    traded = _curve_and_benchmarks(
        con,
        account=account,
        symbols=symbols,
        start=start,
        end=end,
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
    )
    standing: dict[str, Any] = {
        "positions": net_positions(con, run_id=run_id, mode=""),
        "recent": recent_decisions(con, run_id, last),
        "equity": None,
        "start_equity": None,
        "buy_and_hold": None,
        "as_of": None,
    }
    if traded is not None:
        _, curve, books = traded
        standing.update(
            equity=float(curve["equity"][-1]),
            start_equity=float(curve["equity"][0]),
            buy_and_hold=float(books[BUY_AND_HOLD].equity[-1]),
            as_of=curve["ts"][-1],
        )
    return standing


def standing_markdown(standing: dict[str, Any], title: str, benchmark: str) -> str:
    """The description above the table: positions, equity, buy-and-hold of `benchmark`, the
    difference."""
    lines = [f"**{title}**", ""]
    held = ", ".join(f"{s} {q:g}" for s, q in standing["positions"].items()) or "none"
    lines.append(f"- position: {held}")
    equity, hold, first = standing["equity"], standing["buy_and_hold"], standing["start_equity"]
    if equity is None:
        lines.append("- equity: not yet (fewer than two minutes decided)")
    else:
        lines.append(
            f"- equity {equity:,.2f} ({100 * (equity / first - 1):+.2f}%) beside buy-and-hold of "
            f"{benchmark} {hold:,.2f} ({100 * (hold / first - 1):+.2f}%): "
            f"{equity - hold:+,.2f} as of {standing['as_of']:%H:%M} UTC"
        )
    lines.append("- below: the last decisions, newest first, with the order each sent")
    return "\n".join(lines)


def standing_rows(standing: dict[str, Any]) -> list[dict[str, Any]]:
    """The standing's last decisions as table rows (time, symbol, action, risk, order)."""
    return [_decision_row(r) for r in standing["recent"]]


def _decision_row(decision: dict[str, Any]) -> dict[str, Any]:
    ts = decision["ts"]
    order = (
        f"{decision['order_side']} {decision['order_qty']:g} ({decision['order_status']})"
        if decision.get("order_side")
        else ""
    )
    return {
        "time (UTC)": ts.strftime("%H:%M") if hasattr(ts, "strftime") else str(ts),
        "symbol": decision["symbol"],
        "action": decision["action"],
        "risk": decision["risk_verdict"]
        + (f": {decision['risk_reason']}" if decision.get("risk_reason") else ""),
        "order": order,
    }
