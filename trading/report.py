"""Self-contained HTML backtest report (metrics table + embedded PNG figures) and its markdown summary.

The HTML file has no external asset: CSS is inline and figures are base64 PNGs drawn on
matplotlib's Agg canvas (no pyplot, so no global figure state and no display needed).

X axis of every figure: the bar number of the equity curve, labelled with dates. Minute
bars leave nights, weekends and holidays empty; on a time axis those gaps would take most
of the width and draw long straight segments. Anything that happens between two bars
(a post at night) is drawn at the next bar.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from trading.baselines import BENCHMARK_LABELS, BENCHMARK_RULES, BUY_AND_HOLD, MOMENTUM
from trading.metrics import SUMMARY_KEYS, drawdown_series

MAX_LINE_POINTS = 5000
"""A plotted line with more points is reduced to per-bucket minima and maxima."""
MAX_MARKERS = 2000
"""Fill markers drawn per price panel; more are thinned evenly (the caption says so)."""
MAX_PRICE_PANELS = 8
"""Symbols drawn in the price figure; those with fills come first."""
_MAX_TICKS = 10
_EPS = 1e-9

_COLUMNS = {"strategy": "Strategy", **BENCHMARK_LABELS}
_COLORS = {"strategy": "#1f77b4", BUY_AND_HOLD: "#7f7f7f", MOMENTUM: "#ff7f0e"}
_METRICS: dict[str, tuple[str, str]] = {
    "total_return": ("Total return", "final / first equity - 1"),
    "cagr": ("CAGR", "compound annual growth rate"),
    "sharpe": ("Sharpe", "mean / std of returns x sqrt(periods per year)"),
    "sortino": ("Sortino", "mean / downside deviation x sqrt(periods per year)"),
    "max_drawdown": ("Max drawdown", "largest peak-to-trough fall, every bar counted"),
    "calmar": ("Calmar", "CAGR / max drawdown"),
    "hit_rate": ("Hit rate", "share of round trips with pnl > 0"),
    "turnover": ("Turnover", "traded notional / mean equity, per year"),
    "exposure": ("Exposure", "share of bars holding a position"),
    "fees": ("Fees", "sum of fees paid (slippage is in the fill prices)"),
    "trades": ("Trades", "number of fills (buys and sells)"),
    "round_trips": ("Round trips", "closed entry-to-exit trips"),
}
_PERCENT = {"total_return", "cagr", "max_drawdown", "hit_rate", "exposure"}
_RATIO = {"sharpe", "sortino", "calmar"}
_COUNT = {"trades", "round_trips"}

REPORT_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
main { max-width: 1240px; margin: 0 auto; padding: 16px 24px 40px; }
h1 { font-size: 1.6em; margin: 0.4em 0 0.2em; }
h2 { font-size: 1.2em; margin: 1.4em 0 0.5em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.span { color: #666; margin: 0 0 12px; }
.notes { background: #fff4d6; border: 1px solid #e8c25c; border-left: 6px solid #d9a400;
         padding: 8px 16px; margin: 12px 0; font-weight: 600; }
.notes ul { margin: 4px 0; padding-left: 20px; }
table { border-collapse: collapse; background: #fff; }
th, td { padding: 5px 12px; border-bottom: 1px solid #e5e5e5; }
thead th { background: #f0f0f0; text-align: right; }
thead th:first-child, tbody th { text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.def { color: #777; font-size: 0.88em; }
figure { margin: 0 0 24px; background: #fff; border: 1px solid #e5e5e5; padding: 8px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 0.9em; margin-top: 6px; }
.legend { color: #555; font-size: 0.9em; margin: 6px 0 0; max-width: 1000px; }
"""


