-- Purpose: Reddit posts as fetched and their sentiment scores. A post's event time
-- is created_utc; it may only influence decisions from created_utc + a configured lag.

-- Grain: one row per Reddit post id.
CREATE TABLE reddit_posts (
    post_id       VARCHAR     NOT NULL PRIMARY KEY,  -- Reddit base-36 id (without t3_)
    subreddit     VARCHAR     NOT NULL,
    title         VARCHAR     NOT NULL,
    body          VARCHAR,
    author        VARCHAR,
    score         BIGINT,
    num_comments  BIGINT,
    url           VARCHAR,
    created_utc   TIMESTAMPTZ NOT NULL,  -- event time (when the post was made)
    fetched_at    TIMESTAMPTZ NOT NULL,  -- ingest time (last fetch)
    source        VARCHAR     NOT NULL   -- 'reddit' or 'synthetic'
);
COMMENT ON TABLE reddit_posts IS 'Reddit submissions; grain post_id; source=synthetic marks generated posts';

-- Grain: one row per (post_id, model): a post scored by one sentiment model version.
CREATE TABLE post_sentiment (
    post_id    VARCHAR     NOT NULL,
    model      VARCHAR     NOT NULL,  -- e.g. 'vader+finance-v1'
    compound   DOUBLE      NOT NULL,  -- VADER compound in [-1, 1]
    positive   DOUBLE,
    neutral    DOUBLE,
    negative   DOUBLE,
    symbols    VARCHAR[],             -- symbols the post mentions (tickers, cashtags, coin names)
    scored_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (post_id, model)
);
COMMENT ON TABLE post_sentiment IS 'sentiment of each post per model version; grain (post_id, model)';
