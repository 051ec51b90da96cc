//! The `worker` command line, shared by the shipped binary and by binaries built around a
//! custom handler: parse the settings, start logging, run the subcommand, map the result to
//! an exit code.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_shared::telemetry::{self, Traces};
use webhook_shared::{healthcheck, metrics, shutdown};

use crate::config::{Cli, Command, RunConfig};
use crate::db::handler::Handler;

/// Longest wait for leftover tasks when the runtime shuts down.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The whole `worker` program with `handler` writing the events: `fn main() -> ExitCode {
/// worker::main_with(MyHandler) }` gives a binary with every subcommand and setting of the
/// shipped worker.
pub fn main_with<H: Handler>(handler: H) -> ExitCode {
    let (command, log) = Cli::parse_command();
    let result = telemetry::init(&log, "worker").and_then(|telemetry| {
        let result = run_command(command, handler, telemetry.traces());
        telemetry.shutdown();
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "worker failed");
            ExitCode::FAILURE
        }
    }
}

/// Runs `command` on a runtime of its own, spans (of `run`) going to `traces`.
fn run_command<H: Handler>(command: Command, handler: H, traces: Traces) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        match command {
            Command::Run(config) => run(*config, handler, traces).await,
            Command::Migrate(args) => crate::migrate(&args, &handler).await,
            Command::Maintain(args) => crate::maintain::run(&args).await,
            Command::MigratePartitions(args) => crate::migrate_partitions::run(&args).await,
            Command::Replay(args) => crate::replay::run(&args, handler).await,
            Command::Redrive(args) => crate::sqs::redrive::run(&args).await,
            Command::Healthcheck(args) => healthcheck::check(args.ops.metrics_addr).await,
        }
    });
    // Tasks still running (aborted work) get a moment, never a hang.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    result
}

async fn run<H: Handler>(config: RunConfig, handler: H, traces: Traces) -> anyhow::Result<()> {
    let metrics = metrics::install_recorder().context("installing the Prometheus recorder")?;
    let ops = TcpListener::bind(config.ops.listen.metrics_addr)
        .await
        .with_context(|| format!("binding METRICS_ADDR {}", config.ops.listen.metrics_addr))?;
    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone()).context("installing signal handlers")?;
    crate::run_with(config, handler, ops, metrics, traces, token).await
}
