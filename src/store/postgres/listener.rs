//! [`ChangeListener`]: one instance's ear on the schema's `LISTEN/NOTIFY`
//! channel. It owns one dedicated connection and the task around it: it turns
//! notices into [`Change`]s for [`ApiTokens::apply`], reconnects with capped
//! exponential backoff, and resynchronises after every (re)connection.
//!
//! It never logs a payload (only its kind), and never trusts this instance's
//! cache across a gap in which notices may have been lost: the first thing it
//! does on a new connection, once listening, is [`Change::Resync`].

use std::convert::Infallible;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{POLICY_NOTICE, PostgresStore, TOKEN_NOTICE, USER_NOTICE, quote_identifier};
use crate::changes::Change;
use crate::error::ConfigError;
use crate::manager::{ApiTokens, ManageError};
use crate::store::UserId;
use crate::token::TokenHash;

/// Timing of a [`ChangeListener`]: its reconnection backoff and its heartbeat.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_api_tokens::store::ListenerOptions;
///
/// let options = ListenerOptions::default()
///     .backoff(Duration::from_millis(50), Duration::from_secs(5))
///     .heartbeat(Duration::from_secs(5), Duration::from_secs(2));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ListenerOptions {
    first_backoff: Duration,
    max_backoff: Duration,
    heartbeat: Duration,
    timeout: Duration,
}

impl Default for ListenerOptions {
    /// Backoff from 100 ms doubling up to 10 s; a heartbeat every 10 s; 5 s for
    /// any one step. A dead connection is noticed within 15 s and a policy
    /// change missed in a gap is seen within 15 s: both inside the default
    /// `cache_ttl` of 30 s.
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            heartbeat: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

impl ListenerOptions {
    /// The wait before the first reconnection attempt, doubled after each
    /// failed attempt up to `max` (each wait is shortened by a random part of
    /// up to half, so instances that lost the server together do not return in
    /// step).
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max;
        self
    }

    /// How often the listener checks its connection with a query (which also
    /// compares the policy version with this instance's), and how long any one
    /// step (connecting, `LISTEN`, the query, applying a change) may take before
    /// the connection is given up as lost.
    pub fn heartbeat(mut self, every: Duration, timeout: Duration) -> Self {
        self.heartbeat = every;
        self.timeout = timeout;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            ("backoff", self.first_backoff),
            ("heartbeat", self.heartbeat),
            ("heartbeat timeout", self.timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        Ok(())
    }

    /// The wait after `failures` failed attempts in a row.
    fn delay(&self, failures: u32) -> Duration {
        let full = self
            .first_backoff
            .saturating_mul(1 << failures.min(20))
            .min(self.max_backoff.max(self.first_backoff));
        let mut noise = [0u8; 2];
        let share = match getrandom::fill(&mut noise) {
            Ok(()) => f64::from(u16::from_le_bytes(noise)) / f64::from(u16::MAX),
            Err(_) => 1.0,
        };
        // Between half and all of `full`: never longer, so never past the cap.
        full.mul_f64(0.5 + share / 2.0)
    }
}

/// What a [`ChangeListener`] is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStatus {
    /// Whether it is listening and has resynchronised since it connected:
    /// changes committed elsewhere now reach this instance within moments.
    /// While `false`, `cache_ttl` bounds how stale this instance may be.
    pub synced: bool,
    /// The server process of its connection, while it has one (to find it in
    /// `pg_stat_activity`).
    pub backend_pid: Option<u32>,
    /// How many times it has connected and resynchronised.
    pub syncs: u64,
}

/// One instance's ear for the changes the other instances make, started by
/// [`PostgresStore::listen`].
///
/// It applies each notice to this instance's cache and policy moments after the
/// change commits elsewhere. When its connection is lost it reconnects with
/// capped exponential backoff, and resynchronises (drops every cached token,
/// reloads the policy) before it reports itself
/// [synced](ListenerStatus::synced) again; until then, `cache_ttl` bounds how
/// stale this instance may be.
///
/// It stops when dropped (or by [`shutdown`](Self::shutdown)): keep it for as
/// long as the service runs.
#[derive(Debug)]
#[must_use = "the listener stops as soon as it is dropped: keep it while the service runs"]
pub struct ChangeListener {
    task: JoinHandle<()>,
    status: watch::Receiver<ListenerStatus>,
}

impl ChangeListener {
    /// What it is doing now.
    pub fn status(&self) -> ListenerStatus {
        *self.status.borrow()
    }

    /// A receiver that sees every change of [`status`](Self::status) (for a
    /// readiness probe, say).
    pub fn subscribe(&self) -> watch::Receiver<ListenerStatus> {
        self.status.clone()
    }

    /// Waits until it is synced ([`ListenerStatus::synced`]), and returns the
    /// status then; immediately if it is synced now.
    pub async fn synced(&self) -> ListenerStatus {
        let mut status = self.status.clone();
        let synced = status.wait_for(|s| s.synced).await.map(|now| *now);
        // Err: the task is gone (only if the runtime is shutting down).
        synced.unwrap_or_else(|_| self.status())
    }

