"""Self-contained HTML report of a walk-forward evaluation: verdict, overall and per-fold tables, out-of-sample equity and the spread of Sharpe over seeds and folds."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from core.baselines import BENCHMARK_LABELS, BENCHMARK_RULES
from models.walk_forward import AGENT, AGENT_MEAN, BASELINES, WalkForwardSummary
from trading.report import html_head, png_base64

POLICY_LABELS: dict[str, str] = {
    AGENT_MEAN: "Agent (mean of seeds)",
    AGENT: "Agent (one seed)",
    **BENCHMARK_LABELS,
}
"""How policies are named in the evaluation's tables and figures."""
_COLORS = {
    AGENT_MEAN: "#1f77b4",
    "buy_and_hold": "#7f7f7f",
    "baseline": "#ff7f0e",
    "trend": "#2ca02c",
    "vol_target": "#9467bd",
    "flat": "#bbbbbb",
}
_TABLE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "Return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe", "ratio"),
    ("sortino", "Sortino", "ratio"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("calmar", "Calmar", "ratio"),
    ("exposure", "Exposure", "pct"),
    ("turnover", "Turnover / yr", "ratio"),
)


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    v = float(value)
    return f"{100 * v:.1f}%" if kind == "pct" else f"{v:.2f}"


def _fmt_spread(mean: float, std: float, kind: str) -> str:
    if not math.isfinite(std):
        return _fmt(mean, kind)
    return f"{_fmt(mean, kind)} ± {_fmt(std, kind).rstrip('%')}{'%' if kind == 'pct' else ''}"


def policy_order(policies: Sequence[str]) -> list[str]:
    """The agent first, then the baselines in core.baselines' order."""
    order = [AGENT_MEAN, AGENT, *BASELINES]
    return [p for p in order if p in policies]


def overall_rows(overall: pl.DataFrame) -> list[tuple[str, list[str]]]:
    """(label, cells) per policy of the overall table; the per-seed agent rows as mean ± std."""
    rows: list[tuple[str, list[str]]] = []
    for policy in policy_order(overall["policy"].unique().to_list()):
        part = overall.filter(pl.col("policy") == policy)
        if policy == AGENT:
            label = f"Agent, per seed (mean ± std of {part.height})"
            cells = [
                _fmt_spread(
                    float(part[m].mean()),  # type: ignore[arg-type]
                    float(part[m].std()) if part.height > 1 else math.nan,  # type: ignore[arg-type]
                    kind,
                )
                for m, _, kind in _TABLE_METRICS
            ]
        else:
            label = POLICY_LABELS.get(policy, policy)
            cells = [_fmt(part[m][0], kind) for m, _, kind in _TABLE_METRICS]
        rows.append((label, cells))
    return rows


