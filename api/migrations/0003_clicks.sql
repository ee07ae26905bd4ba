-- Click analytics: enriched clicks partitioned by month, plus an hourly rollup kept by ingest.
--
-- Written only by ingest (COPY into a temp table, then INSERT … ON CONFLICT DO NOTHING on
-- (event_id, ts)); read by api/services/analytics.py. Unknown text dimensions are '' rather
-- than NULL so the raw table and the rollup group the same way.

CREATE TABLE clicks (
    event_id         uuid NOT NULL,
    ts               timestamptz NOT NULL,
    -- NULL only for orphan hits on a domain no workspace owns (the default domain)
    workspace_id     text,
    link_id          text,                  -- NULL: hit on a slug that does not exist (orphan)
    domain           text NOT NULL,
    slug             text NOT NULL,
    url              text,
    rule             text,
    method           text NOT NULL DEFAULT 'GET',
    status           smallint NOT NULL DEFAULT 302,
    country          text NOT NULL DEFAULT '',   -- ISO 3166-1 alpha-2
    region           text NOT NULL DEFAULT '',
    city             text NOT NULL DEFAULT '',
    continent        text NOT NULL DEFAULT '',   -- two-letter code: EU, NA, …
    latitude         real,
    longitude        real,
    device           text NOT NULL DEFAULT '',   -- desktop, mobile, tablet, tv, console, bot, other
    device_brand     text NOT NULL DEFAULT '',
    device_model     text NOT NULL DEFAULT '',
    browser          text NOT NULL DEFAULT '',
    browser_version  text NOT NULL DEFAULT '',
    os               text NOT NULL DEFAULT '',
    os_version       text NOT NULL DEFAULT '',
    referer          text NOT NULL DEFAULT '',   -- host, without "www."; '' for direct
    referer_url      text NOT NULL DEFAULT '',
    utm_source       text NOT NULL DEFAULT '',
    utm_medium       text NOT NULL DEFAULT '',
    utm_campaign     text NOT NULL DEFAULT '',
    utm_term         text NOT NULL DEFAULT '',
    utm_content      text NOT NULL DEFAULT '',
    bot              boolean NOT NULL DEFAULT false,
    qr               boolean NOT NULL DEFAULT false,
    -- keyed hash of (UTC day, ip, user agent): counts unique visitors without keeping the IP
    visitor          bigint NOT NULL,
    ip               inet,                       -- only when H0P_STORE_RAW_IP is on
    ua               text NOT NULL DEFAULT '',
    lang             text NOT NULL DEFAULT ''
) PARTITION BY RANGE (ts);

-- Redelivered events (at-least-once Kafka) hit this and are dropped: exactly-once storage.
CREATE UNIQUE INDEX clicks_event ON clicks (event_id, ts);
CREATE INDEX clicks_workspace_ts ON clicks (workspace_id, ts);
CREATE INDEX clicks_link_ts ON clicks (link_id, ts) WHERE link_id IS NOT NULL;

-- Hourly counts per workspace and dimension value, updated in the same transaction as the
-- insert (from the rows actually inserted, never from duplicates). Serves unfiltered and
-- bot/qr-filtered analytics, whatever the range, from a few thousand rows instead of millions.
CREATE TABLE click_rollups (
    workspace_id  text NOT NULL,
    dim           text NOT NULL,       -- 'count', 'country', 'city', … or 'link'
    hour          timestamptz NOT NULL,
    value         text NOT NULL,       -- '' for unknown (and for dim 'count')
    bot           boolean NOT NULL,
    qr            boolean NOT NULL,
    clicks        bigint NOT NULL,
    PRIMARY KEY (workspace_id, dim, hour, value, bot, qr)
) WITH (fillfactor = 80);  -- room on each page: the increments of a batch are HOT updates (no index write)

-- Monthly partitions (UTC months) named clicks_YYYY_MM, created on demand by ingest and a
-- month ahead. The advisory lock serialises concurrent ingest processes creating the same one.
CREATE FUNCTION clicks_ensure_partition(month_start date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('clicks_%s', to_char(month_start, 'YYYY_MM'));
    -- bounds computed on timestamp (no zone) then placed in UTC: independent of the session TimeZone
    lower_ts timestamptz := date_trunc('month', month_start)::timestamp AT TIME ZONE 'UTC';
    upper_ts timestamptz := (date_trunc('month', month_start) + interval '1 month')::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('h0p:clicks_partitions'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF clicks FOR VALUES FROM (%L) TO (%L)',
        part, lower_ts, upper_ts
    );
    RETURN true;
END
$$;

SELECT clicks_ensure_partition((now() AT TIME ZONE 'UTC')::date);
SELECT clicks_ensure_partition(((now() AT TIME ZONE 'UTC') + interval '1 month')::date);