    /// Stops it: once this returns, no further change is applied. (Its
    /// connection is closed in the background.)
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for ChangeListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PostgresStore {
    /// Starts this instance's [`ChangeListener`] with the default
    /// [`ListenerOptions`]: from now on, every revocation, user change and
    /// policy change committed by another instance is applied to `tokens`
    /// moments after it commits.
    ///
    /// `tokens` must be built on this store (or on one over the same schema),
    /// or the changes heard would not concern it. It returns at once; the
    /// listener connects in the background ([`ChangeListener::synced`] waits
    /// for it).
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoRuntime`] outside a tokio runtime.
    pub fn listen(&self, tokens: ApiTokens) -> Result<ChangeListener, ConfigError> {
        self.listen_with(tokens, ListenerOptions::default())
    }

    /// [`listen`](Self::listen) with other timing.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoRuntime`] outside a tokio runtime,
    /// [`ConfigError::ZeroDuration`] for a zero backoff, heartbeat or timeout.
    pub fn listen_with(
        &self,
        tokens: ApiTokens,
        options: ListenerOptions,
    ) -> Result<ChangeListener, ConfigError> {
        options.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let (status_tx, status) = watch::channel(ListenerStatus::default());
        let worker = Worker {
            connect: PgConnectOptions::clone(&self.pool.connect_options()),
            channel: self.channel().to_owned(),
            policy_version: format!(
                "SELECT version FROM {}.api_token_policy WHERE id = 1",
                quote_identifier(self.schema())
            ),
            tokens,
            options,
            status: status_tx,
        };
        Ok(ChangeListener {
            task: runtime.spawn(worker.run()),
            status,
        })
    }
}

/// Why a session ended. Never holds a payload.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the connection was closed")]
    Closed,
    #[error("{0} took too long")]
    Timeout(&'static str),
    #[error("applying a change failed: {0}")]
    Apply(#[from] ManageError),
}

/// A notice, parsed.
enum Notice {
    Change(Change),
    Policy(u64),
    /// Not a notice this version understands (a newer instance's, say).
    Unknown,
}

fn parse(payload: &str) -> Notice {
    if let Some(hex) = payload.strip_prefix(TOKEN_NOTICE) {
        return TokenHash::from_hex(hex).map_or(Notice::Unknown, |hash| {
            Notice::Change(Change::TokenRevoked { hash })
        });
    }
    if let Some(version) = payload.strip_prefix(POLICY_NOTICE) {
        return version.parse().map_or(Notice::Unknown, Notice::Policy);
    }
    if let Some(id) = payload.strip_prefix(USER_NOTICE) {
        return id.parse::<UserId>().map_or(Notice::Unknown, |user| {
            Notice::Change(Change::UserChanged { user })
        });
    }
    Notice::Unknown
}

/// `step`, given up after `limit`.
async fn within<T, E: Into<Lost>>(
    limit: Duration,
    step: &'static str,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, Lost> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(Lost::Timeout(step)),
    }
}

/// The listener's task.
struct Worker {
    connect: PgConnectOptions,
    channel: String,
    /// The heartbeat query: schema-qualified, because the listener's connection
    /// does not run the pool's `after_connect` hook.
    policy_version: String,
    tokens: ApiTokens,
    options: ListenerOptions,
    status: watch::Sender<ListenerStatus>,
}

