//! Small helpers for tests and benchmarks: reading Prometheus counters and summarising
//! latencies.

use std::time::Duration;

/// Sum of a Prometheus metric's samples whose line contains every one of `filters`.
pub fn counter(metrics: &str, name: &str, filters: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && filters.iter().all(|filter| line.contains(filter)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks of 1/100 s (USER_HZ) on every architecture it supports.
    Some((utime + stime) / 100.0)
}

/// What LocalStack's command line contains when `scripts/localstack.sh` started it.
pub const LOCALSTACK_CMDLINE: &str = "scripts/localstack_main.py";

/// CPU seconds (user + system) used so far by every process whose command line contains
/// `pattern`.
pub fn cpu_seconds_of(pattern: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(pattern))
        })
        .filter_map(cpu_seconds)
        .sum()
}

/// The median of `values` (the lower middle one for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// Parses a benchmark's `--set NAME=VALUE` option.
pub fn parse_setting(value: &str) -> Result<(String, String), String> {
    let (name, value) = value.split_once('=').ok_or("expected NAME=VALUE")?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// A sorted set of latencies.
#[derive(Debug, Clone)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// Sorts the samples.
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    /// Number of samples.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The `p`th percentile in milliseconds (nearest rank); 0 without samples.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1].as_secs_f64() * 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let latencies = Latencies::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(latencies.percentile_ms(50.0), 50.0);
        assert_eq!(latencies.percentile_ms(99.0), 99.0);
        assert_eq!(latencies.percentile_ms(100.0), 100.0);
        assert_eq!(Latencies::new(Vec::new()).percentile_ms(99.0), 0.0);
    }

    #[test]
    fn counters_sum_matching_samples() {
        let text = "# HELP x\nwebhook_sqs_requests_total{operation=\"SendMessageBatch\",result=\"ok\"} 3\nwebhook_sqs_requests_total{operation=\"SendMessageBatch\",result=\"error\"} 1\nwebhook_sqs_requests_total{operation=\"GetQueueAttributes\",result=\"ok\"} 7\n";
        assert_eq!(
            counter(text, "webhook_sqs_requests_total", &["SendMessageBatch"]),
            4.0
        );
        assert_eq!(counter(text, "webhook_sqs_requests_total", &[]), 11.0);
    }
}
