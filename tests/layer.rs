//! Behaviour of the layer beyond the public cases: races, policy, headers,
//! anonymous mode, replaceable rejections, configuration errors.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_api_tokens::policy::{Lifetime, Policy, Rule};
use tower_api_tokens::store::Directory;
use tower_api_tokens::{ApiTokens, AuthError, ConfigError, InvalidToken, Rejection};

#[tokio::test(flavor = "current_thread")]
async fn a_revoke_during_a_load_is_not_undone_by_that_load() {
    let h = Harness::new().await;
    let (tok, id) = h.token(&h.alice).await;
    // The load reads the record (not yet revoked), then waits.
    let pause = h.store.pause_next_lookup();
    let in_flight = {
        let (tokens, tok) = (h.tokens.clone(), tok.clone());
        tokio::spawn(async move { send(&tokens, bearer(&tok)).await })
    };
    pause.reached.notified().await;
    // The revoke completes while that load holds the old record.
    h.tokens.revoke(id).await.unwrap();
    pause.release.notify_one();
    let a = in_flight.await.unwrap();
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert!(a.challenge().contains("revoked"));
    // And the old record was not left in the cache either.
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.challenge().contains("revoked"));
}

/// Starts a load that stops once it has read the record, then queues `n` more
/// requests for the same token behind it (on a current-thread runtime each
/// spawned task runs to its first wait before this returns).
async fn load_with_waiters(
    h: &Harness,
    tok: &str,
    n: usize,
) -> (Arc<Pause>, Vec<tokio::task::JoinHandle<StatusCode>>) {
    let pause = h.store.pause_next_lookup();
    let mut tasks = spawn_requests(&h.tokens, tok, 1);
    pause.reached.notified().await;
    tasks.extend(spawn_requests(&h.tokens, tok, n));
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    (pause, tasks)
}

#[tokio::test(flavor = "current_thread")]
async fn requests_waiting_on_a_load_are_answered_from_its_result() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    let (pause, tasks) = load_with_waiters(&h, &tok, 50).await;
    pause.release.notify_one();
    for status in statuses(tasks).await {
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(h.store.lookups(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn requests_waiting_on_a_load_that_raced_a_revoke_see_the_revocation() {
    let h = Harness::new().await;
    let (tok, id) = h.token(&h.alice).await;
    let (pause, tasks) = load_with_waiters(&h, &tok, 50).await;
    h.tokens.revoke(id).await.unwrap();
    pause.release.notify_one();
    for status in statuses(tasks).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The stale load is retried once, for everyone.
    assert_eq!(h.store.lookups(), 2);
    let a = send(&h.tokens, bearer(&tok)).await;
    assert!(a.challenge().contains("revoked"));
}

#[tokio::test]
async fn the_expiry_header_tells_when_the_token_stops_working() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    let a = send(&h.tokens, bearer(&tok)).await;
    // Default policy: 90 days from 2026-01-01.
    assert_eq!(a.headers["api-token-expiration"], "2026-04-01T00:00:00Z");

    // A tightened policy cuts the token, and the header says so.
    h.allow_all_users(Lifetime::days(10)).await;
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.headers["api-token-expiration"], "2026-01-11T00:00:00Z");

    // A token that never expires has no header.
    h.allow_all_users(Lifetime::Never).await;
    let (forever, _) = h.token(&h.alice).await;
    let a = send(&h.tokens, bearer(&forever)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers.get("api-token-expiration").is_none());
}

#[tokio::test]
async fn the_expiry_header_can_be_renamed_or_turned_off() {
    let h = Harness::with(|b| b.expiry_header(None)).await;
    let (tok, _) = h.token(&h.alice).await;
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers.get("api-token-expiration").is_none());

    let h =
        Harness::with(|b| b.expiry_header(Some(http::HeaderName::from_static("x-token-expires"))))
            .await;
    let (tok, _) = h.token(&h.alice).await;
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.headers["x-token-expires"], "2026-04-01T00:00:00Z");
}

