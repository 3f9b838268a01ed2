-- Purpose: every evaluated trial -- one agent, forecaster, allocator or genome configuration
-- tried on one dataset and data range -- with its out-of-sample Sharpe ratio, so that the
-- deflated Sharpe ratio (models/evaluation.py) knows how many configurations were tried on a
-- dataset (N) and how far their Sharpe ratios spread (V[SR]); grain: one row per trial_id.
-- Written only by warehouse/trials.py (idempotent: the same trial recorded twice is one row).

-- Grain: one row per trial_id.
CREATE TABLE trials (
    trial_id          VARCHAR     NOT NULL PRIMARY KEY,  -- sha256 of (kind, dataset, data_start, data_end, config, genome, seed): the same trial always gets the same id
    kind              VARCHAR     NOT NULL CHECK (kind IN ('agent', 'forecaster', 'allocator', 'genome')),
    dataset           VARCHAR     NOT NULL,  -- the symbol ('SPY', 'BTC/USD', 'CRYPTO' for the allocator) or dataset name it was evaluated on
    data_start        TIMESTAMPTZ NOT NULL,  -- first time of the evaluated (out-of-sample) range (UTC)
    data_end          TIMESTAMPTZ NOT NULL,  -- end of that range (UTC), as the caller defines it (last bar or exclusive end)
    config            JSON        NOT NULL,  -- the trial's configuration (hyperparameters), keys sorted
    genome            JSON,                  -- the architecture genome for searched networks; null otherwise
    seed              BIGINT,                -- random seed of the trial; null when it had none
    sharpe            DOUBLE,                -- annualised Sharpe ratio of its out-of-sample returns; null where undefined
    periods_per_year  DOUBLE      NOT NULL,  -- the annualisation of sharpe (252 stock days, 365 crypto days, ...), to convert it back per period
    n_obs             INTEGER     NOT NULL CHECK (n_obs >= 0),  -- number of returns the Sharpe ratio was computed on
    created_at        TIMESTAMPTZ NOT NULL   -- when the trial was first recorded (UTC); a re-record of the same result keeps it
);
COMMENT ON TABLE trials IS 'evaluated trials with their out-of-sample Sharpe, for the deflated Sharpe ratio; grain trial_id';
