//! Failed password attempts, counted per user name and per client, so that
//! re-authentication cannot be used to guess passwords; and [`ClientId`], the
//! client an attempt comes from.
//!
//! **Per user name**: after `max` failures within `window`, every attempt for
//! that name (a correct password too) is refused until the window has passed.
//! Checks of one name's password take turns, so a burst of concurrent guesses
//! is counted exactly: no more than `max` of them are ever checked, and
//! concurrent correct passwords are never refused. Unknown names are counted
//! like known ones, so the limiter says nothing about which users exist.
//!
//! **Per client** (with [`ApiTokens::generate_from`] and
//! [`ApiTokens::verify_password_from`]): failures from one client across *all*
//! user names within a window. A client at its limit is refused before any
//! password is checked and without waiting for a turn. Each check holds a
//! reservation while it runs, so concurrent guesses against many names are
//! counted exactly too. Only wrong passwords count — not refusals, and not a
//! correct password, which also does not forgive the client's earlier failures
//! (one valid account must not buy unlimited guesses at the others). A flood
//! against one name is stopped by that name's limit long before the client's,
//! so others behind the same address (a NAT, an office) can still sign in.
//!
//! Memory is bounded: counters and turns live in bounded caches. Time comes
//! from the crate's [`Clock`](crate::clock::Clock). The counts are this
//! instance's: several instances each allow `max`. No password is ever kept
//! here.
//!
//! # Example
//!
//! ```
//! use std::net::{IpAddr, SocketAddr};
//! use std::time::Duration;
//! use tower_api_tokens::store::MemoryStore;
//! use tower_api_tokens::{ApiTokens, ClientId, ManageError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tokens = ApiTokens::builder()
//!     .backend(MemoryStore::new())
//!     .client_failed_attempts(2, Duration::from_secs(15 * 60))
//!     .build()
//!     .await?;
//! let peer: SocketAddr = "203.0.113.7:50123".parse()?;
//! let client = ClientId::from(peer);
//!
//! // Two wrong guesses, each for another user name, are checked ...
//! for name in ["alice", "bob"] {
//!     let answer = tokens.generate_from(client.clone(), name, &"guess".into(), false).await;
//!     assert!(matches!(answer, Err(ManageError::InvalidCredentials)));
//! }
//! // ... then this client is refused (429) whatever the name, for the rest of
//! // the 15 minutes since its first failure ...
//! let refused = tokens.generate_from(client, "carol", &"guess".into(), false).await;
//! assert!(matches!(
//!     refused,
//!     Err(ManageError::RateLimited { retry_after }) if retry_after <= Duration::from_secs(900)
//! ));
//! // ... while another client is not.
//! let other = ClientId::from("198.51.100.1".parse::<IpAddr>()?);
//! let answer = tokens.generate_from(other, "carol", &"guess".into(), false).await;
//! assert!(matches!(answer, Err(ManageError::InvalidCredentials)));
//! # Ok(()) }
//! ```
//!
//! [`ApiTokens::generate_from`]: crate::ApiTokens::generate_from
//! [`ApiTokens::verify_password_from`]: crate::ApiTokens::verify_password_from

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::Op;
use time::OffsetDateTime;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Entries kept per cache: counters of this many names, or clients, at most.
const CAPACITY: u64 = 100_000;

/// The `Retry-After` while a client's remaining attempts are all being
/// checked: they may yet succeed, so the window's end would be too long.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

