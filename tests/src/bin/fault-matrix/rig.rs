//! The whole system for one row: a fresh TestStack (queue with maxReceiveCount 5 and a 30 s
//! visibility), the proxies the faults go through (PostgreSQL for the worker; SQS for ingest
//! and the worker; S3 for the worker), ingest and the workers, and the URL the providers post
//! to.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use e2e_tests::database::admin_database_url;
use e2e_tests::fault_proxy::FaultProxy;
use e2e_tests::faults::{SOURCE, write_sources_file};
use e2e_tests::pg_proxy::PgProxy;
use e2e_tests::queues::sqs_endpoint;
use e2e_tests::worker_role::with_user;
use e2e_tests::{QueueOptions, Service, TestStack};
use tokio::sync::RwLock;

use crate::rows::Row;

/// The GitHub source of the slow-upload flood (its forged uploads are refused).
const GITHUB_SOURCE: &str =
    "\n[sources.github]\nscheme = \"github\"\nsecret_env = [\"GITHUB_SECRET\"]\n";
/// Bodies above this go to S3 in the rows with large webhooks.
const OFFLOAD_THRESHOLD: &str = "100000";

/// One row's system.
pub(crate) struct Rig {
    /// The queues and the database.
    pub(crate) stack: TestStack,
    /// Between the workers and PostgreSQL.
    pub(crate) database: PgProxy,
    /// Between ingest, the workers and SQS.
    pub(crate) sqs: FaultProxy,
    /// Between the workers and S3.
    pub(crate) s3: FaultProxy,
    /// The running ingest.
    pub(crate) ingest: Service,
    /// The running workers.
    pub(crate) workers: Vec<Service>,
    /// Where the providers post.
    pub(crate) url: Arc<RwLock<String>>,
    /// The worker's own role (the revoked-login row).
    pub(crate) role: Option<String>,
    ingest_settings: Vec<(String, String)>,
    worker_settings: Vec<(String, String)>,
    sources_file: PathBuf,
}

/// Borrowed pairs of owned settings, as the spawn functions take them.
fn borrowed(settings: &[(String, String)]) -> Vec<(&str, &str)> {
    settings
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// Owned pairs.
fn owned(settings: &[(&str, &str)]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

impl Rig {
    /// Starts the system `row` needs.
    pub(crate) async fn start(row: Row) -> anyhow::Result<Self> {
        let options = QueueOptions {
            max_receive_count: 5,
            visibility_timeout: 30,
            fifo: false,
        };
        let stack = TestStack::with_queues(&format!("fault-matrix-{}", row.name()), options).await;
        let database = PgProxy::start(&stack.database_url).await;
        let sqs = FaultProxy::start(&sqs_endpoint()).await;
        let s3 = FaultProxy::start(&sqs_endpoint()).await;
        let sources_file = write_sources_file(GITHUB_SOURCE)?;
        let sources = sources_file.to_str().context("temp path is not UTF-8")?;
        let (sqs_url, s3_url, direct) = (sqs.url(), s3.url(), sqs_endpoint());
        let mut ingest_settings = owned(&[
            ("SOURCES_FILE", sources),
            ("GITHUB_SECRET", "fault-matrix-github-secret"),
            ("AWS_ENDPOINT_URL", &sqs_url),
            ("AWS_ENDPOINT_URL_S3", &direct),
            ("SHUTDOWN_GRACE_SECONDS", "5"),
            ("RETRY_AFTER_SECONDS", "1"),
        ]);
        if row.needs_s3() {
            let bucket = stack.create_bucket().await;
            ingest_settings.extend(owned(&[
                ("LARGE_PAYLOAD_BUCKET", &bucket),
                ("LARGE_PAYLOAD_THRESHOLD_BYTES", OFFLOAD_THRESHOLD),
            ]));
        }
        let role = if row == Row::LoginRevoked {
            Some(stack.create_worker_role().await?)
        } else {
            None
        };
        let database_url = match &role {
            Some(role) => with_user(database.url(), role)?,
            None => database.url().to_owned(),
        };
        let mut worker_settings = owned(&[
            ("DATABASE_URL", &database_url),
            ("AWS_ENDPOINT_URL", &sqs_url),
            ("AWS_ENDPOINT_URL_S3", &s3_url),
            ("WORKER_CONCURRENCY", "4"),
            ("DATABASE_MAX_CONNECTIONS", "4"),
            ("SHUTDOWN_GRACE_SECONDS", "5"),
        ]);
        if row == Row::FleetLock {
            worker_settings.extend(owned(&[("DATABASE_CONNECTION_BUDGET", "8")]));
        }
        let ingest = stack.spawn_ingest(&borrowed(&ingest_settings)).await;
        let url = Arc::new(RwLock::new(ingest.url(&format!("/webhooks/{SOURCE}"))));
        let mut rig = Self {
            stack,
            database,
            sqs,
            s3,
            ingest,
            workers: Vec::new(),
            url,
            role,
            ingest_settings,
            worker_settings,
            sources_file,
        };
        for _ in 0..row.workers() {
            let worker = rig.spawn_worker().await;
            rig.workers.push(worker);
        }
        Ok(rig)
    }

    /// Starts a worker with the row's settings.
    pub(crate) async fn spawn_worker(&self) -> Service {
        self.stack
            .spawn_worker(&borrowed(&self.worker_settings))
            .await
    }

    /// Kills the first worker with SIGKILL and starts a new one in its place.
    pub(crate) async fn kill_worker(&mut self) {
        if !self.workers.is_empty() {
            self.workers.remove(0).kill().await;
        }
        let worker = self.spawn_worker().await;
        self.workers.push(worker);
    }

    /// Kills ingest with SIGKILL, starts a new one on new ports and, once it is healthy,
    /// moves the providers to it (meanwhile they retry against the dead one).
    pub(crate) async fn kill_ingest(&mut self) -> String {
        self.ingest.signal(nix::sys::signal::Signal::SIGKILL);
        let new = self
            .stack
            .spawn_ingest(&borrowed(&self.ingest_settings))
            .await;
        let old = std::mem::replace(&mut self.ingest, new);
        old.kill().await;
        let new_url = self.ingest.url(&format!("/webhooks/{SOURCE}"));
        *self.url.write().await = new_url.clone();
        new_url
    }

    /// The logs of the workers and of ingest, each cut to its last `lines` lines.
    pub(crate) fn log_tails(&self, lines: usize) -> String {
        let mut text = String::new();
        for (n, worker) in self.workers.iter().enumerate() {
            let tail = e2e_tests::faults::tail(&worker.log(), lines);
            text.push_str(&format!("--- worker {n} log (tail) ---\n{tail}\n"));
        }
        let tail = e2e_tests::faults::tail(&self.ingest.log(), lines);
        text.push_str(&format!("--- ingest log (tail) ---\n{tail}\n"));
        text
    }

    /// Stops everything; when `passed`, also deletes the queues, buckets, database and role
    /// (a failed row keeps them and its logs for inspection).
    pub(crate) async fn finish(self, passed: bool) {
        let Self {
            stack,
            ingest,
            workers,
            role,
            sources_file,
            ..
        } = self;
        drop(workers);
        drop(ingest);
        let _ = std::fs::remove_file(&sources_file);
        if !passed {
            return;
        }
        stack.cleanup().await;
        if let Some(role) = role {
            // The grants went with the database.
            if let Ok(admin) = sqlx::PgPool::connect(&admin_database_url()).await {
                let _ = sqlx::query(&format!(r#"DROP ROLE IF EXISTS "{role}""#))
                    .execute(&admin)
                    .await;
                admin.close().await;
            }
        }
    }
}
