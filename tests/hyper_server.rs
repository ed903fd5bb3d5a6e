//! The layer in front of a real hyper server on 127.0.0.1.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use support::*;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

#[tokio::test]
async fn a_hyper_server_authenticates_over_a_socket() {
    let h = Harness::new().await;
    let (tok, id) = h.token(&h.alice).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = ServiceBuilder::new().layer(h.tokens.layer()).service_fn(
        |req: Request<hyper::body::Incoming>| async move {
            let (parts, body) = req.into_parts();
            let body = Full::new(body.collect().await?.to_bytes());
            echo(Request::from_parts(parts, body))
                .await
                .map_err(|never| -> hyper::Error { match never {} })
        },
    );
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = |auth: Option<String>, method: http::Method| {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}/resource"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        client.request(req.body(Full::default()).unwrap())
    };

    let res = call(Some(format!("Bearer {tok}")), http::Method::GET)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().contains_key("api-token-expiration"));
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "alice");

    let res = call(None, http::Method::HEAD).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], BARE);
    assert!(
        res.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );

    h.tokens.revoke(id).await.unwrap();
    let res = call(Some(format!("bearer  {tok}")), http::Method::GET)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "invalid_token");
    assert_eq!(json["error_description"], "the token was revoked");
    server.abort();
}
