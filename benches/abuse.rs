//! Memory under abuse: 1 000 000 distinct well-formed unknown tokens, then
//! 1 000 000 garbage strings, while a hot set of 1000 valid tokens is served
//! every tenth request. Reports resident memory growth (against the configured
//! negative-cache bound) and the hot set's hit ratio (a hit is a request that
//! needed no store lookup).
//!
//! `cargo bench --all-features --bench abuse` (about a minute).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use http::HeaderValue;
use support::SlowStore;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_api_tokens::ApiTokens;

const ABUSE: usize = 1_000_000;
const HOT: usize = 1_000;
const NEGATIVE_CAPACITY: u64 = 100_000;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(0)
        * 4096
}

async fn bare(
    _r: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    Ok(http::Response::new(Default::default()))
}

/// `ABUSE` requests made by `make`, each refused; every tenth is followed by a
/// request with a hot token, which must be served.
async fn phase<S>(
    name: &str,
    svc: &mut S,
    hot: &[HeaderValue],
    lookups: &AtomicUsize,
    make: &mut dyn FnMut(usize) -> HeaderValue,
) where
    S: Service<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            Response = http::Response<http_body_util::Full<bytes::Bytes>>,
        >,
    S::Error: std::fmt::Debug,
{
    let rss_before = rss_bytes();
    let lookups_before = lookups.load(Ordering::SeqCst);
    let (mut hot_requests, mut hot_lookups) = (0usize, 0usize);
    let start = Instant::now();
    for i in 0..ABUSE {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(support::request(&make(i)))
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        if i % 10 == 0 {
            let before = lookups.load(Ordering::SeqCst);
            let res = svc
                .ready()
                .await
                .unwrap()
                .call(support::request(&hot[(i / 10) % HOT]))
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            hot_requests += 1;
            hot_lookups += lookups.load(Ordering::SeqCst) - before;
        }
    }
    let growth = rss_bytes().saturating_sub(rss_before);
    println!(
        "abuse/{name}: {ABUSE} requests in {:.1?}, store lookups {}, resident memory +{:.1} MiB, hot-set hit ratio {:.4} ({} of {} hot requests needed no lookup)",
        start.elapsed(),
        lookups.load(Ordering::SeqCst) - lookups_before - hot_lookups,
        growth as f64 / (1024.0 * 1024.0),
        1.0 - hot_lookups as f64 / hot_requests as f64,
        hot_requests - hot_lookups,
        hot_requests
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SlowStore::default();
        let user = support::bench_user(&store).await;
        let tokens = ApiTokens::builder()
            .backend(store.clone())
            .negative_capacity(NEGATIVE_CAPACITY)
            .build()
            .await
            .unwrap();
        let mut hot = Vec::with_capacity(HOT);
        for _ in 0..HOT {
            let t = tokens.issue(user.id).await.unwrap();
            hot.push(HeaderValue::try_from(format!("Bearer {}", t.token.expose())).unwrap());
        }
        let mut svc = ServiceBuilder::new().layer(tokens.layer()).service_fn(bare);
        for h in &hot {
            let res = svc.ready().await.unwrap().call(support::request(h)).await.unwrap();
            assert_eq!(res.status(), 200);
        }

        let format = tokens.format().clone();
        let mut unknown = |_i: usize| {
            HeaderValue::try_from(format!("Bearer {}", format.generate().unwrap().expose())).unwrap()
        };
        phase("unknown_well_formed", &mut svc, &hot, &store.lookups, &mut unknown).await;
        // Garbage: token68, right length and prefix, wrong checksum.
        let mut garbage = |i: usize| {
            HeaderValue::try_from(format!("Bearer nch_{:043}zzzzzz", i)).unwrap()
        };
        phase("garbage", &mut svc, &hot, &store.lookups, &mut garbage).await;
        println!(
            "abuse: the negative cache is bounded at {NEGATIVE_CAPACITY} entries; garbage never reaches a cache or the store"
        );
    });
}
