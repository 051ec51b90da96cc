//! A custom handler: the worker as shipped, plus the "CRUD" step of the original
//! API Gateway → Lambda → SQS → Lambda → RDS pattern. Every event is stored in
//! `webhook_events` as usual, and events whose JSON payload has an `order_id` upsert a row in
//! an `orders` table, in the same transaction: both are committed, or neither is and the
//! message is retried.
//!
//! Run it like the worker, with the same settings:
//! `cargo run -p worker --example upsert_orders -- run`
//! (its own migration: it creates `orders` if missing).

use std::process::ExitCode;

use anyhow::Context as _;
use sqlx::PgConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_shared::envelope::Envelope;
use webhook_shared::{metrics, shutdown, telemetry};
use worker::config::{Cli, Command, RunConfig};
use worker::handler::{Handler, StoreEvents};

/// Stores events, then upserts `orders` from the new ones.
struct UpsertOrders;

impl Handler for UpsertOrders {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<Vec<bool>, sqlx::Error> {
        let new = StoreEvents.handle(&mut *tx, events).await?;
        for (event, _) in events.iter().zip(&new).filter(|(_, is_new)| **is_new) {
            let Some(payload) = event.json_payload() else {
                continue;
            };
            let Some(order_id) = payload.get("order_id").and_then(|id| id.as_str()) else {
                continue;
            };
            let status = payload
                .get("status")
                .and_then(|s| s.as_str())
                .unwrap_or("unknown");
            // Webhooks can arrive out of order: keep the most recently received status.
            sqlx::query(
                    "INSERT INTO orders (id, status, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at
                     WHERE orders.updated_at <= EXCLUDED.updated_at",
                )
                .bind(order_id)
                .bind(status)
                .bind(event.received_at)
                .execute(&mut *tx)
                .await?;
        }
        Ok(new)
    }
}

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
            tracing::error!(error = format!("{error:#}"), "upsert_orders failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: RunConfig) -> anyhow::Result<()> {
    let pool = worker::db::pool(&config.database)?;
    sqlx::query("CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, status text NOT NULL, updated_at timestamptz NOT NULL)")
        .execute(&pool)
        .await
        .context("creating the orders table")?;
    pool.close().await;
    let metrics = metrics::install_recorder().context("installing the Prometheus recorder")?;
    let ops = TcpListener::bind(config.ops.metrics_addr)
        .await
        .context("binding METRICS_ADDR")?;
    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone()).context("installing signal handlers")?;
    worker::run_with(config, UpsertOrders, ops, metrics, token).await
}
