//! The worker's optional rate limit (MAX_MESSAGES_PER_SECOND), on top of the concurrency
//! limit. Asserts only a lower bound on the drain time: a slow machine can make the drain
//! longer, never shorter, so the test cannot flake from load.

use std::time::{Duration, Instant};

use e2e_tests::TestStack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spreads_a_backlog_over_time() {
    const MESSAGES: usize = 80;
    const PER_SECOND: u32 = 20;
    let stack = TestStack::new("rate").await;
    stack.preload(MESSAGES).await;
    let started = Instant::now();
    let worker = stack
        .spawn_worker(&[("MAX_MESSAGES_PER_SECOND", &PER_SECOND.to_string())])
        .await;
    stack
        .wait_for_rows(MESSAGES as i64, Duration::from_secs(60))
        .await;
    let took = started.elapsed();
    // A full bucket (PER_SECOND) may go at once; the rest at PER_SECOND a second.
    let at_least =
        Duration::from_secs_f64((MESSAGES as u32 - PER_SECOND) as f64 / f64::from(PER_SECOND));
    assert!(
        took >= at_least,
        "{MESSAGES} messages at {PER_SECOND}/s drained in {took:?}, under {at_least:?}"
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_below_one_receive_a_second_is_kept_too() {
    // Below 10 a second, governor refused the 10 cells a receive asked for and the refusal
    // was ignored: no limit at all. Now each receive asks for at most the rate.
    const MESSAGES: usize = 20;
    const PER_SECOND: u32 = 4;
    let stack = TestStack::new("rate-low").await;
    stack.preload(MESSAGES).await;
    let started = Instant::now();
    let worker = stack
        .spawn_worker(&[("MAX_MESSAGES_PER_SECOND", &PER_SECOND.to_string())])
        .await;
    stack
        .wait_for_rows(MESSAGES as i64, Duration::from_secs(60))
        .await;
    let took = started.elapsed();
    let at_least =
        Duration::from_secs_f64((MESSAGES as u32 - PER_SECOND) as f64 / f64::from(PER_SECOND));
    assert!(
        took >= at_least,
        "{MESSAGES} messages at {PER_SECOND}/s drained in {took:?}, under {at_least:?}"
    );
    drop(worker);
    stack.cleanup().await;
}
