-- Indexes behind GET /links on large workspaces: every sort the API offers, and substring search.
--
-- Sorts are (workspace_id, key, id) so a page is an index range, never a sort of the workspace;
-- last_clicked_at is nullable: DESC NULLS LAST read backwards is exactly ASC NULLS FIRST.
CREATE INDEX links_workspace_clicks ON links (workspace_id, clicks DESC, id DESC);
CREATE INDEX links_workspace_last_clicked ON links (workspace_id, last_clicked_at DESC NULLS LAST, id DESC);

-- `search` matches a substring of slug, destination or title (ILIKE '%…%'): a trigram index on
-- the one expression the query uses. pg_trgm is a trusted extension (PostgreSQL 13+).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX links_search ON links USING gin (
    (slug COLLATE "default" || ' ' || url || ' ' || coalesce(title, '')) gin_trgm_ops
);

-- The unfiltered total of GET /links without counting the workspace's links on every call
-- (count(*) over 100,000 links is ~10 ms of Postgres CPU). Kept by statement triggers with
-- transition tables, so COPY and multi-row deletes (a domain deleted with force) pay once.
ALTER TABLE workspaces ADD COLUMN link_count bigint NOT NULL DEFAULT 0;
UPDATE workspaces w SET link_count = (SELECT count(*) FROM links l WHERE l.workspace_id = w.id);

CREATE FUNCTION links_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workspaces w SET link_count = w.link_count + n.c
    FROM (SELECT workspace_id, count(*) AS c FROM inserted GROUP BY workspace_id) n
    WHERE w.id = n.workspace_id;
    RETURN NULL;
END $$;

CREATE FUNCTION links_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workspaces w SET link_count = w.link_count - d.c
    FROM (SELECT workspace_id, count(*) AS c FROM deleted GROUP BY workspace_id) d
    WHERE w.id = d.workspace_id;
    RETURN NULL;
END $$;

CREATE TRIGGER links_count_insert AFTER INSERT ON links
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION links_count_inserted();
CREATE TRIGGER links_count_delete AFTER DELETE ON links
    REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION links_count_deleted();

-- cache_sync.push deletes every outbox row of the keys it lands: find them by key, not by a
-- scan of a table whose dead rows pile up between vacuums.
CREATE INDEX cache_outbox_key ON cache_outbox (domain, slug, kind);
