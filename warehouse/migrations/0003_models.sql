-- Purpose: the model registry and everything training records: forecasts, per-cycle
-- training history and the individuals of the architecture search.

-- Grain: one row per model artifact.
CREATE TABLE models (
    model_id             VARCHAR     NOT NULL PRIMARY KEY,
    kind                 VARCHAR     NOT NULL,  -- 'dqn', 'xgb_forecaster', 'svm_allocator'
    symbol               VARCHAR,               -- the asset it trades or forecasts; null for portfolio models
    feature_schema_hash  VARCHAR     NOT NULL,  -- hash of the FeatureSpec it was trained with
    architecture         JSON,                  -- network genome / model structure
    params               JSON,                  -- training hyper-parameters
    metrics              JSON,                  -- out-of-sample metrics
    artifact_path        VARCHAR     NOT NULL,
    artifact_sha256      VARCHAR     NOT NULL,  -- checked before every load
    stage                VARCHAR     NOT NULL DEFAULT 'candidate',  -- candidate | production | archived
    created_at           TIMESTAMPTZ NOT NULL,
    promoted_at          TIMESTAMPTZ
);
COMMENT ON TABLE models IS 'model registry; grain model_id';

-- Grain: one row per (model_id, symbol, ts, horizon_minutes): a forecast made at ts.
CREATE TABLE forecasts (
    model_id              VARCHAR     NOT NULL,
    symbol                VARCHAR     NOT NULL,
    ts                    TIMESTAMPTZ NOT NULL,  -- when the forecast was made, from data known at ts
    horizon_minutes       INTEGER     NOT NULL,  -- 40320 = 4 weeks
    predicted_log_return  DOUBLE      NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (model_id, symbol, ts, horizon_minutes)
);
COMMENT ON TABLE forecasts IS 'point-in-time forecasts; grain (model_id, symbol, ts, horizon_minutes)';

-- Grain: one row per (run_id, cycle) of agent training.
CREATE TABLE training_runs (
    run_id       VARCHAR     NOT NULL,
    cycle        INTEGER     NOT NULL,
    model_id     VARCHAR,
    symbol       VARCHAR,
    final_money  DOUBLE,
    max_money    DOUBLE,
    loss         DOUBLE,
    epsilon      DOUBLE,
    steps        BIGINT,
    seconds      DOUBLE,
    recorded_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, cycle)
);
COMMENT ON TABLE training_runs IS 'per-cycle training history; grain (run_id, cycle)';

-- Grain: one row per (search_id, generation, individual) of the architecture search.
CREATE TABLE nas_individuals (
    search_id         VARCHAR     NOT NULL,
    generation        INTEGER     NOT NULL,
    individual        INTEGER     NOT NULL,
    genome            JSON        NOT NULL,
    genome_hash       VARCHAR     NOT NULL,
    fitness           DOUBLE,                -- mean over seeds; worst value for failed individuals
    fitness_std       DOUBLE,
    fitness_per_seed  DOUBLE[],
    train_seconds     DOUBLE,
    status            VARCHAR     NOT NULL,  -- ok | failed | timeout
    error             VARCHAR,
    created_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (search_id, generation, individual)
);
COMMENT ON TABLE nas_individuals IS 'architecture-search individuals; grain (search_id, generation, individual)';
