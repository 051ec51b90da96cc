-- The pages a `worker replay` run with several writers has committed beyond its cursor: each
-- transaction of a replay records the key interval it replayed (inside one range of
-- received_at, named by its lower bound, '-infinity' for an open one) and its counts, in that
-- same transaction. The run moves the cursor over the unbroken prefix of committed pages and
-- deletes their rows, adding their counts to the cursor's, in one statement; a run resumed
-- after a stop skips every event inside a row left here, so none is run twice or skipped.
CREATE TABLE webhook_replay_done (
    cursor_name       text        NOT NULL REFERENCES webhook_replay_cursors (name) ON DELETE CASCADE,
    partition_from    timestamptz NOT NULL,
    first_source      text        NOT NULL,
    first_id          text        NOT NULL,
    first_received_at timestamptz NOT NULL,
    last_source       text        NOT NULL,
    last_id           text        NOT NULL,
    last_received_at  timestamptz NOT NULL,
    done              bigint      NOT NULL CHECK (done >= 0),
    refused           bigint      NOT NULL CHECK (refused >= 0),
    PRIMARY KEY (cursor_name, partition_from, first_source, first_id, first_received_at)
);
