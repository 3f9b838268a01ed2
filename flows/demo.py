"""`demo` flow: the whole pipeline on the embedded offline data, then a summary."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from core.assets import infer_asset_class
from core.configs import (
    BacktestConfig,
    CryptoTradingConfig,
    DemoConfig,
    GateConfig,
    IngestBarsConfig,
    LiveTradingConfig,
    NightlyRetrainConfig,
    ScrapeRedditConfig,
    TrainAgentConfig,
    utc_midnight,
)
from core.costs import configured_costs
from core.settings import get_settings
from core.universe import COIN_SYMBOLS, EQUITY_SYMBOLS
from flows.backtest import backtest
from flows.crypto_trading import crypto_trading
from flows.ingest_bars import ingest_bars
from flows.live_trading import live_trading
from flows.nightly_retrain import nightly_retrain
from flows.scrape_reddit import scrape_reddit
from flows.train_agent import train_agent
from models.evaluation import judge_candidate
from models.gate import GateDecision, VerdictFunction
from tasks.gate import agent_decisions, apply_gate
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.registry import load_promotion_history, production_model_id, production_symbols
from warehouse.summary import (
    EXAMPLE_SQL,
    GATE_SQL,
    SENTIMENT_SQL,
    load_coverage,
    load_example_rows,
    load_latest_gate,
    load_quarantine_counts,
    load_sentiment_summary,
)
from warehouse.symbols import load_symbols

DEMO_COINS = ("BTC/USD", "ETH/USD", "DOGE/USD")
MINUTE_AGENT = "SPY minute (synthetic)"

SAMPLE_FILE = Path(__file__).resolve().parents[1] / "examples" / "faulty_bars.csv"

PROMOTED = "promoted by the gate"
NOT_PROMOTED = "candidate, not promoted"


def _days(first: date, end: date) -> str:
    """A half-open range [first, end) of days in words, its last day inclusive."""
    return f"{first} to {end - timedelta(days=1)}"


def demo_ranges(config: DemoConfig) -> str:
    """The log line's account of the minute agent's three disjoint ranges."""
    return (
        f"train {_days(config.start, config.train_end)}, "
        f"select (the gate) {_days(config.train_end, config.report_start)}, "
        f"report {_days(config.report_start, config.end)}"
    )


@dataclass(frozen=True)
class GatedAgent:
    """The demo's minute agent after the gate: the model shown, whether the gate promoted it, why."""

    model_id: str
    promoted: bool
    decisions: tuple[GateDecision, ...]

    @property
    def label(self) -> str:
        """'promoted by the gate' or 'candidate, not promoted'."""
        return PROMOTED if self.promoted else NOT_PROMOTED

    def verdicts(self) -> list[dict[str, Any]]:
        """One row per judged candidate: its statistics and the gate's reason."""
        return [
            {
                "candidate": d.candidate_id,
                "sharpe": round(d.candidate.objective, 3),
                "reference": d.reference_name,
                "spa_p": d.statistics.get("spa_p"),
                "dsr": d.statistics.get("dsr"),
                "n_trials": d.statistics.get("n_trials"),
                "passed": d.verdict.passed,
                "reason": d.verdict.reason,
            }
            for d in self.decisions
        ]


