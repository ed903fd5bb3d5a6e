//! The management side: generate, reuse, rotate, revoke, attempt limits (per
//! user name and per client), write-behind `last_used_at`, user changes.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::StatusCode;
use support::*;
use tower_api_tokens::password::Password;
use tower_api_tokens::policy::{Lifetime, Policy, Rule};
use tower_api_tokens::store::{MemoryStore, TokenStore};
use tower_api_tokens::{ApiTokens, ClientId, ConfigError, ManageError, ServerKey};

fn pw(user: &str) -> Password {
    Password::new(format!("pw-of-{user}"))
}

fn keyed() -> impl FnOnce(tower_api_tokens::Builder) -> tower_api_tokens::Builder {
    |b| b.server_key(ServerKey::new("a server key of at least 32 bytes!").unwrap())
}

#[tokio::test]
async fn generate_returns_the_same_token_again_with_a_server_key() {
    let h = Harness::with(keyed()).await;
    let first = h
        .tokens
        .generate("alice", &pw("alice"), false)
        .await
        .unwrap();
    assert!(!first.reused);
    let tok = first.token.clone().unwrap();
    let second = h
        .tokens
        .generate("alice", &pw("alice"), false)
        .await
        .unwrap();
    assert!(second.reused);
    assert_eq!(second.token.as_ref().unwrap().expose(), tok.expose());
    assert_eq!(second.record.id, first.record.id);
    assert_eq!(h.tokens.list(Some(h.alice.id)).await.unwrap().len(), 1);
    // The plaintext is not in the store: only its hash.
    let stored = h.store.inner.get(first.record.id).await.unwrap().unwrap();
    assert_eq!(stored.hash, tok.hash());
    assert!(!format!("{stored:?}").contains(&tok.expose()[4..]));
    assert_eq!(
        send(&h.tokens, bearer(tok.expose())).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn without_a_server_key_an_existing_token_is_shown_once() {
    let h = Harness::new().await;
    assert!(!h.tokens.refetchable());
    let first = h
        .tokens
        .generate("alice", &pw("alice"), false)
        .await
        .unwrap();
    assert!(first.token.is_some());
    let second = h
        .tokens
        .generate("alice", &pw("alice"), false)
        .await
        .unwrap();
    assert!(second.reused);
    assert!(second.token.is_none());
    assert_eq!(second.record.id, first.record.id);
}

#[tokio::test]
async fn rotate_revokes_the_old_token_and_issues_a_new_one() {
    let h = Harness::with(keyed()).await;
    let old = h
        .tokens
        .generate("alice", &pw("alice"), false)
        .await
        .unwrap();
    let old_tok = old.token.unwrap();
    assert_eq!(
        send(&h.tokens, bearer(old_tok.expose())).await.status,
        StatusCode::OK
    );
    let new = h
        .tokens
        .generate("alice", &pw("alice"), true)
        .await
        .unwrap();
    assert!(!new.reused);
    assert_ne!(new.record.id, old.record.id);
    let a = send(&h.tokens, bearer(old_tok.expose())).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.challenge().contains("revoked"));
    assert_eq!(
        send(&h.tokens, bearer(new.token.unwrap().expose()))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_expired_or_revoked_token_is_not_reused() {
    let h = Harness::with(keyed()).await;
    h.allow_all_users(Lifetime::days(1)).await;
    let first = h
        .tokens
        .generate("alice", &pw("alice"), false)
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(86_400));
    let second = h
        .tokens
        .generate("alice", &pw("alice"), false)
        .await
        .unwrap();
    assert!(!second.reused);
    assert_ne!(second.record.id, first.record.id);
    h.tokens.revoke(second.record.id).await.unwrap();
    let third = h
        .tokens
        .generate("alice", &pw("alice"), false)
        .await
        .unwrap();
    assert!(!third.reused);
}

#[tokio::test]
async fn generate_follows_the_policy_and_its_lifetimes() {
    let h = Harness::new().await;
    h.tokens.set_policy(Policy::None).await.unwrap();
    assert!(matches!(
        h.tokens.generate("alice", &pw("alice"), false).await,
        Err(ManageError::NotPermitted)
    ));
    assert_eq!(ManageError::NotPermitted.status(), StatusCode::FORBIDDEN);
    h.tokens
        .set_policy(Policy::Selected {
            rules: vec![
                Rule::role("dev", Lifetime::days(7)),
                Rule::identity_provider("local", Lifetime::days(30)),
            ],
        })
        .await
        .unwrap();
    let g = h
        .tokens
        .generate("alice", &pw("alice"), false)
        .await
        .unwrap();
    // The most generous matching rule: 30 days.
    assert_eq!(g.expires_at, Some(START + Duration::from_secs(30 * 86_400)));
    assert_eq!(g.record.expires_at, g.expires_at);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_look_the_same() {
    let h = Harness::new().await;
    let wrong = h
        .tokens
        .generate("alice", &Password::new("nope"), false)
        .await
        .unwrap_err();
    let unknown = h
        .tokens
        .generate("mallory", &Password::new("nope"), false)
        .await
        .unwrap_err();
    assert!(matches!(wrong, ManageError::InvalidCredentials));
    assert_eq!(wrong.to_string(), unknown.to_string());
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn failed_attempts_lock_the_user_out_until_the_window_passes() {
    let h = Harness::with(|b| b.failed_attempts(3, Duration::from_secs(600))).await;
    for _ in 0..3 {
        assert!(matches!(
            h.tokens
                .generate("alice", &Password::new("bad"), false)
                .await,
            Err(ManageError::InvalidCredentials)
        ));
    }
    // Even the right password is refused now, with the time left.
    let err = h
        .tokens
        .generate("alice", &pw("alice"), false)
        .await
        .unwrap_err();
    match err {
        ManageError::RateLimited { retry_after } => {
            assert_eq!(retry_after, Duration::from_secs(600))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(
        ManageError::RateLimited {
            retry_after: Duration::ZERO
        }
        .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another user is not affected.
    assert!(h.tokens.generate("root", &pw("root"), false).await.is_ok());
    h.clock.advance(Duration::from_secs(600));
    assert!(
        h.tokens
            .generate("alice", &pw("alice"), false)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn only_the_owner_or_an_admin_may_revoke() {
    let h = Harness::new().await;
    let (_, alice_id) = h.token(&h.alice).await;
    let (_, admin_id) = h.token(&h.admin).await;
    assert!(matches!(
        h.tokens.revoke_as(&h.alice, admin_id).await,
        Err(ManageError::Forbidden)
    ));
    // A non-admin cannot probe for token ids either.
    assert!(matches!(
        h.tokens
            .revoke_as(&h.alice, tower_api_tokens::store::TokenId::new())
            .await,
        Err(ManageError::Forbidden)
    ));
    assert!(h.tokens.revoke_as(&h.alice, alice_id).await.is_ok());
    assert!(h.tokens.revoke_as(&h.admin, admin_id).await.is_ok());
    let (_, again) = h.token(&h.alice).await;
    assert!(h.tokens.revoke_as(&h.admin, again).await.is_ok());
    assert!(matches!(
        h.tokens
            .revoke_as(&h.admin, tower_api_tokens::store::TokenId::new())
            .await,
        Err(ManageError::UnknownToken)
    ));
}

#[tokio::test]
async fn last_used_at_is_written_behind_at_most_once_per_interval() {
    let h = Harness::with(|b| b.usage_interval(Duration::from_secs(60))).await;
    let (tok, id) = h.token(&h.alice).await;
    for _ in 0..20 {
        assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
    }
    h.tokens.flush().await;
    let record = h.store.inner.get(id).await.unwrap().unwrap();
    assert_eq!(record.last_used_at, Some(START));

    // Within the interval: no new write.
    h.clock.advance(Duration::from_secs(59));
    send(&h.tokens, bearer(&tok)).await;
    h.tokens.flush().await;
    let record = h.store.inner.get(id).await.unwrap().unwrap();
    assert_eq!(record.last_used_at, Some(START));

    // After it: one more.
    h.clock.advance(Duration::from_secs(1));
    send(&h.tokens, bearer(&tok)).await;
    h.tokens.flush().await;
    let record = h.store.inner.get(id).await.unwrap().unwrap();
    assert_eq!(record.last_used_at, Some(START + Duration::from_secs(60)));
    // 22 requests, two writes.
    assert_eq!(h.store.touched.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_role_change_applies_to_cached_tokens_on_this_instance() {
    let h = Harness::new().await;
    h.tokens
        .set_policy(Policy::Selected {
            rules: vec![Rule::role("dev", Lifetime::days(1))],
        })
        .await
        .unwrap();
    let (tok, _) = h.token(&h.alice).await;
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, StatusCode::OK);
    let mut changed = h.alice.clone();
    changed.roles = vec!["ops".into()];
    h.tokens.update_user(&changed).await.unwrap();
    assert_eq!(
        send(&h.tokens, bearer(&tok)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_get_no_more_checks_than_the_limit() {
    let h = Harness::with(|b| b.failed_attempts(10, Duration::from_secs(600))).await;
    let attempts: Vec<_> = (0..40)
        .map(|i| {
            let tokens = h.tokens.clone();
            tokio::spawn(async move {
                tokens
                    .generate("alice", &Password::new(format!("wrong-{i}")), false)
                    .await
                    .unwrap_err()
            })
        })
        .collect();
    let mut checked = 0;
    let mut limited = 0;
    for a in attempts {
        match a.await.unwrap() {
            ManageError::InvalidCredentials => checked += 1,
            ManageError::RateLimited { .. } => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((checked, limited), (10, 30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_correct_passwords_are_never_refused() {
    let h = Harness::with(|b| b.failed_attempts(10, Duration::from_secs(600))).await;
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let tokens = h.tokens.clone();
            tokio::spawn(async move { tokens.verify_password("alice", &pw("alice")).await })
        })
        .collect();
    for a in attempts {
        assert_eq!(a.await.unwrap().unwrap().username, "alice");
    }
}

// ---- per-client limits -------------------------------------------------------

/// The client at `addr`: an IP address, or an IP address with a port.
fn client(addr: &str) -> ClientId {
    match addr.parse::<IpAddr>() {
        Ok(ip) => ClientId::from(ip),
        Err(_) => ClientId::from(addr.parse::<SocketAddr>().unwrap()),
    }
}

/// The `retry_after` of a `RateLimited`; panics on anything else.
fn retry_after<T: std::fmt::Debug>(answer: Result<T, ManageError>) -> Duration {
    match answer {
        Err(ManageError::RateLimited { retry_after }) => retry_after,
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

fn is_invalid<T>(answer: &Result<T, ManageError>) -> bool {
    matches!(answer, Err(ManageError::InvalidCredentials))
}

const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);

#[tokio::test]
async fn a_flood_against_one_user_locks_only_that_user_not_others_behind_the_same_client() {
    // The defaults: 10 per user name, 30 per client, in 15 minutes.
    let h = Harness::new().await;
    let bob = user("bob", &["dev"], "local");
    h.tokens.create_user(&bob, &pw("bob")).await.unwrap();
    let (a, b) = (client("203.0.113.7"), client("198.51.100.20"));
    let mut checked = 0;
    for i in 0..100 {
        let answer = h
            .tokens
            .generate_from(
                a.clone(),
                "bob",
                &Password::new(format!("guess-{i}")),
                false,
            )
            .await;
        if is_invalid(&answer) {
            checked += 1;
        } else {
            assert_eq!(retry_after(answer), FIFTEEN_MINUTES, "attempt {i}");
        }
    }
    assert_eq!(checked, 10);
    assert_eq!(h.store.password_checks(), 10);
    // bob is locked, from any client, even with his password ...
    for c in [&a, &b] {
        let answer = h
            .tokens
            .generate_from(c.clone(), "bob", &pw("bob"), false)
            .await;
        assert_eq!(retry_after(answer), FIFTEEN_MINUTES);
    }
    // ... and the refusals did not count against client A: alice, behind the
    // same address, and from another one, still gets her token.
    for c in [&a, &b] {
        let g = h
            .tokens
            .generate_from(c.clone(), "alice", &pw("alice"), false)
            .await
            .unwrap();
        assert_eq!(g.record.user_id, h.alice.id);
    }
    assert!(
        h.tokens
            .verify_password_from(a, "root", &pw("root"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_spray_across_names_locks_the_client_until_the_window_passes() {
    let h = Harness::new().await;
    let (a, b) = (client("203.0.113.7"), client("198.51.100.20"));
    let wrong = Password::new("Summer2026!");
    // One guess at each of 30 names (none is locked per name) is checked ...
    for i in 0..30 {
        let answer = h
            .tokens
            .generate_from(a.clone(), &format!("user-{i}"), &wrong, false)
            .await;
        assert!(is_invalid(&answer), "guess {i}: {answer:?}");
    }
    assert_eq!(h.store.password_checks(), 30);
    // ... the 31st is refused before any check, for the whole window ...
    let answer = h
        .tokens
        .generate_from(a.clone(), "user-30", &wrong, false)
        .await;
    assert_eq!(retry_after(answer), FIFTEEN_MINUTES);
    // ... and so is a real user's right password from that client, by either call.
    let answer = h
        .tokens
        .generate_from(a.clone(), "alice", &pw("alice"), false)
        .await;
    assert_eq!(retry_after(answer), FIFTEEN_MINUTES);
    let answer = h
        .tokens
        .verify_password_from(a.clone(), "root", &pw("root"))
        .await;
    assert_eq!(retry_after(answer), FIFTEEN_MINUTES);
    assert_eq!(h.store.password_checks(), 30);
    // Client B is not affected: its guesses are checked, its users get in.
    assert!(is_invalid(
        &h.tokens
            .generate_from(b.clone(), "user-31", &wrong, false)
            .await
    ));
    assert!(
        h.tokens
            .generate_from(b, "alice", &pw("alice"), false)
            .await
            .is_ok()
    );
    // Without a client only the per-name limit applies.
    assert!(
        h.tokens
            .generate("alice", &pw("alice"), false)
            .await
            .is_ok()
    );

    // One second before the window ends: still refused, with one second left.
    h.clock.advance(FIFTEEN_MINUTES - Duration::from_secs(1));
    let answer = h
        .tokens
        .generate_from(a.clone(), "alice", &pw("alice"), false)
        .await;
    assert_eq!(retry_after(answer), Duration::from_secs(1));
    // The window has passed: A is accepted again.
    h.clock.advance(Duration::from_secs(1));
    assert!(
        h.tokens
            .generate_from(a.clone(), "alice", &pw("alice"), false)
            .await
            .is_ok()
    );
    assert!(is_invalid(
        &h.tokens.generate_from(a, "user-32", &wrong, false).await
    ));
}

#[tokio::test]
async fn a_correct_password_does_not_forgive_a_clients_failures() {
    let h = Harness::with(|b| b.client_failed_attempts(3, Duration::from_secs(600))).await;
    let a = client("203.0.113.7");
    for name in ["user-1", "user-2"] {
        let answer = h
            .tokens
            .verify_password_from(a.clone(), name, &pw("x"))
            .await;
        assert!(is_invalid(&answer));
    }
    // The attacker signs in with an account of their own ...
    assert!(
        h.tokens
            .verify_password_from(a.clone(), "alice", &pw("alice"))
            .await
            .is_ok()
    );
    // ... and still has one guess left, not three.
    assert!(is_invalid(
        &h.tokens
            .verify_password_from(a.clone(), "user-3", &pw("x"))
            .await
    ));
    let answer = h.tokens.verify_password_from(a, "user-4", &pw("x")).await;
    assert_eq!(retry_after(answer), Duration::from_secs(600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_at_many_names_from_one_client_get_exactly_max_checks() {
    let h = Harness::new().await;
    let a = client("2001:db8:7:7::1");
    let attempts: Vec<_> = (0..100)
        .map(|i| {
            let (tokens, a) = (h.tokens.clone(), a.clone());
            tokio::spawn(async move {
                tokens
                    .generate_from(a, &format!("user-{i}"), &Password::new("guess"), false)
                    .await
                    .unwrap_err()
            })
        })
        .collect();
    let (mut checked, mut limited) = (0, 0);
    for attempt in attempts {
        match attempt.await.unwrap() {
            ManageError::InvalidCredentials => checked += 1,
            // While checks are under way the wait is short; after, the window's rest.
            ManageError::RateLimited { retry_after } => {
                assert!(retry_after > Duration::ZERO && retry_after <= FIFTEEN_MINUTES);
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((checked, limited), (30, 70));
    assert_eq!(h.store.password_checks(), 30);
    // Nothing is left reserved: the next attempt waits for the window's end.
    let answer = h
        .tokens
        .generate_from(a, "alice", &pw("alice"), false)
        .await;
    assert_eq!(retry_after(answer), FIFTEEN_MINUTES);
}

#[tokio::test]
async fn addresses_in_one_ipv6_64_are_one_client_and_ipv4_mapped_is_ipv4() {
    let h = Harness::with(|b| b.client_failed_attempts(2, Duration::from_secs(600))).await;
    let guess = |c: &str, name: &str| {
        let (tokens, c, name) = (h.tokens.clone(), client(c), name.to_owned());
        async move {
            tokens
                .verify_password_from(c, &name, &Password::new("guess"))
                .await
        }
    };
    assert!(is_invalid(&guess("2001:db8:1:2::1", "u1").await));
    assert!(is_invalid(
        &guess("[2001:db8:1:2:ffff:ffff:ffff:ffff]:443", "u2").await
    ));
    let answer = guess("2001:db8:1:2:abcd::5", "u3").await;
    assert_eq!(retry_after(answer), Duration::from_secs(600));
    // The neighbouring /64s are other clients.
    assert!(is_invalid(&guess("2001:db8:1:3::1", "u3").await));
    assert!(is_invalid(&guess("2001:db8:1:1:ffff::1", "u3").await));

    assert!(is_invalid(&guess("::ffff:192.0.2.1", "u4").await));
    assert!(is_invalid(&guess("192.0.2.1:5555", "u5").await));
    let answer = guess("192.0.2.1", "u6").await;
    assert_eq!(retry_after(answer), Duration::from_secs(600));
    assert!(is_invalid(&guess("192.0.2.2", "u6").await));
    // A key names its own client, even when it spells an address.
    let named = h
        .tokens
        .verify_password_from(ClientId::named("192.0.2.1"), "u7", &Password::new("guess"))
        .await;
    assert!(is_invalid(&named));
}

#[tokio::test]
async fn a_zero_client_limit_is_a_configuration_error() {
    let base = || ApiTokens::builder().backend(MemoryStore::new());
    assert!(matches!(
        base()
            .client_failed_attempts(0, Duration::from_secs(60))
            .build()
            .await,
        Err(ConfigError::ZeroAttempts("client_failed_attempts"))
    ));
    assert!(matches!(
        base()
            .client_failed_attempts(5, Duration::ZERO)
            .build()
            .await,
        Err(ConfigError::ZeroDuration("client_failed_attempts_window"))
    ));
    assert!(matches!(
        base()
            .failed_attempts(0, Duration::from_secs(60))
            .build()
            .await,
        Err(ConfigError::ZeroAttempts("failed_attempts"))
    ));
}

#[tokio::test]
async fn a_check_whose_caller_hung_up_still_holds_its_place_and_still_counts() {
    let h = Harness::with(|b| b.client_failed_attempts(1, Duration::from_secs(900))).await;
    let a = client("203.0.113.9");
    let wrong = Password::new("Summer2026!");
    // The caller gives up as soon as the check has started (a dropped connection).
    let gave_up = tokio::time::timeout(
        Duration::ZERO,
        h.tokens.generate_from(a.clone(), "bob", &wrong, false),
    )
    .await;
    assert!(gave_up.is_err(), "the check finished within one poll");
    // The abandoned check still holds the client's one place: no second check
    // starts alongside it, not even with the right password.
    let answer = h
        .tokens
        .generate_from(a.clone(), "alice", &pw("alice"), false)
        .await;
    assert!(
        matches!(answer, Err(ManageError::RateLimited { .. })),
        "{answer:?}"
    );
    // Once it ends, its failure is counted: the client is refused for the window.
    let mut refused_for_the_window = false;
    for _ in 0..500 {
        let answer = h
            .tokens
            .generate_from(a.clone(), "alice", &pw("alice"), false)
            .await;
        if let Err(ManageError::RateLimited { retry_after }) = answer
            && retry_after == Duration::from_secs(900)
        {
            refused_for_the_window = true;
            break;
        }
        // Polling for the abandoned check's end, which runs on a blocking thread.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused_for_the_window,
        "the abandoned failure was never counted"
    );
    assert_eq!(h.store.password_checks(), 1);
}
