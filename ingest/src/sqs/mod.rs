//! Getting webhooks onto SQS: the [`Publish`](publisher::Publish) seam the handler uses, the
//! [`Batcher`](batcher::Batcher) that coalesces concurrent webhooks into `SendMessageBatch`
//! calls, the [`CallLimit`](call_limit::CallLimit) on how many of those calls are in flight,
//! the call itself over aws-sdk-sqs ([`send_batch`]), and the spans of both when tracing is
//! on ([`spans`]).

pub(crate) mod batcher;
pub(crate) mod call_limit;
pub(crate) mod publisher;
pub(crate) mod send_batch;
pub(crate) mod spans;
