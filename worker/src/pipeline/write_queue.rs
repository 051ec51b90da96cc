//! The messages waiting for a writer, one first-in first-out line per source, batches taken
//! from the lines in turn: a quiet source's webhook waits behind one message of each other
//! source rather than behind a flood's whole backlog in the worker's window (SQS's fair
//! queues do the same in the queue, with `FAIR_QUEUE_GROUPS`). With one source it is the
//! plain oldest-first order.

use std::collections::{HashMap, VecDeque};

use crate::pipeline::pending::Pending;

/// The caps on one transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchCaps {
    /// Most rows (events) per transaction.
    pub(crate) rows: usize,
    /// Most body bytes per transaction (a single larger message is still written, alone).
    pub(crate) bytes: usize,
}

/// A line's key: the message's `source` attribute (none for messages without one).
type SourceKey = Option<String>;

/// The waiting messages, by source.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    lines: HashMap<SourceKey, VecDeque<Pending>>,
    /// The sources with messages waiting, in the order their turns come.
    turns: VecDeque<SourceKey>,
    len: usize,
}

impl WriteQueue {
    /// Messages waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether none waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a message at the end of its source's line.
    pub(crate) fn push_back(&mut self, pending: Pending) {
        self.line(&pending).push_back(pending);
        self.len += 1;
    }

    /// Puts a message back at the head of its source's line (one that was taken and
    /// returns, such as a pointer S3 had parked).
    pub(crate) fn push_front(&mut self, pending: Pending) {
        self.line(&pending).push_front(pending);
        self.len += 1;
    }

    /// Every waiting message, oldest first within each source.
    pub(crate) fn drain(&mut self) -> Vec<Pending> {
        self.turns.clear();
        self.len = 0;
        self.lines.drain().flat_map(|(_, line)| line).collect()
    }

    /// A batch within `caps` (always at least one message when any waits), taken from the
    /// sources' lines in turn, each line oldest first; a message that would take the batch
    /// past the byte cap ends it, and leads its line next time.
    pub(crate) fn take_batch(&mut self, caps: BatchCaps) -> Vec<Pending> {
        let mut batch = Vec::new();
        let mut bytes: usize = 0;
        while let Some(source) = self.turns.pop_front() {
            let Some(line) = self.lines.get_mut(&source) else {
                continue;
            };
            let Some(next) = line.front() else {
                self.lines.remove(&source);
                continue;
            };
            let full = batch.len() >= caps.rows
                || (!batch.is_empty() && bytes.saturating_add(next.bytes) > caps.bytes);
            if full {
                self.turns.push_front(source);
                break;
            }
            bytes = bytes.saturating_add(next.bytes);
            batch.extend(line.pop_front());
            self.len -= 1;
            if line.is_empty() {
                self.lines.remove(&source);
            } else {
                self.turns.push_back(source);
            }
        }
        batch
    }

    /// The line of `pending`'s source, made (and given a turn) if it had none.
    fn line(&mut self, pending: &Pending) -> &mut VecDeque<Pending> {
        let source = pending.message.source().map(str::to_owned);
        if !self.lines.contains_key(&source) {
            self.turns.push_back(source.clone());
        }
        self.lines.entry(source).or_default()
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::MessageAttributeValue;

    use super::*;
    use crate::testing::{FakeQueue, held_messages};

    const CAPS: BatchCaps = BatchCaps {
        rows: 3,
        bytes: 1_000,
    };

    /// Held messages of 10 bytes from these sources, in this order.
    async fn from_sources(sources: &[&str]) -> Vec<Pending> {
        let fake = FakeQueue::default();
        let (_window, mut pending) = held_messages(&fake, &vec![10; sources.len()]).await;
        for (p, source) in pending.iter_mut().zip(sources) {
            p.message.attributes.insert(
                "source".to_owned(),
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(*source)
                    .build()
                    .expect("data type set"),
            );
        }
        pending
    }

    fn ids(batch: &[Pending]) -> Vec<String> {
        batch
            .iter()
            .map(|p| p.message.receipt.message_id.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_quiet_source_waits_behind_one_message_per_source_not_behind_a_flood() {
        let mut queue = WriteQueue::default();
        let mut sources = vec!["flood"; 8];
        sources.push("quiet");
        for pending in from_sources(&sources).await {
            queue.push_back(pending);
        }
        assert_eq!(queue.len(), 9);
        // m1..m8 are the flood's, m9 the quiet source's.
        assert_eq!(ids(&queue.take_batch(CAPS)), ["m1", "m9", "m2"]);
        assert_eq!(ids(&queue.take_batch(CAPS)), ["m3", "m4", "m5"]);
        assert_eq!(queue.len(), 3);
    }

    #[tokio::test]
    async fn one_source_is_oldest_first_and_turns_carry_over_batches() {
        let mut queue = WriteQueue::default();
        for pending in from_sources(&["a", "a", "b", "b", "c"]).await {
            queue.push_back(pending);
        }
        assert_eq!(ids(&queue.take_batch(CAPS)), ["m1", "m3", "m5"]);
        assert_eq!(ids(&queue.take_batch(CAPS)), ["m2", "m4"]);
        assert!(queue.is_empty());
        assert!(queue.take_batch(CAPS).is_empty());
    }

    #[tokio::test]
    async fn a_message_put_back_leads_its_line_and_drain_takes_everything() {
        let mut queue = WriteQueue::default();
        let mut pending = from_sources(&["a", "a", "b"]).await.into_iter();
        let first = pending.next().expect("three");
        for p in pending {
            queue.push_back(p);
        }
        queue.push_front(first);
        let one = BatchCaps { rows: 1, ..CAPS };
        assert_eq!(ids(&queue.take_batch(one)), ["m1"]);
        let mut rest = ids(&queue.drain());
        rest.sort();
        assert_eq!(rest, ["m2", "m3"]);
        assert!(queue.is_empty());
    }
}
