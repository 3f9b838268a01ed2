"""The HTML report is one self-contained, escaped file with its figures; the markdown summary is a table."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trading import report
from trading.baselines import benchmark_books, benchmark_metrics
from trading.metrics import SUMMARY_KEYS, summarize

IMG = '<img src="data:image/png;base64,'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOTE = "SYNTHETIC data: generated minute bars, not market prices"
LABELS = [
    "Total return",
    "CAGR",
    "Sharpe",
    "Sortino",
    "Max drawdown",
    "Calmar",
    "Hit rate",
    "Turnover",
    "Exposure",
    "Fees",
    "Trades",
    "Round trips",
]


@dataclass(frozen=True)
class Backtest:
    equity: pl.DataFrame
    prices: pl.DataFrame
    fills: pl.DataFrame
    actions: pl.DataFrame
    sentiment: pl.DataFrame
    metrics: dict[str, dict[str, float]]


def _session_times(n_sessions: int, bars: int = 390) -> pl.Series:
    """Minute bars of ``n_sessions`` weekday sessions opening 13:30 UTC (nights and weekends missing)."""
    days = pl.date_range(date(2024, 1, 1), date(2026, 12, 31), "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5).head(n_sessions)
    opens = days.cast(pl.Datetime("us")).dt.replace_time_zone("UTC") + timedelta(
        hours=13, minutes=30
    )
    minutes = pl.Series(np.tile(np.arange(bars), n_sessions) * 60_000_000, dtype=pl.Duration("us"))
    return (opens.gather(np.repeat(np.arange(n_sessions), bars)) + minutes).alias("ts")


def _backtest(n_sessions: int, *, fast: int = 30, slow: int = 120, seed: int = 3) -> Backtest:
    """A random walk, a moving-average crossover's fills at the close, buy-and-hold and the momentum rule."""
    rng = np.random.default_rng(seed)
    ts = _session_times(n_sessions)
    n = ts.len()
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0008, n)))
    prices = pl.DataFrame({"ts": ts, "symbol": "SPY", "close": close})
    ma = prices.select(
        f=pl.col("close").rolling_mean(fast).fill_null(0.0),
        s=pl.col("close").rolling_mean(slow).fill_null(0.0),
    )
    position = (ma.get_column("f") > ma.get_column("s")).cast(pl.Int8).to_numpy()
    bar_ret = np.r_[0.0, close[1:] / close[:-1] - 1.0]
    held = np.r_[0, position[:-1]]
    strategy = 100_000.0 * np.cumprod(1.0 + held * bar_ret)
    change = np.flatnonzero(np.diff(np.r_[0, position]) != 0)
    qty = np.floor(strategy[change] / close[change])
    fills = pl.DataFrame(
        {
            "ts": ts.gather(change),
            "symbol": "SPY",
            "side": np.where(position[change] == 1, "buy", "sell"),
            "qty": qty,
            "price": close[change],
            "fee": 0.0005 * qty * close[change],
        }
    )
    books = benchmark_books(
        prices.with_columns(session=pl.col("ts").dt.date()),
        symbol="SPY",
        cash=100_000.0,
        fee_bps=5.0,
        slippage_bps=0.0,
    )
    curve = pl.DataFrame({"ts": ts, "equity": strategy, "position_value": strategy * position})
    metrics = {"strategy": summarize(curve, fills), **benchmark_metrics(books)}
    hours = pl.datetime_range(
        ts[0] - timedelta(hours=10), ts[-1], "1h", time_zone="UTC", eager=True
    ).alias("ts")
    sentiment = pl.DataFrame(
        {"ts": hours, "symbol": "SPY", "sentiment": np.tanh(rng.normal(0, 0.5, hours.len()))}
    )
    return Backtest(
        equity=pl.DataFrame(
            {"ts": ts, "strategy": strategy, **{k: book.equity for k, book in books.items()}}
        ),
        prices=prices,
        fills=fills.drop("fee"),
        actions=pl.DataFrame(
            {
                "ts": ts,
                "symbol": "SPY",
                "action": np.where(position == 1, "long", "flat"),
                "position": position,
            }
        ),
        sentiment=sentiment,
        metrics=metrics,
    )


@pytest.fixture(scope="module")
def small() -> Backtest:
    return _backtest(4)


