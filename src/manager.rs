//! [`ApiTokens`]: the handle built by the [`Builder`]. It makes the
//! authentication layer and manages users' tokens and the policy, sharing the
//! layer's cache and policy snapshot so every change is seen by the next request.
//!
//! This is the management side: it is never on the request path. It never
//! returns a plaintext token except to the user it belongs to, at generation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use time::OffsetDateTime;

use crate::attempts::{Attempts, ClientAttempts, ClientId};
use crate::authenticator::Authenticator;
use crate::builder::Builder;
use crate::error::StoreError;
use crate::issue::ServerKey;
use crate::layer::ApiTokenAuthLayer;
use crate::password::Password;
use crate::policy::{Lifetime, Policy, PolicyError, VersionedPolicy};
use crate::rejection::DefaultRejection;
use crate::store::{Active, Issued, TokenId, TokenRecord, User, UserId};
use crate::token::{ApiToken, RandomnessError, TokenFormat};

/// A token just issued: the plaintext, to hand to its owner once, and its record.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The plaintext (redacted in `Debug`).
    pub token: ApiToken,
    /// The stored record.
    pub record: TokenRecord,
}

/// The answer to [`ApiTokens::generate`].
#[derive(Debug, Clone)]
pub struct Generated {
    /// The plaintext: always for a new token; for an existing one only when a
    /// [`ServerKey`] lets it be derived again (`None` in show-once mode).
    pub token: Option<ApiToken>,
    /// The token's record.
    pub record: TokenRecord,
    /// When it stops working under the policy in force now (`None`: never).
    pub expires_at: Option<OffsetDateTime>,
    /// Whether this is the user's existing token rather than a new one.
    pub reused: bool,
}

/// Why a management operation failed. [`ManageError::status`] gives the HTTP
/// status a service should answer with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Wrong user name or password (the two are not told apart).
    #[error("invalid user name or password")]
    InvalidCredentials,
    /// Too many failed password attempts for this user name, or from this
    /// client.
    #[error("too many failed attempts; try again later")]
    RateLimited {
        /// How long until attempts are accepted again.
        retry_after: Duration,
    },
    /// The current policy does not let this user hold tokens.
    #[error("the token policy does not permit this user to hold tokens")]
    NotPermitted,
    /// The caller may not do this (revoking another user's token without being
    /// an administrator).
    #[error("not allowed")]
    Forbidden,
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

impl ManageError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            Self::Store(StoreError::NotFound) => StatusCode::NOT_FOUND,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Policy(_) => StatusCode::BAD_REQUEST,
            Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotPermitted | Self::Forbidden => StatusCode::FORBIDDEN,
            Self::UnknownUser | Self::UnknownToken => StatusCode::NOT_FOUND,
            Self::Randomness(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Makes the authentication layer and manages tokens, users and the token
/// policy. Cheap to clone; clones share everything.
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
    shared: Arc<Shared>,
}

struct Shared {
    auth: Arc<Authenticator>,
    server_key: Option<ServerKey>,
    admin_role: String,
    attempts: Attempts,
    clients: ClientAttempts,
}

