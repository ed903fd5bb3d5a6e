//! The layer around a plain hyper service, no axum.
//!
//! `cargo run --all-features --example hyper` prints a token, then serves
//! `127.0.0.1:8090`: `curl -H "Authorization: Bearer <token>" http://127.0.0.1:8090/`.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_api_tokens::store::{Directory, MemoryStore, User, UserId};
use tower_api_tokens::{ApiTokens, Principal};

async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The layer put the caller here; without a valid token we never get called.
    let who = req
        .extensions()
        .get::<Principal>()
        .map_or("nobody", |p| p.username())
        .to_owned();
    Ok(Response::new(Full::new(Bytes::from(format!(
        "hello, {who}\n"
    )))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let alice = User {
        id: UserId::new(),
        username: "alice".into(),
        roles: vec!["dev".into()],
        identity_provider: "local".into(),
    };
    store
        .create_user(&alice, &"alice's password".into())
        .await?;
    let tokens = ApiTokens::builder().backend(store).build().await?;
    println!(
        "token for alice: {}",
        tokens.issue(alice.id).await?.token.expose()
    );

    let service = ServiceBuilder::new()
        .layer(tokens.layer())
        .service_fn(hello);
    let listener = TcpListener::bind("127.0.0.1:8090").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {error}");
            }
        });
    }
}
