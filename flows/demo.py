"""`demo` flow: the whole pipeline on the embedded offline data, then a summary."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from core.settings import get_settings
from core.universe import COIN_SYMBOLS, EQUITY_SYMBOLS
from flows.backtest import backtest
from flows.config import (
    BacktestConfig,
    CryptoTradingConfig,
    DemoConfig,
    IngestBarsConfig,
    LiveTradingConfig,
    NightlyRetrainConfig,
    ScrapeRedditConfig,
    TrainAgentConfig,
    utc_midnight,
)
from flows.crypto_trading import crypto_trading
from flows.ingest_bars import ingest_bars
from flows.live_trading import live_trading
from flows.nightly_retrain import nightly_retrain
from flows.scrape_reddit import scrape_reddit
from flows.train_agent import train_agent
from warehouse.db import connect
from warehouse.io import load_frame
from warehouse.registry import choose_model, promote
from warehouse.summary import (
    EXAMPLE_SQL,
    SENTIMENT_SQL,
    load_coverage,
    load_quarantine_counts,
    load_sentiment_summary,
)

DEMO_COINS = ("BTC/USD", "ETH/USD", "DOGE/USD")
GATE_SQL = """select kind, symbol, replace(reference, 'baseline:', '') as reference,
       round(candidate_objective, 2) as candidate, round(reference_objective, 2) as ref_value,
       test, round(spa_p, 3) as spa_p, round(dsr, 3) as dsr, round(p_value, 3) as p_value,
       promoted
from promotion_decisions
where decided_at = (select max(decided_at) from promotion_decisions)
order by kind, symbol"""

SAMPLE_FILE = Path(__file__).resolve().parents[1] / "examples" / "faulty_bars.csv"


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
    body = "\n".join("| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows)
    return head + "\n" + body


@flow(name="demo", log_prints=True)
def demo(config: DemoConfig | None = None) -> dict[str, Any]:
    """Ingest bars and posts, train two agents, promote one, backtest it, replay a live session; summarise."""
    config = config or DemoConfig()
    logger = get_run_logger()
    warehouse = config.warehouse or str(get_settings().warehouse_path)

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

    logger.info(
        "4/10 SYNTHETIC Reddit posts, %s to %s: tone follows the ETFs and leads the coins",
        config.start,
        config.end,
    )
    posts = scrape_reddit(
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
    logger.info(
        "5/10 a deep-Q agent for SPY on the SYNTHETIC minute bars (held-out: the last two months)"
    )
    minute_agent = train_agent(
        TrainAgentConfig(
            train_start=config.start,
            train_end=config.train_end,
            test_start=config.train_end,
            test_end=config.end,
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

    logger.info(
        "7/10 promote the SPY minute agent with the best held-out objective, then backtest it "
        "over the held-out months through the live execution path (simulated broker)"
    )
    with connect(warehouse) as con:
        best = choose_model(con, "SPY", None)
        promote(con, str(best["model_id"]), datetime.now(UTC))
    backtest_result = backtest(
        BacktestConfig(symbol="SPY", start=config.train_end, end=config.end, warehouse=warehouse)
    )
    logger.info("8/10 replay the newest stored SPY session as a live session (replay mode)")
    session = live_trading(LiveTradingConfig(symbol="SPY", mode="replay", warehouse=warehouse))
    verdicts = pl.DataFrame()
    nightly: dict[str, Any] = {}
    crypto: dict[str, Any] = {"status": "not run", "why": "the nightly step is off (nightly=false)"}
    if config.nightly:
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
            verdicts = load_frame(con, GATE_SQL)
            coin_agents = [
                str(r[0])
                for r in con.execute(
                    "SELECT symbol FROM models WHERE kind = 'dqn' AND stage = 'production'"
                    " AND list_contains(?, symbol) ORDER BY symbol",
                    [list(DEMO_COINS)],
                ).fetchall()
            ]
        crypto = {"status": "not run", "why": "no coin agent passed the gate"}
        if coin_agents:
            logger.info(
                "10/10 replay the newest stored UTC day of %s (crypto-trading)", coin_agents
            )
            crypto = crypto_trading(
                CryptoTradingConfig(coins=coin_agents, mode="replay", warehouse=warehouse)
            )
        else:
            logger.info("10/10 crypto-trading skipped: no coin agent passed the gate")
    else:
        logger.info("9-10/10 skipped: nightly=false")

    with connect(warehouse) as con:
        coverage = load_coverage(con)
        quarantine = load_quarantine_counts(con)
        example = load_frame(con, EXAMPLE_SQL)
        sentiment = load_sentiment_summary(con)

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
    return {
        "warehouse": warehouse,
        "ingest": {
            "arch": real,
            "synthetic ETFs": synthetic,
            "synthetic coins": synthetic_coins,
            "sample_file": sample,
        },
        "posts": {k: v for k, v in posts.items() if k != "sentiment_now"},
        "sentiment": sentiment.to_dicts(),
        "sentiment_sql": SENTIMENT_SQL,
        "coverage": coverage.to_dicts(),
        "quarantine": quarantine.to_dicts(),
        "example_sql": EXAMPLE_SQL,
        "example_rows": example.to_dicts(),
        "agents": {"SPY minute (synthetic)": minute_agent, "^GSPC daily (real)": daily_agent},
        "promoted": str(best["model_id"]),
        "backtest": backtest_result,
        "session": session,
        "nightly": {k: v for k, v in nightly.items() if k in ("window", "failures", "notes")},
        "gate": verdicts.to_dicts(),
        "gate_sql": GATE_SQL,
        "crypto": crypto,
    }


if __name__ == "__main__":
    demo()
