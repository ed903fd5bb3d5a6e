//! The public cases of `shared/cases/README.md`, one test (or more) each.

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_api_tokens::policy::Policy;

#[tokio::test]
async fn case_01_scheme_is_case_insensitive_token_is_not() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    for scheme in ["bearer", "BEARER", "bEaReR", "Bearer"] {
        let a = send(&h.tokens, request(&[&format!("{scheme} {tok}")])).await;
        assert_eq!(a.status, StatusCode::OK, "{scheme}");
        assert_eq!(a.body, "alice");
    }
    let a = send(&h.tokens, bearer(&tok.to_uppercase())).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        a.challenge().contains("error=\"invalid_token\""),
        "{}",
        a.challenge()
    );
}

#[tokio::test]
async fn case_02_several_spaces_after_the_scheme() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    let a = send(&h.tokens, request(&[&format!("Bearer  {tok}")])).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn case_03_glued_or_misspelled_schemes_get_a_bare_challenge() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    for value in [
        format!("Bearer{tok}"),
        format!("Bearer:{tok}"),
        format!("Beaver {tok}"),
    ] {
        let a = send(&h.tokens, request(&[&value])).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{value}");
        assert_eq!(a.challenge(), BARE, "{value}");
    }
    assert_eq!(h.store.lookups(), 0);
}

#[tokio::test]
async fn case_04_empty_credentials_are_invalid_request() {
    let h = Harness::new().await;
    for value in ["Bearer", "Bearer ", ""] {
        let a = send(&h.tokens, request(&[value])).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{value:?}");
        assert!(
            a.challenge()
                .starts_with("Bearer realm=\"api\", error=\"invalid_request\""),
            "{}",
            a.challenge()
        );
        let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
    assert_eq!(h.store.lookups(), 0);

    let a = send(&h.tokens, request(&[])).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.challenge(), BARE);
    assert!(!a.challenge().contains("error"));
}

#[tokio::test]
async fn case_05_two_authorization_headers_in_either_order() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    let valid = format!("Bearer {tok}");
    for pair in [
        [valid.as_str(), "Basic dTpw"],
        ["Basic dTpw", valid.as_str()],
        [valid.as_str(), valid.as_str()],
    ] {
        let a = send(&h.tokens, request(&pair)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(a.challenge().contains("error=\"invalid_request\""));
    }
    assert_eq!(h.store.lookups(), 0);
}

#[tokio::test]
async fn case_06_query_tokens_are_ignored() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    let req = http::Request::get(format!("/resource?access_token={tok}"))
        .body(Default::default())
        .unwrap();
    let a = send(&h.tokens, req).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.challenge(), BARE);
    // That the URL is not logged is proven in tests/secrets.rs.
}

#[tokio::test]
async fn case_07_a_token_at_exactly_its_expiry_is_expired() {
    let h = Harness::new().await;
    h.allow_all_users("1h".parse().unwrap()).await;
    let (tok, _) = h.token(&h.alice).await;
    h.clock
        .set(START + Duration::from_secs(3600) - Duration::from_nanos(1));
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
    h.clock.set(START + Duration::from_secs(3600));
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        a.challenge(),
        "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token has expired\""
    );
}

#[tokio::test]
async fn case_08_a_cached_token_never_outlives_its_expiry() {
    let h = Harness::new().await;
    h.allow_all_users("2h".parse().unwrap()).await;
    let (tok, _) = h.token(&h.alice).await;
    h.clock.advance(Duration::from_secs(3600)); // 1 h left
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
    let lookups = h.store.lookups();
    h.clock.advance(Duration::from_secs(3601));
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.challenge().contains("expired"));
    // Decided from the cache entry, not by a new lookup.
    assert_eq!(h.store.lookups(), lookups);
}

#[tokio::test]
async fn case_09_revoking_a_cached_token_takes_effect_on_the_next_request() {
    let h = Harness::new().await;
    let (tok, id) = h.token(&h.alice).await;
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
    h.tokens.revoke(id).await.unwrap();
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.challenge().contains("revoked"), "{}", a.challenge());
}

#[tokio::test(flavor = "current_thread")]
async fn case_10_concurrent_first_requests_make_one_backend_call() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    let pause = h.store.pause_next_lookup();
    let tasks = spawn_requests(&h.tokens, &tok, 200);
    pause.reached.notified().await;
    // Let every task reach the cache and queue behind the one load.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    pause.release.notify_one();
    for status in statuses(tasks).await {
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(h.store.lookups(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn case_10_a_cancelled_first_request_does_not_strand_the_others() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    let pause = h.store.pause_next_lookup();
    let first = {
        let (tokens, tok) = (h.tokens.clone(), tok.clone());
        tokio::spawn(async move { send(&tokens, bearer(&tok)).await.status })
    };
    pause.reached.notified().await;
    let others = spawn_requests(&h.tokens, &tok, 20);
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    for status in statuses(others).await {
        assert_eq!(status, StatusCode::OK);
    }
    // The aborted load, then one more.
    assert_eq!(h.store.lookups(), 2);
}

#[tokio::test]
async fn case_11_backend_errors_are_503_and_never_cached() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    h.store.set_failing(true);
    for _ in 0..3 {
        let a = send(&h.tokens, bearer(&tok)).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.headers["retry-after"], "1");
        assert!(a.headers.get("www-authenticate").is_none());
        assert!(!a.body.contains("invalid_token"));
    }
    // Every failed request asked the store again: nothing was cached.
    assert_eq!(h.store.lookups(), 3);
    h.store.set_failing(false);
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn case_11_a_hanging_backend_times_out_as_503() {
    let h = Harness::with(|b| b.lookup_timeout(Duration::from_millis(250))).await;
    let (tok, _) = h.token(&h.alice).await;
    h.store.set_hanging(true);
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.headers.contains_key("retry-after"));
    h.store.set_hanging(false);
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn case_12_unknown_tokens_are_cached_as_negatives() {
    let h = Harness::new().await;
    let unknown = h.tokens.format().generate().unwrap();
    let svc = ServiceBuilder::new()
        .layer(h.tokens.layer())
        .service_fn(echo);
    let mut answers = Vec::new();
    for _ in 0..1000 {
        answers.push(svc.clone().oneshot(bearer(unknown.expose())));
    }
    for res in futures_join_all(answers).await {
        let a = collect(res.unwrap()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(a.challenge().contains("error=\"invalid_token\""));
    }
    assert_eq!(h.store.lookups(), 1);
}

#[tokio::test]
async fn case_12_a_backend_error_is_never_cached_as_unknown() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    h.store.set_failing(true);
    assert_eq!(
        send(&h.tokens, bearer(&tok)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    h.store.set_failing(false);
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn case_13_policy_none_refuses_cached_tokens_at_once() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
    let lookups = h.store.lookups();
    h.tokens.set_policy(Policy::None).await.unwrap();
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.challenge().contains("policy"), "{}", a.challenge());
    assert_eq!(h.store.lookups(), lookups);
}

#[tokio::test]
async fn case_15_head_without_token_has_challenge_and_empty_body() {
    let h = Harness::new().await;
    let req = http::Request::builder()
        .method(Method::HEAD)
        .uri("/resource")
        .body(Default::default())
        .unwrap();
    let a = send(&h.tokens, req).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.challenge(), BARE);
    assert_eq!(a.body, "");
}

/// Drives a set of futures to completion concurrently (no `futures` dependency).
async fn futures_join_all<F: std::future::Future + Send + 'static>(futs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