impl ApiTokens {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn new(
        auth: Arc<Authenticator>,
        server_key: Option<ServerKey>,
        admin_role: String,
        attempts: Attempts,
        clients: ClientAttempts,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                auth,
                server_key,
                admin_role,
                attempts,
                clients,
            }),
        }
    }

    pub(crate) fn auth(&self) -> &Authenticator {
        &self.shared.auth
    }

    #[cfg(test)]
    pub(crate) fn shared_auth(&self) -> Arc<Authenticator> {
        Arc::clone(&self.shared.auth)
    }

    /// The layer that authenticates requests.
    pub fn layer(&self) -> ApiTokenAuthLayer<DefaultRejection> {
        ApiTokenAuthLayer {
            auth: Arc::clone(&self.shared.auth),
            on_rejection: DefaultRejection,
            allow_anonymous: false,
        }
    }

    /// The token format in use.
    pub fn format(&self) -> &TokenFormat {
        &self.auth().format
    }

    /// Whether existing tokens can be handed out again (a [`ServerKey`] is
    /// configured); otherwise tokens are shown once.
    pub fn refetchable(&self) -> bool {
        self.shared.server_key.is_some()
    }

    /// Whether `user` is an administrator.
    pub fn is_admin(&self, user: &User) -> bool {
        user.has_role(&self.shared.admin_role)
    }

    /// The policy in force now.
    pub fn policy(&self) -> VersionedPolicy {
        VersionedPolicy::clone(&self.auth().policy.load())
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
        let saved = self.auth().store.save_policy(&policy).await?;
        self.auth().policy.replace(saved.clone());
        Ok(saved)
    }

    /// Checks a user's password, counting failures per user name only.
    ///
    /// Prefer [`verify_password_from`](Self::verify_password_from) wherever the
    /// client is known: without it, one client may guess across many names.
    ///
    /// # Errors
    ///
    /// [`ManageError::RateLimited`] while the name is locked out (even for the
    /// right password), [`ManageError::InvalidCredentials`] for a wrong password
    /// or an unknown user alike, or the store's failure.
    pub async fn verify_password(
        &self,
        username: &str,
        password: &Password,
    ) -> Result<User, ManageError> {
        self.check_password(None, username, password).await
    }

    /// Checks a user's password from `client`, counting failures per user name
    /// and per client ([`Builder::client_failed_attempts`]).
    ///
    /// A client at its limit is refused at once, before any password is
    /// checked. Behind a reverse proxy, make `client` from the address your
    /// trusted proxy forwards, not from the peer (see [`ClientId`]).
    ///
    /// # Errors
    ///
    /// [`ManageError::RateLimited`] while the name or the client is locked out
    /// (even for the right password), [`ManageError::InvalidCredentials`] for a
    /// wrong password or an unknown user alike, or the store's failure.
    pub async fn verify_password_from(
        &self,
        client: ClientId,
        username: &str,
        password: &Password,
    ) -> Result<User, ManageError> {
        self.check_password(Some(&client), username, password).await
    }

    /// The password check behind every re-authentication: the client's limit
    /// (if known), then the name's, then the directory.
    async fn check_password(
        &self,
        client: Option<&ClientId>,
        username: &str,
        password: &Password,
    ) -> Result<User, ManageError> {
        let limited = |retry_after| ManageError::RateLimited { retry_after };
        let clock = &self.auth().clock;
        let clients = &self.shared.clients;
        // A client at its limit does not wait for a turn.
        if let Some(client) = client {
            clients.check(client, clock.now()).map_err(limited)?;
        }
        let attempts = &self.shared.attempts;
        // One check at a time per user name: concurrent guesses are counted
        // exactly, and concurrent correct passwords are never refused.
        let turn = attempts.turn(username).await;
        attempts.check(username, clock.now()).map_err(limited)?;
        // Reserved only now, so attempts queued for a name's turn or refused
        // by its limit never hold the client's places.
        let reservation = match client {
            Some(client) => Some(clients.reserve(client, clock.now()).map_err(limited)?),
            None => None,
        };
        // The check runs to its end in a task of its own, holding the name's
        // turn and the client's place: a caller that gives up (a dropped
        // connection) frees neither early and is still counted, so hanging up
        // cannot run more password checks at once than the limits allow.
        let this = self.clone();
        let (username, password) = (username.to_owned(), password.clone());
        let check = tokio::spawn(async move {
            let _turn = turn;
            let attempts = &this.shared.attempts;
            // A store failure drops the reservation uncounted.
            match this
                .auth()
                .directory
                .verify_password(&username, &password)
                .await?
            {
                Some(user) => {
                    // The name's failures are forgiven; the client's are not, or
                    // one valid account would buy unlimited guesses at the others.
                    attempts.reset(&username);
                    Ok(user)
                }
                None => {
                    let now = this.auth().clock.now();
                    attempts.fail(&username, now);
                    if let Some(reservation) = reservation {
                        reservation.fail(now);
                    }
                    Err(ManageError::InvalidCredentials)
                }
            }
        });
        check
            .await
            .map_err(|failed| ManageError::Store(StoreError::backend(failed)))?
    }

    /// Re-authenticates a user by password and returns their token: the existing
    /// unexpired, unrevoked one (`reused`), or a new one. With `rotate`, the
    /// existing token is revoked and a new one issued.
    ///
    /// Failed passwords are limited per user name only; prefer
    /// [`generate_from`](Self::generate_from) wherever the client is known.
    ///
    /// The choice and the write are one atomic step in the store
    /// ([`TokenStore::issue`](crate::store::TokenStore::issue)), also across
    /// instances sharing it: concurrent calls for one user get one token, and
    /// concurrent rotations leave one active. Every token a rotation revoked is
    /// refused by this instance before this returns.
    ///
    /// # Errors
    ///
    /// Those of [`verify_password`](Self::verify_password);
    /// [`ManageError::NotPermitted`] when the policy grants the user no tokens;
    /// the store's failure.
    pub async fn generate(
        &self,
        username: &str,
        password: &Password,
        rotate: bool,
    ) -> Result<Generated, ManageError> {
        let user = self.check_password(None, username, password).await?;
        self.generate_for(&user, rotate).await
    }

    /// [`generate`](Self::generate) for a request from `client`: failed
    /// passwords are limited per user name and per client
    /// ([`Builder::client_failed_attempts`]), as by
    /// [`verify_password_from`](Self::verify_password_from). Behind a reverse
    /// proxy, make `client` from the address your trusted proxy forwards, not
    /// from the peer (see [`ClientId`]).
    ///
    /// # Errors
    ///
    /// Those of [`verify_password_from`](Self::verify_password_from);
    /// [`ManageError::NotPermitted`] when the policy grants the user no tokens;
    /// the store's failure.
    pub async fn generate_from(
        &self,
        client: ClientId,
        username: &str,
        password: &Password,
        rotate: bool,
    ) -> Result<Generated, ManageError> {
        let user = self
            .check_password(Some(&client), username, password)
            .await?;
        self.generate_for(&user, rotate).await
    }

    /// The user's token once their password has been checked.
    async fn generate_for(&self, user: &User, rotate: bool) -> Result<Generated, ManageError> {
        let lifetime = self.lifetime_for(user)?;
        let now = self.auth().clock.now();
        // Made before the store decides: it is wasted when a token is reused,
        // but the decision and the insert must be one store call.
        let fresh = self.new_token(user, lifetime, now)?;
        match self
            .auth()
            .store
            .issue(&fresh.record, Active::under(lifetime, now), rotate)
            .await?
        {
            Issued::Existing(record) => Ok(Generated {
                token: self
                    .shared
                    .server_key
                    .as_ref()
                    .and_then(|key| key.recover(&self.auth().format, &record)),
                expires_at: record.effective_expiry(Some(lifetime)).flatten(),
                record,
                reused: true,
            }),
            Issued::Inserted { revoked } => {
                // After the store write: a load that read an old record is now
                // untrusted.
                for old in &revoked {
                    self.auth().cache.invalidate(&old.hash);
                }
                Ok(Generated {
                    token: Some(fresh.token),
                    expires_at: fresh.record.expires_at,
                    record: fresh.record,
                    reused: false,
                })
            }
        }
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
            .auth()
            .directory
            .user(user_id)
            .await?
            .ok_or(ManageError::UnknownUser)?;
        let lifetime = self.lifetime_for(&user)?;
        self.mint(&user, lifetime).await
    }

    fn lifetime_for(&self, user: &User) -> Result<Lifetime, ManageError> {
        self.auth()
            .policy
            .load()
            .policy
            .lifetime_for(user)
            .ok_or(ManageError::NotPermitted)
    }

    async fn mint(&self, user: &User, lifetime: Lifetime) -> Result<IssuedToken, ManageError> {
        let issued = self.new_token(user, lifetime, self.auth().clock.now())?;
        self.auth().store.insert(&issued.record).await?;
        Ok(issued)
    }

    /// A new token for `user` issued at `issued_at`, not yet stored.
    fn new_token(
        &self,
        user: &User,
        lifetime: Lifetime,
        issued_at: OffsetDateTime,
    ) -> Result<IssuedToken, ManageError> {
        let format = &self.auth().format;
        let id = TokenId::new();
        let token = match &self.shared.server_key {
            Some(key) => key.derive(format, id),
            None => format.generate()?,
        };
        let record = TokenRecord {
            id,
            user_id: user.id,
            hash: token.hash(),
            hint: token.hint(format),
            issued_at,
            expires_at: lifetime.expiry_from(issued_at),
            revoked_at: None,
            last_used_at: None,
        };
        Ok(IssuedToken { token, record })
    }

    /// Revokes a token. It is refused by this instance's very next request.
    ///
    /// # Errors
    ///
    /// [`ManageError::UnknownToken`], or the store's failure.
    pub async fn revoke(&self, id: TokenId) -> Result<TokenRecord, ManageError> {
        let now = self.auth().clock.now();
        let record = self
            .auth()
            .store
            .revoke(id, now)
            .await?
            .ok_or(ManageError::UnknownToken)?;
        // After the store write: a load that read the old record is now untrusted.
        self.auth().cache.invalidate(&record.hash);
        Ok(record)
    }

    /// Revokes a token on behalf of `actor`: its owner or an administrator.
    ///
    /// # Errors
    ///
    /// [`ManageError::Forbidden`] for anyone else (also when the token does not
    /// exist, so non-administrators learn nothing about other users' tokens),
    /// [`ManageError::UnknownToken`] for an administrator, or the store's failure.
    pub async fn revoke_as(&self, actor: &User, id: TokenId) -> Result<TokenRecord, ManageError> {
        if !self.is_admin(actor) {
            let owned = self
                .auth()
                .store
                .get(id)
                .await?
                .is_some_and(|r| r.user_id == actor.id);
            if !owned {
                return Err(ManageError::Forbidden);
            }
        }
        self.revoke(id).await
    }

    /// A token's record.
    ///
    /// # Errors
    ///
    /// [`ManageError::UnknownToken`], or the store's failure.
    pub async fn token(&self, id: TokenId) -> Result<TokenRecord, ManageError> {
        self.auth()
            .store
            .get(id)
            .await?
            .ok_or(ManageError::UnknownToken)
    }

    /// Token records (metadata only), of one user or of all; newest first.
    ///
    /// # Errors
    ///
    /// The store's failure.
    pub async fn list(&self, user: Option<UserId>) -> Result<Vec<TokenRecord>, ManageError> {
        Ok(self.auth().store.list(user).await?)
    }

    /// Creates a user (the password is stored as an Argon2id hash).
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] (as [`ManageError::Store`]) if the name is taken.
    pub async fn create_user(&self, user: &User, password: &Password) -> Result<(), ManageError> {
        Ok(self.auth().directory.create_user(user, password).await?)
    }

    /// A user by name.
    ///
    /// # Errors
    ///
    /// The store's failure.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, ManageError> {
        Ok(self.auth().directory.user_by_name(username).await?)
    }

    /// Changes a user's name, roles or identity provider. On this instance their
    /// tokens are judged by the new data from the next request on.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] or [`StoreError::Conflict`] as
    /// [`ManageError::Store`], or the store's failure.
    pub async fn update_user(&self, user: &User) -> Result<(), ManageError> {
        self.auth().directory.update_user(user).await?;
        for record in self.auth().store.list(Some(user.id)).await? {
            self.auth().cache.invalidate(&record.hash);
        }
        Ok(())
    }

    /// Waits until every `last_used_at` noted so far is written (for a graceful
    /// shutdown).
    pub async fn flush(&self) {
        self.auth().usage.flush().await;
    }
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTokens")
            .field("prefix", &self.auth().format.prefix())
            .field("policy", &self.auth().policy)
            .field("refetchable", &self.refetchable())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::macros::datetime;

    use super::*;
    use crate::token::TokenHash;

    /// Whether `record` is a token its owner can still use under `lifetime`:
    /// what the layer enforces, spelled with [`TokenRecord::effective_expiry`].
    fn usable(record: &TokenRecord, lifetime: Lifetime, now: OffsetDateTime) -> bool {
        record.revoked_at.is_none()
            && record
                .effective_expiry(Some(lifetime))
                .is_some_and(|expiry| expiry.is_none_or(|at| now < at))
    }

    #[test]
    fn active_tokens_are_exactly_the_usable_ones_at_every_boundary() {
        let now = datetime!(2026-03-04 05:06:07.123_456_789 UTC);
        let ns = time::Duration::nanoseconds(1);
        let lifetimes = [
            Lifetime::Never,
            Lifetime::Duration(Duration::from_secs(90)),
            Lifetime::days(1),
            Lifetime::days(36_500),
        ];
        for lifetime in lifetimes {
            let active = Active::under(lifetime, now);
            let cut = match lifetime {
                Lifetime::Never => now - time::Duration::days(40_000),
                Lifetime::Duration(d) => now - time::Duration::try_from(d).unwrap(),
            };
            for issued_at in [cut - ns, cut, cut + ns, now - ns, now] {
                for expires_at in [None, Some(now - ns), Some(now), Some(now + ns)] {
                    for revoked_at in [None, Some(now - ns)] {
                        let record = TokenRecord {
                            id: TokenId::new(),
                            user_id: UserId::new(),
                            hash: TokenHash::of("t"),
                            hint: String::new(),
                            issued_at,
                            expires_at,
                            revoked_at,
                            last_used_at: None,
                        };
                        assert_eq!(
                            active.contains(&record),
                            usable(&record, lifetime, now),
                            "{lifetime:?} {record:?}"
                        );
                    }
                }
            }
        }
    }
}
