//! The injectable clock: every "now" the crate uses comes from a [`Clock`].
//!
//! Expiry is decided at the exact boundary (`now >= effective_expiry`), so tests
//! need to put the clock there without sleeping. [`ManualClock`] does that; it is
//! public so users can test their own services the same way.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time in UTC.
    fn now(&self) -> OffsetDateTime;

    /// The current time as nanoseconds since the Unix epoch: what the request
    /// path compares expiries with. Override it when it is cheaper than `now`.
    fn now_unix_nanos(&self) -> i128 {
        self.now().unix_timestamp_nanos()
    }
}

/// The system clock (`OffsetDateTime::now_utc`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn now_unix_nanos(&self) -> i128 {
        // No calendar arithmetic: the request path only compares instants.
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => i128::try_from(since.as_nanos()).unwrap_or(i128::MAX),
            Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
        }
    }
}

/// A clock that only moves when told to. Clones share the same time.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use time::macros::datetime;
/// use tower_api_tokens::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now(), datetime!(2026-01-01 00:01:30 UTC));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    // Unix time in nanoseconds fits an i64 until the year 2262.
    nanos: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock stopped at `at` (truncated to what fits in 64-bit Unix nanoseconds).
    pub fn new(at: OffsetDateTime) -> Self {
        let clock = Self {
            nanos: Arc::new(AtomicI64::new(0)),
        };
        clock.set(at);
        clock
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: OffsetDateTime) {
        let nanos = i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        self.nanos.store(nanos, Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now_unix_nanos(&self) -> i128 {
        i128::from(self.nanos.load(Ordering::SeqCst))
    }

    fn now(&self) -> OffsetDateTime {
        let nanos = self.nanos.load(Ordering::SeqCst);
        // Every i64 nanosecond count is a valid OffsetDateTime.
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}