/// Where a password attempt comes from, for the per-client limit.
///
/// Made from the peer's address, or from any other key a service identifies
/// clients by ([`ClientId::named`]). Addresses are normalised so one client
/// cannot pass for many: an IPv4-mapped IPv6 address is its IPv4 address, and
/// any other IPv6 address stands for its whole `/64` (one subscriber commonly
/// holds a whole `/64`). Ports are dropped.
///
/// Behind a reverse proxy the peer is the proxy: derive the `ClientId` from the
/// client address your trusted proxy forwards (and only from that: a
/// `Forwarded` or `X-Forwarded-For` entry the client wrote itself is chosen by
/// the attacker).
///
/// `Debug` and `Display` show the address or key: not a secret.
///
/// # Example
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use tower_api_tokens::ClientId;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let v4: IpAddr = "192.0.2.1".parse()?;
/// let mapped: IpAddr = "::ffff:192.0.2.1".parse()?;
/// assert_eq!(ClientId::from(v4), ClientId::from(mapped));
///
/// let a: IpAddr = "2001:db8:1:2::1".parse()?;
/// let b: IpAddr = "2001:db8:1:2:ffff::9".parse()?;
/// assert_eq!(ClientId::from(a), ClientId::from(b));
/// assert_eq!(ClientId::from(a).to_string(), "2001:db8:1:2::/64");
///
/// let peer: SocketAddr = "192.0.2.1:4711".parse()?;
/// assert_eq!(ClientId::from(peer), ClientId::from(v4));
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientId(Client);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Client {
    /// An IPv4 address, or a `/64` IPv6 prefix (its host bits zero).
    Ip(IpAddr),
    /// A key the caller chose.
    Named(Arc<str>),
}

impl ClientId {
    /// A client identified by an opaque key of the caller's (an account of an
    /// upstream gateway, a device id, a pre-normalised address). Keys never
    /// equal an address's `ClientId`, even when they spell one.
    pub fn named(key: impl Into<String>) -> Self {
        Self(Client::Named(Arc::from(key.into())))
    }
}

impl From<IpAddr> for ClientId {
    fn from(ip: IpAddr) -> Self {
        Self(Client::Ip(match ip.to_canonical() {
            IpAddr::V6(v6) => {
                // Keep the /64 network, zero the interface identifier.
                let network = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(network))
            }
            v4 => v4,
        }))
    }
}

impl From<SocketAddr> for ClientId {
    fn from(addr: SocketAddr) -> Self {
        Self::from(addr.ip())
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Client::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Client::Ip(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            Client::Named(key) => f.write_str(key),
        }
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Client::Ip(_) => write!(f, "ClientId({self})"),
            Client::Named(key) => write!(f, "ClientId::named({key:?})"),
        }
    }
}

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
        Self {
            windows: bounded(window),
            turns: bounded(window),
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

    /// Counts a failure, and logs a lockout when the name reaches the limit.
    /// The log carries a digest of the name, not the name: what a client sends
    /// as a user name may be a secret (a password typed into the wrong field, a
    /// token sent as a Basic user name). An operator finds the name by hashing
    /// the candidates: `printf %s NAME | sha256sum`.
    pub(crate) fn fail(&self, username: &str, now: OffsetDateTime) {
        let window = self
            .windows
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
            })
            .into_value();
        if window.failures == self.max {
            tracing::warn!(
                username_sha256 = %name_digest(username),
                "too many failed password attempts for this user name: refused until its window passes"
            );
        }
    }

    /// Forgets the failures of `username` (after a successful attempt).
    pub(crate) fn reset(&self, username: &str) {
        self.windows.invalidate(username);
    }
}

/// One client's failures in its current window, and its checks under way.
#[derive(Debug, Clone, Copy, Default)]
struct ClientWindow {
    failures: u32,
    in_flight: u32,
    /// The first failure of the current window (`None`: no failures yet).
    started: Option<OffsetDateTime>,
}

/// Counts failed attempts per client, across user names. Every check runs
/// under a [`Reservation`], so concurrent checks never exceed `max`.
#[derive(Clone)]
pub(crate) struct ClientAttempts {
    windows: moka::sync::Cache<ClientId, ClientWindow>,
    max: u32,
    window: Duration,
}

