//! A span's context as it travels: the W3C `traceparent` (an HTTP header from providers, a
//! message attribute on SQS) and X-Ray's `AWSTraceHeader` (an SQS system attribute, which
//! X-Ray-instrumented producers and consumers read). Formatting and parsing are the
//! `opentelemetry_sdk` and `opentelemetry-aws` propagators'.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// Name of the message attribute (and HTTP header) that carries the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// `context` as a W3C `traceparent` value, e.g.
/// `00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01`; `None` if it is not valid.
/// The `tracestate` is left out: its size has no bound, and SQS attributes count.
pub fn traceparent(context: &SpanContext) -> Option<String> {
    if !context.is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    let context = Context::new().with_remote_span_context(context.clone());
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The span context in a `traceparent` value, if it is a valid one.
pub fn from_traceparent(value: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// The parent context of a request, from its `traceparent` header (the provider's span)
/// when it has a valid one; else an empty context, and the request starts a trace.
pub fn from_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers))
}

/// `context` as an X-Ray trace header, e.g.
/// `Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1`.
pub fn xray_header(context: &SpanContext) -> Option<String> {
    opentelemetry_aws::trace::xray_propagator::span_context_to_string(context)
}

/// The span context in an X-Ray trace header, if it is a valid one.
pub fn from_xray_header(value: &str) -> Option<SpanContext> {
    opentelemetry_aws::trace::xray_propagator::span_context_from_str(value)
        .filter(SpanContext::is_valid)
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn sampled() -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex"),
            SpanId::from_hex("b7ad6b7169203331").expect("hex"),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        )
    }

    #[test]
    fn traceparent_round_trips_in_the_w3c_form() {
        let value = traceparent(&sampled()).expect("valid");
        assert_eq!(
            value,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(from_traceparent(&value), Some(sampled()));
        assert_eq!(from_traceparent("00-zz-b7ad6b7169203331-01"), None);
        assert_eq!(traceparent(&SpanContext::empty_context()), None);
    }

    #[test]
    fn the_xray_header_carries_the_same_ids() {
        let value = xray_header(&sampled()).expect("valid");
        assert_eq!(
            value,
            "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1"
        );
        let back = from_xray_header(&value).expect("parses");
        assert_eq!(
            (back.trace_id(), back.span_id(), back.is_sampled()),
            (sampled().trace_id(), sampled().span_id(), true)
        );
        assert_eq!(from_xray_header("Root=garbage"), None);
    }

    #[test]
    fn a_request_continues_the_providers_trace_only_from_a_valid_header() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        let parent = from_headers(&headers);
        assert_eq!(parent.span().span_context().span_id(), sampled().span_id());
        headers.insert(TRACEPARENT, http::HeaderValue::from_static("nonsense"));
        assert!(!from_headers(&headers).span().span_context().is_valid());
    }
}