def gate_minute_agent(
    warehouse: str,
    symbol: str,
    model_ids: list[str],
    config: DemoConfig,
    decided_at: datetime,
    *,
    gate: GateConfig | None = None,
    verdict_function: VerdictFunction = judge_candidate,
) -> GatedAgent:
    """Judge the minute agent's candidates on the selection range [train_end, report_start)
    exactly as nightly-retrain judges agents (tasks.gate.agent_decisions: each a
    trial first, SPA + deflated Sharpe against the champion and the baselines), store the
    verdicts and promote only what passes (apply_gate). The report range's bars are not even
    loaded. Returns the production candidate if the gate promoted one (now or on an earlier
    run), else the candidate with the best selection Sharpe -- never promoted here."""
    gate = gate or GateConfig()
    window = (utc_midnight(config.start), utc_midnight(config.report_start))
    with connect(warehouse) as con:
        bars = load_bars(con, [symbol], "1Min", *window)
        stored = load_symbols(con, [symbol]).get(symbol)
    # The costs train-agent charged this symbol: its asset class's defaults.
    costs = configured_costs(
        stored.asset_class if stored is not None else infer_asset_class(symbol)
    )
    decisions = agent_decisions(
        warehouse,
        symbol,
        model_ids,
        bars,
        window,
        utc_midnight(config.train_end),
        costs,
        gate,
        verdict_function=verdict_function,
    )
    apply_gate(
        warehouse,
        decisions,
        decided_at,
        promote_passing=gate.promote,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
    )
    with connect(warehouse) as con:
        production = production_model_id(con, "dqn", symbol)
        history = load_promotion_history(con, "dqn", symbol)
    # Ours and in production by the gate's hand (a manual `tradingml promote` does not count).
    if production is not None and production in model_ids:
        by_gate = history.filter(
            (pl.col("model_id") == production) & (pl.col("to_stage") == "production")
        ).get_column("actor")
        if by_gate.len() > 0 and by_gate[-1] == "gate":
            return GatedAgent(production, True, tuple(decisions))
    scored = [d for d in decisions if math.isfinite(d.candidate.objective)]
    best = max(scored, key=lambda d: d.candidate.objective).candidate_id if scored else None
    return GatedAgent(best or model_ids[0], False, tuple(decisions))


def _brief(d: GateDecision) -> str:
    """A verdict in a few words: the candidate, the gate's head reason, SPA p and DSR."""
    spa, dsr = d.statistics.get("spa_p"), d.statistics.get("dsr")
    numbers = ", ".join(
        f"{name} {value:.3f}"
        for name, value in (("SPA p", spa), ("DSR", dsr))
        if isinstance(value, float) and math.isfinite(value)
    )
    return f"{d.candidate_id} {d.verdict.reason.split(':')[0]} ({numbers})"


