//! The token cache: resolved tokens by digest, unknown digests apart, and the
//! coalescing of concurrent misses into one backend call.
//!
//! * `entries` — resolved tokens (`moka::sync::Cache`, so a hit is a plain
//!   function call and the request path needs no boxed future). Each entry lives
//!   at most `cache_ttl`. An entry is never *trusted* past its token's own
//!   expiry: `verify` refuses it from then on, from the cache, without asking the
//!   store again (so a client that keeps sending an expired token costs no
//!   backend calls). One TTL for all entries keeps moka's per-read work and
//!   per-entry memory at their minimum (no per-entry timers).
//! * `unknown` — digests the store does not know, bounded on its own and with a
//!   short TTL, so a flood of junk tokens cannot evict valid entries.
//! * `loads` — moka's coalescing loader (`try_get_with`): concurrent misses on
//!   one digest share one backend call; errors are never cached.
//! * `landed` — a [`Notify`] per stripe of digests, told whenever an entry is
//!   inserted. moka's waiters on a load are woken one after another (each
//!   waking task wakes the next), so a thousand of them take a thousand
//!   scheduler hops in a row; a caller waiting on someone else's load also
//!   listens here, and all of them wake at once and take the entry from
//!   `entries`. The loader stays moka's; this only shortens the wake-up. One
//!   signal per stripe, not per load: an insert also wakes the waiters of other
//!   tokens in its stripe (1 in 256), who look, miss and wait again; a cold
//!   start with many distinct tokens pays some such wake-ups, never a wrong
//!   answer.
//! * `generations` — a counter per stripe of digests, bumped on every
//!   invalidation. An entry remembers the counter it was loaded under; if the
//!   counter moved, the entry may predate a revocation and is not trusted. This is
//!   what stops a load that raced a revoke from re-inserting the old record.
//!
//! This module stores digests and records only; it never sees a token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::store::{TokenId, TokenRecord, User};
use crate::token::TokenHash;
use crate::usage::LastNoted;

const STRIPES: usize = 256;

/// A resolved token: what the request path needs of its record, and its owner
/// as the directory knew them when loaded (at most `cache_ttl` ago). Kept small:
/// a cache may hold a million of these.
#[derive(Debug)]
pub(crate) struct CachedToken {
    pub(crate) id: TokenId,
    pub(crate) revoked: bool,
    /// The record's non-secret display hint, for traces.
    pub(crate) hint: Box<str>,
    /// `issued_at` and `expires_at` in Unix nanoseconds (an `i64` lasts until
    /// 2262), so the request path compares integers, not calendar dates.
    pub(crate) issued_ns: i64,
    pub(crate) expires_ns: Option<i64>,
    pub(crate) user: User,
    /// The record's own `expires_at`, pre-formatted for the expiry header.
    pub(crate) expires_header: Option<HeaderValue>,
    /// When this instance last queued a `last_used_at` write for the token.
    pub(crate) last_noted: LastNoted,
    generation: u64,
}

