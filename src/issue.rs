//! Issuing tokens: the server key that makes tokens re-fetchable, and the
//! derivation `body = HMAC-SHA256(server_key, token_id)`.
//!
//! With a key, a user's existing token can be handed back again without its
//! plaintext ever being stored: it is derived anew from its id and checked
//! against the stored hash. Without a key, tokens are drawn from the CSPRNG and
//! shown once. This module never logs or prints a key or a token.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::store::{TokenId, TokenRecord};
use crate::token::{ApiToken, TokenFormat};

/// The shortest accepted server key.
pub const MIN_SERVER_KEY_LEN: usize = 32;

/// The secret from which re-fetchable tokens are derived. Every instance of one
/// service must share it; it must never be stored beside the token hashes.
/// `Debug` is redacted; the bytes are zeroed on drop.
#[derive(Clone)]
pub struct ServerKey(Zeroizing<Vec<u8>>);

/// The server key is shorter than [`MIN_SERVER_KEY_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server key must be at least 32 bytes")]
pub struct ServerKeyTooShort;

impl ServerKey {
    /// A key from at least 32 bytes (any string of 32 bytes or more will do).
    ///
    /// # Errors
    ///
    /// [`ServerKeyTooShort`].
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self, ServerKeyTooShort> {
        let key = Zeroizing::new(key.into());
        if key.len() < MIN_SERVER_KEY_LEN {
            return Err(ServerKeyTooShort);
        }
        Ok(Self(key))
    }

    /// The token with id `id`, derived from this key.
    pub(crate) fn derive(&self, format: &TokenFormat, id: TokenId) -> ApiToken {
        // HMAC takes keys of any length: the error case cannot occur, and an
        // empty fallback key would only yield tokens that never match.
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).map(|mut mac| {
            mac.update(id.0.as_bytes());
            mac.finalize().into_bytes()
        });
        let mut body = Zeroizing::new([0u8; 32]);
        if let Ok(bytes) = mac {
            body.copy_from_slice(&bytes);
        }
        format.from_body_bytes(&body)
    }

    /// The plaintext of `record`, if it was derived from this key.
    pub(crate) fn recover(&self, format: &TokenFormat, record: &TokenRecord) -> Option<ApiToken> {
        let token = self.derive(format, record.id);
        let matches: bool = token.hash().as_bytes().ct_eq(record.hash.as_bytes()).into();
        matches.then_some(token)
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::store::UserId;

    #[test]
    fn keys_shorter_than_32_bytes_are_refused() {
        assert_eq!(ServerKey::new(vec![0; 31]).err(), Some(ServerKeyTooShort));
        assert!(ServerKey::new("x".repeat(32)).is_ok());
        assert_eq!(
            format!("{:?}", ServerKey::new("k".repeat(40)).unwrap()),
            "ServerKey(<redacted>)"
        );
    }

    #[test]
    fn derivation_is_hmac_sha256_of_the_token_id() {
        let key = ServerKey::new("k".repeat(32)).unwrap();
        let format = TokenFormat::default();
        let id = TokenId(uuid::Uuid::from_u128(
            0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        ));
        // HMAC-SHA256 computed independently:
        // python3 -c "import hmac,hashlib,uuid;print(hmac.new(b'k'*32,
        //   uuid.UUID(int=0x0123456789abcdef0123456789abcdef).bytes,hashlib.sha256).hexdigest())"
        let expected: [u8; 32] =
            hex::decode("7ecd63b9b84a0cdee909158cdc6d179ff0a982a5a047d2bcb8d4088ba0f47423")
                .unwrap()
                .try_into()
                .unwrap();
        assert_eq!(key.derive(&format, id), format.from_body_bytes(&expected));
        // Another key, another token.
        let other = ServerKey::new("j".repeat(32)).unwrap();
        assert_ne!(other.derive(&format, id), key.derive(&format, id));
    }

    #[test]
    fn recover_only_returns_tokens_this_key_derived() {
        let key = ServerKey::new("k".repeat(32)).unwrap();
        let format = TokenFormat::default();
        let id = TokenId::new();
        let token = key.derive(&format, id);
        let mut record = TokenRecord {
            id,
            user_id: UserId::new(),
            hash: token.hash(),
            hint: String::new(),
            issued_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        assert_eq!(key.recover(&format, &record), Some(token));
        record.hash = format.generate().unwrap().hash();
        assert_eq!(key.recover(&format, &record), None);
    }
}
