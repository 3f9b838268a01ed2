-- Purpose: split/dividend-adjusted stock history that stays on one basis (issue 18). Alpaca
-- serves history adjusted for the corporate actions it knows at request time; bars stored
-- before an action was known are re-based when it is learned, and the live stream's raw
-- bars (after the ex-date) then continue the series instead of jumping by a split ratio.
-- Grain: one row per (symbol, ex_date, kind): a split (value = new shares per old share)
-- or a cash dividend (value = cash per share), as first learned.
CREATE TABLE corporate_actions (
    symbol       VARCHAR     NOT NULL,
    ex_date      DATE        NOT NULL,
    kind         VARCHAR     NOT NULL,  -- split | dividend
    value        DOUBLE      NOT NULL,
    source       VARCHAR     NOT NULL,  -- 'alpaca'
    learned_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (symbol, ex_date, kind)
);
COMMENT ON TABLE corporate_actions IS 'stock splits and cash dividends learned from the bar source; grain (symbol, ex_date, kind)';

-- Grain: one row per (symbol, timeframe, ex_date, kind): the stored bars before the ex-date
-- multiplied by price_factor (volume by volume_factor) when the action was learned.
CREATE TABLE bar_adjustments (
    symbol         VARCHAR     NOT NULL,
    timeframe      VARCHAR     NOT NULL,
    ex_date        DATE        NOT NULL,
    kind           VARCHAR     NOT NULL,
    price_factor   DOUBLE      NOT NULL,
    volume_factor  DOUBLE      NOT NULL,
    bars           BIGINT      NOT NULL,  -- stored bars re-based
    applied_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (symbol, timeframe, ex_date, kind)
);
COMMENT ON TABLE bar_adjustments IS 'stored bars re-based onto a newly learned corporate action; grain (symbol, timeframe, ex_date, kind)';
