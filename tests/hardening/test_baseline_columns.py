"""Report columns say what they are, and each benchmark's trades, turnover and fees are what its equity paid."""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from core.universe import EQUITY_SYMBOLS
from flows import cli
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from trading.backtest import BacktestResult, run_backtest
from trading.baselines import (
    BENCHMARK_LABELS,
    MOMENTUM_WINDOW,
    PositionBook,
    benchmark_books,
    benchmark_metrics,
    momentum_label,
    momentum_positions,
    trade_positions,
)
from trading.ledger import Ledger
from trading.metrics import summarize
from trading.report import write_report
from warehouse.bars import ingest_bar_frames, load_bars
from warehouse.db import connect

CASH = 100_000.0
OPEN = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
JUMPS = (40, 100, 160)
"""Bars where the price steps up; flat everywhere else."""
N = 220


def _minutes(n: int) -> pl.Series:
    return pl.Series("ts", [OPEN + timedelta(minutes=i) for i in range(n)]).cast(
        pl.Datetime("us", "UTC")
    )


def _steps() -> pl.DataFrame:
    """One session whose close steps up 1% at each of JUMPS and is flat in between."""
    close = 100.0 * 1.01 ** np.searchsorted(np.array(JUMPS), np.arange(N), side="right")
    ts = _minutes(N)
    return pl.DataFrame({"ts": ts, "close": close, "session": ts.dt.date()})


def _book(frame: pl.DataFrame, fee_bps: float, slippage_bps: float) -> PositionBook:
    """The momentum rule on ``frame`` traded with these costs."""
    return trade_positions(
        frame["ts"],
        frame["close"].to_numpy(),
        momentum_positions(frame),
        symbol="SPY",
        cash=CASH,
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
    )


def test_the_label_comes_from_the_rules_own_look_back() -> None:
    assert momentum_label() == "Momentum (30 bars)" == BENCHMARK_LABELS["baseline"]
    assert momentum_label(MOMENTUM_WINDOW) == f"Momentum ({MOMENTUM_WINDOW} bars)"
    default = inspect.signature(momentum_positions).parameters["window"].default
    assert default == MOMENTUM_WINDOW


def test_the_momentum_rule_counts_its_trades_turnover_fees_and_exposure() -> None:
    frame = _steps()
    # Long from each step's close for exactly MOMENTUM_WINDOW bars, then flat again.
    long_bars = [t + i for t in JUMPS for i in range(MOMENTUM_WINDOW)]
    assert np.flatnonzero(momentum_positions(frame)).tolist() == long_bars

    fee_bps = 10.0
    book = _book(frame, fee_bps, 5.0)
    free = _book(frame, 0.0, 0.0)
    fills = book.fills
    exits = [t + MOMENTUM_WINDOW for t in JUMPS]
    assert fills["side"].to_list() == ["buy", "sell"] * len(JUMPS)
    assert fills["ts"].to_list() == [frame["ts"][t] for t in sorted(JUMPS + tuple(exits))]

    # The price never moves while the rule is long: without costs the equity stays flat,
    # so what the costly book lost is exactly its fees plus its slippage.
    assert np.allclose(free.equity, CASH, rtol=0, atol=1e-9)
    close_at_fill = np.array([frame["close"][t] for t in sorted(JUMPS + tuple(exits))])
    slippage = float(
        np.sum(np.abs(fills["price"].to_numpy() - close_at_fill) * fills["qty"].to_numpy())
    )
    fees = float(fills["fee"].sum())
    assert fees > 0 and slippage > 0
    assert CASH - book.equity[-1] == pytest.approx(fees + slippage, rel=1e-12)
    # Each fee is fee_bps of its fill's notional, as the simulated broker charges.
    notional = fills["qty"] * fills["price"]
    assert fills["fee"].to_numpy() == pytest.approx((notional * fee_bps / 1e4).to_numpy())

    m = summarize(book.curve(), fills)
    assert m["trades"] == 2 * len(JUMPS)
    assert m["round_trips"] == len(JUMPS)
    assert m["fees"] == pytest.approx(fees, rel=1e-12)
    assert m["exposure"] == pytest.approx(len(long_bars) / N)
    years = 1 / 252  # one session: one daily return
    expected_turnover = float(notional.sum()) / float(np.mean(book.equity)) / years
    assert m["turnover"] == pytest.approx(expected_turnover) and m["turnover"] > 0
    assert m["hit_rate"] == 0.0  # every trip only paid its costs

    # Without slippage the equity lost exactly the reported fees.
    no_slip = _book(frame, fee_bps, 0.0)
    lost = CASH - no_slip.equity[-1]
    assert lost == pytest.approx(summarize(no_slip.curve(), no_slip.fills)["fees"], rel=1e-12)


