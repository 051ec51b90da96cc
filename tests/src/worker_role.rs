//! A login role of its own for a test's worker, so that a test can revoke its login (a rotated
//! password or a revoked grant look the same to the worker) without touching other tests.

use anyhow::Context as _;

use crate::TestStack;

/// `url` with `user` in place of its user.
pub fn with_user(url: &str, user: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url.split_once("://").context("a URL with a scheme")?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    Ok(format!("{scheme}://{user}@{host}"))
}

impl TestStack {
    /// A login role named after the stack, with what the worker needs on its database (the
    /// grants go with the database; the role itself is cluster-wide).
    pub async fn create_worker_role(&self) -> anyhow::Result<String> {
        let role = self.name.replace('-', "_");
        for statement in [
            format!(r#"CREATE ROLE "{role}" LOGIN"#),
            format!(r#"GRANT SELECT, INSERT ON webhook_events, webhook_event_keys TO "{role}""#),
            format!(r#"GRANT SELECT ON webhook_maintenance TO "{role}""#),
            format!(r#"GRANT SELECT ON _sqlx_migrations TO "{role}""#),
        ] {
            sqlx::query(&statement)
                .execute(&self.db)
                .await
                .with_context(|| statement.clone())?;
        }
        Ok(role)
    }

    /// `NOLOGIN` for `role`, and its sessions ended; returns how many were.
    pub async fn revoke_login(&self, role: &str) -> anyhow::Result<usize> {
        sqlx::query(&format!(r#"ALTER ROLE "{role}" NOLOGIN"#))
            .execute(&self.db)
            .await
            .context("NOLOGIN")?;
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
        )
        .bind(role)
        .fetch_all(&self.db)
        .await
        .context("ending the role's sessions")?;
        Ok(ended.len())
    }

    /// `LOGIN` for `role` again.
    pub async fn restore_login(&self, role: &str) -> anyhow::Result<()> {
        sqlx::query(&format!(r#"ALTER ROLE "{role}" LOGIN"#))
            .execute(&self.db)
            .await
            .context("LOGIN")?;
        Ok(())
    }
}
