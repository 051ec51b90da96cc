//! The filtered `worker redrive` (and `--dry-run`). StartMessageMoveTask cannot filter, so
//! the DLQ is scanned: each receive (10 messages, a short wait, hidden for the scan's
//! visibility) is sorted by the [`Filter`]. Matching messages are sent to the main queue as
//! copies without their `poison_reason`, then deleted from the DLQ (send, then delete, as
//! the worker dead-letters: a crash between leaves a copy in both, and the table keeps one
//! event). The others stay hidden, so the scan never meets them twice, and are given back
//! (visibility 0) at its end. It ends after two empty receives in a row, when a receive
//! brings back only messages already seen (their visibility ran out), at the held limit, or
//! when stopped (Ctrl-C).

#![allow(
    clippy::print_stdout,
    reason = "progress lines and the summary on stdout are this command's output"
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use webhook_shared::sqs::MAX_BATCH_ENTRIES;

use crate::sqs::client::ATTRIBUTE_POISON_REASON;
use crate::sqs::redrive::filter::{Facts, Filter};
use crate::sqs::{InboundMessage, Queue, QueueClient, QueueError, Receipt};

/// Longest wait of each receive from the DLQ: an empty queue answers soon.
pub(crate) const SCAN_WAIT: Duration = Duration::from_secs(1);
/// Most messages kept hidden at once: SQS allows about 120,000 in flight on a queue
/// (SQSDeveloperGuide/quotas-queues.html), and past it every receive fails.
pub(crate) const MAX_HELD: usize = 100_000;
/// Empty receives in a row that end the scan.
const EMPTY_RECEIVES_TO_END: u32 = 2;
/// Most (source, reason) rows printed in the summary.
const MAX_SUMMARY_ROWS: usize = 50;

/// How a scan goes.
#[derive(Debug, Clone)]
pub(crate) struct ScanSettings {
    /// How long each received message stays hidden.
    pub(crate) visibility: Duration,
    /// Count only: move nothing, give everything back.
    pub(crate) dry_run: bool,
    /// Most messages sent to the main queue per second.
    pub(crate) per_second: Option<NonZeroU32>,
    /// Time between progress lines.
    pub(crate) progress_every: Duration,
    /// Most messages kept hidden before the scan stops ([`MAX_HELD`]).
    pub(crate) max_held: usize,
}

/// Why a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Two empty receives in a row: every message was seen.
    Drained,
    /// A receive brought back only messages seen before: their visibility ran out.
    SeenAgain,
    /// [`ScanSettings::max_held`] messages were kept hidden.
    HeldLimit,
    /// Stopped from outside (Ctrl-C, SIGTERM).
    Interrupted,
}

/// What a scan did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanReport {
    /// Messages received and sorted (each once).
    pub(crate) scanned: u64,
    /// Matching messages by (source, reason) label.
    pub(crate) matched: BTreeMap<(String, String), u64>,
    /// Copies sent to the main queue.
    pub(crate) moved: u64,
    /// Matching messages whose copy SQS refused: they stay in the DLQ.
    pub(crate) unsent: u64,
    /// Copies sent whose original could not be deleted from the DLQ.
    pub(crate) undeleted: u64,
    /// Messages given back to the DLQ at the end.
    pub(crate) released: u64,
    /// Messages that could not be given back (visible again once their visibility ends).
    pub(crate) unreleased: u64,
    /// Why the scan ended.
    pub(crate) end: End,
}

/// Scans the DLQ `dlq`, moving what `filter` selects to `main`; gives back what it keeps
/// even when a receive fails (then the error is returned after a progress line).
pub(crate) async fn scan<D: QueueClient, M: QueueClient>(
    dlq: &Queue<D>,
    main: &M,
    filter: &Filter,
    settings: &ScanSettings,
    stop: &CancellationToken,
) -> Result<ScanReport, QueueError> {
    let mut scan = Scan {
        dlq,
        main,
        filter,
        settings,
        // A burst of one second's worth: chunks are cut to it.
        limiter: settings
            .per_second
            .map(|rate| RateLimiter::direct(Quota::per_second(rate))),
        kept: HashMap::new(),
        done: HashSet::new(),
        report: ScanReport {
            scanned: 0,
            matched: BTreeMap::new(),
            moved: 0,
            unsent: 0,
            undeleted: 0,
            released: 0,
            unreleased: 0,
            end: End::Drained,
        },
    };
    let result = scan.run(stop).await;
    scan.release().await;
    match result {
        Ok(end) => {
            scan.report.end = end;
            Ok(scan.report)
        }
        Err(error) => {
            scan.progress();
            Err(error)
        }
    }
}

