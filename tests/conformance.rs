//! One conformance suite for every backend: each test is written once, generic
//! over `S: TokenStore + Directory`, and [`conformance!`] instantiates all of
//! them for a [`Backend`].
//!
//! Adding a backend (PostgreSQL, say) is an `impl Backend` that hands each test
//! a fresh, private database, plus one `conformance!` line at the bottom.

use std::collections::BTreeSet;
use std::sync::Arc;

use time::OffsetDateTime;
use time::macros::datetime;
use tokio::task::JoinSet;
use tower_api_tokens::StoreError;
use tower_api_tokens::password::Password;
use tower_api_tokens::policy::{Lifetime, Policy, Rule, VersionedPolicy};
use tower_api_tokens::store::{
    Active, Directory, Issued, MemoryStore, TokenId, TokenRecord, TokenStore, User, UserId,
};
use tower_api_tokens::token::TokenHash;
use uuid::Uuid;

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg;

// ---------------------------------------------------------------------------
// Backends

/// A backend under test.
trait Backend: Sized {
    /// The store it opens.
    type Store: TokenStore + Directory;

    /// A fresh, empty database that no other test sees.
    async fn new() -> Self;

    /// A store over this database. Called again after [`Backend::close`], it
    /// opens the same data anew.
    async fn open(&self) -> Self::Store;

    /// Closes a store so that whatever it holds must come back from storage.
    async fn close(store: Self::Store) {
        drop(store);
    }
}

/// One [`MemoryStore`] per test; `open` hands out clones of it.
struct MemoryBackend(MemoryStore);

impl Backend for MemoryBackend {
    type Store = MemoryStore;

    async fn new() -> Self {
        Self(MemoryStore::new())
    }

    async fn open(&self) -> MemoryStore {
        self.0.clone()
    }
}

/// One SQLite file per test, in its own temporary directory (removed on drop).
#[cfg(feature = "sqlite")]
struct SqliteBackend {
    _dir: tempfile::TempDir,
    url: String,
}

#[cfg(feature = "sqlite")]
impl Backend for SqliteBackend {
    type Store = tower_api_tokens::store::SqliteStore;

    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // The file does not exist yet: `connect` must create it.
        let url = format!("sqlite://{}", dir.path().join("tokens.db").display());
        Self { _dir: dir, url }
    }

    async fn open(&self) -> Self::Store {
        Self::Store::connect(&self.url)
            .await
            .expect("the SQLite store opens")
    }

    async fn close(store: Self::Store) {
        store.pool().close().await;
    }
}

/// One PostgreSQL schema per test (dropped on drop), on `TEST_DATABASE_URL`.
#[cfg(feature = "postgres")]
struct PostgresBackend(pg::TestSchema);

#[cfg(feature = "postgres")]
impl Backend for PostgresBackend {
    type Store = tower_api_tokens::store::PostgresStore;

    async fn new() -> Self {
        Self(pg::TestSchema::new().await)
    }

    async fn open(&self) -> Self::Store {
        Self::Store::connect_with(self.0.options())
            .await
            .expect("the PostgreSQL store opens")
    }

    async fn close(store: Self::Store) {
        store.pool().close().await;
    }
}

/// Instantiates every conformance test for a backend, in a module named
/// `$name`. With `durable`, also the tests that reopen the same data.
macro_rules! conformance {
    ($name:ident: $backend:ty $(, $durable:ident)?) => {
        mod $name {
            use super::*;

            conformance!(@each $backend;
                insert_then_find_by_hash_and_get_round_trip_exactly,
                lookups_of_unknown_tokens_find_nothing,
                duplicate_token_id_or_hash_is_a_conflict,
                revoke_sets_revoked_at_and_keeps_the_first_time,
                revoke_of_an_unknown_token_is_none,
                list_is_newest_first_and_filters_by_user,
                list_breaks_ties_by_descending_id,
                touch_keeps_the_latest_time_and_ignores_unknown_ids,
                issue_inserts_when_the_user_has_no_active_token,
                issue_reuses_the_newest_active_token_and_inserts_nothing,
                issue_ignores_expired_revoked_and_policy_cut_tokens,
                issue_counts_tokens_active_up_to_the_last_nanosecond,
                issue_with_rotate_revokes_every_active_token_of_that_user_only,
                issue_with_a_taken_id_or_hash_is_a_conflict_and_revokes_nothing,
                concurrent_issues_for_one_user_insert_one_token,
                concurrent_rotations_leave_exactly_one_active_token,
                fresh_store_has_no_policy,
                save_policy_counts_versions_from_one,
                concurrent_policy_saves_get_distinct_versions,
                users_are_found_by_id_and_by_name,
                duplicate_user_name_or_id_is_a_conflict,
                verify_password_accepts_only_the_right_password,
                update_user_replaces_name_roles_and_provider,
                update_user_of_an_unknown_user_is_not_found,
                update_user_to_a_taken_name_is_a_conflict,
            );
            $(conformance!(@$durable $backend);)?
        }
    };
    (@each $backend:ty; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let backend = <$backend as Backend>::new().await;
                super::$test(backend.open().await).await;
            }
        )*
    };
    (@durable $backend:ty) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn data_survives_reopening() {
            super::data_survives_reopening(&<$backend as Backend>::new().await).await;
        }
    };
}

