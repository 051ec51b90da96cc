//! The shutdown signal: SIGTERM or SIGINT cancels one `CancellationToken` that every part of
//! a binary watches.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Registers SIGTERM and SIGINT handlers now (so no early signal is missed) and cancels
/// `token` when either arrives.
pub fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
            () = token.cancelled() => return,
        };
        tracing::info!(signal = name, "shutdown requested; draining");
        token.cancel();
    });
    Ok(())
}
