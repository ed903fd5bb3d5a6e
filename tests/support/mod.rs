//! Test support: a store that counts lookups and fails, hangs or pauses on demand,
//! and a harness that builds a layer around an echo service.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::sync::Notify;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_api_tokens::clock::ManualClock;
use tower_api_tokens::password::Password;
use tower_api_tokens::policy::{Lifetime, Policy, VersionedPolicy};
use tower_api_tokens::store::{
    Active, Directory, Issued, MemoryStore, TokenId, TokenRecord, TokenStore, User, UserId,
};
use tower_api_tokens::token::TokenHash;
use tower_api_tokens::{ApiTokens, Builder, Principal, StoreError};

pub const START: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

#[derive(Debug, thiserror::Error)]
#[error("injected failure")]
struct Injected;

/// A one-shot pause inside `find_by_hash`, after the record has been read.
#[derive(Default)]
pub struct Pause {
    pub reached: Notify,
    pub release: Notify,
}

/// Wraps a [`MemoryStore`], counting token lookups.
#[derive(Clone, Default)]
pub struct TestStore {
    pub inner: MemoryStore,
    pub lookups: Arc<AtomicUsize>,
    /// Token uses written through `touch`.
    pub touched: Arc<AtomicUsize>,
    /// Passwords checked through `verify_password`.
    pub password_checks: Arc<AtomicUsize>,
    pub failing: Arc<AtomicBool>,
    pub panicking: Arc<AtomicBool>,
    pub hanging: Arc<AtomicBool>,
    pause: Arc<Mutex<Option<Arc<Pause>>>>,
    schedule: Arc<Mutex<std::collections::VecDeque<Fault>>>,
}

/// What one token lookup does, when scheduled with [`TestStore::schedule`].
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answers normally.
    Pass,
    /// Answers normally after this long.
    Delay(std::time::Duration),
    /// Fails at once.
    Fail,
    /// Never answers.
    Hang,
    /// Fails after this long, as a connection reset mid-query would.
    Drop(std::time::Duration),
}

impl TestStore {
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    pub fn password_checks(&self) -> usize {
        self.password_checks.load(Ordering::SeqCst)
    }

    pub fn set_failing(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    pub fn set_panicking(&self, on: bool) {
        self.panicking.store(on, Ordering::SeqCst);
    }

    pub fn set_hanging(&self, on: bool) {
        self.hanging.store(on, Ordering::SeqCst);
    }

    /// The next token lookups, one fault each, in order; lookups past the end
    /// of the schedule answer normally.
    pub fn schedule(&self, faults: impl IntoIterator<Item = Fault>) {
        self.schedule.lock().unwrap().extend(faults);
    }

    /// The next lookup reads its record, then waits for `release`.
    pub fn pause_next_lookup(&self) -> Arc<Pause> {
        let pause = Arc::new(Pause::default());
        *self.pause.lock().unwrap() = Some(Arc::clone(&pause));
        pause
    }
}

#[async_trait]
impl TokenStore for TestStore {
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let fault = self.schedule.lock().unwrap().pop_front();
        match fault {
            None | Some(Fault::Pass) => {}
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::Fail) => return Err(StoreError::backend(Injected)),
            Some(Fault::Hang) => std::future::pending::<()>().await,
            Some(Fault::Drop(d)) => {
                tokio::time::sleep(d).await;
                return Err(StoreError::backend(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                )));
            }
        }
        if self.hanging.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::backend(Injected));
        }
        if self.panicking.load(Ordering::SeqCst) {
            panic!("injected panic in a token lookup");
        }
        let record = self.inner.find_by_hash(hash).await;
        let pause = self.pause.lock().unwrap().take();
        if let Some(pause) = pause {
            pause.reached.notify_one();
            pause.release.notified().await;
        }
        record
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
        self.touched.fetch_add(used.len(), Ordering::SeqCst);
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
impl Directory for TestStore {
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.inner.user(id).await
    }
    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_name(username).await
    }
    async fn verify_password(
        &self,
        username: &str,
        password: &Password,
    ) -> Result<Option<User>, StoreError> {
        self.password_checks.fetch_add(1, Ordering::SeqCst);
        self.inner.verify_password(username, password).await
    }
    async fn create_user(&self, user: &User, password: &Password) -> Result<(), StoreError> {
        self.inner.create_user(user, password).await
    }
    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        self.inner.update_user(user).await
    }
}

