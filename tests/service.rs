//! The example service's whole story over a real socket and a real SQLite file:
//! the router of `examples/server`, built as its `main.rs` builds it.
#![cfg(all(feature = "axum", feature = "sqlite"))]

#[path = "../examples/server/app.rs"]
#[allow(dead_code)]
mod app;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64ct::{Base64, Encoding};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;
use tower_api_tokens::clock::ManualClock;
use tower_api_tokens::password::Password;
use tower_api_tokens::store::{SqliteStore, User, UserId};
use tower_api_tokens::{ApiTokens, ServerKey};

const T0: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);
const DAY: Duration = Duration::from_secs(86_400);
const ADMIN_PW: &str = "correct horse battery";

enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

struct Service {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    server: tokio::task::JoinHandle<()>,
    tokens: ApiTokens,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
    raw: String,
}

impl Service {
    /// Opens the store at `db` and serves the example's router, as `main.rs` does.
    async fn start(db: &Path, clock: &ManualClock) -> Self {
        let store = SqliteStore::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let tokens = ApiTokens::builder()
            .backend(store)
            .server_key(ServerKey::new("the example service's key, 32 bytes+").unwrap())
            .realm(app::REALM)
            .clock(clock.clone())
            .build()
            .await
            .unwrap();
        if tokens.user_by_name("admin").await.unwrap().is_none() {
            let admin = User {
                id: UserId::new(),
                username: "admin".into(),
                roles: vec!["admin".into()],
                identity_provider: "local".into(),
            };
            tokens
                .create_user(&admin, &Password::new(ADMIN_PW))
                .await
                .unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // As `main.rs` serves it: with the peer's address.
        let router = app::router(tokens.clone());
        let server = tokio::spawn(async move {
            let app = router.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app).await.unwrap();
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            addr,
            client,
            server,
            tokens,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => req = req.header("authorization", format!("Bearer {t}")),
            Auth::Basic(u, p) => {
                let encoded = Base64::encode_string(format!("{u}:{p}").as_bytes());
                req = req.header("authorization", format!("Basic {encoded}"));
            }
        }
        let body = match body {
            Some(json) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::default(),
        };
        let res = self.client.request(req.body(body).unwrap()).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let raw = String::from_utf8(bytes.to_vec()).unwrap();
        let json = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            json,
            raw,
        }
    }

    async fn generate(&self, user: &str, password: &str, rotate: bool) -> Answer {
        self.call(
            Method::POST,
            "/api/v1/profile/api-key",
            Auth::None,
            Some(json!({"username": user, "password": password, "rotate": rotate})),
        )
        .await
    }

    async fn whoami(&self, token: &str) -> Answer {
        self.call(Method::GET, "/api/v1/whoami", Auth::Bearer(token), None)
            .await
    }

    async fn set_policy(&self, auth: Auth<'_>, policy: Value) -> Answer {
        self.call(
            Method::PUT,
            "/api/v1/admin/api-token-settings",
            auth,
            Some(policy),
        )
        .await
    }

    async fn stop(self) {
        self.tokens.flush().await;
        self.server.abort();
        let _ = self.server.await;
    }
}

