//! [`PostgresStore`]: token records, users and the policy in PostgreSQL through
//! `sqlx`, the store that several instances of one service share, and the
//! [`ChangeListener`] that brings each instance the others' changes.
//!
//! It owns the `api_token*` tables of one schema and their migrations
//! (`migrations/postgres/`), and the `LISTEN/NOTIFY` channel of that schema. It
//! must never store a token or a password, only the token's SHA-256 and an
//! Argon2id hash, and never publish more than a hash, a user id or a version.
//!
//! Notices are best effort. If one is lost, `cache_ttl` is the worst-case
//! bound on how long another instance may still trust what it had cached; see
//! [`PostgresStore`] for what is published and for every bound.

mod listener;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

pub use self::listener::{ChangeListener, ListenerOptions, ListenerStatus};
use super::sql::{
    StoreRow, active_bounds, malformed, nanos, nanos_opt, roles_json, token_record, user,
    write_error,
};
use super::{Active, Directory, Issued, TokenId, TokenRecord, TokenStore, User, UserId};
use crate::error::StoreError;
use crate::password::{self, Password};
use crate::policy::{Policy, VersionedPolicy};
use crate::token::TokenHash;

/// How long [`PostgresStore::connect`]'s pool waits for a connection before the
/// call fails. Shorter than the layer's default lookup timeout (2 s), so during
/// an outage a cache miss gets the pool's error rather than a bare timeout.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The pool size of [`PostgresStore::connect`] (sqlx's default).
const MAX_CONNECTIONS: u32 = 10;

/// The table sqlx records applied migrations in. Not sqlx's default, so this
/// crate's migrations can share a schema with the application's own sqlx
/// migrations without either side seeing the other's as missing.
const MIGRATIONS_TABLE: &str = "_api_tokens_migrations";

/// Every channel name starts with this; the schema follows.
const CHANNEL_PREFIX: &str = "api_tokens@";

/// PostgreSQL truncates identifiers, channel names included, to 63 bytes.
const MAX_IDENTIFIER_LEN: usize = 63;

/// Payload prefixes of the notices (see the module documentation).
pub(crate) const TOKEN_NOTICE: &str = "token:";
pub(crate) const POLICY_NOTICE: &str = "policy:";
pub(crate) const USER_NOTICE: &str = "user:";

/// The columns of a [`TokenRecord`], in the order [`token_record`] reads them.
macro_rules! token_columns {
    () => {
        "id, user_id, hash, hint, issued_at, expires_at, revoked_at, last_used_at"
    };
}

