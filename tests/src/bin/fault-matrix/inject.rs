//! Injecting each row's fault for its duration, and ending it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use e2e_tests::fault_proxy::Fault;
use e2e_tests::fleet::FLEET_LOCK;
use e2e_tests::probes::lock_table;
use e2e_tests::slow_uploads::open_stalled;
use tokio::time::Instant;

use crate::rig::Rig;
use crate::rows::Row;

/// How often the reset row resets the connections.
const RESET_EVERY: Duration = Duration::from_secs(3);
/// How often the kill rows kill.
const KILL_EVERY: Duration = Duration::from_secs(10);
/// Stalled uploads opened per second by the flood.
const STALLED_PER_SECOND: usize = 50;
/// Most stalled uploads the flood holds open (the oldest are closed first).
const MOST_STALLED: usize = 400;
/// The body size each stalled upload declares (under ingest's limit without offload).
const STALLED_DECLARED: usize = 700_000;
/// The bytes of it each sends before stalling.
const STALLED_SENT: usize = 1024;

/// Injects `row`'s fault for `duration`, then ends it; returns what was done, line by line.
pub(crate) async fn inject(
    row: Row,
    rig: &mut Rig,
    duration: Duration,
) -> anyhow::Result<Vec<String>> {
    let start = Instant::now();
    let end = start + duration;
    let mut done = Vec::new();
    match row {
        Row::Reset => {
            let mut resets = 0;
            let mut connections = 0;
            while Instant::now() < end {
                connections += rig.database.reset();
                resets += 1;
                tokio::time::sleep(RESET_EVERY.min(end.saturating_duration_since(Instant::now())))
                    .await;
            }
            done.push(format!("{resets} resets, {connections} connections reset"));
        }
        Row::Silent => {
            let silenced = rig.database.silence();
            done.push(format!("{silenced} connections silenced"));
            tokio::time::sleep_until(end).await;
        }
        Row::AllSilent => {
            let silenced = rig.database.silence_all();
            done.push(format!(
                "{silenced} connections silenced, new ones swallowed"
            ));
            tokio::time::sleep_until(end).await;
            rig.database.end_silence();
            done.push("new connections forwarded again".to_owned());
        }
        Row::LoginRevoked => revoke_login(rig, end, &mut done).await?,
        Row::TableLock => {
            let lock = lock_table(&rig.stack).await;
            done.push("LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE".to_owned());
            tokio::time::sleep_until(end).await;
            lock.rollback().await.context("ROLLBACK of the lock")?;
            done.push("lock released".to_owned());
        }
        Row::FleetLock => {
            let mut holder = rig.stack.db.begin().await.context("BEGIN")?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(FLEET_LOCK)
                .execute(&mut *holder)
                .await
                .context("taking the fleet's lock")?;
            done.push("fleet lock taken by an idle transaction".to_owned());
            tokio::time::sleep_until(end).await;
            holder.rollback().await.context("ROLLBACK of the holder")?;
            done.push("fleet lock released".to_owned());
        }
        Row::PgRestart => {
            let down = ServerDown::stop().await?;
            done.push(format!(
                "PostgreSQL stopped in {:.1} s",
                start.elapsed().as_secs_f64()
            ));
            tokio::time::sleep_until(end).await;
            let started = Instant::now();
            down.start().await?;
            done.push(format!(
                "PostgreSQL started in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
        }
        Row::S3Error | Row::S3Silent => {
            let fault = if row == Row::S3Error {
                Fault::Error
            } else {
                Fault::Freeze
            };
            rig.s3.set(fault);
            done.push(format!("S3 proxy: {fault:?}"));
            tokio::time::sleep_until(end).await;
            rig.s3.set(Fault::None);
            done.push("S3 proxy forwards again".to_owned());
        }
        Row::SqsErrors => {
            rig.sqs.set(Fault::Error);
            tokio::time::sleep_until(start + duration / 2).await;
            rig.sqs.set(Fault::Throttle);
            tokio::time::sleep_until(end).await;
            rig.sqs.set(Fault::None);
            done.push("SQS proxy: 503, then throttling, then forwarding".to_owned());
        }
        Row::SlowUploads => flood(rig, end, &mut done).await,
        Row::KillWorker => {
            while Instant::now() < end {
                rig.kill_worker().await;
                done.push(format!(
                    "{:5.1} s: kill -9 worker, new one started",
                    start.elapsed().as_secs_f64()
                ));
                tokio::time::sleep_until((Instant::now() + KILL_EVERY).min(end)).await;
            }
        }
        Row::KillIngest => {
            while Instant::now() < end {
                let url = rig.kill_ingest().await;
                done.push(format!(
                    "{:5.1} s: kill -9 ingest, new one at {url}",
                    start.elapsed().as_secs_f64()
                ));
                tokio::time::sleep_until((Instant::now() + KILL_EVERY).min(end)).await;
            }
        }
    }
    Ok(done)
}

/// `NOLOGIN` for the worker's role and its sessions ended, until `end`; then `LOGIN`.
async fn revoke_login(rig: &Rig, end: Instant, done: &mut Vec<String>) -> anyhow::Result<()> {
    let Some(role) = &rig.role else {
        bail!("the revoked-login row runs its worker under its own role");
    };
    let ended = rig.stack.revoke_login(role).await?;
    done.push(format!("NOLOGIN, {ended} sessions ended"));
    tokio::time::sleep_until(end).await;
    rig.stack.restore_login(role).await?;
    done.push("LOGIN again".to_owned());
    Ok(())
}

/// Opens stalled forged uploads to ingest until `end`, then closes them.
async fn flood(rig: &Rig, end: Instant, done: &mut Vec<String>) {
    let base = rig.ingest.url("");
    let addr = base.trim_start_matches("http://").to_owned();
    let mut held = VecDeque::new();
    let mut opened = 0;
    while Instant::now() < end {
        let next = Instant::now() + Duration::from_secs(1);
        let batch = open_stalled(&addr, STALLED_PER_SECOND, STALLED_DECLARED, STALLED_SENT).await;
        opened += batch.len();
        held.extend(batch);
        while held.len() > MOST_STALLED {
            held.pop_front();
        }
        tokio::time::sleep_until(next.min(end)).await;
    }
    done.push(format!(
        "{opened} stalled uploads opened ({} still held at the end, closed now)",
        held.len()
    ));
}

/// The PostgreSQL server stopped; started again by [`ServerDown::start`], or when dropped
/// (on error, panic or Ctrl-C), so that it never stays down.
struct ServerDown {
    up: bool,
}

impl ServerDown {
    /// Stops the server (`scripts/postgres.sh stop`).
    async fn stop() -> anyhow::Result<Self> {
        let guard = Self { up: false };
        postgres_script("stop").await?;
        Ok(guard)
    }

    /// Starts it again (`scripts/postgres.sh ensure`).
    async fn start(mut self) -> anyhow::Result<()> {
        self.up = true;
        postgres_script("ensure").await
    }
}

impl Drop for ServerDown {
    fn drop(&mut self) {
        if self.up {
            return;
        }
        let started = postgres_script_path().and_then(|script| {
            std::process::Command::new(&script)
                .arg("ensure")
                .status()
                .with_context(|| format!("running {} ensure", script.display()))
        });
        if !started.is_ok_and(|status| status.success()) {
            eprintln!(
                "fault-matrix: starting PostgreSQL again failed: run scripts/postgres.sh ensure"
            );
        }
    }
}

/// `scripts/postgres.sh`.
fn postgres_script_path() -> anyhow::Result<PathBuf> {
    Ok(e2e_tests::faults::repository_root()?.join("scripts/postgres.sh"))
}

/// Runs `scripts/postgres.sh ACTION` and checks its exit status.
async fn postgres_script(action: &str) -> anyhow::Result<()> {
    let script = postgres_script_path()?;
    let status = tokio::process::Command::new(&script)
        .arg(action)
        .status()
        .await
        .with_context(|| format!("running {} {action}", script.display()))?;
    if !status.success() {
        bail!("{} {action} failed: {status}", script.display());
    }
    Ok(())
}
