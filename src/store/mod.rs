//! The pluggable backend: token records ([`TokenStore`]) and users
//! ([`Directory`]), with their record types.
//!
//! Stores see a token only as its [`TokenHash`]; they never receive plaintext.
//! Both traits are object-safe (`Arc<dyn TokenStore>`) so a service can choose
//! its backend at run time.
//!
//! | store | feature | for |
//! |---|---|---|
//! | [`MemoryStore`] | — | tests and quick starts |
//! | `SqliteStore` | `sqlite` | one instance, data in a file |
//! | `PostgresStore` | `postgres` | several instances sharing one database, with a `ChangeListener` each |

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use self::postgres::{ChangeListener, ListenerOptions, ListenerStatus, PostgresStore};
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteStore;
use crate::error::StoreError;
use crate::password::Password;
use crate::policy::{Policy, VersionedPolicy};
use crate::token::TokenHash;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A user's id.
    UserId
);
uuid_id!(
    /// A token's id: public, not secret.
    TokenId
);

/// A user as the [`Directory`] knows them now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The login name.
    pub username: String,
    /// The roles the user holds now.
    pub roles: Vec<String>,
    /// The identity provider the user signs in through (`local`, `saml-corp`, …).
    pub identity_provider: String,
}

impl User {
    /// Whether the user holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// A token's stored record: its hash and metadata, never its plaintext.
///
/// Serializes (for listings) without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// The token's id.
    pub id: TokenId,
    /// Its owner.
    pub user_id: UserId,
    /// SHA-256 of the whole token.
    #[serde(skip)]
    pub hash: TokenHash,
    /// Non-secret display hint: the prefix and the last 4 characters.
    pub hint: String,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// When it expires as issued (`None`: never). The current policy may cut it
    /// shorter; see [`TokenRecord::effective_expiry`].
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was last used (written behind, so it may lag).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

impl TokenRecord {
    /// When the token stops working under a policy that now grants `lifetime`
    /// (`None` if the policy grants nothing: the token is void):
    /// `min(expires_at, issued_at + lifetime)`.
    ///
    /// The outer `Option` is "permitted at all", the inner "has an expiry".
    pub fn effective_expiry(
        &self,
        lifetime: Option<crate::policy::Lifetime>,
    ) -> Option<Option<OffsetDateTime>> {
        let by_policy = lifetime?.expiry_from(self.issued_at);
        Some(match (self.expires_at, by_policy) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}

/// Which of a user's tokens count as **active** for [`TokenStore::issue`]: the
/// ones their owner can still use at `now` under the policy in force.
///
/// A record is active when
///
/// ```text
/// revoked_at IS NULL
///   AND (expires_at IS NULL OR expires_at > now)
///   AND (issued_after IS NULL OR issued_at > issued_after)
/// ```
///
/// `issued_after` is `now` minus the lifetime the current policy grants the
/// user, so a token that the policy has cut short
/// ([`TokenRecord::effective_expiry`]) is not active: `issued_at + lifetime >
/// now` is `issued_at > now - lifetime`. Both bounds are strict, because a
/// token expires at its expiry (`now >= expiry` is expired).
/// [`Active::under`] computes it; [`Active::contains`] is the same test in Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Active {
    /// The time to judge expiry at.
    pub now: OffsetDateTime,
    /// Only tokens issued strictly after this count (`None`: the policy grants
    /// an unlimited lifetime, so it cuts nothing short).
    pub issued_after: Option<OffsetDateTime>,
}

impl Active {
    /// Active at `now` for a user the policy now grants `lifetime`.
    pub fn under(lifetime: crate::policy::Lifetime, now: OffsetDateTime) -> Self {
        let issued_after = match lifetime {
            crate::policy::Lifetime::Never => None,
            // A lifetime beyond the calendar cuts nothing short, as in
            // `Lifetime::expiry_from`.
            crate::policy::Lifetime::Duration(d) => time::Duration::try_from(d)
                .ok()
                .and_then(|d| now.checked_sub(d)),
        };
        Self { now, issued_after }
    }

    /// Whether `record` is active (see the type's documentation). Stores that
    /// filter in memory use this; SQL stores spell the same test out.
    pub fn contains(&self, record: &TokenRecord) -> bool {
        record.revoked_at.is_none()
            && record.expires_at.is_none_or(|at| at > self.now)
            && self
                .issued_after
                .is_none_or(|after| record.issued_at > after)
    }
}

/// What [`TokenStore::issue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    /// The user already had an active token (the newest one, when several
    /// are active); nothing was written.
    Existing(TokenRecord),
    /// The new record was inserted, after the user's active tokens (if any)
    /// were revoked, all in one atomic step.
    Inserted {
        /// The tokens revoked, as they now are, newest first. Each must be
        /// dropped from every cache that may hold it.
        revoked: Vec<TokenRecord>,
    },
}

/// Token records by hash. Implementations must be safe to share across tasks.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// The record whose hash is `hash`, revoked or not.
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError>;

