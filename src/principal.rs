//! [`Principal`]: who made an authenticated request, as the layer puts it into
//! the request's extensions.
//!
//! With the `axum` feature, `Principal` is an extractor, and so is
//! `Option<Principal>` for routes that also serve anonymous callers.

use std::sync::Arc;

use http::HeaderValue;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::{TokenId, User, UserId};

/// The authenticated caller. Cheap to clone (the user data is shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    user: Arc<User>,
    token_id: TokenId,
    // Unix nanoseconds: converted to a date only when asked for.
    expires_ns: Option<i64>,
}

impl Principal {
    pub(crate) fn new(user: Arc<User>, token_id: TokenId, expires_ns: Option<i64>) -> Self {
        Self {
            user,
            token_id,
            expires_ns,
        }
    }

    /// The user's id.
    pub fn user_id(&self) -> UserId {
        self.user.id
    }

    /// The user's login name.
    pub fn username(&self) -> &str {
        &self.user.username
    }

    /// The user's roles (as of at most `cache_ttl` ago).
    pub fn roles(&self) -> &[String] {
        &self.user.roles
    }

    /// Whether the user holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.user.has_role(role)
    }

    /// The identity provider the user signs in through.
    pub fn identity_provider(&self) -> &str {
        &self.user.identity_provider
    }

    /// The id of the token the request carried.
    pub fn token_id(&self) -> TokenId {
        self.token_id
    }

    /// When that token stops working under the policy in force at this request
    /// (`None`: never).
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.expires_ns
            .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).ok())
    }

    /// The whole user record.
    pub fn user(&self) -> &User {
        &self.user
    }
}

impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Principal", 6)?;
        st.serialize_field("user_id", &self.user.id)?;
        st.serialize_field("username", &self.user.username)?;
        st.serialize_field("roles", &self.user.roles)?;
        st.serialize_field("identity_provider", &self.user.identity_provider)?;
        st.serialize_field("token_id", &self.token_id)?;
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
