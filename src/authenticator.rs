//! The decision at the heart of the layer: from a request's headers to a
//! [`Principal`] or a refusal.
//!
//! `begin` does everything that needs no backend (extract, parse, hash, cache
//! probe, verify) synchronously; only a cache miss goes to [`Authenticator::load`].
//! `verify` runs on every request, hit or miss, against the policy in force now.
//! Nothing here logs above DEBUG, and nothing here ever sees more of a token
//! than the borrowed header value it hashes.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;
use tracing::Span;

use crate::cache::{CachedToken, Missing, TokenCache};
use crate::clock::Clock;
use crate::error::{AuthError, InvalidRequest, InvalidToken, StoreError};
use crate::extract::{self, Credentials};
use crate::policy::PolicySnapshot;
use crate::principal::{Principal, expiry_header_value};
use crate::store::{Directory, TokenStore};
use crate::token::{TokenFormat, TokenHash};
use crate::usage::Usage;

/// How many times a load is retried when an invalidation overtook it.
const LOAD_ATTEMPTS: usize = 3;

/// Shared by the layer, every service it builds, and the manager.
pub(crate) struct Authenticator {
    pub(crate) format: TokenFormat,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) directory: Arc<dyn Directory>,
    pub(crate) cache: TokenCache,
    pub(crate) policy: PolicySnapshot,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) max_token_len: usize,
    pub(crate) lookup_timeout: Duration,
    pub(crate) realm: Box<str>,
    pub(crate) retry_after: HeaderValue,
    pub(crate) expiry_header: Option<HeaderName>,
    pub(crate) usage: Usage,
}

/// A successful authentication.
pub(crate) struct Accepted {
    pub(crate) principal: Principal,
    /// The expiry header's value, if the token expires and the header is on.
    pub(crate) expiry: Option<HeaderValue>,
}

/// What `begin` decided.
pub(crate) enum Step {
    Accept(Accepted),
    /// No bearer credentials, and the layer lets anonymous requests through.
    Anonymous,
    Reject(AuthError),
    /// A cache miss: the token is well-formed and must be looked up.
    Load(TokenHash),
}

/// How a wait for a load ended.
enum Landed {
    /// Another caller's load put a trustworthy entry in the cache.
    Cached(Arc<CachedToken>),
    /// The coalesced load's own result.
    Loaded(Result<Arc<CachedToken>, Arc<LoadError>>),
}

/// Why a coalesced load produced no entry; shared by every waiting caller.
#[derive(Debug)]
pub(crate) enum LoadError {
    Missing(Missing),
    Store(StoreError),
}

impl Authenticator {
    /// Everything up to the cache probe, and verification on a hit.
    pub(crate) fn begin(
        &self,
        headers: &mut HeaderMap,
        allow_anonymous: bool,
        span: &Span,
    ) -> Step {
        let token = match extract::bearer_unchecked(headers, self.max_token_len) {
            Ok(Credentials::Bearer(token)) => token,
            Ok(Credentials::Missing | Credentials::OtherScheme) if allow_anonymous => {
                return Step::Anonymous;
            }
            Ok(Credentials::Missing | Credentials::OtherScheme) => {
                return Step::Reject(AuthError::MissingCredentials);
            }
            Err(invalid) => return Step::Reject(invalid.into()),
        };
        // Garbage is refused here, before it can touch the cache or the store.
        // Every token of the format is token68, so only a token that fails the
        // format is checked for the request's shape (400 rather than 401).
        if self.format.check_bytes(token).is_err() {
            return Step::Reject(if extract::is_token68(token) {
                InvalidToken::Malformed.into()
            } else {
                InvalidRequest::MalformedToken.into()
            });
        }
        let hash = TokenHash::of_bytes(token);
        if let Some(entry) = self.cache.get(&hash) {
            return match self.verify(entry, span) {
                Ok(accepted) => Step::Accept(accepted),
                Err(error) => Step::Reject(error),
            };
        }
        if self.cache.is_unknown(&hash) {
            return Step::Reject(InvalidToken::Unknown.into());
        }
        Step::Load(hash)
    }