/// A [`TokenStore`] and [`Directory`] in a PostgreSQL schema, shared by every
/// instance of a service. Clones share one connection pool.
///
/// The schema (tables `api_tokens`, `api_token_users`, `api_token_policy`) is
/// created and kept up to date by the migrations embedded in the crate, which
/// every constructor runs, in the connection's current schema (the first of its
/// `search_path`); they are recorded in `_api_tokens_migrations`, apart from an
/// application's own sqlx migrations in the same schema.
///
/// # Many instances
///
/// Every write that another instance must see publishes a notice on the
/// schema's channel ([`channel`](Self::channel)) in the same transaction as the
/// write, so the notice is sent if and only if the write commits, and only once
/// it is visible:
///
/// | write | payload |
/// |---|---|
/// | [`TokenStore::revoke`], and each token [`TokenStore::issue`] revokes (a rotation) | `token:` and the token's SHA-256 in lower-case hex |
/// | [`TokenStore::save_policy`] | `policy:` and the new version |
/// | [`Directory::update_user`] | `user:` and the user's id |
///
/// Each instance runs a [`ChangeListener`] ([`listen`](Self::listen)) that
/// turns the notices into [`Change`](crate::changes::Change)s for
/// [`ApiTokens::apply`](crate::ApiTokens::apply): it drops the revoked token's
/// cache entry, drops the changed user's entries, or reloads the policy. When
/// its connection is lost it reconnects with capped exponential backoff and,
/// once listening again, resynchronises (drops every cached token and reloads
/// the policy) before it reports itself synced.
///
/// **Notices are best effort; `cache_ttl` is the bound.** A notice can be lost:
/// one sent while an instance is reconnecting never reaches it, and a
/// connection that dies silently is only noticed by the listener's heartbeat.
/// A cached token is trusted for at most [`cache_ttl`](crate::Builder::cache_ttl)
/// after it was loaded, so a revocation, or a role a user lost, takes effect on
/// every instance within `cache_ttl` at worst, and within milliseconds while
/// notices flow. The policy is not cached: while the listener is connected its
/// heartbeat also compares the policy version, and while it is not, every
/// reconnection attempt reloads the policy, so a policy change is seen within
/// the heartbeat interval, or the backoff cap, plus one step's timeout at worst
/// ([`ListenerOptions`]; 15 s by default, within the default `cache_ttl`).
///
/// # Database outages
///
/// While PostgreSQL cannot be reached, tokens already in an instance's cache
/// keep working until their entry lapses; a cache miss fails with
/// [`StoreError::Backend`], which the layer answers with `503` and
/// `Retry-After`, never `401`. The pool made by [`connect`](Self::connect)
/// gives up acquiring a connection after one second, within the layer's default
/// two-second [`lookup_timeout`](crate::Builder::lookup_timeout), so such
/// requests fail fast. When the server is back, the pool and the listener
/// reconnect by themselves: nothing needs a restart.
///
/// # Encoding
///
/// The same as `SqliteStore`'s:
///
/// | value | column |
/// |---|---|
/// | ids | `TEXT COLLATE "C"`: hyphenated lower-case UUID (sorts like [`Uuid`]'s `Ord`) |
/// | token hash | `TEXT COLLATE "C"`: 64 lower-case hex digits ([`TokenHash::to_hex`]) |
/// | times | `BIGINT`: Unix time in nanoseconds; read back in UTC |
/// | roles | `TEXT`: a JSON array of strings, in the user's order |
/// | policy | `TEXT`: the [`Policy`]'s JSON form, plus a `BIGINT` version |
/// | password | `TEXT`: an Argon2id PHC string ([`crate::password`]) |
///
/// Times round-trip to the nanosecond (PostgreSQL's own `timestamptz` keeps
/// only microseconds). Nanoseconds in an `i64` cover 1677-09-21 to 2262-04-11;
/// a time outside that range is refused with [`StoreError::Backend`] rather than
/// stored rounded.
///
/// [`Uuid`]: uuid::Uuid
///
/// # Example
///
/// ```no_run
/// use tower_api_tokens::ApiTokens;
/// use tower_api_tokens::store::PostgresStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
/// let tokens = ApiTokens::builder().backend(store.clone()).build().await?;
/// // Hears the other instances' revocations, user and policy changes for as
/// // long as it lives.
/// let listener = store.listen(tokens.clone())?;
/// # drop(listener); Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    shared: Arc<Names>,
}

