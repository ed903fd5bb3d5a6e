//! A load run with a correctness oracle: a real hyper server with the layer,
//! 64 concurrent keep-alive clients sending a mix of valid, expired, revoked,
//! policy-refused, wrong-checksum, unknown and malformed tokens, while between
//! batches tokens are revoked and the policy flips between `all_users`,
//! `selected` and `none`. Every response is checked against the decision the
//! state of its batch dictates; wrong decisions and unplanned 5xx are counted.
//!
//! `cargo run --release --all-features --example oracle -- [--batches 40] [--per-batch 5000]`

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use time::macros::datetime;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_api_tokens::ApiTokens;
use tower_api_tokens::clock::ManualClock;
use tower_api_tokens::policy::{Lifetime, Policy, Rule};
use tower_api_tokens::store::{Directory, MemoryStore, TokenId, User, UserId};

const CONNECTIONS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    AllUsers,
    DevOnly,
    Nobody,
}

#[derive(Clone)]
struct Tok {
    header: String,
    id: Option<TokenId>,
    dev: bool,
    expired: bool,
}

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn user(name: &str, role: &str) -> User {
    User {
        id: UserId::new(),
        username: name.into(),
        roles: vec![role.into()],
        identity_provider: "local".into(),
    }
}

#[tokio::main]
async fn main() {
    let (batches, per_batch) = (arg("--batches", 40), arg("--per-batch", 5000));
    let store = MemoryStore::new();
    let dev = user("dev", "dev");
    let ops = user("ops", "ops");
    for u in [&dev, &ops] {
        store.create_user(u, &"pw".into()).await.expect("user");
    }
    let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
    let tokens = ApiTokens::builder()
        .backend(store)
        .clock(clock.clone())
        .build()
        .await
        .expect("tokens");

    // Expired: issued under a 1 h lifetime, then the clock moves 2 h on.
    let one_hour = Policy::AllUsers {
        lifetime: "1h".parse().expect("lifetime"),
    };
    tokens.set_policy(one_hour).await.expect("policy");
    let mut pool: Vec<Tok> = Vec::new();
    for (u, is_dev) in [(&dev, true), (&ops, false)] {
        for _ in 0..20 {
            let t = tokens.issue(u.id).await.expect("issue");
            pool.push(Tok {
                header: format!("Bearer {}", t.token.expose()),
                id: Some(t.record.id),
                dev: is_dev,
                expired: true,
            });
        }
    }
    clock.advance(Duration::from_secs(2 * 3600));
    tokens
        .set_policy(Policy::AllUsers {
            lifetime: Lifetime::days(90),
        })
        .await
        .expect("policy");
    // Valid tokens of both users.
    for (u, is_dev) in [(&dev, true), (&ops, false)] {
        for _ in 0..200 {
            let t = tokens.issue(u.id).await.expect("issue");
            pool.push(Tok {
                header: format!("Bearer {}", t.token.expose()),
                id: Some(t.record.id),
                dev: is_dev,
                expired: false,
            });
        }
    }
    let valid_ids: Vec<TokenId> = pool
        .iter()
        .filter(|t| !t.expired)
        .filter_map(|t| t.id)
        .collect();
    // Wrong checksum (a valid token with its last character changed), unknown, malformed.
    let mut junk: Vec<(String, StatusCode)> = Vec::new();
    for t in pool.iter().take(50) {
        let mut h = t.header.clone();
        let last = h.pop().unwrap_or('0');
        h.push(if last == 'A' { 'B' } else { 'A' });
        junk.push((h, StatusCode::UNAUTHORIZED));
    }
    for _ in 0..50 {
        let t = tokens.format().generate().expect("random");
        junk.push((format!("Bearer {}", t.expose()), StatusCode::UNAUTHORIZED));
    }
    for h in ["Bearer", "Bearer a b", "Bearer \"x\"", ""] {
        junk.push((h.to_owned(), StatusCode::BAD_REQUEST));
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = ServiceBuilder::new()
        .layer(tokens.layer())
        .service_fn(hello);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let mut revoked: Vec<TokenId> = Vec::new();
    let (total, wrong, fivexx) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let started = Instant::now();
    for batch in 0..batches {
        // Change the state between batches: revoke two more, flip the policy.
        for id in valid_ids.iter().skip(revoked.len()).take(2) {
            tokens.revoke(*id).await.expect("revoke");
            revoked.push(*id);
        }
        let mode = [Mode::AllUsers, Mode::DevOnly, Mode::Nobody][batch % 3];
        let policy = match mode {
            Mode::AllUsers => Policy::AllUsers {
                lifetime: Lifetime::days(90),
            },
            Mode::DevOnly => Policy::Selected {
                rules: vec![Rule::role("dev", Lifetime::days(90))],
            },
            Mode::Nobody => Policy::None,
        };
        tokens.set_policy(policy).await.expect("policy");

        // The oracle for this batch.
        let mut cases: Vec<(String, StatusCode)> = pool
            .iter()
            .map(|t| {
                let refused = t.expired
                    || t.id.is_some_and(|id| revoked.contains(&id))
                    || mode == Mode::Nobody
                    || (mode == Mode::DevOnly && !t.dev);
                let want = if refused {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::OK
                };
                (t.header.clone(), want)
            })
            .collect();
        cases.extend(junk.iter().cloned());
        let cases = Arc::new(cases);

        let mut tasks = Vec::new();
        for c in 0..CONNECTIONS {
            let (cases, total, wrong, fivexx) = (
                Arc::clone(&cases),
                Arc::clone(&total),
                Arc::clone(&wrong),
                Arc::clone(&fivexx),
            );
            let n = per_batch / CONNECTIONS;
            tasks.push(tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("connect");
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(conn);
                for k in 0..n {
                    let (header, want) = &cases[(c * 7919 + k * 31) % cases.len()];
                    let mut req = Request::get("/").header("host", "127.0.0.1");
                    if !header.is_empty() {
                        req = req.header("authorization", header.as_str());
                    }
                    let res = sender
                        .send_request(req.body(Full::<Bytes>::default()).expect("req"))
                        .await
                        .expect("response");
                    let got = res.status();
                    let _ = res.into_body().collect().await;
                    total.fetch_add(1, Ordering::Relaxed);
                    if got.is_server_error() {
                        fivexx.fetch_add(1, Ordering::Relaxed);
                    }
                    // An empty Authorization value was never sent: no header is 401.
                    let want = if header.is_empty() {
                        StatusCode::UNAUTHORIZED
                    } else {
                        *want
                    };
                    if got != want {
                        wrong.fetch_add(1, Ordering::Relaxed);
                        eprintln!("batch {batch} {mode:?}: wanted {want}, got {got}");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("client");
        }
    }
    let elapsed = started.elapsed();
    let total = total.load(Ordering::Relaxed);
    println!(
        "oracle: {total} requests in {elapsed:.1?} ({:.0} req/s) over {batches} batches, {CONNECTIONS} connections; wrong decisions {}, unplanned 5xx {}",
        total as f64 / elapsed.as_secs_f64(),
        wrong.load(Ordering::Relaxed),
        fivexx.load(Ordering::Relaxed)
    );
    if wrong.load(Ordering::Relaxed) > 0 || fivexx.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}
