//! The end-to-end harness: per test, fresh SQS queues in LocalStack and a fresh PostgreSQL
//! database (unique names, so tests run in parallel), S3 buckets on request, and the real
//! `ingest` and `worker` binaries started on free ports with only the environment the test
//! gives them.
//!
//! LocalStack must be running (`scripts/test.sh` starts it); `AWS_ENDPOINT_URL` and
//! `TEST_DATABASE_URL` point elsewhere than the defaults if needed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::bail;
use sqlx::PgPool;
use tokio::process::Command;

pub mod affinity;
pub mod attack;
pub mod buckets;
pub mod database;
pub mod extended_client;
pub mod fault_proxy;
pub mod faults;
pub mod fleet;
pub mod ingest_load;
pub mod large;
pub mod latency;
pub mod latency_floor;
pub mod otlp;
pub mod partitions;
pub mod pg_proxy;
pub mod plotting;
pub mod probes;
pub mod queues;
pub mod report;
pub mod services;
pub mod slow_uploads;
pub mod worker_role;

pub use services::Service;

use crate::buckets::s3_client;
use crate::database::{admin_database_url, create_database};
use crate::queues::{create_queues, sqs_client, sqs_endpoint};

/// Starts tried before giving up when freshly picked ports keep being taken by others.
const START_ATTEMPTS: usize = 5;

/// One test's queues and database.
#[derive(Debug)]
pub struct TestStack {
    /// A client for the test's own SQS calls.
    pub sqs: aws_sdk_sqs::Client,
    /// The main queue.
    pub queue_url: String,
    /// Its dead-letter queue.
    pub dlq_url: String,
    /// The test's database, migrated by `worker migrate`.
    pub db: PgPool,
    /// URL of the test's database.
    pub database_url: String,
    /// A client for the test's own S3 calls (path-style, LocalStack's endpoint).
    pub s3: aws_sdk_s3::Client,
    /// `e2e-` and the test's random suffix: its queue's name, and the stem of its buckets.
    pub name: String,
    /// Buckets made by [`TestStack::create_bucket`], deleted (with their objects) by cleanup.
    buckets: std::sync::Mutex<Vec<String>>,
    database_name: String,
    log_dir: PathBuf,
    next_service: std::sync::atomic::AtomicU32,
}

/// Queue settings for a test.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// Receives before SQS moves a message to the DLQ.
    pub max_receive_count: u32,
    /// Seconds a received message stays invisible.
    pub visibility_timeout: u32,
    /// FIFO queues (names ending `.fifo`).
    pub fifo: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_receive_count: 3,
            visibility_timeout: 30,
            fifo: false,
        }
    }
}

impl TestStack {
    /// Queues and a migrated database named after `test_name` plus a random suffix.
    pub async fn new(test_name: &str) -> Self {
        Self::with_queues(test_name, QueueOptions::default()).await
    }

    /// Like [`TestStack::new`] with the given queue settings.
    pub async fn with_queues(test_name: &str, options: QueueOptions) -> Self {
        build_binaries();
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let sqs = sqs_client().await;
        let name = format!("e2e-{suffix}");
        let (queue_url, dlq_url) = create_queues(&sqs, &name, options).await.expect(
            "creating test queues in LocalStack (is it running? scripts/test.sh starts it)",
        );
        let database_name = format!("e2e_{suffix}");
        let database_url = create_database(&database_name)
            .await
            .expect("creating the test database");
        let log_dir = workspace_root()
            .join("target/e2e-logs")
            .join(format!("{test_name}-{suffix}"));
        std::fs::create_dir_all(&log_dir).expect("creating the log directory");
        let stack = Self {
            sqs,
            queue_url,
            dlq_url,
            db: PgPool::connect(&database_url)
                .await
                .expect("connecting to the test database"),
            database_url,
            s3: s3_client().await,
            name,
            buckets: std::sync::Mutex::default(),
            database_name,
            log_dir,
            next_service: 0.into(),
        };
        let (mut migrate, _) = stack.command("worker");
        let status = migrate
            .arg("migrate")
            .status()
            .await
            .expect("running worker migrate");
        assert!(
            status.success(),
            "worker migrate failed; see {}",
            stack.log_dir.display()
        );
        stack
    }

