//! An in-memory [`LeaseTable`] for the lease's tests: rows that expire by tokio's clock (so
//! paused-time tests move them), other workers' rows put in or taken out by the test, and a
//! [`Fault`] to fail, hang, or find the fleet's lock busy.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use tokio::time::Instant;

use crate::fleet::allocation::Lease as Row;
use crate::fleet::gate::Permit;
use crate::fleet::lease_table::{BeatError, Identity, LeaseTable};
use crate::fleet::timing::Timing;

/// What the table does to the next calls, until told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// Works.
    None,
    /// Every call fails (connection refused).
    Fail,
    /// Opening a connection never ends.
    HangConnecting,
    /// The transactions and the departure never end.
    HangTransaction,
    /// The fleet's lock is busy: only the renewal of a worker's own row works.
    LockBusy,
}

/// A row and when it expires.
#[derive(Debug)]
struct Entry {
    row: Row,
    expires: Instant,
}

/// The table's contents and what it was asked.
#[derive(Debug)]
struct State {
    rows: Vec<Entry>,
    fault: Fault,
    /// Transactions under the fleet's lock begun.
    plans: usize,
    /// Whether this worker deleted its row.
    left: bool,
}

/// The in-memory lease table as one worker sees it; clones share it.
#[derive(Debug, Clone)]
pub(super) struct FakeTable {
    /// This worker's row key, in text form.
    me: String,
    /// How long a written or renewed row stays valid (as in PostgreSQL's table).
    validity: Duration,
    /// When the table was made: its `now()` is a fixed date plus the time since, by tokio's
    /// clock.
    epoch: Instant,
    state: Arc<Mutex<State>>,
}

/// A heartbeat's connection: the permit of the grant it runs under, if any.
#[derive(Debug)]
pub(super) struct FakeConn {
    _permit: Option<Permit>,
}

