-- Weeks (Monday 00:00 UTC, seven days) of the rollup, summed from their seven built days with the week's
-- click_pairs (ingest/pairs.py build_week, off the hot path): a 30-day ranking reads 3–4 week rows per value
-- and a few days instead of 30 day rows (top links, a month of cities), and unions a quarter of the sketches
-- (unique visitors). Counts and rankings only: a time series' buckets are days or shorter, or months a week
-- can straddle. The cube keeps no weeks (its 30 days are already few rows).
--
-- Measured before migration 0026 and dropped then (the planner ANDed the day table's BRIN index into the
-- read of the remaining days); measured again with the b-trees (loadtests/RESULTS.md, stop 17).
--
-- The same mark governs the week's pairs and its rollup rows (click_pairs_built, hours 168), and readers
-- check that a week's rollup rows still hold the clicks the hourly rollup holds now (api/services/
-- analytics.py built_pairs), else read its days.
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
-- a week's rows of every workspace, deleted when it is rebuilt (a b-tree: migration 0026)
CREATE INDEX click_rollup_weeks_week ON click_rollup_weeks (week);

-- Weeks built before this migration lack their rollup rows: the job rebuilds them (weeks_due), and readers
-- take their days meanwhile (their rollup check fails until then).
UPDATE click_pairs_built SET complete_at = NULL WHERE hours = 168;
