//! The HTTP edge: the router and the webhook handler ([`routes`]), what every handler shares
//! ([`state`]), which request headers reach the envelope ([`headers`]) and how each refusal
//! is answered ([`error`]).

pub(crate) mod error;
pub(crate) mod headers;
pub(crate) mod routes;
pub(crate) mod state;
