"""`scrape-reddit` flow: posts -> validation -> upsert reddit_posts -> VADER scores -> post_sentiment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from adapters.clock import ManualClock, SystemClock
from adapters.protocols import Clock
from core.configs import ScrapeRedditConfig
from core.settings import get_settings
from flows.wiring import build_post_source
from models.sentiment import (
    DEFAULT_WINDOWS,
    MARKET,
    MODEL_NAME,
    compute_sentiment_aggregates,
)
from tasks.reddit import scrape_subreddit
from warehouse.db import connect
from warehouse.posts import PostIngestReport, load_sentiment_features, newest_post_times


def sentiment_now(
    warehouse: Path | str, symbols: list[str], now: datetime, lag: timedelta
) -> pl.DataFrame:
    """The sentiment features a decision at `now` would see, per symbol and market-wide."""
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    with connect(warehouse) as con:
        frame = load_sentiment_features(
            con,
            symbols,
            minute,
            minute + timedelta(minutes=1),
            lag=lag,
            model=MODEL_NAME,
            aggregate=compute_sentiment_aggregates,
            windows=DEFAULT_WINDOWS,
        )
    return frame.drop("ts").sort(pl.col("symbol") != MARKET, "symbol")


def _markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _report(
    label: str,
    per_sub: dict[str, PostIngestReport],
    shown: list[dict[str, Any]],
    now: datetime,
    lag_minutes: int,
    total: PostIngestReport,
) -> None:
    """Per subreddit what was stored and quarantined, and the sentiment a decision now would see."""
    create_markdown_artifact(
        key="scrape-reddit-report",
        markdown="\n\n".join(
            [
                f"## scrape-reddit ({label}{', SYNTHETIC' if label == 'synthetic' else ''})",
                _markdown(
                    [
                        {"subreddit": k, **v.as_dict(), "quarantined": v.quarantined_total}
                        for k, v in per_sub.items()
                    ]
                ),
                f"## Sentiment a decision at {now:%Y-%m-%d %H:%M} UTC would see "
                f"(posts count {lag_minutes} min after they are made; "
                f"'{MARKET}' = all posts)",
                _markdown(shown),
            ]
        ),
        description=total.summary(),
    )


@flow(name="scrape-reddit", log_prints=True)
def scrape_reddit(config: ScrapeRedditConfig | None = None) -> dict[str, Any]:
    """Fetch new posts per subreddit, store and score them; re-running it changes nothing."""
    config = config or ScrapeRedditConfig()
    settings = get_settings()
    logger = get_run_logger()
    warehouse = Path(config.warehouse) if config.warehouse else settings.warehouse_path
    clock: Clock = ManualClock(config.until) if config.until else SystemClock()
    source = build_post_source(config, settings, clock)
    label = getattr(source, "name", type(source).__name__)
    subreddits = list(config.subreddits or settings.subreddits)
    with connect(warehouse) as con:
        resume = newest_post_times(con, label)
    logger.info(
        "scraping %d subreddit(s) from %s%s into %s",
        len(subreddits),
        label,
        " (SYNTHETIC posts)" if label == "synthetic" else "",
        warehouse,
    )
    per_sub: dict[str, PostIngestReport] = {}
    for i, sub in enumerate(subreddits, start=1):
        since = config.since or resume.get(sub)
        report = scrape_subreddit(
            source, sub, since, config.limit, warehouse, config.batch_size, clock
        )
        per_sub[sub] = report
        logger.info(
            "[%d/%d] r/%s since %s: %s",
            i,
            len(subreddits),
            sub,
            since.isoformat() if since else "the start",
            report.summary(),
        )
    total = sum(per_sub.values(), PostIngestReport())
    lag = timedelta(minutes=settings.sentiment_lag_minutes)
    symbols = [*settings.equity_symbols, *settings.coin_symbols]
    now_features = sentiment_now(warehouse, symbols, clock.now(), lag)
    shown = now_features.filter(pl.col("posts_24h") > 0).to_dicts()
    _report(label, per_sub, shown, clock.now(), settings.sentiment_lag_minutes, total)
    logger.info("scrape-reddit done: %s", total.summary())
    return {
        "source": label,
        "warehouse": str(warehouse),
        **total.as_dict(),
        "sentiment_now": shown,
    }


if __name__ == "__main__":
    scrape_reddit()