def format_metric(name: str, value: float) -> str:
    """One metric value as shown in the report: percentages, ratios, counts; NaN as 'n/a'."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if name in _PERCENT:
        return f"{value * 100:.2f}%"
    if name in _RATIO:
        return f"{value:.2f}"
    if name in _COUNT:
        return f"{value:,.0f}"
    if name == "turnover":
        return f"{value:,.1f}x / yr"
    if name == "fees":
        return f"{value:,.2f}"
    return f"{value:.4g}"


@dataclass(frozen=True)
class MetricRow:
    """One metric across the columns, as every table shows it."""

    key: str
    label: str
    definition: str
    values: list[str]


def metric_table(metrics: Mapping[str, Mapping[str, float]]) -> tuple[list[str], list[MetricRow]]:
    """Column labels and formatted rows of the metrics table.

    The one table behind the HTML report, its markdown summary and the CLI: the strategy
    first, then buy-and-hold and the momentum rule, then any other column; metrics in
    :data:`SUMMARY_KEYS` order, then any other key; a missing value shows as 'n/a'.
    """
    columns = [c for c in _COLUMNS if c in metrics] + [c for c in metrics if c not in _COLUMNS]
    names = [k for k in SUMMARY_KEYS if any(k in metrics[c] for c in columns)]
    for c in columns:
        names += [k for k in metrics[c] if k not in names]
    rows = [
        MetricRow(
            key=name,
            label=_METRICS.get(name, (name.replace("_", " "), ""))[0],
            definition=_METRICS.get(name, ("", ""))[1],
            values=[format_metric(name, metrics[c].get(name, math.nan)) for c in columns],
        )
        for name in names
    ]
    return [_column_label(c) for c in columns], rows


def _column_label(key: str) -> str:
    return _COLUMNS.get(key, key.replace("_", " "))


def _benchmark_legend(columns: Sequence[str]) -> str:
    """What the benchmark columns among ``columns`` (keys) are, in one sentence."""
    parts = [
        f"{BENCHMARK_LABELS[c]}: {BENCHMARK_RULES[c]}" for c in columns if c in BENCHMARK_RULES
    ]
    if not parts:
        return ""
    return (
        "; ".join(parts)
        + ". Each decision is filled as the strategy's, at the next bar's open (the decision"
        " bar's close where the bars have no open), with the same fee and slippage; "
        "its trades, turnover, fees and exposure come from its own fills."
    )


def report_markdown(metrics: Mapping[str, Mapping[str, float]], report_path: Path | str) -> str:
    """A markdown table of the metrics (strategy vs buy-and-hold vs momentum) and the report's path."""
    labels, rows = metric_table(metrics)

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "| metric | " + " | ".join(cell(label) for label in labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for row in rows:
        lines.append(f"| {cell(row.label)} | " + " | ".join(row.values) + " |")
    legend = _benchmark_legend(list(metrics))
    lines += ["", *([legend, ""] if legend else []), f"Full report: `{report_path}`"]
    return "\n".join(lines) + "\n"


# --- time axis -------------------------------------------------------------------------


def _epoch_us(ts: pl.Series) -> npt.NDArray[np.int64]:
    """Timestamps as int64 microseconds since the epoch, UTC (naive values are taken as UTC)."""
    if ts.dtype == pl.Date:
        ts = ts.cast(pl.Datetime("us"))
    dtype = ts.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        ts = ts.dt.replace_time_zone("UTC")
    return ts.dt.epoch("us").to_numpy().astype(np.int64)


@dataclass(frozen=True)
class _Timeline:
    """The equity curve's bars; every other series is drawn at bar numbers of this one."""

    us: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.us.size)

    def covers(self, us: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        return (us >= self.us[0]) & (us <= self.us[-1])

    def index_of(self, us: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Bar number at or after each time (the next bar for a time between bars)."""
        return np.minimum(np.searchsorted(self.us, us, side="left"), len(self) - 1)

    def step_values(
        self, us: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Per bar, the last value set at or before that bar (0 before the first)."""
        order = np.argsort(us, kind="stable")
        idx = self.index_of(us[order])
        last = np.searchsorted(idx, np.arange(len(self)), side="right") - 1
        return np.where(last >= 0, values[order][np.maximum(last, 0)], 0.0)

    def apply_ticks(self, ax: Axes) -> str:
        """Date ticks at the first bar of UTC dates (thinned); returns what they mark."""
        n = len(self)
        ax.set_xlim(-0.5, max(n - 0.5, 0.5))
        days = self.us.astype("datetime64[us]").astype("datetime64[D]")
        starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
        if starts.size >= 2:
            if starts.size <= 60:
                for s in starts[1:]:
                    ax.axvline(s - 0.5, color="#000", alpha=0.06, lw=0.8, zorder=0)
            step = math.ceil(starts.size / _MAX_TICKS)
            ticks = starts[::step]
            labels = np.datetime_as_string(days[ticks], unit="D")
            what = "the first bar of a UTC date"
        else:
            ticks = np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(np.int64))
            labels = np.array(
                [
                    s[11:16]
                    for s in np.datetime_as_string(
                        self.us[ticks].astype("datetime64[us]"), unit="m"
                    )
                ]
            )
            what = "the bar's UTC time"
        ax.set_xticks(ticks.astype(float), [str(label) for label in labels])
        return what


def _decimate(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], max_points: int = MAX_LINE_POINTS
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Keep each bucket's minimum and maximum (so spikes and drawdowns survive) when too long."""
    n = y.size
    if n <= max_points:
        return x, y
    buckets = max_points // 2
    size = math.ceil(n / buckets)
    padded = np.pad(y, (0, buckets * size - n), mode="edge").reshape(buckets, size)
    offsets = np.arange(buckets) * size
    lo = np.minimum(np.nanargmin(padded, axis=1) + offsets, n - 1)
    hi = np.minimum(np.nanargmax(padded, axis=1) + offsets, n - 1)
    keep = np.unique(np.concatenate(([0, n - 1], lo, hi)))
    return x[keep], y[keep]


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[float, float]]:
    """(start, width) of each run of True, in bar numbers, for ``broken_barh``."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [(float(s) - 0.5, float(e - s)) for s, e in zip(starts, ends, strict=True)]


def _mpl_text(text: str) -> str:
    """Data text for matplotlib: a '$' would start mathtext."""
    return text.replace("$", r"\$")


def _legend_above(
    ax: Axes, handles: list[Any] | None = None, labels: list[str] | None = None
) -> None:
    """A one-row legend above the axes' top right corner, where no line can run under it."""
    if handles is None or labels is None:
        handles, labels = ax.get_legend_handles_labels()
    legend = ax.legend(
        handles,
        labels,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncols=min(8, max(1, len(labels))),
        frameon=False,
        fontsize=9,
        borderaxespad=0.2,
    )
    for handle in legend.legend_handles:
        if isinstance(handle, PathCollection):
            handle.set_sizes([36.0])  # thinned-out markers stay legible in the legend


