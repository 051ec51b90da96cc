//! [`FakeAdmin`]: an in-memory SQS administration behind the [`QueueAdmin`] seam for unit
//! tests: attributes per queue URL, queue URLs by name, move tasks reported in the order
//! given, cancels answered with a set count, failures on demand; every call recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aws_sdk_sqs::types::QueueAttributeName;

use crate::sqs::admin::{AdminError, Attributes, MoveTask, QueueAdmin};

/// The fake's state, shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    /// Attributes by queue URL.
    pub(crate) attributes: HashMap<String, Attributes>,
    /// Queue URLs by `account/name`.
    pub(crate) urls: HashMap<String, String>,
    /// What each ListMessageMoveTasks returns, in turn (the last one repeats).
    pub(crate) listings: VecDeque<Vec<MoveTask>>,
    /// Every call fails while set.
    pub(crate) failing: bool,
    /// The calls made: operation and queue URL (or ARN, or name).
    pub(crate) calls: Vec<(&'static str, String)>,
    /// The moves started: source and destination ARNs, and the rate.
    pub(crate) moves: Vec<(String, String, Option<i32>)>,
    /// The handles of the tasks cancelled.
    pub(crate) cancelled: Vec<String>,
    /// What CancelMessageMoveTask answers as the messages moved.
    pub(crate) moved_at_cancel: i64,
}

/// A [`QueueAdmin`] in memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeAdmin {
    state: Arc<Mutex<AdminState>>,
}

impl FakeAdmin {
    /// The fake's state, to set up or inspect.
    pub(crate) fn state(&self) -> MutexGuard<'_, AdminState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets one attribute of the queue at `url`.
    pub(crate) fn set(&self, url: &str, name: QueueAttributeName, value: &str) {
        self.state()
            .attributes
            .entry(url.to_owned())
            .or_default()
            .insert(name, value.to_owned());
    }

    fn call(&self, operation: &'static str, target: &str) -> Result<(), AdminError> {
        let mut state = self.state();
        state.calls.push((operation, target.to_owned()));
        if state.failing {
            return Err(AdminError {
                operation,
                detail: "connection refused (fake)".to_owned(),
            });
        }
        Ok(())
    }
}

impl QueueAdmin for FakeAdmin {
    async fn attributes(
        &self,
        url: &str,
        names: &[QueueAttributeName],
    ) -> Result<Attributes, AdminError> {
        self.call("GetQueueAttributes", url)?;
        let state = self.state();
        let all = state.attributes.get(url).cloned().unwrap_or_default();
        Ok(all
            .into_iter()
            .filter(|(name, _)| names.contains(name))
            .collect())
    }

    async fn queue_url(&self, account: &str, name: &str) -> Result<String, AdminError> {
        self.call("GetQueueUrl", name)?;
        self.state()
            .urls
            .get(&format!("{account}/{name}"))
            .cloned()
            .ok_or_else(|| AdminError {
                operation: "GetQueueUrl",
                detail: "AWS.SimpleQueueService.NonExistentQueue (fake)".to_owned(),
            })
    }

    async fn start_move(
        &self,
        source_arn: &str,
        destination_arn: &str,
        per_second: Option<i32>,
    ) -> Result<String, AdminError> {
        self.call("StartMessageMoveTask", source_arn)?;
        self.state().moves.push((
            source_arn.to_owned(),
            destination_arn.to_owned(),
            per_second,
        ));
        Ok("task-1".to_owned())
    }

    async fn list_moves(&self, source_arn: &str) -> Result<Vec<MoveTask>, AdminError> {
        self.call("ListMessageMoveTasks", source_arn)?;
        let mut state = self.state();
        Ok(if state.listings.len() > 1 {
            state.listings.pop_front().unwrap_or_default()
        } else {
            state.listings.front().cloned().unwrap_or_default()
        })
    }

    async fn cancel_move(&self, handle: &str) -> Result<i64, AdminError> {
        self.call("CancelMessageMoveTask", handle)?;
        let mut state = self.state();
        state.cancelled.push(handle.to_owned());
        Ok(state.moved_at_cancel)
    }
}
