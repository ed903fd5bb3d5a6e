//! Each step of the request path alone: header parse, token check (prefix,
//! length, checksum), SHA-256, cache hit, policy check.
//!
//! `cargo bench --all-features --bench components`.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use tower_api_tokens::bench_support::{cache_hit, parse_bearer};
use tower_api_tokens::policy::{Lifetime, Policy, Rule};
use tower_api_tokens::store::{User, UserId};
use tower_api_tokens::token::TokenHash;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tokens, auth, token) = rt.block_on(support::tokens_with_token());
    let mut request = support::request(&auth);
    let hash = TokenHash::of(&token);
    // Warm the cache through the layer.
    let svc = tower::ServiceBuilder::new()
        .layer(tokens.layer())
        .service_fn(
            |_r: http::Request<http_body_util::Full<bytes::Bytes>>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<
                    bytes::Bytes,
                >::default()))
            },
        );
    rt.block_on(tower::ServiceExt::oneshot(svc, support::request(&auth)))
        .unwrap();
    assert!(cache_hit(&tokens, &hash));

    let user = User {
        id: UserId::new(),
        username: "u".into(),
        roles: vec!["dev".into(), "ops".into()],
        identity_provider: "saml-corp".into(),
    };
    let policy = Policy::Selected {
        rules: vec![
            Rule::role("admin", Lifetime::days(90)),
            Rule::role("ops", Lifetime::days(30)),
            Rule::identity_provider("saml-corp", Lifetime::Never),
        ],
    };

    let mut c = Criterion::default()
        .sample_size(60)
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut g = c.benchmark_group("components");
    g.bench_function("header_parse", |b| {
        b.iter(|| parse_bearer(black_box(request.headers_mut()), 256).map(<[u8]>::len))
    });
    g.bench_function("token_check", |b| {
        b.iter(|| tokens.format().check(black_box(&token)))
    });
    g.bench_function("sha256", |b| b.iter(|| TokenHash::of(black_box(&token))));
    g.bench_function("hex_stack", |b| b.iter(|| black_box(&hash).to_hex()));
    g.bench_function("cache_hit", |b| {
        b.iter(|| cache_hit(&tokens, black_box(&hash)))
    });
    g.bench_function("policy_check_selected", |b| {
        b.iter(|| black_box(&policy).lifetime_for(black_box(&user)))
    });
    g.finish();
    c.final_summary();
}
