//! Which dead-lettered messages a filtered `worker redrive` moves: by source (the `source`
//! attribute ingest sets, else the envelope's), by reason (a prefix of the `poison_reason`
//! attribute the worker sets when it dead-letters a message, or `max-receives` for those SQS
//! moved itself, which carry none) and by time (the envelope's `received_at`, else
//! `SentTimestamp`). Also the short labels the scan counts messages under.

use anyhow::bail;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use aws_sdk_sqs::types::MessageAttributeValue;
use webhook_shared::sqs::ATTRIBUTE_SOURCE;

use crate::config::RedriveArgs;
use crate::sqs::InboundMessage;
use crate::sqs::client::ATTRIBUTE_POISON_REASON;

/// The `--reason` that selects messages without a `poison_reason`: those SQS moved after
/// maxReceiveCount receives.
pub(crate) const MAX_RECEIVES: &str = "max-receives";
/// Longest reason label in the counts, in characters (reasons quote error text).
const REASON_LABEL_CHARS: usize = 60;

/// What the filters look at in one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The source: the `source` attribute, else the envelope's.
    pub(crate) source: Option<String>,
    /// The `poison_reason` attribute; `None` for messages SQS moved itself.
    pub(crate) reason: Option<String>,
    /// The envelope's `received_at`, else when SQS got the message.
    pub(crate) received_at: Option<DateTime<Utc>>,
}

/// Just the envelope fields the filters need (the body is left unread).
#[derive(Deserialize)]
struct EnvelopeProbe {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    received_at: Option<DateTime<Utc>>,
}

impl Facts {
    /// The facts of `message`.
    pub(crate) fn of(message: &InboundMessage) -> Self {
        let attribute = |name: &str| {
            message
                .attributes
                .get(name)
                .and_then(MessageAttributeValue::string_value)
                .map(str::to_owned)
        };
        // A JSON object is an envelope (or poison); anything else (an S3 pointer, text) has
        // no fields to offer.
        let probe = message
            .body
            .trim_start()
            .starts_with('{')
            .then(|| serde_json::from_str::<EnvelopeProbe>(&message.body).ok())
            .flatten();
        let (body_source, body_received_at) =
            probe.map_or((None, None), |probe| (probe.source, probe.received_at));
        let sent_at = message
            .sent_ms
            .and_then(|ms| i64::try_from(ms).ok())
            .and_then(DateTime::from_timestamp_millis);
        Self {
            source: attribute(ATTRIBUTE_SOURCE).or(body_source),
            reason: attribute(ATTRIBUTE_POISON_REASON),
            received_at: body_received_at.or(sent_at),
        }
    }

    /// The source as counted: `(none)` when unknown.
    pub(crate) fn source_label(&self) -> String {
        self.source.clone().unwrap_or_else(|| "(none)".to_owned())
    }

    /// The reason as counted: [`MAX_RECEIVES`] when there is none, else its first
    /// characters.
    pub(crate) fn reason_label(&self) -> String {
        let Some(reason) = &self.reason else {
            return MAX_RECEIVES.to_owned();
        };
        match reason.char_indices().nth(REASON_LABEL_CHARS) {
            Some((cut, _)) => format!("{}...", &reason[..cut]),
            None => reason.clone(),
        }
    }
}

/// Which reasons `--reason` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReasonFilter {
    /// No `poison_reason`: SQS moved the message.
    MaxReceives,
    /// A `poison_reason` that starts with this.
    Prefix(String),
}

/// The filters of a redrive; an empty one selects every message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    sources: Vec<String>,
    reason: Option<ReasonFilter>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

impl Filter {
    /// The filters `args` set; an error when `--from` is not before `--to`.
    pub(crate) fn new(args: &RedriveArgs) -> anyhow::Result<Self> {
        if let (Some(from), Some(to)) = (args.from, args.to)
            && from >= to
        {
            bail!("--from ({from}) must be before --to ({to})");
        }
        Ok(Self {
            sources: args.sources.clone(),
            reason: args.reason.as_deref().map(|reason| match reason {
                MAX_RECEIVES => ReasonFilter::MaxReceives,
                prefix => ReasonFilter::Prefix(prefix.to_owned()),
            }),
            from: args.from,
            to: args.to,
        })
    }

    /// Whether a message with `facts` is selected: every filter set agrees (`--from`
    /// included, `--to` excluded; a message without a time matches no time filter).
    pub(crate) fn matches(&self, facts: &Facts) -> bool {
        let source = self.sources.is_empty()
            || facts
                .source
                .as_ref()
                .is_some_and(|source| self.sources.contains(source));
        let reason = match &self.reason {
            None => true,
            Some(ReasonFilter::MaxReceives) => facts.reason.is_none(),
            Some(ReasonFilter::Prefix(prefix)) => facts
                .reason
                .as_deref()
                .is_some_and(|reason| reason.starts_with(prefix.as_str())),
        };
        let time = match (self.from.is_some() || self.to.is_some(), facts.received_at) {
            (false, _) => true,
            (true, None) => false,
            (true, Some(at)) => {
                self.from.is_none_or(|from| at >= from) && self.to.is_none_or(|to| at < to)
            }
        };
        source && reason && time
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
