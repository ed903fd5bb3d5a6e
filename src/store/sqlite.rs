//! [`SqliteStore`]: token records, users and the policy in one SQLite file
//! through `sqlx`, the embedded backend that survives restarts. It owns the
//! `api_token*` tables and their migrations (`migrations/sqlite/`); it must never
//! store a token or a password, only the token's SHA-256 and an Argon2id hash.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use time::OffsetDateTime;

use super::sql::{
    StoreRow, active_bounds, malformed, nanos, nanos_opt, roles_json, token_record, user,
    write_error,
};
use super::{Active, Directory, Issued, TokenId, TokenRecord, TokenStore, User, UserId};
use crate::error::StoreError;
use crate::password::{self, Password};
use crate::policy::{Policy, VersionedPolicy};
use crate::token::TokenHash;

/// How long a statement waits for another connection's write lock before it
/// fails with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The table sqlx records applied migrations in. Not sqlx's default, so this
/// crate's migrations can share a database file with the application's own
/// sqlx migrations without either side seeing the other's as missing.
const MIGRATIONS_TABLE: &str = "_api_tokens_migrations";

/// The columns of a [`TokenRecord`], in the order [`token_record`] reads them.
macro_rules! token_columns {
    () => {
        "id, user_id, hash, hint, issued_at, expires_at, revoked_at, last_used_at"
    };
}

/// A [`TokenStore`] and [`Directory`] in a SQLite database. Clones share one
/// connection pool.
///
/// The schema (tables `api_tokens`, `api_token_users`, `api_token_policy`) is
/// created and kept up to date by the migrations embedded in the crate, which
/// every constructor runs; they are recorded in `_api_tokens_migrations`, apart
/// from an application's own sqlx migrations in the same file.
///
/// # Encoding
///
/// | value | column |
/// |---|---|
/// | ids | `TEXT`: hyphenated lower-case UUID (sorts like [`Uuid`]'s `Ord`) |
/// | token hash | `TEXT`: 64 lower-case hex digits ([`TokenHash::to_hex`]) |
/// | times | `INTEGER`: Unix time in nanoseconds; read back in UTC |
/// | roles | `TEXT`: a JSON array of strings, in the user's order |
/// | policy | `TEXT`: the [`Policy`]'s JSON form, plus an `INTEGER` version |
/// | password | `TEXT`: an Argon2id PHC string ([`crate::password`]) |
///
/// Times round-trip to the nanosecond (a record read back is `==` to the one
/// inserted; its offset becomes UTC, which `OffsetDateTime`'s `==` ignores).
/// Nanoseconds in an `i64` cover 1677-09-21 to 2262-04-11; a time outside that
/// range is refused with [`StoreError::Backend`] rather than stored rounded.
///
/// [`Uuid`]: uuid::Uuid
///
/// # Example
///
/// ```
/// use tower_api_tokens::policy::Policy;
/// use tower_api_tokens::store::{SqliteStore, TokenStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_api_tokens::StoreError> {
/// // A file path works the same: `sqlite://api-tokens.db` (created if missing).
/// let store = SqliteStore::connect("sqlite::memory:").await?;
/// assert_eq!(store.load_policy().await?, None);
/// assert_eq!(store.save_policy(&Policy::None).await?.version, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens the database at `url` (`sqlite://path/to/file.db`, created if
    /// missing), in WAL mode with a busy timeout, and brings its schema up to
    /// date. `sqlite::memory:` gives a private database that lives as long as
    /// this store's pool.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the URL is not a SQLite URL, the file cannot be
    /// opened or created, or a migration fails.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT);
        if !is_in_memory(url) {
            create_private(options.get_filename())?;
        }
        // Connections are not retired by age: an in-memory database lives only
        // as long as one of its connections, and a SQLite connection costs a
        // file handle, not a server slot.
        let mut pool = SqlitePoolOptions::new()
            .idle_timeout(None)
            .max_lifetime(None);
        if !is_in_memory(url) {
            // SQLite opens a file it may not write read-only, and such a
            // connection stays read-only after the file is writable again: a
            // connection older than the last "read-only" error is closed when
            // it goes back to the pool, and replaced by a fresh one.
            pool = pool.after_release(|_conn, meta| {
                let keep = !read_only_since_opened(meta.age);
                Box::pin(async move { Ok(keep) })
            });
        }
        let pool = pool
            .connect_with(options)
            .await
            .map_err(StoreError::backend)?;
        Self::from_pool(pool).await
    }

    /// A store over an existing pool, configured by the caller; brings the
    /// schema up to date first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if a migration fails.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        let mut migrator = sqlx::migrate!("./migrations/sqlite");
        // Set before the first release, so no database has its migrations
        // recorded elsewhere: the "dangerous" rename cannot lose history.
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&pool).await.map_err(StoreError::backend)?;
        Ok(Self { pool })
    }

    /// The connection pool, for health checks or closing it.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Creates the database file readable by its owner only (it holds password
