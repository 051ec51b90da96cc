//! The matrix as a markdown table, and the document written with it.

use std::fmt::Write as _;

use crate::measure::{NORMAL_LAG, Outcome};
use crate::rows::Row;

/// Seconds with one decimal, or "never" when something was never stored.
fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s"))
}

/// The table, one line per row.
pub(crate) fn table(outcomes: &[Outcome]) -> String {
    let mut text = String::from(
        "| fault | duration | accepted | stored | lost | duplicates | in the DLQ | recovery after the end | (from the start) | slowest 202 | result |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for outcome in outcomes {
        let result = if outcome.passed() {
            "pass".to_owned()
        } else {
            format!("**FAIL**: {}", outcome.failures.join(", "))
        };
        let (after, start) = (
            seconds(outcome.recovery_after_end),
            seconds(outcome.recovery_from_start),
        );
        // The figure the rule looks at is in bold.
        let (after, start) = if outcome.from_start {
            (after, format!("**{start}**"))
        } else {
            (format!("**{after}**"), start)
        };
        let _ = writeln!(
            text,
            "| {} | {:.0} s | {} | {} | {} | {} | {} | {after} | {start} | {:.2} s | {result} |",
            outcome.name,
            outcome.seconds,
            outcome.accepted,
            outcome.stored,
            outcome.lost,
            outcome.duplicates,
            outcome.in_dlq,
            outcome.slowest_202,
        );
    }
    text
}

/// What a run was, for the document's head.
pub(crate) struct RunInfo {
    /// The command as run.
    pub(crate) command: String,
    /// `release` or `dev`.
    pub(crate) profile: String,
}

/// The document: date, command, profile, the rules, the table and a note per fault.
pub(crate) fn document(info: &RunInfo, outcomes: &[Outcome]) -> String {
    let mut text = String::from("# Fault matrix\n\n");
    let _ = writeln!(
        text,
        "Written by `scripts/fault-matrix.sh` on {} (UTC): `{}`, {} build, on a 2-core machine \
         shared with other builds. Each fault runs through the whole system (ingest, SQS and S3 \
         in LocalStack, the worker, PostgreSQL, everything on 127.0.0.1) with a fresh queue \
         (maxReceiveCount 5, visibility 30 s, so that burnt receives would show in the DLQ) and \
         database, under a steady load of ~20 new webhooks/s from 8 providers that retry each \
         webhook (same `x-delivery` id) every 250 ms until it gets a 2xx: 5 s before the fault, \
         during it, and 10 s after; then the run waits for everything accepted to be stored.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        info.command,
        info.profile,
    );
    text.push_str(
        "Columns: *accepted*, webhooks answered 2xx; *stored*, distinct ids in `webhook_events`; \
         *lost*, accepted and never stored; *duplicates*, ids stored more than once (the table's primary key \
         `(source, id)` refuses a second row, so this checks the key as much as the worker); \
         *in the DLQ*, messages in the dead-letter queue at the end; *slowest 202*, the longest request \
         answered 2xx. ",
    );
    let _ = writeln!(
        text,
        "*Recovery*: from the fault's end (or start) until the last webhook it delayed (stored \
         more than {} s after its 2xx) was stored; 0 when none was delayed past that moment, \
         \"never\" when something was lost. Rules: 0 lost, 0 duplicates, 0 in the DLQ, recovery \
         within 60 s of the fault's end, or of its start where new connections work (the \
         figure in bold).\n",
        NORMAL_LAG.as_secs()
    );
    text.push_str(&table(outcomes));
    text.push_str("\nHow each fault is injected:\n\n");
    for outcome in outcomes {
        if let Some(row) = Row::parse(outcome.name) {
            let _ = writeln!(text, "- **{}**: {}.", outcome.name, row.note());
        }
    }
    text
}
