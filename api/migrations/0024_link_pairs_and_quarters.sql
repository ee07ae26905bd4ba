-- Two more kinds of rows, built with each closed period's pairs (ingest/pairs.py build_period, off
-- ingest's hot path, in the same transaction):
--
-- 1. Link pairs in click_pairs: every cube dimension paired with the link (bdim = 'link', bvalue = the
--    link's id, '' for a click of no link), with a visitors sketch for country and device. They answer
--    a ranking of one link, tag or folder by a cube dimension and the top links of one cube value.
-- 2. click_quarters: the workspace's clicks per UTC quarter hour, with a visitors sketch. A time
--    series in a zone whose buckets start inside UTC hours (Asia/Kolkata +05:30, Asia/Kathmandu +05:45,
--    Australia/Adelaide +09:30/+10:30) reads the hours a bucket starts in as their four quarters
--    instead of their raw rows.
CREATE TABLE click_quarters (
    workspace_id  text NOT NULL,
    quarter       timestamptz NOT NULL,   -- start of a UTC quarter hour
    bot           boolean NOT NULL,
    qr            boolean NOT NULL,
    clicks        bigint NOT NULL,
    visitors      hll NOT NULL,           -- log2m 13, regwidth 5, as every sketch
    PRIMARY KEY (workspace_id, quarter, bot, qr)
);
-- a period's rows of every workspace, deleted when it is rebuilt
CREATE INDEX click_quarters_quarter ON click_quarters USING brin (quarter);

-- A period built before this migration has neither. complete_at = built_at marks the periods built
-- with both: the build sets the two in one transaction (one now()). A period built earlier has NULL
-- here, and one rebuilt by an ingest process of the previous release during a rolling upgrade (its
-- build deletes the period's pairs, link rows included, and sets built_at only) no longer has the two
-- equal. Readers take link pairs and quarters of marked periods only; the job rebuilds the others,
-- newest first, a few per run.
ALTER TABLE click_pairs_built ADD COLUMN complete_at timestamptz;
