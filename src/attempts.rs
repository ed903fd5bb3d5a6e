//! Failed password attempts, counted per user name, so that re-authentication
//! cannot be used to guess passwords: after `max` failures within `window`, every
//! attempt (a correct password too) is refused until the window has passed.
//!
//! Unknown names are counted like known ones, so the limiter says nothing about
//! which users exist. Memory is bounded: the counters live in a bounded cache.

use std::time::Duration;

use moka::ops::compute::Op;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy)]
struct Window {
    failures: u32,
    started: OffsetDateTime,
}

/// Counts failed attempts per user name.
#[derive(Clone)]
pub(crate) struct Attempts {
    windows: moka::sync::Cache<String, Window>,
    max: u32,
    window: Duration,
}

impl Attempts {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            windows: moka::sync::Cache::builder()
                .max_capacity(100_000)
                // Real time only bounds memory; the window itself runs on the
                // crate's clock.
                .time_to_idle(window)
                .build(),
            max,
            window,
        }
    }

    fn end(&self, w: &Window) -> Option<OffsetDateTime> {
        w.started
            .checked_add(time::Duration::try_from(self.window).ok()?)
    }

    /// Counts an attempt *before* the password is checked, so that attempts
    /// sent all at once cannot all be checked before the first failure is
    /// counted. `Err(retry_after)` while `username` is locked out: the attempt
    /// must not be checked. A success then calls [`reset`](Self::reset).
    pub(crate) fn begin(&self, username: &str, now: OffsetDateTime) -> Result<(), Duration> {
        let mut locked = None;
        self.windows
            .entry(username.to_owned())
            .and_compute_with(|current| {
                let next = match current.map(|e| e.into_value()) {
                    Some(w) if self.end(&w).is_some_and(|end| now < end) => {
                        if w.failures >= self.max {
                            let end = self.end(&w).unwrap_or(now);
                            locked = Some(Duration::try_from(end - now).unwrap_or(Duration::ZERO));
                            return Op::Nop;
                        }
                        Window {
                            failures: w.failures + 1,
                            ..w
                        }
                    }
                    _ => Window {
                        failures: 1,
                        started: now,
                    },
                };
                Op::Put(next)
            });
        locked.map_or(Ok(()), Err)
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
    fn locks_after_max_attempts_until_the_window_passes() {
        let a = Attempts::new(3, Duration::from_secs(60));
        let t0 = datetime!(2026-01-01 00:00 UTC);
        for i in 0..3 {
            assert_eq!(
                a.begin("bob", t0 + Duration::from_secs(i)),
                Ok(()),
                "attempt {i}"
            );
        }
        assert_eq!(
            a.begin("bob", t0 + Duration::from_secs(10)),
            Err(Duration::from_secs(50))
        );
        // Refused attempts do not extend the window.
        assert_eq!(
            a.begin("bob", t0 + Duration::from_secs(59)),
            Err(Duration::from_secs(1))
        );
        assert_eq!(a.begin("alice", t0), Ok(()));
        assert_eq!(a.begin("bob", t0 + Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn reset_forgets_attempts() {
        let a = Attempts::new(1, Duration::from_secs(60));
        let t0 = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(a.begin("bob", t0), Ok(()));
        assert!(a.begin("bob", t0).is_err());
        a.reset("bob");
        assert_eq!(a.begin("bob", t0), Ok(()));
    }
}
