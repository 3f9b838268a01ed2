-- Purpose: what each symbol is -- its asset class and trading calendar, set when its bars are
-- imported (named with --asset-class / --calendar, else inferred: BASE/QUOTE pairs crypto on
-- 24/7, the rest stocks on XNYS) and stored so that later steps read it instead of guessing
-- from the name; grain: one row per symbol.
-- Written only by warehouse/symbols.py (idempotent upsert); a later import naming another
-- asset class or calendar is refused unless it says --reclassify.

-- Grain: one row per symbol.
CREATE TABLE symbols (
    symbol       VARCHAR     NOT NULL PRIMARY KEY,  -- as in bars.symbol: SPY, BTC/USD, EURUSD
    asset_class  VARCHAR     NOT NULL CHECK (asset_class IN ('stock', 'etf', 'crypto', 'fx')),
    calendar     VARCHAR     NOT NULL,  -- exchange-calendars name (XNYS, XLON, ...), '24/7', or '24/5' (FX: Sunday 17:00 to Friday 17:00 New York)
    timezone     VARCHAR,               -- IANA zone the last import read the source's naive timestamps in; NULL when they carried an offset (or the source is an API)
    source       VARCHAR     NOT NULL,  -- provenance of the import that last set this row ('file:x.csv', 'synthetic', 'alpaca', ...)
    first_seen   TIMESTAMPTZ NOT NULL,  -- when the symbol was first stored (UTC)
    updated_at   TIMESTAMPTZ NOT NULL   -- when any other column last changed (UTC); a re-import that changes nothing leaves it
);
COMMENT ON TABLE symbols IS 'asset class and calendar per symbol, set at import; grain symbol';
