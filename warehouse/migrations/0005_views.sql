-- Purpose: views for people -- the questions users ask of the warehouse in plain SQL.

-- Grain: one row per (symbol, timeframe, source): what bars the warehouse holds.
CREATE VIEW v_bar_coverage AS
SELECT symbol, timeframe, source,
       count(*)        AS bars,
       min(ts)         AS first_bar,
       max(ts)         AS last_bar,
       max(ingested_at) AS last_ingested_at
FROM bars
GROUP BY ALL;

-- Grain: one row per fill, with its order and decision.
CREATE VIEW v_trades AS
SELECT f.ts, f.mode, f.symbol, f.side, f.qty, f.price,
       f.qty * f.price AS notional, f.fee,
       f.fill_id, f.client_order_id, o.decision_id, d.model_id, d.run_id
FROM fills f
LEFT JOIN orders o USING (client_order_id)
LEFT JOIN decisions d ON d.decision_id = o.decision_id;

-- Grain: one row per (account, New York trading date).
CREATE VIEW v_daily_pnl AS
SELECT account,
       CAST(timezone('America/New_York', ts) AS DATE) AS day,
       arg_min(equity, ts) AS open_equity,
       arg_max(equity, ts) AS close_equity,
       arg_max(equity, ts) - arg_min(equity, ts) AS pnl,
       (arg_max(equity, ts) / nullif(arg_min(equity, ts), 0)) - 1 AS return
FROM equity
GROUP BY ALL;

-- Grain: one row per (mode, symbol) with a non-zero net quantity from fills.
CREATE VIEW v_positions AS
SELECT mode, symbol,
       sum(CASE side WHEN 'buy' THEN qty ELSE -qty END) AS qty,
       sum(CASE side WHEN 'buy' THEN qty * price ELSE -qty * price END) AS net_cost,
       max(ts) AS last_fill_at
FROM fills
GROUP BY ALL
HAVING abs(sum(CASE side WHEN 'buy' THEN qty ELSE -qty END)) > 1e-12;

-- Grain: one row per model, best objective first within each kind.
CREATE VIEW v_model_leaderboard AS
SELECT kind, symbol, model_id, stage,
       TRY_CAST(json_extract_string(metrics, '$.objective') AS DOUBLE)    AS objective,
       TRY_CAST(json_extract_string(metrics, '$.total_return') AS DOUBLE) AS total_return,
       TRY_CAST(json_extract_string(metrics, '$.max_drawdown') AS DOUBLE) AS max_drawdown,
       TRY_CAST(json_extract_string(metrics, '$.sharpe') AS DOUBLE)       AS sharpe,
       feature_schema_hash, created_at, promoted_at
FROM models
ORDER BY kind, objective DESC NULLS LAST;

-- Grain: one row per decision, with its order and the sum of its fills.
CREATE VIEW v_decision_ledger AS
SELECT d.decision_id, d.ts, d.mode, d.symbol, d.model_id, d.action, d.q_values,
       d.allocation, d.risk_verdict, d.risk_reason,
       o.client_order_id, o.broker_order_id, o.side, o.qty AS order_qty, o.status AS order_status,
       f.filled_qty, f.avg_fill_price, f.fees, f.fills
FROM decisions d
LEFT JOIN orders o ON o.decision_id = d.decision_id
LEFT JOIN (
    SELECT client_order_id,
           sum(qty) AS filled_qty,
           sum(qty * price) / nullif(sum(qty), 0) AS avg_fill_price,
           sum(fee) AS fees,
           count(*) AS fills
    FROM fills
    GROUP BY client_order_id
) f ON f.client_order_id = o.client_order_id;