    /// The record with id `id`.
    async fn get(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError>;

    /// Stores a new record. [`StoreError::Conflict`] if its id or hash exists.
    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError>;

    /// Marks the token revoked at `at` (keeping an earlier revocation time) and
    /// returns the record as it now is; `None` if there is no such token.
    async fn revoke(
        &self,
        id: TokenId,
        at: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError>;

    /// All records, or those of one user; newest first.
    async fn list(&self, user: Option<UserId>) -> Result<Vec<TokenRecord>, StoreError>;

    /// Records `last_used_at` for a batch of tokens (written behind, so this is
    /// never called once per request). Unknown ids are ignored; a time earlier
    /// than the stored one is ignored.
    async fn touch(&self, used: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError>;

    /// The stored policy, or `None` for a fresh store.
    async fn load_policy(&self) -> Result<Option<VersionedPolicy>, StoreError>;

    /// Stores `policy` as the next version and returns it.
    async fn save_policy(&self, policy: &Policy) -> Result<VersionedPolicy, StoreError>;

    /// Gives `record.user_id` a token, as one atomic step: the decision and
    /// the write can interleave with no other call of this method for the same
    /// user, in this process or in any other that shares the store.
    ///
    /// - Without `rotate`, if the user has an [`Active`] token, returns the
    ///   newest one as [`Issued::Existing`] and writes nothing.
    /// - Otherwise (with `rotate`, or with no active token), revokes every
    ///   active token of the user at `record.issued_at`, inserts `record`, and
    ///   returns the revoked records as [`Issued::Inserted`]. Tokens of other
    ///   users, and the user's tokens that are not active, are left alone.
    ///
    /// So N concurrent calls without `rotate` for a user with no active token
    /// insert exactly one record and all return its id (the first inserts, the
    /// rest see it), and N concurrent rotations leave exactly one active token.
    ///
    /// A store shared by several processes must make this atomic across them
    /// (a lock on the user taken inside the transaction, say); a store that
    /// publishes revocations to other instances (as `PostgresStore`'s `revoke`
    /// does) must publish every revocation made here too, in the same
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] if `record`'s id or hash exists; nothing is
    /// revoked then. Any other failure leaves the store as it was.
    ///
    /// There is no default: only the store can make this atomic, and composing
    /// it from the other methods would bring back the race it exists to close.
    async fn issue(
        &self,
        record: &TokenRecord,
        active: Active,
        rotate: bool,
    ) -> Result<Issued, StoreError>;
}

/// Users: who they are now, and the password check for re-authentication.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The user with id `id`.
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// The user named `username`.
    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError>;

    /// The user named `username` if `password` is theirs; `None` for a wrong
    /// password and for an unknown user alike, taking about the same time.
    async fn verify_password(
        &self,
        username: &str,
        password: &Password,
    ) -> Result<Option<User>, StoreError>;

    /// Creates a user. [`StoreError::Conflict`] if the name or id is taken.
    async fn create_user(&self, user: &User, password: &Password) -> Result<(), StoreError>;

    /// Replaces a user's name, roles and identity provider (not the password).
    /// [`StoreError::NotFound`] if there is no such user,
    /// [`StoreError::Conflict`] if the new name is taken.
    async fn update_user(&self, user: &User) -> Result<(), StoreError>;
}

#[async_trait]
impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        (**self).find_by_hash(hash).await
    }
    async fn get(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        (**self).get(id).await
    }
    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> {
        (**self).insert(record).await
    }
    async fn revoke(
        &self,
        id: TokenId,
        at: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        (**self).revoke(id, at).await
    }
    async fn list(&self, user: Option<UserId>) -> Result<Vec<TokenRecord>, StoreError> {
        (**self).list(user).await
    }
    async fn touch(&self, used: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        (**self).touch(used).await
    }
    async fn load_policy(&self) -> Result<Option<VersionedPolicy>, StoreError> {
        (**self).load_policy().await
    }
    async fn save_policy(&self, policy: &Policy) -> Result<VersionedPolicy, StoreError> {
        (**self).save_policy(policy).await
    }
    async fn issue(
        &self,
        record: &TokenRecord,
        active: Active,
        rotate: bool,
    ) -> Result<Issued, StoreError> {
        (**self).issue(record, active, rotate).await
    }
}

#[async_trait]
impl<T: Directory + ?Sized> Directory for Arc<T> {
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        (**self).user(id).await
    }
    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        (**self).user_by_name(username).await
    }
    async fn verify_password(
        &self,
        username: &str,
        password: &Password,
    ) -> Result<Option<User>, StoreError> {
        (**self).verify_password(username, password).await
    }
    async fn create_user(&self, user: &User, password: &Password) -> Result<(), StoreError> {
        (**self).create_user(user, password).await
    }
    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        (**self).update_user(user).await
    }
}
