//! Personal API tokens for tower, hyper and axum services.
//!
//! Users generate a personal token after re-entering their password; an
//! administrator decides who may hold tokens and for how long; and a tower
//! [`Layer`](tower::Layer) authenticates every `Authorization: Bearer` request —
//! cache first, then a pluggable backend — enforces expiry and the policy in
//! force *now*, and puts the caller's [`Principal`] into the request's extensions.
//!
//! # The request path
//!
//! extract the `Authorization` header (RFC 6750 §2.1, RFC 9110 §11) → check the
//! token's format and checksum → SHA-256 → cache → (on a miss) the
//! [`TokenStore`](store::TokenStore) and [`Directory`](store::Directory) →
//! verify revocation, expiry and the current [`Policy`](policy::Policy) → inject
//! the [`Principal`].
//!
//! | request | answer |
//! |---|---|
//! | no `Authorization`, or another scheme | `401`, `WWW-Authenticate: Bearer realm="…"` |
//! | malformed (`Bearer` alone, two headers, not token68, too long) | `400`, `error="invalid_request"` |
//! | wrong format, unknown, revoked, expired, or not permitted by the policy | `401`, `error="invalid_token"` |
//! | the store fails or times out | `503` with `Retry-After` |
//!
//! # Example
//!
//! ```
//! use axum::{Extension, Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_api_tokens::{ApiTokens, Principal, store::{Directory, MemoryStore, User, UserId}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let alice = User {
//!     id: UserId::new(),
//!     username: "alice".into(),
//!     roles: vec!["dev".into()],
//!     identity_provider: "local".into(),
//! };
//! store.create_user(&alice, &"s3cret-password".into()).await?;
//!
//! let tokens = ApiTokens::builder().backend(store).build().await?;
//! let issued = tokens.issue(alice.id).await?;
//!
//! let app = Router::new()
//!     // With the `axum` feature, `p: Principal` works as an extractor directly.
//!     .route("/whoami", get(|p: Extension<Principal>| async move { p.username().to_owned() }))
//!     .layer(tokens.layer());
//!
//! // Accepted: the handler sees the principal.
//! let request = Request::get("/whoami")
//!     .header("authorization", format!("Bearer {}", issued.token.expose()))
//!     .body(Body::empty())?;
//! let response = app.clone().oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! // Rejected: no credentials.
//! let response = app.oneshot(Request::get("/whoami").body(Body::empty())?).await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"api\"");
//! # Ok(()) }
//! ```
#![warn(
    missing_docs,
    rust_2018_idioms,
    clippy::all,
    clippy::dbg_macro,
    clippy::todo,
    clippy::await_holding_lock
)]
#![deny(unreachable_pub)]
#![forbid(unsafe_code)]

pub mod attempts;
mod authenticator;
#[doc(hidden)]
pub mod bench_support;
mod builder;
mod cache;
pub mod changes;
pub mod clock;
pub mod error;
mod extract;
mod future;
pub mod issue;
mod layer;
mod manager;
pub mod password;
pub mod policy;
mod principal;
mod rejection;
mod service;
pub mod store;
pub mod token;
mod usage;

pub use attempts::ClientId;
pub use builder::{Builder, DEFAULT_EXPIRY_HEADER};
pub use error::{AuthError, ConfigError, InvalidRequest, InvalidToken, StoreError};
pub use future::ResponseFuture;
pub use issue::ServerKey;
pub use layer::ApiTokenAuthLayer;
pub use manager::{ApiTokens, Generated, IssuedToken, ManageError};
#[cfg(feature = "axum")]
pub use principal::MissingPrincipal;
pub use principal::Principal;
pub use rejection::{DefaultRejection, OnRejection, Rejection};
pub use service::ApiTokenAuth;