impl Worker {
    async fn run(self) {
        let mut failures: u32 = 0;
        loop {
            let lost = self.session().await;
            let was_synced = self.status.borrow().synced;
            self.status.send_modify(|s| {
                s.synced = false;
                s.backend_pid = None;
            });
            if was_synced {
                failures = 0;
            }
            let delay = self.options.delay(failures);
            failures = failures.saturating_add(1);
            tracing::warn!(
                channel = %self.channel,
                error = %lost,
                retry_in = ?delay,
                "api-token change listener is not listening; cached tokens are trusted for at most cache_ttl until it resynchronises"
            );
            // Deaf until the next session: keep at least the policy fresh, if
            // the store's pool can reach the server.
            self.refresh_policy().await;
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection's life: connects, listens, resynchronises, then applies
    /// notices until the connection is lost.
    async fn session(&self) -> Lost {
        // A pool of one, private to this session, only because `PgListener`
        // takes its connection from a pool. Reconnecting is done by the next
        // session, with backoff: never silently by `PgListener`, so a gap is
        // always followed by a resync.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.options.timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_lazy_with(self.connect.clone());
        let lost = match self.listen_on(&pool).await {
            Ok(never) => match never {},
            Err(lost) => lost,
        };
        // Closed, not awaited: the connection, handed back by the dropped
        // `PgListener` in the background, is then closed rather than kept idle.
        let _closing = pool.close();
        lost
    }

    async fn listen_on(&self, pool: &PgPool) -> Result<Infallible, Lost> {
        let limit = self.options.timeout;
        let mut listener = within(limit, "connecting", PgListener::connect_with(pool)).await?;
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        within(limit, "LISTEN", listener.listen(&self.channel)).await?;
        let pid: i32 = within(
            limit,
            "asking the backend pid",
            sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut listener),
        )
        .await?;
        // Listening: every change committed from now on will be heard; the
        // resync covers those committed before, in the gap.
        within(limit, "resynchronising", self.tokens.apply(Change::Resync)).await?;
        self.status.send_modify(|s| {
            s.synced = true;
            s.backend_pid = u32::try_from(pid).ok();
            s.syncs += 1;
        });
        tracing::info!(channel = %self.channel, "api-token change listener synced");

        let mut next_beat = Instant::now() + self.options.heartbeat;
        loop {
            // `try_recv` is cancel-safe: a notice half read when the heartbeat
            // is due stays buffered for the next call.
            match tokio::time::timeout_at(next_beat, listener.try_recv()).await {
                Ok(Ok(Some(notice))) => self.apply(notice.payload()).await?,
                Ok(Ok(None)) => return Err(Lost::Closed),
                Ok(Err(err)) => return Err(err.into()),
                Err(_) => {
                    self.heartbeat(&mut listener).await?;
                    next_beat = Instant::now() + self.options.heartbeat;
                }
            }
        }
    }

    /// Applies one notice. If it cannot be applied, every cached token is
    /// dropped at once (it might have been about any of them) and the session
    /// ends, so the next one resynchronises.
    async fn apply(&self, payload: &str) -> Result<(), Lost> {
        let change = match parse(payload) {
            Notice::Change(change) => change,
            // This instance's own save, or one already reloaded.
            Notice::Policy(version) if version <= self.tokens.policy().version => return Ok(()),
            Notice::Policy(_) => Change::PolicyChanged,
            Notice::Unknown => {
                tracing::warn!(
                    channel = %self.channel,
                    "api-token change listener got a notice it does not understand; resynchronising"
                );
                Change::Resync
            }
        };
        tracing::debug!(?change, "api-token change heard");
        let limit = self.options.timeout;
        if let Err(lost) = within(limit, "applying a change", self.tokens.apply(change)).await {
            let _ = within(limit, "resynchronising", self.tokens.apply(Change::Resync)).await;
            return Err(lost);
        }
        Ok(())
    }

    /// Proves the connection alive, and catches a policy change whose notice
    /// was lost (or that was written without one).
    async fn heartbeat(&self, listener: &mut PgListener) -> Result<(), Lost> {
        let limit = self.options.timeout;
        let stored: Option<i64> = within(
            limit,
            "the heartbeat",
            sqlx::query_scalar(sqlx::AssertSqlSafe(self.policy_version.clone()))
                .fetch_optional(&mut *listener),
        )
        .await?;
        let newer = stored
            .and_then(|v| u64::try_from(v).ok())
            .is_some_and(|v| v > self.tokens.policy().version);
        if newer {
            within(
                limit,
                "reloading the policy",
                self.tokens.apply(Change::PolicyChanged),
            )
            .await?;
        }
        Ok(())
    }

    /// Best effort, while not listening.
    async fn refresh_policy(&self) {
        let reload = self.tokens.apply(Change::PolicyChanged);
        if let Err(err) = within(self.options.timeout, "reloading the policy", reload).await {
            tracing::debug!(error = %err, "api-token policy reload failed while not listening");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_parse_into_changes() {
        let hash = TokenHash::of("abc");
        let token = format!("token:{}", hash.to_hex().as_str());
        assert!(matches!(
            parse(&token),
            Notice::Change(Change::TokenRevoked { hash: h }) if h == hash
        ));
        let user = UserId::new();
        assert!(matches!(
            parse(&format!("user:{user}")),
            Notice::Change(Change::UserChanged { user: u }) if u == user
        ));
        assert!(matches!(parse("policy:42"), Notice::Policy(42)));
        for junk in [
            "",
            "token:",
            "token:zz",
            "policy:-1",
            "user:nope",
            "group:1",
        ] {
            assert!(matches!(parse(junk), Notice::Unknown), "{junk:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_half_taken_off() {
        let options = ListenerOptions::default()
            .backoff(Duration::from_millis(100), Duration::from_millis(1_000));
        for (failures, full) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1_000),
            (60, 1_000),
        ] {
            let full = Duration::from_millis(full);
            for _ in 0..20 {
                let delay = options.delay(failures);
                assert!(delay <= full && delay >= full / 2, "{failures}: {delay:?}");
            }
        }
    }

    #[test]
    fn zero_timings_are_refused() {
        let zero = Duration::ZERO;
        let one = Duration::from_secs(1);
        assert!(ListenerOptions::default().validate().is_ok());
        for options in [
            ListenerOptions::default().backoff(zero, one),
            ListenerOptions::default().heartbeat(zero, one),
            ListenerOptions::default().heartbeat(one, zero),
        ] {
            assert!(matches!(
                options.validate(),
                Err(ConfigError::ZeroDuration(_))
            ));
        }
    }
}
