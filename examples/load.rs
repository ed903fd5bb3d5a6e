//! A loopback load run: the same hyper server bare, behind tower-http's static
//! bearer check, and behind this crate's layer on hot tokens, driven by an
//! in-process HTTP/1.1 load generator, interleaved over rounds, each round starting with the next variant
//! (A B C, B C A, C A B, …).
//!
//! `cargo run --release --all-features --example load -- [--rounds 5] [--secs 3] [--connections 64]`
//!
//! Prints requests/s and p50/p99 latency per variant and round, then medians
//! over the rounds and the ratios against the bare server and tower-http.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_api_tokens::ApiTokens;
use tower_api_tokens::store::{Directory, MemoryStore, User, UserId};

/// How many distinct hot tokens the clients rotate through.
const HOT_TOKENS: usize = 64;

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
}

/// Serves `svc` on an ephemeral port until the process ends.
async fn serve<S>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Outcome {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// `connections` keep-alive clients, each sending requests back to back for
/// `secs`, cycling through `auth` values.
async fn drive(
    addr: SocketAddr,
    auth: Arc<Vec<HeaderValue>>,
    connections: usize,
    secs: u64,
) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let auth = Arc::clone(&auth);
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut i = c;
            while Instant::now() < deadline {
                let req = Request::get("/")
                    .header("host", "127.0.0.1")
                    .header("authorization", auth[i % auth.len()].clone())
                    .body(Full::<Bytes>::default())
                    .expect("request");
                i += 1;
                let start = Instant::now();
                let res = sender.send_request(req).await.expect("response");
                assert_eq!(res.status(), 200);
                let _ = res.into_body().collect().await;
                latencies.push(start.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all.sort();
    let pick = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
    Outcome {
        rps: all.len() as f64 / secs as f64,
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[tokio::main]
async fn main() {
    let (rounds, secs, connections) = (
        arg("--rounds", 5),
        arg("--secs", 3),
        arg("--connections", 64) as usize,
    );

    let store = MemoryStore::new();
    let user = User {
        id: UserId::new(),
        username: "load".into(),
        roles: vec!["dev".into()],
        identity_provider: "local".into(),
    };
    store.create_user(&user, &"pw".into()).await.expect("user");
    let tokens = ApiTokens::builder()
        .backend(store.clone())
        .build()
        .await
        .expect("tokens");
    let mut ours = Vec::new();
    for _ in 0..HOT_TOKENS {
        let t = tokens.issue(user.id).await.expect("issue");
        ours.push(HeaderValue::try_from(format!("Bearer {}", t.token.expose())).expect("header"));
    }
    let static_token = "a-static-token-of-the-same-length-as-ours-0123456789";
    let statics = vec![HeaderValue::try_from(format!("Bearer {static_token}")).expect("header")];

    let bare = serve(tower::service_fn(hello)).await;
    #[allow(deprecated)]
    let tower_http = serve(
        ServiceBuilder::new()
            .layer(tower_http::validate_request::ValidateRequestHeaderLayer::bearer(static_token))
            .service_fn(hello),
    )
    .await;
    let layer = serve(
        ServiceBuilder::new()
            .layer(tokens.layer())
            .service_fn(hello),
    )
    .await;

    // The same tokens through a second layer that sends no expiry header.
    let quiet_tokens = ApiTokens::builder()
        .backend(store)
        .expiry_header(None)
        .build()
        .await
        .expect("tokens");
    let quiet = serve(
        ServiceBuilder::new()
            .layer(quiet_tokens.layer())
            .service_fn(hello),
    )
    .await;

    let ours = Arc::new(ours);
    let variants = [
        ("bare", bare, Arc::new(statics.clone())),
        ("tower-http static bearer", tower_http, Arc::new(statics)),
        ("tower-api-tokens (hot tokens)", layer, Arc::clone(&ours)),
        ("  the same, no expiry header", quiet, ours),
    ];
    // Warm up: fills our cache and every connection path.
    for (_, addr, auth) in &variants {
        drive(*addr, Arc::clone(auth), connections, 1).await;
    }
    let mut rps = vec![Vec::new(); variants.len()];
    let mut p50 = vec![Vec::new(); variants.len()];
    let mut p99 = vec![Vec::new(); variants.len()];
    for round in 1..=rounds {
        // Each round starts with the next variant (A B C, B C A, C A B, …), so a
        // drift within a round does not always favour the same one.
        let n = variants.len();
        for i in (0..n).map(|k| (k + round as usize - 1) % n) {
            let (name, addr, auth) = &variants[i];
            let o = drive(*addr, Arc::clone(auth), connections, secs).await;
            println!(
                "round {round} {name:<30} {:>9.0} req/s  p50 {:>8.1?}  p99 {:>8.1?}",
                o.rps, o.p50, o.p99
            );
            rps[i].push(o.rps);
            p50[i].push(o.p50.as_secs_f64() * 1e6);
            p99[i].push(o.p99.as_secs_f64() * 1e6);
        }
    }
    println!("\nmedians over {rounds} rounds of {secs} s, {connections} connections:");
    let med: Vec<f64> = rps.iter().map(|r| median(r.clone())).collect();
    for (i, (name, _, _)) in variants.iter().enumerate() {
        let (lo, hi) = rps[i]
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        println!(
            "  {name:<30} {:>9.0} req/s (min {lo:.0}, max {hi:.0})  p50 {:>7.1} µs  p99 {:>7.1} µs",
            med[i],
            median(p50[i].clone()),
            median(p99[i].clone())
        );
    }
    // Ratios of the medians, and the median of each round's own ratio (robust
    // to a machine whose speed drifts between rounds).
    let per_round =
        |a: usize, b: usize| median(rps[a].iter().zip(&rps[b]).map(|(x, y)| x / y).collect());
    for (ours, label) in [(2, "ours"), (3, "ours without the expiry header")] {
        println!(
            "  {label}: ÷ bare {:.3} (per round {:.3}), ÷ tower-http {:.3} (per round {:.3}); goals ≥ 0.97",
            med[ours] / med[0],
            per_round(ours, 0),
            med[ours] / med[1],
            per_round(ours, 1),
        );
    }
}