/// One scan's state.
struct Scan<'a, D, M> {
    dlq: &'a Queue<D>,
    main: &'a M,
    filter: &'a Filter,
    settings: &'a ScanSettings,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Messages held and not moved, by id, with their newest receipt.
    kept: HashMap<String, Receipt>,
    /// Ids of the messages moved (their copies sent).
    done: HashSet<String>,
    report: ScanReport,
}

impl<D: QueueClient, M: QueueClient> Scan<'_, D, M> {
    async fn run(&mut self, stop: &CancellationToken) -> Result<End, QueueError> {
        let mut empty = 0;
        let mut last_progress = Instant::now();
        loop {
            if stop.is_cancelled() {
                return Ok(End::Interrupted);
            }
            if self.kept.len() >= self.settings.max_held {
                return Ok(End::HeldLimit);
            }
            // Not abandoned on a stop: what an abandoned receive brings would stay hidden.
            let messages = self
                .dlq
                .client()
                .receive(MAX_BATCH_ENTRIES, self.settings.visibility)
                .await?;
            if messages.is_empty() {
                empty += 1;
                if empty >= EMPTY_RECEIVES_TO_END {
                    return Ok(End::Drained);
                }
                continue;
            }
            empty = 0;
            let mut fresh = Vec::new();
            for message in messages {
                let id = &message.receipt.message_id;
                if let Some(receipt) = self.kept.get_mut(id) {
                    // Seen before: only the newest receipt can give it back.
                    *receipt = message.receipt;
                } else if !self.done.contains(id) {
                    fresh.push(message);
                }
            }
            if fresh.is_empty() {
                return Ok(End::SeenAgain);
            }
            self.sort(fresh, stop).await;
            if last_progress.elapsed() >= self.settings.progress_every {
                self.progress();
                last_progress = Instant::now();
            }
        }
    }

    /// Counts `fresh`, moves the matching ones (unless a dry run) and keeps the rest.
    async fn sort(&mut self, fresh: Vec<InboundMessage>, stop: &CancellationToken) {
        self.report.scanned += fresh.len() as u64;
        let mut matching = Vec::new();
        for message in fresh {
            let facts = Facts::of(&message);
            if self.filter.matches(&facts) {
                *self
                    .report
                    .matched
                    .entry((facts.source_label(), facts.reason_label()))
                    .or_default() += 1;
                if !self.settings.dry_run {
                    matching.push(message);
                    continue;
                }
            }
            self.keep(&message);
        }
        let per_call = self
            .settings
            .per_second
            .map_or(MAX_BATCH_ENTRIES, |rate| rate.get() as usize)
            .min(MAX_BATCH_ENTRIES);
        let mut chunks = matching.chunks(per_call);
        while let Some(chunk) = chunks.next() {
            if !self.paced(chunk.len(), stop).await {
                // Stopped while waiting for the pace: these go back with the kept ones.
                for message in chunk.iter().chain(chunks.flatten()) {
                    self.keep(message);
                }
                return;
            }
            self.move_chunk(chunk).await;
        }
    }

    /// Waits until `count` messages may be sent; false when stopped meanwhile.
    async fn paced(&self, count: usize, stop: &CancellationToken) -> bool {
        let (Some(limiter), Some(count)) = (&self.limiter, NonZeroU32::new(count as u32)) else {
            return true;
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => false,
            // At most the burst (chunks are cut to the rate), so never refused.
            _ = limiter.until_n_ready(count) => true,
        }
    }

    /// Sends copies of `chunk` to the main queue, then deletes the originals sent.
    async fn move_chunk(&mut self, chunk: &[InboundMessage]) {
        let copies: Vec<InboundMessage> = chunk.iter().map(without_reason).collect();
        let refused: HashSet<usize> = match self.main.send_batch(&copies).await {
            Ok(failed) => failed
                .iter()
                .inspect(|entry| tracing::warn!(code = %entry.code, "SQS refused a copy; its message stays in the DLQ"))
                .map(|entry| entry.index)
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "sending copies to the main queue failed; their messages stay in the DLQ");
                (0..chunk.len()).collect()
            }
        };
        let mut sent = Vec::new();
        for (index, message) in chunk.iter().enumerate() {
            if refused.contains(&index) {
                self.report.unsent += 1;
                self.keep(message);
            } else {
                self.done.insert(message.receipt.message_id.clone());
                sent.push(message.receipt.clone());
            }
        }
        self.report.moved += sent.len() as u64;
        self.report.undeleted += self.dlq.delete(&sent).await as u64;
    }

    fn keep(&mut self, message: &InboundMessage) {
        self.kept
            .insert(message.receipt.message_id.clone(), message.receipt.clone());
    }

    /// Gives every kept message back to the DLQ.
    async fn release(&mut self) {
        let entries: Vec<(Receipt, Duration)> = self
            .kept
            .drain()
            .map(|(_, receipt)| (receipt, Duration::ZERO))
            .collect();
        let unchanged = self.dlq.change_visibility(&entries).await.len() as u64;
        self.report.released += entries.len() as u64 - unchanged;
        self.report.unreleased += unchanged;
    }

    fn progress(&self) {
        let matched: u64 = self.report.matched.values().sum();
        if self.settings.dry_run {
            println!("scanned {}: {matched} match", self.report.scanned);
        } else {
            println!(
                "scanned {}: {} moved, {} kept in the DLQ",
                self.report.scanned,
                self.report.moved,
                self.kept.len()
            );
        }
    }
}

