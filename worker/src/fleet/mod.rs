//! One connection budget for the whole fleet (`DATABASE_CONNECTION_BUDGET`): the workers on
//! one database agree on their shares through PostgreSQL itself, a lease row each with
//! heartbeats and expiry (`lease.rs`); the shares are worked out by `allocation.rs`; each
//! worker holds to its own through the connection gate (`gate.rs`), which every use of a
//! connection passes, and its own small pool (`pool.rs`). One heartbeat is in `beat.rs`, its
//! deadlines and server-side limits in `timing.rs`. The lease reaches its table only through
//! the `LeaseTable` trait (`lease_table.rs`): PostgreSQL's transactions in `pg_table.rs`,
//! their statements in `table.rs`. Without a budget the same gate and pool are used, the gate
//! with a fixed `DATABASE_MAX_CONNECTIONS` permits.
//!
//! The role's `CONNECTION LIMIT` (set to the budget) stays the hard stop: it refuses what the
//! lease cannot prevent, such as several workers registering at once, each on a registration
//! connection.

mod allocation;
mod beat;
mod gate;
mod lease;
mod lease_table;
mod pg_table;
mod pool;
mod table;
#[cfg(test)]
mod testing;
mod timing;

pub(crate) use gate::{Gate, Lapsed};
pub(crate) use lease::{Lease, LeaseSettings};
pub(crate) use lease_table::Identity;
pub(crate) use pool::{AcquireError, Leased, LeasedPool};
pub(crate) use table::APPLICATION_NAME;