/// hashes; SQLite gives its `-wal` and `-shm` files the same mode). An existing
/// file is left as it is.
fn create_private(path: &std::path::Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::backend(e)),
    }
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// When a write last failed because a connection was read-only, in nanoseconds
/// since [`epoch`] (0: never). Shared by every SQLite store of the process: at
/// worst, another store's connections are reopened once.
static READ_ONLY_SEEN: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Whether a "read-only" error was seen since a connection of this `age` opened.
fn read_only_since_opened(age: Duration) -> bool {
    match READ_ONLY_SEEN.load(Ordering::Acquire) {
        0 => false,
        seen => {
            let seen_ago = epoch().elapsed().saturating_sub(Duration::from_nanos(seen));
            age >= seen_ago
        }
    }
}

/// Wraps a database error, noting SQLite's "read-only" family
/// (`SQLITE_READONLY` and its extended codes) for the pool to recycle the
/// connection.
fn backend(err: sqlx::Error) -> StoreError {
    let read_only = err
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == SQLITE_READONLY);
    if read_only {
        let now = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
        READ_ONLY_SEEN.store(now.max(1), Ordering::Release);
    }
    StoreError::backend(err)
}

/// SQLite's primary result code for "attempt to write a readonly database".
const SQLITE_READONLY: i32 = 8;

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("file", &self.pool.connect_options().get_filename())
            .field("connections", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .finish()
    }
}

/// Inserts `record` on `conn` (a pooled connection or a transaction).
async fn insert_token(
    conn: &mut sqlx::SqliteConnection,
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
    .map_err(|e| write_error(e, "token id or hash exists", backend))?;
    Ok(())
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE hash = $1"
        ))
        .bind(hash.to_hex().as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
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
        .map_err(backend)?
        .as_ref()
        .map(token_record)
        .transpose()
    }

    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        insert_token(&mut conn, record).await
    }

    async fn revoke(
        &self,
        id: TokenId,
        at: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        // One statement: a concurrent revoke cannot slip between a read and
        // the write, and the first revocation time is the one kept.
        //
        // `fetch_all`, never `fetch_optional`/`fetch_one`, for a write with
        // RETURNING: SQLite hands out the row before the implicit COMMIT, and a
        // statement not stepped to its end commits on reset, where a failure
        // (full disk, unwritable WAL) would be lost while we report success.
        sqlx::query(concat!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING ",
            token_columns!()
        ))
        .bind(id.to_string())
        .bind(nanos(at, "revoked_at")?)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .first()
        .map(token_record)
        .transpose()
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
            .map_err(backend)?
            .iter()
            .map(token_record)
            .collect()
    }

    async fn touch(&self, used: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        // One transaction: one fsync for the batch, and its first statement is
        // a write, so it never has to upgrade a read lock under contention.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for (id, at) in used {
            sqlx::query(
                "UPDATE api_tokens SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(id.to_string())
            .bind(nanos(*at, "last_used_at")?)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn load_policy(&self) -> Result<Option<VersionedPolicy>, StoreError> {
        let Some(row) = sqlx::query("SELECT policy, version FROM api_token_policy WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
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
        // One statement, so two admins saving at once get two versions; stepped
        // to its end (`fetch_all`) so a failed COMMIT is an error (see `revoke`).
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO api_token_policy (id, policy, version) VALUES (1, $1, 1) \
             ON CONFLICT (id) DO UPDATE \
             SET policy = excluded.policy, version = api_token_policy.version + 1 \
             RETURNING version",
        )
        .bind(json)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .first()
        .copied()
        .ok_or_else(|| malformed("version"))?;
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
        // The write lock is taken up front (`IMMEDIATE`), so a second caller
        // waits (busy timeout) before its SELECT rather than deciding on a
        // snapshot the first caller is about to change; a deferred transaction
        // would instead fail with SQLITE_BUSY when it tried to upgrade.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        if !rotate {
            let newest = sqlx::query(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL \
                  AND (expires_at IS NULL OR expires_at > $2) \
                  AND ($3 IS NULL OR issued_at > $3) \
                  ORDER BY issued_at DESC, id DESC LIMIT 1"
            ))
            .bind(user_id.as_str())
            .bind(now)
            .bind(issued_after)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
            if let Some(row) = newest.first() {
                let existing = token_record(row)?;
                tx.rollback().await.map_err(backend)?;
                return Ok(Issued::Existing(existing));
            }
        }
        // Every active token of the user, not only the newest: a rotation
        // leaves exactly one. Stepped to its end (`fetch_all`; see `revoke`).
        let mut revoked = sqlx::query(concat!(
            "UPDATE api_tokens SET revoked_at = $4 WHERE user_id = $1 AND revoked_at IS NULL \
              AND (expires_at IS NULL OR expires_at > $2) \
              AND ($3 IS NULL OR issued_at > $3) \
              RETURNING ",
            token_columns!()
        ))
        .bind(user_id.as_str())
        .bind(now)
        .bind(issued_after)
        .bind(nanos(record.issued_at, "revoked_at")?)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(token_record)
        .collect::<Result<Vec<_>, _>>()?;
        revoked.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then(b.id.cmp(&a.id)));
        insert_token(&mut tx, record).await?;
        // A failure here (or at any step above) rolls everything back on drop.
        tx.commit().await.map_err(backend)?;
        Ok(Issued::Inserted { revoked })
    }
}

