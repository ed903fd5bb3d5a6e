//! Arbitrary bytes as one or several `Authorization` headers, through the
//! layer: the answer is 200, 400 or 401 (never a panic, never anything else),
//! and every refusal carries a `WWW-Authenticate` challenge.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use tower::{ServiceBuilder, ServiceExt};
use tower_api_tokens::ApiTokens;
use tower_api_tokens::store::{Directory, MemoryStore, User, UserId};

struct World {
    rt: tokio::runtime::Runtime,
    tokens: ApiTokens,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tokens = rt.block_on(async {
            let store = MemoryStore::new();
            let user = User {
                id: UserId::new(),
                username: "fuzz".into(),
                roles: vec!["dev".into()],
                identity_provider: "local".into(),
            };
            store.create_user(&user, &"pw".into()).await.unwrap();
            let tokens = ApiTokens::builder().backend(store).build().await.unwrap();
            // A real token exists, so the fuzzer can find the accepting path.
            let issued = tokens.issue(user.id).await.unwrap();
            println!("seed token: Bearer {}", issued.token.expose());
            tokens
        });
        World { rt, tokens }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let mut req = Request::new(Full::<Bytes>::default());
    // A 0xFF byte separates several header values.
    for part in data.split(|&b| b == 0xFF).take(4) {
        if let Ok(value) = HeaderValue::from_bytes(part) {
            req.headers_mut().append("authorization", value);
        }
    }
    let svc = ServiceBuilder::new().layer(w.tokens.layer()).service_fn(
        |_r: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
        },
    );
    let res = w.rt.block_on(svc.oneshot(req)).unwrap();
    let status = res.status();
    assert!(
        matches!(status, StatusCode::OK | StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED),
        "unexpected status {status}"
    );
    if status != StatusCode::OK {
        assert!(res.headers().contains_key("www-authenticate"));
    }
});
