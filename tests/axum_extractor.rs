//! `Principal` and `Option<Principal>` as axum extractors.
#![cfg(feature = "axum")]

mod support;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tower::ServiceExt;
use tower_api_tokens::Principal;

async fn body_of(res: axum::response::Response) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn get_with(uri: &str, auth: Option<&str>) -> Request<Body> {
    let mut req = Request::get(uri);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn principal_and_optional_principal_extract() {
    let h = Harness::new().await;
    let (tok, _) = h.token(&h.alice).await;
    let auth = format!("Bearer {tok}");
    let app = Router::new()
        .route(
            "/me",
            get(|p: Principal| async move { p.username().to_owned() }),
        )
        .route(
            "/maybe",
            get(|p: Option<Principal>| async move {
                p.map_or("anonymous".to_owned(), |p| p.username().to_owned())
            }),
        )
        .layer(h.tokens.layer().allow_anonymous(true));

    let res = app
        .clone()
        .oneshot(get_with("/me", Some(&auth)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_of(res).await, "alice");
    let res = app
        .clone()
        .oneshot(get_with("/maybe", Some(&auth)))
        .await
        .unwrap();
    assert_eq!(body_of(res).await, "alice");
    let res = app.clone().oneshot(get_with("/maybe", None)).await.unwrap();
    assert_eq!(body_of(res).await, "anonymous");
    // Required principal on an anonymous request: the layer let it through, the
    // extractor names the cause.
    let res = app.oneshot(get_with("/me", None)).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body_of(res).await.contains("Perhaps you forgot to add"));
}

#[tokio::test]
async fn a_router_without_the_layer_gets_a_500_naming_the_cause() {
    let app = Router::new().route(
        "/me",
        get(|p: Principal| async move { p.username().to_owned() }),
    );
    let res = app.oneshot(get_with("/me", None)).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = body_of(res).await;
    assert!(body.contains("tower_api_tokens::Principal"), "{body}");
}
