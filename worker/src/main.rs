//! The `worker` binary: the shipped handler (store every event in `webhook_events`) behind
//! the worker's command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    worker::main_with(worker::StoreEvents)
}
