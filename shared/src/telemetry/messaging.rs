//! The spans of the OpenTelemetry messaging conventions (semantic conventions 1.3x, AWS SQS),
//! as both binaries make them: `create` (PRODUCER, one per webhook, its context carried in
//! the message), `send` (CLIENT, one per `SendMessageBatch`, linked to each message's
//! creation context), `receive` (CLIENT) and `process` (CONSUMER). Names are
//! `{operation} {queue name}`; the attributes every span has are set here, the rest
//! (links, batch size, message id, `error.type`) by the caller.

use opentelemetry::trace::{Link, SpanBuilder, SpanContext, SpanKind, Status};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use opentelemetry_semantic_conventions::attribute as semconv;

use crate::telemetry::Traces;

/// `messaging.system` for SQS.
const SYSTEM: &str = "aws_sqs";

/// The queue the spans are about: `messaging.destination.name`, `aws.sqs.queue.url` and the
/// server the queue is on.
#[derive(Debug, Clone)]
pub struct Destination {
    name: String,
    url: String,
    server: Option<(String, i64)>,
}

impl Destination {
    /// The queue at `url` (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`).
    pub fn from_url(url: &str) -> Self {
        let name = url.trim_end_matches('/').rsplit('/').next().unwrap_or(url);
        let server = url.parse::<http::Uri>().ok().and_then(|uri| {
            let port = uri.port_u16().or(match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            })?;
            Some((uri.host()?.to_owned(), i64::from(port)))
        });
        Self {
            name: name.to_owned(),
            url: url.to_owned(),
            server,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A tracer and the queue its spans are about: what both binaries' span makers start from.
#[derive(Debug, Clone)]
pub struct QueueSpans {
    tracer: SdkTracer,
    destination: Destination,
}

impl QueueSpans {
    /// Spans about the queue at `queue_url`, or `None` when tracing is off.
    pub fn new(traces: &Traces, queue_url: &str) -> Option<Self> {
        Some(Self {
            tracer: traces.tracer()?.clone(),
            destination: Destination::from_url(queue_url),
        })
    }

    /// The tracer.
    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// A builder for an `operation` span on this queue (see [`span`]).
    pub fn span(
        &self,
        operation: Operation,
        extra: impl IntoIterator<Item = KeyValue>,
    ) -> SpanBuilder {
        span(operation, &self.destination, extra)
    }

    /// Starts `builder` with no parent (see [`start_root`]).
    pub fn start_root(&self, builder: SpanBuilder) -> Span {
        start_root(&self.tracer, builder)
    }
}

/// A messaging operation, as the conventions name and type it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A message is created (ingest, one per webhook); its context is the message's.
    Create,
    /// Messages are sent in one call (ingest, one per `SendMessageBatch`).
    Send,
    /// Messages are received in one call (worker, one per `ReceiveMessage`).
    Receive,
    /// Messages are processed (worker: one span per batch written, one per message).
    Process,
}

impl Operation {
    /// `messaging.operation.name` and `messaging.operation.type` (the same words here).
    fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Send => "send",
            Self::Receive => "receive",
            Self::Process => "process",
        }
    }

    /// The span kind: a `send` span is CLIENT because its own context is not the one the
    /// messages carry (each has its `create` span's).
    fn kind(self) -> SpanKind {
        match self {
            Self::Create => SpanKind::Producer,
            Self::Send | Self::Receive => SpanKind::Client,
            Self::Process => SpanKind::Consumer,
        }
    }
}

/// A builder for an `operation` span on `destination`, with its name, kind, the attributes
/// every messaging span has and `extra` (the builder's attributes are set once: add more
/// here, not with `with_attributes`, which would replace these).
pub fn span(
    operation: Operation,
    destination: &Destination,
    extra: impl IntoIterator<Item = KeyValue>,
) -> SpanBuilder {
    let mut attributes = vec![
        KeyValue::new(semconv::MESSAGING_SYSTEM, SYSTEM),
        KeyValue::new(semconv::MESSAGING_OPERATION_NAME, operation.name()),
        KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, operation.name()),
        KeyValue::new(
            semconv::MESSAGING_DESTINATION_NAME,
            destination.name.clone(),
        ),
        KeyValue::new(semconv::AWS_SQS_QUEUE_URL, destination.url.clone()),
    ];
    if let Some((address, port)) = &destination.server {
        attributes.push(KeyValue::new(semconv::SERVER_ADDRESS, address.clone()));
        attributes.push(KeyValue::new(semconv::SERVER_PORT, *port));
    }
    attributes.extend(extra);
    SpanBuilder::from_name(format!("{} {}", operation.name(), destination.name))
        .with_kind(operation.kind())
        .with_attributes(attributes)
}

/// Starts `builder` as a span with no parent: a batch's span starts a trace of its own,
/// linked to the messages' traces, whatever context is current.
pub fn start_root(tracer: &SdkTracer, builder: SpanBuilder) -> Span {
    builder.start_with_context(tracer, &Context::new())
}

/// Links to each valid context of `contexts`.
pub fn links<'a>(contexts: impl IntoIterator<Item = &'a SpanContext>) -> Vec<Link> {
    contexts
        .into_iter()
        .filter(|context| context.is_valid())
        .map(|context| Link::with_context(context.clone()))
        .collect()
}

/// `messaging.batch.message_count`.
pub fn batch_count(messages: usize) -> KeyValue {
    KeyValue::new(
        semconv::MESSAGING_BATCH_MESSAGE_COUNT,
        i64::try_from(messages).unwrap_or(i64::MAX),
    )
}

/// Marks `span` as failed with `error_type` (a bounded value: an SQS error code, `timeout`,
/// a class of database error).
pub fn fail(span: &mut Span, error_type: impl Into<String>) {
    use opentelemetry::trace::Span as _;
    let error_type = error_type.into();
    span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, error_type.clone()));
    span.set_status(Status::error(error_type));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_knows_its_queue_and_server() {
        let queue = Destination::from_url("http://127.0.0.1:4566/000000000000/webhooks");
        assert_eq!(queue.name(), "webhooks");
        assert_eq!(queue.server, Some(("127.0.0.1".to_owned(), 4566)));
        let aws = Destination::from_url("https://sqs.eu-west-1.amazonaws.com/1/q.fifo");
        assert_eq!(aws.name(), "q.fifo");
        assert_eq!(
            aws.server,
            Some(("sqs.eu-west-1.amazonaws.com".to_owned(), 443))
        );
    }

    #[test]
    fn spans_are_named_and_kinded_by_the_conventions() {
        let queue = Destination::from_url("https://sqs.eu-west-1.amazonaws.com/1/webhooks");
        let send = span(Operation::Send, &queue, [batch_count(3)]);
        assert_eq!(send.name, "send webhooks");
        assert_eq!(send.span_kind, Some(SpanKind::Client));
        assert_eq!(
            span(Operation::Create, &queue, []).span_kind,
            Some(SpanKind::Producer)
        );
        assert_eq!(
            span(Operation::Process, &queue, []).span_kind,
            Some(SpanKind::Consumer)
        );
        let attributes = send.attributes.unwrap_or_default();
        assert!(attributes.contains(&KeyValue::new("messaging.system", "aws_sqs")));
        assert!(attributes.contains(&KeyValue::new("messaging.destination.name", "webhooks")));
        assert!(attributes.contains(&KeyValue::new("messaging.operation.type", "send")));
        assert!(attributes.contains(&KeyValue::new("messaging.batch.message_count", 3)));
    }
}
