//! Internals exposed for this crate's own benchmarks. Not part of the API: hidden
//! from the docs and free to change in any release.

use http::HeaderMap;

use crate::extract::{self, Credentials};
use crate::manager::ApiTokens;
use crate::token::TokenHash;

/// The bearer credential of `headers`, as the layer extracts it.
pub fn parse_bearer(headers: &mut HeaderMap, max_len: usize) -> Option<&[u8]> {
    match extract::bearer(headers, max_len) {
        Ok(Credentials::Bearer(token)) => Some(token),
        _ => None,
    }
}

/// Whether `hash` is a trusted entry in the layer's cache (one probe).
pub fn cache_hit(tokens: &ApiTokens, hash: &TokenHash) -> bool {
    tokens.auth().cache.get(hash).is_some()
}
