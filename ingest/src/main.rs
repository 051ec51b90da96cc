//! The `ingest` binary: parse config, start logging and metrics, bind, run until a signal.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use ingest::Listeners;
use ingest::config::{Command, Config};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_shared::telemetry::{self, Traces};
use webhook_shared::{metrics, shutdown};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let result = match telemetry::init(&config.log, "ingest") {
        Ok(telemetry) => {
            let result = start(config, telemetry.traces()).await;
            // Flushes the last spans; it blocks, so off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
            result
        }
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "ingest failed to start");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: Config, traces: Traces) -> anyhow::Result<()> {
    if let Some(Command::Healthcheck) = config.command {
        return webhook_shared::healthcheck::check(config.ops.listen.metrics_addr).await;
    }
    let metrics = metrics::install_recorder().context("installing the Prometheus recorder")?;
    let http = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding LISTEN_ADDR {}", config.listen_addr))?;
    let ops = TcpListener::bind(config.ops.listen.metrics_addr)
        .await
        .with_context(|| format!("binding METRICS_ADDR {}", config.ops.listen.metrics_addr))?;
    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone()).context("installing signal handlers")?;
    ingest::run(config, Listeners { http, ops }, metrics, traces, token).await
}
