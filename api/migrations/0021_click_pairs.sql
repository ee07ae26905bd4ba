-- Pairs of dimensions per closed UTC day, and per hour for the last two days (docs/analytics.md,
-- ingest/pairs.py): built from the raw rows of each closed period by a background job (off
-- ingest's per-click path) and by rebuild_rollup after bulk loads.
--
-- A row counts the clicks of one period with adim = avalue and bdim = bvalue: adim is a cube
-- dimension (country, continent, device, browser, os), bdim a high-cardinality one (region,
-- city, referer, referer_url, utm_*, domain), each unordered pair stored once and read in either
-- direction. bdim = '' (bvalue = ''): adim alone, with a sketch of its visitors (the dimensions
-- whose click_rollups rows keep none), for unique visitors filtered by that dimension.
CREATE TABLE click_pairs (
    workspace_id  text NOT NULL,
    period        timestamptz NOT NULL,   -- start of the UTC day or hour
    hours         smallint NOT NULL,      -- 24: a UTC day; 1: an hour
    adim          text NOT NULL,
    avalue        text NOT NULL,
    bdim          text NOT NULL,
    bvalue        text NOT NULL,
    bot           boolean NOT NULL,
    qr            boolean NOT NULL,
    clicks        bigint NOT NULL,
    visitors      hll                     -- single-dimension rows only (log2m 13, regwidth 5, as every sketch)
);
-- filter on a (cities of mobile clicks), and on b (countries of one referrer)
CREATE INDEX click_pairs_a ON click_pairs (workspace_id, adim, bdim, avalue, hours, period);
CREATE INDEX click_pairs_b ON click_pairs (workspace_id, bdim, adim, bvalue, hours, period) WHERE bdim <> '';
-- a period's rows, deleted when it is rebuilt or (hours) when its day replaces them
CREATE INDEX click_pairs_period ON click_pairs USING brin (period);

-- The periods built (for every workspace): readers take pairs for these, raw rows for the rest.
CREATE TABLE click_pairs_built (
    period    timestamptz NOT NULL,
    hours     smallint NOT NULL,
    built_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (period, hours)
);
