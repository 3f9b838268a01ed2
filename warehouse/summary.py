"""Read-side summaries for people: coverage, quarantine counts and the demo's example query."""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from warehouse.io import load_frame

EXAMPLE_SQL = """\
-- Daily return and intraday range of each ETF, from SYNTHETIC minute bars. The return runs
-- from the day's first open, or from the previous day's close where there is none
-- (close-only bars have a NULL open); a close-only day has no range (NULL).
WITH days AS (
    SELECT symbol,
           CAST(timezone('America/New_York', ts) AS DATE) AS day,
           count(*)                                        AS minutes,
           arg_min(open, ts)                               AS open,
           arg_max(close, ts)                              AS close,
           round(100 * (max(high) / min(low) - 1), 3)      AS range_pct
    FROM bars
    WHERE timeframe = '1Min' AND source = 'synthetic'
      AND symbol IN ('SPY', 'VTI', 'VXUS', 'BND')
    GROUP BY ALL
)
SELECT symbol, day, minutes, open, close,
       round(100 * (close / coalesce(open, lag(close) OVER w) - 1), 3) AS return_pct,
       range_pct
FROM days
WINDOW w AS (PARTITION BY symbol ORDER BY day)
ORDER BY day DESC, symbol
LIMIT 8"""


GATE_SQL = """select kind, symbol, replace(reference, 'baseline:', '') as reference,
       round(candidate_objective, 2) as candidate, round(reference_objective, 2) as ref_value,
       test, round(spa_p, 3) as spa_p, round(dsr, 3) as dsr, round(p_value, 3) as p_value,
       promoted
from promotion_decisions
where decided_at = (select max(decided_at) from promotion_decisions)
order by kind, symbol"""


def load_latest_gate(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The newest gate run's decisions, rounded for people (GATE_SQL)."""
    return load_frame(con, GATE_SQL)


def load_coverage(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """What bars the warehouse holds, per (symbol, timeframe, source)."""
    return load_frame(
        con,
        "SELECT symbol, timeframe, source, bars, first_bar, last_bar FROM v_bar_coverage"
        " ORDER BY timeframe DESC, source, symbol",
    )


def load_quarantine_counts(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Rejected rows per (source, reason)."""
    return load_frame(
        con,
        "SELECT source, reason, count(*) AS rows, any_value(detail) AS detail"
        " FROM bars_quarantine GROUP BY ALL ORDER BY source, rows DESC",
    )


SENTIMENT_SQL = """\
-- Does an hour's mean post sentiment line up with the next hour's return? (SYNTHETIC posts)
WITH s AS (
    SELECT symbol, hour, posts, mean_compound
    FROM v_sentiment_hourly WHERE source = 'synthetic' AND symbol <> '*'
), b AS (
    SELECT symbol, date_trunc('hour', ts) AS hour, ln(arg_max(close, ts) / arg_min(open, ts)) AS ret
    FROM bars WHERE timeframe = '1Min' AND source = 'synthetic'
    GROUP BY ALL
)
SELECT s.symbol,
       sum(s.posts)                                      AS posts,
       round(avg(s.mean_compound), 3)                    AS mean_compound,
       round(corr(s.mean_compound, same.ret), 3)         AS corr_same_hour,
       round(corr(s.mean_compound, next.ret), 3)         AS corr_next_hour
FROM s
JOIN b same ON same.symbol = s.symbol AND same.hour = s.hour
JOIN b next ON next.symbol = s.symbol AND next.hour = s.hour + INTERVAL 1 HOUR
GROUP BY s.symbol
ORDER BY corr_next_hour DESC"""


def load_sentiment_summary(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per symbol: posts, mean sentiment and its correlation with this and the next hour's return."""
    return load_frame(con, SENTIMENT_SQL)


def load_example_rows(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The rows of the README's and the demo's example query (EXAMPLE_SQL)."""
    return load_frame(con, EXAMPLE_SQL)


def hourly_sentiment(
    con: duckdb.DuckDBPyConnection, symbols: list[str], start: datetime, end: datetime
) -> pl.DataFrame:
    """ts (the hour), symbol, sentiment (mean VADER compound of its posts) for hours in [start, end)."""
    return load_frame(
        con,
        "SELECT hour AS ts, symbol, avg(mean_compound) AS sentiment FROM v_sentiment_hourly"
        " WHERE list_contains(?, symbol) AND hour >= ? AND hour < ? GROUP BY ALL ORDER BY ts",
        [symbols, start, end],
    )


def load_symbol_coverage(con: duckdb.DuckDBPyConnection, symbols: list[str]) -> pl.DataFrame:
    """Stored bars of `symbols` per (symbol, timeframe), all sources together: bars, first_bar, last_bar."""
    return load_frame(
        con,
        "SELECT symbol, timeframe, sum(bars)::BIGINT AS bars, min(first_bar) AS first_bar,"
        " max(last_bar) AS last_bar FROM v_bar_coverage WHERE list_contains(?, symbol)"
        " GROUP BY ALL ORDER BY symbol, timeframe",
        [symbols],
    )
