//! Error types: why a request was refused, why a store failed, why a
//! configuration was rejected.
//!
//! No error here carries a token, a password or anything derived from a secret:
//! their messages are safe to log and to send to clients.

use std::sync::Arc;

/// A configuration mistake, reported when the layer is built rather than when a
/// request arrives.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No [`TokenStore`](crate::store::TokenStore) was given to the builder.
    #[error("no token store configured: call `.store(..)` on the builder")]
    MissingStore,
    /// No [`Directory`](crate::store::Directory) was given to the builder.
    #[error("no user directory configured: call `.directory(..)` on the builder")]
    MissingDirectory,
    /// The token prefix is empty, longer than 32 bytes, or has characters other
    /// than ASCII letters, digits and `_`.
    #[error("the token prefix must be 1 to 32 ASCII letters, digits or '_'")]
    TokenPrefix,
    /// The realm would not fit in a `WWW-Authenticate` header.
    #[error("the realm must be printable ASCII without '\"' or '\\\\'")]
    Realm,
    /// A duration setting is zero where it must be positive.
    #[error("`{0}` must be greater than zero")]
    ZeroDuration(&'static str),
    /// The maximum token length is shorter than the tokens this layer issues.
    #[error("`max_token_len` ({max}) is shorter than the tokens issued ({needed})")]
    MaxTokenLen {
        /// The configured cap.
        max: usize,
        /// The length of a token of the configured format.
        needed: usize,
    },
    /// Called outside a tokio runtime: `build` (for the write-behind task) and
    /// a store's change listener start tasks on the current runtime.
    #[error("this needs a tokio runtime: call it from async code running on tokio")]
    NoRuntime,
    /// An attempt limit (`failed_attempts`, `client_failed_attempts`) with a
    /// maximum of zero would refuse every password. Names the setting.
    #[error("`{0}` must allow at least one attempt")]
    ZeroAttempts(&'static str),
    /// The store failed while the policy was loaded at start-up.
    #[error("loading the token policy failed: {0}")]
    Store(#[from] StoreError),
}

/// A request that is malformed as a bearer request: `400 invalid_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRequest {
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    MultipleAuthorizationHeaders,
    /// The `Bearer` scheme without a token.
    #[error("the Bearer credentials are empty")]
    MissingToken,
    /// The token has characters outside token68, or several parts.
    #[error("the Bearer credentials are not a single token68 value")]
    MalformedToken,
    /// The token is longer than the configured cap.
    #[error("the Bearer token is too long")]
    TokenTooLong,
}

/// A well-formed bearer request whose token does not authenticate:
/// `401 invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidToken {
    /// Not a token of this service's format (prefix, length or checksum).
    #[error("the token is malformed")]
    Malformed,
    /// No such token.
    #[error("the token is unknown")]
    Unknown,
    /// The token was revoked.
    #[error("the token was revoked")]
    Revoked,
    /// The token is past its expiry under the current policy.
    #[error("the token has expired")]
    Expired,
    /// The current policy does not let this user hold tokens.
    #[error("the token policy does not permit this user's tokens")]
    NotPermitted,
    /// The token's owner no longer exists.
    #[error("the token's user no longer exists")]
    UnknownUser,
}

/// Why the authentication layer refused a request.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No bearer credentials (no `Authorization` header, or another scheme):
    /// `401` with a bare challenge.
    #[error("bearer credentials are required")]
    MissingCredentials,
    /// `400 invalid_request`.
    #[error(transparent)]
    InvalidRequest(#[from] InvalidRequest),
    /// `401 invalid_token`.
    #[error(transparent)]
    InvalidToken(#[from] InvalidToken),
    /// The token store failed or timed out: `503` with `Retry-After`.
    #[error("the token store is unavailable")]
    Unavailable(#[source] Arc<StoreError>),
    /// A store or directory call panicked while this request waited for it:
    /// `500`. The panic is contained to the request; the next one tries again.
    #[error("the token store failed unexpectedly")]
    Internal,
}

impl AuthError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::MissingCredentials | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short label for logs and metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidToken(InvalidToken::Malformed) => "malformed",
            Self::InvalidToken(InvalidToken::Unknown) => "unknown",
            Self::InvalidToken(InvalidToken::Revoked) => "revoked",
            Self::InvalidToken(InvalidToken::Expired) => "expired",
            Self::InvalidToken(InvalidToken::NotPermitted) => "not_permitted",
            Self::InvalidToken(InvalidToken::UnknownUser) => "unknown_user",
            Self::Unavailable(_) => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The RFC 6750 error code, if the challenge carries one.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Self::MissingCredentials | Self::Unavailable(_) | Self::Internal => None,
            Self::InvalidRequest(_) => Some("invalid_request"),
            Self::InvalidToken(_) => Some("invalid_token"),
        }
    }
}

/// A failure of a [`TokenStore`](crate::store::TokenStore) or
/// [`Directory`](crate::store::Directory).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend did not answer within the configured lookup timeout.
    #[error("the store did not answer in time")]
    Timeout,
    /// The backend could not be reached or failed.
    #[error("the store failed: {0}")]
    Backend(Arc<dyn std::error::Error + Send + Sync>),
    /// A record conflicts with an existing one (a duplicate id, hash or name).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The record to change does not exist.
    #[error("not found")]
    NotFound,
    /// A write lost a race: the record changed since it was read.
    #[error("the record changed concurrently")]
    Stale,
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Arc::new(err))
    }
}
