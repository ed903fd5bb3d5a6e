//! [`Builder`]: configures and builds [`ApiTokens`], the handle that makes the
//! layer and manages tokens. Mistakes are reported by `build`, not at request time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::authenticator::Authenticator;
use crate::cache::{CacheSettings, TokenCache};
use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::manager::ApiTokens;
use crate::policy::PolicySnapshot;
use crate::store::{Directory, TokenStore};
use crate::token::TokenFormat;

/// Default name of the response header that carries the token's expiry.
pub const DEFAULT_EXPIRY_HEADER: &str = "api-token-expiration";

/// Configures [`ApiTokens`]. Start with [`ApiTokens::builder`].
#[must_use]
pub struct Builder {
    store: Option<Arc<dyn TokenStore>>,
    directory: Option<Arc<dyn Directory>>,
    clock: Arc<dyn Clock>,
    prefix: String,
    realm: String,
    cache: CacheSettings,
    lookup_timeout: Duration,
    retry_after: Duration,
    max_token_len: usize,
    expiry_header: Option<HeaderName>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            store: None,
            directory: None,
            clock: Arc::new(SystemClock),
            prefix: crate::token::DEFAULT_PREFIX.to_owned(),
            realm: "api".to_owned(),
            cache: CacheSettings {
                ttl: Duration::from_secs(30),
                capacity: 100_000,
                negative_ttl: Duration::from_secs(10),
                negative_capacity: 100_000,
            },
            lookup_timeout: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
            max_token_len: 256,
            expiry_header: Some(HeaderName::from_static(DEFAULT_EXPIRY_HEADER)),
        }
    }
}

impl Builder {
    /// Where token records and the policy live.
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Where users live.
    pub fn directory(mut self, directory: impl Directory) -> Self {
        self.directory = Some(Arc::new(directory));
        self
    }

    /// One backend for both tokens and users (such as
    /// [`MemoryStore`](crate::store::MemoryStore)).
    pub fn backend<B: TokenStore + Directory + Clone>(self, backend: B) -> Self {
        self.store(backend.clone()).directory(backend)
    }

    /// The clock (default: the system clock). Tests use
    /// [`ManualClock`](crate::clock::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The token prefix (default `nch_`).
    pub fn token_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The realm of the `WWW-Authenticate` challenge (default `api`).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// How long a resolved token stays cached (default 30 s): the bound on how
    /// stale a user's roles and provider may be, and, with several instances,
    /// the bound when a revocation notice is lost.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache.ttl = ttl;
        self
    }

    /// How many resolved tokens to cache (default 100 000).
    pub fn cache_capacity(mut self, capacity: u64) -> Self {
        self.cache.capacity = capacity;
        self
    }

    /// How long an unknown token is remembered as unknown (default 10 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.cache.negative_ttl = ttl;
        self
    }

    /// How many unknown tokens to remember (default 100 000), apart from the
    /// resolved ones so junk cannot evict them.
    pub fn negative_capacity(mut self, capacity: u64) -> Self {
        self.cache.negative_capacity = capacity;
        self
    }

    /// How long a backend lookup may take before the request gets `503`
    /// (default 2 s).
    pub fn lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = timeout;
        self
    }

    /// The `Retry-After` of a `503`, in whole seconds (default 1 s).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The longest bearer credential looked at (default 256 bytes); longer ones
    /// are `400` before they are hashed.
    pub fn max_token_len(mut self, len: usize) -> Self {
        self.max_token_len = len;
        self
    }

    /// The response header that tells clients when their token expires (default
    /// `api-token-expiration`, RFC 3339 UTC); `None` turns it off.
    pub fn expiry_header(mut self, name: Option<HeaderName>) -> Self {
        self.expiry_header = name;
        self
    }

    /// Checks the configuration, loads the policy from the store (storing the
    /// default, all users for 90 days, in a fresh store), and builds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the mistake, or the store's failure.
    pub async fn build(self) -> Result<ApiTokens, ConfigError> {
        let store = self.store.ok_or(ConfigError::MissingStore)?;
        let directory = self.directory.ok_or(ConfigError::MissingDirectory)?;
        let format = TokenFormat::new(&self.prefix)?;
        let realm_ok = !self.realm.is_empty()
            && self
                .realm
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        if !realm_ok {
            return Err(ConfigError::Realm);
        }
        for (name, d) in [
            ("cache_ttl", self.cache.ttl),
            ("negative_ttl", self.cache.negative_ttl),
            ("lookup_timeout", self.lookup_timeout),
            ("retry_after", self.retry_after),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if self.max_token_len < format.token_len() {
            return Err(ConfigError::MaxTokenLen {
                max: self.max_token_len,
                needed: format.token_len(),
            });
        }
        let policy = match store.load_policy().await? {
            Some(policy) => policy,
            None => store.save_policy(&Default::default()).await?,
        };
        let retry_secs = self.retry_after.as_secs().max(1);
        let auth = Authenticator {
            format,
            store,
            directory,
            cache: TokenCache::new(&self.cache),
            policy: PolicySnapshot::new(policy),
            clock: self.clock,
            max_token_len: self.max_token_len,
            lookup_timeout: self.lookup_timeout,
            realm: self.realm.into(),
            retry_after: HeaderValue::from(retry_secs),
            expiry_header: self.expiry_header,
        };
        Ok(ApiTokens::from_authenticator(Arc::new(auth)))
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("prefix", &self.prefix)
            .field("realm", &self.realm)
            .field("cache", &self.cache)
            .field("lookup_timeout", &self.lookup_timeout)
            .field("retry_after", &self.retry_after)
            .field("max_token_len", &self.max_token_len)
            .field("expiry_header", &self.expiry_header)
            .finish_non_exhaustive()
    }
}