def html_head(title: str) -> list[str]:
    """The opening lines of a self-contained report page, up to its escaped <h1> title."""
    e = html.escape
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{REPORT_CSS}</style></head><body><main>",
        f"<h1>{e(title)}</h1>",
    ]


def png_base64(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# --- figures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Figure:
    title: str
    png_b64: str
    caption: str
    alt: str


def _equity_figure(equity: pl.DataFrame, timeline: _Timeline) -> _Figure:
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(timeline), dtype=np.float64)
    for key in (MOMENTUM, BUY_AND_HOLD, "strategy"):
        y = equity.get_column(key).to_numpy().astype(np.float64)
        xs, ys = _decimate(x, y)
        ax.plot(
            xs, ys, color=_COLORS[key], lw=1.6 if key == "strategy" else 1.1, label=_COLUMNS[key]
        )
    handles, labels = ax.get_legend_handles_labels()
    _legend_above(ax, handles[::-1], labels[::-1])
    ax.set_ylabel("equity")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(axis="y", alpha=0.3)
    marks = timeline.apply_ticks(ax)
    ax.set_xlabel("bar number (nights, weekends and holidays take no space)")
    caption = (
        f"Equity of {_COLUMNS['strategy']}, {_COLUMNS[BUY_AND_HOLD]} and {_COLUMNS[MOMENTUM]}, "
        "all starting from the same value, each after its own costs. "
        f"X axis: bar number over {len(timeline):,} bars; a tick marks {marks}."
    )
    return _Figure(
        "Equity", png_base64(fig), caption + _decimation_note(len(timeline)), "equity curves"
    )


