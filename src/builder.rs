//! [`Builder`]: configures and builds [`ApiTokens`], the handle that makes the
//! layer and manages tokens. Mistakes are reported by `build`, not at request time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::attempts::{Attempts, ClientAttempts};
use crate::authenticator::Authenticator;
use crate::cache::{CacheSettings, TokenCache};
use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::issue::ServerKey;
use crate::manager::ApiTokens;
use crate::policy::PolicySnapshot;
use crate::store::{Directory, TokenStore};
use crate::token::TokenFormat;
use crate::usage::Usage;

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
    server_key: Option<ServerKey>,
    admin_role: String,
    usage_interval: Duration,
    max_failed_attempts: u32,
    failed_attempts_window: Duration,
    max_client_failed_attempts: u32,
    client_failed_attempts_window: Duration,
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
            server_key: None,
            admin_role: "admin".to_owned(),
            usage_interval: Duration::from_secs(60),
            max_failed_attempts: 10,
            failed_attempts_window: Duration::from_secs(15 * 60),
            max_client_failed_attempts: 30,
            client_failed_attempts_window: Duration::from_secs(15 * 60),
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

    /// The key that makes tokens re-fetchable: a user who generates again gets
    /// their existing token back, derived anew as `HMAC(key, token_id)`. Without
    /// one, tokens are shown once and `generate` returns only the existing
    /// token's metadata.
    pub fn server_key(mut self, key: ServerKey) -> Self {
        self.server_key = Some(key);
        self
    }

    /// The role that makes a user an administrator (default `admin`): allowed to
    /// revoke anyone's token.
    pub fn admin_role(mut self, role: impl Into<String>) -> Self {
        self.admin_role = role.into();
        self
    }

    /// At most one `last_used_at` write per token per this interval (default 60 s).
    pub fn usage_interval(mut self, interval: Duration) -> Self {
        self.usage_interval = interval;
        self
    }

    /// Failed password attempts per user name within the window before every
    /// attempt for that name (the right password too) is refused with `429`
    /// until the window has passed (default 10 in 15 minutes).
    pub fn failed_attempts(mut self, max: u32, window: Duration) -> Self {
        self.max_failed_attempts = max;
        self.failed_attempts_window = window;
        self
    }

    /// Failed password attempts per client, across all user names, within the
    /// window before every attempt from that client is refused with `429` until
    /// the window has passed (default 30 in 15 minutes). Applies to
    /// [`ApiTokens::generate_from`] and [`ApiTokens::verify_password_from`];
    /// only wrong passwords count. See [`ClientId`](crate::ClientId) for what
    /// one client is.
    pub fn client_failed_attempts(mut self, max: u32, window: Duration) -> Self {
        self.max_client_failed_attempts = max;
        self.client_failed_attempts_window = window;
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
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::NoRuntime);
        }
        for (name, max) in [
            ("failed_attempts", self.max_failed_attempts),
            ("client_failed_attempts", self.max_client_failed_attempts),
        ] {
            if max == 0 {
                return Err(ConfigError::ZeroAttempts(name));
            }
        }
        for (name, d) in [
            ("cache_ttl", self.cache.ttl),
            ("usage_interval", self.usage_interval),
            ("failed_attempts_window", self.failed_attempts_window),
            (
                "client_failed_attempts_window",
                self.client_failed_attempts_window,
            ),
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
            directory,
            cache: TokenCache::new(&self.cache),
            policy: PolicySnapshot::new(policy),
            clock: self.clock,
            max_token_len: self.max_token_len,
            lookup_timeout: self.lookup_timeout,
            realm: self.realm.into(),
            retry_after: HeaderValue::from(retry_secs),
            expiry_header: self.expiry_header,
            usage: Usage::start(Arc::clone(&store), self.usage_interval),
            store,
        };
        Ok(ApiTokens::new(
            Arc::new(auth),
            self.server_key,
            self.admin_role,
            Attempts::new(self.max_failed_attempts, self.failed_attempts_window),
            ClientAttempts::new(
                self.max_client_failed_attempts,
                self.client_failed_attempts_window,
            ),
        ))
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
            .field("server_key", &self.server_key)
            .field("admin_role", &self.admin_role)
            .finish_non_exhaustive()
    }
}
