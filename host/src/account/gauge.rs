//! A count of things open now that a task can wait to see reach zero: the
//! connections a tenant or an instance holds, which a drain waits out.
//! Woken when the count reaches zero, never polled.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A count of what is open now (read as an `AtomicU64` through `Deref`),
/// whose fall to zero wakes [`Gauge::until_zero`].
#[derive(Debug, Default)]
pub struct Gauge {
    count: AtomicU64,
    /// Notified (all waiters) each time the count falls to zero.
    zero: Notify,
}

impl std::ops::Deref for Gauge {
    type Target = AtomicU64;

    fn deref(&self) -> &AtomicU64 {
        &self.count
    }
}

impl Gauge {
    /// One fewer open; wakes the waiters if none is left.
    pub fn decrement(&self) {
        if self.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.zero.notify_waiters();
        }
    }

    /// Resolves once the count is zero, or at `deadline` (if any):
    /// whether it reached zero.
    pub async fn until_zero(&self, deadline: Option<Instant>) -> bool {
        loop {
            // Registered before the count is read, so a fall to zero in
            // between is not missed.
            let notified = self.zero.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Relaxed) == 0 {
                return true;
            }
            match deadline {
                Some(at) => {
                    if tokio::time::timeout_at(at, notified).await.is_err() {
                        return self.count.load(Ordering::Relaxed) == 0;
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_the_last_one_closes_and_not_before() {
        let gauge = Arc::new(Gauge::default());
        gauge.fetch_add(2, Ordering::Relaxed);
        let waiter = tokio::spawn({
            let gauge = gauge.clone();
            async move { gauge.until_zero(None).await }
        });
        tokio::task::yield_now().await;
        gauge.decrement();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one is still open");
        gauge.decrement();
        assert!(waiter.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_ends_the_wait_with_connections_still_open() {
        let gauge = Gauge::default();
        gauge.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(30);
        assert!(!gauge.until_zero(Some(deadline)).await);
        assert_eq!(Instant::now(), deadline);
        // Already zero: at once.
        gauge.decrement();
        assert!(gauge.until_zero(Some(start)).await);
    }
}