def test_buy_and_hold_is_one_entry_fill_with_its_fee() -> None:
    frame = _steps()
    books = benchmark_books(frame, symbol="SPY", cash=CASH, fee_bps=10.0, slippage_bps=5.0)
    bh = books["buy_and_hold"]
    assert bh.fills["side"].to_list() == ["buy"] and bh.fills["ts"][0] == frame["ts"][0]
    (fee,) = bh.fills["fee"].to_list()
    assert fee == pytest.approx(CASH * 1e-3 / (1 + 1e-3), rel=1e-12)
    m = benchmark_metrics(books)["buy_and_hold"]
    assert (m["trades"], m["round_trips"], m["exposure"]) == (1.0, 0.0, 1.0)
    assert m["fees"] == pytest.approx(fee) and m["turnover"] > 0
    # Its first equity point already paid the entry: fee and slippage.
    assert bh.equity[0] == pytest.approx(CASH / (1.0005 * 1.001), rel=1e-12)


def test_a_rule_that_never_goes_long_has_no_fills_and_keeps_its_cash() -> None:
    frame = _steps().head(MOMENTUM_WINDOW)  # too short for the rule to see a rise
    book = _book(frame, 10.0, 5.0)
    assert book.fills.height == 0
    assert book.equity.tolist() == [CASH] * frame.height
    m = summarize(book.curve(), book.fills)
    assert (m["trades"], m["fees"], m["turnover"], m["exposure"]) == (0.0, 0.0, 0.0, 0.0)


def test_the_fills_replayed_as_a_cash_book_give_the_equity_curve() -> None:
    """On a random walk over three sessions: the equity is what the fills leave, bar by bar."""
    rng = np.random.default_rng(5)
    ts = _minutes(3 * 390)
    ts = ts + pl.Series(np.repeat([0, 1, 2], 390) * 86_400_000_000, dtype=pl.Duration("us"))
    frame = pl.DataFrame(
        {
            "ts": ts,
            "close": 50.0 * np.exp(np.cumsum(rng.normal(0, 0.001, ts.len()))),
            "session": ts.dt.date(),
        }
    )
    books = benchmark_books(frame, symbol="SPY", cash=CASH, fee_bps=1.0, slippage_bps=1.0)
    for key, book in books.items():
        fills = book.fills.with_columns(
            sign=pl.when(pl.col("side") == "buy").then(1.0).otherwise(-1.0)
        )
        idx = np.searchsorted(frame["ts"].to_numpy(), fills["ts"].to_numpy())
        cash_flow = np.zeros(frame.height)
        units = np.zeros(frame.height)
        sign = fills["sign"].to_numpy()
        qty, price, fee = (fills[c].to_numpy() for c in ("qty", "price", "fee"))
        np.add.at(cash_flow, idx, -sign * qty * price - fee)
        np.add.at(units, idx, sign * qty)
        replayed = CASH + np.cumsum(cash_flow) + np.cumsum(units) * frame["close"].to_numpy()
        assert replayed == pytest.approx(book.equity, rel=1e-12, abs=1e-6), key
        invested = np.abs(np.cumsum(units)) > 1e-9
        m = summarize(book.curve(), book.fills)
        assert m["exposure"] == pytest.approx(invested.mean()), key
    m = summarize(books["baseline"].curve(), books["baseline"].fills)
    assert m["trades"] > 2 and m["fees"] > 0 and m["turnover"] > 0
    assert 0 < m["exposure"] < 1


