//! The worker's messaging spans (see `webhook_shared::telemetry::messaging`), made only when
//! tracing is on:
//! - `receive {queue}` (CLIENT), one per `ReceiveMessage` that brought messages or failed,
//!   linked to each message's creation context;
//! - `process {queue}` (CONSUMER) per batch written, linked to each message's creation
//!   context, with the database write (its transactions) as a child span;
//! - `process {queue}` (CONSUMER) per message, the child of its creation context (so the
//!   webhook's trace runs from the provider's request to the commit), linked to the batch's
//!   span, carrying `messaging.message.id` and, when it was not stored, `error.type`.

use std::time::SystemTime;

use opentelemetry::trace::{Link, Span as _, SpanContext, SpanKind, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::Span;
use opentelemetry_semantic_conventions::attribute as semconv;
use webhook_shared::telemetry::Traces;
use webhook_shared::telemetry::messaging::{self, Operation, QueueSpans};

use crate::sqs::InboundMessage;

/// `db.system.name`, and the database span's name: the handler decides what the
/// transaction does, so there is no one operation and table to name it by.
const DATABASE: &str = "postgresql";

/// Makes the worker's messaging spans for one queue.
#[derive(Debug, Clone)]
pub(crate) struct Spans {
    queue: QueueSpans,
}

impl Spans {
    /// The spans for `queue_url`, or `None` when tracing is off.
    pub(crate) fn new(traces: &Traces, queue_url: &str) -> Option<Self> {
        QueueSpans::new(traces, queue_url).map(|queue| Self { queue })
    }

    /// Records a `receive` span from `started` to now: the messages it brought, or the
    /// failure (`error_type`).
    pub(crate) fn received(
        &self,
        started: SystemTime,
        messages: &[InboundMessage],
        error_type: Option<&'static str>,
    ) {
        let contexts: Vec<SpanContext> = messages
            .iter()
            .filter_map(InboundMessage::creation_context)
            .collect();
        let builder = self
            .queue
            .span(Operation::Receive, [messaging::batch_count(messages.len())])
            .with_start_time(started)
            .with_links(messaging::links(&contexts));
        let mut span = self.queue.start_root(builder);
        if let Some(error_type) = error_type {
            messaging::fail(&mut span, error_type);
        }
        span.end();
    }

    /// Starts the `process` span of a batch of `messages`.
    pub(crate) fn batch<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a InboundMessage>,
    ) -> BatchSpan {
        let started = SystemTime::now();
        let mut count = 0;
        let contexts: Vec<SpanContext> = messages
            .into_iter()
            .inspect(|_| count += 1)
            .filter_map(InboundMessage::creation_context)
            .collect();
        let builder = self
            .queue
            .span(Operation::Process, [messaging::batch_count(count)])
            .with_start_time(started)
            .with_links(messaging::links(&contexts));
        let span = self.queue.start_root(builder);
        BatchSpan {
            spans: self.clone(),
            context: Context::new().with_remote_span_context(span.span_context().clone()),
            span,
            started,
        }
    }
}

/// A batch's `process` span, open while the batch is written.
#[derive(Debug)]
pub(crate) struct BatchSpan {
    spans: Spans,
    span: Span,
    context: Context,
    started: SystemTime,
}

