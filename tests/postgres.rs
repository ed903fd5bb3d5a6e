//! Several instances on one PostgreSQL: changes made on one reach the others
//! within 100 ms, a revocation made while an instance was deaf is honoured after
//! it resynchronises, and an outage gives `503`, never `401`, and heals by
//! itself. Also what the conformance suite cannot see: the notices themselves
//! and the on-disk encoding.
//!
//! Each test works in a schema of its own (see `support/postgres.rs`), on
//! `TEST_DATABASE_URL` (default `postgres://root@127.0.0.1:5432/test`).
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod pg;
mod support;

use std::time::Duration;

use http::StatusCode;
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Row, SqlSafeStr};
use time::macros::datetime;
use tokio::time::{Instant, timeout};
use tower_api_tokens::clock::ManualClock;
use tower_api_tokens::password::Password;
use tower_api_tokens::policy::{Lifetime, Policy, Rule};
use tower_api_tokens::store::{
    Active, ChangeListener, Directory, Issued, ListenerOptions, PostgresStore, TokenId,
    TokenRecord, TokenStore, User, UserId,
};
use tower_api_tokens::token::TokenHash;
use tower_api_tokens::{ApiTokens, Builder, Generated, ServerKey, StoreError};
use uuid::Uuid;

use pg::{Proxy, TestSchema};
use support::{START, bearer, send, user};

/// The issue's bound on propagation between instances.
const PROPAGATION: Duration = Duration::from_millis(100);

/// Generous bounds for what involves reconnecting.
const RECONNECT: Duration = Duration::from_secs(15);

/// One instance of a service: its own pool, cache, policy snapshot and
/// listener; the same server key as every other instance.
struct Instance {
    tokens: ApiTokens,
    listener: ChangeListener,
}

impl Instance {
    async fn start(
        options: PgConnectOptions,
        clock: &ManualClock,
        configure: impl FnOnce(Builder) -> Builder,
    ) -> Self {
        let store = PostgresStore::connect_with(options).await.unwrap();
        let builder = ApiTokens::builder()
            .backend(store.clone())
            .clock(clock.clone())
            .server_key(ServerKey::new("one key for every instance of the service").unwrap());
        let tokens = configure(builder).build().await.unwrap();
        // Quick to retry, so the reconnection tests take moments.
        let timing = ListenerOptions::default()
            .backoff(Duration::from_millis(20), Duration::from_millis(200))
            .heartbeat(Duration::from_secs(1), Duration::from_secs(2));
        let listener = store.listen_with(tokens.clone(), timing).unwrap();
        timeout(RECONNECT, listener.synced())
            .await
            .expect("the listener syncs");
        Self { tokens, listener }
    }

    async fn status(&self, token: &str) -> StatusCode {
        send(&self.tokens, bearer(token)).await.status
    }
}

/// Two instances on `schema`, and a user `alice` (role `dev`) created on A.
async fn two_instances(schema: &TestSchema) -> (Instance, Instance, User) {
    let clock = ManualClock::new(START);
    let a = Instance::start(schema.options(), &clock, |b| b).await;
    let b = Instance::start(schema.options(), &clock, |b| b).await;
    let alice = user("alice", &["dev"], "local");
    a.tokens
        .create_user(&alice, &Password::new("alice's password"))
        .await
        .unwrap();
    (a, b, alice)
}

/// Asks `b` until it refuses `token` (accepting it until then), and returns
/// how long after `since` that was. Fails past `bound`.
async fn refused_within(b: &Instance, token: &str, since: Instant, bound: Duration) -> Duration {
    loop {
        let status = b.status(token).await;
        let elapsed = since.elapsed();
        if status == StatusCode::UNAUTHORIZED {
            return elapsed;
        }
        assert_eq!(status, StatusCode::OK, "after {elapsed:?}");
        assert!(
            elapsed < bound,
            "still accepted {elapsed:?} after the change"
        );
        tokio::task::yield_now().await;
    }
}

