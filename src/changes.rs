//! Changes made by another instance of the same service, applied to this
//! instance's cache and policy snapshot.
//!
//! A store that can publish its writes (PostgreSQL's `LISTEN/NOTIFY`) turns each
//! notice into a [`Change`] and hands it to [`ApiTokens::apply`]. When notices may
//! have been lost (a dropped connection), [`Change::Resync`] forgets everything
//! cached and reloads the policy. Without notices, `cache_ttl` bounds how long a
//! change made elsewhere can go unseen here.

use crate::manager::{ApiTokens, ManageError};
use crate::store::UserId;
use crate::token::TokenHash;

/// A change to apply to this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A token was revoked (or rotated away).
    TokenRevoked {
        /// Its hash.
        hash: TokenHash,
    },
    /// The policy was replaced.
    PolicyChanged,
    /// A user's name, roles or identity provider changed.
    UserChanged {
        /// The user.
        user: UserId,
    },
    /// Notices may have been lost: forget every cached token and reload the
    /// policy.
    Resync,
}

impl ApiTokens {
    /// Applies a change made elsewhere.
    ///
    /// # Errors
    ///
    /// The store's failure while reloading the policy or listing a user's
    /// tokens; the cache has been invalidated as far as possible regardless.
    pub async fn apply(&self, change: Change) -> Result<(), ManageError> {
        let auth = self.auth();
        match change {
            Change::TokenRevoked { hash } => auth.cache.invalidate(&hash),
            Change::UserChanged { user } => {
                for record in auth.store.list(Some(user)).await? {
                    auth.cache.invalidate(&record.hash);
                }
            }
            Change::PolicyChanged => self.reload_policy().await?,
            Change::Resync => {
                auth.cache.invalidate_all();
                self.reload_policy().await?;
            }
        }
        Ok(())
    }

    async fn reload_policy(&self) -> Result<(), ManageError> {
        if let Some(policy) = self.auth().store.load_policy().await? {
            self.auth().policy.replace(policy);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::policy::Policy;
    use crate::store::{Directory, MemoryStore, TokenStore, User};

    async fn two_instances() -> (ApiTokens, ApiTokens, MemoryStore, User) {
        let store = MemoryStore::new();
        let user = User {
            id: UserId::new(),
            username: "u".into(),
            roles: vec!["dev".into()],
            identity_provider: "local".into(),
        };
        store.create_user(&user, &"pw".into()).await.unwrap();
        let clock = ManualClock::new(time::macros::datetime!(2026-01-01 00:00 UTC));
        let build = || {
            ApiTokens::builder()
                .backend(store.clone())
                .clock(clock.clone())
                .build()
        };
        (build().await.unwrap(), build().await.unwrap(), store, user)
    }

    #[tokio::test]
    async fn a_policy_change_elsewhere_is_seen_after_apply() {
        let (a, b, _, _) = two_instances().await;
        a.set_policy(Policy::None).await.unwrap();
        assert_ne!(b.policy().policy, Policy::None);
        b.apply(Change::PolicyChanged).await.unwrap();
        assert_eq!(b.policy(), a.policy());
    }

    #[tokio::test]
    async fn resync_reloads_the_policy() {
        let (a, b, _, _) = two_instances().await;
        a.set_policy(Policy::None).await.unwrap();
        b.apply(Change::Resync).await.unwrap();
        assert_eq!(b.policy().policy, Policy::None);
    }

    #[tokio::test]
    async fn token_and_user_changes_drop_cached_entries() {
        let (a, b, store, user) = two_instances().await;
        let issued = a.issue(user.id).await.unwrap();
        let hash = issued.record.hash;
        let load = || std::sync::Arc::clone(&b.shared_auth()).load(hash);
        load().await.unwrap();
        assert!(b.auth().cache.get(&hash).is_some());
        store
            .revoke(issued.record.id, time::OffsetDateTime::UNIX_EPOCH)
            .await
            .unwrap();
        b.apply(Change::TokenRevoked { hash }).await.unwrap();
        assert!(b.auth().cache.get(&hash).is_none());

        load().await.unwrap();
        assert!(b.auth().cache.get(&hash).is_some());
        b.apply(Change::UserChanged { user: user.id })
            .await
            .unwrap();
        assert!(b.auth().cache.get(&hash).is_none());

        load().await.unwrap();
        b.apply(Change::Resync).await.unwrap();
        assert!(b.auth().cache.get(&hash).is_none());
    }
}
