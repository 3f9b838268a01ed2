-- Purpose: every promotion-gate decision of nightly-retrain, with the numbers it was made on; grain (decided_at, candidate_id).
-- A candidate becomes production only if, on out-of-sample data, its objective beats the
-- reference's by more than objective_margin AND its max drawdown exceeds the reference's
-- by at most drawdown_margin. The reference is the champion (the production model of the
-- same kind and symbol, evaluated on the same data) or, with no champion, a naive baseline.

-- Grain: one row per (decided_at, candidate_id): one candidate judged by one gate run.
CREATE TABLE promotion_decisions (
    decided_at              TIMESTAMPTZ NOT NULL,  -- when the gate run started (UTC); one value per nightly run
    candidate_id            VARCHAR     NOT NULL,  -- models.model_id of the candidate
    kind                    VARCHAR     NOT NULL,  -- 'dqn', 'xgb_forecaster', 'svm_allocator'
    symbol                  VARCHAR     NOT NULL,  -- traded/forecast symbol; 'CRYPTO' for the allocator
    flow_run_id             VARCHAR,               -- the Prefect flow run that decided
    objective               VARCHAR     NOT NULL,  -- what was compared, e.g. 'total_return - 1.0 * max_drawdown'
    candidate_objective     DOUBLE,
    candidate_max_drawdown  DOUBLE,                -- positive fraction; null where it does not apply (forecasters)
    reference               VARCHAR     NOT NULL,  -- 'champion' or 'baseline:<name>' (buy_and_hold, zero_forecast, equal_weight)
    reference_id            VARCHAR,               -- the champion's model_id; null for a baseline
    reference_objective     DOUBLE,
    reference_max_drawdown  DOUBLE,
    baseline                VARCHAR     NOT NULL,  -- the naive baseline, recorded even when a champion decided
    baseline_objective      DOUBLE,
    baseline_max_drawdown   DOUBLE,
    objective_margin        DOUBLE      NOT NULL,  -- the candidate must beat reference_objective by more than this
    drawdown_margin         DOUBLE,                -- its drawdown may exceed the reference's by at most this (absolute)
    beats_objective         BOOLEAN     NOT NULL,
    drawdown_ok             BOOLEAN     NOT NULL,
    passed                  BOOLEAN     NOT NULL,  -- beats_objective AND drawdown_ok
    promoted                BOOLEAN     NOT NULL,  -- passed, the best passing candidate of its kind and symbol, and promotion enabled
    reason                  VARCHAR     NOT NULL,  -- the verdict in words
    eval_start              TIMESTAMPTZ,           -- first out-of-sample time the numbers cover
    eval_end                TIMESTAMPTZ,           -- end (exclusive for agents and the allocator; last row for forecasters)
    details                 JSON,                  -- anything else the decision used (folds, notes, baselines)
    PRIMARY KEY (decided_at, candidate_id)
);
COMMENT ON TABLE promotion_decisions IS 'promotion-gate decisions of nightly-retrain with their numbers; grain (decided_at, candidate_id)';