def report_configs(
    config: DemoConfig, warehouse: str, agent: GatedAgent, symbol: str = "SPY"
) -> tuple[BacktestConfig, LiveTradingConfig]:
    """The backtest over the report range only, and the replay, of the gated agent by its id."""
    return (
        BacktestConfig(
            symbol=symbol,
            model_id=agent.model_id,
            start=config.report_start,
            end=config.end,
            warehouse=warehouse,
        ),
        LiveTradingConfig(
            symbol=symbol, mode="replay", model_id=agent.model_id, warehouse=warehouse
        ),
    )


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
    body = "\n".join("| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows)
    return head + "\n" + body


@flow(name="demo", log_prints=True)
def demo(config: DemoConfig | None = None) -> dict[str, Any]:
    """Ingest bars and posts, train two agents, gate one, backtest it, replay a live session; summarise."""
    config = config or DemoConfig()
    logger = get_run_logger()
    warehouse = config.warehouse or str(get_settings().warehouse_path)
    ingest = _ingest(config, warehouse, logger)  # 1-3
    posts = _posts(config, warehouse, logger)  # 4
    agents = _train_agents(config, warehouse, logger)  # 5-6
    gated, backtest_result, session = _gate_and_trade(config, warehouse, agents, logger)  # 7-8
    nightly, verdicts, crypto = _nightly_and_crypto(config, warehouse, logger)  # 9-10
    with connect(warehouse) as con:
        coverage = load_coverage(con)
        quarantine = load_quarantine_counts(con)
        example = load_example_rows(con)
        sentiment = load_sentiment_summary(con)
    _summary_artifact(config, gated, coverage, quarantine, example, sentiment)
    return {
        "warehouse": warehouse,
        "ingest": ingest,
        "posts": {k: v for k, v in posts.items() if k != "sentiment_now"},
        "sentiment": sentiment.to_dicts(),
        "sentiment_sql": SENTIMENT_SQL,
        "coverage": coverage.to_dicts(),
        "quarantine": quarantine.to_dicts(),
        "example_sql": EXAMPLE_SQL,
        "example_rows": example.to_dicts(),
        "agents": agents,
        "promoted": gated.model_id if gated.promoted else None,
        "spy_agent": {
            "model_id": gated.model_id,
            "status": gated.label,
            "ranges": demo_ranges(config),
            "gate": gated.verdicts(),
        },
        "backtest": backtest_result,
        "session": session,
        "nightly": {k: v for k, v in nightly.items() if k in ("window", "failures", "notes")},
        "gate": verdicts.to_dicts(),
        "gate_sql": GATE_SQL,
        "crypto": crypto,
    }


def _ingest(config: DemoConfig, warehouse: str, logger: Any) -> dict[str, Any]:
    """Steps 1-3: real daily index bars, SYNTHETIC minute bars, a faulty SYNTHETIC CSV."""
    logger.info("1/10 real daily bars of the S&P 500 and NASDAQ indices (from the arch package)")
    real = ingest_bars(IngestBarsConfig(source="arch", warehouse=warehouse))
    logger.info("2/10 SYNTHETIC minute bars, %s to %s, 4 ETFs + 14 coins", config.start, config.end)
    synthetic = ingest_bars(
        IngestBarsConfig(
            source="synthetic",
            symbols=list(EQUITY_SYMBOLS),
            start=config.start,
            end=config.end,
            seed=config.seed,
            warehouse=warehouse,
        )
    )
    # The coins carry a planted signal: returns partly led by a sentiment series, which the
    # synthetic posts below express -- so the demo's sentiment can matter.
    synthetic_coins = ingest_bars(
        IngestBarsConfig(
            source="synthetic",
            symbols=list(COIN_SYMBOLS),
            start=config.start,
            end=config.end,
            seed=config.seed,
            signal="sentiment",
            warehouse=warehouse,
        )
    )
    logger.info("3/10 a small SYNTHETIC CSV with deliberately faulty rows (quarantine demo)")
    sample = ingest_bars(
        IngestBarsConfig(
            source="file",
            path=config.sample_file or str(SAMPLE_FILE),
            timeframe="1Min",
            source_label="synthetic:faulty-sample",
            start=date(2000, 1, 1),
            end=date(2200, 1, 1),
            warehouse=warehouse,
        )
    )
    return {
        "arch": real,
        "synthetic ETFs": synthetic,
        "synthetic coins": synthetic_coins,
        "sample_file": sample,
    }


def _posts(config: DemoConfig, warehouse: str, logger: Any) -> dict[str, Any]:
    """Step 4: SYNTHETIC Reddit posts whose tone leads the coins."""
    logger.info(
        "4/10 SYNTHETIC Reddit posts, %s to %s: tone follows the ETFs and leads the coins",
        config.start,
        config.end,
    )
    return scrape_reddit(
        ScrapeRedditConfig(
            source="synthetic",
            since=utc_midnight(config.start),
            until=utc_midnight(config.end),
            limit=10_000_000,
            seed=config.seed,
            tone="lead-coins",
            warehouse=warehouse,
        )
    )


def _train_agents(config: DemoConfig, warehouse: str, logger: Any) -> dict[str, Any]:
    """Steps 5-6: the SPY minute agent (SYNTHETIC) and the daily S&P 500 agent (real)."""
    logger.info("5/10 a deep-Q agent for SPY on the SYNTHETIC minute bars: %s", demo_ranges(config))
    # Its held-out evaluation is the selection range only: the report range stays unseen.
    minute_agent = train_agent(
        TrainAgentConfig(
            train_start=config.start,
            train_end=config.train_end,
            test_start=config.train_end,
            test_end=config.report_start,
            cycles=config.agent_cycles,
            warehouse=warehouse,
        )
    )
    logger.info(
        "6/10 a deep-Q agent on the REAL daily S&P 500: train 1999-2014, held-out 2015-2018"
    )
    daily_agent = train_agent(
        TrainAgentConfig(
            symbols=["^GSPC", "^IXIC"],
            timeframe="1Day",
            train_start=date(1999, 1, 1),
            train_end=date(2015, 1, 1),
            test_start=date(2015, 1, 1),
            test_end=date(2019, 1, 1),
            cycles=config.agent_cycles,
            warehouse=warehouse,
        )
    )
    return {MINUTE_AGENT: minute_agent, "^GSPC daily (real)": daily_agent}


def _gate_and_trade(
    config: DemoConfig, warehouse: str, agents: dict[str, Any], logger: Any
) -> tuple[GatedAgent, dict[str, Any], dict[str, Any]]:
    """Steps 7-8: the gate on the SPY candidates, the backtest of the report months, the replay."""
    logger.info(
        "7/10 the promotion gate judges the SPY candidates on the selection months (SPA + "
        "deflated Sharpe, as nightly); the report months then get a backtest through the "
        "live execution path (simulated broker): %s",
        demo_ranges(config),
    )
    candidates = list(agents[MINUTE_AGENT]["models"])
    gated = gate_minute_agent(warehouse, "SPY", candidates, config, datetime.now(UTC))
    if gated.promoted:
        logger.info("gate: SPY agent %s %s", gated.model_id, PROMOTED)
    else:
        logger.info(
            "gate refused every SPY candidate (%s); backtesting and replaying %s anyway: "
            "%s, to show the machinery",
            "; ".join(_brief(d) for d in gated.decisions) or "none judged",
            gated.model_id,
            NOT_PROMOTED,
        )
    backtest_config, replay_config = report_configs(config, warehouse, gated)
    backtest_result = backtest(backtest_config)
    logger.info(
        "8/10 replay the newest stored SPY session as a live session (replay mode) with %s (%s)",
        gated.model_id,
        gated.label,
    )
    return gated, backtest_result, live_trading(replay_config)


def _nightly_and_crypto(
    config: DemoConfig, warehouse: str, logger: Any
) -> tuple[dict[str, Any], pl.DataFrame, dict[str, Any]]:
    """Steps 9-10: a small nightly retrain on the demo coins, then a replay of the coins it promoted."""
    if not config.nightly:
        logger.info("9-10/10 skipped: nightly=false")
        why = "the nightly step is off (nightly=false)"
        return {}, pl.DataFrame(), {"status": "not run", "why": why}
    logger.info(
        "9/10 a small nightly retrain on %s: forecasters, coin agents with forecast and "
        "sentiment inputs, the SVM allocator, and the promotion gate",
        ", ".join(DEMO_COINS),
    )
    nightly = nightly_retrain(
        NightlyRetrainConfig(
            coins=list(DEMO_COINS),
            include_spy=False,
            start=config.start,
            end=config.end - timedelta(days=1),
            cycles=config.coin_agent_cycles,
            # Hold out up to 30 days, at most a sixth of a shorter window.
            agent_test_days=max(1, min(30, (config.end - config.start).days // 6)),
            warehouse=warehouse,
        )
    )
    with connect(warehouse) as con:
        verdicts = load_latest_gate(con)
        coin_agents = production_symbols(con, "dqn", DEMO_COINS)
    if not coin_agents:
        logger.info("10/10 crypto-trading skipped: no coin agent passed the gate")
        return nightly, verdicts, {"status": "not run", "why": "no coin agent passed the gate"}
    logger.info("10/10 replay the newest stored UTC day of %s (crypto-trading)", coin_agents)
    crypto = crypto_trading(
        CryptoTradingConfig(coins=coin_agents, mode="replay", warehouse=warehouse)
    )
    return nightly, verdicts, crypto


def _summary_artifact(
    config: DemoConfig,
    gated: GatedAgent,
    coverage: pl.DataFrame,
    quarantine: pl.DataFrame,
    example: pl.DataFrame,
    sentiment: pl.DataFrame,
) -> None:
    """What the demo put in the warehouse, as a markdown artifact."""
    create_markdown_artifact(
        key="demo-summary",
        markdown="\n\n".join(
            [
                "# Demo summary",
                "Rows whose source starts with `synthetic` are generated, not market data.",
                "## Bars in the warehouse",
                _markdown_table(coverage.to_dicts()),
                "## Quarantined rows",
                _markdown_table(quarantine.to_dicts()),
                "## The SYNTHETIC SPY minute agent through the promotion gate",
                f"{demo_ranges(config)}. Shown: `{gated.model_id}`, {gated.label}.",
                _markdown_table(gated.verdicts()),
                "## Sentiment of the SYNTHETIC posts against returns",
                f"```sql\n{SENTIMENT_SQL}\n```",
                _markdown_table(sentiment.to_dicts()),
                "## Example query",
                f"```sql\n{EXAMPLE_SQL}\n```",
                _markdown_table(example.to_dicts()),
            ]
        ),
        description="What the demo put in the warehouse",
    )


if __name__ == "__main__":
    demo()