    /// The environment every binary gets (AWS endpoint, region, dummy credentials, logging),
    /// with its output going to a log file whose path is returned beside it.
    fn command(&self, binary: &str) -> (Command, PathBuf) {
        let n = self
            .next_service
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_name = binary.replace('/', "-");
        let log_path = self.log_dir.join(format!("{log_name}-{n}.log"));
        let log = std::fs::File::create(&log_path).expect("creating a service log file");
        let mut command = Command::new(binary_path(binary));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("AWS_ENDPOINT_URL", sqs_endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("DATABASE_URL", &self.database_url)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a file handle"))
            .stderr(log)
            .kill_on_drop(true);
        (command, log_path)
    }

    /// Starts `ingest` for the main queue on free ports, with extra settings.
    pub async fn spawn_ingest(&self, settings: &[(&str, &str)]) -> Service {
        self.spawn_ingest_for(&self.queue_url, settings).await
    }

    /// Starts `ingest` for `queue_url` on free ports, with extra settings.
    pub async fn spawn_ingest_for(&self, queue_url: &str, settings: &[(&str, &str)]) -> Service {
        for _ in 0..START_ATTEMPTS {
            let (http, ops) = (free_port(), free_port());
            let (mut command, log_path) = self.command("ingest");
            command
                .env("QUEUE_URL", queue_url)
                .env("LISTEN_ADDR", format!("127.0.0.1:{http}"))
                .env("METRICS_ADDR", format!("127.0.0.1:{ops}"))
                .envs(settings.iter().copied());
            if let Ok(service) = Service::start("ingest", command, Some(http), ops, log_path).await
            {
                return service;
            }
        }
        panic!("ingest could not bind free ports in {START_ATTEMPTS} attempts");
    }

    /// Starts `worker` on the main queue with extra settings.
    pub async fn spawn_worker(&self, settings: &[(&str, &str)]) -> Service {
        self.spawn_worker_binary("worker", settings).await
    }

    /// Starts a worker-like binary (e.g. `examples/upsert_orders`, relative to the target
    /// profile directory) on the main queue with extra settings.
    pub async fn spawn_worker_binary(&self, binary: &str, settings: &[(&str, &str)]) -> Service {
        for _ in 0..START_ATTEMPTS {
            let ops = free_port();
            let (mut command, log_path) = self.command(binary);
            command
                .env("QUEUE_URL", &self.queue_url)
                .env("METRICS_ADDR", format!("127.0.0.1:{ops}"))
                .env("QUEUE_METRICS_INTERVAL_SECONDS", "1")
                .envs(settings.iter().copied());
            if let Ok(service) = Service::start("worker", command, None, ops, log_path).await {
                return service;
            }
        }
        panic!("{binary} could not bind a free port in {START_ATTEMPTS} attempts");
    }

    /// Runs `worker` with `args` (e.g. `["redrive"]`) to the end, on the main queue, and
    /// returns its exit status and its output.
    pub async fn run_worker_command(
        &self,
        args: &[&str],
        settings: &[(&str, &str)],
    ) -> (std::process::ExitStatus, String) {
        self.run_command("worker", args, settings).await
    }

    /// Runs `binary` with `args` to the end, on the main queue, and returns its exit status
    /// and its output.
    pub async fn run_command(
        &self,
        binary: &str,
        args: &[&str],
        settings: &[(&str, &str)],
    ) -> (std::process::ExitStatus, String) {
        let (mut command, log_path) = self.command(binary);
        command
            .env("QUEUE_URL", &self.queue_url)
            .args(args)
            .envs(settings.iter().copied())
            .kill_on_drop(true);
        let status = tokio::time::timeout(Duration::from_secs(60), command.status())
            .await
            .expect("the command finishes within 60 s")
            .expect("running worker");
        (
            status,
            std::fs::read_to_string(log_path).unwrap_or_default(),
        )
    }

    /// Starts `binary` with `args` on the main queue and returns the child (killed when
    /// dropped), for a test that stops it midway.
    pub fn start_command(
        &self,
        binary: &str,
        args: &[&str],
        settings: &[(&str, &str)],
    ) -> tokio::process::Child {
        let (mut command, _) = self.command(binary);
        command
            .env("QUEUE_URL", &self.queue_url)
            .args(args)
            .envs(settings.iter().copied())
            .kill_on_drop(true);
        command.spawn().expect("starting the command")
    }

    /// Deletes the queues and the buckets (with their objects) and drops the database. Call
    /// at the end of a passing test; a failing one keeps its state for inspection.
    pub async fn cleanup(self) {
        self.db.close().await;
        let buckets = std::mem::take(&mut *self.buckets.lock().expect("bucket list lock"));
        for bucket in buckets {
            self.delete_bucket(&bucket).await;
        }
        for url in [&self.queue_url, &self.dlq_url] {
            let _ = self.sqs.delete_queue().queue_url(url).send().await;
        }
        if let Ok(admin) = PgPool::connect(&admin_database_url()).await {
            let _ = sqlx::query(&format!(
                r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
                self.database_name
            ))
            .execute(&admin)
            .await;
            admin.close().await;
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// A port that was free a moment ago. Another process may take it before the binary binds
/// it; the spawn functions then try again with other ports.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding an ephemeral port")
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

/// Where the scripts keep their installs: `$SW_STATE_DIR` or `.local`, as in scripts/lib.sh.
pub(crate) fn state_dir() -> PathBuf {
    let state = std::env::var_os("SW_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".local"));
    if state.is_absolute() {
        state
    } else {
        workspace_root().join(state)
    }
}

/// Builds the `ingest` and `worker` binaries once per test process, so the tests never run
/// stale binaries whether started by `cargo test` or by `scripts/test.sh`.
fn build_binaries() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = std::process::Command::new(cargo);
        // `cargo test` gives tests its own variables (CARGO_PKG_*, a library path, ...);
        // build scripts fingerprint some of them, so passing them on would rebuild each time.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_by_cargo_for_tests = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_",
                "CARGO_TARGET_TMPDIR",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix));
            if set_by_cargo_for_tests || name == "LD_LIBRARY_PATH" {
                command.env_remove(name.as_ref());
            }
        }
        let status = command
            .current_dir(workspace_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "ingest",
                "-p",
                "worker",
                "--bins",
                "--examples",
            ])
            .args((!cfg!(debug_assertions)).then_some("--release"))
            .status()
            .map_err(|error| format!("running cargo build: {error}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo build of the binaries failed: {status}"))
        }
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// The binary in this executable's target profile directory (`target/<profile>/`), whether
/// this is a test (in `deps/`) or a benchmark binary.
fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("executables live in a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps/ has a parent");
    }
    dir.join(name)
}

/// Polls `check` every 100 ms until it returns `Ok(Some)`; fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: not reached within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