#[async_trait]
impl Directory for SqliteStore {
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        sqlx::query(
            "SELECT id, username, roles, identity_provider FROM api_token_users WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
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
        .map_err(backend)?
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
        .map_err(backend)?;
        let found = match row {
            Some(row) => Some((user(&row)?, row.text("password_hash")?)),
            None => None,
        };
        // An unknown user is checked against a dummy hash: same cost, no oracle.
        Ok(password::check(found, password).await)
    }

    async fn create_user(&self, user: &User, password: &Password) -> Result<(), StoreError> {
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
        .map_err(|e| write_error(e, "user id or name exists", backend))?;
        Ok(())
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE api_token_users SET username = $2, roles = $3, identity_provider = $4 \
             WHERE id = $1",
        )
        .bind(user.id.to_string())
        .bind(user.username.as_str())
        .bind(roles_json(user)?)
        .bind(user.identity_provider.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| write_error(e, "user name exists", backend))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! What the conformance suite cannot see: the on-disk encoding, which later
    //! versions must keep reading, and SQLite-only behaviour.

    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use time::macros::datetime;

    use sqlx::Row;
    use uuid::Uuid;

    use super::*;

    async fn memory() -> SqliteStore {
        SqliteStore::connect("sqlite::memory:").await.unwrap()
    }

