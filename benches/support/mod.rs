//! Shared by the benches: a warmed-up layer, requests, and the ratio report.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_api_tokens::StoreError;
use tower_api_tokens::password::Password;
use tower_api_tokens::policy::{Policy, VersionedPolicy};
use tower_api_tokens::store::{Active, Issued, TokenId, TokenRecord, TokenStore};
use tower_api_tokens::token::TokenHash;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};
use http_body_util::Full;
use tower_api_tokens::ApiTokens;
use tower_api_tokens::store::{Directory, MemoryStore, User, UserId};

/// A layer over a memory store, and one of its tokens as a header value.
pub async fn tokens_with_token() -> (ApiTokens, HeaderValue, String) {
    tokens_with_token_configured(|b| b).await
}

/// As [`tokens_with_token`], with a say in the builder.
pub async fn tokens_with_token_configured(
    configure: impl FnOnce(tower_api_tokens::Builder) -> tower_api_tokens::Builder,
) -> (ApiTokens, HeaderValue, String) {
    let store = MemoryStore::new();
    let user = bench_user(&store).await;
    let tokens = configure(ApiTokens::builder().backend(store))
        .build()
        .await
        .unwrap();
    let token = tokens
        .issue(user.id)
        .await
        .unwrap()
        .token
        .expose()
        .to_owned();
    let header = HeaderValue::try_from(format!("Bearer {token}")).unwrap();
    (tokens, header, token)
}

/// Creates the benches' user (`bench`, role `dev`) in `store`.
pub async fn bench_user(store: &impl Directory) -> User {
    let user = User {
        id: UserId::new(),
        username: "bench".into(),
        roles: vec!["dev".into()],
        identity_provider: "local".into(),
    };
    store.create_user(&user, &"pw".into()).await.unwrap();
    user
}

/// The request every variant serves: `GET /` with one `Authorization` header.
pub fn request(auth: &HeaderValue) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::default());
    req.headers_mut().insert(AUTHORIZATION, auth.clone());
    req
}

/// The median (ns) criterion measured for `group/id` in this run.
pub fn median_ns(group: &str, id: &str) -> Option<f64> {
    let dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let path = dir
        .join("criterion")
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// A memory store whose token lookups are counted and take `latency`.
#[derive(Clone, Default)]
pub struct SlowStore {
    pub inner: MemoryStore,
    pub lookups: Arc<AtomicUsize>,
    pub latency: Duration,
}

#[async_trait]
impl TokenStore for SlowStore {
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.inner.find_by_hash(hash).await
    }
    async fn get(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> {
        self.inner.insert(record).await
    }
    async fn revoke(
        &self,
        id: TokenId,
        at: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.revoke(id, at).await
    }
    async fn list(&self, user: Option<UserId>) -> Result<Vec<TokenRecord>, StoreError> {
        self.inner.list(user).await
    }
    async fn touch(&self, used: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        self.inner.touch(used).await
    }
    async fn load_policy(&self) -> Result<Option<VersionedPolicy>, StoreError> {
        self.inner.load_policy().await
    }
    async fn save_policy(&self, policy: &Policy) -> Result<VersionedPolicy, StoreError> {
        self.inner.save_policy(policy).await
    }
    async fn issue(
        &self,
        record: &TokenRecord,
        active: Active,
        rotate: bool,
    ) -> Result<Issued, StoreError> {
        self.inner.issue(record, active, rotate).await
    }
}

#[async_trait]
impl Directory for SlowStore {
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.inner.user(id).await
    }
    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_name(name).await
    }
    async fn verify_password(&self, name: &str, pw: &Password) -> Result<Option<User>, StoreError> {
        self.inner.verify_password(name, pw).await
    }
    async fn create_user(&self, user: &User, pw: &Password) -> Result<(), StoreError> {
        self.inner.create_user(user, pw).await
    }
    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        self.inner.update_user(user).await
    }
}

/// What a principal costs to carry in the reference: shared user data.
#[derive(Clone)]
pub struct RefPrincipal(pub Arc<String>);

/// The reference's cache: digests of tokens to principals, as plain as moka gets.
pub type RefCache = moka::sync::Cache<[u8; 32], RefPrincipal>;

