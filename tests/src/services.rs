//! A running `ingest` or `worker` process: started, waited on until healthy, signalled.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How long a binary may take to answer `/healthz` after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A port picked as free was taken before the binary could bind it.
#[derive(Debug)]
pub(crate) struct PortTaken;

/// A binary under test. Killed when dropped.
#[derive(Debug)]
pub struct Service {
    name: &'static str,
    child: Child,
    http_port: Option<u16>,
    ops_port: u16,
    log_path: PathBuf,
}

impl Service {
    /// Spawns `command` and waits until its ops server answers `/healthz`.
    /// `Err(PortTaken)` when the process could not bind a port that was free a moment before
    /// (another process took it): the caller tries again with other ports.
    pub(crate) async fn start(
        name: &'static str,
        mut command: Command,
        http_port: Option<u16>,
        ops_port: u16,
        log_path: PathBuf,
    ) -> Result<Self, PortTaken> {
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("starting {name}: {error}"));
        let mut service = Self {
            name,
            child,
            http_port,
            ops_port,
            log_path,
        };
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = service.child.try_wait() {
                let log = service.log();
                if log.contains("Address already in use") {
                    return Err(PortTaken);
                }
                panic!("{name} exited at start with {status}:\n{log}");
            }
            let healthy = client
                .get(service.ops_url("/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let http_up = match http_port {
                Some(_) => client
                    .get(service.url("/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                None => true,
            };
            if healthy && http_up {
                return Ok(service);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not healthy after {START_TIMEOUT:?}:\n{}",
                service.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A URL on the service's HTTP port (ingest only).
    pub fn url(&self, path: &str) -> String {
        let port = self
            .http_port
            .unwrap_or_else(|| panic!("{} has no HTTP port", self.name));
        format!("http://127.0.0.1:{port}{path}")
    }

    /// A URL on the service's ops port.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.ops_url("/metrics"))
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The process's peak resident set size (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: Signal) {
        let pid = self
            .child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .expect("the process is running");
        kill(Pid::from_raw(pid), signal)
            .unwrap_or_else(|error| panic!("sending {signal} to {}: {error}", self.name));
    }

    /// Sends SIGTERM and waits for the exit, at most `timeout`.
    pub async fn terminate(self, timeout: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait(timeout).await
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("waiting for the process"),
            Err(_) => panic!(
                "{} did not exit within {timeout:?}:\n{}",
                self.name,
                self.log()
            ),
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub async fn kill(mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait().await;
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_else(|error| format!("(no log at {}: {error})", self.log_path.display()))
    }
}
