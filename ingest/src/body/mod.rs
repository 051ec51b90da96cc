//! Reading a request body into memory, the ways a client cannot hurt the process by it: every
//! byte held counts against one memory budget ([`budget`]), the client must keep up a minimum
//! data rate ([`pace`]), and a body is read only up to its limit ([`read`]), the rest left for
//! the S3 path when offloading is on. What a refusal answers is [`crate::edge::error`]'s.

pub(crate) mod budget;
pub(crate) mod pace;
pub(crate) mod read;

use std::time::Duration;

use bytes::Bytes;
use hyper::body::Body as HttpBody;

/// What a request body must be to be read: hyper's `Incoming` in production, any buffered or
/// streamed body in tests.
pub(crate) trait RequestBody:
    HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + 'static
{
}

impl<B> RequestBody for B where B: HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

/// The error type bodies are read with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body could not be read into memory.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The budget has no room for it now.
    #[error("no room in the body budget")]
    NoRoom,
    /// The client sent its body slower than the minimum rate once the grace period was over.
    #[error("the body came too slowly: {received} bytes in {waited:?} of waiting")]
    TooSlow {
        /// Body bytes received.
        received: u64,
        /// Time spent waiting for them.
        waited: Duration,
    },
    /// The client broke off, or the framing was invalid.
    #[error("the body could not be read: {0}")]
    Broken(BoxError),
}

impl From<webhook_shared::byte_budget::NoRoom> for ReadError {
    fn from(_: webhook_shared::byte_budget::NoRoom) -> Self {
        Self::NoRoom
    }
}
