-- One row per running worker while DATABASE_CONNECTION_BUDGET is set: how many connections
-- it may hold (granted), how many it would use (wanted), the budget it was given, and until
-- when its share stands without renewal. Rows change only under the fleet's advisory lock
-- (see worker/src/fleet/lease.rs); a row whose lease expired is deleted by whoever sees it.
-- session_key: the advisory lock every pool connection of the worker holds (shared), so that
-- the backends of a worker whose lease expired can be found in pg_locks and ended.
CREATE TABLE webhook_worker_leases (
    worker_id   uuid        PRIMARY KEY,
    granted     integer     NOT NULL CHECK (granted >= 0),
    wanted      integer     NOT NULL CHECK (wanted >= 0),
    budget      integer     NOT NULL CHECK (budget >= 2),
    session_key bigint      NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