impl ClientAttempts {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            windows: bounded(window),
            max,
            window,
        }
    }

    fn end(&self, started: OffsetDateTime) -> Option<OffsetDateTime> {
        started.checked_add(time::Duration::try_from(self.window).ok()?)
    }

    /// `w` at `now`: the failures of a window that has passed are forgotten;
    /// checks under way stay counted.
    fn at(&self, w: ClientWindow, now: OffsetDateTime) -> ClientWindow {
        match w.started.and_then(|started| self.end(started)) {
            Some(end) if now < end => w,
            _ => ClientWindow {
                failures: 0,
                started: None,
                ..w
            },
        }
    }

    /// `Err(retry_after)` if one more check would let more than `max`
    /// failures be checked in this window.
    fn refusal(&self, w: &ClientWindow, now: OffsetDateTime) -> Result<(), Duration> {
        if w.failures >= self.max {
            let end = w.started.and_then(|started| self.end(started));
            let left = end.map_or(Duration::ZERO, |end| {
                Duration::try_from(end - now).unwrap_or(Duration::ZERO)
            });
            Err(left)
        } else if w.failures.saturating_add(w.in_flight) >= self.max {
            Err(IN_FLIGHT_RETRY)
        } else {
            Ok(())
        }
    }

    /// `Err(retry_after)` while `client` may not have a password checked: a
    /// quick refusal before waiting for anything. [`reserve`](Self::reserve)
    /// decides.
    pub(crate) fn check(&self, client: &ClientId, now: OffsetDateTime) -> Result<(), Duration> {
        match self.windows.get(client) {
            Some(w) => self.refusal(&self.at(w, now), now),
            None => Ok(()),
        }
    }

    /// Reserves one password check for `client`, or `Err(retry_after)` if
    /// its failures and the checks under way already reach `max`. The count
    /// and the reservation are one step, so concurrent callers are exact.
    pub(crate) fn reserve(
        &self,
        client: &ClientId,
        now: OffsetDateTime,
    ) -> Result<Reservation, Duration> {
        self.windows
            .entry_by_ref(client)
            .and_try_compute_with(|entry| {
                let w = self.at(entry.map(|e| e.into_value()).unwrap_or_default(), now);
                self.refusal(&w, now)?;
                Ok(Op::Put(ClientWindow {
                    in_flight: w.in_flight.saturating_add(1),
                    ..w
                }))
            })?;
        Ok(Reservation {
            clients: self.clone(),
            client: client.clone(),
            failed_at: None,
        })
    }

    /// Ends a check; counts a failure if it had one.
    fn release(&self, client: &ClientId, failed_at: Option<OffsetDateTime>) {
        self.windows.entry_by_ref(client).and_compute_with(|entry| {
            // Missing if evicted meanwhile (memory is bounded): start afresh.
            let w = entry.map(|e| e.into_value()).unwrap_or_default();
            let mut w = ClientWindow {
                in_flight: w.in_flight.saturating_sub(1),
                ..w
            };
            if let Some(now) = failed_at {
                w = self.at(w, now);
                w.failures = w.failures.saturating_add(1);
                w.started = w.started.or(Some(now));
                if w.failures == self.max {
                    tracing::warn!(
                        client = ?client,
                        "too many failed password attempts from this client: refused until its window passes"
                    );
                }
            }
            Op::Put(w)
        });
    }
}

/// One password check under way for a client. Dropped, it ends the check
/// without counting a failure (a check that was cancelled told the caller
/// nothing); [`fail`](Self::fail) counts one.
pub(crate) struct Reservation {
    clients: ClientAttempts,
    client: ClientId,
    failed_at: Option<OffsetDateTime>,
}

impl Reservation {
    /// The password was wrong: counts a failure at `now`.
    pub(crate) fn fail(mut self, now: OffsetDateTime) {
        self.failed_at = Some(now);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.clients.release(&self.client, self.failed_at);
    }
}

/// A counter cache of bounded size whose idle entries go after `window`. Real
/// time only bounds memory; the windows themselves run on the crate's clock.
fn bounded<K, V>(window: Duration) -> moka::sync::Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(CAPACITY)
        .time_to_idle(window)
        .build()
}

