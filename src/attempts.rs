//! Password attempts, counted per user name, so that re-authentication cannot be
//! used to guess passwords: after `max` failures within `window`, every attempt
//! (a correct password too) is refused until the window has passed.
//!
//! Checks of one user name's password take turns ([`Attempts::turn`]), so a
//! burst of concurrent guesses is counted exactly: no more than `max` of them
//! are ever checked, and concurrent correct passwords are never refused. Unknown
//! names are counted like known ones, so the limiter says nothing about which
//! users exist. Memory is bounded: counters and turns live in bounded caches.
//! The counts are this instance's: several instances each allow `max`.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Mutex, OwnedMutexGuard};

#[derive(Debug, Clone, Copy)]
struct Window {
    failures: u32,
    started: OffsetDateTime,
}

/// Counts failed attempts per user name.
#[derive(Clone)]
pub(crate) struct Attempts {
    windows: moka::sync::Cache<String, Window>,
    turns: moka::sync::Cache<String, Arc<Mutex<()>>>,
    max: u32,
    window: Duration,
}

impl Attempts {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        // Real time only bounds memory; the window itself runs on the crate's
        // clock.
        Self {
            windows: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(window)
                .build(),
            turns: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(window)
                .build(),
            max,
            window,
        }
    }

    /// Waits for this user name's turn: one password check at a time per name.
    pub(crate) async fn turn(&self, username: &str) -> OwnedMutexGuard<()> {
        let turn = self
            .turns
            .get_with_by_ref(username, || Arc::new(Mutex::new(())));
        turn.lock_owned().await
    }

    fn end(&self, w: &Window) -> Option<OffsetDateTime> {
        w.started
            .checked_add(time::Duration::try_from(self.window).ok()?)
    }

    /// `Err(retry_after)` while `username` is locked out.
    pub(crate) fn check(&self, username: &str, now: OffsetDateTime) -> Result<(), Duration> {
        let Some(w) = self.windows.get(username) else {
            return Ok(());
        };
        match self.end(&w) {
            Some(end) if now < end && w.failures >= self.max => {
                Err(Duration::try_from(end - now).unwrap_or(Duration::ZERO))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure.
    pub(crate) fn fail(&self, username: &str, now: OffsetDateTime) {
        self.windows
            .entry_by_ref(username)
            .and_upsert_with(|current| match current.map(|e| e.into_value()) {
                Some(w) if self.end(&w).is_some_and(|end| now < end) => Window {
                    failures: w.failures.saturating_add(1),
                    ..w
                },
                _ => Window {
                    failures: 1,
                    started: now,
                },
            });
    }

    /// Forgets the failures of `username` (after a successful attempt).
    pub(crate) fn reset(&self, username: &str) {
        self.windows.invalidate(username);
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn locks_after_max_failures_until_the_window_passes() {
        let a = Attempts::new(3, Duration::from_secs(60));
        let t0 = datetime!(2026-01-01 00:00 UTC);
        for i in 0..3 {
            assert_eq!(a.check("bob", t0), Ok(()), "attempt {i}");
            a.fail("bob", t0 + Duration::from_secs(i));
        }
        assert_eq!(
            a.check("bob", t0 + Duration::from_secs(10)),
            Err(Duration::from_secs(50))
        );
        assert_eq!(a.check("alice", t0), Ok(()));
        assert_eq!(a.check("bob", t0 + Duration::from_secs(60)), Ok(()));
        // A failure after the window starts a new one.
        a.fail("bob", t0 + Duration::from_secs(61));
        assert_eq!(a.check("bob", t0 + Duration::from_secs(62)), Ok(()));
    }

    #[test]
    fn reset_forgets_failures() {
        let a = Attempts::new(1, Duration::from_secs(60));
        let t0 = datetime!(2026-01-01 00:00 UTC);
        a.fail("bob", t0);
        assert!(a.check("bob", t0).is_err());
        a.reset("bob");
        assert_eq!(a.check("bob", t0), Ok(()));
    }

    #[tokio::test]
    async fn turns_are_per_user_name() {
        let a = Attempts::new(1, Duration::from_secs(60));
        let bob = a.turn("bob").await;
        // Another name is not held up by bob's turn ...
        let _alice = a.turn("alice").await;
        // ... but bob's next turn waits for the first to end.
        let waiting = a.turn("bob");
        tokio::pin!(waiting);
        assert!(futures_poll_once(waiting.as_mut()).await.is_none());
        drop(bob);
        let _next = waiting.await;
    }

    /// Polls a future once.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
