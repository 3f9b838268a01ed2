-- Purpose: the trading ledger -- every decision, order, fill, equity point and
-- reconciliation difference, for replay, paper and live runs alike.

-- Grain: one row per decision (one policy evaluation for one symbol at one minute).
CREATE TABLE decisions (
    decision_id     VARCHAR     NOT NULL PRIMARY KEY,  -- deterministic: run, symbol, minute
    run_id          VARCHAR     NOT NULL,
    mode            VARCHAR     NOT NULL,  -- replay | paper | live | backtest
    symbol          VARCHAR     NOT NULL,
    ts              TIMESTAMPTZ NOT NULL,  -- decision time: close of the last bar it saw
    model_id        VARCHAR,
    inputs          JSON,                  -- feature values the policy saw
    q_values        DOUBLE[],
    action          VARCHAR     NOT NULL,  -- flat | hold | long
    allocation      DOUBLE,                -- target weight from the allocator, if any
    risk_verdict    VARCHAR     NOT NULL,  -- accepted | rejected | reduced
    risk_reason     VARCHAR,
    created_at      TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE decisions IS 'policy decisions; grain decision_id';

-- Grain: one row per order, keyed by our deterministic client_order_id.
CREATE TABLE orders (
    client_order_id  VARCHAR     NOT NULL PRIMARY KEY,
    broker_order_id  VARCHAR,
    decision_id      VARCHAR,
    mode             VARCHAR     NOT NULL,
    symbol           VARCHAR     NOT NULL,
    side             VARCHAR     NOT NULL,  -- buy | sell
    qty              DOUBLE      NOT NULL,
    order_type       VARCHAR     NOT NULL,
    limit_price      DOUBLE,
    time_in_force    VARCHAR,
    status           VARCHAR     NOT NULL,
    submitted_at     TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE orders IS 'orders sent to a broker; grain client_order_id';

-- Grain: one row per fill (execution) as reported by the broker.
CREATE TABLE fills (
    fill_id          VARCHAR     NOT NULL PRIMARY KEY,
    broker_order_id  VARCHAR,
    client_order_id  VARCHAR     NOT NULL,
    mode             VARCHAR     NOT NULL,
    symbol           VARCHAR     NOT NULL,
    side             VARCHAR     NOT NULL,
    qty              DOUBLE      NOT NULL,
    price            DOUBLE      NOT NULL,
    fee              DOUBLE      NOT NULL DEFAULT 0,
    ts               TIMESTAMPTZ NOT NULL,  -- execution time (event time)
    seen_via         VARCHAR                -- stream | rest | sim
);
COMMENT ON TABLE fills IS 'executions; grain fill_id';

-- Grain: one row per (account, ts).
CREATE TABLE equity (
    account          VARCHAR     NOT NULL,  -- 'paper', 'live' or 'replay:<run_id>'
    ts               TIMESTAMPTZ NOT NULL,
    cash             DOUBLE      NOT NULL,
    positions_value  DOUBLE      NOT NULL,
    equity           DOUBLE      NOT NULL,
    PRIMARY KEY (account, ts)
);
COMMENT ON TABLE equity IS 'account equity curve; grain (account, ts)';

-- Grain: one row per difference found between the warehouse and the broker.
CREATE TABLE reconciliation_events (
    event_id       VARCHAR     NOT NULL PRIMARY KEY,
    ts             TIMESTAMPTZ NOT NULL,
    account        VARCHAR     NOT NULL,
    symbol         VARCHAR,
    kind           VARCHAR     NOT NULL,  -- position_mismatch | unknown_order | missing_fill | ...
    warehouse_qty  DOUBLE,
    broker_qty     DOUBLE,
    action         VARCHAR,               -- what we did: adopted_broker, ...
    detail         VARCHAR
);
COMMENT ON TABLE reconciliation_events IS 'warehouse-vs-broker differences; grain event_id';