    /// Checks a resolved token against its revocation, its expiry and the
    /// policy in force now.
    pub(crate) fn verify(
        &self,
        entry: Arc<CachedToken>,
        span: &Span,
    ) -> Result<Accepted, AuthError> {
        if !span.is_disabled() {
            span.record("token_id", tracing::field::display(entry.id));
            span.record("hint", &*entry.hint);
        }
        if entry.revoked {
            return Err(InvalidToken::Revoked.into());
        }
        let Some(lifetime) = self.policy.load().policy.lifetime_for(&entry.user) else {
            return Err(InvalidToken::NotPermitted.into());
        };
        // min(expires_at, issued_at + current lifetime): tightening cuts, loosening
        // never extends.
        let by_policy = lifetime
            .as_nanos()
            .map(|l| entry.issued_ns.saturating_add(l));
        let expires_ns = match (entry.expires_ns, by_policy) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let now = i64::try_from(self.clock.now_unix_nanos()).unwrap_or(i64::MAX);
        if expires_ns.is_some_and(|at| now >= at) {
            return Err(InvalidToken::Expired.into());
        }
        self.usage.used(entry.id, &entry.last_noted, now);
        let expiry = if self.expiry_header.is_none() {
            None
        } else if expires_ns == entry.expires_ns {
            entry.expires_header.clone()
        } else {
            expires_ns
                .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).ok())
                .and_then(expiry_header_value)
        };
        Ok(Accepted {
            principal: Principal::new(entry, expires_ns),
            expiry,
        })
    }

    /// Resolves a cache miss through the coalescing loader.
    pub(crate) async fn load(
        self: Arc<Self>,
        hash: TokenHash,
    ) -> Result<Arc<CachedToken>, AuthError> {
        for _ in 0..LOAD_ATTEMPTS {
            // Whether this caller ran the load (the others waited for it).
            let ran = AtomicBool::new(false);
            let load = self.cache.loads().try_get_with(hash, async {
                ran.store(true, Ordering::Relaxed);
                self.load_uncoalesced(hash).await
            });
            let result = match self.wait_for(&hash, load, &ran).await {
                Landed::Cached(entry) => return Ok(entry),
                Landed::Loaded(result) => result,
            };
            let ran = ran.load(Ordering::Relaxed);
            let current = result
                .as_ref()
                .is_ok_and(|entry| self.cache.is_current(&hash, entry));
            // The rendezvous is over once the load has its result: the caller
            // that ran it removes it, once (waiters got the value directly), as
            // does anyone about to retry past a stale one.
            if (ran || !current) && result.is_ok() {
                self.cache.finish_load(&hash).await;
            }
            match result {
                Ok(entry) if current => return Ok(entry),
                // Invalidated while loading: the record may predate a revocation.
                Ok(_) => continue,
                Err(err) => {
                    return Err(match &*err {
                        LoadError::Missing(Missing::Unknown) => InvalidToken::Unknown.into(),
                        LoadError::Missing(Missing::UnknownUser) => {
                            InvalidToken::UnknownUser.into()
                        }
                        LoadError::Store(e) => AuthError::Unavailable(Arc::new(e.clone())),
                    });
                }
            }
        }
        Err(AuthError::Unavailable(Arc::new(StoreError::Stale)))
    }

    /// Awaits `load`; a caller that is not running it (`ran` stays false) also
    /// leaves as soon as a trustworthy entry for `hash` is in the cache.
    ///
    /// moka wakes the waiters of a load one at a time, each woken task waking
    /// the next when it is polled; the cache's `landed` signal wakes all of them
    /// at once. The load is still moka's alone: this only decides which wake-up
    /// a waiter acts on. A waiter that leaves drops its place in moka's queue,
    /// which hands its wake-up on to the next.
    async fn wait_for<F>(&self, hash: &TokenHash, load: F, ran: &AtomicBool) -> Landed
    where
        F: Future<Output = Result<Arc<CachedToken>, Arc<LoadError>>>,
    {
        let mut load = pin!(load);
        loop {
            // Enabled before the cache is looked at: an insert after the look
            // is told to this listener.
            let mut landed = pin!(Some(self.cache.landed(hash).notified()));
            if let Some(listener) = landed.as_mut().as_pin_mut() {
                listener.enable();
            }
            // (Only callers not running the load come round again: see below.)
            if let Some(entry) = self.cache.get(hash) {
                return Landed::Cached(entry);
            }
            let woke = poll_fn(|cx| {
                if !ran.load(Ordering::Relaxed)
                    && let Some(listener) = landed.as_mut().as_pin_mut()
                    && listener.poll(cx).is_ready()
                {
                    return Poll::Ready(None);
                }
                let polled = load.as_mut().poll(cx).map(Some);
                // The caller running the load stops listening, so that its own
                // insert (or others' in its stripe) does not wake it for nothing.
                if ran.load(Ordering::Relaxed) {
                    landed.set(None);
                }
                polled
            })
            .await;
            match woke {
                Some(result) => return Landed::Loaded(result),
                // Something in `hash`'s stripe was inserted: most likely this
                // entry (if not, listen again).
                None => {
                    if let Some(entry) = self.cache.get(hash) {
                        return Landed::Cached(entry);
                    }
                }
            }
        }
    }

    async fn load_uncoalesced(&self, hash: TokenHash) -> Result<Arc<CachedToken>, LoadError> {
        // A load that finished just before this one began has filled the cache.
        if let Some(entry) = self.cache.get(&hash) {
            return Ok(entry);
        }
        if self.cache.is_unknown(&hash) {
            return Err(LoadError::Missing(Missing::Unknown));
        }
        // Read before the store is asked: an invalidation after this point makes
        // the result untrusted (see `cache`).
        let generation = self.cache.generation(&hash);
        let lookup = async {
            let Some(record) = self.store.find_by_hash(&hash).await? else {
                return Ok(None);
            };
            let user = self.directory.user(record.user_id).await?;
            Ok::<_, StoreError>(Some((record, user)))
        };
        let found = tokio::time::timeout(self.lookup_timeout, lookup)
            .await
            .map_err(|_| StoreError::Timeout)
            .and_then(|r| r)
            .map_err(LoadError::Store)?;
        match found {
            None => {
                self.cache.remember_unknown(hash);
                Err(LoadError::Missing(Missing::Unknown))
            }
            Some((_, None)) => Err(LoadError::Missing(Missing::UnknownUser)),
            Some((record, Some(user))) => {
                let entry = TokenCache::entry(record, user, generation);
                self.cache.insert(hash, &entry);
                Ok(entry)
            }
        }
    }
}
