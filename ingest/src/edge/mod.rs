//! The HTTP edge: the router ([`routes`]) and the webhook handler ([`webhook`]), what every
//! handler shares ([`state`]), which request headers reach the envelope ([`headers`]), how a
//! webhook's message is handed to the queue (`publish`) and how each refusal is answered
//! ([`error`]).

pub(crate) mod error;
pub(crate) mod headers;
mod publish;
pub(crate) mod routes;
pub(crate) mod state;
pub(crate) mod streamed;
#[cfg(test)]
pub(crate) mod testing;
mod webhook;
