//! Per-source quotas: a rate and a burst from the sources file (`quota = { per_second = 50,
//! burst = 200 }` in a source's table, `unknown_quota` at the top for every unknown source
//! together), kept with the generic cell rate algorithm (governor's direct limiter: one
//! atomic per check, no lock). A request beyond its source's quota is answered 429 with a
//! `Retry-After` of the seconds until one more would pass, before its body is read, so nothing
//! is enqueued and a flooding source cannot take the queue and the worker from the others.
//!
//! The check comes before the signature, so forged requests to a source spend its quota too:
//! its provider then sees 429s and retries later. A quota is per ingest task: with `N` tasks
//! behind the load balancer, a source gets about `N` times its quota.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as Gcra, RateLimiter};
use serde::Deserialize;

/// Highest `per_second` and `burst` accepted.
const MAX: f64 = 1_000_000.0;

/// A quota as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQuota {
    per_second: f64,
    burst: u32,
}

/// One source's quota (or all unknown sources' together).
#[derive(Debug)]
pub(crate) struct Quota {
    limiter: DefaultDirectRateLimiter,
}

impl Quota {
    /// The quota `raw` describes; the error says which key is wrong (`key` names the table).
    pub(crate) fn new(raw: &RawQuota, key: &str) -> Result<Self, String> {
        if !(raw.per_second.is_finite() && raw.per_second > 0.0 && raw.per_second <= MAX) {
            return Err(format!(
                "`{key}.per_second` must be above 0 and at most {MAX}"
            ));
        }
        let burst = NonZeroU32::new(raw.burst)
            .filter(|burst| f64::from(burst.get()) <= MAX)
            .ok_or_else(|| format!("`{key}.burst` must be 1 to {MAX}"))?;
        let period = Duration::from_secs_f64(1.0 / raw.per_second);
        let gcra = Gcra::with_period(period)
            .ok_or_else(|| format!("`{key}.per_second` is too high"))?
            .allow_burst(burst);
        Ok(Self {
            limiter: RateLimiter::direct(gcra),
        })
    }

    /// Takes one request from the quota, or says in how many whole seconds (at least 1) one
    /// more would pass.
    pub(crate) fn check(&self) -> Result<(), u32> {
        self.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            u32::try_from(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
                .unwrap_or(u32::MAX)
                .max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(per_second: f64, burst: u32) -> Result<Quota, String> {
        Quota::new(&RawQuota { per_second, burst }, "quota")
    }

    #[test]
    fn the_burst_passes_then_each_refusal_says_when_to_retry() {
        let quota = quota(0.5, 3).expect("valid");
        for _ in 0..3 {
            assert_eq!(quota.check(), Ok(()));
        }
        // One request per 2 s: the next passes in about 2 s.
        assert_eq!(quota.check(), Err(2));
    }

    #[test]
    fn a_wait_under_a_second_is_rounded_up_to_one() {
        let quota = quota(100.0, 1).expect("valid");
        assert_eq!(quota.check(), Ok(()));
        assert_eq!(quota.check(), Err(1));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (per_second, burst) in [(0.0, 1), (-1.0, 1), (f64::NAN, 1), (2e6, 1), (1.0, 0)] {
            let error = quota(per_second, burst).expect_err("invalid");
            assert!(error.starts_with("`quota."), "{error}");
        }
    }
}