class _MetricsTable(HTMLParser):
    """The report's metrics table as {header row, then label -> cell texts}."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_table = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("class", "metrics") in attrs:
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif self._in_table and tag in ("th", "td") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _html_table(text: str) -> list[list[str]]:
    parser = _MetricsTable()
    parser.feed(text)
    # Drop the definitions column (last cell of each row).
    return [row[:-1] for row in parser.rows]


def _cli_table(out: str) -> list[list[str]]:
    rows = []
    for line in out.splitlines():
        if "│" in line or "┃" in line:
            rows.append([c.strip() for c in re.split(r"[│┃]", line)[1:-1]])
    return rows


def _metrics(frame: pl.DataFrame) -> tuple[dict[str, dict[str, float]], pl.DataFrame]:
    books = benchmark_books(frame, symbol="SPY", cash=CASH, fee_bps=1.0, slippage_bps=1.0)
    # A strategy that happens to be the momentum rule with other costs: any book will do.
    strategy = _book(frame, 3.0, 0.0)
    metrics = {
        "strategy": summarize(strategy.curve(), strategy.fills),
        **benchmark_metrics(books),
    }
    equity = pl.DataFrame(
        {"ts": frame["ts"], "strategy": strategy.equity}
        | {k: book.equity for k, book in books.items()}
    )
    return metrics, equity


def test_the_cli_table_and_the_html_report_name_the_columns_and_print_the_same_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = _steps()
    metrics, equity = _metrics(frame)
    path = write_report(
        tmp_path / "r.html",
        title="steps",
        equity=equity,
        prices=frame.select("ts", pl.lit("SPY").alias("symbol"), "close"),
        fills=pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), "symbol": pl.String,
                                   "side": pl.String, "qty": pl.Float64, "price": pl.Float64}),
        metrics=metrics,
    )  # fmt: skip
    html_rows = _html_table(path.read_text(encoding="utf-8"))
    cli._metrics_table("backtest", metrics)
    cli_rows = _cli_table(capsys.readouterr().out)

    header = ["metric", "Strategy", "Buy & hold", "Momentum (30 bars)"]
    assert html_rows[0] == header
    assert cli_rows[0] == header
    assert cli_rows == html_rows
    by_label = {row[0]: row[1:] for row in html_rows[1:]}
    # The momentum column counts its own fills: 3 round trips, 6 trades, fees and turnover.
    assert by_label["Trades"] == ["6", "1", "6"]
    assert by_label["Round trips"] == ["3", "0", "3"]
    assert by_label["Exposure"][2] == f"{100 * 90 / N:.2f}%"
    assert by_label["Fees"][2] != "0.00" and by_label["Turnover"][2] != "0.0x / yr"


def _untrained_backtest(tmp_path: Path) -> tuple[BacktestResult, Path]:
    """An untrained agent over a synthetic week through run_backtest, and its HTML report."""
    start, end = datetime(2024, 5, 6, tzinfo=UTC), datetime(2024, 5, 11, tzinfo=UTC)
    warmup = start - timedelta(days=4)
    source = SyntheticBarSource(SyntheticConfig(seed=11))
    warehouse = tmp_path / "w.duckdb"
    ingest_bar_frames(source.fetch_bars(list(EQUITY_SYMBOLS), "1Min", warmup, end), warehouse, end)
    spec = FeatureSpec()
    with connect(warehouse) as con:
        bars = load_bars(con, list(spec.symbols), "1Min", warmup, end)
    torch.manual_seed(0)
    net = NestedLSTMQNet(len(spec.names()), Architecture(fast_hidden=8, slow_hidden=4))
    net.eval()
    policy = AgentPolicy(
        net, spec, FeatureScaler.fit(compute_features(bars, spec), spec.names()), {}
    )
    result = run_backtest(
        policy,
        bars,
        model_id="untrained",
        run_id="bt-baselines",
        start=start,
        end=end,
        ledger=Ledger(warehouse, mode="backtest"),
    )
    path = write_report(
        tmp_path / "bt.html",
        title="Backtest SPY (untrained agent, SYNTHETIC bars)",
        equity=result.equity.select("ts", "strategy", "buy_and_hold", "baseline"),
        prices=result.prices,
        fills=result.fills,
        metrics=result.metrics,
        actions=result.actions,
        notes=["SYNTHETIC data: generated minute bars, not market prices."],
    )
    return result, path


@pytest.mark.slow
def test_a_backtest_reports_the_momentum_rules_own_trades_and_costs(tmp_path: Path) -> None:
    result, path = _untrained_backtest(tmp_path)
    metrics = result.metrics
    momentum, bh = metrics["baseline"], metrics["buy_and_hold"]
    assert 0.0 < momentum["exposure"] < 1.0
    assert momentum["trades"] >= 2 and momentum["fees"] > 0 and momentum["turnover"] > 0
    assert bh["trades"] == 1.0 and bh["fees"] > 0
    # Its first decision fills at the second bar's open, as the agent's would: flat on bar 0.
    assert bh["exposure"] == pytest.approx(1.0 - 1.0 / result.equity.height, rel=1e-12)
    text = path.read_text(encoding="utf-8")
    assert "<th>Momentum (30 bars)</th>" in text and "<th>Baseline</th>" not in text
    assert "Momentum (30 bars): long while the close rose over the last 30 bars" in text
