-- Purpose: every change of a registry stage (candidate -> production -> archived), who made
-- it and what it replaced, so a production model can be rolled back to its predecessor;
-- grain: one row per (change_id), one model's stage change.
-- Stages change only through warehouse/registry.py: `tradingml promote`, the nightly
-- promotion gate, `tradingml demote` and `tradingml rollback`; re-registering a model
-- (training it again) keeps its stage and writes no row here.

CREATE SEQUENCE promotion_history_seq START 1;

-- Grain: one row per change_id (ascending in the order the changes were made).
CREATE TABLE promotion_history (
    change_id          BIGINT      NOT NULL PRIMARY KEY DEFAULT nextval('promotion_history_seq'),
    changed_at         TIMESTAMPTZ NOT NULL,  -- when the change was made (UTC; the gate's run time for the gate)
    model_id           VARCHAR     NOT NULL,  -- models.model_id whose stage changed
    kind               VARCHAR     NOT NULL,  -- 'dqn', 'genome', 'xgb_forecaster', 'svm_allocator'
    symbol             VARCHAR,               -- models.symbol ('CRYPTO' for the allocator)
    from_stage         VARCHAR     NOT NULL,  -- candidate | production | archived
    to_stage           VARCHAR     NOT NULL,  -- candidate | production | archived
    actor              VARCHAR     NOT NULL,  -- 'promote' (command), 'gate' (nightly-retrain), 'demote', 'rollback'
    replaced_model_id  VARCHAR,               -- on a change to production: the production model it replaced (archived in the same transaction)
    reason             VARCHAR                -- why, in words (the gate's verdict, 'replaced by ...', a user's note)
);
COMMENT ON TABLE promotion_history IS 'every registry stage change (promote, gate, demote, rollback); grain change_id';

-- Grain: one row per stage change, newest first; for people reading the history.
CREATE VIEW v_promotion_history AS
SELECT h.change_id, h.changed_at, h.kind, h.symbol, h.model_id,
       h.from_stage || ' -> ' || h.to_stage AS change,
       h.actor, h.replaced_model_id, h.reason,
       TRY_CAST(json_extract_string(m.metrics, '$.objective') AS DOUBLE) AS objective
FROM promotion_history h
LEFT JOIN models m USING (model_id)
ORDER BY h.change_id DESC;