#[tokio::test]
async fn tightening_cuts_existing_tokens_and_loosening_never_extends_them() {
    let h = Harness::new().await;
    h.allow_all_users(Lifetime::days(30)).await;
    let (tok, _) = h.token(&h.alice).await;
    h.clock.advance(Duration::from_secs(20 * 86_400));
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);

    // Tightened to 7 days: the 20-day-old token is void at once.
    h.allow_all_users(Lifetime::days(7)).await;
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.challenge().contains("expired"));

    // Loosened to never: back to its own 30 days, not beyond.
    h.allow_all_users(Lifetime::Never).await;
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
    h.clock.advance(Duration::from_secs(10 * 86_400)); // day 30
    assert_eq!(
        send(&h.tokens, bearer(&tok)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn selected_admits_exactly_the_matching_users() {
    let h = Harness::new().await;
    let saml = user("sam", &["guest"], "saml-corp");
    let guest = user("gus", &["guest"], "local");
    for u in [&saml, &guest] {
        h.store.create_user(u, &"pw".into()).await.unwrap();
    }
    let (alice_tok, _) = h.token(&h.alice).await;
    let (admin_tok, _) = h.token(&h.admin).await;
    let (saml_tok, _) = h.token(&saml).await;
    let (guest_tok, _) = h.token(&guest).await;
    h.tokens
        .set_policy(Policy::Selected {
            rules: vec![
                Rule::role("admin", Lifetime::days(90)),
                Rule::identity_provider("saml-corp", Lifetime::Never),
            ],
        })
        .await
        .unwrap();
    for (tok, want) in [
        (&admin_tok, StatusCode::OK),
        (&saml_tok, StatusCode::OK),
        (&alice_tok, StatusCode::UNAUTHORIZED),
        (&guest_tok, StatusCode::UNAUTHORIZED),
    ] {
        assert_eq!(send(&h.tokens, bearer(tok)).await.status, want);
    }
    // Issuance follows the same policy.
    assert!(h.tokens.issue(guest.id).await.is_err());
    let issued = h.tokens.issue(saml.id).await.unwrap();
    assert_eq!(issued.record.expires_at, None);
}

#[tokio::test]
async fn a_token_of_a_deleted_or_changed_user_follows_the_directory() {
    let h = Harness::new().await;
    h.tokens
        .set_policy(Policy::Selected {
            rules: vec![Rule::role("dev", Lifetime::days(1))],
        })
        .await
        .unwrap();
    let (tok, _) = h.token(&h.alice).await;
    // Not cached yet: the role change is seen at the first lookup.
    let mut changed = h.alice.clone();
    changed.roles = vec!["ops".into()];
    h.store.update_user(&changed).await.unwrap();
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.challenge().contains("policy"));
}

#[tokio::test]
async fn well_formed_tokens_of_another_format_never_reach_the_store() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    let mut typo = tok.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'A' { b'B' } else { b'A' };
    for t in [
        String::from_utf8(typo).unwrap(),
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789".to_owned(),
        tok[..tok.len() - 1].to_owned(),
    ] {
        let a = send(&h.tokens, bearer(&t)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            a.challenge(),
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token is malformed\""
        );
    }
    assert_eq!(h.store.lookups(), 0);
}

#[tokio::test]
async fn descriptions_never_echo_the_token() {
    let h = Harness::new().await;
    let (tok, id) = h.token(&h.alice).await;
    h.tokens.revoke(id).await.unwrap();
    let a = send(&h.tokens, bearer(&tok)).await;
    assert!(!a.challenge().contains(&tok[4..]));
    assert!(!a.body.contains(&tok[4..]));
}