def _table(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        f"<tr><th>{e(label)}</th>"
        + "".join(f'<td class="num">{e(c)}</td>' for c in cells)
        + "</tr>"
        for label, cells in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def fold_rows(
    folds: pl.DataFrame, metric: str = "total_return"
) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Per fold: the agent's `metric` (seed mean ± std) and each baseline's, as table cells."""
    kind = dict((m, k) for m, _, k in _TABLE_METRICS)[metric]
    baselines = [p for p in policy_order(folds["policy"].unique().to_list()) if p in BASELINES]
    headers = ["Test fold", "Agent (seeds)", *(POLICY_LABELS[p] for p in baselines)]
    rows: list[tuple[str, list[str]]] = []
    for (label,), part in folds.sort("fold").group_by("label", maintain_order=True):
        seeds = part.filter(pl.col("policy") == AGENT)[metric]
        agent = _fmt_spread(
            float(seeds.mean()) if seeds.len() else math.nan,  # type: ignore[arg-type]
            float(seeds.std()) if seeds.len() > 1 else math.nan,  # type: ignore[arg-type]
            kind,
        )
        cells = [agent]
        for p in baselines:
            row = part.filter(pl.col("policy") == p)
            cells.append(_fmt(row[metric][0] if row.height else None, kind))
        rows.append((str(label), cells))
    return headers, rows


def _equity_figure(returns: pl.DataFrame, folds: pl.DataFrame) -> str:
    """Chained out-of-sample equity (log scale) of the seed mean, each seed and the baselines."""
    fig = Figure(figsize=(12, 5.2))
    ax = fig.add_subplot()
    for (policy, _seed), part in returns.sort("ts").group_by("policy", "seed", maintain_order=True):
        ts = part["ts"].to_numpy()
        equity = np.cumprod(1.0 + part["return"].to_numpy())
        if policy == AGENT:
            ax.plot(ts, equity, color="#1f77b4", alpha=0.25, lw=0.8, label=None)
        else:
            ax.plot(
                ts,
                equity,
                color=_COLORS.get(str(policy), "#333"),
                lw=2.0 if policy == AGENT_MEAN else 1.2,
                label=POLICY_LABELS.get(str(policy), str(policy)),
            )
    starts = returns.group_by("fold").agg(pl.col("ts").min()).sort("fold")["ts"].to_numpy()
    for x in starts[1:]:
        ax.axvline(x, color="#dddddd", lw=0.6, zorder=0)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylabel("growth of 1 (log scale)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9, ncols=3)
    fig.tight_layout()
    return png_base64(fig)


def _sharpe_figure(folds: pl.DataFrame) -> str:
    """Per fold, each seed's Sharpe (dots) beside the baselines' (markers): the spread over seeds and folds."""
    fig = Figure(figsize=(12, 4.6))
    ax = fig.add_subplot()
    labels = folds.sort("fold").select("fold", "label").unique(maintain_order=True)
    x_of = {int(f): i for i, f in enumerate(labels["fold"].to_list())}
    seeds = folds.filter(pl.col("policy") == AGENT)
    rng = np.random.default_rng(0)  # jitter only, so overlapping seeds stay visible
    xs = np.array([x_of[int(f)] for f in seeds["fold"].to_list()], dtype=float)
    ax.scatter(
        xs + rng.uniform(-0.15, 0.15, xs.size),
        seeds["sharpe"].to_numpy(),
        s=14,
        color="#1f77b4",
        alpha=0.7,
        label="Agent, each seed",
    )
    for policy, marker in (("buy_and_hold", "_"), ("trend", "x"), ("vol_target", "+")):
        part = folds.filter(pl.col("policy") == policy)
        if part.height:
            ax.scatter(
                [x_of[int(f)] for f in part["fold"].to_list()],
                part["sharpe"].to_numpy(),
                marker=marker,
                s=80,
                color=_COLORS[policy],
                label=POLICY_LABELS[policy],
            )
    ax.axhline(0.0, color="#999", lw=0.8)
    ax.set_xticks(range(labels.height), labels["label"].to_list(), rotation=60, fontsize=8)
    ax.set_ylabel("annualised Sharpe in the fold")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9, ncols=4)
    fig.tight_layout()
    return png_base64(fig)


def verdict_lines(summary: WalkForwardSummary) -> list[str]:
    """The statistics in words: what the gate would decide and why."""
    v = summary.verdict
    head = (
        "PASSES the promotion gate"
        if v.promoted
        else "does NOT pass the promotion gate (no evidence of skill beyond the baselines)"
    )
    return [f"Agent (mean of seeds) {head}.", *v.reasons]


def write_evaluation_report(
    path: Path,
    *,
    title: str,
    summary: WalkForwardSummary,
    returns: pl.DataFrame,
    notes: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Write the report to ``path`` (parents created) and return it. ``returns``: models.walk_forward.result_frame."""
    e = html.escape
    headers = ["Policy", *(label for _, label, _ in _TABLE_METRICS)]
    fold_headers, fold_cells = fold_rows(summary.folds, "total_return")
    sharpe_headers, sharpe_cells = fold_rows(summary.folds, "sharpe")
    mean = returns.filter(pl.col("policy") == AGENT)
    mean = (
        mean.group_by("fold", "ts", maintain_order=True)
        .agg(pl.col("return").mean())
        .with_columns(pl.lit(AGENT_MEAN).alias("policy"), pl.lit(-1, dtype=pl.Int64).alias("seed"))
    )
    curves = pl.concat(
        [
            returns.select("fold", "ts", "return", "policy", "seed"),
            mean.select("fold", "ts", "return", "policy", "seed"),
        ]
    ).filter(pl.col("policy") != "flat")
    rules = "".join(
        f"<li><b>{e(BENCHMARK_LABELS[k])}</b>: {e(BENCHMARK_RULES[k])}</li>"
        for k in BASELINES
        if k in BENCHMARK_RULES
    )
    parts = html_head(title)
    lines = [*notes, *verdict_lines(summary)]
    parts.append(
        '<div class="notes"><ul>' + "".join(f"<li>{e(x)}</li>" for x in lines) + "</ul></div>"
    )
    parts += [
        "<h2>All test folds chained</h2>",
        _table(headers, overall_rows(summary.overall)),
        f'<p class="legend">Baselines trade the same bars with the same costs and fill rule:<ul>{rules}</ul></p>',
        "<h2>Out-of-sample equity</h2>",
        f'<figure><img src="data:image/png;base64,{_equity_figure(curves, summary.folds)}" '
        'alt="chained out-of-sample equity of the agent and the baselines">'
        "<figcaption>Each fold's book starts from cash; thin lines are single seeds, the thick "
        "line their mean; grey verticals mark the test folds.</figcaption></figure>",
        "<h2>Sharpe per fold: seeds and baselines</h2>",
        f'<figure><img src="data:image/png;base64,{_sharpe_figure(summary.folds)}" '
        'alt="per-fold Sharpe ratio of each seed and the baselines">'
        "<figcaption>A dot per seed: how much of a fold's result the seed alone decides.</figcaption></figure>",
        "<h2>Return per test fold</h2>",
        _table(fold_headers, fold_cells),
        "<h2>Sharpe per test fold</h2>",
        _table(sharpe_headers, sharpe_cells),
    ]
    if config:
        items = "".join(f"<li>{e(str(k))}: {e(str(v))}</li>" for k, v in sorted(config.items()))
        parts += ["<h2>Configuration</h2>", f'<ul class="legend">{items}</ul>']
    parts.append("</main></body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
