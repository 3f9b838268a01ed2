-- Purpose: close-only bars -- sources that publish only a daily close (skfolio's adjusted
-- closes: the S&P 500 index SPX and five factor ETFs) are stored without inventing an open,
-- high or low.
-- A stored bar is either full OHLC or close-only (open, high and low all NULL); a row with
-- some but not all of them is quarantined as partial_ohlc by core/bar_quality.py before it
-- reaches this table. close stays NOT NULL. Features that need open/high/low/volume are
-- unavailable for close-only series (models/features.py), and simulated fills fall back to
-- the next bar's close where its open is NULL (core/fills.py).

-- Grain: bars unchanged, one row per (symbol, timeframe, ts).
ALTER TABLE bars ALTER COLUMN open DROP NOT NULL;  -- NULL: the source publishes no open (close-only bar)
ALTER TABLE bars ALTER COLUMN high DROP NOT NULL;  -- NULL: close-only bar
ALTER TABLE bars ALTER COLUMN low DROP NOT NULL;   -- NULL: close-only bar
