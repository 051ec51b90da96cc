//! The HTTP edge: the router ([`routes`]) and the webhook handler ([`webhook`]), what every
//! handler shares ([`state`]), which request headers reach the envelope ([`headers`]) and how
//! each refusal is answered ([`error`]).

pub(crate) mod error;
pub(crate) mod headers;
pub(crate) mod routes;
pub(crate) mod state;
pub(crate) mod streamed;
#[cfg(test)]
pub(crate) mod testing;
mod webhook;
