//! CPU affinity for benchmarks: gives LocalStack (the stand-in for SQS, which in production
//! runs on other machines) a core of its own, and the benchmark's own process with the
//! binaries it starts the others, so that the load generator and the binary under test do not
//! take CPU from the service whose ceiling they are compared with. Uses `taskset` (util-linux).

use std::process::Command;

use crate::report::{LOCALSTACK_CMDLINE, pids_of};

/// Affinity set for one benchmark run; LocalStack's is restored to every CPU when dropped.
#[derive(Debug)]
pub struct Pinned {
    /// CPUs given to LocalStack, as `taskset` lists them.
    pub localstack: String,
    /// CPUs given to the benchmark and what it starts.
    pub rest: String,
    all: String,
}

/// Pins LocalStack's threads to CPU 0 and this process's threads (and so every process it
/// starts afterwards) to the other CPUs. `None`, with nothing changed, on a machine with one
/// CPU, when LocalStack is not found, or when `taskset` fails.
pub fn pin_localstack_apart() -> Option<Pinned> {
    let cpus = std::thread::available_parallelism().ok()?.get();
    if cpus < 2 {
        return None;
    }
    let localstack = pids_of(LOCALSTACK_CMDLINE);
    if localstack.is_empty() {
        return None;
    }
    let pinned = Pinned {
        localstack: "0".to_owned(),
        rest: format!("1-{}", cpus - 1),
        all: format!("0-{}", cpus - 1),
    };
    let mut ok = localstack
        .iter()
        .all(|&pid| set_affinity(pid, &pinned.localstack));
    ok &= set_affinity(std::process::id(), &pinned.rest);
    if !ok {
        drop(pinned);
        return None;
    }
    Some(pinned)
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for pid in pids_of(LOCALSTACK_CMDLINE) {
            set_affinity(pid, &self.all);
        }
        set_affinity(std::process::id(), &self.all);
    }
}

/// Sets the CPUs of every thread of `pid`.
fn set_affinity(pid: u32, cpus: &str) -> bool {
    Command::new("taskset")
        .args(["--all-tasks", "--pid", "--cpu-list", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
