//! The PostgreSQL pool (without a connection budget), the door (a single connection outside
//! any pool) and the embedded migrations.

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};

use crate::config::DatabaseArgs;
use crate::fleet::APPLICATION_NAME;

/// Pause between attempts to open the door.
const CONNECT_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// The schema migrations, embedded in the binary at build time.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How every worker connection connects: DATABASE_URL, the application name and the
/// statement cache.
pub(crate) fn connect_options(args: &DatabaseArgs) -> anyhow::Result<PgConnectOptions> {
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

/// Builds the bounded pool (without a connection budget). Connections open lazily, never
/// more than the configured maximum.
pub(crate) fn pool(args: &DatabaseArgs) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(args.database_max_connections.get())
        .min_connections(0)
        .acquire_timeout(args.acquire_timeout())
        .connect_lazy_with(connect_options(args)?))
}

/// Opens one connection outside the pool (the door, see `fleet/allocation.rs`), trying again
/// for up to DATABASE_ACQUIRE_TIMEOUT_SECONDS as the pool would.
pub(crate) async fn connect(args: &DatabaseArgs) -> anyhow::Result<PgConnection> {
    let options = connect_options(args)?;
    let deadline = tokio::time::Instant::now() + args.acquire_timeout();
    loop {
        match PgConnection::connect_with(&options).await {
            Ok(conn) => return Ok(conn),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(error).context("connecting to DATABASE_URL");
            }
            Err(error) => {
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
pub(crate) async fn migrate_handler<H: crate::handler::Handler>(
    conn: &mut PgConnection,
    handler: &H,
) -> anyhow::Result<()> {
    handler
        .migrate(conn)
        .await
        .context("applying the handler's migration")
}
