//! The rows of the fault matrix: each fault's name, its default and quick durations, what the
//! whole system needs for it, and how it is injected (for the table's notes).

/// One fault of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Row {
    /// The worker's database connections reset (RST) every few seconds; new ones work.
    Reset,
    /// The worker's open database connections go silent; new ones work.
    Silent,
    /// Everything between the worker and the database is silent.
    AllSilent,
    /// The worker's login is revoked.
    LoginRevoked,
    /// An outside session holds a lock on `webhook_events`.
    TableLock,
    /// An outside, frozen session holds the fleet's advisory lock.
    FleetLock,
    /// PostgreSQL is stopped and started again.
    PgRestart,
    /// S3 answers the worker 503 SlowDown.
    S3Error,
    /// S3 is silent for the worker.
    S3Silent,
    /// SQS answers ingest and the worker 5xx, then throttles them.
    SqsErrors,
    /// A flood of stalled uploads with forged signatures holds ingest's connections.
    SlowUploads,
    /// The worker is killed with SIGKILL (and a new one started) every few seconds.
    KillWorker,
    /// Ingest is killed with SIGKILL (and a new one started) every few seconds.
    KillIngest,
}

impl Row {
    /// Every row, in the table's order.
    pub(crate) const ALL: [Self; 13] = [
        Self::Reset,
        Self::Silent,
        Self::AllSilent,
        Self::LoginRevoked,
        Self::TableLock,
        Self::FleetLock,
        Self::PgRestart,
        Self::S3Error,
        Self::S3Silent,
        Self::SqsErrors,
        Self::SlowUploads,
        Self::KillWorker,
        Self::KillIngest,
    ];

    /// The rows of `--quick` (CI).
    pub(crate) const QUICK: [Self; 6] = [
        Self::Silent,
        Self::LoginRevoked,
        Self::TableLock,
        Self::S3Error,
        Self::SqsErrors,
        Self::KillWorker,
    ];

    /// The name `--only` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Silent => "silent",
            Self::AllSilent => "all-silent",
            Self::LoginRevoked => "login-revoked",
            Self::TableLock => "table-lock",
            Self::FleetLock => "fleet-lock",
            Self::PgRestart => "pg-restart",
            Self::S3Error => "s3-503",
            Self::S3Silent => "s3-silent",
            Self::SqsErrors => "sqs-5xx",
            Self::SlowUploads => "slow-uploads",
            Self::KillWorker => "kill-worker",
            Self::KillIngest => "kill-ingest",
        }
    }

    /// The row named `name`.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|row| row.name() == name)
    }

    /// The fault's duration in the full matrix, in seconds.
    pub(crate) fn default_seconds(self) -> u64 {
        match self {
            Self::S3Error | Self::S3Silent => 90,
            Self::Reset | Self::SqsErrors | Self::KillWorker | Self::KillIngest => 30,
            Self::PgRestart => 10,
            Self::Silent
            | Self::AllSilent
            | Self::LoginRevoked
            | Self::TableLock
            | Self::FleetLock
            | Self::SlowUploads => 60,
        }
    }

    /// Whether new connections work during the fault: then recovery counts from its start.
    pub(crate) fn new_connections_work(self) -> bool {
        matches!(self, Self::Reset | Self::Silent)
    }

    /// Whether the load includes large webhooks (offloaded to S3 by ingest).
    pub(crate) fn needs_s3(self) -> bool {
        matches!(self, Self::S3Error | Self::S3Silent)
    }

    /// How many workers the row runs (the fleet row runs two sharing a connection budget).
    pub(crate) fn workers(self) -> usize {
        if self == Self::FleetLock { 2 } else { 1 }
    }

    /// How the fault is injected, for the table's notes.
    pub(crate) fn note(self) -> &'static str {
        match self {
            Self::Reset => {
                "a TCP proxy between the worker and PostgreSQL resets (RST, SO_LINGER 0) every open connection every 3 s; new connections work"
            }
            Self::Silent => {
                "the proxy closes the server side of every open connection and swallows what the worker sends on it, answering nothing (a vanished primary, a dropped NAT entry); new connections work. The duration is how long the load runs with it"
            }
            Self::AllSilent => {
                "the proxy silences every open connection as above, and accepts new ones without forwarding or answering anything, for the duration; then new connections are forwarded again (the silenced ones stay silent)"
            }
            Self::LoginRevoked => {
                "the worker logs in as its own role; `ALTER ROLE .. NOLOGIN` and `pg_terminate_backend` of its sessions, then `LOGIN` again after the duration"
            }
            Self::TableLock => {
                "an outside transaction holds `LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE` for the duration, then rolls back"
            }
            Self::FleetLock => {
                "two workers share `DATABASE_CONNECTION_BUDGET=8`; an outside transaction takes the fleet's advisory lock (`pg_advisory_xact_lock`) and then does nothing for the duration"
            }
            Self::PgRestart => {
                "the PostgreSQL server is stopped (`pg_ctlcluster .. stop`, fast mode) and started again after the duration"
            }
            Self::S3Error => {
                "the worker reaches S3 through an HTTP proxy that answers every request `503 SlowDown`; 1 webhook in 10 is ~300 KB, offloaded to S3 by ingest (threshold 100 KB, ingest reaches S3 directly)"
            }
            Self::S3Silent => {
                "as above, but the proxy accepts and holds every request, never answering"
            }
            Self::SqsErrors => {
                "ingest and the worker reach SQS through an HTTP proxy that answers every request `503` for the first half of the duration, then `400 ThrottlingException` for the second"
            }
            Self::SlowUploads => {
                "50 connections a second (at most 400 open) send the head of a 700 KB GitHub webhook with a forged signature and 1 KB of its body, then stall"
            }
            Self::KillWorker => {
                "`kill -9` of the worker every 10 s of the duration, a new one started at once; SQS gives the killed worker's messages back after the 30 s visibility timeout"
            }
            Self::KillIngest => {
                "`kill -9` of ingest every 10 s of the duration, then a new one started on a new port; the providers retry against the dead one until the new one is healthy, then move to it"
            }
        }
    }
}
