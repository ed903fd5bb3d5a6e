//! Cache misses: 1000 concurrent first requests for one token over a backend
//! with 1 ms latency (backend calls, wall time against that latency measured in
//! the same run), and the miss latency of the SQLite and PostgreSQL stores (p50,
//! p99). PostgreSQL is the one at `TEST_DATABASE_URL` (default
//! `postgres://root@127.0.0.1:5432/test`), in a schema of the bench's own that
//! is dropped afterwards.
//!
//! `cargo bench --all-features --bench miss`. A plain harness: criterion has no
//! notion of "how many backend calls" or percentiles. Each coalesced round is
//! paired with the same 1000 requests on an already cached token (all hits):
//! the harness's own floor. `MISS_COALESCED_ONLY=1` skips the store latencies.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::SlowStore;
use tower::{ServiceBuilder, ServiceExt};
use tower_api_tokens::ApiTokens;
use tower_api_tokens::store::{Directory, PostgresStore, SqliteStore, TokenStore};

const LATENCY: Duration = Duration::from_millis(1);
const CONCURRENT: usize = 1000;
const ROUNDS: usize = 21;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn percentile(xs: &mut [Duration], p: f64) -> Duration {
    xs.sort();
    xs[((xs.len() as f64 - 1.0) * p).round() as usize]
}

/// One round's figures: backend calls, and times from the first spawn.
struct Round {
    calls: usize,
    /// Until the last of the 1000 tasks was spawned.
    spawned: Duration,
    /// Until the first request was answered (about when the load ended).
    first: Duration,
    /// Until the last request was answered.
    last: Duration,
    /// Until the last task was joined.
    wall: Duration,
}

/// 1000 spawned requests for one token. With `warm`, the token is cached first
/// (every request a hit): the floor of this harness (spawn, hit path, join).
async fn coalesced_round(warm: bool) -> Round {
    let store = SlowStore {
        latency: LATENCY,
        ..SlowStore::default()
    };
    let u = support::bench_user(&store).await;
    let tokens = ApiTokens::builder()
        .backend(store.clone())
        .build()
        .await
        .unwrap();
    let auth = http::HeaderValue::try_from(format!(
        "Bearer {}",
        tokens.issue(u.id).await.unwrap().token.expose()
    ))
    .unwrap();
    let svc = ServiceBuilder::new().layer(tokens.layer()).service_fn(
        |_r: http::Request<http_body_util::Full<bytes::Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<
                bytes::Bytes,
            >::default()))
        },
    );
    if warm {
        let res = svc.clone().oneshot(support::request(&auth)).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENT {
        let (svc, auth) = (svc.clone(), auth.clone());
        set.spawn(async move {
            let status = svc.oneshot(support::request(&auth)).await.unwrap().status();
            (status, Instant::now())
        });
    }
    let spawned = start.elapsed();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    while let Some(done) = set.join_next().await {
        let (status, at) = done.unwrap();
        assert_eq!(status, 200);
        first = Some(first.map_or(at, |f| f.min(at)));
        last = Some(last.map_or(at, |l| l.max(at)));
    }
    let wall = start.elapsed();
    let since = |at: Option<Instant>| at.map_or(Duration::ZERO, |at| at - start);
    Round {
        calls: store.lookups.load(Ordering::SeqCst),
        spawned,
        first: since(first),
        last: since(last),
        wall,
    }
}

async fn sleep_baseline() -> Duration {
    let start = Instant::now();
    tokio::time::sleep(LATENCY).await;
    start.elapsed()
}

