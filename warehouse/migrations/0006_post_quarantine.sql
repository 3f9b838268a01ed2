-- Purpose: posts that failed validation, kept with a reason instead of being dropped, and
-- an hourly sentiment view for people. A post's sentiment may only influence a decision
-- from created_utc + the configured lag (see models/sentiment.py); the view is for reading,
-- the point-in-time features are computed by warehouse/posts.py.

-- Grain: one row per (post_id, reason) as received.
CREATE TABLE reddit_posts_quarantine (
    post_id        VARCHAR     NOT NULL,  -- the id as received ('' when missing)
    reason         VARCHAR     NOT NULL,  -- machine-readable: missing_id, empty_text, future_created, ...
    detail         VARCHAR,               -- human-readable explanation
    subreddit      VARCHAR,
    title          VARCHAR,               -- first 300 characters as received
    created_utc    TIMESTAMPTZ,
    source         VARCHAR,
    quarantined_at TIMESTAMPTZ NOT NULL,  -- first time this post was rejected
    PRIMARY KEY (post_id, reason)
);
COMMENT ON TABLE reddit_posts_quarantine IS 'posts rejected by validation, kept with a reason; grain (post_id, reason)';

-- Grain: one row per (symbol, UTC hour, model, source) by the hour posts were made
-- (event time, not the hour they became usable). symbol '*' is every post.
CREATE VIEW v_sentiment_hourly AS
WITH exploded AS (
    SELECT date_trunc('hour', p.created_utc) AS hour, p.source, s.model, s.compound,
           unnest(list_concat(coalesce(s.symbols, []::VARCHAR[]), ['*'])) AS symbol
    FROM reddit_posts p JOIN post_sentiment s USING (post_id)
)
SELECT symbol, hour, model, source,
       count(*)                                        AS posts,
       avg(compound)                                   AS mean_compound,
       avg(CASE WHEN compound >= 0.05 THEN 1 ELSE 0 END)  AS pos_share,
       avg(CASE WHEN compound <= -0.05 THEN 1 ELSE 0 END) AS neg_share
FROM exploded
GROUP BY ALL;