fn token_of(a: &Answer) -> String {
    a.json["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_whole_story_over_http_and_sqlite() {
    // Everything the service logs, at TRACE (hyper, axum, sqlx, the layer).
    let capture = support::Capture::global();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("api-tokens.db");
    let clock = ManualClock::new(T0);
    let svc = Service::start(&db, &clock).await;
    let mut secrets: Vec<String> = Vec::new();

    // The admin generates a token with the password.
    let a = svc.generate("admin", ADMIN_PW, false).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.raw);
    assert_eq!(a.json["reused"], false);
    assert_eq!(a.json["expires_at"], "2026-05-30T12:00:00Z"); // the fresh default: 90 days
    let admin_tok = token_of(&a);
    secrets.push(admin_tok.clone());
    let wrong = svc.generate("admin", "not it", false).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let nobody = svc.generate("nobody", "not it", false).await;
    assert_eq!(
        (nobody.status, nobody.json.clone()),
        (wrong.status, wrong.json.clone())
    );

    // The admin creates users with roles and identity providers.
    for (name, roles, provider) in [
        ("dev", json!(["dev"]), "local"),
        ("sam", json!([]), "saml-corp"),
        ("gus", json!(["guest"]), "local"),
    ] {
        let a = svc
            .call(
                Method::POST,
                "/api/v1/admin/users",
                Auth::Bearer(&admin_tok),
                Some(
                    json!({"username": name, "password": format!("{name}-password"),
                            "roles": roles, "identity_provider": provider}),
                ),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.raw);
        assert_eq!(a.json["username"], name);
        assert!(!a.raw.contains("password"), "{}", a.raw);
    }
    let dup = svc
        .call(
            Method::POST,
            "/api/v1/admin/users",
            Auth::Bearer(&admin_tok),
            Some(json!({"username": "dev", "password": "whatever-pw", "roles": []})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);

    // Users generate, and get the same token back on a second call.
    let mut user_tok = std::collections::HashMap::new();
    for name in ["dev", "sam", "gus"] {
        let first = svc.generate(name, &format!("{name}-password"), false).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.raw);
        let again = svc.generate(name, &format!("{name}-password"), false).await;
        assert_eq!(again.json["reused"], true);
        assert_eq!(token_of(&again), token_of(&first));
        secrets.push(token_of(&first));
        user_tok.insert(name, token_of(&first));
    }
    let a = svc.whoami(&user_tok["dev"]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["username"], "dev");
    assert_eq!(a.json["roles"], json!(["dev"]));
    assert!(a.headers.contains_key("api-token-expiration"));

    // A user's token on an admin route: 403 insufficient_scope; no token: 401.
    let a = svc
        .call(
            Method::GET,
            "/api/v1/admin/api-token-settings",
            Auth::Bearer(&user_tok["dev"]),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json["error"], "insufficient_scope");
    assert!(
        a.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    let a = svc
        .call(
            Method::GET,
            "/api/v1/admin/api-token-settings",
            Auth::None,
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // `none` refuses every token at once, the admin's too ...
    let a = svc
        .set_policy(Auth::Bearer(&admin_tok), json!({"mode": "none"}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.raw);
    for tok in user_tok.values().chain([&admin_tok]) {
        assert_eq!(svc.whoami(tok).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        svc.generate("dev", "dev-password", false).await.status,
        StatusCode::FORBIDDEN
    );
    // ... and a Basic-authenticated admin restores it.
    let a = svc
        .set_policy(
            Auth::Basic("admin", ADMIN_PW),
            json!({"mode": "all_users", "lifetime": "90d"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.raw);
    assert_eq!(svc.whoami(&admin_tok).await.status, StatusCode::OK);
    let a = svc
        .set_policy(Auth::Basic("dev", "dev-password"), json!({"mode": "none"}))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = svc
        .set_policy(
            Auth::Basic("admin", ADMIN_PW),
            json!({"mode": "selected", "rules": []}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json["error"], "invalid_request");

    // `selected` by role and by identity provider admits exactly the right users.
    let a = svc
        .set_policy(
            Auth::Basic("admin", ADMIN_PW),
            json!({"mode": "selected", "rules": [
                {"role": "dev", "lifetime": "90d"},
                {"identity_provider": "saml-corp", "lifetime": "never"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(svc.whoami(&user_tok["dev"]).await.status, StatusCode::OK);
    assert_eq!(svc.whoami(&user_tok["sam"]).await.status, StatusCode::OK);
    assert_eq!(
        svc.whoami(&user_tok["gus"]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        svc.whoami(&admin_tok).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Tightening a lifetime cuts existing tokens ...
    clock.advance(2 * DAY);
    svc.set_policy(
        Auth::Basic("admin", ADMIN_PW),
        json!({"mode": "selected", "rules": [{"role": "dev", "lifetime": "1d"},
               {"identity_provider": "saml-corp", "lifetime": "never"}]}),
    )
    .await;
    let a = svc.whoami(&user_tok["dev"]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json["error_description"], "the token has expired");
    // ... loosening brings back its own 90 days, never more.
    svc.set_policy(
        Auth::Basic("admin", ADMIN_PW),
        json!({"mode": "selected", "rules": [{"role": "dev", "lifetime": "never"},
               {"identity_provider": "saml-corp", "lifetime": "never"}]}),
    )
    .await;
    assert_eq!(svc.whoami(&user_tok["dev"]).await.status, StatusCode::OK);
    clock.advance(88 * DAY); // day 90
    assert_eq!(
        svc.whoami(&user_tok["dev"]).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Rotate and revoke take effect on the next request.
    let rotated = svc.generate("sam", "sam-password", true).await;
    assert_eq!(rotated.json["reused"], false);
    let sam_new = token_of(&rotated);
    secrets.push(sam_new.clone());
    assert_eq!(
        svc.whoami(&user_tok["sam"]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(svc.whoami(&sam_new).await.status, StatusCode::OK);
    let meta = svc
        .call(
            Method::GET,
            "/api/v1/profile/api-key",
            Auth::Bearer(&sam_new),
            None,
        )
        .await;
    assert_eq!(meta.status, StatusCode::OK);
    assert_eq!(meta.json["id"], rotated.json["token_id"]);
    assert_eq!(meta.json["expires_at"], Value::Null);
    let a = svc
        .call(
            Method::DELETE,
            "/api/v1/profile/api-key",
            Auth::Bearer(&sam_new),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.json["revoked_at"].is_string());
    assert_eq!(svc.whoami(&sam_new).await.status, StatusCode::UNAUTHORIZED);

    // The admin lists every token (metadata only) and revokes one.
    svc.set_policy(
        Auth::Basic("admin", ADMIN_PW),
        json!({"mode": "all_users", "lifetime": "never"}),
    )
    .await;
    let gus_tok = svc.generate("gus", "gus-password", false).await;
    let gus_id = gus_tok.json["token_id"].as_str().unwrap().to_owned();
    let list = svc
        .call(
            Method::GET,
            "/api/v1/admin/api-tokens",
            Auth::Basic("admin", ADMIN_PW),
            None,
        )
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.json.as_array().unwrap().len() >= 5);
    // Day 90: the admin's first token (90 days) has just expired; Basic still works.
    assert_eq!(
        svc.whoami(&admin_tok).await.status,
        StatusCode::UNAUTHORIZED
    );
    let a = svc
        .call(
            Method::DELETE,
            &format!("/api/v1/admin/api-tokens/{gus_id}"),
            Auth::Basic("admin", ADMIN_PW),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.raw);
    assert_eq!(
        svc.whoami(&token_of(&gus_tok)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let a = svc
        .call(
            Method::DELETE,
            "/api/v1/admin/api-tokens/not-a-uuid",
            Auth::Basic("admin", ADMIN_PW),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    for secret in &secrets {
        assert!(
            !list.raw.contains(&secret[4..]),
            "a secret in the token list"
        );
        assert!(
            !meta.raw.contains(&secret[4..]),
            "a secret in token metadata"
        );
    }

    // A restart on the same file keeps users, tokens and the policy.
    let admin_before = svc.generate("admin", ADMIN_PW, false).await;
    assert_eq!(admin_before.json["reused"], false); // the old one expired
    let admin_new = token_of(&admin_before);
    secrets.push(admin_new.clone());
    svc.stop().await;
    let svc = Service::start(&db, &clock).await;
    let a = svc
        .call(
            Method::GET,
            "/api/v1/admin/api-token-settings",
            Auth::Bearer(&admin_new),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.raw);
    assert_eq!(a.json, json!({"mode": "all_users", "lifetime": "never"}));
    let admin_after = svc.generate("admin", ADMIN_PW, false).await;
    assert_eq!(admin_after.json["reused"], true);
    assert_eq!(token_of(&admin_after), admin_new);
    assert_eq!(svc.whoami(&admin_new).await.json["username"], "admin");
    assert_eq!(svc.whoami(&sam_new).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        svc.whoami(&token_of(&gus_tok)).await.status,
        StatusCode::UNAUTHORIZED
    );
    for user in ["dev", "sam", "gus"] {
        let answer = svc.generate(user, &format!("{user}-password"), false).await;
        assert_eq!(answer.status, StatusCode::OK, "{user} after the restart");
    }
    svc.stop().await;

    let log = capture.text();
    assert!(log.contains("authenticate"), "the capture saw nothing");
    for secret in &secrets {
        assert!(
            !log.contains(&secret[4..secret.len() - 6]),
            "a token in the log"
        );
    }
    for password in [ADMIN_PW, "dev-password", "sam-password", "gus-password"] {
        assert!(!log.contains(password), "a password in the log");
    }
}

#[tokio::test]
async fn failed_passwords_are_rate_limited_with_retry_after() {
    let capture = support::Capture::global();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let svc = Service::start(&dir.path().join("db"), &clock).await;
    for _ in 0..10 {
        assert_eq!(
            svc.generate("admin", "wrong", false).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // The lockout is logged with a digest of the name: SHA-256("admin") starts
    // 8c6976e5b541 (`printf %s admin | sha256sum`).
    let log = capture.text();
    assert!(
        log.contains("too many failed password attempts for this user name")
            && log.contains("username_sha256=8c6976e5b541"),
        "the lockout was not logged"
    );
    // Basic credentials on admin routes count against the same limit.
    admin_refused_until_the_window_passes(&svc, &clock).await;
    svc.stop().await;
}

/// The admin's right password is refused with `429` and `Retry-After: 900` on
/// the profile route and on an admin route (Basic), until the 15-minute window
/// has passed.
async fn admin_refused_until_the_window_passes(svc: &Service, clock: &ManualClock) {
    let a = svc.generate("admin", ADMIN_PW, false).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "900");
    assert_eq!(a.json["error"], "too_many_attempts");
    let a = svc
        .call(
            Method::GET,
            "/api/v1/admin/api-tokens",
            Auth::Basic("admin", ADMIN_PW),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "900");
    clock.advance(Duration::from_secs(900));
    assert_eq!(
        svc.generate("admin", ADMIN_PW, false).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_client_spraying_many_names_gets_429_with_retry_after() {
    support::Capture::global();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let svc = Service::start(&dir.path().join("db"), &clock).await;
    // 40 concurrent guesses, one per name, from one peer (127.0.0.1): the
    // default client limit lets exactly 30 be checked.
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let (client, addr) = (svc.client.clone(), svc.addr);
            tokio::spawn(async move {
                let body = json!({"username": format!("user-{i}"), "password": "Winter2026!"});
                let req = Request::post(format!("http://{addr}/api/v1/profile/api-key"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap();
                let res = client.request(req).await.unwrap();
                (res.status(), res.headers().get("retry-after").cloned())
            })
        })
        .collect();
    let (mut checked, mut limited) = (0, 0);
    for guess in guesses {
        match guess.await.unwrap() {
            (StatusCode::UNAUTHORIZED, _) => checked += 1,
            (StatusCode::TOO_MANY_REQUESTS, Some(retry_after)) => {
                let secs: u64 = retry_after.to_str().unwrap().parse().unwrap();
                assert!((1..=900).contains(&secs), "Retry-After: {secs}");
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((checked, limited), (30, 10));
    // Now every password from this client is refused for the window's rest:
    // the admin's right one too, on the profile route and on admin routes.
    admin_refused_until_the_window_passes(&svc, &clock).await;
    svc.stop().await;
}

#[tokio::test]
async fn malformed_bodies_get_json_errors_without_echoing_them() {
    support::Capture::global();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let svc = Service::start(&dir.path().join("db"), &clock).await;
    let a = svc
        .call(
            Method::POST,
            "/api/v1/profile/api-key",
            Auth::None,
            Some(json!({"username": "admin", "password": 12345678, "extra": "secret-ish"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json["error"], "invalid_request");
    assert!(
        !a.raw.contains("12345678") && !a.raw.contains("secret-ish"),
        "{}",
        a.raw
    );
    let a = svc
        .set_policy(
            Auth::Basic("admin", ADMIN_PW),
            json!({"mode": "all_users", "lifetime": "0d"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.json["error_description"]
            .as_str()
            .unwrap()
            .contains("longer than zero"),
        "{}",
        a.raw
    );
    svc.stop().await;
}
