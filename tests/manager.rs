//! The management side: generate, reuse, rotate, revoke, attempt limits,
//! write-behind `last_used_at`, user changes.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;
use tower_api_tokens::password::Password;
use tower_api_tokens::policy::{Lifetime, Policy, Rule};
use tower_api_tokens::store::TokenStore;
use tower_api_tokens::{ManageError, ServerKey};

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
    h.tokens
        .set_policy(Policy::AllUsers {
            lifetime: Lifetime::days(1),
        })
        .await
        .unwrap();
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