/// `at` in Unix nanoseconds, saturating outside 1677–2262.
pub(crate) fn unix_nanos(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos()).unwrap_or(if at.year() < 1970 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Why a load produced no token.
#[derive(Debug, Clone)]
pub(crate) enum Missing {
    /// The store has no such token (cached as a negative).
    Unknown,
    /// The token's owner no longer exists (not cached).
    UnknownUser,
}

/// Sizes and lifetimes of the caches.
#[derive(Debug, Clone)]
pub(crate) struct CacheSettings {
    pub(crate) ttl: Duration,
    pub(crate) capacity: u64,
    pub(crate) negative_ttl: Duration,
    pub(crate) negative_capacity: u64,
}

/// Hashes a [`TokenHash`] by its own first 8 bytes: a SHA-256 digest is already
/// uniform. Used only where every key is the digest of a token this service
/// issued (the resolved entries), so nobody can choose keys that collide; the
/// negative cache, whose keys callers choose, keeps SipHash.
#[derive(Default, Clone, Copy)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length, then its bytes; take the first 8.
        if let Some(head) = bytes.first_chunk::<8>() {
            self.0 = u64::from_le_bytes(*head);
        }
    }

    fn write_usize(&mut self, _len: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

type DigestBuildHasher = std::hash::BuildHasherDefault<DigestHasher>;

#[derive(Clone)]
pub(crate) struct TokenCache {
    entries: moka::sync::Cache<TokenHash, Arc<CachedToken>, DigestBuildHasher>,
    unknown: moka::sync::Cache<TokenHash, ()>,
    loads: moka::future::Cache<TokenHash, Arc<CachedToken>>,
    landed: Arc<[Notify]>,
    generations: Arc<[AtomicU64]>,
}

impl TokenCache {
    pub(crate) fn new(settings: &CacheSettings) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(settings.ttl)
                .build_with_hasher(DigestBuildHasher::default()),
            unknown: moka::sync::Cache::builder()
                .max_capacity(settings.negative_capacity)
                .time_to_live(settings.negative_ttl)
                .build(),
            // Only a rendezvous for concurrent loads: the caller that ran a load
            // removes its result once it has it (see `finish_load`). Should that
            // caller be cancelled first, the result may be handed to later
            // misses until it lapses, so it lives no longer than an entry would.
            loads: moka::future::Cache::builder()
                .max_capacity(settings.negative_capacity)
                .time_to_live(settings.negative_ttl.min(settings.ttl))
                .build(),
            landed: (0..STRIPES).map(|_| Notify::new()).collect(),
            generations: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Told whenever an entry in `hash`'s stripe is inserted. A waiter enables
    /// its `notified()` *before* it looks in `entries`, so no insert is missed.
    pub(crate) fn landed(&self, hash: &TokenHash) -> &Notify {
        &self.landed[usize::from(hash.as_bytes()[0]) % STRIPES]
    }

    fn stripe(&self, hash: &TokenHash) -> &AtomicU64 {
        &self.generations[usize::from(hash.as_bytes()[0]) % STRIPES]
    }

    /// The current generation of `hash`'s stripe.
    pub(crate) fn generation(&self, hash: &TokenHash) -> u64 {
        self.stripe(hash).load(Ordering::Acquire)
    }

    /// Whether `entry` was loaded after the last invalidation of its stripe.
    pub(crate) fn is_current(&self, hash: &TokenHash, entry: &CachedToken) -> bool {
        entry.generation == self.generation(hash)
    }

    /// A cached, trustworthy entry for `hash`.
    pub(crate) fn get(&self, hash: &TokenHash) -> Option<Arc<CachedToken>> {
        self.entries
            .get(hash)
            .filter(|entry| self.is_current(hash, entry))
    }

    /// Whether `hash` is known to be unknown.
    pub(crate) fn is_unknown(&self, hash: &TokenHash) -> bool {
        self.unknown.contains_key(hash)
    }

    pub(crate) fn remember_unknown(&self, hash: TokenHash) {
        self.unknown.insert(hash, ());
    }

    /// Builds an entry for a record loaded under `generation`, which the caller
    /// read *before* it asked the store.
    pub(crate) fn entry(record: TokenRecord, user: User, generation: u64) -> Arc<CachedToken> {
        let expires_header = record
            .expires_at
            .and_then(crate::principal::expiry_header_value);
        Arc::new(CachedToken {
            id: record.id,
            revoked: record.revoked_at.is_some(),
            hint: record.hint.into_boxed_str(),
            last_noted: LastNoted::new(record.last_used_at),
            issued_ns: unix_nanos(record.issued_at),
            expires_ns: record.expires_at.map(unix_nanos),
            user,
            expires_header,
            generation,
        })
    }

    /// Keeps `entry` unless its stripe was invalidated while it was loading.
    pub(crate) fn insert(&self, hash: TokenHash, entry: &Arc<CachedToken>) -> bool {
        if !self.is_current(&hash, entry) {
            return false;
        }
        self.entries.insert(hash, Arc::clone(entry));
        // An invalidation that ran between the check and the insert bumped the
        // generation, so `get` will refuse this entry; drop it now too.
        if !self.is_current(&hash, entry) {
            self.entries.invalidate(&hash);
            return false;
        }
        self.landed(&hash).notify_waiters();
        true
    }

    /// The coalescing loader.
    pub(crate) fn loads(&self) -> &moka::future::Cache<TokenHash, Arc<CachedToken>> {
        &self.loads
    }

    /// Ends the rendezvous of a load that produced an entry (errors are never
    /// kept by the loader).
    pub(crate) async fn finish_load(&self, hash: &TokenHash) {
        self.loads.invalidate(hash).await;
    }

    /// Forgets every resolved and unknown token, and makes every load under way
    /// unable to cache its result (after a lost notification channel, say).
    pub(crate) fn invalidate_all(&self) {
        for generation in self.generations.iter() {
            generation.fetch_add(1, Ordering::AcqRel);
        }
        self.entries.invalidate_all();
        self.unknown.invalidate_all();
    }

    /// Forgets everything about `hash`, and makes any load of it already under
    /// way unable to cache its result.
    pub(crate) fn invalidate(&self, hash: &TokenHash) {
        self.stripe(hash).fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(hash);
        self.unknown.invalidate(hash);
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn digest_hasher_uses_the_digest_itself() {
        let hash = TokenHash::of("abc");
        // SHA-256("abc") starts ba 78 16 bf 8f 01 cf ea.
        let expected = u64::from_le_bytes([0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea]);
        assert_eq!(DigestBuildHasher::default().hash_one(hash), expected);
        assert_ne!(
            DigestBuildHasher::default().hash_one(TokenHash::of("abd")),
            expected
        );
    }
}