class _TagChecker(HTMLParser):
    """Records unbalanced tags: every non-void element must close in order."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def _balanced(text: str) -> bool:
    checker = _TagChecker()
    checker.feed(text)
    checker.close()
    return not checker.errors and not checker.stack


def _write(bt: Backtest, path: Path, **over: object) -> str:
    kwargs: dict[str, object] = {
        "title": "SMA crossover, SPY",
        "equity": bt.equity,
        "prices": bt.prices,
        "fills": bt.fills,
        "metrics": bt.metrics,
        "sentiment": bt.sentiment,
        "notes": [NOTE],
        "actions": bt.actions,
    }
    kwargs.update(over)
    out = report.write_report(path, **kwargs)  # type: ignore[arg-type]
    assert out == path
    return path.read_text(encoding="utf-8")


def test_report_is_one_self_contained_html_file(small: Backtest, tmp_path: Path) -> None:
    path = tmp_path / "reports" / "nested" / "spy.html"
    text = _write(small, path)
    assert path.is_file()
    assert text.startswith("<!DOCTYPE html>")
    assert text.rstrip().endswith("</html>")
    assert _balanced(text)
    assert "<title>SMA crossover, SPY</title>" in text
    assert "<h1>SMA crossover, SPY</h1>" in text
    assert NOTE in text
    for label, key in zip(LABELS, SUMMARY_KEYS, strict=True):
        assert f"<th>{label}</th>" in text
        assert f'data-metric="{key}"' in text
    for column in ("Strategy", "Buy &amp; hold", "Momentum (30 bars)"):
        assert f"<th>{column}</th>" in text
    # Equity, drawdown, prices and sentiment.
    assert text.count(IMG) == 4
    first = text.split(IMG, 1)[1].split('"', 1)[0]
    assert base64.b64decode(first, validate=True).startswith(PNG_MAGIC)
    assert "http://" not in text
    assert "https://" not in text
    assert not re.search(r"<(script|link)\b", text)


def test_report_without_sentiment_or_actions_has_three_figures(
    small: Backtest, tmp_path: Path
) -> None:
    text = _write(small, tmp_path / "r.html", sentiment=None, actions=None, notes=())
    assert text.count(IMG) == 3
    assert "held long (from the fills)" in text
    assert 'class="notes"' not in text


def test_metric_values_are_formatted(small: Backtest, tmp_path: Path) -> None:
    text = _write(small, tmp_path / "r.html")
    strat = small.metrics["strategy"]
    assert f"{strat['total_return'] * 100:.2f}%" in text
    assert f"{strat['sharpe']:.2f}" in text
    assert f">{int(strat['trades'])}<" in text
    # Buy-and-hold never closes a trip: its hit rate is undefined.
    assert 'data-metric="hit_rate"' in text
    assert "n/a" in text


def test_html_special_characters_are_escaped(small: Backtest, tmp_path: Path) -> None:
    title = '<script>alert("x")</script> & <b>bold</b>'
    notes = ['Fees < 5 bp & "fills" at the close', "<img src=x onerror=alert(1)>"]
    metrics = {**small.metrics, "<odd> & column": small.metrics["baseline"]}
    text = _write(small, tmp_path / "r.html", title=title, notes=notes, metrics=metrics)
    assert "<script>" not in text
    assert "<b>bold</b>" not in text
    assert "<img src=x" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in text
    assert "Fees &lt; 5 bp &amp; &quot;fills&quot; at the close" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "&lt;odd&gt; &amp; column" in text
    assert _balanced(text)


def test_markers_are_capped_and_the_caption_says_so(
    small: Backtest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "MAX_MARKERS", 10)
    text = _write(small, tmp_path / "r.html")
    assert small.fills.height > 10
    assert f"SPY: 10 of {small.fills.height} fills marked" in text


def test_bad_input_is_refused(small: Backtest, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="baseline"):
        _write(small, tmp_path / "r.html", equity=small.equity.drop("baseline"))
    with pytest.raises(ValueError, match="empty"):
        _write(small, tmp_path / "r.html", equity=small.equity.head(0))


def test_a_year_of_minute_bars_renders_downsampled(tmp_path: Path) -> None:
    bt = _backtest(257, fast=15, slow=60)
    assert bt.equity.height >= 100_000
    text = _write(bt, tmp_path / "year.html")
    assert text.count(IMG) == 4
    assert "drawn from each bucket&#x27;s minimum and maximum" in text


def test_report_markdown_is_a_table_with_the_path(small: Backtest) -> None:
    md = report.report_markdown(small.metrics, Path("/data/reports/spy.html"))
    lines = md.splitlines()
    assert lines[0] == "| metric | Strategy | Buy & hold | Momentum (30 bars) |"
    assert lines[1] == "|---|---:|---:|---:|"
    assert len(lines) == 2 + len(SUMMARY_KEYS) + 4
    assert lines[-3].startswith("Buy & hold: long from the first bar's decision")
    assert "at the next bar's open" in lines[-3]
    for line, label in zip(lines[2:], LABELS, strict=False):
        assert line.startswith(f"| {label} | ")
        assert line.count("|") == 5
    assert "`/data/reports/spy.html`" in lines[-1]
    strat = small.metrics["strategy"]
    assert f"| {strat['max_drawdown'] * 100:.2f}% |" in md


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("total_return", 0.1234, "12.34%"),
        ("max_drawdown", 0.25, "25.00%"),
        ("sharpe", 1.23456, "1.23"),
        ("trades", 1234.0, "1,234"),
        ("turnover", 12.34, "12.3x / yr"),
        ("fees", 1234.5, "1,234.50"),
        ("hit_rate", float("nan"), "n/a"),
        ("sortino", float("inf"), "inf"),
        ("something_else", 0.000123456, "0.0001235"),
    ],
)
def test_format_metric(name: str, value: float, shown: str) -> None:
    assert report.format_metric(name, value) == shown


def test_gaps_are_compressed_onto_bar_numbers() -> None:
    ts = _session_times(3, bars=5)
    timeline = report._Timeline(report._epoch_us(ts))
    night = datetime(2024, 1, 1, 23, 0, tzinfo=UTC)
    # A time at a bar is that bar; a time in the night is the next session's first bar.
    us = report._epoch_us(pl.Series([ts[6], night]))
    assert timeline.index_of(us).tolist() == [6, 5]
