-- Purpose: market data as received -- OHLCV bars from every source, the rows that
-- failed validation (kept with a reason, never dropped), and the sentiment series
-- the synthetic generator plants. All timestamps are UTC.

-- Grain: one row per (symbol, timeframe, ts). ts is the bar's START time.
CREATE TABLE bars (
    symbol       VARCHAR     NOT NULL,  -- ticker (SPY) or crypto pair (BTC/USD)
    timeframe    VARCHAR     NOT NULL,  -- Alpaca's names: 1Min, 5Min, 15Min, 30Min, 1Hour, 1Day
    ts           TIMESTAMPTZ NOT NULL,  -- bar start, UTC; daily bars start at 00:00 America/New_York
    open         DOUBLE      NOT NULL,
    high         DOUBLE      NOT NULL,
    low          DOUBLE      NOT NULL,
    close        DOUBLE      NOT NULL,
    volume       DOUBLE,                -- shares or coin units; null when the source has none
    trade_count  BIGINT,                -- number of trades in the bar, when known
    vwap         DOUBLE,                -- volume-weighted average price, when known
    source       VARCHAR     NOT NULL,  -- provenance: 'synthetic', 'arch:sp500', 'alpaca:iex', 'file:x.csv'
    ingested_at  TIMESTAMPTZ NOT NULL,  -- when this version of the row was written (ingest time)
    PRIMARY KEY (symbol, timeframe, ts)
);
COMMENT ON TABLE bars IS 'OHLCV bars; grain (symbol, timeframe, ts=bar start UTC); source=synthetic marks generated data';

-- Grain: one row per (row_hash, reason): a received row and one thing wrong with it.
CREATE TABLE bars_quarantine (
    row_hash       VARCHAR     NOT NULL,  -- hash of the row as received (idempotency key)
    reason         VARCHAR     NOT NULL,  -- machine-readable: nan_price, high_below_low, duplicate_key, ...
    detail         VARCHAR,               -- human-readable explanation
    symbol         VARCHAR,
    timeframe      VARCHAR,
    ts             TIMESTAMPTZ,
    open           DOUBLE,
    high           DOUBLE,
    low            DOUBLE,
    close          DOUBLE,
    volume         DOUBLE,
    trade_count    BIGINT,
    vwap           DOUBLE,
    source         VARCHAR,
    raw            VARCHAR,               -- original cell texts as JSON, when a value failed to parse
    quarantined_at TIMESTAMPTZ NOT NULL,  -- first time this row was rejected
    PRIMARY KEY (row_hash, reason)
);
COMMENT ON TABLE bars_quarantine IS 'bars rejected by validation, kept with a reason; grain (row_hash, reason)';

-- Grain: one row per (symbol, ts) minute. Only the synthetic generator writes it.
CREATE TABLE synthetic_sentiment (
    symbol     VARCHAR     NOT NULL,
    ts         TIMESTAMPTZ NOT NULL,  -- minute the sentiment value refers to (event time), UTC
    sentiment  DOUBLE      NOT NULL,  -- in [-1, 1]
    source     VARCHAR     NOT NULL DEFAULT 'synthetic',
    PRIMARY KEY (symbol, ts)
);
COMMENT ON TABLE synthetic_sentiment IS 'SYNTHETIC per-minute sentiment planted by the generator; grain (symbol, ts)';
