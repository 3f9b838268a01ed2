"""Read-side summaries for people: coverage, quarantine counts and the demo's example query."""

from __future__ import annotations

import duckdb
import polars as pl

from warehouse.io import load_frame

EXAMPLE_SQL = """\
-- Daily return and intraday range of each ETF, from SYNTHETIC minute bars
SELECT symbol,
       CAST(timezone('America/New_York', ts) AS DATE)              AS day,
       count(*)                                                     AS minutes,
       arg_min(open, ts)                                            AS open,
       arg_max(close, ts)                                           AS close,
       round(100 * (arg_max(close, ts) / arg_min(open, ts) - 1), 3) AS return_pct,
       round(100 * (max(high) / min(low) - 1), 3)                   AS range_pct
FROM bars
WHERE timeframe = '1Min' AND source = 'synthetic'
  AND symbol IN ('SPY', 'VTI', 'VXUS', 'BND')
GROUP BY ALL
ORDER BY day DESC, symbol
LIMIT 8"""


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