#[tokio::test]
async fn anonymous_mode_lets_requests_without_bearer_credentials_through() {
    let h = Harness::new().await;
    let (tok, id) = h.token(&h.alice).await;
    let svc = ServiceBuilder::new()
        .layer(h.tokens.layer().allow_anonymous(true))
        .service_fn(echo);
    let a = collect(svc.clone().oneshot(request(&[])).await.unwrap()).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "anonymous"));
    let a = collect(svc.clone().oneshot(request(&["Basic dTpw"])).await.unwrap()).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "anonymous"));
    let a = collect(svc.clone().oneshot(bearer(&tok)).await.unwrap()).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "alice"));
    // A bad bearer token is still refused.
    h.tokens.revoke(id).await.unwrap();
    let a = collect(svc.clone().oneshot(bearer(&tok)).await.unwrap()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = collect(svc.oneshot(request(&["Bearer"])).await.unwrap()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_rejection_is_replaceable_and_carries_the_error() {
    let h = Harness::new().await;
    let layer = h.tokens.layer().on_rejection(|r: &Rejection| {
        let mut res = Response::new(Full::new(Bytes::from_static(b"nope")));
        *res.status_mut() = StatusCode::IM_A_TEAPOT;
        r.apply_headers(res.headers_mut());
        res
    });
    let svc = ServiceBuilder::new().layer(layer).service_fn(echo);
    let res = svc
        .oneshot(bearer(h.tokens.format().generate().unwrap().expose()))
        .await
        .unwrap();
    assert!(matches!(
        res.extensions().get::<AuthError>(),
        Some(AuthError::InvalidToken(InvalidToken::Unknown))
    ));
    let a = collect(res).await;
    assert_eq!(a.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(a.body, "nope");
    assert!(a.challenge().contains("invalid_token"));
}

#[derive(Debug, PartialEq)]
struct InnerFailure;

#[tokio::test]
async fn the_inner_service_error_type_passes_through() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    let svc = ServiceBuilder::new().layer(h.tokens.layer()).service_fn(
        |_req: http::Request<Full<Bytes>>| async { Err::<Response<Full<Bytes>>, _>(InnerFailure) },
    );
    assert_eq!(
        svc.clone().oneshot(bearer(&tok)).await.unwrap_err(),
        InnerFailure
    );
    // A refusal is a response, not an error.
    let res = svc.oneshot(request(&[])).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_principal_describes_the_caller() {
    let h = Harness::new().await;
    let (tok, id) = h.token(&h.admin).await;
    let svc = ServiceBuilder::new().layer(h.tokens.layer()).service_fn(
        |req: http::Request<Full<Bytes>>| async move {
            let p = req
                .extensions()
                .get::<tower_api_tokens::Principal>()
                .cloned();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                serde_json::to_string(&p).unwrap(),
            ))))
        },
    );
    let a = collect(svc.oneshot(bearer(&tok)).await.unwrap()).await;
    let json: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(json["username"], "root");
    assert_eq!(json["user_id"], h.admin.id.to_string());
    assert_eq!(json["roles"], serde_json::json!(["admin"]));
    assert_eq!(json["identity_provider"], "local");
    assert_eq!(json["token_id"], id.to_string());
    assert_eq!(json["expires_at"], "2026-04-01T00:00:00Z");
}

#[tokio::test]
async fn configuration_mistakes_are_errors_at_build_time() {
    let store = tower_api_tokens::store::MemoryStore::new();
    let err = |r: Result<ApiTokens, ConfigError>| r.err().map(|e| e.to_string());
    assert!(
        err(ApiTokens::builder().store(store.clone()).build().await)
            .unwrap()
            .contains("directory")
    );
    assert!(
        err(ApiTokens::builder().directory(store.clone()).build().await)
            .unwrap()
            .contains("store")
    );
    let base = || ApiTokens::builder().backend(store.clone());
    assert!(matches!(
        base().token_prefix("bad prefix").build().await,
        Err(ConfigError::TokenPrefix)
    ));
    assert!(matches!(
        base().realm("a\"b").build().await,
        Err(ConfigError::Realm)
    ));
    assert!(matches!(
        base().cache_ttl(Duration::ZERO).build().await,
        Err(ConfigError::ZeroDuration("cache_ttl"))
    ));
    assert!(matches!(
        base().max_token_len(10).build().await,
        Err(ConfigError::MaxTokenLen {
            max: 10,
            needed: 53
        })
    ));
    assert!(
        base()
            .token_prefix("acme_")
            .realm("Acme API")
            .build()
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_fresh_store_starts_with_all_users_for_90_days() {
    let h = Harness::new().await;
    let current = h.tokens.policy();
    assert_eq!(
        current.policy,
        Policy::AllUsers {
            lifetime: Lifetime::days(90)
        }
    );
    assert_eq!(current.version, 1);
    let next = h.tokens.set_policy(Policy::None).await.unwrap();
    assert_eq!(next.version, 2);
    // An invalid policy is refused and changes nothing.
    assert!(
        h.tokens
            .set_policy(Policy::Selected { rules: vec![] })
            .await
            .is_err()
    );
    assert_eq!(h.tokens.policy(), next);
}

#[tokio::test]
async fn a_custom_prefix_and_realm_are_used() {
    let h = Harness::with(|b| b.token_prefix("acme_").realm("Acme")).await;
    let (tok, _) = h.token(&h.alice).await;
    assert!(tok.starts_with("acme_"));
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
    let a = send(&h.tokens, request(&[])).await;
    assert_eq!(a.challenge(), "Bearer realm=\"Acme\"");
}

#[tokio::test]
async fn the_authorization_header_is_marked_sensitive() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    let svc = ServiceBuilder::new().layer(h.tokens.layer()).service_fn(
        |req: http::Request<Full<Bytes>>| async move {
            let sensitive = req.headers()["authorization"].is_sensitive();
            let debug = format!("{req:?}");
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                "{sensitive} {debug}"
            )))))
        },
    );
    let a = collect(svc.oneshot(bearer(&tok)).await.unwrap()).await;
    assert!(a.body.starts_with("true "), "{}", a.body);
    assert!(!a.body.contains(&tok[4..]));
}

