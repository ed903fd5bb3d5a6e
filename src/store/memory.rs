//! [`MemoryStore`]: token records, users and the policy in process memory, for
//! tests and quick starts. Nothing survives a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{Active, Directory, Issued, TokenId, TokenRecord, TokenStore, User, UserId};
use crate::error::StoreError;
use crate::password::{self, Password};
use crate::policy::{Policy, VersionedPolicy};
use crate::token::TokenHash;

/// An in-memory [`TokenStore`] and [`Directory`]. Clones share the same data.
///
/// # Example
///
/// ```
/// use tower_api_tokens::store::MemoryStore;
///
/// let store = MemoryStore::new();
/// // The same value serves as token store and user directory.
/// let _for_the_builder = (store.clone(), store);
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
}

#[derive(Default)]
struct Data {
    tokens: HashMap<TokenId, TokenRecord>,
    by_hash: HashMap<TokenHash, TokenId>,
    users: HashMap<UserId, (User, String)>,
    by_name: HashMap<String, UserId>,
    policy: Option<VersionedPolicy>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        // No code path panics while holding the lock, and the data stays
        // consistent between statements even if one did.
        self.data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = self.data();
        f.debug_struct("MemoryStore")
            .field("tokens", &data.tokens.len())
            .field("users", &data.users.len())
            .finish()
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        let data = self.data();
        Ok(data
            .by_hash
            .get(hash)
            .and_then(|id| data.tokens.get(id))
            .cloned())
    }

    async fn get(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.data().tokens.get(&id).cloned())
    }

    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> {
        let mut data = self.data();
        if data.tokens.contains_key(&record.id) || data.by_hash.contains_key(&record.hash) {
            return Err(StoreError::Conflict("token id or hash exists"));
        }
        data.by_hash.insert(record.hash, record.id);
        data.tokens.insert(record.id, record.clone());
        Ok(())
    }

    async fn revoke(
        &self,
        id: TokenId,
        at: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.data().tokens.get_mut(&id).map(|record| {
            record.revoked_at.get_or_insert(at);
            record.clone()
        }))
    }

    async fn list(&self, user: Option<UserId>) -> Result<Vec<TokenRecord>, StoreError> {
        let mut records: Vec<TokenRecord> = self
            .data()
            .tokens
            .values()
            .filter(|r| user.is_none_or(|u| r.user_id == u))
            .cloned()
            .collect();
        records.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then(b.id.cmp(&a.id)));
        Ok(records)
    }

    async fn touch(&self, used: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        let mut data = self.data();
        for (id, at) in used {
            if let Some(record) = data.tokens.get_mut(id)
                && record.last_used_at.is_none_or(|prev| prev < *at)
            {
                record.last_used_at = Some(*at);
            }
        }
        Ok(())
    }

    async fn load_policy(&self) -> Result<Option<VersionedPolicy>, StoreError> {
        Ok(self.data().policy.clone())
    }

    async fn save_policy(&self, policy: &Policy) -> Result<VersionedPolicy, StoreError> {
        let mut data = self.data();
        let version = data.policy.as_ref().map_or(0, |p| p.version) + 1;
        let saved = VersionedPolicy {
            policy: policy.clone(),
            version,
        };
        data.policy = Some(saved.clone());
        Ok(saved)
    }

    async fn issue(
        &self,
        record: &TokenRecord,
        active: Active,
        rotate: bool,
    ) -> Result<Issued, StoreError> {
        // One lock held from the decision to the write: that is the atomicity.
        let mut data = self.data();
        let mut current: Vec<TokenRecord> = data
            .tokens
            .values()
            .filter(|r| r.user_id == record.user_id && active.contains(r))
            .cloned()
            .collect();
        // Newest first, as `list` orders them.
        current.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then(b.id.cmp(&a.id)));
        if !rotate && let Some(newest) = current.first() {
            return Ok(Issued::Existing(newest.clone()));
        }
        // Checked before anything changes, so a conflict revokes nothing.
        if data.tokens.contains_key(&record.id) || data.by_hash.contains_key(&record.hash) {
            return Err(StoreError::Conflict("token id or hash exists"));
        }
        let mut revoked = Vec::with_capacity(current.len());
        for old in current {
            if let Some(old) = data.tokens.get_mut(&old.id) {
                old.revoked_at.get_or_insert(record.issued_at);
                revoked.push(old.clone());
            }
        }
        data.by_hash.insert(record.hash, record.id);
        data.tokens.insert(record.id, record.clone());
        Ok(Issued::Inserted { revoked })
    }
}

#[async_trait]
impl Directory for MemoryStore {
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self.data().users.get(&id).map(|(u, _)| u.clone()))
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let data = self.data();
        Ok(data
            .by_name
            .get(username)
            .and_then(|id| data.users.get(id))
            .map(|(u, _)| u.clone()))
    }

    async fn verify_password(
        &self,
        username: &str,
        password: &Password,
    ) -> Result<Option<User>, StoreError> {
        let found = {
            let data = self.data();
            data.by_name
                .get(username)
                .and_then(|id| data.users.get(id))
                .cloned()
        };
        Ok(password::check(found, password).await)
    }

    async fn create_user(&self, user: &User, password: &Password) -> Result<(), StoreError> {
        let phc = password::hash(password).await?;
        let mut data = self.data();
        if data.users.contains_key(&user.id) || data.by_name.contains_key(&user.username) {
            return Err(StoreError::Conflict("user id or name exists"));
        }
        data.by_name.insert(user.username.clone(), user.id);
        data.users.insert(user.id, (user.clone(), phc));
        Ok(())
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let mut data = self.data();
        let Some((current, _)) = data.users.get(&user.id) else {
            return Err(StoreError::NotFound);
        };
        let old_name = current.username.clone();
        if old_name != user.username && data.by_name.contains_key(&user.username) {
            return Err(StoreError::Conflict("user name exists"));
        }
        data.by_name.remove(&old_name);
        data.by_name.insert(user.username.clone(), user.id);
        if let Some((current, _)) = data.users.get_mut(&user.id) {
            *current = user.clone();
        }
        Ok(())
    }
}
