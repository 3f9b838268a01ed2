"""`demo` flow: the whole pipeline on the embedded offline data, then a summary."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from core.settings import get_settings
from core.universe import COIN_SYMBOLS, EQUITY_SYMBOLS
from flows.config import (
    DemoConfig,
    IngestBarsConfig,
    ScrapeRedditConfig,
    TrainAgentConfig,
    utc_midnight,
)
from flows.ingest_bars import ingest_bars
from flows.scrape_reddit import scrape_reddit
from flows.train_agent import train_agent
from warehouse.db import connect
from warehouse.io import load_frame
from warehouse.summary import (
    EXAMPLE_SQL,
    SENTIMENT_SQL,
    load_coverage,
    load_quarantine_counts,
    load_sentiment_summary,
)

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
    """Ingest real daily bars, synthetic minute bars and posts, a faulty file; train two agents; summarise."""
    config = config or DemoConfig()
    logger = get_run_logger()
    warehouse = config.warehouse or str(get_settings().warehouse_path)

    logger.info("1/6 real daily bars of the S&P 500 and NASDAQ indices (from the arch package)")
    real = ingest_bars(IngestBarsConfig(source="arch", warehouse=warehouse))
    logger.info("2/6 SYNTHETIC minute bars, %s to %s, 4 ETFs + 14 coins", config.start, config.end)
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
    logger.info("3/6 a small SYNTHETIC CSV with deliberately faulty rows (quarantine demo)")
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
        "4/6 SYNTHETIC Reddit posts, %s to %s: tone follows the ETFs and leads the coins",
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
        "5/6 a deep-Q agent for SPY on the SYNTHETIC minute bars (held-out: the last two months)"
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
    logger.info("6/6 a deep-Q agent on the REAL daily S&P 500: train 1999-2014, held-out 2015-2018")
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
    }


if __name__ == "__main__":
    demo()