#[tokio::test]
async fn a_panicking_store_gets_a_500_and_the_service_lives_on() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    h.store.set_panicking(true);
    let a = send(&h.tokens, bearer(&tok)).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(a.headers.get("www-authenticate").is_none());
    let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(body["error"], "server_error");

    // Many requests waiting on one panicking load all get an answer.
    let tasks = spawn_requests(&h.tokens, &tok, 20);
    for status in statuses(tasks).await {
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    // Nothing was cached: once the store behaves, the token works.
    h.store.set_panicking(false);
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_store_releases_every_waiting_request_at_the_timeout() {
    let h = Harness::with(|b| b.lookup_timeout(Duration::from_millis(500))).await;
    let (tok, _) = h.token(&h.alice).await;
    h.store.set_hanging(true);
    let started = tokio::time::Instant::now();
    let tasks = spawn_requests(&h.tokens, &tok, 50);
    for status in statuses(tasks).await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // All released by the one coalesced load's timeout (virtual time).
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!(h.store.lookups(), 1);
    h.store.set_hanging(false);
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_coalesced_load_does_not_poison_the_next_attempt() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    h.store.set_failing(true);
    let tasks = spawn_requests(&h.tokens, &tok, 200);
    for status in statuses(tasks).await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    h.store.set_failing(false);
    let tasks = spawn_requests(&h.tokens, &tok, 200);
    for status in statuses(tasks).await {
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_cached_token_is_refused_from_its_expiry_on_without_asking_the_store_again() {
    let h = Harness::new().await;
    h.allow_all_users(Lifetime::days(1)).await;
    let (tok, _) = h.token(&h.alice).await;
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
    assert_eq!(h.store.lookups(), 1);

    // One nanosecond before its expiry it is still good; at its expiry it is not.
    h.clock
        .advance(Duration::from_secs(86_400) - Duration::from_nanos(1));
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
    h.clock.advance(Duration::from_nanos(1));
    for _ in 0..3 {
        let a = send(&h.tokens, bearer(&tok)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(a.challenge().contains("expired"), "{}", a.challenge());
    }
    // Every decision came from the one cached entry.
    assert_eq!(h.store.lookups(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_schedule_of_latency_errors_hangs_and_dropped_connections_gets_the_right_answers() {
    let timeout = Duration::from_millis(500);
    let h = Harness::with(|b| b.lookup_timeout(timeout)).await;
    // Six distinct tokens, none cached yet: each first request is one lookup.
    let mut toks = Vec::new();
    for _ in 0..6 {
        toks.push(h.token(&h.alice).await.0);
    }
    let ms = Duration::from_millis;
    let schedule = [
        (Fault::Delay(ms(100)), StatusCode::OK, ms(100)),
        (Fault::Fail, StatusCode::SERVICE_UNAVAILABLE, ms(0)),
        (Fault::Hang, StatusCode::SERVICE_UNAVAILABLE, timeout),
        (Fault::Drop(ms(50)), StatusCode::SERVICE_UNAVAILABLE, ms(50)),
        (
            Fault::Delay(ms(600)),
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ),
        (Fault::Pass, StatusCode::OK, ms(0)),
    ];
    h.store
        .schedule(schedule.iter().map(|(fault, _, _)| *fault));
    for (tok, (fault, want, took)) in toks.iter().zip(schedule) {
        let started = tokio::time::Instant::now();
        let a = send(&h.tokens, bearer(tok)).await;
        assert_eq!(a.status, want, "{fault:?}");
        // Virtual time: exactly the fault's delay, or the lookup timeout.
        assert_eq!(started.elapsed(), took, "{fault:?}");
        if want == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(a.headers["retry-after"], "1", "{fault:?}");
            assert!(a.headers.get("www-authenticate").is_none(), "{fault:?}");
        }
    }
    assert_eq!(h.store.lookups(), 6);

    // Nothing was cached from a failure: the four refused tokens are looked up
    // again and accepted; the two accepted ones come from the cache, even while
    // the store fails every lookup.
    for tok in &toks {
        assert_eq!(send(&h.tokens, bearer(tok)).await.status, StatusCode::OK);
    }
    assert_eq!(h.store.lookups(), 6 + 4);
    h.store.schedule([Fault::Fail; 6]);
    for tok in &toks {
        assert_eq!(send(&h.tokens, bearer(tok)).await.status, StatusCode::OK);
    }
    assert_eq!(h.store.lookups(), 10, "every token is cached now");
}
