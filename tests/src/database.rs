//! The test's database: creating it, and reading what the worker stored.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;

use crate::TestStack;

/// The server database used to create and drop test databases.
const DEFAULT_ADMIN_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

impl TestStack {
    /// Rows in `webhook_events`.
    pub async fn stored_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM webhook_events")
            .fetch_one(&self.db)
            .await
            .expect("counting rows")
    }

    /// Waits until `webhook_events` has at least `rows` rows; panics after `timeout`.
    pub async fn wait_for_rows(&self, rows: i64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stored = self.stored_count().await;
            if stored >= rows {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {stored} of {rows} rows after {timeout:?}; logs in {}",
                self.log_dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The URL of the server's `postgres` database (`TEST_DATABASE_URL`), for statements outside any
/// test's database (roles, `CREATE DATABASE`).
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_DATABASE_URL.to_owned())
}

pub(crate) async fn create_database(name: &str) -> anyhow::Result<String> {
    let admin_url = admin_database_url();
    let admin = PgPool::connect(&admin_url)
        .await
        .with_context(|| format!("connecting to {admin_url}"))?;
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&admin)
        .await?;
    admin.close().await;
    let (server, _) = admin_url
        .rsplit_once('/')
        .context("TEST_DATABASE_URL has no database name")?;
    Ok(format!("{server}/{name}"))
}
