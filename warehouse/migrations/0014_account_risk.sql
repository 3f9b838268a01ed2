-- Purpose: one risk view of a broker account shared by every trading flow on it (issue 18:
-- live-trading and crypto-trading trade one Alpaca account; each had its own daily-loss
-- switch and none saw the whole account).
-- Grain: one row per account ('paper' or 'live'; replays have no account-wide view).
CREATE TABLE account_limits (
    account             VARCHAR     NOT NULL PRIMARY KEY,
    daily_loss_limit    DOUBLE      NOT NULL,  -- fraction of the day's starting account equity
    max_gross_exposure  DOUBLE      NOT NULL,  -- largest sum of |position value| / account equity
    updated_at          TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE account_limits IS 'account-wide risk limits read by every trading flow; grain account';

-- Grain: one row per (account, UTC day): the broker's account equity the first time any
-- flow looked that day -- the base of the account-wide daily loss, the same for every flow.
CREATE TABLE account_days (
    account       VARCHAR     NOT NULL,
    day           DATE        NOT NULL,
    start_equity  DOUBLE      NOT NULL,
    recorded_at   TIMESTAMPTZ NOT NULL,
    recorded_by   VARCHAR     NOT NULL,  -- the run that looked first
    PRIMARY KEY (account, day)
);
COMMENT ON TABLE account_days IS 'account equity at the start of each UTC day, first seen by any flow; grain (account, day)';
