//! What the edge's unit tests share: a fake publisher, bodies that come in chunks or stall,
//! a state to route against, sources from TOML, and [`send`], which routes a request
//! in-process and gives the status and JSON answer. The subprocess tests in `tests/` keep
//! what needs a real process: signals, kills, sockets, SQS.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use webhook_shared::ops::Readiness;

use super::routes::route;
use super::state::AppState;
use crate::body::RequestBody;
use crate::body::budget::body_budget;
use crate::body::pace::MinRate;
use crate::sources::{self, Sources};
use crate::sqs::publisher::{OutgoingMessage, Publish, PublishError};

/// Records what it is given; refuses or stalls when told to.
#[derive(Debug, Default)]
pub(crate) struct FakeQueue {
    messages: Mutex<Vec<OutgoingMessage>>,
    pub(crate) refuse: AtomicBool,
    pub(crate) stall: AtomicBool,
}

impl FakeQueue {
    pub(crate) fn taken(&self) -> Vec<OutgoingMessage> {
        self.messages.lock().expect("not poisoned").clone()
    }
}

impl Publish for FakeQueue {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), PublishError> {
        if self.stall.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        if self.refuse.load(Ordering::Relaxed) {
            return Err(PublishError);
        }
        self.messages.lock().expect("not poisoned").push(message);
        Ok(())
    }

    async fn probe(&self) -> bool {
        true
    }
}

/// A body sent in chunks without a declared length (like chunked encoding); after the chunks
/// it either ends or never does (a client that stops sending).
pub(crate) struct Chunks {
    pub(crate) chunks: VecDeque<Bytes>,
    pub(crate) ends: bool,
}

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.chunks.pop_front() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None if self.ends => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

pub(crate) fn chunks(count: usize, size: usize, ends: bool) -> Chunks {
    Chunks {
        chunks: (0..count).map(|_| Bytes::from(vec![b'a'; size])).collect(),
        ends,
    }
}

pub(crate) fn state(sources: Sources) -> Arc<AppState<FakeQueue>> {
    let readiness = Readiness::default();
    readiness.set(true);
    Arc::new(AppState {
        publisher: FakeQueue::default(),
        readiness,
        max_body_bytes: 1000,
        retry_after_seconds: 7,
        send_timeout: Duration::from_secs(3),
        body_budget: body_budget(10 * 1024 * 1024),
        body_read_timeout: Duration::from_secs(2),
        min_body_rate: MinRate::OFF,
        sources,
        fifo_group_header: None,
        large_payloads: None,
        spans: None,
    })
}

/// Sources from TOML, with `secret` as the value of every secret variable.
pub(crate) fn sources_from(toml: &str) -> Sources {
    let path = std::env::temp_dir().join(format!(
        "ingest-routes-test-{}-{}.toml",
        std::process::id(),
        uuid::Uuid::now_v7()
    ));
    std::fs::write(&path, toml).expect("write the sources file");
    let loaded = sources::load(&path, &|_| Some("secret".to_owned())).expect("valid sources");
    std::fs::remove_file(&path).expect("remove the sources file");
    loaded
}

pub(crate) fn post(path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(path)
        .body(Full::new(body.into()))
        .expect("valid request")
}

/// The status and the JSON body of the answer.
pub(crate) async fn send<B>(
    state: &Arc<AppState<FakeQueue>>,
    request: Request<B>,
) -> (StatusCode, serde_json::Value)
where
    B: RequestBody,
{
    let response = route(Arc::clone(state), request).await;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("full body")
        .to_bytes();
    let json = serde_json::from_slice(&body).expect("a JSON answer");
    (status, json)
}
