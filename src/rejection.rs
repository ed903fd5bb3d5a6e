//! The responses of refused requests, and how to replace them.
//!
//! Every refusal is an ordinary `Response` (never an `Err`, which would tear the
//! connection down without an answer), with the RFC 6750 `WWW-Authenticate`
//! challenge, `Retry-After` on `503`, a small JSON body (empty for `HEAD`), and
//! the [`AuthError`] in its extensions. [`OnRejection`] replaces the default; a
//! closure `Fn(&Rejection) -> Response<B>` is one.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::error::AuthError;

/// A refused request: why, and the headers its answer must carry.
#[derive(Debug, Clone)]
pub struct Rejection {
    error: AuthError,
    challenge: Option<HeaderValue>,
    retry_after: Option<HeaderValue>,
    head: bool,
}

impl Rejection {
    pub(crate) fn new(
        error: AuthError,
        realm: &str,
        retry_after: &HeaderValue,
        method: &Method,
    ) -> Self {
        let challenge = match &error {
            AuthError::Unavailable(_) | AuthError::Internal => None,
            AuthError::MissingCredentials => Some(format!("Bearer realm=\"{realm}\"")),
            AuthError::InvalidRequest(e) => Some(format!(
                "Bearer realm=\"{realm}\", error=\"invalid_request\", error_description=\"{e}\""
            )),
            AuthError::InvalidToken(e) => Some(format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{e}\""
            )),
        }
        // The realm and the descriptions are checked printable ASCII without '"'.
        .and_then(|c| HeaderValue::try_from(c).ok());
        let retry_after = matches!(error, AuthError::Unavailable(_)).then(|| retry_after.clone());
        Self {
            error,
            challenge,
            retry_after,
            head: method == Method::HEAD,
        }
    }

    /// Why the request was refused.
    pub fn error(&self) -> &AuthError {
        &self.error
    }

    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        self.error.status()
    }

    /// The `WWW-Authenticate` challenge (absent for `503`).
    pub fn challenge(&self) -> Option<&HeaderValue> {
        self.challenge.as_ref()
    }

    /// The `Retry-After` value (only for `503`).
    pub fn retry_after(&self) -> Option<&HeaderValue> {
        self.retry_after.as_ref()
    }

    /// Whether the request was `HEAD`, whose answer has no body.
    pub fn is_head(&self) -> bool {
        self.head
    }

    /// Sets `WWW-Authenticate` and `Retry-After` as this rejection requires.
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        if let Some(c) = &self.challenge {
            headers.insert(WWW_AUTHENTICATE, c.clone());
        }
        if let Some(r) = &self.retry_after {
            headers.insert(RETRY_AFTER, r.clone());
        }
    }

    /// The JSON body: `{"error":"…","error_description":"…"}`.
    pub fn json_body(&self) -> Bytes {
        let code = match &self.error {
            AuthError::MissingCredentials => "unauthorized",
            AuthError::Unavailable(_) => "temporarily_unavailable",
            AuthError::Internal => "server_error",
            other => other.error_code().unwrap_or("unauthorized"),
        };
        let body = serde_json::json!({
            "error": code,
            "error_description": self.error.to_string(),
        });
        Bytes::from(body.to_string())
    }
}

/// Builds the response for a refused request.
pub trait OnRejection<B> {
    /// The response for `rejection`. The layer adds the [`AuthError`] to its
    /// extensions afterwards.
    fn on_rejection(&self, rejection: &Rejection) -> Response<B>;
}

impl<B, F> OnRejection<B> for F
where
    F: Fn(&Rejection) -> Response<B>,
{
    fn on_rejection(&self, rejection: &Rejection) -> Response<B> {
        self(rejection)
    }
}

/// The default rejection: the status, the headers of [`Rejection::apply_headers`]
/// and the JSON body of [`Rejection::json_body`] (none for `HEAD`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRejection;

impl<B: From<Bytes>> OnRejection<B> for DefaultRejection {
    fn on_rejection(&self, rejection: &Rejection) -> Response<B> {
        let body = if rejection.is_head() {
            Bytes::new()
        } else {
            rejection.json_body()
        };
        let mut response = Response::new(B::from(body));
        *response.status_mut() = rejection.status();
        let headers = response.headers_mut();
        rejection.apply_headers(headers);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}
