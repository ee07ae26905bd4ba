-- Rollup increments, appended by each ingest batch in its own transaction and folded into
-- click_rollups every few seconds by one ingest process (ingest/store.py).
--
-- Upserting the increments straight into click_rollups made concurrent ingest processes queue
-- on each other's row locks: every batch of a busy workspace touches the same (hour, dimension
-- value) rows, so a second process waited for the first one's commit (tests/ingest/test_store.py
-- shows the wait). An append takes no row lock. No index: the table only ever holds a few
-- seconds of increments, read whole by the fold and by analytics.
CREATE TABLE click_rollup_deltas (
    workspace_id  text NOT NULL,
    dim           text NOT NULL,
    hour          timestamptz NOT NULL,
    value         text NOT NULL,
    bot           boolean NOT NULL,
    qr            boolean NOT NULL,
    clicks        bigint NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000);  -- emptied every fold

-- What analytics reads: the folded hours plus the increments not folded yet. One statement sees
-- one snapshot, and a fold moves rows in one transaction: no click is counted twice or missed.
CREATE VIEW click_rollup_totals AS
    SELECT workspace_id, dim, hour, value, bot, qr, clicks FROM click_rollups
    UNION ALL
    SELECT workspace_id, dim, hour, value, bot, qr, clicks FROM click_rollup_deltas;