pub fn user(name: &str, roles: &[&str], provider: &str) -> User {
    User {
        id: UserId::new(),
        username: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        identity_provider: provider.into(),
    }
}

pub struct Harness {
    pub tokens: ApiTokens,
    pub store: TestStore,
    pub clock: ManualClock,
    pub alice: User,
    pub admin: User,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with(|b| b).await
    }

    pub async fn with(configure: impl FnOnce(Builder) -> Builder) -> Self {
        let store = TestStore::default();
        let clock = ManualClock::new(START);
        let alice = user("alice", &["dev"], "local");
        let admin = user("root", &["admin"], "local");
        for u in [&alice, &admin] {
            store
                .create_user(u, &Password::new("pw-of-".to_owned() + &u.username))
                .await
                .unwrap();
        }
        let builder = ApiTokens::builder()
            .backend(store.clone())
            .clock(clock.clone());
        let tokens = configure(builder).build().await.unwrap();
        Self {
            tokens,
            store,
            clock,
            alice,
            admin,
        }
    }

    /// Sets the policy to `all_users` with `lifetime`.
    pub async fn allow_all_users(&self, lifetime: Lifetime) {
        self.tokens
            .set_policy(Policy::AllUsers { lifetime })
            .await
            .unwrap();
    }

    /// A new token of `user`, as plaintext.
    pub async fn token(&self, user: &User) -> (String, TokenId) {
        let issued = self.tokens.issue(user.id).await.unwrap();
        (issued.token.expose().to_owned(), issued.record.id)
    }
}

/// Echoes the principal's username, or `anonymous`.
pub async fn echo(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let who = req
        .extensions()
        .get::<Principal>()
        .map_or("anonymous".to_owned(), |p| p.username().to_owned());
    Ok(Response::new(Full::new(Bytes::from(who))))
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn challenge(&self) -> &str {
        self.headers
            .get("www-authenticate")
            .map_or("", |v| v.to_str().unwrap())
    }
}

pub fn request(authorization: &[&str]) -> Request<Full<Bytes>> {
    let mut req = Request::get("/resource").body(Full::default()).unwrap();
    for value in authorization {
        req.headers_mut()
            .append("authorization", value.parse().unwrap());
    }
    req
}

pub fn bearer(token: &str) -> Request<Full<Bytes>> {
    request(&[&format!("Bearer {token}")])
}

/// Sends one request through a fresh stack of the layer around [`echo`].
pub async fn send(tokens: &ApiTokens, req: Request<Full<Bytes>>) -> Answer {
    let svc = ServiceBuilder::new().layer(tokens.layer()).service_fn(echo);
    collect(svc.oneshot(req).await.unwrap()).await
}

pub async fn collect<B>(res: Response<B>) -> Answer
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.map_err(Into::into).unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// Spawns `n` concurrent requests carrying `token`; their statuses come from
/// [`statuses`]. Spawned rather than awaited so a test can interleave them.
pub fn spawn_requests(
    tokens: &ApiTokens,
    token: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<StatusCode>> {
    (0..n)
        .map(|_| {
            let (tokens, token) = (tokens.clone(), token.to_owned());
            tokio::spawn(async move { send(&tokens, bearer(&token)).await.status })
        })
        .collect()
}

/// The statuses of requests from [`spawn_requests`], in order.
pub async fn statuses(tasks: Vec<tokio::task::JoinHandle<StatusCode>>) -> Vec<StatusCode> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

pub const BARE: &str = "Bearer realm=\"api\"";

/// Captures every `tracing` event and span of the current thread at TRACE.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// One capture for the whole test process, installed as the global
    /// subscriber on first use. Thread-scoped subscribers race with tests on
    /// other threads over `tracing`'s global callsite-interest cache (a test
    /// may then see nothing); the global one does not. Every test of the binary
    /// that calls this logs into it, which only widens what is scanned.
    pub fn global() -> &'static Capture {
        static GLOBAL: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(|| {
            let capture = Capture::default();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
                .with_ansi(false)
                .with_writer(capture.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
            capture
        })
    }

    /// Installs the capture as this thread's subscriber until the guard drops.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_ansi(false)
            .with_writer(self.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