/// A copy of `message` to send back: the same body and attributes, minus `poison_reason`.
fn without_reason(message: &InboundMessage) -> InboundMessage {
    let mut copy = message.clone();
    copy.attributes.remove(ATTRIBUTE_POISON_REASON);
    copy
}

/// Prints what a scan did, and what to do next when it ended early.
pub(crate) fn print_summary(report: &ScanReport, settings: &ScanSettings) {
    let matched: u64 = report.matched.values().sum();
    if settings.dry_run {
        println!(
            "dry run: {} scanned, {matched} match; nothing moved, {} given back",
            report.scanned, report.released
        );
    } else {
        println!(
            "{} moved to the main queue, {} given back to the DLQ ({} scanned)",
            report.moved, report.released, report.scanned
        );
    }
    if report.unsent > 0 {
        println!(
            "{} could not be sent and stay in the DLQ: run again",
            report.unsent
        );
    }
    if report.undeleted > 0 {
        println!(
            "{} were sent but not deleted from the DLQ: a later run sends them again (the table keeps one)",
            report.undeleted
        );
    }
    if report.unreleased > 0 {
        println!(
            "{} could not be given back: they reappear in the DLQ within {} s",
            report.unreleased,
            settings.visibility.as_secs()
        );
    }
    match report.end {
        End::Drained => {}
        End::SeenAgain => println!(
            "stopped: messages seen earlier came back (the scan outlasted REDRIVE_SCAN_VISIBILITY_SECONDS); run again to go on"
        ),
        End::HeldLimit => println!(
            "stopped at {} messages held (SQS allows about 120,000 in flight); run again to go on",
            settings.max_held
        ),
        End::Interrupted => println!("interrupted; what was held is given back"),
    }
    if matched > 0 {
        println!("matching, by source and reason:");
    }
    let mut rows: Vec<_> = report.matched.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for ((source, reason), count) in rows.iter().take(MAX_SUMMARY_ROWS) {
        println!("{count:>9}  {source}  {reason}");
    }
    if rows.len() > MAX_SUMMARY_ROWS {
        println!("(and {} more)", rows.len() - MAX_SUMMARY_ROWS);
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
