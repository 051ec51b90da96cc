//! How to reach PostgreSQL: the connection string, the pool, and the deadlines and session
//! timeouts of every connection the worker writes or leases on (`worker run` and
//! `worker migrate` share them).

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use super::ConfigError;

/// How to reach PostgreSQL.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection string, e.g. postgres://user:password@host:5432/db?sslmode=require.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// Size of the connection pool: the most connections the worker opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value = "4")]
    pub database_max_connections: NonZeroU32,

    /// Prepared statements cached per connection. Set 0 behind RDS Proxy or PgBouncer in
    /// transaction mode: cached statements pin each client to one database connection. 0 also
    /// leaves out the session lock DATABASE_CONNECTION_BUDGET puts on each connection (so the
    /// connections of a frozen worker cannot be ended by the others).
    #[arg(long, env = "DATABASE_STATEMENT_CACHE_CAPACITY", default_value_t = 100)]
    pub database_statement_cache_capacity: usize,

    /// Seconds to wait for a connection (connecting and logging in included) before the
    /// database counts as unreachable and the circuit opens.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_SECONDS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub database_acquire_timeout_seconds: u64,

    /// Milliseconds one statement may run before PostgreSQL cancels it (its
    /// `statement_timeout`, sent at connect; a cancelled write counts as overload). 0: not
    /// sent (behind PgBouncer, which refuses startup options: set it on the role instead).
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub database_statement_timeout_ms: u64,

    /// Milliseconds a statement may wait for a lock before PostgreSQL gives up (its
    /// `lock_timeout`): a lock held on the table pauses the worker instead of stalling it.
    /// 0: not sent.
    #[arg(long, env = "DATABASE_LOCK_TIMEOUT_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub database_lock_timeout_ms: u64,

    /// Milliseconds a session may sit idle inside a transaction before PostgreSQL ends it (its
    /// `idle_in_transaction_session_timeout`): a frozen or vanished worker never holds locks
    /// for longer. 0: not sent.
    #[arg(long, env = "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub database_idle_in_transaction_timeout_ms: u64,

    /// Seconds a worker session may be silent before PostgreSQL probes it with TCP keepalives
    /// (its `tcp_keepalives_idle`; probes every third of it, three times), so the server
    /// frees the connection of a worker that vanished (a partition, a dead host) within about
    /// twice this, not the operating system's two hours. 0: not sent.
    #[arg(long, env = "DATABASE_TCP_KEEPALIVE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=7_200))]
    pub database_tcp_keepalive_seconds: u64,

    /// Milliseconds one database call (a whole write transaction, a probe, a look-up) may
    /// take once it has its connection; past it the connection is thrown away and the
    /// database counts as unreachable (the circuit opens). Must be above
    /// DATABASE_STATEMENT_TIMEOUT_MS, so that a slow statement is cancelled by PostgreSQL
    /// (overload) before the worker gives up on the connection (unreachable).
    #[arg(long, env = "DATABASE_TRANSACTION_TIMEOUT_MS", default_value_t = 4_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub database_transaction_timeout_ms: u64,
}

impl DatabaseArgs {
    /// The acquire timeout as a duration.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.database_acquire_timeout_seconds)
    }

    /// The deadline of one database call, checked against the statement timeout.
    pub fn transaction_timeout(&self) -> Result<Duration, ConfigError> {
        if self.database_statement_timeout_ms > 0
            && self.database_transaction_timeout_ms <= self.database_statement_timeout_ms
        {
            return Err(ConfigError::TransactionTimeout {
                transaction_ms: self.database_transaction_timeout_ms,
                statement_ms: self.database_statement_timeout_ms,
            });
        }
        Ok(Duration::from_millis(self.database_transaction_timeout_ms))
    }

    /// The session settings sent at connect (`-c name=value` startup options, timeouts in
    /// milliseconds, keepalives in seconds), those set to 0 left out.
    pub fn session_timeouts(&self) -> Vec<(&'static str, u64)> {
        let keepalive = self.database_tcp_keepalive_seconds;
        [
            ("statement_timeout", self.database_statement_timeout_ms),
            ("lock_timeout", self.database_lock_timeout_ms),
            (
                "idle_in_transaction_session_timeout",
                self.database_idle_in_transaction_timeout_ms,
            ),
            ("tcp_keepalives_idle", keepalive),
            ("tcp_keepalives_interval", keepalive.div_ceil(3)),
            ("tcp_keepalives_count", if keepalive > 0 { 3 } else { 0 }),
        ]
        .into_iter()
        .filter(|(_, value)| *value > 0)
        .collect()
    }
}

/// A database URL that never shows its password in `Debug` output or logs.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The full URL, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}
