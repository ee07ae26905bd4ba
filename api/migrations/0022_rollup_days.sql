-- The rollup and the cube per closed UTC day (docs/analytics.md): a 30-day answer reads 30 rows per value
-- instead of 720 hourly ones. Built from the hourly tables (not from the raw clicks) with the day's
-- click_pairs, in the same transaction (ingest/pairs.py build_period), so the one list of built periods
-- (click_pairs_built, hours 24) governs both; readers check that a day's rows still hold the clicks the
-- hourly rollup holds now (api/services/analytics.py built_pairs), else read its hours.
CREATE TABLE click_rollup_days (
    workspace_id  text NOT NULL,
    dim           text NOT NULL,
    day           timestamptz NOT NULL,   -- a UTC midnight
    value         text NOT NULL,
    bot           boolean NOT NULL,
    qr            boolean NOT NULL,
    clicks        bigint NOT NULL,
    visitors      hll,                    -- the union of the hours' sketches (count, country, device, link)
    PRIMARY KEY (workspace_id, dim, day, value, bot, qr)
);
-- one value's days (one link's year), as click_rollups_value
CREATE INDEX click_rollup_days_value ON click_rollup_days (workspace_id, dim, value, day);

CREATE TABLE click_cube_days (
    workspace_id  text NOT NULL,
    day           timestamptz NOT NULL,
    bot           boolean NOT NULL,
    qr            boolean NOT NULL,
    country       text NOT NULL,
    continent     text NOT NULL,
    device        text NOT NULL,
    browser       text NOT NULL,
    os            text NOT NULL,
    clicks        bigint NOT NULL,
    visitors      hll NOT NULL,
    PRIMARY KEY (workspace_id, day, bot, qr, country, continent, device, browser, os)
);

-- A day's rows of every workspace, deleted when it is rebuilt; its hours read to build it. The hourly
-- tables' rows arrive roughly in hour order, so block ranges summarise well (an update of clicks or
-- visitors changes no indexed column: the fold's updates stay HOT).
CREATE INDEX click_rollup_days_day ON click_rollup_days USING brin (day);
CREATE INDEX click_cube_days_day ON click_cube_days USING brin (day);
CREATE INDEX click_rollups_hour ON click_rollups USING brin (hour);
CREATE INDEX click_cube_hour ON click_cube USING brin (hour);

-- (Re)build the day rows of the given UTC days from the hourly rows (folded or not): the one statement the
-- job, rebuild_rollup and the backfill below run (ingest/pairs.py build_days). The hours' sketches are
-- unioned (all made with the same parameters, ingest/sketch.py). A later change of it is a
-- CREATE OR REPLACE in a new migration.
CREATE FUNCTION build_click_days(days timestamptz[]) RETURNS void LANGUAGE sql AS $$
    DELETE FROM click_rollup_days WHERE day = ANY(days);
    DELETE FROM click_cube_days WHERE day = ANY(days);
    -- one statement: the rollup's and the cube's days from one snapshot of the hours (a batch committed
    -- between two statements would be in one and not in the other)
    WITH rollup AS (
        INSERT INTO click_rollup_days (workspace_id, dim, day, value, bot, qr, clicks, visitors)
        SELECT workspace_id, dim, date_trunc('day', hour, 'UTC'), value, bot, qr, sum(clicks)::bigint,
               hll_union_agg(visitors)
        FROM click_rollup_totals
        WHERE hour >= (SELECT min(d) FROM unnest(days) AS d)
          AND hour < (SELECT max(d) FROM unnest(days) AS d) + interval '24 hours'
          AND date_trunc('day', hour, 'UTC') = ANY(days)
        GROUP BY 1, 2, 3, 4, 5, 6
    )
    INSERT INTO click_cube_days (workspace_id, day, bot, qr, country, continent, device, browser, os, clicks, visitors)
    SELECT workspace_id, date_trunc('day', hour, 'UTC'), bot, qr, country, continent, device, browser, os,
           sum(clicks)::bigint, hll_union_agg(visitors)
    FROM click_cube_totals
    WHERE hour >= (SELECT min(d) FROM unnest(days) AS d)
      AND hour < (SELECT max(d) FROM unnest(days) AS d) + interval '24 hours'
      AND date_trunc('day', hour, 'UTC') = ANY(days)
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;
$$;

-- Days already built (their pairs): their day rows, in one pass over the hourly tables.
SELECT build_click_days(ARRAY(SELECT period FROM click_pairs_built WHERE hours = 24));
ANALYZE click_rollup_days;
ANALYZE click_cube_days;
