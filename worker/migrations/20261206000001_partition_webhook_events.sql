-- Time partitions (see the README, "The table"). A unique key on a partitioned table must
-- contain the partition key, so the dedup of provider retries moves to an unpartitioned key
-- table: one row per (source, id) for DEDUP_HORIZON, written in the same statement as the
-- event (worker/src/db/events.rs).
CREATE TABLE webhook_event_keys (
    source      text        NOT NULL,
    id          text        NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (source, id)
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.02);

-- What `worker maintain` did to each partition it detached, so that a run cut short
-- (a detach left pending, a drop not done) is finished by the next.
CREATE TABLE webhook_partition_log (
    partition  text        PRIMARY KEY,
    range_from timestamptz,
    range_to   timestamptz,
    state      text        NOT NULL CHECK (state IN ('detaching', 'dropped')),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row: what the latest `worker maintain` applied, for the workers' gauges.
CREATE TABLE webhook_maintenance (
    singleton    boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    retention    interval,
    last_success timestamptz
);
INSERT INTO webhook_maintenance DEFAULT VALUES;

-- An empty webhook_events becomes the partitioned table at once; one with rows stays as it
-- is (everything works on it) until `worker migrate-partitions` moves it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM webhook_events) THEN
        DROP TABLE webhook_events;
        CREATE TABLE webhook_events (
            source       text        NOT NULL,
            id           text        NOT NULL,
            received_at  timestamptz NOT NULL,
            stored_at    timestamptz NOT NULL DEFAULT now(),
            headers      jsonb       NOT NULL,
            content_type text,
            body         bytea       NOT NULL,
            payload      jsonb,
            PRIMARY KEY (source, id, received_at)
        ) PARTITION BY RANGE (received_at);
        -- Rows arrive in received_at order: a BRIN index costs next to nothing to keep.
        CREATE INDEX webhook_events_received_at_idx ON webhook_events USING brin (received_at);
    END IF;
END
$$;