/// The first 12 hex digits of SHA-256 of `name`: enough to tell names apart in
/// a log, nothing a reader can turn back into the name.
fn name_digest(name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    hex::encode(&digest[..6])
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

    fn ip(s: &str) -> ClientId {
        ClientId::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn client_ids_normalise_addresses() {
        assert_eq!(ip("::ffff:192.0.2.1"), ip("192.0.2.1"));
        assert_ne!(ip("192.0.2.1"), ip("192.0.2.2"));
        // One /64 is one client; the next /64 is another.
        assert_eq!(
            ip("2001:db8:1:2::1"),
            ip("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db9:1:2::1"));
        let peer: SocketAddr = "[2001:db8:1:2::7]:443".parse().unwrap();
        assert_eq!(ClientId::from(peer), ip("2001:db8:1:2::"));
        assert_eq!(ClientId::from(peer).to_string(), "2001:db8:1:2::/64");
        // A key that spells an address is still a key.
        assert_ne!(ClientId::named("192.0.2.1"), ip("192.0.2.1"));
        assert_eq!(
            ClientId::named("gw-7"),
            ClientId::named(String::from("gw-7"))
        );
        assert_eq!(
            format!("{:?}", ip("::ffff:192.0.2.1")),
            "ClientId(192.0.2.1)"
        );
        assert_eq!(
            format!("{:?}", ClientId::named("gw-7")),
            "ClientId::named(\"gw-7\")"
        );
    }

    #[test]
    fn a_client_is_refused_after_max_failures_across_names_until_the_window_passes() {
        let c = ClientAttempts::new(3, Duration::from_secs(60));
        let a = ip("192.0.2.1");
        let t0 = datetime!(2026-01-01 00:00 UTC);
        for i in 0..3 {
            assert_eq!(c.check(&a, t0), Ok(()), "attempt {i}");
            let r = c.reserve(&a, t0).unwrap();
            r.fail(t0 + Duration::from_secs(i));
        }
        let at = t0 + Duration::from_secs(10);
        assert_eq!(c.check(&a, at), Err(Duration::from_secs(50)));
        assert_eq!(c.reserve(&a, at).err(), Some(Duration::from_secs(50)));
        // Another client is not affected.
        assert!(c.reserve(&ip("192.0.2.2"), at).is_ok());
        // The window passes: a new one begins with the next failure.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(c.check(&a, later), Ok(()));
        c.reserve(&a, later).unwrap().fail(later);
        assert_eq!(c.check(&a, later + Duration::from_secs(59)), Ok(()));
    }

    #[test]
    fn checks_under_way_count_until_they_end() {
        let c = ClientAttempts::new(2, Duration::from_secs(60));
        let a = ip("192.0.2.1");
        let t0 = datetime!(2026-01-01 00:00 UTC);
        let first = c.reserve(&a, t0).unwrap();
        let second = c.reserve(&a, t0).unwrap();
        // Both may yet fail: a third is refused, briefly.
        assert_eq!(c.check(&a, t0), Err(IN_FLIGHT_RETRY));
        assert_eq!(c.reserve(&a, t0).err(), Some(IN_FLIGHT_RETRY));
        // A check that ends without a failure frees its place ...
        drop(first);
        let third = c.reserve(&a, t0).unwrap();
        // ... failures keep theirs for the window.
        second.fail(t0);
        third.fail(t0);
        assert_eq!(c.reserve(&a, t0).err(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn concurrent_reservations_never_exceed_max() {
        let c = ClientAttempts::new(30, Duration::from_secs(60));
        let a = ip("2001:db8::1");
        let t0 = datetime!(2026-01-01 00:00 UTC);
        let held = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        if let Ok(r) = c.reserve(&a, t0) {
                            held.lock().unwrap().push(r);
                        }
                    }
                });
            }
        });
        let held = held.into_inner().unwrap();
        assert_eq!(held.len(), 30);
        for r in held {
            r.fail(t0);
        }
        let w = c.windows.get(&a).unwrap();
        assert_eq!((w.failures, w.in_flight), (30, 0));
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
