//! The HTTP edge: the router and the webhook handler ([`routes`]), what every handler shares
//! ([`state`]), which request headers reach the envelope ([`headers`]) and how each refusal
//! is answered ([`error`]).

pub mod error;
pub mod headers;
pub mod routes;
pub mod state;
