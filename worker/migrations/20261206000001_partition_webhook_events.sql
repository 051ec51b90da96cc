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
    state      text        NOT NULL CHECK (state IN ('detaching', 'exported', 'dropped')),
    object_key text,
    rows       bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row: what the latest `worker maintain` applied, for the workers' gauges.
CREATE TABLE webhook_maintenance (
    singleton    boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    retention    interval,
    last_success timestamptz
);
INSERT INTO webhook_maintenance DEFAULT VALUES;

-- Where `worker migrate-partitions` stands (one row once it has started).
CREATE TABLE webhook_partition_migration (
    singleton     boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    step          text        NOT NULL,
    cursor_source text,
    cursor_id     text,
    cutover       timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Whoever may write webhook_events may write the keys the insert now writes beside it.
DO $$
DECLARE
    grant_row record;
BEGIN
    FOR grant_row IN
        SELECT DISTINCT a.grantee::regrole::text AS grantee
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'webhook_events'::regclass AND a.privilege_type = 'INSERT' AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT SELECT, INSERT ON webhook_event_keys TO %s', grant_row.grantee);
        EXECUTE format('GRANT SELECT ON webhook_maintenance TO %s', grant_row.grantee);
    END LOOP;
END
$$;

-- An empty webhook_events becomes the partitioned table at once (its grants kept); one with
-- rows stays as it is (everything works on it) until `worker migrate-partitions` moves it.
DO $$
DECLARE
    grants text[];
    statement text;
BEGIN
    IF NOT EXISTS (SELECT FROM webhook_events) THEN
        SELECT coalesce(array_agg(format('GRANT %s ON webhook_events TO %s', a.privilege_type,
                                         CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)), '{}')
        INTO grants
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'webhook_events'::regclass AND a.grantee <> c.relowner;
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
        FOREACH statement IN ARRAY grants LOOP
            EXECUTE statement;
        END LOOP;
    END IF;
END
$$;

-- Where each `worker replay` run stands, by name, so that a run stopped midway goes on from
-- its last committed batch (updated in the same transaction as the batch).
CREATE TABLE webhook_replay_cursors (
    name           text        PRIMARY KEY,
    filter         jsonb       NOT NULL,
    partition_from text,
    source         text,
    id             text,
    received_at    timestamptz,
    done           bigint      NOT NULL DEFAULT 0,
    refused        bigint      NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
