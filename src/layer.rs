//! [`ApiTokenAuthLayer`]: wraps a service in [`ApiTokenAuth`].

use std::fmt;
use std::sync::Arc;

use tower::Layer;

use crate::authenticator::Authenticator;
use crate::rejection::DefaultRejection;
use crate::service::ApiTokenAuth;

/// Authenticates every request by its bearer token; see the [crate docs](crate).
///
/// Built by [`ApiTokens::layer`](crate::ApiTokens::layer).
#[must_use]
#[derive(Clone)]
pub struct ApiTokenAuthLayer<R = DefaultRejection> {
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) on_rejection: R,
    pub(crate) allow_anonymous: bool,
}

impl<R> ApiTokenAuthLayer<R> {
    /// Lets requests without bearer credentials (no `Authorization` header, or
    /// another scheme such as `Basic`) through without a
    /// [`Principal`](crate::Principal), for routes that serve both. Malformed,
    /// unknown, expired or revoked bearer tokens are still refused.
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    /// Replaces the response given to refused requests.
    ///
    /// ```
    /// # async fn demo(tokens: tower_api_tokens::ApiTokens) {
    /// use http::{Response, StatusCode};
    /// use tower_api_tokens::Rejection;
    ///
    /// let layer = tokens.layer().on_rejection(|r: &Rejection| {
    ///     let mut res = Response::new(String::from("go away"));
    ///     *res.status_mut() = r.status();
    ///     r.apply_headers(res.headers_mut());
    ///     res
    /// });
    /// # let _ = layer;
    /// # }
    /// ```
    pub fn on_rejection<R2>(self, on_rejection: R2) -> ApiTokenAuthLayer<R2> {
        ApiTokenAuthLayer {
            auth: self.auth,
            on_rejection,
            allow_anonymous: self.allow_anonymous,
        }
    }
}

impl<S, R: Clone> Layer<S> for ApiTokenAuthLayer<R> {
    type Service = ApiTokenAuth<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiTokenAuth {
            inner,
            auth: Arc::clone(&self.auth),
            on_rejection: self.on_rejection.clone(),
            allow_anonymous: self.allow_anonymous,
        }
    }
}

impl<R> fmt::Debug for ApiTokenAuthLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTokenAuthLayer")
            .field("realm", &self.auth.realm)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}
