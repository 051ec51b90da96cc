-- One row per webhook event, keyed by (source, id) so that redelivered messages and
-- provider retries of one delivery are stored once.
CREATE TABLE webhook_events (
    source       text        NOT NULL,
    id           text        NOT NULL,
    received_at  timestamptz NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    headers      jsonb       NOT NULL,
    content_type text,
    body         bytea       NOT NULL,
    payload      jsonb,
    PRIMARY KEY (source, id)
);

CREATE INDEX webhook_events_received_at_idx ON webhook_events (received_at);