/// The unavoidable work of a cache hit, written by hand: parse `Bearer `, one
/// SHA-256, one probe of `cache` keyed by the 32-byte digest, one extension
/// insert; then `inner` answers.
pub fn reference<F, Fut, E>(
    cache: RefCache,
    inner: F,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = http::Response<Full<Bytes>>,
    Error = E,
    Future = impl std::future::Future<Output = Result<http::Response<Full<Bytes>>, E>>,
> + Clone
where
    F: Fn(Request<Full<Bytes>>) -> Fut + Clone,
    Fut: std::future::Future<Output = Result<http::Response<Full<Bytes>>, E>>,
{
    tower::service_fn(move |mut req: Request<Full<Bytes>>| {
        use sha2::Digest;
        let token = ref_bearer(&req);
        let digest: [u8; 32] = sha2::Sha256::digest(token).into();
        if let Some(principal) = cache.get(&digest) {
            req.extensions_mut().insert(principal);
        }
        inner(req)
    })
}

/// What the design floor caches per token: the principal, and what every
/// request must check again (DESIGN §1.6).
#[derive(Clone)]
pub struct FloorEntry {
    pub principal: RefPrincipal,
    pub revoked: bool,
    pub issued_ns: i64,
    pub expires_ns: Option<i64>,
}

/// The design floor's cache.
pub type FloorCache = moka::sync::Cache<[u8; 32], Arc<FloorEntry>>;

/// [`reference`] plus what DESIGN §1 requires on every hit besides: the token's
/// format and checksum before the cache is touched (through the crate's own
/// check, as the layer does), then revocation, the policy in force now (one
/// `arc-swap` load of a lifetime) and `now >= expiry` against the system clock.
/// Written by hand; a refused token just gets no principal. A lower bound of
/// the design's floor: it leaves out matching the user against `selected`
/// rules (the benches' policy is `all_users`), the `last_used_at` debounce and
/// the revocation-race generation check, so ratios against it overstate the
/// layer's own overhead.
pub fn reference_with_design_checks<F, Fut, E>(
    tokens: ApiTokens,
    cache: FloorCache,
    lifetime_ns: Arc<arc_swap::ArcSwap<Option<i64>>>,
    inner: F,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = http::Response<Full<Bytes>>,
    Error = E,
    Future = impl std::future::Future<Output = Result<http::Response<Full<Bytes>>, E>>,
> + Clone
where
    F: Fn(Request<Full<Bytes>>) -> Fut + Clone,
    Fut: std::future::Future<Output = Result<http::Response<Full<Bytes>>, E>>,
{
    tower::service_fn(move |mut req: Request<Full<Bytes>>| {
        use sha2::Digest;
        let token = ref_bearer(&req);
        if tower_api_tokens::bench_support::check_token(&tokens, token) {
            let digest: [u8; 32] = sha2::Sha256::digest(token).into();
            if let Some(entry) = cache.get(&digest) {
                let by_policy = lifetime_ns.load().map(|l| entry.issued_ns + l);
                let expires = match (entry.expires_ns, by_policy) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i64);
                if !entry.revoked && expires.is_none_or(|at| now < at) {
                    // The entry is the principal, as in the layer.
                    req.extensions_mut().insert(entry);
                }
            }
        }
        inner(req)
    })
}

/// The references' header parse: the bytes after `Bearer `, or none.
fn ref_bearer<B>(req: &Request<B>) -> &[u8] {
    let value = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
        _ => &[][..],
    }
}

/// The digest the reference keys `token` by.
pub fn ref_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// The benches' time source: wall time, or with `BENCH_CPU_TIME=1` this thread's
/// CPU time (`CLOCK_THREAD_CPUTIME_ID`), which leaves out time spent by other
/// processes on a busy machine. Reported figures use wall time.
pub fn now() -> Duration {
    static CPU: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *CPU.get_or_init(|| std::env::var_os("BENCH_CPU_TIME").is_some_and(|v| v == "1")) {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    } else {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        EPOCH.get_or_init(std::time::Instant::now).elapsed()
    }
}
