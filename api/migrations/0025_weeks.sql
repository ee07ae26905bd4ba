-- Weeks (Monday 00:00 UTC, seven days) of the rollup and of click_pairs, summed from their seven built days
-- (ingest/pairs.py build_week, off the hot path): a 30-day ranking reads 3–4 week rows per value and a
-- few days instead of 30 day rows (top links of one device, a tag's browsers, unique top links), and
-- unions a quarter of the sketches. Only counts and rankings read them: a time series' buckets are days
-- or shorter, or months a week can straddle.
--
-- click_pairs holds the week rows as hours = 168, and click_pairs_built marks the week (hours 168)
-- once all seven days were built complete (0024); readers check that a week's rows still hold the
-- clicks the hourly rollup holds now (api/services/analytics.py built_pairs), else read its days.
-- A day rebuilt after its week (late clicks) makes the job rebuild the week.
CREATE TABLE click_rollup_weeks (
    workspace_id  text NOT NULL,
    dim           text NOT NULL,
    week          timestamptz NOT NULL,   -- a Monday, 00:00 UTC
    value         text NOT NULL,
    bot           boolean NOT NULL,
    qr            boolean NOT NULL,
    clicks        bigint NOT NULL,
    visitors      hll,                    -- the union of the days' sketches (count, country, device, link)
    PRIMARY KEY (workspace_id, dim, week, value, bot, qr)
);
-- one value's weeks (one link's year), as click_rollup_days_value
CREATE INDEX click_rollup_weeks_value ON click_rollup_weeks (workspace_id, dim, value, week);
-- a week's rows of every workspace, deleted when it is rebuilt
CREATE INDEX click_rollup_weeks_week ON click_rollup_weeks USING brin (week);
