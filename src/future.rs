//! [`ResponseFuture`] of [`ApiTokenAuth`](crate::ApiTokenAuth).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderName, HeaderValue, Method, Request, Response};
use pin_project_lite::pin_project;
use tower::Service;
use tracing::{Instrument, Span};

use crate::authenticator::{Accepted, Authenticator};
use crate::cache::CachedToken;
use crate::error::AuthError;
use crate::rejection::{OnRejection, Rejection};
use crate::token::TokenHash;

type Load = Pin<Box<dyn Future<Output = Result<Arc<CachedToken>, AuthError>> + Send>>;

pin_project! {
    /// The response future of [`ApiTokenAuth`](crate::ApiTokenAuth).
    pub struct ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        // Authenticated (or anonymous): the inner service is answering.
        Inner {
            #[pin]
            fut: S::Future,
            expiry: Option<(HeaderName, HeaderValue)>,
        },
        // A cache miss: waiting for the backend. Boxed so that a hit's future
        // stays small (the miss pays one allocation more, the hit none).
        Loading {
            loading: Box<Loading<S, ReqBody, R>>,
        },
        // Boxed for the same reason as `Loading`.
        Rejected {
            response: Option<Box<S::Response>>,
        },
    }
}

struct Loading<S, ReqBody, R> {
    load: Load,
    inner: Option<S>,
    req: Option<Request<ReqBody>>,
    auth: Arc<Authenticator>,
    on_rejection: R,
    span: Span,
}

impl<S, ReqBody, ResBody, R> ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: OnRejection<ResBody>,
{
    #[inline]
    pub(crate) fn inner(fut: S::Future, expiry: Option<HeaderValue>, auth: &Authenticator) -> Self {
        let expiry = expiry_pair(auth, expiry);
        Self {
            state: State::Inner { fut, expiry },
        }
    }

    pub(crate) fn rejected(
        auth: &Authenticator,
        on_rejection: &R,
        error: AuthError,
        method: &Method,
        span: &Span,
    ) -> Self {
        Self {
            state: State::Rejected {
                response: Some(Box::new(reject(auth, on_rejection, error, method, span))),
            },
        }
    }

    pub(crate) fn loading(
        auth: Arc<Authenticator>,
        hash: TokenHash,
        inner: S,
        req: Request<ReqBody>,
        on_rejection: R,
        span: Span,
    ) -> Self {
        let load: Load = Box::pin(Arc::clone(&auth).load(hash).instrument(span.clone()));
        Self {
            state: State::Loading {
                loading: Box::new(Loading {
                    load,
                    inner: Some(inner),
                    req: Some(req),
                    auth,
                    on_rejection,
                    span,
                }),
            },
        }
    }
}

/// The expiry header to add to the response: its name, if the header is on,
/// and the value, if the token expires.
#[inline]
fn expiry_pair(
    auth: &Authenticator,
    expiry: Option<HeaderValue>,
) -> Option<(HeaderName, HeaderValue)> {
    expiry.and_then(|value| Some((auth.expiry_header.clone()?, value)))
}

fn reject<B>(
    auth: &Authenticator,
    on_rejection: &impl OnRejection<B>,
    error: AuthError,
    method: &Method,
    span: &Span,
) -> Response<B> {
    span.record("outcome", error.label());
    tracing::debug!(parent: span, outcome = error.label(), "request refused");
    let rejection = Rejection::new(error, &auth.realm, &auth.retry_after, method);
    let mut response = on_rejection.on_rejection(&rejection);
    response.extensions_mut().insert(rejection.error().clone());
    response
}

impl<S, ReqBody, ResBody, R> Future for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: OnRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Inner { fut, expiry } => {
                    let mut response = ready!(fut.poll(cx))?;
                    if let Some((name, value)) = expiry.take() {
                        response.headers_mut().insert(name, value);
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Rejected { response } => {
                    // Polled again after completion: a contract violation by the
                    // caller, answered with the refusal's absence rather than a panic.
                    return match response.take() {
                        Some(response) => Poll::Ready(Ok(*response)),
                        None => Poll::Pending,
                    };
                }
                StateProj::Loading { loading } => {
                    let Loading {
                        load,
                        inner,
                        req,
                        auth,
                        on_rejection,
                        span,
                    } = &mut **loading;
                    // A panicking store must not take the connection down
                    // without an answer: this request gets a 500; waiters on the
                    // same load retry (moka marks the load as panicked).
                    let polled =
                        std::panic::catch_unwind(AssertUnwindSafe(|| load.as_mut().poll(cx)));
                    let result = match polled {
                        Ok(poll) => ready!(poll),
                        Err(_) => Err(AuthError::Internal),
                    };
                    let verdict =
                        result.and_then(|entry| span.in_scope(|| auth.verify(entry, span)));
                    let (Some(mut service), Some(mut request)) = (inner.take(), req.take()) else {
                        return Poll::Pending;
                    };
                    match verdict {
                        Ok(Accepted { principal, expiry }) => {
                            span.record("outcome", "accepted");
                            request.extensions_mut().insert(principal);
                            State::Inner {
                                fut: service.call(request),
                                expiry: expiry_pair(auth, expiry),
                            }
                        }
                        Err(error) => State::Rejected {
                            response: Some(Box::new(reject(
                                auth,
                                on_rejection,
                                error,
                                request.method(),
                                span,
                            ))),
                        },
                    }
                }
            };
            state.set(next);
        }
    }
}