impl BatchSpan {
    /// Starts the database span of writing `events` events (the transaction, and the
    /// smaller ones a refused batch is split into), a child of the batch's span.
    pub(crate) fn write(&self, events: usize) -> Span {
        let builder = opentelemetry::trace::SpanBuilder::from_name(DATABASE)
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new(semconv::DB_SYSTEM_NAME, DATABASE),
                KeyValue::new(
                    semconv::DB_OPERATION_BATCH_SIZE,
                    i64::try_from(events).unwrap_or(i64::MAX),
                ),
            ]);
        builder.start_with_context(self.spans.queue.tracer(), &self.context)
    }

    /// Records the per-message `process` span of `message`, from the batch's start to now:
    /// the child of the message's creation context, linked to the batch's span;
    /// `error_type` when it was not stored (or found stored already).
    pub(crate) fn processed(&self, message: &InboundMessage, error_type: Option<&'static str>) {
        let parent = message
            .creation_context()
            .map_or_else(Context::new, |creation| {
                Context::new().with_remote_span_context(creation)
            });
        let message_id = KeyValue::new(
            semconv::MESSAGING_MESSAGE_ID,
            message.receipt.message_id.clone(),
        );
        let builder = self
            .spans
            .queue
            .span(Operation::Process, [message_id])
            .with_start_time(self.started)
            .with_links(vec![Link::with_context(self.span.span_context().clone())]);
        let mut span = builder.start_with_context(self.spans.queue.tracer(), &parent);
        if let Some(error_type) = error_type {
            messaging::fail(&mut span, error_type);
        }
        span.end();
    }

    /// Ends the batch's span; `error_type` when its first write attempt failed.
    pub(crate) fn end(mut self, error_type: Option<&'static str>) {
        if let Some(error_type) = error_type {
            messaging::fail(&mut self.span, error_type);
        }
        self.span.end();
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::MessageAttributeValue;
    use opentelemetry::trace::{SpanId, Status, TraceId};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

    use super::*;
    use crate::testing::FakeQueue;

    const QUEUE: &str = "http://127.0.0.1:4566/000000000000/webhooks";
    const CREATION: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn traced() -> (Spans, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let spans = Spans::new(&Traces::to(&provider), QUEUE).expect("tracing is on");
        (spans, exporter)
    }

    fn attribute(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    }

    fn message_created_in(fake: &FakeQueue, traceparent: &str) -> InboundMessage {
        let mut message = fake.message("{}");
        message.attributes.insert(
            "traceparent".to_owned(),
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(traceparent)
                .build()
                .expect("data type set"),
        );
        message
    }

    #[test]
    fn a_message_is_processed_in_its_creation_trace_and_linked_to_its_batch() {
        let (spans, exporter) = traced();
        let fake = FakeQueue::default();
        let created = message_created_in(&fake, CREATION);
        let untraced = fake.message("{}");
        let batch = spans.batch([&created, &untraced]);
        batch.write(2).end();
        batch.processed(&created, None);
        batch.processed(&untraced, Some("refused"));
        batch.end(None);

        let finished = exporter.get_finished_spans().expect("spans");
        let batch = finished
            .iter()
            .find(|s| {
                s.span_kind == SpanKind::Consumer && attribute(s, "messaging.message.id").is_none()
            })
            .expect("the batch span");
        assert_eq!(batch.parent_span_id, SpanId::INVALID, "a root");
        assert_eq!(batch.links.len(), 1, "linked to the one traced message");
        assert_eq!(batch.name, "process webhooks");
        assert_eq!(
            batch.links.links[0].span_context.span_id(),
            SpanId::from_hex("b7ad6b7169203331").expect("hex")
        );
        assert_eq!(
            attribute(batch, "messaging.batch.message_count"),
            Some(2_i64.into())
        );
        let database = finished
            .iter()
            .find(|s| s.name == "postgresql")
            .expect("the database span");
        assert_eq!(database.parent_span_id, batch.span_context.span_id());

        let per_message: Vec<&SpanData> = finished
            .iter()
            .filter(|s| attribute(s, "messaging.message.id").is_some())
            .collect();
        assert_eq!(per_message.len(), 2);
        let in_creation_trace = per_message
            .iter()
            .find(|s| s.parent_span_id == SpanId::from_hex("b7ad6b7169203331").expect("hex"))
            .expect("the traced message's span is the child of its creation context");
        assert_eq!(
            in_creation_trace.span_context.trace_id(),
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex")
        );
        assert_eq!(in_creation_trace.status, Status::Unset);
        for span in &per_message {
            assert_eq!(
                span.links.links[0].span_context.span_id(),
                batch.span_context.span_id(),
                "each message's span links to its batch's"
            );
        }
        let refused = per_message
            .iter()
            .find(|s| s.parent_span_id == SpanId::INVALID)
            .expect("the untraced message's span starts a trace");
        assert_eq!(attribute(refused, "error.type"), Some("refused".into()));
        assert!(matches!(refused.status, Status::Error { .. }));
    }

    #[test]
    fn the_creation_context_comes_from_traceparent_else_from_aws_trace_header() {
        let fake = FakeQueue::default();
        let mut message = fake.message("{}");
        assert_eq!(message.creation_context(), None);
        message.trace_header = Some(
            "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1".to_owned(),
        );
        let from_xray = message.creation_context().expect("from AWSTraceHeader");
        assert_eq!(
            from_xray.trace_id(),
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex")
        );
        let both = message_created_in(
            &fake,
            "00-11111111111111111111111111111111-2222222222222222-01",
        );
        let mut both = both;
        both.trace_header = message.trace_header.clone();
        assert_eq!(
            both.creation_context().map(|c| c.span_id()),
            Some(SpanId::from_hex("2222222222222222").expect("hex")),
            "traceparent wins"
        );
    }

    #[test]
    fn a_failed_receive_is_a_span_with_its_error() {
        let (spans, exporter) = traced();
        spans.received(SystemTime::now(), &[], Some("receive_failed"));
        let finished = exporter.get_finished_spans().expect("spans");
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].name, "receive webhooks");
        assert_eq!(finished[0].span_kind, SpanKind::Client);
        assert_eq!(
            attribute(&finished[0], "error.type"),
            Some("receive_failed".into())
        );
    }
}
