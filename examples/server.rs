//! A small axum service with one protected route. Prints a token at start.
//!
//! `cargo run --all-features --example server`, then
//! `curl -H "Authorization: Bearer <token>" http://127.0.0.1:8080/api/v1/whoami`.

use axum::{Json, Router, routing::get};
use tower_api_tokens::store::{Directory, MemoryStore, User, UserId};
use tower_api_tokens::{ApiTokens, Principal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let admin = User {
        id: UserId::new(),
        username: "admin".into(),
        roles: vec!["admin".into()],
        identity_provider: "local".into(),
    };
    store.create_user(&admin, &"change-me".into()).await?;

    let tokens = ApiTokens::builder().backend(store).build().await?;
    let issued = tokens.issue(admin.id).await?;
    println!("token for admin: {}", issued.token.expose());

    let app = Router::new()
        .route("/api/v1/whoami", get(|p: Principal| async move { Json(p) }))
        .layer(tokens.layer())
        .route("/healthz", get(|| async { "ok" }));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