def _drawdown_figure(equity: pl.DataFrame, timeline: _Timeline) -> _Figure:
    fig = Figure(figsize=(12, 3.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(timeline), dtype=np.float64)
    dd_bh = drawdown_series(equity.get_column(BUY_AND_HOLD).to_numpy())
    dd_strat = drawdown_series(equity.get_column("strategy").to_numpy())
    xs, ys = _decimate(x, dd_bh)
    ax.plot(xs, ys, color=_COLORS[BUY_AND_HOLD], lw=1.0, label=_COLUMNS[BUY_AND_HOLD])
    xs, ys = _decimate(x, dd_strat)
    ax.fill_between(
        xs, ys, 0.0, color=_COLORS["strategy"], alpha=0.35, lw=0, label=_COLUMNS["strategy"]
    )
    ax.plot(xs, ys, color=_COLORS["strategy"], lw=0.8)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
    ax.set_ylabel("drawdown")
    _legend_above(ax)
    ax.grid(axis="y", alpha=0.3)
    timeline.apply_ticks(ax)
    caption = (
        "Drawdown: equity / running peak - 1, bar by bar (intraday falls included), for the "
        "strategy (shaded) and buy-and-hold (line)."
    )
    return _Figure(
        "Drawdown", png_base64(fig), caption + _decimation_note(len(timeline)), "drawdowns"
    )


def _positions(
    symbol: str,
    fills: pl.DataFrame,
    actions: pl.DataFrame | None,
    timeline: _Timeline,
) -> npt.NDArray[np.bool_]:
    """Per bar, whether ``symbol`` is held: from ``actions`` when given, else from the fills."""
    if actions is not None:
        rows = actions.filter(pl.col("symbol") == symbol)
        values = rows.get_column("position").cast(pl.Float64).to_numpy()
    else:
        rows = fills.filter(pl.col("symbol") == symbol).sort("ts")
        signed = np.where(rows.get_column("side").to_numpy() == "buy", 1.0, -1.0)
        values = np.cumsum(signed * rows.get_column("qty").cast(pl.Float64).to_numpy())
    if rows.height == 0:
        return np.zeros(len(timeline), dtype=np.bool_)
    held = timeline.step_values(_epoch_us(rows.get_column("ts")), values.astype(np.float64))
    return np.asarray(held > _EPS, dtype=np.bool_)


def _price_figure(
    prices: pl.DataFrame,
    fills: pl.DataFrame,
    actions: pl.DataFrame | None,
    timeline: _Timeline,
) -> _Figure | None:
    if prices.height == 0:
        return None
    in_range = prices.filter(pl.Series(timeline.covers(_epoch_us(prices.get_column("ts")))))
    if in_range.height == 0:
        return None
    traded = set(fills.get_column("symbol").unique().to_list()) if fills.height else set()
    symbols = sorted(
        in_range.get_column("symbol").unique().to_list(), key=lambda s: (s not in traded, s)
    )
    shown = symbols[:MAX_PRICE_PANELS]
    fig = Figure(figsize=(12, 1.0 + 2.6 * len(shown)), layout="constrained")
    axes = fig.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    notes: list[str] = []
    marks = ""
    for i, (ax, symbol) in enumerate(zip(axes, shown, strict=True)):
        rows = in_range.filter(pl.col("symbol") == symbol)
        per_bar = (
            rows.select(
                x=pl.Series(timeline.index_of(_epoch_us(rows.get_column("ts")))),
                close=pl.col("close").cast(pl.Float64),
            )
            .group_by("x")
            .agg(pl.col("close").last())
            .sort("x")
        )
        xs, ys = _decimate(
            per_bar.get_column("x").to_numpy().astype(np.float64),
            per_bar.get_column("close").to_numpy().astype(np.float64),
        )
        held = _positions(symbol, fills, actions, timeline)
        spans = _runs(held)
        if spans:
            ax.broken_barh(
                spans,
                (0.0, 1.0),
                transform=ax.get_xaxis_transform(),
                color="#2ca02c",
                alpha=0.12,
                lw=0,
                label="long",
            )
        ax.plot(xs, ys, color="#333", lw=0.9, label="close")
        sym_fills = fills.filter(pl.col("symbol") == symbol).sort("ts") if fills.height else fills
        if sym_fills.height:
            f_us = _epoch_us(sym_fills.get_column("ts"))
            f_keep = timeline.covers(f_us)
            sym_fills, f_us = sym_fills.filter(pl.Series(f_keep)), f_us[f_keep]
        total = sym_fills.height
        if total > MAX_MARKERS:
            pick = np.unique(np.linspace(0, total - 1, MAX_MARKERS).round().astype(np.int64))
            sym_fills, f_us = sym_fills[pick.tolist()], f_us[pick]
            notes.append(f"{symbol}: {sym_fills.height:,} of {total:,} fills marked")
        if total:
            fx = timeline.index_of(f_us).astype(np.float64)
            fp = sym_fills.get_column("price").to_numpy().astype(np.float64)
            is_buy = sym_fills.get_column("side").to_numpy() == "buy"
            big = sym_fills.height <= 200
            size = 36 if big else 16
            ax.scatter(
                fx[is_buy],
                fp[is_buy],
                marker="^",
                color="#1a9e3a",
                s=size,
                zorder=3,
                label="buy",
                edgecolors="white" if big else "none",
                linewidths=0.4,
            )
            ax.scatter(
                fx[~is_buy],
                fp[~is_buy],
                marker="v",
                color="#d62728",
                s=size,
                zorder=3,
                label="sell",
                edgecolors="white" if big else "none",
                linewidths=0.4,
            )
        ax.set_title(_mpl_text(symbol), loc="left", fontsize=10, fontweight="bold")
        ax.set_ylabel("price")
        ax.grid(axis="y", alpha=0.3)
        if i == 0:
            _legend_above(ax)
        marks = timeline.apply_ticks(ax)
    caption = (
        "Close per symbol with fills: buy (green triangle up) and sell (red triangle down); "
        f"shaded bars are held long ({'from the actions' if actions is not None else 'from the fills'}). "
        f"A tick marks {marks}."
    )
    if len(symbols) > len(shown):
        caption += f" Showing {len(shown)} of {len(symbols)} symbols (traded ones first)."
    if notes:
        caption += f" Markers are capped at {MAX_MARKERS:,} per symbol: " + "; ".join(notes) + "."
    caption += _decimation_note(len(timeline))
    return _Figure(
        "Prices and trades", png_base64(fig), caption, "prices with buy and sell markers"
    )


def _sentiment_figure(sentiment: pl.DataFrame, timeline: _Timeline) -> _Figure | None:
    us = _epoch_us(sentiment.get_column("ts"))
    rows = sentiment.filter(pl.Series(timeline.covers(us))).with_columns(
        x=pl.Series(timeline.index_of(us[timeline.covers(us)]))
    )
    if rows.height == 0:
        return None
    fig = Figure(figsize=(12, 3.2), layout="constrained")
    ax = fig.add_subplot()
    longest = 0
    for symbol in sorted(rows.get_column("symbol").unique().to_list()):
        per_bar = (
            rows.filter(pl.col("symbol") == symbol)
            .group_by("x")
            .agg(pl.col("sentiment").mean())
            .sort("x")
        )
        xs, ys = _decimate(
            per_bar.get_column("x").to_numpy().astype(np.float64),
            per_bar.get_column("sentiment").to_numpy().astype(np.float64),
        )
        longest = max(longest, per_bar.height)
        ax.plot(xs, ys, lw=1.0, label=_mpl_text(symbol))
    ax.axhline(0.0, color="#000", lw=0.7, alpha=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("sentiment")
    ax.grid(axis="y", alpha=0.3)
    _legend_above(ax)
    timeline.apply_ticks(ax)
    caption = (
        "Sentiment in [-1, 1] per symbol (mean of the values falling on a bar); a value "
        "observed between bars (nights, weekends) is drawn at the next bar."
    )
    return _Figure("Sentiment", png_base64(fig), caption + _decimation_note(longest), "sentiment")


def _decimation_note(n: int) -> str:
    """Caption sentence for a figure whose longest line has ``n`` points."""
    if n <= MAX_LINE_POINTS:
        return ""
    return (
        f" Lines longer than {MAX_LINE_POINTS:,} points are drawn from each bucket's minimum "
        "and maximum."
    )


# --- HTML ------------------------------------------------------------------------------


def _metrics_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    labels, rows = metric_table(metrics)
    e = html.escape
    head = "".join(f"<th>{e(label)}</th>" for label in labels)
    body = "".join(
        f'<tr data-metric="{e(row.key)}"><th>{e(row.label)}</th>'
        + "".join(f'<td class="num">{e(value)}</td>' for value in row.values)
        + f'<td class="def">{e(row.definition)}</td></tr>'
        for row in rows
    )
    legend = _benchmark_legend(list(metrics))
    return (
        f'<table class="metrics"><thead><tr><th>metric</th>{head}<th></th></tr></thead>'
        f"<tbody>{body}</tbody></table>" + (f'<p class="legend">{e(legend)}</p>' if legend else "")
    )


def _require(frame: pl.DataFrame, name: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}")


def write_report(
    path: Path,
    *,
    title: str,
    equity: pl.DataFrame,
    prices: pl.DataFrame,
    fills: pl.DataFrame,
    metrics: dict[str, dict[str, float]],
    sentiment: pl.DataFrame | None = None,
    notes: Sequence[str] = (),
    actions: pl.DataFrame | None = None,
) -> Path:
    """Write one self-contained HTML report of a backtest to ``path`` and return ``path``.

    - ``equity``: ts (UTC), strategy, buy_and_hold, baseline (the momentum rule): equity
      values per bar.
    - ``prices``: ts, symbol, close. ``fills``: ts, symbol, side ('buy' | 'sell'), qty, price.
    - ``actions`` (optional): ts, symbol, action, position (0/1); shades the long periods
      (otherwise they are derived from the fills).
    - ``sentiment`` (optional): ts, symbol, sentiment in [-1, 1].
    - ``metrics``: {"strategy": summarize(...), "buy_and_hold": ..., "baseline": ...}, the
      benchmarks' from :func:`trading.baselines.benchmark_metrics`.
    - ``notes``: lines shown prominently at the top (e.g. that the data is synthetic).

    Every text is HTML-escaped; parent folders are created.
    """
    _require(equity, "equity", ["ts", "strategy", BUY_AND_HOLD, MOMENTUM])
    _require(prices, "prices", ["ts", "symbol", "close"])
    _require(fills, "fills", ["ts", "symbol", "side", "qty", "price"])
    if actions is not None:
        _require(actions, "actions", ["ts", "symbol", "position"])
    if sentiment is not None:
        _require(sentiment, "sentiment", ["ts", "symbol", "sentiment"])
    if equity.height == 0:
        raise ValueError("equity is empty: nothing to report")

    equity = equity.sort("ts")
    timeline = _Timeline(_epoch_us(equity.get_column("ts")))
    figures = [_equity_figure(equity, timeline), _drawdown_figure(equity, timeline)]
    price_fig = _price_figure(prices, fills, actions, timeline)
    if price_fig is not None:
        figures.append(price_fig)
    if sentiment is not None and sentiment.height:
        sentiment_fig = _sentiment_figure(sentiment, timeline)
        if sentiment_fig is not None:
            figures.append(sentiment_fig)

    e = html.escape
    first, last = np.datetime_as_string(timeline.us[[0, -1]].astype("datetime64[us]"), unit="m")
    parts = [
        *html_head(title),
        f'<p class="span">{e(first.replace("T", " "))} to {e(last.replace("T", " "))} UTC, '
        f"{len(timeline):,} bars, {fills.height:,} fills</p>",
    ]
    if notes:
        items = "".join(f"<li>{e(note)}</li>" for note in notes)
        parts.append(f'<div class="notes"><ul>{items}</ul></div>')
    parts += ["<h2>Metrics</h2>", _metrics_table(metrics)]
    for fig in figures:
        parts += [
            f"<h2>{e(fig.title)}</h2>",
            f'<figure><img src="data:image/png;base64,{fig.png_b64}" alt="{e(fig.alt)}">'
            f"<figcaption>{e(fig.caption)}</figcaption></figure>",
        ]
    parts.append("</main></body></html>\n")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