/// Asks `b` until it answers `want`; every other answer must be one of
/// `meanwhile`. Pauses briefly between attempts; fails past `bound`.
async fn until_status(
    b: &Instance,
    token: &str,
    want: StatusCode,
    meanwhile: &[StatusCode],
    bound: Duration,
) {
    let since = Instant::now();
    loop {
        let status = b.status(token).await;
        if status == want {
            return;
        }
        assert!(
            meanwhile.contains(&status),
            "{status} while waiting for {want}"
        );
        assert!(since.elapsed() < bound, "no {want} within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Propagation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_policy_and_role_changes_reach_the_other_instance_within_100ms() {
    let schema = TestSchema::new().await;
    let (a, b, alice) = two_instances(&schema).await;

    // A token revoked on A.
    let issued = a.tokens.issue(alice.id).await.unwrap();
    let token = issued.token.expose();
    assert_eq!(b.status(token).await, StatusCode::OK, "B caches it");
    a.tokens.revoke(issued.record.id).await.unwrap();
    let since = Instant::now();
    assert_eq!(a.status(token).await, StatusCode::UNAUTHORIZED);
    let revoked = refused_within(&b, token, since, PROPAGATION).await;

    // The policy set to `none` on A.
    let issued = a.tokens.issue(alice.id).await.unwrap();
    let token = issued.token.expose();
    assert_eq!(b.status(token).await, StatusCode::OK);
    a.tokens.set_policy(Policy::None).await.unwrap();
    let since = Instant::now();
    let policy = refused_within(&b, token, since, PROPAGATION).await;
    assert_eq!(b.tokens.policy(), a.tokens.policy());

    // A role removed from the user on A, under a policy that needs it.
    let by_role = Policy::Selected {
        rules: vec![Rule::role("dev", Lifetime::days(30))],
    };
    a.tokens.set_policy(by_role).await.unwrap();
    until_status(
        &b,
        token,
        StatusCode::OK,
        &[StatusCode::UNAUTHORIZED],
        PROPAGATION,
    )
    .await;
    let demoted = User {
        roles: vec![],
        ..alice.clone()
    };
    a.tokens.update_user(&demoted).await.unwrap();
    let since = Instant::now();
    let role = refused_within(&b, token, since, PROPAGATION).await;

    println!("propagation A → B: revoke {revoked:?}, policy {policy:?}, role {role:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_propagation_median_and_worst_of_50() {
    // `cargo test --all-features --test postgres -- --nocapture propagation_median`
    // prints the figures recorded in BENCHMARKS.md.
    const TRIALS: usize = 50;
    let schema = TestSchema::new().await;
    let (a, b, alice) = two_instances(&schema).await;
    let mut times = Vec::with_capacity(TRIALS);
    for _ in 0..TRIALS {
        let issued = a.tokens.issue(alice.id).await.unwrap();
        let token = issued.token.expose();
        assert_eq!(b.status(token).await, StatusCode::OK);
        a.tokens.revoke(issued.record.id).await.unwrap();
        // From `revoke()` returning on A to B refusing the token.
        let since = Instant::now();
        times.push(refused_within(&b, token, since, PROPAGATION).await);
    }
    times.sort();
    let median = (times[TRIALS / 2 - 1] + times[TRIALS / 2]) / 2;
    let worst = times[TRIALS - 1];
    println!(
        "revocation propagation over {TRIALS} trials: median {median:?}, worst {worst:?}, best {:?}",
        times[0]
    );
}

// ---------------------------------------------------------------------------
// Generating on several instances at once

/// How many `generate` calls run at once, split between the two instances.
const CONCURRENT_GENERATES: usize = 12;

/// `CONCURRENT_GENERATES` calls of `generate(alice, rotate)`, alternating
/// between `a` and `b`, all started together.
async fn generate_on_both(a: &Instance, b: &Instance, rotate: bool) -> Vec<Generated> {
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..CONCURRENT_GENERATES {
        let tokens = if n % 2 == 0 { &a.tokens } else { &b.tokens }.clone();
        calls.spawn(async move {
            tokens
                .generate("alice", &Password::new("alice's password"), rotate)
                .await
                .unwrap()
        });
    }
    let mut generated = Vec::with_capacity(CONCURRENT_GENERATES);
    while let Some(done) = calls.join_next().await {
        generated.push(done.unwrap());
    }
    generated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_generates_on_two_instances_give_one_token() {
    let schema = TestSchema::new().await;
    let (a, b, alice) = two_instances(&schema).await;

    let generated = generate_on_both(&a, &b, false).await;
    let stored = a.tokens.list(Some(alice.id)).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let only = &stored[0];
    assert_eq!(generated.iter().filter(|g| !g.reused).count(), 1);
    for g in &generated {
        assert_eq!(&g.record, only);
        // The server key lets every instance hand out the same plaintext.
        let token = g.token.as_ref().expect("a server key is configured");
        assert_eq!(
            token.expose(),
            generated[0].token.as_ref().unwrap().expose()
        );
    }
    let token = generated[0].token.as_ref().unwrap().expose();
    assert_eq!(a.status(token).await, StatusCode::OK);
    assert_eq!(b.status(token).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_on_two_instances_leave_one_active_token() {
    let schema = TestSchema::new().await;
    let (a, b, alice) = two_instances(&schema).await;
    let first = a
        .tokens
        .generate("alice", &Password::new("alice's password"), false)
        .await
        .unwrap();
    let first_token = first.token.clone().unwrap();
    // Both instances have it cached: only a revocation can make them refuse it.
    assert_eq!(a.status(first_token.expose()).await, StatusCode::OK);
    assert_eq!(b.status(first_token.expose()).await, StatusCode::OK);

    let generated = generate_on_both(&a, &b, true).await;
    assert!(generated.iter().all(|g| !g.reused));
    let stored = a.tokens.list(Some(alice.id)).await.unwrap();
    assert_eq!(stored.len(), CONCURRENT_GENERATES + 1);
    let active: Vec<&TokenRecord> = stored.iter().filter(|r| r.revoked_at.is_none()).collect();
    assert_eq!(active.len(), 1, "{active:?}");
    let survivor = active[0].id;

    // Every other token, the first included, is refused by both instances
    // (the one that did not revoke it hears so through its listener).
    let mut tokens = vec![(first.record.id, first_token)];
    tokens.extend(
        generated
            .into_iter()
            .map(|g| (g.record.id, g.token.unwrap())),
    );
    for (id, token) in &tokens {
        for instance in [&a, &b] {
            if *id == survivor {
                assert_eq!(instance.status(token.expose()).await, StatusCode::OK);
            } else {
                until_status(
                    instance,
                    token.expose(),
                    StatusCode::UNAUTHORIZED,
                    &[StatusCode::OK],
                    PROPAGATION,
                )
                .await;
            }
        }
    }
    // And the survivor is what either instance hands out from now on.
    let again = b
        .tokens
        .generate("alice", &Password::new("alice's password"), false)
        .await
        .unwrap();
    assert!(again.reused);
    assert_eq!(again.record.id, survivor);
}

// ---------------------------------------------------------------------------
// Lost connections

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_while_the_listener_was_cut_is_honoured_after_the_resync() {
    let schema = TestSchema::new().await;
    let proxy = Proxy::start().await;
    let clock = ManualClock::new(START);
    let a = Instance::start(schema.options(), &clock, |b| b).await;
    // B reaches the server through the proxy, and trusts its cache for an hour:
    // only the resync can make it forget the token.
    let b = Instance::start(schema.options_via(proxy.options()), &clock, |b| {
        b.cache_ttl(Duration::from_secs(3600))
    })
    .await;
    let alice = user("alice", &["dev"], "local");
    a.tokens
        .create_user(&alice, &Password::new("alice's password"))
        .await
        .unwrap();
    let issued = a.tokens.issue(alice.id).await.unwrap();
    let token = issued.token.expose();
    assert_eq!(b.status(token).await, StatusCode::OK);

    // Cut B's listener, and keep it from reconnecting.
    let before = b.listener.status();
    assert!(before.synced);
    assert_eq!(before.syncs, 1);
    proxy.close_port().await;
    pg::terminate_backend(before.backend_pid.unwrap()).await;
    let mut status = b.listener.subscribe();
    timeout(RECONNECT, status.wait_for(|s| !s.synced))
        .await
        .unwrap()
        .unwrap();

    // Changes made in the gap: their notices reach nobody on B's side.
    a.tokens.revoke(issued.record.id).await.unwrap();
    let week = Policy::AllUsers {
        lifetime: Lifetime::days(7),
    };
    a.tokens.set_policy(week).await.unwrap();
    // B's cache is stale now, as `cache_ttl` allows; nothing else can tell it.
    assert_eq!(b.status(token).await, StatusCode::OK);

    // Back: B reconnects by itself, resynchronises, and only then says so.
    proxy.open_port().await;
    let after = timeout(RECONNECT, b.listener.synced()).await.unwrap();
    assert_eq!(after.syncs, 2);
    assert_ne!(after.backend_pid, before.backend_pid);
    assert_eq!(b.status(token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(b.tokens.policy(), a.tokens.policy());

    // And notices flow again.
    let issued = a.tokens.issue(alice.id).await.unwrap();
    let token = issued.token.expose();
    assert_eq!(b.status(token).await, StatusCode::OK);
    a.tokens.revoke(issued.record.id).await.unwrap();
    refused_within(&b, token, Instant::now(), PROPAGATION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_gives_503_never_401_and_heals_by_itself() {
    let schema = TestSchema::new().await;
    let proxy = Proxy::start().await;
    let clock = ManualClock::new(START);
    let a = Instance::start(schema.options(), &clock, |b| b).await;
    let b = Instance::start(schema.options_via(proxy.options()), &clock, |b| {
        b.cache_ttl(Duration::from_millis(1500))
    })
    .await;
    let alice = user("alice", &["dev"], "local");
    a.tokens
        .create_user(&alice, &Password::new("alice's password"))
        .await
        .unwrap();
    let first = a.tokens.issue(alice.id).await.unwrap();
    let cached = first.token.expose();
    let second = a.tokens.issue(alice.id).await.unwrap();
    let uncached = second.token.expose();
    assert_eq!(b.status(cached).await, StatusCode::OK);

    // The server becomes unreachable for B: its port is closed and every
    // connection (pool and listener) is cut.
    proxy.close_port().await;
    proxy.cut_connections().await;

    // A cached token keeps working.
    assert_eq!(b.status(cached).await, StatusCode::OK);
    // A miss is 503 with Retry-After, and fast: the pool gives up after 1 s,
    // within the layer's 2 s lookup timeout.
    let started = Instant::now();
    let answer = send(&b.tokens, bearer(uncached)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // When its entry lapses, the cached token is 503 too, never 401.
    let unavailable = [StatusCode::SERVICE_UNAVAILABLE];
    until_status(&b, cached, unavailable[0], &[StatusCode::OK], RECONNECT).await;
    let mut status = b.listener.subscribe();
    timeout(RECONNECT, status.wait_for(|s| !s.synced))
        .await
        .unwrap()
        .unwrap();

    // The server is back: B recovers by itself.
    proxy.open_port().await;
    until_status(&b, cached, StatusCode::OK, &unavailable, RECONNECT).await;
    until_status(&b, uncached, StatusCode::OK, &unavailable, RECONNECT).await;
    let synced = timeout(RECONNECT, b.listener.synced()).await.unwrap();
    assert!(synced.syncs >= 2, "{synced:?}");
    // Notices reach it again (the resync emptied its cache: fill it first).
    assert_eq!(b.status(cached).await, StatusCode::OK);
    a.tokens.revoke(first.record.id).await.unwrap();
    refused_within(&b, cached, Instant::now(), PROPAGATION).await;
}

// ---------------------------------------------------------------------------
// The notices

/// The notices on `store`'s channel up to a marker sent after everything else.
async fn notices_until_marker(ear: &mut PgListener, store: &PostgresStore) -> Vec<String> {
    sqlx::query("SELECT pg_notify($1, 'marker')")
        .bind(store.channel())
        .execute(store.pool())
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let notice = timeout(RECONNECT, ear.recv()).await.unwrap().unwrap();
        if notice.payload() == "marker" {
            return seen;
        }
        seen.push(notice.payload().to_owned());
    }
}

fn record(n: u8, owner: UserId) -> TokenRecord {
    TokenRecord {
        id: TokenId(Uuid::from_u128(u128::from(n))),
        user_id: owner,
        hash: TokenHash::from_bytes([n; 32]),
        hint: format!("nch_…{n:04}"),
        issued_at: datetime!(2026-03-04 05:06:07.123_456_789 UTC),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_publish_their_notice_only_when_they_commit() {
    let schema = TestSchema::new().await;
    let store = PostgresStore::connect_with(schema.options()).await.unwrap();
    assert_eq!(store.schema(), schema.name());
    assert_eq!(store.channel(), format!("api_tokens@{}", schema.name()));
    let mut ear = PgListener::connect_with(store.pool()).await.unwrap();
    ear.listen(store.channel()).await.unwrap();

    let alice = user("alice", &["dev"], "local");
    let bob = user("bob", &[], "local");
    store.create_user(&alice, &"pw-a".into()).await.unwrap();
    store.create_user(&bob, &"pw-b".into()).await.unwrap();
    let token = record(1, alice.id);
    store.insert(&token).await.unwrap();
    store
        .touch(&[(token.id, datetime!(2026-03-05 00:00 UTC))])
        .await
        .unwrap();
    // Writes that change nothing, or fail, publish nothing.
    assert_eq!(store.revoke(TokenId::new(), START).await.unwrap(), None);
    let ghost = user("ghost", &[], "local");
    assert!(matches!(
        store.update_user(&ghost).await,
        Err(StoreError::NotFound)
    ));
    let takeover = User {
        username: "bob".into(),
        ..alice.clone()
    };
    assert!(matches!(
        store.update_user(&takeover).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        notices_until_marker(&mut ear, &store).await,
        Vec::<String>::new()
    );

    store.revoke(token.id, START).await.unwrap();
    store.save_policy(&Policy::None).await.unwrap();
    store.save_policy(&Policy::default()).await.unwrap();
    let renamed = User {
        username: "alice.b".into(),
        ..alice.clone()
    };
    store.update_user(&renamed).await.unwrap();
    assert_eq!(
        notices_until_marker(&mut ear, &store).await,
        [
            format!("token:{}", "01".repeat(32)),
            "policy:1".to_owned(),
            "policy:2".to_owned(),
            format!("user:{}", alice.id),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_publishes_a_notice_for_each_token_it_revokes() {
    let schema = TestSchema::new().await;
    let store = PostgresStore::connect_with(schema.options()).await.unwrap();
    let mut ear = PgListener::connect_with(store.pool()).await.unwrap();
    ear.listen(store.channel()).await.unwrap();
    let alice = UserId::new();
    for n in [1, 2] {
        store.insert(&record(n, alice)).await.unwrap();
    }
    let active = Active {
        now: datetime!(2026-03-05 00:00 UTC),
        issued_after: None,
    };

    // Reusing, and a rotation that fails (its hash is taken), publish nothing.
    let reused = store.issue(&record(9, alice), active, false).await.unwrap();
    assert!(matches!(reused, Issued::Existing(_)), "{reused:?}");
    let clash = TokenRecord {
        hash: TokenHash::from_bytes([1; 32]),
        ..record(9, alice)
    };
    assert!(matches!(
        store.issue(&clash, active, true).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        notices_until_marker(&mut ear, &store).await,
        Vec::<String>::new()
    );

    let rotated = store.issue(&record(9, alice), active, true).await.unwrap();
    let Issued::Inserted { revoked } = rotated else {
        panic!("a rotation reused a token");
    };
    assert_eq!(revoked.len(), 2);
    let mut notices = notices_until_marker(&mut ear, &store).await;
    notices.sort();
    assert_eq!(
        notices,
        [
            format!("token:{}", "01".repeat(32)),
            format!("token:{}", "02".repeat(32)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_in_different_schemas_use_different_channels() {
    let (one, two) = (TestSchema::new().await, TestSchema::new().await);
    let one = PostgresStore::connect_with(one.options()).await.unwrap();
    let two = PostgresStore::connect_with(two.options()).await.unwrap();
    assert_ne!(one.channel(), two.channel());
    assert!(one.channel().len() <= 63);
}

// ---------------------------------------------------------------------------
// Encoding

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_hold_the_documented_encoding() {
    let schema = TestSchema::new().await;
    let store = PostgresStore::connect_with(schema.options()).await.unwrap();
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
    assert_eq!(
        row.get::<String, _>("id"),
        "01234567-89ab-cdef-0123-456789abcdef"
    );
    assert_eq!(
        row.get::<String, _>("user_id"),
        "fedcba98-7654-3210-fedc-ba9876543210"
    );
    // SHA-256("abc"), FIPS 180-2 appendix B.1.
    assert_eq!(
        row.get::<String, _>("hash"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(row.get::<i64, _>("issued_at"), 1_772_600_767_123_456_789);
    assert_eq!(row.get::<Option<i64>, _>("expires_at"), None);

    let alice = User {
        id: UserId(Uuid::from_u128(1)),
        username: "alice".into(),
        roles: vec!["ops".into(), "dev".into()],
        identity_provider: "local".into(),
    };
    store
        .create_user(&alice, &Password::new("hunter2-hunter2"))
        .await
        .unwrap();
    let row = sqlx::query("SELECT roles, password_hash FROM api_token_users")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("roles"), r#"["ops","dev"]"#);
    let phc: String = row.get("password_hash");
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(!phc.contains("hunter2"));

    store.save_policy(&Policy::None).await.unwrap();
    let policy: String = sqlx::query_scalar("SELECT policy FROM api_token_policy")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(policy, r#"{"mode":"none"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_beyond_2262_are_refused_not_rounded() {
    let schema = TestSchema::new().await;
    let store = PostgresStore::connect_with(schema.options()).await.unwrap();
    let far = TokenRecord {
        expires_at: Some(datetime!(2262-04-12 00:00 UTC)),
        ..record(1, UserId::new())
    };
    assert!(matches!(
        store.insert(&far).await,
        Err(StoreError::Backend(_))
    ));
    assert_eq!(store.get(far.id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_a_schema_with_the_applications_own_migrations() {
    use sqlx::migrate::{Migration, MigrationType, Migrator};

    let schema = TestSchema::new().await;
    let pool = sqlx::PgPool::connect_with(schema.options()).await.unwrap();
    let app = Migrator::with_migrations(vec![Migration::new(
        1,
        "app".into(),
        MigrationType::Simple,
        sqlx::AssertSqlSafe("CREATE TABLE app_things (id INTEGER)").into_sql_str(),
        false,
    )]);
    app.run(&pool).await.unwrap();

    let store = PostgresStore::from_pool(pool.clone()).await.unwrap();
    // Both sides still see only their own history.
    app.run(&pool).await.unwrap();
    PostgresStore::from_pool(pool.clone()).await.unwrap();
    assert_eq!(store.load_policy().await.unwrap(), None);
    pool.close().await;
}

/// Makes every write to `table` fail at COMMIT, not at the statement: a deferred
/// constraint that the write's trigger violates (what a failed commit looks
/// like to a statement whose rows were already returned).
async fn fail_commits_on(store: &PostgresStore, table: &str) {
    for sql in [
        "CREATE TABLE commit_guard_parent (id TEXT PRIMARY KEY)".to_owned(),
        "CREATE TABLE commit_guard_child (parent TEXT REFERENCES commit_guard_parent (id) \
         DEFERRABLE INITIALLY DEFERRED)"
            .to_owned(),
        "CREATE FUNCTION commit_guard_fire() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN INSERT INTO commit_guard_child VALUES ('missing'); RETURN NULL; END $$"
            .to_owned(),
        format!(
            "CREATE TRIGGER commit_guard AFTER INSERT OR UPDATE ON {table} \
             FOR EACH ROW EXECUTE FUNCTION commit_guard_fire()"
        ),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn writes_that_fail_at_commit_are_errors_and_leave_nothing_behind() {
    let schema = TestSchema::new().await;
    let store = PostgresStore::connect_with(schema.options()).await.unwrap();
    let record = TokenRecord {
        id: TokenId::new(),
        user_id: UserId::new(),
        hash: TokenHash::of("commit-guard"),
        hint: "nch_…abcd".into(),
        issued_at: datetime!(2026-01-01 00:00 UTC),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    store.insert(&record).await.unwrap();
    store.save_policy(&Policy::None).await.unwrap();
    fail_commits_on(&store, "api_tokens").await;
    fail_commits_on_policy(&store).await;

    let revoked = store
        .revoke(record.id, datetime!(2026-01-02 00:00 UTC))
        .await;
    assert!(
        revoked.is_err(),
        "revoke reported {revoked:?} although nothing was committed"
    );
    assert_eq!(
        store.get(record.id).await.unwrap().unwrap().revoked_at,
        None
    );
    assert!(store.save_policy(&Policy::default()).await.is_err());
    let kept = store.load_policy().await.unwrap().unwrap();
    assert_eq!((kept.policy, kept.version), (Policy::None, 1));

    // A rotation is one transaction: neither its revocation nor its insert stays.
    let next = TokenRecord {
        id: TokenId::new(),
        hash: TokenHash::of("commit-guard-next"),
        issued_at: datetime!(2026-01-02 00:00 UTC),
        ..record.clone()
    };
    let active = Active {
        now: next.issued_at,
        issued_after: None,
    };
    let rotated = store.issue(&next, active, true).await;
    assert!(rotated.is_err(), "issue reported {rotated:?}");
    assert_eq!(store.list(None).await.unwrap(), [record]);
}

/// The same guard on the policy table (the helper tables exist already).
async fn fail_commits_on_policy(store: &PostgresStore) {
    sqlx::raw_sql(
        "CREATE TRIGGER commit_guard AFTER INSERT OR UPDATE ON api_token_policy \
         FOR EACH ROW EXECUTE FUNCTION commit_guard_fire()",
    )
    .execute(store.pool())
    .await
    .unwrap();
}
