//! A pipeline harness for unit tests: the pipeline running over the fakes in paused time,
//! with test settings, and a wait for a condition.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::fleet::Gate;
use crate::pipeline::batch_context::RetryBackoff;
use crate::pipeline::lag::Lag;
use crate::pipeline::s3_health::S3Health;
use crate::pipeline::window::Window;
use crate::pipeline::write_queue::BatchCaps;
use crate::pipeline::{self, PipelineSettings};
use crate::sqs::Queue;
use crate::testing::objects::FakeObjects;
use crate::testing::{FakeEventStore, FakeQueue};

/// Settings for tests: no rate limit, 30 s visibility, a back-off from 2 s.
pub(crate) fn settings(write_limit: usize) -> PipelineSettings {
    PipelineSettings {
        write_limit,
        adaptive: false,
        caps: BatchCaps {
            rows: 100,
            bytes: 1 << 20,
        },
        per_second: None,
        visibility: Duration::from_secs(30),
        backoff: RetryBackoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        },
        grace: Duration::from_secs(10),
        max_fetched_bytes: NonZeroU32::new(64 << 20).expect("non-zero"),
        fuse_threshold: 10,
    }
}

/// A running pipeline over `fake` and `store`.
pub(crate) struct Running {
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: tokio::task::JoinHandle<()>,
    pub(crate) window: Arc<Window>,
}

pub(crate) fn start(
    fake: &FakeQueue,
    store: FakeEventStore,
    window: usize,
    settings: PipelineSettings,
) -> Running {
    start_with(fake, store, &FakeObjects::default(), window, settings)
}

/// A running pipeline over `fake`, `store` and `objects`.
pub(crate) fn start_with(
    fake: &FakeQueue,
    store: FakeEventStore,
    objects: &FakeObjects,
    window: usize,
    settings: PipelineSettings,
) -> Running {
    let window = Window::new(window);
    let lag = Arc::new(Lag::new(
        Arc::clone(&window),
        crate::metrics::SourceLabels::default(),
    ));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(pipeline::run(
        Arc::new(Queue::new(fake.clone())),
        (
            store,
            Arc::new(objects.clone()),
            Arc::new(S3Health::new(window.capacity() / 2)),
        ),
        Arc::new(Gate::fixed(settings.write_limit)),
        Arc::clone(&window),
        lag,
        settings,
        shutdown.clone(),
    ));
    Running {
        shutdown,
        task,
        window,
    }
}

impl Running {
    /// Shuts the pipeline down and waits for it.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("the pipeline ends");
    }
}

/// Waits (in paused time) until `check` holds.
pub(crate) async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: never happened");
}
