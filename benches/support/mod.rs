//! Shared by the benches: a warmed-up layer, requests, and the ratio report.
#![allow(dead_code)]

use std::path::PathBuf;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};
use http_body_util::Full;
use tower_api_tokens::ApiTokens;
use tower_api_tokens::store::{Directory, MemoryStore, User, UserId};

/// A layer over a memory store, and one of its tokens as a header value.
pub async fn tokens_with_token() -> (ApiTokens, HeaderValue, String) {
    tokens_with_token_configured(|b| b).await
}

/// As [`tokens_with_token`], with a say in the builder.
pub async fn tokens_with_token_configured(
    configure: impl FnOnce(tower_api_tokens::Builder) -> tower_api_tokens::Builder,
) -> (ApiTokens, HeaderValue, String) {
    let store = MemoryStore::new();
    let user = User {
        id: UserId::new(),
        username: "bench".into(),
        roles: vec!["dev".into()],
        identity_provider: "local".into(),
    };
    store.create_user(&user, &"pw".into()).await.unwrap();
    let tokens = configure(ApiTokens::builder().backend(store))
        .build()
        .await
        .unwrap();
    let token = tokens
        .issue(user.id)
        .await
        .unwrap()
        .token
        .expose()
        .to_owned();
    let header = HeaderValue::try_from(format!("Bearer {token}")).unwrap();
    (tokens, header, token)
}

/// The request every variant serves: `GET /` with one `Authorization` header.
pub fn request(auth: &HeaderValue) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::default());
    req.headers_mut().insert(AUTHORIZATION, auth.clone());
    req
}

/// The median (ns) criterion measured for `group/id` in this run.
pub fn median_ns(group: &str, id: &str) -> Option<f64> {
    let dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let path = dir
        .join("criterion")
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}