impl FakeTable {
    /// An empty table for `identity`, whose lease period is `period`.
    pub(super) fn new(identity: Identity, period: Duration) -> Self {
        Self {
            me: identity.worker_id.to_string(),
            validity: Timing::new(period).validity(),
            epoch: Instant::now(),
            state: Arc::new(Mutex::new(State {
                rows: Vec::new(),
                fault: Fault::None,
                plans: 0,
                left: false,
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The table's `now()`.
    fn now(&self) -> DateTime<Utc> {
        let epoch = Utc
            .timestamp_opt(1_700_000_000, 0)
            .single()
            .unwrap_or_default();
        epoch + self.epoch.elapsed()
    }

    /// This worker's row key.
    pub(super) fn me(&self) -> &str {
        &self.me
    }

    /// From now on, `fault`.
    pub(super) fn set_fault(&self, fault: Fault) {
        self.state().fault = fault;
    }

    /// Another worker registers now with `granted` of `budget`, wanting `wanted`; its row
    /// stays valid for `valid_for` (it never renews).
    pub(super) fn join(
        &self,
        worker_id: &str,
        granted: u32,
        wanted: u32,
        budget: u32,
        valid_for: Duration,
    ) {
        let row = Row {
            worker_id: worker_id.to_owned(),
            granted,
            wanted,
            budget,
            started_at: self.now(),
        };
        let expires = Instant::now() + valid_for;
        self.state().rows.push(Entry { row, expires });
    }

    /// The row of `worker_id` now grants `granted` (its worker grew or shrank).
    pub(super) fn set_granted(&self, worker_id: &str, granted: u32) {
        let mut state = self.state();
        for entry in state
            .rows
            .iter_mut()
            .filter(|e| e.row.worker_id == worker_id)
        {
            entry.row.granted = granted;
        }
    }

    /// Deletes the row of `worker_id`, as another worker expiring it would.
    pub(super) fn remove(&self, worker_id: &str) {
        self.state()
            .rows
            .retain(|entry| entry.row.worker_id != worker_id);
    }

    /// The row of `worker_id`, whether or not it expired.
    pub(super) fn row(&self, worker_id: &str) -> Option<Row> {
        let state = self.state();
        let entry = state.rows.iter().find(|e| e.row.worker_id == worker_id)?;
        Some(entry.row.clone())
    }

    /// When the row of `worker_id` expires.
    pub(super) fn expires(&self, worker_id: &str) -> Option<Instant> {
        let state = self.state();
        let entry = state.rows.iter().find(|e| e.row.worker_id == worker_id)?;
        Some(entry.expires)
    }

    /// Transactions under the fleet's lock begun so far.
    pub(super) fn plans(&self) -> usize {
        self.state().plans
    }

    /// Whether this worker deleted its row when it left.
    pub(super) fn left(&self) -> bool {
        self.state().left
    }

    fn fault(&self) -> Fault {
        self.state().fault
    }
}

/// The error of a failing call.
fn refused() -> BeatError {
    BeatError::Database(sqlx::Error::Protocol("the fake table refuses".into()))
}

impl LeaseTable for FakeTable {
    type Conn = FakeConn;

    async fn open(&self, permit: Option<Permit>) -> Result<FakeConn, BeatError> {
        match self.fault() {
            Fault::Fail => Err(refused()),
            Fault::HangConnecting => std::future::pending().await,
            _ => Ok(FakeConn { _permit: permit }),
        }
    }

    async fn plan<P: Send>(
        &self,
        _conn: &mut FakeConn,
        decide: impl FnOnce(Vec<Row>, DateTime<Utc>) -> Result<(Row, P), BeatError> + Send,
    ) -> Result<Option<P>, BeatError> {
        self.state().plans += 1;
        match self.fault() {
            Fault::Fail => return Err(refused()),
            Fault::HangTransaction => std::future::pending().await,
            Fault::LockBusy => return Ok(None),
            Fault::None | Fault::HangConnecting => {}
        }
        let now = self.now();
        let mut state = self.state();
        let at = Instant::now();
        let live = state.rows.iter().filter(|entry| entry.expires >= at);
        let rows = live.map(|entry| entry.row.clone()).collect();
        // Rolled back on an error: nothing changes.
        let (row, planned) = decide(rows, now)?;
        state.rows.retain(|entry| entry.expires >= at);
        let expires = at + self.validity;
        match state
            .rows
            .iter_mut()
            .find(|e| e.row.worker_id == row.worker_id)
        {
            // `started_at` is kept, as in PostgreSQL's table.
            Some(entry) => {
                entry.row = Row {
                    started_at: entry.row.started_at,
                    ..row
                };
                entry.expires = expires;
            }
            None => state.rows.push(Entry {
                row: Row {
                    started_at: now,
                    ..row
                },
                expires,
            }),
        }
        Ok(Some(planned))
    }

    async fn renew_own(&self, _conn: &mut FakeConn, held: u32) -> Result<bool, BeatError> {
        match self.fault() {
            Fault::Fail => return Err(refused()),
            Fault::HangTransaction => std::future::pending().await,
            _ => {}
        }
        let at = Instant::now();
        let mut state = self.state();
        let own = state.rows.iter_mut().find(|e| e.row.worker_id == self.me);
        Ok(match own {
            Some(entry) if entry.expires >= at && entry.row.granted >= held => {
                entry.expires = at + self.validity;
                true
            }
            _ => false,
        })
    }

    async fn release(&self, conn: FakeConn, _healthy: bool) {
        drop(conn);
    }

    async fn leave(&self) -> Result<(), BeatError> {
        match self.fault() {
            Fault::Fail => return Err(refused()),
            Fault::HangConnecting | Fault::HangTransaction => std::future::pending().await,
            Fault::None | Fault::LockBusy => {}
        }
        self.remove(&self.me.clone());
        self.state().left = true;
        Ok(())
    }
}
