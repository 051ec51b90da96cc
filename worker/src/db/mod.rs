//! The connect options of the worker's connections (its pool is in `db/connections.rs`),
//! single connections outside any pool (for migrations and checks at start, and the lease's
//! registration connection), and the embedded migrations.
//!
//! Every connection the worker writes on carries its session timeouts as startup options
//! (`statement_timeout`, `lock_timeout`, `idle_in_transaction_session_timeout`, see
//! `DatabaseArgs`), so that PostgreSQL itself ends what a frozen or vanished worker left
//! behind. Migrations run on connections without them ([`admin_options`]): an index build may
//! take minutes.

pub(crate) mod connections;
pub(crate) mod errors;
pub(crate) mod events;
pub(crate) mod handler;
pub(crate) mod partition_keeper;
pub(crate) mod payload_column;
pub(crate) mod store;
pub(crate) mod write_error;

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};

use crate::config::DatabaseArgs;
use crate::fleet::APPLICATION_NAME;

/// Pause between attempts to open a single connection.
const CONNECT_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// The schema migrations, embedded in the binary at build time.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How every connection the worker writes or leases on connects: [`admin_options`] and the
/// session timeouts.
pub(crate) fn connect_options(args: &DatabaseArgs) -> anyhow::Result<PgConnectOptions> {
    let timeouts = args.session_timeouts();
    let options = admin_options(args)?;
    Ok(if timeouts.is_empty() {
        options
    } else {
        options.options(timeouts)
    })
}

/// How migrations connect: DATABASE_URL, the application name and the statement cache,
/// without session timeouts.
pub(crate) fn admin_options(args: &DatabaseArgs) -> anyhow::Result<PgConnectOptions> {
    // sqlx's parse error never contains the URL, so the password cannot leak through it.
    let options: PgConnectOptions = args
        .database_url
        .expose()
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL connection string")?;
    Ok(options
        .application_name(APPLICATION_NAME)
        .statement_cache_capacity(args.database_statement_cache_capacity))
}

/// Opens one connection outside the pool for migrations and start-up checks (without session
/// timeouts), trying again for up to DATABASE_ACQUIRE_TIMEOUT_SECONDS as the pool would, each
/// attempt within that time.
pub(crate) async fn connect(args: &DatabaseArgs) -> anyhow::Result<PgConnection> {
    let options = admin_options(args)?;
    let deadline = tokio::time::Instant::now() + args.acquire_timeout();
    loop {
        let attempt = tokio::time::timeout_at(deadline, PgConnection::connect_with(&options)).await;
        match attempt {
            Ok(Ok(conn)) => return Ok(conn),
            Err(_) => anyhow::bail!(
                "connecting to DATABASE_URL: no answer within DATABASE_ACQUIRE_TIMEOUT_SECONDS ({:?})",
                args.acquire_timeout()
            ),
            Ok(Err(error)) if tokio::time::Instant::now() >= deadline => {
                return Err(error).context("connecting to DATABASE_URL");
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "connecting to DATABASE_URL failed; trying again");
                tokio::time::sleep(CONNECT_RETRY).await;
            }
        }
    }
}

/// Applies every pending migration.
pub(crate) async fn migrate(conn: &mut PgConnection) -> anyhow::Result<()> {
    MIGRATOR
        .run(conn)
        .await
        .context("applying database migrations")
}

/// Fails unless every embedded migration has been applied, so `run` never writes into a
/// schema it does not know.
pub(crate) async fn ensure_migrated(conn: &mut PgConnection) -> anyhow::Result<()> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .context("connecting to DATABASE_URL")?;
    let applied: Vec<i64> = if table_exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *conn)
            .await
            .context("reading applied migrations")?
    } else {
        Vec::new()
    };
    let pending: Vec<i64> = MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    anyhow::ensure!(
        pending.is_empty(),
        "the database schema is not up to date (pending migrations {pending:?}); run `worker migrate` or set RUN_MIGRATIONS=true"
    );
    Ok(())
}

/// Runs the handler's own idempotent migration.
pub(crate) async fn migrate_handler<H: crate::db::handler::Handler>(
    conn: &mut PgConnection,
    handler: &H,
) -> anyhow::Result<()> {
    handler
        .migrate(conn)
        .await
        .context("applying the handler's migration")
}
