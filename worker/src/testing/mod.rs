//! Fakes for unit tests, one beside each seam: [`FakeQueue`] (SQS messages), [`FakeAdmin`](admin::FakeAdmin)
//! (SQS administration), [`FakeEventStore`] (the database), [`FakeObjects`](objects::FakeObjects)
//! (S3), each recording what it was asked, so the pipeline's rules run in milliseconds; a
//! pipeline harness over them (`pipeline.rs`); and helpers that build envelopes and held
//! messages. End-to-end tests use the real services.

pub(crate) mod admin;
pub(crate) mod event_store;
pub(crate) mod objects;
mod pg_error;
pub(crate) mod pipeline;
pub(crate) mod queue;

pub(crate) use event_store::{EventStoreState, FakeEventStore};
pub(crate) use pg_error::pg_error;
pub(crate) use queue::FakeQueue;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use webhook_shared::envelope::Envelope;

use aws_sdk_sqs::types::MessageAttributeValue;

use clap::Parser as _;

use crate::config::{Cli, Command, RedriveArgs};
use crate::pipeline::pending::Pending;
use crate::pipeline::window::Window;
use crate::sqs::InboundMessage;
use crate::sqs::payload::Payload;

/// A valid envelope with event id `id`.
pub(crate) fn envelope(id: &str) -> Envelope {
    Envelope {
        id: id.to_owned(),
        source: "test".to_owned(),
        received_at: chrono::Utc::now(),
        headers: BTreeMap::new(),
        content_type: Some("application/json".to_owned()),
        body: bytes::Bytes::from(format!(r#"{{"id":"{id}"}}"#)),
    }
}

/// The main queue of [`redrive_args`].
pub(crate) const REDRIVE_MAIN: &str = "http://sqs/000000000000/hooks";
/// The dead-letter queue of [`redrive_args`].
pub(crate) const REDRIVE_DLQ: &str = "http://sqs/000000000000/hooks-dlq";

/// `worker redrive` settings as the command line gives them: `args` after the queues
/// [`REDRIVE_MAIN`] and [`REDRIVE_DLQ`].
pub(crate) fn redrive_args(args: &[&str]) -> RedriveArgs {
    let queues = ["--queue-url", REDRIVE_MAIN, "--dlq-url", REDRIVE_DLQ];
    let line = ["worker", "redrive"].iter().chain(&queues).chain(args);
    match Cli::try_parse_from(line).map(|cli| cli.command) {
        Ok(Some(Command::Redrive(args))) => *args,
        other => panic!("not a redrive command line: {other:?}"),
    }
}

/// A message attribute.
pub(crate) fn attribute(data_type: &str, value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .expect("data_type is set")
}

/// Pending messages of the given body sizes, held in a fresh window.
pub(crate) async fn held_messages(
    fake: &FakeQueue,
    sizes: &[usize],
) -> (Arc<Window>, Vec<Pending>) {
    let window = Window::new(sizes.len().max(1));
    let messages: Vec<InboundMessage> = sizes
        .iter()
        .map(|&size| fake.message(&"x".repeat(size)))
        .collect();
    let held = window.reserve(sizes.len()).await.admit(
        messages
            .iter()
            .map(|m| (m.receipt.clone(), m.sent_ms, Arc::from("other"))),
        Duration::from_secs(30),
    );
    let pending = messages
        .into_iter()
        .zip(held)
        .enumerate()
        .map(|(n, (m, h))| Pending::new(Payload::Inline(envelope(&n.to_string())), m, h))
        .collect();
    (window, pending)
}
