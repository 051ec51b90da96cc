//! Small helpers for tests and benchmarks: reading Prometheus counters and histograms, and
//! summarising latencies.

use std::time::Duration;

/// Sum of a Prometheus metric's samples whose line contains every one of `filters`.
pub fn counter(metrics: &str, name: &str, filters: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && filters.iter().all(|filter| line.contains(filter)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The cumulative buckets `(le, count)` of the Prometheus histogram `name` (one series, no
/// labels besides `le`), in the order of the text: ascending bounds, `+Inf` last.
pub fn histogram_buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    histogram_buckets_with(metrics, name, "")
}

/// Like [`histogram_buckets`], for the series whose labels before `le` are exactly `labels`
/// as the exporter writes them (`source="github",`, say).
pub fn histogram_buckets_with(metrics: &str, name: &str, labels: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{{labels}le=\"");
    metrics
        .lines()
        .filter_map(|line| {
            let (le, rest) = line.strip_prefix(&prefix)?.split_once('"')?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The `q` quantile (0 to 1) of what a histogram recorded between two readings of its
/// [`histogram_buckets`], interpolated linearly inside the bucket it falls in, as PromQL's
/// `histogram_quantile` does (so it is only as fine as the buckets); the highest finite bound
/// when it falls in `+Inf`; `None` when nothing was recorded in between.
pub fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, count)| {
            let earlier = before.iter().find(|(bound, _)| *bound == le);
            (le, count - earlier.map_or(0.0, |&(_, count)| count))
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower_bound, mut lower_count) = (0.0, 0.0);
    for (le, count) in delta {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower_bound);
            }
            let share = (rank - lower_count) / (count - lower_count).max(f64::MIN_POSITIVE);
            return Some(lower_bound + (le - lower_bound) * share);
        }
        (lower_bound, lower_count) = (le, count);
    }
    None
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
    pids_of(pattern).into_iter().filter_map(cpu_seconds).sum()
}

/// The processes whose command line contains `pattern`.
pub fn pids_of(pattern: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(pattern))
        })
        .collect()
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

    #[test]
    fn quantiles_come_from_bucket_deltas() {
        let reading = |counts: [u32; 4]| {
            let text: String = ["0.01", "0.1", "1", "+Inf"]
                .iter()
                .zip(counts)
                .map(|(le, n)| format!("w_seconds_bucket{{le=\"{le}\"}} {n}\n"))
                .collect();
            histogram_buckets(
                &format!("# TYPE w_seconds histogram\n{text}w_seconds_sum 9\n"),
                "w_seconds",
            )
        };
        let before = reading([10, 10, 10, 10]);
        // Between the readings: 50 under 10 ms, 50 between 10 and 100 ms.
        let after = reading([60, 110, 110, 110]);
        assert_eq!(before.len(), 4);
        assert_eq!(quantile_between(&before, &after, 0.5), Some(0.01));
        let p99 = quantile_between(&before, &after, 0.99).unwrap_or_default();
        assert!((p99 - 0.0982).abs() < 1e-9, "{p99}");
        assert_eq!(quantile_between(&after, &after, 0.99), None);
        let labelled = "w_seconds_bucket{source=\"a\",le=\"1\"} 3\nw_seconds_bucket{source=\"b\",le=\"1\"} 5\n";
        assert_eq!(
            histogram_buckets_with(labelled, "w_seconds", "source=\"b\","),
            vec![(1.0, 5.0)]
        );
        assert!(histogram_buckets(labelled, "w_seconds").is_empty());
        assert_eq!(
            quantile_between(&[], &reading([0, 0, 1, 2]), 0.99),
            Some(1.0)
        );
    }
}
