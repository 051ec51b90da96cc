//! The end-to-end harness: per test, fresh SQS queues in LocalStack and a fresh PostgreSQL
//! database (unique names, so tests run in parallel), and the real `ingest` and `worker`
//! binaries started on free ports with only the environment the test gives them.
//!
//! LocalStack must be running (`scripts/test.sh` starts it); `AWS_ENDPOINT_URL` and
//! `TEST_DATABASE_URL` point elsewhere than the defaults if needed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use sqlx::PgPool;
use tokio::process::Command;
use webhook_shared::envelope::Envelope;

pub mod report;
pub mod services;

pub use services::Service;

/// Where LocalStack listens unless `AWS_ENDPOINT_URL` says otherwise.
const DEFAULT_SQS_ENDPOINT: &str = "http://127.0.0.1:4566";
/// The server database used to create and drop test databases.
const DEFAULT_ADMIN_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

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
        let (queue_url, dlq_url) = create_queues(&sqs, &format!("e2e-{suffix}"), options)
            .await
            .expect(
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
        let (http, ops) = (free_port(), free_port());
        let (mut command, log_path) = self.command("ingest");
        command
            .env("QUEUE_URL", queue_url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{http}"))
            .env("METRICS_ADDR", format!("127.0.0.1:{ops}"))
            .envs(settings.iter().copied());
        Service::start("ingest", command, Some(http), ops, log_path).await
    }

    /// Starts `worker` on the main queue with extra settings.
    pub async fn spawn_worker(&self, settings: &[(&str, &str)]) -> Service {
        self.spawn_worker_binary("worker", settings).await
    }

    /// Starts a worker-like binary (e.g. `examples/upsert_orders`, relative to the target
    /// profile directory) on the main queue with extra settings.
    pub async fn spawn_worker_binary(&self, binary: &str, settings: &[(&str, &str)]) -> Service {
        let ops = free_port();
        let (mut command, log_path) = self.command(binary);
        command
            .env("QUEUE_URL", &self.queue_url)
            .env("METRICS_ADDR", format!("127.0.0.1:{ops}"))
            .env("QUEUE_METRICS_INTERVAL_SECONDS", "1")
            .envs(settings.iter().copied());
        Service::start("worker", command, None, ops, log_path).await
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

    /// Envelopes for `source` with small JSON bodies, as ingest would write them.
    pub fn envelopes(source: &str, count: usize) -> Vec<Envelope> {
        (0..count)
            .map(|n| Envelope {
                id: uuid::Uuid::now_v7().to_string(),
                source: source.to_owned(),
                received_at: chrono::Utc::now(),
                headers: std::collections::BTreeMap::from([(
                    "content-type".to_owned(),
                    "application/json".to_owned(),
                )]),
                content_type: Some("application/json".to_owned()),
                body: bytes::Bytes::from(format!(r#"{{"n":{n}}}"#)),
            })
            .collect()
    }

    /// A queue URL in the same account and region with another name.
    pub fn sibling_queue_url(&self, name: &str) -> String {
        let (base, _) = self
            .queue_url
            .rsplit_once('/')
            .expect("queue URLs have a path");
        format!("{base}/{name}")
    }

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

    /// Visible plus in-flight messages in a queue, from GetQueueAttributes.
    pub async fn messages_in(&self, queue_url: &str) -> u64 {
        let output = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("GetQueueAttributes");
        output
            .attributes()
            .into_iter()
            .flat_map(|attributes| attributes.values())
            .map(|count| count.parse::<u64>().expect("counts are numbers"))
            .sum()
    }

    /// Waits until a queue holds no messages at all; panics after `timeout`.
    pub async fn wait_for_empty(&self, queue_url: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.messages_in(queue_url).await;
            if left == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{left} messages still in {queue_url} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Puts `count` envelopes on the main queue directly (as ingest would), ten per
    /// SendMessageBatch call, and returns their event ids. Bodies are small JSON documents
    /// from source `preload`.
    pub async fn preload(&self, count: usize) -> Vec<String> {
        let envelopes = Self::envelopes("preload", count);
        self.send_raw(
            &self.queue_url,
            envelopes.iter().map(Envelope::to_json).collect(),
        )
        .await;
        envelopes.into_iter().map(|envelope| envelope.id).collect()
    }

    /// Sends message bodies as they are (envelopes or not) to `queue_url`, ten per call, in
    /// parallel batches.
    pub async fn send_raw(&self, queue_url: &str, bodies: Vec<String>) {
        let mut calls = tokio::task::JoinSet::new();
        for chunk in bodies.chunks(10) {
            let entries: Vec<SendMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .expect("id and body set")
                })
                .collect();
            let (sqs, url) = (self.sqs.clone(), queue_url.to_owned());
            calls.spawn(async move {
                let output = sqs
                    .send_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("SendMessageBatch");
                assert!(
                    output.failed().is_empty(),
                    "failed entries: {:?}",
                    output.failed()
                );
            });
            if calls.len() >= 16 {
                calls.join_next().await;
            }
        }
        calls.join_all().await;
    }

    /// Receives every message now in `queue_url` (hiding each for the visibility timeout)
    /// and returns their bodies; stops after two empty receives in a row.
    pub async fn receive_all(&self, queue_url: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut empty = 0;
        while empty < 2 {
            let output = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("ReceiveMessage");
            let messages = output.messages.unwrap_or_default();
            empty = if messages.is_empty() { empty + 1 } else { 0 };
            bodies.extend(messages.into_iter().filter_map(|message| message.body));
        }
        bodies
    }

    /// The event ids of every message now in `queue_url` (see [`TestStack::receive_all`]).
    pub async fn event_ids_in(&self, queue_url: &str) -> Vec<String> {
        self.receive_all(queue_url)
            .await
            .iter()
            .map(|body| {
                let envelope: serde_json::Value =
                    serde_json::from_str(body).expect("messages are envelopes");
                envelope["id"]
                    .as_str()
                    .expect("envelopes have ids")
                    .to_owned()
            })
            .collect()
    }

    /// Deletes the queues and drops the database. Call at the end of a passing test; a
    /// failing one keeps its state for inspection.
    pub async fn cleanup(self) {
        self.db.close().await;
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

fn sqs_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| DEFAULT_SQS_ENDPOINT.to_owned())
}

fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_DATABASE_URL.to_owned())
}

async fn sqs_client() -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(sqs_endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "e2e",
        ))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

async fn create_queues(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    options: QueueOptions,
) -> anyhow::Result<(String, String)> {
    let suffix = if options.fifo { ".fifo" } else { "" };
    let fifo =
        |request: aws_sdk_sqs::operation::create_queue::builders::CreateQueueFluentBuilder| {
            if options.fifo {
                request.attributes(QueueAttributeName::FifoQueue, "true")
            } else {
                request
            }
        };
    let dlq_url = fifo(sqs.create_queue().queue_name(format!("{name}-dlq{suffix}")))
        .send()
        .await
        .context("CreateQueue (DLQ)")?
        .queue_url
        .context("no DLQ URL")?;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .context("GetQueueAttributes (DLQ)")?
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .context("no DLQ ARN")?;
    let policy = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": options.max_receive_count });
    let queue_url = fifo(sqs.create_queue().queue_name(format!("{name}{suffix}")))
        .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            options.visibility_timeout.to_string(),
        )
        .send()
        .await
        .context("CreateQueue (main)")?
        .queue_url
        .context("no queue URL")?;
    Ok((queue_url, dlq_url))
}

async fn create_database(name: &str) -> anyhow::Result<String> {
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

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding an ephemeral port")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
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
