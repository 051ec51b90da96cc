//! The concurrency limit: a semaphore whose permits are the messages the worker may have in
//! processing. The limit can change while running (a later step adapts it to database
//! health): raising it adds permits; lowering it takes permits out of circulation as soon as
//! they are free, without interrupting work in progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics;

/// The limit, shared by the receive loops.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    permits: Arc<Semaphore>,
    limit: AtomicU32,
}

impl ConcurrencyLimit {
    /// A limit of `limit` messages in processing.
    pub fn new(limit: u32) -> Arc<Self> {
        metrics::gauge_concurrency(limit);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(limit as usize)),
            limit: AtomicU32::new(limit),
        })
    }

    /// The limit in force.
    pub fn get(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Changes the limit. Lowering it never interrupts work: the surplus permits are
    /// withdrawn as they come free.
    pub fn set(self: &Arc<Self>, limit: u32) {
        let previous = self.limit.swap(limit, Ordering::Relaxed);
        metrics::gauge_concurrency(limit);
        if limit > previous {
            self.permits.add_permits((limit - previous) as usize);
        } else if limit < previous {
            let surplus = (previous - limit) as usize;
            let withdrawn = self.permits.forget_permits(surplus);
            let owed = surplus - withdrawn;
            if owed > 0 {
                let permits = Arc::clone(&self.permits);
                tokio::spawn(async move {
                    if let Ok(permits) = permits.acquire_many_owned(owed as u32).await {
                        permits.forget();
                    }
                });
            }
        }
    }

    /// Waits for one free permit, then takes as many more as are free, up to `most` in all.
    pub async fn reserve(&self, most: usize) -> OwnedSemaphorePermit {
        let mut permits = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the semaphore is never closed"));
        let more = self.permits.available_permits().min(most.saturating_sub(1));
        if more > 0
            && let Ok(extra) = Arc::clone(&self.permits).try_acquire_many_owned(more as u32)
        {
            permits.merge(extra);
        }
        permits
    }

    /// Permits free right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reserve_takes_what_is_free_up_to_the_most() {
        let limit = ConcurrencyLimit::new(16);
        let first = limit.reserve(10).await;
        assert_eq!(first.num_permits(), 10);
        let second = limit.reserve(10).await;
        assert_eq!(second.num_permits(), 6);
        assert_eq!(limit.available(), 0);
        drop(first);
        assert_eq!(limit.available(), 10);
    }

    #[tokio::test]
    async fn lowering_the_limit_waits_for_work_in_progress() {
        let limit = ConcurrencyLimit::new(4);
        let busy = limit.reserve(4).await;
        limit.set(1);
        assert_eq!(limit.get(), 1);
        drop(busy);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(
            limit.available(),
            1,
            "three permits were withdrawn once free"
        );
        limit.set(3);
        assert_eq!(limit.available(), 3);
    }
}
