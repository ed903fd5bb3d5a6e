//! Issue 5: a cache hit allocates nothing beyond what the principal needs.
//!
//! A counting global allocator (per thread, so parallel tests cannot disturb
//! it) counts the allocations of many hits through the layer and of the same
//! requests through a hand-written reference that does only the unavoidable
//! work (parse, SHA-256, one moka probe, one extension insert). The inner
//! service is the same; the layer may not allocate more than the reference.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use sha2::Digest;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_api_tokens::Principal;

mod support;
use support::Harness;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator may run while this thread's locals are torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting
// touches only a const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// A typical small response, with one header already set.
async fn inner(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::default());
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(res)
}

fn request(auth: &HeaderValue) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::default());
    req.headers_mut().insert(AUTHORIZATION, auth.clone());
    req
}

/// Allocations made by `n` requests through `svc`, after `n` to warm up.
async fn allocations_of<S>(mut svc: S, auth: &HeaderValue, n: u64) -> u64
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>,
{
    let mut run = async |n| {
        let before = allocations();
        for _ in 0..n {
            let res = svc
                .ready()
                .await
                .unwrap()
                .call(request(auth))
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
        allocations() - before
    };
    run(n).await;
    run(n).await
}

#[tokio::test(flavor = "current_thread")]
async fn a_cache_hit_allocates_no_more_than_the_unavoidable_work() {
    const N: u64 = 1000;
    let h = Harness::new().await;
    let (token, _) = h.token(&h.alice).await;
    let auth = HeaderValue::try_from(format!("Bearer {token}")).unwrap();

    // The layer, with its defaults (expiry header on); every request a hit
    // that reaches the inner service with a principal.
    let layer =
        ServiceBuilder::new()
            .layer(h.tokens.layer())
            .service_fn(|req: Request<Full<Bytes>>| {
                assert!(req.extensions().get::<Principal>().is_some());
                inner(req)
            });
    let ours = allocations_of(layer, &auth, N).await;

    // The unavoidable work, by hand.
    let cache = moka::sync::Cache::<[u8; 32], Arc<String>>::new(100);
    cache.insert(
        sha2::Sha256::digest(token.as_bytes()).into(),
        Arc::new("alloc".into()),
    );
    let reference = tower::service_fn(move |mut req: Request<Full<Bytes>>| {
        let value = req.headers().get(AUTHORIZATION).unwrap().as_bytes();
        let digest: [u8; 32] = sha2::Sha256::digest(&value[7..]).into();
        let principal = cache.get(&digest).unwrap();
        req.extensions_mut().insert(principal);
        inner(req)
    });
    let unavoidable = allocations_of(reference, &auth, N).await;

    // The reference allocates for the principal's extension (the map and the
    // boxed value) and the inner service for its response; nothing else.
    assert!(
        unavoidable >= 2 * N,
        "the reference inserts an extension: {unavoidable}"
    );
    assert!(
        ours <= unavoidable,
        "{N} hits allocated {ours} times through the layer, {unavoidable} through the reference"
    );
}
