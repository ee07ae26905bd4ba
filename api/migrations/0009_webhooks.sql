-- Webhooks (Standard Webhooks): endpoints, the event outbox, and the delivery log.
--
-- Written by api/services/webhooks.py (endpoints, test and retry), by the link and domain
-- services (webhook_events, in the transaction of the change), by ingest (webhook_events of
-- type link.clicked, in the transaction that stores the click) and by `h0p webhooks`
-- (webhooks/: fan-out of events to deliveries, attempts, pruning).

CREATE TABLE webhooks (
    id                     text PRIMARY KEY,
    workspace_id           text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name                   text NOT NULL DEFAULT '',
    url                    text NOT NULL,
    events                 text[] NOT NULL,
    -- scope filters: none set = every link of the workspace; else a link in any of them
    link_ids               text[] NOT NULL DEFAULT '{}',
    folder_ids             text[] NOT NULL DEFAULT '{}',
    tag_ids                text[] NOT NULL DEFAULT '{}',
    include_bots           boolean NOT NULL DEFAULT false,
    -- whsec_… ; the previous secret keeps signing beside it until previous_secret_until
    secret                 text NOT NULL,
    previous_secret        text,
    previous_secret_until  timestamptz,
    disabled               boolean NOT NULL DEFAULT false,
    disabled_reason        text,
    disabled_at            timestamptz,
    -- first failed attempt since the last success: the endpoint is disabled when it gets too old
    failing_since          timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_workspace ON webhooks (workspace_id, created_at DESC, id DESC);

-- The transactional outbox: an event is recorded with the change that caused it, and only when
-- the workspace has an enabled webhook for its type (no endpoint, no row). The delivery
-- process turns each row into one delivery per matching webhook and deletes it, in one transaction.
CREATE TABLE webhook_events (
    id              bigserial PRIMARY KEY,
    workspace_id    text NOT NULL,
    type            text NOT NULL,
    link_id         text,
    data            jsonb,              -- the event's data (link.*, domain.*)
    click_event_id  uuid,               -- link.clicked: the stored click (clicks (event_id, ts))
    click_ts        timestamptz,
    occurred_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id               text PRIMARY KEY,  -- msg_…, the webhook-id header (the same on every attempt)
    webhook_id       text NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_type       text NOT NULL,
    body             text NOT NULL,     -- the exact bytes signed and sent, on every attempt
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         jsonb NOT NULL DEFAULT '[]',
    attempt_count    int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,       -- pending: when the next attempt is due
    -- an attempt is in flight until then: no other sender takes it (a sender that died lets it expire)
    leased_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
