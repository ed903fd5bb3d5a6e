//! Internals exposed for this crate's own benchmarks. Not part of the API: hidden
//! from the docs and free to change in any release.

use http::HeaderMap;

use crate::extract::{self, Credentials};
use crate::manager::ApiTokens;
use crate::token::TokenHash;

/// The bearer credential of `headers`, as the layer extracts it, checked to be
/// token68 (the layer skips that check for tokens of its own format).
pub fn parse_bearer(headers: &mut HeaderMap, max_len: usize) -> Option<&[u8]> {
    match extract::bearer_unchecked(headers, max_len) {
        Ok(Credentials::Bearer(token)) if extract::is_token68(token) => Some(token),
        _ => None,
    }
}

/// Whether `hash` is a trusted entry in the layer's cache (one probe).
pub fn cache_hit(tokens: &ApiTokens, hash: &TokenHash) -> bool {
    tokens.auth().cache.get(hash).is_some()
}

/// Whether `token` is of `tokens`' format (prefix, length, alphabet, checksum),
/// checked as the layer checks the bytes of a request's token.
pub fn check_token(tokens: &ApiTokens, token: &[u8]) -> bool {
    tokens.format().check_bytes(token).is_ok()
}
