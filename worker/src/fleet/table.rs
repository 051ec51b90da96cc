//! The lease table, `webhook_worker_leases`: the statements of the heartbeat (under the
//! fleet's advisory lock, or on this worker's own row when the lock is busy), the limits each
//! of its transactions sets on itself, the end of an expired worker's backends, and the
//! session lock every pool connection of a worker takes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tokio::time::Instant;

use crate::fleet::allocation::Lease as Row;
use crate::fleet::timing::ServerLimits;

/// The fleet-wide advisory lock under which lease rows change ("swleases").
pub(crate) const FLEET_LOCK: i64 = 0x7377_6c65_6173_6573;
/// `application_name` of every worker connection.
pub(crate) const APPLICATION_NAME: &str = "scalable-webhook-worker";
/// The statement each pool connection runs when it opens: the worker's session lock.
pub(crate) const SESSION_LOCK: &str = "SELECT pg_advisory_lock_shared($1)";
/// SQLSTATE of a lock wait ended by `lock_timeout` (lock_not_available).
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Sets `limits` for the rest of the transaction (`SET LOCAL`), whatever the connection's
/// own settings: PostgreSQL itself then ends a lock wait, a statement or an idle transaction
/// of the lease that goes on too long, also when the worker is frozen or gone.
pub(crate) async fn limit(
    conn: &mut PgConnection,
    limits: ServerLimits,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('lock_timeout', $1, true),
                set_config('statement_timeout', $2, true),
                set_config('idle_in_transaction_session_timeout', $3, true)",
    )
    .bind(format!("{}ms", limits.lock_ms))
    .bind(format!("{}ms", limits.statement_ms))
    .bind(format!("{}ms", limits.idle_ms))
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the fleet's lock for the rest of the transaction; `false` if another session held it
/// for all of the transaction's `lock_timeout` (the transaction is then aborted: roll it back).
pub(crate) async fn lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let locked = sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(FLEET_LOCK)
        .execute(conn)
        .await;
    match locked {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(error))
            if error.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
        {
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// Deletes the rows whose lease expired (under the fleet's lock); returns the database's
/// `now()` and the deleted rows' ids and session keys.
pub(crate) async fn expire(
    conn: &mut PgConnection,
) -> Result<(DateTime<Utc>, Vec<(String, i64)>), sqlx::Error> {
    let expired = sqlx::query_as(
        "DELETE FROM webhook_worker_leases WHERE expires_at < now()
         RETURNING worker_id::text, session_key",
    )
    .fetch_all(&mut *conn)
    .await?;
    let now = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *conn)
        .await?;
    Ok((now, expired))
}

/// Every live row.
pub(crate) async fn read(conn: &mut PgConnection) -> Result<Vec<Row>, sqlx::Error> {
    let rows: Vec<(String, i32, i32, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT worker_id::text, granted, wanted, budget, started_at FROM webhook_worker_leases",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(worker_id, granted, wanted, budget, started_at)| Row {
            worker_id,
            granted: u32::try_from(granted).unwrap_or(0),
            wanted: u32::try_from(wanted).unwrap_or(0),
            budget: u32::try_from(budget).unwrap_or(0),
            started_at,
        })
        .collect())
}

/// Inserts or renews `row` (its `started_at` is kept), valid for `lease` from now.
pub(crate) async fn write(
    conn: &mut PgConnection,
    row: &Row,
    session_key: i64,
    lease: Duration,
) -> Result<(), sqlx::Error> {
    let int = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
    sqlx::query(
        "INSERT INTO webhook_worker_leases
             (worker_id, granted, wanted, budget, session_key, expires_at)
         VALUES ($1::uuid, $2, $3, $4, $5, now() + $6 * interval '1 millisecond')
         ON CONFLICT (worker_id) DO UPDATE SET granted = EXCLUDED.granted,
             wanted = EXCLUDED.wanted, budget = EXCLUDED.budget, expires_at = EXCLUDED.expires_at",
    )
    .bind(&row.worker_id)
    .bind(int(row.granted))
    .bind(int(row.wanted))
    .bind(int(row.budget))
    .bind(session_key)
    .bind(lease.as_millis() as f64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Renews the row of `worker_id` for `lease` from now, without the fleet's lock and without
/// changing its grant, if it is still valid and grants at least `held`; `false` otherwise
/// (it expired, or others deleted it). Nobody can have taken this worker's share while its
/// row stood: every grant is worked out against the live rows, this one included.
pub(crate) async fn renew_own(
    conn: &mut PgConnection,
    worker_id: uuid::Uuid,
    held: u32,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query(
        "UPDATE webhook_worker_leases
         SET expires_at = now() + $3 * interval '1 millisecond'
         WHERE worker_id = $1::uuid AND expires_at >= now() AND granted >= $2",
    )
    .bind(worker_id.to_string())
    .bind(i32::try_from(held).unwrap_or(i32::MAX))
    .bind(lease.as_millis() as f64)
    .execute(conn)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Deletes the row of `worker_id` (it leaves).
pub(crate) async fn delete(
    conn: &mut PgConnection,
    worker_id: uuid::Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM webhook_worker_leases WHERE worker_id = $1::uuid")
        .bind(worker_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends the backends of the workers whose session keys are `keys` (their leases expired),
/// among those of this role, and waits up to `wait` for them to be gone, so that the
/// connections they held are free before anyone grows into them; returns how many.
pub(crate) async fn end_backends(
    conn: &mut PgConnection,
    keys: &[i64],
    wait: Duration,
) -> Result<usize, sqlx::Error> {
    let ended: Vec<i32> = sqlx::query_scalar(
        // MATERIALIZED: every filter applies before anything is terminated.
        "WITH targets AS MATERIALIZED (
             SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND ((l.classid::int8 << 32) | l.objid::int8) = ANY($1)
               AND a.usename = current_user AND a.application_name = $2
               AND a.pid <> pg_backend_pid()
         )
         SELECT pid FROM targets WHERE pg_terminate_backend(pid)",
    )
    .bind(keys)
    .bind(APPLICATION_NAME)
    .fetch_all(&mut *conn)
    .await?;
    let deadline = Instant::now() + wait;
    while !ended.is_empty() && Instant::now() < deadline {
        // Within a transaction pg_stat_activity is a snapshot taken at its first read.
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await?;
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&ended)
                .fetch_one(&mut *conn)
                .await?;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(ended.len())
}
