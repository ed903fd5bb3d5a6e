//! The hot path: one request through a cache hit, against a bare service,
//! tower-http's static bearer check, and the unavoidable work written by hand.
//!
//! `cargo bench --all-features --bench hot_path` prints criterion's figures, then
//! the ratios of this run.

mod support;

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

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
        let start = support::now();
        for _ in 0..iters {
            let req = support::request(auth);
            let res = svc.ready().await.unwrap().call(req).await.unwrap();
            black_box(res);
        }
        support::now() - start
    })
}

/// A variant: its name, and a run of `n` requests through it.
type Variant<'a> = (&'static str, Box<dyn FnMut(u64) -> Duration + 'a>);

/// Every variant, warmed up.
fn variants(rt: &tokio::runtime::Runtime) -> Vec<Variant<'_>> {
    let (tokens, auth, token) = rt.block_on(support::tokens_with_token());
    let svc = ServiceBuilder::new().layer(tokens.layer()).service_fn(bare);
    // The same without the expiry response header (`expiry_header(None)`).
    let (quiet, quiet_auth, _) = rt.block_on(support::tokens_with_token_configured(|b| {
        b.expiry_header(None)
    }));
    let quiet_svc = ServiceBuilder::new().layer(quiet.layer()).service_fn(bare);
    // Warm the caches.
    for (svc, auth) in [(&svc, &auth), (&quiet_svc, &quiet_auth)] {
        let res = rt.block_on(svc.clone().oneshot(support::request(auth)));
        assert_eq!(res.unwrap().status(), 200);
    }
    #[allow(deprecated)]
    let static_bearer = ServiceBuilder::new()
        .layer(tower_http::validate_request::ValidateRequestHeaderLayer::bearer(&token))
        .service_fn(bare);
    // The unavoidable work: parse, SHA-256, one cache probe, one extension insert.
    let cache = support::RefCache::new(10_000);
    cache.insert(
        support::ref_digest(&token),
        support::RefPrincipal(Arc::new("bench".into())),
    );
    let reference = support::reference(cache, bare);
    // The same plus what DESIGN requires of every hit besides (format and
    // checksum, revocation, policy now, expiry now): the floor this design allows.
    let floor_cache = support::FloorCache::new(10_000);
    let issued_ns = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    floor_cache.insert(
        support::ref_digest(&token),
        Arc::new(support::FloorEntry {
            principal: support::RefPrincipal(Arc::new("bench".into())),
            revoked: false,
            issued_ns,
            expires_ns: Some(issued_ns + 90 * 86_400 * 1_000_000_000),
        }),
    );
    let lifetime_ns = Arc::new(arc_swap::ArcSwap::from_pointee(Some(
        90 * 86_400 * 1_000_000_000i64,
    )));
    let floor =
        support::reference_with_design_checks(tokens.clone(), floor_cache, lifetime_ns, bare);
    let a = auth.clone();
    let f = auth.clone();
    let b = auth.clone();
    let c = auth.clone();
    vec![
        (
            "bare",
            Box::new(move |n| drive(rt, tower::service_fn(bare), &a, n)),
        ),
        (
            "tower_http_static_bearer",
            Box::new(move |n| drive(rt, static_bearer.clone(), &b, n)),
        ),
        (
            "layer_hit",
            Box::new(move |n| drive(rt, svc.clone(), &c, n)),
        ),
        (
            "layer_hit_no_expiry_header",
            Box::new(move |n| drive(rt, quiet_svc.clone(), &quiet_auth, n)),
        ),
        (
            "reference_unavoidable",
            Box::new(move |n| drive(rt, reference.clone(), &auth, n)),
        ),
        (
            "reference_with_design_checks",
            Box::new(move |n| drive(rt, floor.clone(), &f, n)),
        ),
    ]
}

fn hot_path(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("hot_path");
    for (name, mut run) in variants(rt) {
        group.bench_function(name, |b| b.iter_custom(&mut run));
    }
    group.finish();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `HOT_PATH_COUNT=<variant>:<n>` runs only `n` requests through one variant
    // and exits: for `perf stat`, whose cycle and instruction counts are not
    // disturbed by other processes the way wall time is on a busy machine.
    if let Some((name, n)) = std::env::var("HOT_PATH_COUNT").ok().and_then(|spec| {
        spec.split_once(':')
            .map(|(v, n)| (v.to_owned(), n.to_owned()))
    }) {
        let n: u64 = n.parse().expect("HOT_PATH_COUNT=<variant>:<n>");
        for (variant, mut run) in variants(&rt) {
            if variant == name {
                println!("{variant}: {n} requests in {:?}", run(n));
            }
        }
        return;
    }
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
    interleaved(&rt);
}

/// The same ratios, robust to a machine whose speed drifts: every round runs
/// each variant for a short burst, one after another, and the ratio is taken
/// within the round; the report is the median over the rounds (with the
/// interquartile range). Criterion measures one variant for seconds before the
/// next, so a drift between variants lands in its ratios.
fn interleaved(rt: &tokio::runtime::Runtime) {
    const ROUNDS: usize = 301;
    const BURST: u64 = 20_000;
    let mut variants = variants(rt);
    let mut per_variant: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); variants.len()];
    let at = |name: &str| {
        variants
            .iter()
            .position(|(n, _)| *n == name)
            .expect("a variant of that name")
    };
    let (bare, layer, quiet, reference, floor) = (
        at("bare"),
        at("layer_hit"),
        at("layer_hit_no_expiry_header"),
        at("reference_unavoidable"),
        at("reference_with_design_checks"),
    );
    // (layer, baseline) pairs: each ratio is (layer − bare) / (baseline − bare).
    let pairs = [
        (layer, reference),
        (quiet, reference),
        (layer, floor),
        (quiet, floor),
    ];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); pairs.len()];
    for _ in 0..ROUNDS {
        let ns: Vec<f64> = variants
            .iter_mut()
            .map(|(_, run)| run(BURST).as_nanos() as f64 / BURST as f64)
            .collect();
        for ((ours, base), all) in pairs.iter().zip(ratios.iter_mut()) {
            all.push((ns[*ours] - ns[bare]) / (ns[*base] - ns[bare]));
        }
        for (all, n) in per_variant.iter_mut().zip(ns) {
            all.push(n);
        }
    }
    let quartiles = |xs: &mut Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
        (at(0.25), at(0.5), at(0.75))
    };
    println!("\ninterleaved: {ROUNDS} rounds of {BURST} requests per variant");
    for ((name, _), all) in variants.iter().zip(per_variant.iter_mut()) {
        let (q1, m, q3) = quartiles(all);
        println!("  {name:<28} median {m:.1} ns (IQR {q1:.1} – {q3:.1})");
    }
    let labels = [
        "layer over bare / reference over bare (goal ≤ 1.30)",
        "  the same without the expiry header",
        "layer over bare / design floor over bare",
        "  the same without the expiry header",
    ];
    for (label, all) in labels.iter().zip(ratios.iter_mut()) {
        let (q1, m, q3) = quartiles(all);
        println!("  {label}: median {m:.2} (IQR {q1:.2} – {q3:.2})");
    }
}
