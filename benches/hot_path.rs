//! The hot path: one request through a cache hit, against a bare service,
//! tower-http's static bearer check, and the unavoidable work written by hand.
//!
//! `cargo bench --all-features --bench hot_path` prints criterion's figures, then
//! the ratios of this run.

mod support;

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Service, ServiceBuilder, ServiceExt};

/// The inner service of every variant: a typical small response. Real responses
/// carry headers, so the response's header map is already allocated when the
/// layer adds its expiry header.
async fn bare(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::default());
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(res)
}

/// Times `iters` requests through `svc`, driven on a current-thread runtime.
fn drive<S>(
    rt: &tokio::runtime::Runtime,
    mut svc: S,
    auth: &http::HeaderValue,
    iters: u64,
) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let req = support::request(auth);
            let res = svc.ready().await.unwrap().call(req).await.unwrap();
            black_box(res);
        }
        start.elapsed()
    })
}

fn hot_path(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let (tokens, auth, token) = rt.block_on(support::tokens_with_token());
    // Warm the cache.
    let svc = ServiceBuilder::new().layer(tokens.layer()).service_fn(bare);
    assert_eq!(
        rt.block_on(svc.clone().oneshot(support::request(&auth)))
            .unwrap()
            .status(),
        200
    );

    let mut group = c.benchmark_group("hot_path");
    group.bench_function("bare", |b| {
        b.iter_custom(|n| drive(rt, tower::service_fn(bare), &auth, n));
    });
    #[allow(deprecated)]
    let static_bearer = ServiceBuilder::new()
        .layer(tower_http::validate_request::ValidateRequestHeaderLayer::bearer(&token))
        .service_fn(bare);
    group.bench_function("tower_http_static_bearer", |b| {
        b.iter_custom(|n| drive(rt, static_bearer.clone(), &auth, n));
    });
    group.bench_function("layer_hit", |b| {
        b.iter_custom(|n| drive(rt, svc.clone(), &auth, n));
    });
    // The same without the expiry response header (`expiry_header(None)`).
    let (quiet, quiet_auth, _) = rt.block_on(support::tokens_with_token_configured(|b| {
        b.expiry_header(None)
    }));
    let quiet_svc = ServiceBuilder::new().layer(quiet.layer()).service_fn(bare);
    assert_eq!(
        rt.block_on(quiet_svc.clone().oneshot(support::request(&quiet_auth)))
            .unwrap()
            .status(),
        200
    );
    group.bench_function("layer_hit_no_expiry_header", |b| {
        b.iter_custom(|n| drive(rt, quiet_svc.clone(), &quiet_auth, n));
    });

    // The unavoidable work: parse, SHA-256, one cache probe, one extension insert.
    let cache = support::RefCache::new(10_000);
    cache.insert(
        support::ref_digest(&token),
        support::RefPrincipal(Arc::new("bench".into())),
    );
    let reference = support::reference(cache, bare);
    group.bench_function("reference_unavoidable", |b| {
        b.iter_custom(|n| drive(rt, reference.clone(), &auth, n));
    });
    group.finish();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default()
        .sample_size(60)
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    hot_path(&mut c, &rt);
    c.final_summary();

    let m = |id| support::median_ns("hot_path", id);
    if let (Some(bare), Some(tower_http), Some(ours), Some(reference)) = (
        m("bare"),
        m("tower_http_static_bearer"),
        m("layer_hit"),
        m("reference_unavoidable"),
    ) {
        println!(
            "\nhot_path medians (ns): bare {bare:.1}, tower-http static bearer {tower_http:.1}, layer hit {ours:.1}, reference {reference:.1}"
        );
        println!(
            "layer cost over bare / reference cost over bare = {:.1} / {:.1} = {:.2} (goal ≤ 1.30)",
            ours - bare,
            reference - bare,
            (ours - bare) / (reference - bare)
        );
        println!(
            "layer hit / tower-http static bearer = {:.2}",
            ours / tower_http
        );
    }
}
