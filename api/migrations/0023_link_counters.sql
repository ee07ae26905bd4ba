-- Link click counters in a narrow table of their own, beside `links`.
--
-- Ingest adds every batch's human clicks to the counters of the links clicked. On `links` that
-- update could never be HOT (the clicks and last-click sort indexes change) and so wrote a new
-- version of the wide row into all 8 of its indexes, the trigram index among them: ~48 µs of
-- Postgres CPU per updated link, against ~17 µs here (three btree indexes on a narrow row).
-- The API reads a link's counters from here (api/services/links.py) and sorts GET /links by
-- clicks or last click with the two indexes below: a page is still an index range.
CREATE TABLE link_counters (
    link_id          text PRIMARY KEY,
    workspace_id     text NOT NULL,      -- the link's (a link never changes workspace): the sorts' prefix
    clicks           bigint NOT NULL DEFAULT 0,
    last_clicked_at  timestamptz
);
-- The sorts of GET /links (as 0002's on links): last_clicked_at DESC NULLS LAST read backwards
-- is exactly ASC NULLS FIRST.
CREATE INDEX link_counters_clicks ON link_counters (workspace_id, clicks DESC, link_id DESC);
CREATE INDEX link_counters_last_clicked ON link_counters (workspace_id, last_clicked_at DESC NULLS LAST, link_id DESC);

-- Every link has its counters row: made and removed with the link by statement triggers with
-- transition tables (as links_count's in 0002), so COPY and multi-row deletes pay once.
CREATE FUNCTION links_counters_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO link_counters (link_id, workspace_id) SELECT id, workspace_id FROM inserted;
    RETURN NULL;
END $$;

CREATE FUNCTION links_counters_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM link_counters c USING deleted d WHERE c.link_id = d.id;
    RETURN NULL;
END $$;

-- An ingest process of the previous release (a rolling upgrade) still adds to links.clicks: its
-- increments are forwarded here rather than refused (it would dead-letter every batch). The old
-- columns stay for it, read by nothing; a later migration drops them with this trigger.
CREATE FUNCTION links_counters_forwarded() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE link_counters
    SET clicks = clicks + (NEW.clicks - OLD.clicks), last_clicked_at = GREATEST(last_clicked_at, NEW.last_clicked_at)
    WHERE link_id = NEW.id;
    RETURN NULL;
END $$;

-- The triggers first: their lock on links holds concurrent writers until this migration commits,
-- so the copy below misses no link and no increment.
CREATE TRIGGER links_counters_insert AFTER INSERT ON links
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION links_counters_inserted();
CREATE TRIGGER links_counters_delete AFTER DELETE ON links
    REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION links_counters_deleted();
CREATE TRIGGER links_counters_forward AFTER UPDATE OF clicks, last_clicked_at ON links FOR EACH ROW
    WHEN (NEW.clicks IS DISTINCT FROM OLD.clicks OR NEW.last_clicked_at IS DISTINCT FROM OLD.last_clicked_at)
    EXECUTE FUNCTION links_counters_forwarded();

-- An existing database: the counters move over; links' sort indexes on them go (what made the
-- old update non-HOT).
INSERT INTO link_counters (link_id, workspace_id, clicks, last_clicked_at)
SELECT id, workspace_id, clicks, last_clicked_at FROM links;
DROP INDEX links_workspace_clicks;
DROP INDEX links_workspace_last_clicked;
ANALYZE link_counters;
