//! The PostgreSQL pool and the embedded migrations.

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseArgs;

/// The schema migrations, embedded in the binary at build time.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Builds the bounded pool. Connections open lazily, never more than the configured maximum.
pub(crate) fn pool(args: &DatabaseArgs) -> anyhow::Result<PgPool> {
    // sqlx's parse error never contains the URL, so the password cannot leak through it.
    let options: PgConnectOptions = args
        .database_url
        .expose()
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL connection string")?;
    let options = options
        .application_name("scalable-webhook-worker")
        .statement_cache_capacity(args.database_statement_cache_capacity);
    Ok(PgPoolOptions::new()
        .max_connections(args.database_max_connections.get())
        .min_connections(0)
        .acquire_timeout(args.acquire_timeout())
        .connect_lazy_with(options))
}

/// Applies every pending migration.
pub(crate) async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")
}

/// Fails unless every embedded migration has been applied, so `run` never writes into a
/// schema it does not know.
pub(crate) async fn ensure_migrated(pool: &PgPool) -> anyhow::Result<()> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await
            .context("connecting to DATABASE_URL")?;
    let applied: Vec<i64> = if table_exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
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

/// Runs the handler's own idempotent migration on one connection.
pub(crate) async fn migrate_handler<H: crate::handler::Handler>(
    pool: &PgPool,
    handler: &H,
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await.context("connecting to DATABASE_URL")?;
    handler
        .migrate(&mut conn)
        .await
        .context("applying the handler's migration")
}
