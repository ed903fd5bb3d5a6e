//! [`Principal`]: who made an authenticated request, as the layer puts it into
//! the request's extensions.
//!
//! With the `axum` feature, `Principal` is an extractor, and so is
//! `Option<Principal>` for routes that also serve anonymous callers.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cache::CachedToken;
use crate::store::{TokenId, User, UserId};

/// The authenticated caller. Cheap to clone: it shares the layer's cached
/// record of the token and its owner.
#[derive(Clone)]
pub struct Principal {
    // The cache entry itself: putting a principal into a request moves the
    // entry's reference count once, instead of taking the user's too.
    token: Arc<CachedToken>,
    // The effective expiry (the policy may cut the token's own), in Unix
    // nanoseconds: converted to a date only when asked for.
    expires_ns: Option<i64>,
}

impl Principal {
    pub(crate) fn new(token: Arc<CachedToken>, expires_ns: Option<i64>) -> Self {
        Self { token, expires_ns }
    }

    /// The user's id.
    pub fn user_id(&self) -> UserId {
        self.token.user.id
    }

    /// The user's login name.
    pub fn username(&self) -> &str {
        &self.token.user.username
    }

    /// The user's roles (as of at most `cache_ttl` ago).
    pub fn roles(&self) -> &[String] {
        &self.token.user.roles
    }

    /// Whether the user holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.token.user.has_role(role)
    }

    /// The identity provider the user signs in through.
    pub fn identity_provider(&self) -> &str {
        &self.token.user.identity_provider
    }

    /// The id of the token the request carried.
    pub fn token_id(&self) -> TokenId {
        self.token.id
    }

    /// When that token stops working under the policy in force at this request
    /// (`None`: never).
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.expires_ns
            .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).ok())
    }

    /// The whole user record.
    pub fn user(&self) -> &User {
        &self.token.user
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        self.token.id == other.token.id
            && self.expires_ns == other.expires_ns
            && self.token.user == other.token.user
    }
}

impl Eq for Principal {}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("user", &self.token.user)
            .field("token_id", &self.token.id)
            .field("expires_at", &self.expires_at())
            .finish()
    }
}

impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Principal", 6)?;
        st.serialize_field("user_id", &self.token.user.id)?;
        st.serialize_field("username", &self.token.user.username)?;
        st.serialize_field("roles", &self.token.user.roles)?;
        st.serialize_field("identity_provider", &self.token.user.identity_provider)?;
        st.serialize_field("token_id", &self.token.id)?;
        let expires = self.expires_at().and_then(|t| t.format(&Rfc3339).ok());
        st.serialize_field("expires_at", &expires)?;
        st.end()
    }
}

/// The expiry header's value for `at`: RFC 3339 in UTC.
pub(crate) fn expiry_header_value(at: OffsetDateTime) -> Option<HeaderValue> {
    let text = at.to_offset(time::UtcOffset::UTC).format(&Rfc3339).ok()?;
    HeaderValue::try_from(text).ok()
}

#[cfg(feature = "axum")]
mod extract {
    use std::convert::Infallible;

    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum::response::{IntoResponse, Response};
    use http::StatusCode;
    use http::request::Parts;

    use super::Principal;

    /// The `Principal` extractor ran on a request the layer did not authenticate.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    #[non_exhaustive]
    #[error(
        "Missing request extension: no `tower_api_tokens::Principal` on this request. \
         Perhaps you forgot to add the `ApiTokenAuthLayer`, or added it with \
         `allow_anonymous`?"
    )]
    pub struct MissingPrincipal;

    impl IntoResponse for MissingPrincipal {
        fn into_response(self) -> Response {
            (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for Principal {
        type Rejection = MissingPrincipal;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<Principal>()
                .cloned()
                .ok_or(MissingPrincipal)
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
        type Rejection = Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<Principal>().cloned())
        }
    }
}

#[cfg(feature = "axum")]
pub use extract::MissingPrincipal;
