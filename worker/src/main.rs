//! The `worker` binary: parse config, start logging and metrics, run a subcommand.

use std::process::ExitCode;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_shared::{metrics, shutdown, telemetry};
use worker::config::{Cli, Command, RunConfig};

#[tokio::main]
async fn main() -> ExitCode {
    let (command, log) = Cli::parse_command();
    telemetry::init(log.log_format);
    let result = match command {
        Command::Run(config) => run(*config).await,
        Command::Migrate(database) => worker::migrate(&database).await,
        Command::Redrive(args) => worker::redrive::run(&args).await,
        Command::Healthcheck(args) => webhook_shared::healthcheck::check(args.metrics_addr).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "worker failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: RunConfig) -> anyhow::Result<()> {
    let metrics = metrics::install_recorder().context("installing the Prometheus recorder")?;
    let ops = TcpListener::bind(config.ops.metrics_addr)
        .await
        .with_context(|| format!("binding METRICS_ADDR {}", config.ops.metrics_addr))?;
    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone()).context("installing signal handlers")?;
    worker::run(config, ops, metrics, token).await
}