    async fn text(store: &SqliteStore, sql: &'static str) -> String {
        sqlx::query_scalar(sql)
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    /// Makes every write to `table` fail at COMMIT (not at the statement): a
    /// deferred foreign key the write's trigger violates. This is what a full
    /// disk or an unwritable WAL looks like to a statement whose rows were
    /// already returned.
    async fn fail_commits_on(store: &SqliteStore, table: &str) {
        for sql in [
            "CREATE TABLE commit_guard_parent (id TEXT PRIMARY KEY)".to_owned(),
            "CREATE TABLE commit_guard_child (parent TEXT REFERENCES commit_guard_parent (id) \
             DEFERRABLE INITIALLY DEFERRED)"
                .to_owned(),
            format!(
                "CREATE TRIGGER fail_commit_update AFTER UPDATE ON {table} \
                 BEGIN INSERT INTO commit_guard_child VALUES ('missing'); END"
            ),
            format!(
                "CREATE TRIGGER fail_commit_insert AFTER INSERT ON {table} \
                 BEGIN INSERT INTO commit_guard_child VALUES ('missing'); END"
            ),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(store.pool())
                .await
                .unwrap();
        }
    }

    fn record_at(at: OffsetDateTime) -> TokenRecord {
        TokenRecord {
            id: TokenId::new(),
            user_id: UserId::new(),
            hash: TokenHash::of(&at.to_string()),
            hint: "nch_…abcd".into(),
            issued_at: at,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, _store) = file_store().await;
        for file in ["db", "db-wal", "db-shm"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    /// A store on a new file in a temporary directory (kept while the
    /// returned guard lives).
    async fn file_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::connect(&format!("sqlite://{}", dir.path().join("db").display()))
            .await
            .unwrap();
        (dir, store)
    }

    /// A file store whose `n` pooled connections refuse writes the way a
    /// connection opened while the file was read-only does (`SQLITE_READONLY`),
    /// all back in the pool.
    async fn with_connections_stuck_read_only(n: usize) -> (tempfile::TempDir, SqliteStore) {
        let (dir, store) = file_store().await;
        let mut held = Vec::new();
        for _ in 0..n {
            let mut conn = store.pool().acquire().await.unwrap();
            sqlx::query("PRAGMA query_only = 1")
                .execute(&mut *conn)
                .await
                .unwrap();
            held.push(conn);
        }
        drop(held);
        // Released connections go back to the idle queue asynchronously.
        while store.pool().num_idle() < n {
            tokio::task::yield_now().await;
        }
        (dir, store)
    }

    #[tokio::test]
    async fn connections_stuck_read_only_are_replaced_and_writes_recover() {
        const CONNECTIONS: usize = 4;
        let (_dir, store) = with_connections_stuck_read_only(CONNECTIONS).await;
        // Each stuck connection fails at most twice (its failing write, and a
        // release that may race the error's note), then is replaced.
        let mut failures = 0;
        while store.save_policy(&Policy::None).await.is_err() {
            failures += 1;
            assert!(failures <= 2 * CONNECTIONS, "writes never recovered");
            tokio::task::yield_now().await;
        }
        assert!(failures >= 1, "the stuck connections were never used");
        for i in 0..20 {
            assert!(
                store.save_policy(&Policy::None).await.is_ok(),
                "write {i} after recovery failed"
            );
        }
    }

    #[tokio::test]
    async fn user_writes_also_replace_connections_stuck_read_only() {
        let (_dir, store) = with_connections_stuck_read_only(1).await;
        // Through the unique-violation-aware error path (`write_error`).
        let mut failures = 0;
        for i in 0.. {
            let user = User {
                id: UserId::new(),
                username: format!("user-{i}"),
                roles: vec![],
                identity_provider: "local".into(),
            };
            if store.create_user(&user, &"password1".into()).await.is_ok() {
                break;
            }
            failures += 1;
            assert!(failures <= 2, "user writes never recovered");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_revoke_that_fails_at_commit_is_an_error_not_a_success() {
        let (_dir, store) = file_store().await;
        let record = record_at(datetime!(2026-01-01 00:00 UTC));
        store.insert(&record).await.unwrap();
        fail_commits_on(&store, "api_tokens").await;
        let result = store
            .revoke(record.id, datetime!(2026-01-02 00:00 UTC))
            .await;
        assert!(
            result.is_err(),
            "revoke reported {result:?} although nothing was written"
        );
        assert_eq!(
            store.get(record.id).await.unwrap().unwrap().revoked_at,
            None
        );
    }

    #[tokio::test]
    async fn an_issue_that_fails_at_commit_is_an_error_and_changes_nothing() {
        let (_dir, store) = file_store().await;
        let record = record_at(datetime!(2026-01-01 00:00 UTC));
        store.insert(&record).await.unwrap();
        fail_commits_on(&store, "api_tokens").await;
        let next = TokenRecord {
            user_id: record.user_id,
            ..record_at(datetime!(2026-01-02 00:00 UTC))
        };
        let active = Active {
            now: next.issued_at,
            issued_after: None,
        };
        let result = store.issue(&next, active, true).await;
        assert!(result.is_err(), "issue reported {result:?}");
        assert_eq!(store.list(None).await.unwrap(), [record]);
    }

    #[tokio::test]
    async fn a_policy_save_that_fails_at_commit_is_an_error() {
        let (_dir, store) = file_store().await;
        store.save_policy(&Policy::None).await.unwrap();
        fail_commits_on(&store, "api_token_policy").await;
        assert!(store.save_policy(&Policy::default()).await.is_err());
        let kept = store.load_policy().await.unwrap().unwrap();
        assert_eq!((kept.policy, kept.version), (Policy::None, 1));
    }

    #[tokio::test]
    async fn columns_hold_the_documented_encoding() {
        let store = memory().await;
        let record = TokenRecord {
            id: TokenId(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)),
            user_id: UserId(Uuid::from_u128(0xfedc_ba98_7654_3210_fedc_ba98_7654_3210)),
            hash: TokenHash::of("abc"),
            hint: "nch_…abcd".into(),
            issued_at: datetime!(2026-03-04 05:06:07.123_456_789 UTC),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        store.insert(&record).await.unwrap();
        let row = sqlx::query("SELECT id, user_id, hash, issued_at, expires_at FROM api_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let id: String = row.get("id");
        let user_id: String = row.get("user_id");
        let hash: String = row.get("hash");
        let issued_at: i64 = row.get("issued_at");
        let expires_at: Option<i64> = row.get("expires_at");
        assert_eq!(id, "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(user_id, "fedcba98-7654-3210-fedc-ba9876543210");
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(issued_at, 1_772_600_767_123_456_789);
        assert_eq!(expires_at, None);

        let user = User {
            id: UserId(Uuid::from_u128(1)),
            username: "alice".into(),
            roles: vec!["ops".into(), "dev".into()],
            identity_provider: "local".into(),
        };
        store
            .create_user(&user, &Password::new("hunter2-hunter2"))
            .await
            .unwrap();
        assert_eq!(
            text(&store, "SELECT roles FROM api_token_users").await,
            r#"["ops","dev"]"#
        );
        let phc = text(&store, "SELECT password_hash FROM api_token_users").await;
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("hunter2"));

        store.save_policy(&Policy::None).await.unwrap();
        assert_eq!(
            text(&store, "SELECT policy FROM api_token_policy").await,
            r#"{"mode":"none"}"#
        );
    }

    #[tokio::test]
    async fn times_beyond_2262_are_refused_not_rounded() {
        let store = memory().await;
        let record = TokenRecord {
            id: TokenId::new(),
            user_id: UserId::new(),
            hash: TokenHash::of("t"),
            hint: String::new(),
            issued_at: datetime!(2026-01-01 00:00 UTC),
            expires_at: Some(datetime!(2262-04-12 00:00 UTC)),
            revoked_at: None,
            last_used_at: None,
        };
        assert!(matches!(
            store.insert(&record).await,
            Err(StoreError::Backend(_))
        ));
        assert_eq!(store.get(record.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn connect_creates_a_missing_file_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert!(path.is_file());
        assert_eq!(text(&store, "PRAGMA journal_mode").await, "wal");
        let debug = format!("{store:?}");
        assert!(debug.starts_with("SqliteStore { file: "), "{debug}");
        assert!(debug.contains("new.db"), "{debug}");
    }

    #[tokio::test]
    async fn shares_a_database_with_the_applications_own_migrations() {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        let app = Migrator::with_migrations(vec![Migration::new(
            1,
            "app".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe("CREATE TABLE app_things (id INTEGER)").into_sql_str(),
            false,
        )]);
        app.run(&pool).await.unwrap();

        let store = SqliteStore::from_pool(pool.clone()).await.unwrap();
        // Both sides still see only their own history.
        app.run(&pool).await.unwrap();
        SqliteStore::from_pool(pool).await.unwrap();
        assert_eq!(store.load_policy().await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_store_serializes_concurrent_issues() {
        // `BEGIN IMMEDIATE` on the shared cache of `sqlite::memory:` must wait
        // (unlock-notify), not fail with "database table is locked".
        let store = memory().await;
        let owner = UserId::new();
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..8 {
            let store = store.clone();
            tasks.spawn(async move {
                let record = TokenRecord {
                    user_id: owner,
                    hash: TokenHash::of(&format!("token {n}")),
                    ..record_at(datetime!(2026-01-01 00:00 UTC))
                };
                let active = Active {
                    now: record.issued_at,
                    issued_after: None,
                };
                store.issue(&record, active, n % 2 == 0).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        let active = store.list(Some(owner)).await.unwrap();
        let active: Vec<_> = active.iter().filter(|r| r.revoked_at.is_none()).collect();
        assert_eq!(active.len(), 1, "{active:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_store_serves_concurrent_writers() {
        // `sqlite::memory:` is one shared-cache database across the pool, whose
        // table locks `busy_timeout` does not wait for: without unlock-notify,
        // this fails with "database table is locked".
        let store = memory().await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let store = store.clone();
            tasks.spawn(async move {
                store.save_policy(&Policy::None).await?;
                store
                    .touch(&[(TokenId::new(), datetime!(2026-01-01 0:00 UTC))])
                    .await?;
                store.list(None).await.map(drop)
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        assert_eq!(
            store.load_policy().await.unwrap().map(|p| p.version),
            Some(40)
        );
    }
}
