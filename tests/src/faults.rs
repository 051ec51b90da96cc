//! What the fault runs (`fault-run`, `fault-matrix`) share: webhook providers that retry each
//! webhook with its own delivery id until it gets a 2xx, the sources file that takes that id
//! as the event id, LocalStack's pid, and log tails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::unistd::Pid;
use tokio::sync::{RwLock, watch};
use tokio::time::Instant;

/// The source the providers post to; its scheme takes the event id from [`DELIVERY_HEADER`].
pub const SOURCE: &str = "faulty";
/// The provider's delivery id header.
pub const DELIVERY_HEADER: &str = "x-delivery";
/// How long a provider keeps retrying the webhook it holds once the load has stopped.
pub const STOP_GRACE: Duration = Duration::from_secs(20);
/// A provider's pause between two tries of one webhook.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// One webhook answered with a 2xx.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Its delivery id (the stored event id).
    pub id: String,
    /// When the 2xx arrived (wall clock, comparable with `stored_at`).
    pub at: chrono::DateTime<chrono::Utc>,
    /// How long the request answered with that 2xx took.
    pub latency: Duration,
}

/// What one provider (or all of them, added up) saw.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Distinct webhooks started.
    pub attempted: u64,
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Webhooks answered with a 2xx.
    pub accepted: Vec<Accepted>,
    /// 5xx answers.
    pub server_errors: u64,
    /// Connection errors and timeouts.
    pub connection_errors: u64,
    /// Other answers (4xx): never expected.
    pub unexpected: Vec<String>,
    /// Webhooks still without a 2xx when the provider stopped.
    pub abandoned: u64,
}

impl ClientStats {
    /// Adds `other`'s counts and lists to these.
    pub fn add(&mut self, other: Self) {
        self.attempted += other.attempted;
        self.requests += other.requests;
        self.accepted.extend(other.accepted);
        self.server_errors += other.server_errors;
        self.connection_errors += other.connection_errors;
        self.unexpected.extend(other.unexpected);
        self.abandoned += other.abandoned;
    }
}

/// How a provider builds its webhooks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bodies {
    /// Every this many webhooks of a provider is a large one (0: none).
    pub large_every: u64,
    /// The size of a large webhook's body, in bytes (about).
    pub large_bytes: usize,
}

/// One provider's place in the load.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Its number, part of every body and the phase of its schedule.
    pub number: usize,
    /// The client it sends with.
    pub http: reqwest::Client,
    /// The URL it posts to; it follows changes (a restarted ingest).
    pub url: Arc<RwLock<String>>,
    /// Becomes `true` when it should stop starting new webhooks.
    pub stop: watch::Receiver<bool>,
    /// Time between two new webhooks.
    pub interval: Duration,
    /// What its webhooks look like.
    pub bodies: Bodies,
}

impl Provider {
    /// Sends webhooks at its pace, retrying each on 5xx and connection errors until it gets a
    /// 2xx; stops starting new ones when told, and gives up on the one it holds after
    /// [`STOP_GRACE`].
    pub async fn run(self) -> ClientStats {
        let Self {
            number,
            http,
            url,
            stop,
            interval,
            bodies,
        } = self;
        let mut stats = ClientStats::default();
        let mut next = Instant::now() + interval.mul_f64(number as f64 / 16.0 % 1.0);
        let mut seq = 0_u64;
        while !*stop.borrow() {
            tokio::time::sleep_until(next).await;
            next += interval;
            if next < Instant::now() {
                // Behind after a long retry: do not burst to catch up.
                next = Instant::now() + interval;
            }
            let delivery = uuid::Uuid::new_v4().to_string();
            let large =
                bodies.large_every > 0 && seq % bodies.large_every == bodies.large_every - 1;
            let mut body = serde_json::json!({ "marker": delivery, "client": number, "seq": seq });
            if large {
                body["pad"] = serde_json::Value::String("x".repeat(bodies.large_bytes));
            }
            let body = body.to_string();
            seq += 1;
            stats.attempted += 1;
            let mut stopped_at: Option<Instant> = None;
            loop {
                if *stop.borrow() {
                    let since = *stopped_at.get_or_insert_with(Instant::now);
                    if since.elapsed() > STOP_GRACE {
                        stats.abandoned += 1;
                        break;
                    }
                }
                let target = url.read().await.clone();
                stats.requests += 1;
                let sent = Instant::now();
                let result = http
                    .post(&target)
                    .header("content-type", "application/json")
                    .header(DELIVERY_HEADER, &delivery)
                    .body(body.clone())
                    .send()
                    .await;
                match result {
                    Ok(response) if response.status().is_success() => {
                        stats.accepted.push(Accepted {
                            id: delivery,
                            at: chrono::Utc::now(),
                            latency: sent.elapsed(),
                        });
                        break;
                    }
                    Ok(response) if response.status().is_server_error() => {
                        stats.server_errors += 1;
                    }
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        stats.unexpected.push(format!("{status} {text}"));
                        break;
                    }
                    Err(_) => stats.connection_errors += 1,
                }
                // A provider's retry: wait a little, then the same webhook again.
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        stats
    }
}

/// The repository's root (the parent of `tests/`).
pub fn repository_root() -> anyhow::Result<PathBuf> {
    Ok(PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tests/ is inside the workspace")?
        .to_owned())
}

/// LocalStack's pid from the pid file `scripts/localstack.sh` writes
/// (`$SW_STATE_DIR/localstack.pid`, default `.local/` in the repository;
/// `localstack-PORT.pid` when `LOCALSTACK_PORT` is not 4566), checked against `/proc` so that
/// a stale file never makes a caller signal another process.
pub fn localstack_pid() -> anyhow::Result<Pid> {
    let repo = repository_root()?;
    let state_dir = std::env::var_os("SW_STATE_DIR")
        .map(PathBuf::from)
        .map_or_else(
            || repo.join(".local"),
            |dir| {
                if dir.is_absolute() {
                    dir
                } else {
                    repo.join(dir)
                }
            },
        );
    let port = std::env::var("LOCALSTACK_PORT").unwrap_or_else(|_| "4566".to_owned());
    let file = if port == "4566" {
        state_dir.join("localstack.pid")
    } else {
        state_dir.join(format!("localstack-{port}.pid"))
    };
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "reading LocalStack's pid file {} (start it with scripts/localstack.sh start)",
            file.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a pid", file.display()))?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains("localstack") {
        bail!(
            "pid {pid} from {} is not a running LocalStack",
            file.display()
        );
    }
    Ok(Pid::from_raw(pid))
}

/// A `SOURCES_FILE` with one unverified source, [`SOURCE`], taking the event id from
/// [`DELIVERY_HEADER`], then `extra` (more TOML); unknown sources are refused. Returns its
/// path (in the temporary directory; the caller removes it).
pub fn write_sources_file(extra: &str) -> anyhow::Result<PathBuf> {
    let path =
        std::env::temp_dir().join(format!("fault-run-sources-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        format!(
            "unknown_sources = \"reject\"\n\n[sources.{SOURCE}]\nscheme = \"none\"\nid_header = \"{DELIVERY_HEADER}\"\n{extra}"
        ),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
