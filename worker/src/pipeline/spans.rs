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
use opentelemetry_sdk::trace::{SdkTracer, Span};
use opentelemetry_semantic_conventions::attribute as semconv;
use webhook_shared::telemetry::Traces;
use webhook_shared::telemetry::messaging::{self, Destination, Operation};

use crate::sqs::InboundMessage;

/// `db.system.name`, and the database span's name: the handler decides what the
/// transaction does, so there is no one operation and table to name it by.
const DATABASE: &str = "postgresql";

/// Makes the worker's messaging spans for one queue.
#[derive(Debug, Clone)]
pub(crate) struct Spans {
    tracer: SdkTracer,
    destination: Destination,
}

impl Spans {
    /// The spans for `queue_url`, or `None` when tracing is off.
    pub(crate) fn new(traces: &Traces, queue_url: &str) -> Option<Self> {
        Some(Self {
            tracer: traces.tracer()?.clone(),
            destination: Destination::from_url(queue_url),
        })
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
        let builder = messaging::span(
            Operation::Receive,
            &self.destination,
            [messaging::batch_count(messages.len())],
        )
        .with_start_time(started)
        .with_links(messaging::links(&contexts));
        let mut span = messaging::start_root(&self.tracer, builder);
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
        let builder = messaging::span(
            Operation::Process,
            &self.destination,
            [messaging::batch_count(count)],
        )
        .with_start_time(started)
        .with_links(messaging::links(&contexts));
        let span = messaging::start_root(&self.tracer, builder);
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
        builder.start_with_context(&self.spans.tracer, &self.context)
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
        let builder = messaging::span(Operation::Process, &self.spans.destination, [message_id])
            .with_start_time(self.started)
            .with_links(vec![Link::with_context(self.span.span_context().clone())]);
        let mut span = builder.start_with_context(&self.spans.tracer, &parent);
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