/// Names fixed when the store is opened.
struct Names {
    /// The schema the tables live in.
    schema: String,
    /// The `LISTEN/NOTIFY` channel of that schema.
    channel: String,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host/db`, with
    /// sqlx's URL parameters, such as `?options=-c%20search_path%3Dtenant`), with
    /// a pool of up to ten connections that gives up acquiring one after a
    /// second, and brings the schema up to date.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the URL is not a PostgreSQL URL, the server
    /// cannot be reached, or a migration fails.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(StoreError::backend)?;
        Self::connect_with(options).await
    }

    /// Like [`connect`](Self::connect), with options built in code (to set the
    /// `search_path`, say: `options.options([("search_path", "tenant")])`).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the server cannot be reached or a migration
    /// fails.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(StoreError::backend)?;
        Self::from_pool(pool).await
    }

    /// A store over an existing pool, configured by the caller; brings the
    /// schema up to date first.
    ///
    /// Keep the pool's `acquire_timeout` below the layer's
    /// [`lookup_timeout`](crate::Builder::lookup_timeout), so that requests fail
    /// with the pool's error during an outage. The [`ChangeListener`] opens its
    /// own connection with the pool's connect options (an `after_connect` hook
    /// does not run on it; it needs none).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if a migration fails or the connection has no
    /// current schema.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        // Set before the first release, so no database has its migrations
        // recorded elsewhere: the "dangerous" rename cannot lose history.
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&pool).await.map_err(StoreError::backend)?;
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(StoreError::backend)?;
        let schema = schema.ok_or_else(|| StoreError::backend(NoSchema))?;
        Ok(Self {
            pool,
            shared: Arc::new(Names {
                channel: channel_name(&schema),
                schema,
            }),
        })
    }

    /// The connection pool, for health checks or closing it.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// The `LISTEN/NOTIFY` channel this store publishes its changes on:
    /// `api_tokens@` and the schema's name (or, for a name too long for
    /// PostgreSQL's 63-byte identifiers, a digest of it), so services in
    /// different schemas of one database do not hear each other.
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }

    /// Publishes `payload` on the channel, as part of `tx`: PostgreSQL delivers
    /// it when, and only if, `tx` commits.
    async fn notify(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        payload: String,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(self.channel())
            .bind(payload)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = self.pool.connect_options();
        f.debug_struct("PostgresStore")
            .field("host", &options.get_host())
            .field("database", &options.get_database())
            .field("schema", &self.schema())
            .field("connections", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .finish()
    }
}

/// `api_tokens@schema`, or a digest of the schema's name where that would be
/// longer than PostgreSQL keeps (it would be truncated on `LISTEN` but refused
/// by `pg_notify`).
fn channel_name(schema: &str) -> String {
    let plain = format!("{CHANNEL_PREFIX}{schema}");
    if plain.len() <= MAX_IDENTIFIER_LEN {
        return plain;
    }
    let digest = hex::encode(Sha256::digest(schema.as_bytes()));
    format!("{CHANNEL_PREFIX}{}", &digest[..32])
}

/// `name` as a quoted SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The connection has no current schema to keep the tables in.
#[derive(Debug, thiserror::Error)]
#[error("the connection has no current schema: check its search_path")]
struct NoSchema;

/// Inserts `record` on `conn` (a pooled connection or a transaction).
async fn insert_token(
    conn: &mut sqlx::PgConnection,
    record: &TokenRecord,
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO api_tokens (",
        token_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(record.id.to_string())
    .bind(record.user_id.to_string())
    .bind(record.hash.to_hex().as_str())
    .bind(record.hint.as_str())
    .bind(nanos(record.issued_at, "issued_at")?)
    .bind(nanos_opt(record.expires_at, "expires_at")?)
    .bind(nanos_opt(record.revoked_at, "revoked_at")?)
    .bind(nanos_opt(record.last_used_at, "last_used_at")?)
    .execute(conn)
    .await
    .map_err(|e| write_error(e, "token id or hash exists", StoreError::backend))?;
    Ok(())
}

#[async_trait]
impl TokenStore for PostgresStore {
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE hash = $1"
        ))
        .bind(hash.to_hex().as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?
        .as_ref()
        .map(token_record)
        .transpose()
    }

    async fn get(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?
        .as_ref()
        .map(token_record)
        .transpose()
    }

    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> {
        // No notice: no instance can hold a token that did not exist.
        let mut conn = self.pool.acquire().await.map_err(StoreError::backend)?;
        insert_token(&mut conn, record).await
    }

    async fn revoke(
        &self,
        id: TokenId,
        at: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        // One statement: a concurrent revoke cannot slip between a read and
        // the write, and the first revocation time is the one kept.
        let row = sqlx::query(concat!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING ",
            token_columns!()
        ))
        .bind(id.to_string())
        .bind(nanos(at, "revoked_at")?)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = token_record(&row)?;
        // Also for a token revoked before: the notice costs little, and an
        // instance that missed the first one hears it now.
        let payload = format!("{TOKEN_NOTICE}{}", record.hash.to_hex().as_str());
        self.notify(&mut tx, payload).await?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(Some(record))
    }

    async fn list(&self, user: Option<UserId>) -> Result<Vec<TokenRecord>, StoreError> {
        let query = match user {
            None => sqlx::query(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens ORDER BY issued_at DESC, id DESC"
            )),
            Some(user) => sqlx::query(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens WHERE user_id = $1 ORDER BY issued_at DESC, id DESC"
            ))
            .bind(user.to_string()),
        };
        query
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::backend)?
            .iter()
            .map(token_record)
            .collect()
    }

    async fn touch(&self, used: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(used.len());
        let mut times = Vec::with_capacity(used.len());
        for (id, at) in used {
            ids.push(id.to_string());
            times.push(nanos(*at, "last_used_at")?);
        }
        // One statement for the batch; a token named twice gets its latest time.
        sqlx::query(
            "UPDATE api_tokens AS t SET last_used_at = u.at \
             FROM (SELECT id, max(at) AS at FROM unnest($1::text[], $2::bigint[]) AS b (id, at) \
                   GROUP BY id) AS u \
             WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)",
        )
        .bind(ids)
        .bind(times)
        .execute(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn load_policy(&self) -> Result<Option<VersionedPolicy>, StoreError> {
        let Some(row) = sqlx::query("SELECT policy, version FROM api_token_policy WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::backend)?
        else {
            return Ok(None);
        };
        let policy: String = row.text("policy")?;
        let version: i64 = row.int("version")?;
        Ok(Some(VersionedPolicy {
            policy: policy.parse().map_err(|_| malformed("policy"))?,
            version: u64::try_from(version).map_err(|_| malformed("version"))?,
        }))
    }

    async fn save_policy(&self, policy: &Policy) -> Result<VersionedPolicy, StoreError> {
        let json = serde_json::to_string(policy).map_err(StoreError::backend)?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        // One statement, so two admins saving at once get two versions: the
        // second waits for the first's row lock and then increments.
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO api_token_policy (id, policy, version) VALUES (1, $1, 1) \
             ON CONFLICT (id) DO UPDATE \
             SET policy = excluded.policy, version = api_token_policy.version + 1 \
             RETURNING version",
        )
        .bind(json)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        self.notify(&mut tx, format!("{POLICY_NOTICE}{version}"))
            .await?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(VersionedPolicy {
            policy: policy.clone(),
            version: u64::try_from(version).map_err(|_| malformed("version"))?,
        })
    }

    async fn issue(
        &self,
        record: &TokenRecord,
        active: Active,
        rotate: bool,
    ) -> Result<Issued, StoreError> {
        let (now, issued_after) = active_bounds(active)?;
        let user_id = record.user_id.to_string();
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        // Row locks cannot guard a token that does not exist yet, so the user
        // is locked instead: a transaction-scoped advisory lock, released at
        // COMMIT or ROLLBACK, that every instance on this schema takes for
        // this user before deciding. Under READ COMMITTED each statement
        // after it sees what earlier holders committed. The key is namespaced
        // by the channel (so by schema), leaving other schemas' users alone.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{}:{user_id}", self.channel()))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        if !rotate {
            let newest = sqlx::query(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL \
                  AND (expires_at IS NULL OR expires_at > $2) \
                  AND ($3::bigint IS NULL OR issued_at > $3::bigint) \
                  ORDER BY issued_at DESC, id DESC LIMIT 1"
            ))
            .bind(user_id.as_str())
            .bind(now)
            .bind(issued_after)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
            if let Some(row) = newest {
                let existing = token_record(&row)?;
                tx.rollback().await.map_err(StoreError::backend)?;
                return Ok(Issued::Existing(existing));
            }
        }
        // Every active token of the user, not only the newest: a rotation
        // leaves exactly one.
        let mut revoked = sqlx::query(concat!(
            "UPDATE api_tokens SET revoked_at = $4 WHERE user_id = $1 AND revoked_at IS NULL \
              AND (expires_at IS NULL OR expires_at > $2) \
              AND ($3::bigint IS NULL OR issued_at > $3::bigint) \
              RETURNING ",
            token_columns!()
        ))
        .bind(user_id.as_str())
        .bind(now)
        .bind(issued_after)
        .bind(nanos(record.issued_at, "revoked_at")?)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::backend)?
        .iter()
        .map(token_record)
        .collect::<Result<Vec<_>, _>>()?;
        revoked.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then(b.id.cmp(&a.id)));
        // As `revoke` does: delivered if, and only if, this transaction commits.
        for old in &revoked {
            let payload = format!("{TOKEN_NOTICE}{}", old.hash.to_hex().as_str());
            self.notify(&mut tx, payload).await?;
        }
        insert_token(&mut tx, record).await?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(Issued::Inserted { revoked })
    }
}

#[async_trait]
impl Directory for PostgresStore {
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        sqlx::query(
            "SELECT id, username, roles, identity_provider FROM api_token_users WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?
        .as_ref()
        .map(user)
        .transpose()
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        sqlx::query(
            "SELECT id, username, roles, identity_provider FROM api_token_users \
             WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?
        .as_ref()
        .map(user)
        .transpose()
    }

    async fn verify_password(
        &self,
        username: &str,
        password: &Password,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, roles, identity_provider, password_hash \
             FROM api_token_users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        let (user, phc) = match row {
            Some(row) => (Some(user(&row)?), Some(row.text("password_hash")?)),
            None => (None, None),
        };
        // An unknown user is checked against a dummy hash: same cost, no oracle.
        Ok(if password::verify(phc, password).await {
            user
        } else {
            None
        })
    }

    async fn create_user(&self, user: &User, password: &Password) -> Result<(), StoreError> {
        // No notice: a new user has no tokens cached anywhere.
        let phc = password::hash(password).await?;
        sqlx::query(
            "INSERT INTO api_token_users (id, username, roles, identity_provider, password_hash) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.id.to_string())
        .bind(user.username.as_str())
        .bind(roles_json(user)?)
        .bind(user.identity_provider.as_str())
        .bind(phc)
        .execute(&self.pool)
        .await
        .map_err(|e| write_error(e, "user id or name exists", StoreError::backend))?;
        Ok(())
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        let done = sqlx::query(
            "UPDATE api_token_users SET username = $2, roles = $3, identity_provider = $4 \
             WHERE id = $1",
        )
        .bind(user.id.to_string())
        .bind(user.username.as_str())
        .bind(roles_json(user)?)
        .bind(user.identity_provider.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| write_error(e, "user name exists", StoreError::backend))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.notify(&mut tx, format!("{USER_NOTICE}{}", user.id))
            .await?;
        tx.commit().await.map_err(StoreError::backend)
    }
}

#[cfg(test)]
mod tests {
    //! What needs no server; the rest is in `tests/postgres.rs` and the
    //! conformance suite.

    use super::*;

    #[test]
    fn channel_names_fit_in_an_identifier() {
        assert_eq!(channel_name("public"), "api_tokens@public");
        let long = channel_name(&"s".repeat(63));
        assert!(long.len() <= MAX_IDENTIFIER_LEN, "{long}");
        assert!(long.starts_with(CHANNEL_PREFIX), "{long}");
        assert_ne!(long, channel_name(&"t".repeat(63)));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("public"), r#""public""#);
        assert_eq!(quote_identifier(r#"a"b"#), r#""a""b""#);
    }
}
