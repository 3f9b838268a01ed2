-- Purpose: walk-forward evaluations (`tradingml evaluate`, models/walk_forward.py): the run with
-- its statistical verdict, each policy's metrics per test fold and overall, and the per-bar
-- out-of-sample positions and returns behind them, so every number in the report can be
-- queried and re-derived; grain: see each table.
-- Written only by warehouse/evaluations.py; an evaluation run again with the same config over
-- the same bars has the same eval_id and rewrites its rows (idempotent).

-- Grain: one row per eval_id.
CREATE TABLE evaluations (
    eval_id        VARCHAR     NOT NULL PRIMARY KEY,  -- sha256 of (symbol, timeframe, config, folds, data fingerprint)
    created_at     TIMESTAMPTZ NOT NULL,  -- when this result was first written (UTC)
    symbol         VARCHAR     NOT NULL,  -- the traded symbol
    timeframe      VARCHAR     NOT NULL,  -- bar timeframe (1Day, 1Hour, 1Min, ...)
    data_sources   VARCHAR     NOT NULL,  -- provenance of the bars, comma-separated ('skfolio:sp500_index', 'synthetic', ...)
    config         JSON        NOT NULL,  -- the evaluation's config (folds, seeds, training, costs), keys sorted
    n_folds        INTEGER     NOT NULL,
    n_seeds        INTEGER     NOT NULL,
    test_start     TIMESTAMPTZ NOT NULL,  -- first out-of-sample bar (UTC)
    test_end       TIMESTAMPTZ NOT NULL,  -- last out-of-sample bar (UTC)
    n_trials       INTEGER     NOT NULL,  -- trials counted by the deflated Sharpe ratio (trials table, this run's seeds included)
    promoted       BOOLEAN     NOT NULL,  -- the gate's verdict on the seed-mean agent: all of SPA, DSR, drawdown passed
    spa_p          DOUBLE,                -- p-value of "the agent beats every baseline" (intersection-union of stationary-bootstrap SPA tests)
    dsr            DOUBLE,                -- deflated Sharpe ratio of the seed-mean agent
    sharpe         DOUBLE,                -- annualised Sharpe ratio of the seed-mean agent, all folds chained
    sharpe_diff    DOUBLE,                -- its Sharpe minus the best baseline's (annualised)
    sharpe_diff_lo DOUBLE,                -- 95% stationary-bootstrap interval of sharpe_diff, low end
    sharpe_diff_hi DOUBLE,                -- and high end
    reference      VARCHAR,               -- the baseline sharpe_diff is taken against ('baseline:<key>')
    reasons        JSON        NOT NULL,  -- the verdict's lines in words
    report_path    VARCHAR                -- the HTML report written with it
);
COMMENT ON TABLE evaluations IS 'walk-forward evaluation runs and their verdicts; grain eval_id';

-- Grain: one row per (eval_id, scope, fold, policy, seed); scope 'fold' rows cover one test
-- fold, scope 'overall' rows (fold -1) every fold chained.
CREATE TABLE evaluation_metrics (
    eval_id       VARCHAR NOT NULL,
    scope         VARCHAR NOT NULL CHECK (scope IN ('fold', 'overall')),
    fold          INTEGER NOT NULL,  -- 0, 1, ... in time order; -1 for scope 'overall'
    label         VARCHAR NOT NULL,  -- the test period ('2005') or 'all'
    policy        VARCHAR NOT NULL,  -- 'agent' (per seed), 'agent_mean' (seeds averaged), or a baseline key
    seed          INTEGER NOT NULL,  -- the agent's seed; -1 for baselines and agent_mean
    n_obs         INTEGER NOT NULL,  -- bars
    total_return  DOUBLE,
    cagr          DOUBLE,
    sharpe        DOUBLE,            -- annualised; null where undefined (flat)
    sortino       DOUBLE,
    max_drawdown  DOUBLE,            -- positive fraction, per bar
    calmar        DOUBLE,
    exposure      DOUBLE,            -- share of bars holding a position
    turnover      DOUBLE,            -- sum of |position change| per year
    PRIMARY KEY (eval_id, scope, fold, policy, seed)
);
COMMENT ON TABLE evaluation_metrics IS 'per-fold and overall metrics of each policy in an evaluation; grain (eval_id, scope, fold, policy, seed)';

-- Grain: one row per (eval_id, policy, seed, ts): a bar of a test fold.
CREATE TABLE evaluation_returns (
    eval_id   VARCHAR     NOT NULL,
    policy    VARCHAR     NOT NULL,
    seed      INTEGER     NOT NULL,  -- -1 for baselines
    ts        TIMESTAMPTZ NOT NULL,  -- bar start (UTC)
    fold      INTEGER     NOT NULL,
    position  DOUBLE      NOT NULL,  -- held after the bar's decision (0 flat, 1 all in)
    ret       DOUBLE      NOT NULL,  -- simple return of the book over the bar, costs paid
    PRIMARY KEY (eval_id, policy, seed, ts)
);
COMMENT ON TABLE evaluation_returns IS 'per-bar out-of-sample positions and returns of each policy; grain (eval_id, policy, seed, ts)';
