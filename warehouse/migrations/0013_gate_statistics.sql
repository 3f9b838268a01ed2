-- Purpose: the statistics behind each promotion-gate verdict (issue 16: the gate tells skill from luck).
-- Agents are judged by models.evaluation.judge_candidate on per-bar held-out returns (SPA test
-- against the champion and the baselines, deflated Sharpe ratio over the recorded trials, a
-- drawdown margin); forecasters by a Hansen-Hodrick t-test of the out-of-fold rank IC that
-- accounts for overlapping labels. The allocator keeps the point rule: its columns stay null.
-- Every column is nullable: decisions made before this migration, and tests that do not
-- apply to a kind, have none.
-- Grain: unchanged, one row per (decided_at, candidate_id) of promotion_decisions.
ALTER TABLE promotion_decisions ADD COLUMN test VARCHAR;          -- which statistical rule decided: 'spa+dsr' (agents), 'hac_rank_ic' (forecasters); null: the point rule
ALTER TABLE promotion_decisions ADD COLUMN spa_p DOUBLE;          -- agents: intersection-union SPA p-value of "beats the champion and every baseline"
ALTER TABLE promotion_decisions ADD COLUMN dsr DOUBLE;            -- agents: deflated Sharpe ratio (probability the true Sharpe beats the best of n_trials lucky ones)
ALTER TABLE promotion_decisions ADD COLUMN n_trials BIGINT;       -- agents: trials counted by the deflation (rows of `trials` on the symbol, this candidate included)
ALTER TABLE promotion_decisions ADD COLUMN sharpe_diff DOUBLE;    -- agents: annualised Sharpe of the candidate minus the champion's (else the best baseline's)
ALTER TABLE promotion_decisions ADD COLUMN sharpe_diff_lo DOUBLE; -- agents: low end of its 95% stationary-bootstrap interval
ALTER TABLE promotion_decisions ADD COLUMN sharpe_diff_hi DOUBLE; -- agents: high end of that interval
ALTER TABLE promotion_decisions ADD COLUMN p_value DOUBLE;        -- forecasters: one-sided p of "out-of-fold rank IC > 0" (HAC, overlapping labels)
ALTER TABLE promotion_decisions ADD COLUMN n_obs BIGINT;          -- observations the test used: held-out bars (agents), out-of-fold rows (forecasters)
