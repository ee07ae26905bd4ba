-- Fast filtered and unique analytics (docs/analytics.md): an hourly cube over the low-cardinality
-- dimensions, and HyperLogLog sketches of the visitors in the cube and in four per-dimension rollups.
--
-- The hll extension (Debian: postgresql-15-hll; offered by the managed Postgres services and by
-- Citus) is required: `make run` and .ci/run install it when missing. Without it this migration
-- stops with a message saying so, before anything is changed.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'hll') THEN
        RAISE EXCEPTION 'H0p needs the PostgreSQL extension "hll" (HyperLogLog) for unique-visitor analytics'
            USING HINT = 'install it on the database server: apt-get install postgresql-15-hll '
                         '(or your provider''s hll extension), then run the migrations again';
    END IF;
END
$$;
CREATE EXTENSION IF NOT EXISTS hll;

-- One row per workspace, UTC hour and combination of the cube's dimensions: every click falls in
-- exactly one row, so any filter on these columns and any groupBy over them (or count, timeseries)
-- is a sum over this table. Each of these is a function of the visitor's address and user agent
-- (bot and qr aside), which keeps the combinations per hour few (hundreds, not thousands).
-- visitors: hll(log2m 13, regwidth 5, expthresh auto): the exact set of hashes up to 640 visitors,
-- then registers with about 1.15 % standard error (docs/analytics.md; a larger exact set made
-- unions of many small sketches 25 times slower). Every sketch of H0p is made with these
-- parameters: unions need them equal.
CREATE TABLE click_cube (
    workspace_id  text NOT NULL,
    hour          timestamptz NOT NULL,
    bot           boolean NOT NULL,
    qr            boolean NOT NULL,
    country       text NOT NULL,
    continent     text NOT NULL,
    device        text NOT NULL,
    browser       text NOT NULL,
    os            text NOT NULL,
    clicks        bigint NOT NULL,
    visitors      hll NOT NULL,
    PRIMARY KEY (workspace_id, hour, bot, qr, country, continent, device, browser, os)
) WITH (fillfactor = 80);

-- Appended by each ingest batch in the batch's transaction (as click_rollup_deltas, for the same
-- reason: an append takes no row lock); visitors are the batch's distinct visitor hashes of the
-- row, made a sketch when folded. Folded into click_cube with the rollup's fold.
CREATE TABLE click_cube_deltas (
    workspace_id  text NOT NULL,
    hour          timestamptz NOT NULL,
    bot           boolean NOT NULL,
    qr            boolean NOT NULL,
    country       text NOT NULL,
    continent     text NOT NULL,
    device        text NOT NULL,
    browser       text NOT NULL,
    os            text NOT NULL,
    clicks        bigint NOT NULL,
    visitors      bigint[] NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000);

-- What analytics reads; one statement sees each increment in exactly one of the two tables.
CREATE VIEW click_cube_totals AS
    SELECT workspace_id, hour, bot, qr, country, continent, device, browser, os, clicks, visitors FROM click_cube
    UNION ALL
    SELECT workspace_id, hour, bot, qr, country, continent, device, browser, os, clicks,
           (SELECT hll_add_agg(hll_hash_bigint(v), 13, 5, -1, 0) FROM unnest(d.visitors) AS v)
    FROM click_cube_deltas AS d;

-- Visitors beside the clicks in the per-dimension rollup, for the dimensions whose unique counts
-- are asked unfiltered (count, country, device, link): a country's month from the cube would
-- union hundreds of thousands of sketches. NULL for the other dimensions.
ALTER TABLE click_rollups ADD COLUMN visitors hll;
ALTER TABLE click_rollup_deltas ADD COLUMN visitors bigint[];
-- Ingest ships visitor hashes with the link rows only; the count, country and device rows' visitors
-- are those of the cube rows (country and device are cube columns): the third part, with no clicks.
CREATE OR REPLACE VIEW click_rollup_totals AS
    SELECT workspace_id, dim, hour, value, bot, qr, clicks, visitors FROM click_rollups
    UNION ALL
    SELECT workspace_id, dim, hour, value, bot, qr, clicks,
           CASE WHEN d.visitors IS NOT NULL
                THEN (SELECT hll_add_agg(hll_hash_bigint(v), 13, 5, -1, 0) FROM unnest(d.visitors) AS v) END
    FROM click_rollup_deltas AS d
    UNION ALL
    SELECT c.workspace_id, x.dim, c.hour, x.value, c.bot, c.qr, 0::bigint,
           hll_add_agg(hll_hash_bigint(v), 13, 5, -1, 0)
    FROM click_cube_deltas AS c
    CROSS JOIN LATERAL (VALUES ('count', ''), ('country', c.country), ('device', c.device)) AS x(dim, value)
    CROSS JOIN LATERAL unnest(c.visitors) AS v
    GROUP BY 1, 2, 3, 4, 5, 6;

-- One value's hours (one link's all-time, one city's month) without reading every value's rows.
CREATE INDEX click_rollups_value ON click_rollups (workspace_id, dim, value, hour);

-- The domain a click came on, as a rollup dimension of its own (the domain filter; orphans too).
INSERT INTO click_rollups (workspace_id, dim, hour, value, bot, qr, clicks)
SELECT workspace_id, 'domain', date_trunc('hour', ts, 'UTC'), domain, bot, qr, count(*)
FROM clicks WHERE workspace_id IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6;

-- Existing clicks: the cube and the visitors of the rollup rebuilt from the raw rows (as
-- ingest/store.py's rebuild does).
INSERT INTO click_cube (workspace_id, hour, bot, qr, country, continent, device, browser, os, clicks, visitors)
SELECT workspace_id, date_trunc('hour', ts, 'UTC'), bot, qr, country, continent, device, browser, os, count(*),
       hll_add_agg(hll_hash_bigint(visitor), 13, 5, -1, 0)
FROM clicks WHERE workspace_id IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;

UPDATE click_rollups AS r SET visitors = s.visitors
FROM (
    SELECT workspace_id, d.dim, date_trunc('hour', ts, 'UTC') AS hour, d.value, bot, qr,
           hll_add_agg(hll_hash_bigint(visitor), 13, 5, -1, 0) AS visitors
    FROM clicks CROSS JOIN LATERAL (VALUES ('count', ''), ('country', country), ('device', device),
                                           ('link', coalesce(link_id, ''))) AS d(dim, value)
    WHERE workspace_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6
) AS s
WHERE (r.workspace_id, r.dim, r.hour, r.value, r.bot, r.qr) = (s.workspace_id, s.dim, s.hour, s.value, s.bot, s.qr);
