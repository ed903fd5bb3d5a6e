//! [`ApiTokenAuth`]: the middleware service.

use std::borrow::Cow;
use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;
use tracing::Span;

use crate::authenticator::{Accepted, Authenticator, Step};
use crate::future::ResponseFuture;
use crate::rejection::OnRejection;

/// Authenticates requests by bearer token before `S` sees them; built by
/// [`ApiTokenAuthLayer`](crate::ApiTokenAuthLayer).
///
/// A cache hit is decided inside `call` without a boxed future; only a miss
/// clones the inner service (the ready one goes with the request) and awaits the
/// backend.
#[derive(Clone)]
pub struct ApiTokenAuth<S, R> {
    pub(crate) inner: S,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) on_rejection: R,
    pub(crate) allow_anonymous: bool,
}

impl<S, R> ApiTokenAuth<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the middleware.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for ApiTokenAuth<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: OnRejection<ResBody> + Clone,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let span = request_span(&req, self.auth.format.prefix());
        let step = span.in_scope(|| {
            self.auth
                .begin(req.headers_mut(), self.allow_anonymous, &span)
        });
        match step {
            Step::Accept(Accepted { principal, expiry }) => {
                if !span.is_disabled() {
                    span.record("outcome", "accepted");
                }
                req.extensions_mut().insert(principal);
                ResponseFuture::inner(self.inner.call(req), expiry, &self.auth)
            }
            Step::Anonymous => {
                if !span.is_disabled() {
                    span.record("outcome", "anonymous");
                }
                ResponseFuture::inner(self.inner.call(req), None, &self.auth)
            }
            Step::Reject(error) => {
                ResponseFuture::rejected(&self.auth, &self.on_rejection, error, req.method(), &span)
            }
            Step::Load(hash) => {
                // The ready service travels with the request; a fresh clone stays.
                let clone = self.inner.clone();
                let inner = mem::replace(&mut self.inner, clone);
                ResponseFuture::loading(
                    Arc::clone(&self.auth),
                    hash,
                    inner,
                    req,
                    self.on_rejection.clone(),
                    span,
                )
            }
        }
    }
}

/// The request's `authenticate` span, or no span at all while DEBUG is off.
///
/// While no subscriber wants DEBUG, a `debug_span!` is still a disabled span
/// with metadata, and when `tracing`'s `log` feature is on (sqlx and axum's
/// `tower-log` turn it on) and no subscriber is installed, creating, entering
/// and dropping it each go through the `log` fallback (about 3 % of a cache hit,
/// by `perf`). `Span::none()` costs nothing, and a disabled span records nothing
/// anyway; only `log`-only setups lose the span's enter/exit lines.
#[inline]
fn request_span<B>(req: &Request<B>, token_prefix: &str) -> Span {
    if tracing::Level::DEBUG > tracing::level_filters::LevelFilter::current() {
        return Span::none();
    }
    tracing::debug_span!(
        "authenticate",
        method = %req.method(),
        // The path only: a query string may carry secrets.
        path = &*redacted_path(req.uri().path(), token_prefix),
        outcome = tracing::field::Empty,
        token_id = tracing::field::Empty,
        hint = tracing::field::Empty,
    )
}

/// `path` with every segment that holds the token prefix replaced by
/// `[redacted]`: a careless client may put its token in the path.
fn redacted_path<'a>(path: &'a str, token_prefix: &str) -> Cow<'a, str> {
    if !path.contains(token_prefix) {
        return Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| {
            if segment.contains(token_prefix) {
                "[redacted]"
            } else {
                segment
            }
        })
        .collect();
    Cow::Owned(segments.join("/"))
}

impl<S: fmt::Debug, R> fmt::Debug for ApiTokenAuth<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTokenAuth")
            .field("inner", &self.inner)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::redacted_path;

    #[test]
    fn paths_with_a_token_are_redacted_segment_by_segment() {
        assert_eq!(redacted_path("/a/b", "nch_"), "/a/b");
        assert_eq!(redacted_path("/", "nch_"), "/");
        assert_eq!(
            redacted_path("/v1/nch_abc/x/pre-nch_def", "nch_"),
            "/v1/[redacted]/x/[redacted]"
        );
    }
}