async fn sqlite_misses(n: usize) -> Vec<Duration> {
    let dir = std::env::temp_dir().join(format!("api-tokens-miss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::connect(&format!("sqlite://{}", dir.join("db").display()))
        .await
        .unwrap();
    let times = misses(store, n).await;
    let _ = std::fs::remove_dir_all(&dir);
    times
}

async fn postgres_misses(n: usize) -> Vec<Duration> {
    use sqlx::postgres::PgConnectOptions;
    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let schema = format!("api_tokens_bench_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    // The name is ours (a fixed prefix and a number), not input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let options: PgConnectOptions = url.parse().unwrap();
    let store = PostgresStore::connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let times = misses(store.clone(), n).await;
    store.pool().close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
    times
}

/// Miss latency through the layer: `n` tokens issued, then each sent once, one
/// after another (every request is a cache miss: a token lookup and a user
/// lookup in the store).
async fn misses<B: TokenStore + Directory + Clone>(store: B, n: usize) -> Vec<Duration> {
    let u = support::bench_user(&store).await;
    let tokens = ApiTokens::builder().backend(store).build().await.unwrap();
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let t = tokens.issue(u.id).await.unwrap();
        headers.push(http::HeaderValue::try_from(format!("Bearer {}", t.token.expose())).unwrap());
    }
    let svc = ServiceBuilder::new().layer(tokens.layer()).service_fn(
        |_r: http::Request<http_body_util::Full<bytes::Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<
                bytes::Bytes,
            >::default()))
        },
    );
    let mut times = Vec::with_capacity(n);
    for auth in &headers {
        let start = Instant::now();
        let res = svc.clone().oneshot(support::request(auth)).await.unwrap();
        times.push(start.elapsed());
        assert_eq!(res.status(), 200);
    }
    tokens.flush().await;
    times
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sleeps = Vec::new();
        let (mut misses, mut hits) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            sleeps.push(sleep_baseline().await);
            misses.push(coalesced_round(false).await);
            hits.push(coalesced_round(true).await);
        }
        let sleep = median(sleeps);
        let calls: std::collections::BTreeSet<_> = misses.iter().map(|r| r.calls).collect();
        println!(
            "miss/coalesced: {CONCURRENT} concurrent first requests, backend latency {LATENCY:?}, {ROUNDS} rounds"
        );
        println!("  backend calls per round: {calls:?}");
        let walls: Vec<_> = misses.iter().map(|r| r.wall).collect();
        let (min, max) = (walls.iter().min().unwrap(), walls.iter().max().unwrap());
        let wall = median(walls.clone());
        println!(
            "  wall time median {wall:?} (min {min:?}, max {max:?}); measured 1 ms sleep median {sleep:?}; wall - sleep = {:?} (goal ≤ 2 ms)",
            wall.saturating_sub(sleep)
        );
        for (name, rounds) in [("miss", &misses), ("all hits", &hits)] {
            let phase = |f: fn(&Round) -> Duration| median(rounds.iter().map(f).collect());
            println!(
                "  {name:>8} medians: spawned {:?}, first answer {:?}, last answer {:?}, joined {:?}",
                phase(|r| r.spawned),
                phase(|r| r.first),
                phase(|r| r.last),
                phase(|r| r.wall),
            );
        }
        let hit_walls: Vec<_> = hits.iter().map(|r| r.wall).collect();
        let (min, max) = (*hit_walls.iter().min().unwrap(), *hit_walls.iter().max().unwrap());
        let floor = median(hit_walls);
        println!(
            "  harness floor (same 1000 spawned requests, token already cached): wall median {floor:?} (min {min:?}, max {max:?}); miss wall - floor = {:?}",
            wall.saturating_sub(floor)
        );
        if std::env::var_os("MISS_COALESCED_ONLY").is_some_and(|v| v == "1") {
            return;
        }

        let mut times = sqlite_misses(2000).await;
        let (p50, p99) = (percentile(&mut times, 0.50), percentile(&mut times, 0.99));
        println!("miss/sqlite: 2000 uncached tokens, one at a time: p50 {p50:?}, p99 {p99:?}");

        let mut times = postgres_misses(2000).await;
        let (p50, p99) = (percentile(&mut times, 0.50), percentile(&mut times, 0.99));
        println!("miss/postgres: 2000 uncached tokens, one at a time: p50 {p50:?}, p99 {p99:?}");
    });
}
