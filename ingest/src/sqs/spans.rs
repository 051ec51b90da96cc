//! Ingest's messaging spans (see `webhook_shared::telemetry::messaging`): a `create` span per
//! webhook, child of the request's server span, whose context the message carries (the
//! `traceparent` attribute and the `AWSTraceHeader` system attribute); and a `send` span per
//! `SendMessageBatch` call, linked to the creation context of each message in it. Made only
//! when tracing is on.

use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;
use opentelemetry_sdk::trace::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use webhook_shared::telemetry::Traces;
use webhook_shared::telemetry::carrier;
use webhook_shared::telemetry::messaging::{self, Operation, QueueSpans};

use crate::sqs::publisher::{MessageTrace, OutgoingMessage};

/// Attribute naming the webhook's event id on its `create` span.
const EVENT_ID: &str = "webhook.event_id";
/// Attribute naming the webhook's source on its `create` span.
const SOURCE: &str = "webhook.source";

/// Makes ingest's messaging spans for one queue.
#[derive(Debug, Clone)]
pub(crate) struct Spans {
    queue: QueueSpans,
}

impl Spans {
    /// The spans for `queue_url`, or `None` when tracing is off.
    pub(crate) fn new(traces: &Traces, queue_url: &str) -> Option<Self> {
        QueueSpans::new(traces, queue_url).map(|queue| Self { queue })
    }

    /// Starts the `create` span of `message`, as a child of the current `tracing` span (the
    /// request's server span), and puts its context in the message.
    pub(crate) fn create(&self, message: &mut OutgoingMessage) -> Span {
        let parent = tracing::Span::current().context();
        let span = self
            .queue
            .span(
                Operation::Create,
                [
                    KeyValue::new(EVENT_ID, message.event_id.clone()),
                    KeyValue::new(SOURCE, message.source.clone()),
                ],
            )
            .start_with_context(self.queue.tracer(), &parent);
        let context = span.span_context().clone();
        message.trace = carrier::traceparent(&context).map(|traceparent| MessageTrace {
            xray: carrier::xray_header(&context),
            traceparent,
            context,
        });
        span
    }

    /// Starts the `send` span of one `SendMessageBatch` call with `messages`: a root span
    /// linked to each message's creation context.
    pub(crate) fn send(&self, messages: &[&OutgoingMessage]) -> Span {
        let links = messaging::links(
            messages
                .iter()
                .filter_map(|message| message.trace.as_ref().map(|trace| &trace.context)),
        );
        let builder = self
            .queue
            .span(Operation::Send, [messaging::batch_count(messages.len())])
            .with_links(links);
        self.queue.start_root(builder)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanKind, TraceContextExt as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    use super::*;

    #[test]
    fn a_message_carries_its_create_span_and_the_send_span_links_to_it() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let spans = Spans::new(
            &Traces::to(&provider),
            "https://sqs.eu-west-1.amazonaws.com/1/webhooks",
        )
        .expect("tracing is on");
        let mut message = OutgoingMessage {
            event_id: "evt-1".to_owned(),
            source: "github".to_owned(),
            group_id: "github".to_owned(),
            body: "{}".to_owned(),
            extended_payload_size: None,
            trace: None,
        };
        let mut create = spans.create(&mut message);
        let trace = message
            .trace
            .clone()
            .expect("the context is in the message");
        assert_eq!(&trace.context, create.span_context());
        assert_eq!(
            trace.traceparent,
            format!(
                "00-{}-{}-01",
                trace.context.trace_id(),
                trace.context.span_id()
            )
        );
        assert!(trace.xray.is_some_and(|xray| xray.starts_with("Root=1-")));
        spans.send(&[&message]).end();
        create.end();

        let finished = exporter.get_finished_spans().expect("spans");
        let send = finished
            .iter()
            .find(|s| s.name == "send webhooks")
            .expect("a send span");
        assert_eq!(send.span_kind, SpanKind::Client);
        assert_eq!(send.links.links[0].span_context, trace.context);
        assert_ne!(
            send.span_context.trace_id(),
            trace.context.trace_id(),
            "a batch's span is a trace of its own"
        );
        let create = finished
            .iter()
            .find(|s| s.name == "create webhooks")
            .expect("a create span");
        assert_eq!(create.span_kind, SpanKind::Producer);
        assert!(
            opentelemetry::Context::new()
                .with_remote_span_context(create.span_context.clone())
                .has_active_span()
        );
    }
}