conformance!(memory: MemoryBackend);
#[cfg(feature = "sqlite")]
conformance!(sqlite: SqliteBackend, durable);
#[cfg(feature = "postgres")]
conformance!(postgres: PostgresBackend, durable);

// ---------------------------------------------------------------------------
// Fixtures: every value below is written out, not computed by the crate.

/// Nanoseconds that a microsecond or millisecond encoding would lose.
const ISSUED: OffsetDateTime = datetime!(2026-03-04 05:06:07.123_456_789 UTC);
const LATER: OffsetDateTime = datetime!(2026-03-04 07:06:07.000_000_001 UTC);
const LATEST: OffsetDateTime = datetime!(2026-03-05 00:00:00.999_999_999 UTC);

fn id(n: u128) -> TokenId {
    TokenId(Uuid::from_u128(n))
}

fn user_id(n: u128) -> UserId {
    UserId(Uuid::from_u128(0xa000 + n))
}

/// A distinct hash per `n`: all 32 bytes equal to `n`.
fn hash(n: u8) -> TokenHash {
    TokenHash::from_bytes([n; 32])
}

/// A live token record: no expiry, never revoked or used.
fn record(n: u8, owner: UserId, issued_at: OffsetDateTime) -> TokenRecord {
    TokenRecord {
        id: id(u128::from(n)),
        user_id: owner,
        hash: hash(n),
        hint: format!("nch_…{n:04}"),
        issued_at,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

fn person(n: u128, name: &str, roles: &[&str], provider: &str) -> User {
    User {
        id: user_id(n),
        username: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        identity_provider: provider.into(),
    }
}

fn alice() -> User {
    // Deliberately not in sorted order: roles must come back as given.
    person(1, "alice", &["ops", "dev"], "local")
}

fn bob() -> User {
    person(2, "bob", &[], "saml-corp")
}

fn password(of: &str) -> Password {
    Password::new(format!("correct horse battery {of}"))
}

fn is_conflict<T>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}

// ---------------------------------------------------------------------------
// Tokens

async fn insert_then_find_by_hash_and_get_round_trip_exactly<S: TokenStore + Directory>(store: S) {
    let full = TokenRecord {
        expires_at: Some(datetime!(2026-06-02 05:06:07.123_456_789 UTC)),
        revoked_at: Some(LATER),
        last_used_at: Some(datetime!(2026-03-04 06:00:00.000_000_999 UTC)),
        ..record(1, user_id(1), ISSUED)
    };
    // The longest finite lifetime a policy grants is 100 years.
    let far = TokenRecord {
        expires_at: Some(datetime!(2126-03-04 05:06:07.123_456_789 UTC)),
        ..record(2, user_id(1), ISSUED)
    };
    let bare = record(3, user_id(2), LATER);
    for r in [&full, &far, &bare] {
        store.insert(r).await.unwrap();
    }

    for r in [&full, &far, &bare] {
        let by_hash = store.find_by_hash(&r.hash).await.unwrap();
        assert_eq!(by_hash.as_ref(), Some(r));
        assert_eq!(store.get(r.id).await.unwrap().as_ref(), Some(r));
    }
    // Spelled out, not just `==`: every nanosecond survives.
    let back = store.get(full.id).await.unwrap().unwrap();
    assert_eq!(back.issued_at.nanosecond(), 123_456_789);
    assert_eq!(back.revoked_at.map(|t| t.nanosecond()), Some(1));
    assert_eq!(back.last_used_at.map(|t| t.nanosecond()), Some(999));
    assert_eq!(back.hint, "nch_…0001");
    assert_eq!(back.user_id, user_id(1));
    assert_eq!(back.hash, hash(1));
}

async fn lookups_of_unknown_tokens_find_nothing<S: TokenStore + Directory>(store: S) {
    assert_eq!(store.find_by_hash(&hash(9)).await.unwrap(), None);
    assert_eq!(store.get(id(9)).await.unwrap(), None);
    store.insert(&record(1, user_id(1), ISSUED)).await.unwrap();
    assert_eq!(store.find_by_hash(&hash(9)).await.unwrap(), None);
    assert_eq!(store.get(id(9)).await.unwrap(), None);
}

async fn duplicate_token_id_or_hash_is_a_conflict<S: TokenStore + Directory>(store: S) {
    let original = record(1, user_id(1), ISSUED);
    store.insert(&original).await.unwrap();

    let same_id = TokenRecord {
        hash: hash(2),
        ..record(1, user_id(2), LATER)
    };
    assert!(is_conflict(store.insert(&same_id).await));
    let same_hash = TokenRecord {
        hash: hash(1),
        ..record(3, user_id(2), LATER)
    };
    assert!(is_conflict(store.insert(&same_hash).await));

    // Neither attempt left a trace.
    assert_eq!(store.get(id(1)).await.unwrap(), Some(original.clone()));
    assert_eq!(store.find_by_hash(&hash(1)).await.unwrap(), Some(original));
    assert_eq!(store.find_by_hash(&hash(2)).await.unwrap(), None);
    assert_eq!(store.get(id(3)).await.unwrap(), None);
    assert_eq!(store.list(None).await.unwrap().len(), 1);
}

async fn revoke_sets_revoked_at_and_keeps_the_first_time<S: TokenStore + Directory>(store: S) {
    let original = record(1, user_id(1), ISSUED);
    store.insert(&original).await.unwrap();
    let revoked = TokenRecord {
        revoked_at: Some(LATER),
        ..original.clone()
    };

    assert_eq!(
        store.revoke(id(1), LATER).await.unwrap(),
        Some(revoked.clone())
    );
    // A later revocation keeps the first time; so does an earlier one.
    assert_eq!(
        store.revoke(id(1), LATEST).await.unwrap(),
        Some(revoked.clone())
    );
    assert_eq!(
        store.revoke(id(1), ISSUED).await.unwrap(),
        Some(revoked.clone())
    );

    assert_eq!(store.get(id(1)).await.unwrap(), Some(revoked.clone()));
    assert_eq!(store.find_by_hash(&hash(1)).await.unwrap(), Some(revoked));
}

async fn revoke_of_an_unknown_token_is_none<S: TokenStore + Directory>(store: S) {
    let other = record(1, user_id(1), ISSUED);
    store.insert(&other).await.unwrap();
    assert_eq!(store.revoke(id(9), LATER).await.unwrap(), None);
    assert_eq!(store.get(id(9)).await.unwrap(), None);
    assert_eq!(store.get(id(1)).await.unwrap(), Some(other));
}

async fn list_is_newest_first_and_filters_by_user<S: TokenStore + Directory>(store: S) {
    let (a, b) = (user_id(1), user_id(2));
    assert_eq!(store.list(None).await.unwrap(), []);

    let a_old = record(1, a, ISSUED);
    let b_mid = record(2, b, datetime!(2026-03-04 06:06:07.123_456_789 UTC));
    let a_new = record(3, a, LATER);
    // One nanosecond after `a_old`: order must not round it away.
    let a_next = record(4, a, datetime!(2026-03-04 05:06:07.123_456_790 UTC));
    for r in [&b_mid, &a_old, &a_new, &a_next] {
        store.insert(r).await.unwrap();
    }

    assert_eq!(
        store.list(None).await.unwrap(),
        [a_new.clone(), b_mid.clone(), a_next.clone(), a_old.clone()]
    );
    assert_eq!(store.list(Some(a)).await.unwrap(), [a_new, a_next, a_old]);
    assert_eq!(store.list(Some(b)).await.unwrap(), [b_mid]);
    assert_eq!(store.list(Some(user_id(9))).await.unwrap(), []);
}

async fn list_breaks_ties_by_descending_id<S: TokenStore + Directory>(store: S) {
    // Ids 0x…01, 0x…02 and 0x10…: byte order, not insertion order, decides.
    let low = record(1, user_id(1), ISSUED);
    let high = TokenRecord {
        id: TokenId(Uuid::from_u128(1 << 124)),
        ..record(3, user_id(1), ISSUED)
    };
    let mid = record(2, user_id(1), ISSUED);
    for r in [&mid, &high, &low] {
        store.insert(r).await.unwrap();
    }
    assert_eq!(store.list(None).await.unwrap(), [high, mid, low]);
}

async fn touch_keeps_the_latest_time_and_ignores_unknown_ids<S: TokenStore + Directory>(store: S) {
    let a = record(1, user_id(1), ISSUED);
    let b = record(2, user_id(1), ISSUED);
    store.insert(&a).await.unwrap();
    store.insert(&b).await.unwrap();

    store.touch(&[]).await.unwrap();
    store
        .touch(&[(id(1), LATER), (id(9), LATEST), (id(2), LATEST)])
        .await
        .unwrap();
    let used = |r: &TokenRecord, at| TokenRecord {
        last_used_at: Some(at),
        ..r.clone()
    };
    assert_eq!(store.get(id(1)).await.unwrap(), Some(used(&a, LATER)));
    assert_eq!(store.get(id(2)).await.unwrap(), Some(used(&b, LATEST)));
    assert_eq!(store.get(id(9)).await.unwrap(), None);

    // Earlier than what is stored: ignored.
    store.touch(&[(id(2), LATER)]).await.unwrap();
    assert_eq!(store.get(id(2)).await.unwrap(), Some(used(&b, LATEST)));

    // The same token twice in one batch: the later time wins, in either order.
    store
        .touch(&[(id(1), LATEST), (id(1), ISSUED)])
        .await
        .unwrap();
    assert_eq!(store.get(id(1)).await.unwrap(), Some(used(&a, LATEST)));
}

// ---------------------------------------------------------------------------
// Issuing: reuse or insert, and rotate, as one step

/// Active at `LATEST` under a policy with no lifetime limit.
fn active_at_latest() -> Active {
    Active {
        now: LATEST,
        issued_after: None,
    }
}

/// The user's tokens that are active at `at`, newest first.
async fn active_tokens<S: TokenStore>(store: &S, owner: UserId, at: Active) -> Vec<TokenRecord> {
    let all = store.list(Some(owner)).await.unwrap();
    all.into_iter().filter(|r| at.contains(r)).collect()
}

async fn issue_inserts_when_the_user_has_no_active_token<S: TokenStore + Directory>(store: S) {
    let other = record(1, user_id(2), ISSUED);
    store.insert(&other).await.unwrap();
    let new = record(2, user_id(1), LATER);

    let issued = store.issue(&new, active_at_latest(), false).await.unwrap();
    assert_eq!(issued, Issued::Inserted { revoked: vec![] });
    assert_eq!(store.get(new.id).await.unwrap(), Some(new.clone()));
    assert_eq!(store.find_by_hash(&new.hash).await.unwrap(), Some(new));
    assert_eq!(store.get(other.id).await.unwrap(), Some(other));
}

async fn issue_reuses_the_newest_active_token_and_inserts_nothing<S: TokenStore + Directory>(
    store: S,
) {
    let (a, b) = (user_id(1), user_id(2));
    let older = record(1, a, ISSUED);
    let newer = record(2, a, LATER);
    // Bob's token is newer still, but not Alice's.
    let bobs = record(3, b, LATEST);
    for r in [&older, &newer, &bobs] {
        store.insert(r).await.unwrap();
    }
    let before = store.list(None).await.unwrap();

    let candidate = record(9, a, LATEST);
    let issued = store
        .issue(&candidate, active_at_latest(), false)
        .await
        .unwrap();
    assert_eq!(issued, Issued::Existing(newer));
    assert_eq!(store.get(candidate.id).await.unwrap(), None);
    assert_eq!(store.find_by_hash(&candidate.hash).await.unwrap(), None);
    assert_eq!(store.list(None).await.unwrap(), before);
}

async fn issue_ignores_expired_revoked_and_policy_cut_tokens<S: TokenStore + Directory>(store: S) {
    let a = user_id(1);
    let at = Active {
        now: LATEST,
        issued_after: Some(LATER),
    };
    // Expired exactly now: `now >= expiry` is expired.
    let expired = TokenRecord {
        expires_at: Some(LATEST),
        ..record(1, a, datetime!(2026-03-04 12:00 UTC))
    };
    let revoked = TokenRecord {
        revoked_at: Some(datetime!(2026-03-04 13:00 UTC)),
        ..record(2, a, datetime!(2026-03-04 12:00 UTC))
    };
    // Issued exactly at `issued_after`: the current lifetime ends now.
    let cut = record(3, a, LATER);
    let bobs = record(4, user_id(2), datetime!(2026-03-04 12:00 UTC));
    for r in [&expired, &revoked, &cut, &bobs] {
        store.insert(r).await.unwrap();
    }

    let new = record(9, a, LATEST);
    let issued = store.issue(&new, at, false).await.unwrap();
    assert_eq!(issued, Issued::Inserted { revoked: vec![] });
    // None of them was active, so none of them was touched.
    for r in [&expired, &revoked, &cut, &bobs] {
        assert_eq!(store.get(r.id).await.unwrap().as_ref(), Some(r));
    }
    assert_eq!(store.get(new.id).await.unwrap(), Some(new));
}

async fn issue_counts_tokens_active_up_to_the_last_nanosecond<S: TokenStore + Directory>(store: S) {
    let ns = time::Duration::nanoseconds(1);
    let at = Active {
        now: LATEST,
        issued_after: Some(LATER),
    };
    // One nanosecond from expiry, and one nanosecond inside the current lifetime.
    let expiring = TokenRecord {
        expires_at: Some(LATEST + ns),
        ..record(1, user_id(1), datetime!(2026-03-04 12:00 UTC))
    };
    let barely = record(2, user_id(2), LATER + ns);
    store.insert(&expiring).await.unwrap();
    store.insert(&barely).await.unwrap();

    let issued = store.issue(&record(8, user_id(1), LATEST), at, false).await;
    assert_eq!(issued.unwrap(), Issued::Existing(expiring));
    let issued = store.issue(&record(9, user_id(2), LATEST), at, false).await;
    assert_eq!(issued.unwrap(), Issued::Existing(barely));
    assert_eq!(store.list(None).await.unwrap().len(), 2);
}

async fn issue_with_rotate_revokes_every_active_token_of_that_user_only<
    S: TokenStore + Directory,
>(
    store: S,
) {
    let (a, b) = (user_id(1), user_id(2));
    let older = record(1, a, ISSUED);
    let newer = record(2, a, LATER);
    let expired = TokenRecord {
        expires_at: Some(LATER),
        ..record(3, a, ISSUED)
    };
    let revoked_before = TokenRecord {
        revoked_at: Some(LATER),
        ..record(4, a, ISSUED)
    };
    let bobs = record(5, b, LATER);
    for r in [&older, &newer, &expired, &revoked_before, &bobs] {
        store.insert(r).await.unwrap();
    }

    let new = record(9, a, LATEST);
    let issued = store.issue(&new, active_at_latest(), true).await.unwrap();
    let revoked_now = |r: &TokenRecord| TokenRecord {
        revoked_at: Some(LATEST),
        ..r.clone()
    };
    assert_eq!(
        issued,
        Issued::Inserted {
            revoked: vec![revoked_now(&newer), revoked_now(&older)]
        }
    );
    assert_eq!(
        store.get(older.id).await.unwrap(),
        Some(revoked_now(&older))
    );
    assert_eq!(
        store.get(newer.id).await.unwrap(),
        Some(revoked_now(&newer))
    );
    // Not active: left as they were.
    assert_eq!(store.get(expired.id).await.unwrap(), Some(expired));
    assert_eq!(
        store.get(revoked_before.id).await.unwrap(),
        Some(revoked_before)
    );
    assert_eq!(store.get(bobs.id).await.unwrap(), Some(bobs));
    let active = active_tokens(&store, a, active_at_latest()).await;
    assert_eq!(active, std::slice::from_ref(&new));

    // Rotating again revokes the token the last rotation issued.
    let next = record(10, a, LATEST);
    let issued = store.issue(&next, active_at_latest(), true).await.unwrap();
    assert_eq!(
        issued,
        Issued::Inserted {
            revoked: vec![revoked_now(&new)]
        }
    );
    assert_eq!(active_tokens(&store, a, active_at_latest()).await, [next]);
}

async fn issue_with_a_taken_id_or_hash_is_a_conflict_and_revokes_nothing<
    S: TokenStore + Directory,
>(
    store: S,
) {
    let a = user_id(1);
    let current = record(1, a, ISSUED);
    store.insert(&current).await.unwrap();

    let same_id = TokenRecord {
        hash: hash(9),
        ..record(1, a, LATER)
    };
    let same_hash = TokenRecord {
        hash: hash(1),
        ..record(9, a, LATER)
    };
    for clash in [&same_id, &same_hash] {
        let issued = store.issue(clash, active_at_latest(), true).await;
        assert!(is_conflict(issued), "{clash:?}");
    }
    assert_eq!(store.get(current.id).await.unwrap(), Some(current));
    assert_eq!(store.find_by_hash(&hash(9)).await.unwrap(), None);
    assert_eq!(store.list(None).await.unwrap().len(), 1);
}

async fn concurrent_issues_for_one_user_insert_one_token<S: TokenStore + Directory>(store: S) {
    let a = user_id(1);
    let store = Arc::new(store);
    let mut issues = JoinSet::new();
    for n in 1..=8u8 {
        let store = Arc::clone(&store);
        issues.spawn(async move {
            let candidate = record(n, a, LATER);
            match store
                .issue(&candidate, active_at_latest(), false)
                .await
                .unwrap()
            {
                Issued::Existing(existing) => (existing.id, false),
                Issued::Inserted { revoked } => {
                    assert_eq!(revoked, []);
                    (candidate.id, true)
                }
            }
        });
    }
    let mut ids = BTreeSet::new();
    let mut inserted = 0;
    while let Some(done) = issues.join_next().await {
        let (id, was_inserted) = done.unwrap();
        ids.insert(id);
        inserted += usize::from(was_inserted);
    }
    assert_eq!(inserted, 1);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let stored = store.list(Some(a)).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(ids.first(), Some(&stored[0].id));
}

async fn concurrent_rotations_leave_exactly_one_active_token<S: TokenStore + Directory>(store: S) {
    let a = user_id(1);
    let first = record(100, a, ISSUED);
    store.insert(&first).await.unwrap();
    let store = Arc::new(store);
    let mut rotations = JoinSet::new();
    for n in 1..=8u8 {
        let store = Arc::clone(&store);
        rotations.spawn(async move {
            let candidate = record(n, a, LATER);
            match store
                .issue(&candidate, active_at_latest(), true)
                .await
                .unwrap()
            {
                Issued::Inserted { revoked } => revoked,
                Issued::Existing(existing) => panic!("a rotation reused {existing:?}"),
            }
        });
    }
    let mut revoked = Vec::new();
    while let Some(done) = rotations.join_next().await {
        revoked.extend(done.unwrap().into_iter().map(|r| r.id));
    }
    let active = active_tokens(&*store, a, active_at_latest()).await;
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(store.list(Some(a)).await.unwrap().len(), 9);
    // Each rotation revoked exactly what the one before it issued: every token
    // but the survivor was revoked once, by one rotation.
    let unique: BTreeSet<TokenId> = revoked.iter().copied().collect();
    assert_eq!(revoked.len(), 8, "{revoked:?}");
    assert_eq!(unique.len(), 8);
    assert!(unique.contains(&first.id));
    assert!(!unique.contains(&active[0].id));
}

// ---------------------------------------------------------------------------
// Policy

fn selected() -> Policy {
    Policy::Selected {
        rules: vec![
            Rule::role("admin", Lifetime::days(90)),
            Rule::identity_provider("saml-corp", Lifetime::Never),
        ],
    }
}

async fn fresh_store_has_no_policy<S: TokenStore + Directory>(store: S) {
    assert_eq!(store.load_policy().await.unwrap(), None);
}

async fn save_policy_counts_versions_from_one<S: TokenStore + Directory>(store: S) {
    let thirty_days = Policy::AllUsers {
        lifetime: Lifetime::days(30),
    };
    let steps = [
        (thirty_days, 1),
        (Policy::None, 2),
        (selected(), 3),
        (Policy::None, 4),
    ];
    for (policy, version) in steps {
        let expected = VersionedPolicy { policy, version };
        assert_eq!(store.save_policy(&expected.policy).await.unwrap(), expected);
        assert_eq!(store.load_policy().await.unwrap(), Some(expected));
    }
}

async fn concurrent_policy_saves_get_distinct_versions<S: TokenStore + Directory>(store: S) {
    let store = Arc::new(store);
    let mut saves = JoinSet::new();
    for n in 1..=12u64 {
        let store = Arc::clone(&store);
        saves.spawn(async move {
            let policy = Policy::AllUsers {
                lifetime: Lifetime::days(n),
            };
            store.save_policy(&policy).await.unwrap()
        });
    }
    let mut versions = BTreeSet::new();
    let mut last = None;
    while let Some(saved) = saves.join_next().await {
        let saved = saved.unwrap();
        assert!(versions.insert(saved.version), "{} twice", saved.version);
        if saved.version == 12 {
            last = Some(saved);
        }
    }
    assert_eq!(versions, (1..=12).collect::<BTreeSet<u64>>());
    assert_eq!(store.load_policy().await.unwrap(), last);
}

// ---------------------------------------------------------------------------
// Users

async fn users_are_found_by_id_and_by_name<S: TokenStore + Directory>(store: S) {
    assert_eq!(store.user(user_id(1)).await.unwrap(), None);
    assert_eq!(store.user_by_name("alice").await.unwrap(), None);

    store.create_user(&alice(), &password("a")).await.unwrap();
    store.create_user(&bob(), &password("b")).await.unwrap();

    let expected_alice = User {
        id: UserId(Uuid::from_u128(0xa001)),
        username: "alice".into(),
        roles: vec!["ops".into(), "dev".into()],
        identity_provider: "local".into(),
    };
    assert_eq!(
        store.user(user_id(1)).await.unwrap(),
        Some(expected_alice.clone())
    );
    assert_eq!(
        store.user_by_name("alice").await.unwrap(),
        Some(expected_alice)
    );
    assert_eq!(store.user(user_id(2)).await.unwrap(), Some(bob()));
    assert_eq!(store.user_by_name("bob").await.unwrap(), Some(bob()));
    assert_eq!(store.user(user_id(9)).await.unwrap(), None);
    assert_eq!(store.user_by_name("carol").await.unwrap(), None);
}

async fn duplicate_user_name_or_id_is_a_conflict<S: TokenStore + Directory>(store: S) {
    store.create_user(&alice(), &password("a")).await.unwrap();

    let same_name = person(3, "alice", &["admin"], "local");
    assert!(is_conflict(
        store.create_user(&same_name, &password("x")).await
    ));
    let same_id = person(1, "mallory", &["admin"], "local");
    assert!(is_conflict(
        store.create_user(&same_id, &password("x")).await
    ));

    assert_eq!(store.user(user_id(1)).await.unwrap(), Some(alice()));
    assert_eq!(store.user(user_id(3)).await.unwrap(), None);
    assert_eq!(store.user_by_name("mallory").await.unwrap(), None);
    // The original password still works; the rejected ones never took.
    let verify = store.verify_password("alice", &password("a")).await;
    assert_eq!(verify.unwrap(), Some(alice()));
    let verify = store.verify_password("alice", &password("x")).await;
    assert_eq!(verify.unwrap(), None);
}

async fn verify_password_accepts_only_the_right_password<S: TokenStore + Directory>(store: S) {
    store.create_user(&alice(), &password("a")).await.unwrap();
    store.create_user(&bob(), &password("b")).await.unwrap();

    let right = store.verify_password("alice", &password("a")).await;
    assert_eq!(right.unwrap(), Some(alice()));
    for (name, pw) in [
        ("alice", password("b")),
        ("alice", Password::new("")),
        ("alice", Password::new("correct horse battery A")),
        ("bob", password("a")),
        ("carol", password("a")),
        ("", password("a")),
    ] {
        let answer = store.verify_password(name, &pw).await.unwrap();
        assert_eq!(answer, None, "{name} with a wrong password");
    }
    let right = store.verify_password("bob", &password("b")).await;
    assert_eq!(right.unwrap(), Some(bob()));
}

async fn update_user_replaces_name_roles_and_provider<S: TokenStore + Directory>(store: S) {
    store.create_user(&alice(), &password("a")).await.unwrap();
    store.create_user(&bob(), &password("b")).await.unwrap();

    let renamed = person(1, "alice.b", &["admin"], "saml-corp");
    store.update_user(&renamed).await.unwrap();
    assert_eq!(store.user(user_id(1)).await.unwrap(), Some(renamed.clone()));
    assert_eq!(
        store.user_by_name("alice.b").await.unwrap(),
        Some(renamed.clone())
    );
    assert_eq!(store.user_by_name("alice").await.unwrap(), None);
    // The password is untouched and goes with the new name.
    let verify = store.verify_password("alice.b", &password("a")).await;
    assert_eq!(verify.unwrap(), Some(renamed));
    assert_eq!(
        store
            .verify_password("alice", &password("a"))
            .await
            .unwrap(),
        None
    );

    // Keeping one's own name is no conflict.
    let same_name = person(1, "alice.b", &[], "local");
    store.update_user(&same_name).await.unwrap();
    assert_eq!(store.user(user_id(1)).await.unwrap(), Some(same_name));

    // The old name is free again.
    let newcomer = person(3, "alice", &["dev"], "local");
    store.create_user(&newcomer, &password("c")).await.unwrap();
    assert_eq!(store.user_by_name("alice").await.unwrap(), Some(newcomer));
    // Bob was never touched.
    assert_eq!(store.user(user_id(2)).await.unwrap(), Some(bob()));
}

async fn update_user_of_an_unknown_user_is_not_found<S: TokenStore + Directory>(store: S) {
    store.create_user(&alice(), &password("a")).await.unwrap();
    let ghost = person(9, "ghost", &["admin"], "local");
    assert!(matches!(
        store.update_user(&ghost).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.user(user_id(9)).await.unwrap(), None);
    assert_eq!(store.user_by_name("ghost").await.unwrap(), None);
}

async fn update_user_to_a_taken_name_is_a_conflict<S: TokenStore + Directory>(store: S) {
    store.create_user(&alice(), &password("a")).await.unwrap();
    store.create_user(&bob(), &password("b")).await.unwrap();

    let takeover = person(1, "bob", &["admin"], "saml-corp");
    assert!(is_conflict(store.update_user(&takeover).await));
    assert_eq!(store.user(user_id(1)).await.unwrap(), Some(alice()));
    assert_eq!(store.user_by_name("bob").await.unwrap(), Some(bob()));
    assert_eq!(store.user_by_name("alice").await.unwrap(), Some(alice()));
}

// ---------------------------------------------------------------------------
// Durability (only for backends that have it)

#[allow(dead_code)] // instantiated only for durable backends
async fn data_survives_reopening<B: Backend>(backend: &B) {
    let token = TokenRecord {
        expires_at: Some(datetime!(2026-06-02 05:06:07.123_456_789 UTC)),
        ..record(1, user_id(1), ISSUED)
    };
    let expected_token = TokenRecord {
        revoked_at: Some(LATEST),
        last_used_at: Some(LATER),
        ..token.clone()
    };

    let store = backend.open().await;
    store.create_user(&alice(), &password("a")).await.unwrap();
    store.insert(&token).await.unwrap();
    store.touch(&[(id(1), LATER)]).await.unwrap();
    store.revoke(id(1), LATEST).await.unwrap();
    store.save_policy(&Policy::None).await.unwrap();
    store.save_policy(&selected()).await.unwrap();
    B::close(store).await;

    let store = backend.open().await;
    assert_eq!(
        store.get(id(1)).await.unwrap(),
        Some(expected_token.clone())
    );
    assert_eq!(
        store.find_by_hash(&hash(1)).await.unwrap(),
        Some(expected_token.clone())
    );
    assert_eq!(
        store.list(Some(user_id(1))).await.unwrap(),
        [expected_token]
    );
    assert_eq!(store.user_by_name("alice").await.unwrap(), Some(alice()));
    let verify = store.verify_password("alice", &password("a")).await;
    assert_eq!(verify.unwrap(), Some(alice()));
    let policy = VersionedPolicy {
        policy: selected(),
        version: 2,
    };
    assert_eq!(store.load_policy().await.unwrap(), Some(policy));
    // Versions continue where they stopped, and uniqueness is still enforced.
    assert_eq!(store.save_policy(&Policy::None).await.unwrap().version, 3);
    assert!(is_conflict(store.insert(&token).await));
    B::close(store).await;
}
