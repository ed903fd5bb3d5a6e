//! [`ApiTokens`]: the handle built by the [`Builder`]. It makes the
//! authentication layer and manages tokens and the policy, sharing the layer's
//! cache and policy snapshot so every change is seen by the next request.
//!
//! This is the management side: it is never on the request path.

use std::fmt;
use std::sync::Arc;

use crate::authenticator::Authenticator;
use crate::builder::Builder;
use crate::error::StoreError;
use crate::layer::ApiTokenAuthLayer;
use crate::policy::{Policy, PolicyError, VersionedPolicy};
use crate::rejection::DefaultRejection;
use crate::store::{TokenId, TokenRecord, UserId};
use crate::token::{ApiToken, RandomnessError, TokenFormat};

/// A token just issued: the plaintext, to hand to its owner once, and its record.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The plaintext (redacted in `Debug`).
    pub token: ApiToken,
    /// The stored record.
    pub record: TokenRecord,
}

/// Why a management operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The current policy does not let this user hold tokens.
    #[error("the token policy does not permit this user to hold tokens")]
    NotPermitted,
    /// No such user.
    #[error("no such user")]
    UnknownUser,
    /// No such token.
    #[error("no such token")]
    UnknownToken,
    /// The operating system could not supply randomness.
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
}

/// Makes the authentication layer and manages tokens and the token policy.
/// Cheap to clone; clones share everything.
///
/// # Example
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_api_tokens::{ApiTokens, Principal, store::MemoryStore};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let tokens = ApiTokens::builder().backend(MemoryStore::new()).build().await?;
/// let app: Router = Router::new()
///     .route("/whoami", get(|p: axum::Extension<Principal>| async move { p.username().to_owned() }))
///     .layer(tokens.layer());
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone)]
pub struct ApiTokens {
    auth: Arc<Authenticator>,
}

impl ApiTokens {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn from_authenticator(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }

    /// The layer that authenticates requests.
    pub fn layer(&self) -> ApiTokenAuthLayer<DefaultRejection> {
        ApiTokenAuthLayer {
            auth: Arc::clone(&self.auth),
            on_rejection: DefaultRejection,
            allow_anonymous: false,
        }
    }

    /// The token format in use.
    pub fn format(&self) -> &TokenFormat {
        &self.auth.format
    }

    /// The policy in force now.
    pub fn policy(&self) -> VersionedPolicy {
        VersionedPolicy::clone(&self.auth.policy.load())
    }

    /// Validates, stores and puts `policy` in force; the next request is judged
    /// by it.
    ///
    /// # Errors
    ///
    /// [`ManageError::Policy`] for an invalid policy (nothing is stored), or the
    /// store's failure (the policy in force is unchanged).
    pub async fn set_policy(&self, policy: Policy) -> Result<VersionedPolicy, ManageError> {
        policy.validate()?;
        let saved = self.auth.store.save_policy(&policy).await?;
        self.auth.policy.replace(saved.clone());
        Ok(saved)
    }

    /// Issues a new token for `user_id` under the current policy, without
    /// re-authentication (for administrators and service set-up).
    ///
    /// # Errors
    ///
    /// [`ManageError::UnknownUser`], [`ManageError::NotPermitted`] when the
    /// policy grants the user no tokens, or the store's failure.
    pub async fn issue(&self, user_id: UserId) -> Result<IssuedToken, ManageError> {
        let user = self
            .auth
            .directory
            .user(user_id)
            .await?
            .ok_or(ManageError::UnknownUser)?;
        let lifetime = self
            .auth
            .policy
            .load()
            .policy
            .lifetime_for(&user)
            .ok_or(ManageError::NotPermitted)?;
        let token = self.auth.format.generate()?;
        let issued_at = self.auth.clock.now();
        let record = TokenRecord {
            id: TokenId::new(),
            user_id,
            hash: token.hash(),
            hint: token.hint(&self.auth.format),
            issued_at,
            expires_at: lifetime.expiry_from(issued_at),
            revoked_at: None,
            last_used_at: None,
        };
        self.auth.store.insert(&record).await?;
        Ok(IssuedToken { token, record })
    }

    /// Revokes a token. It is refused by this instance's very next request.
    ///
    /// # Errors
    ///
    /// [`ManageError::UnknownToken`], or the store's failure.
    pub async fn revoke(&self, id: TokenId) -> Result<TokenRecord, ManageError> {
        let now = self.auth.clock.now();
        let record = self
            .auth
            .store
            .revoke(id, now)
            .await?
            .ok_or(ManageError::UnknownToken)?;
        // After the store write: a load that read the old record is now untrusted.
        self.auth.cache.invalidate(&record.hash);
        Ok(record)
    }
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTokens")
            .field("prefix", &self.auth.format.prefix())
            .field("policy", &self.auth.policy)
            .finish_non_exhaustive()
    }
}
