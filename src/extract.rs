//! Bearer credential extraction from the `Authorization` header.
//!
//! Implements `credentials = auth-scheme [ 1*SP token68 ]` (RFC 9110 §11.4) for
//! the `Bearer` scheme (RFC 6750 §2.1): the scheme matches case-insensitively,
//! one or more spaces follow, then exactly one token68. This module decides only
//! the *shape* of the request; it never looks at what the token means, and never
//! copies it.

use http::HeaderMap;
use http::header::{AUTHORIZATION, Entry};

use crate::error::InvalidRequest;

/// What the `Authorization` header of a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credentials<'a> {
    /// No `Authorization` header.
    Missing,
    /// A credential of another scheme (`Basic …`, or something that is not
    /// `Bearer` followed by a space).
    OtherScheme,
    /// A syntactically valid bearer token68 (ASCII by construction).
    Bearer(&'a [u8]),
}

/// Extracts the bearer credential, refusing malformed requests, and marks every
/// `Authorization` value sensitive on the way (one lookup for both), so whatever
/// prints these headers later treats them as secrets.
///
/// `max_len` caps the token's length before anything else looks at it.
#[cfg(test)]
pub(crate) fn bearer(
    headers: &mut HeaderMap,
    max_len: usize,
) -> Result<Credentials<'_>, InvalidRequest> {
    match bearer_unchecked(headers, max_len)? {
        Credentials::Bearer(token) if !is_token68(token) => Err(InvalidRequest::MalformedToken),
        other => Ok(other),
    }
}

/// [`bearer`] without its last step: the token is not yet checked to be token68.
/// The layer checks the token's own format first, which implies token68 for
/// every token it issued, and calls [`is_token68`] only for a token that fails
/// it (to tell a malformed request, `400`, from a wrong token, `401`): valid
/// tokens are scanned once, not twice.
pub(crate) fn bearer_unchecked(
    headers: &mut HeaderMap,
    max_len: usize,
) -> Result<Credentials<'_>, InvalidRequest> {
    // `entry` may grow an empty map; the check keeps a header-less request from
    // allocating.
    if headers.is_empty() {
        return Ok(Credentials::Missing);
    }
    let Entry::Occupied(mut values) = headers.entry(AUTHORIZATION) else {
        return Ok(Credentials::Missing);
    };
    let mut count = 0;
    for value in values.iter_mut() {
        value.set_sensitive(true);
        count += 1;
    }
    if count > 1 {
        return Err(InvalidRequest::MultipleAuthorizationHeaders);
    }
    credentials(values.into_mut().as_bytes(), max_len)
}

/// The credentials in one `Authorization` value. The common shape, `Bearer
/// <token>`, is recognised with one 8-byte comparison; everything else (leading
/// whitespace, another scheme) takes [`credentials_general`], which gives the
/// same answer for that shape too (tested for every byte).
fn credentials(value: &[u8], max_len: usize) -> Result<Credentials<'_>, InvalidRequest> {
    match strip_bearer_sp(value) {
        Some(rest) => bearer_token(trim_trailing_ows(rest), max_len),
        None => credentials_general(value, max_len),
    }
}

/// `auth-scheme [ 1*SP token68 ]`, after trimming the field's whitespace.
fn credentials_general(value: &[u8], max_len: usize) -> Result<Credentials<'_>, InvalidRequest> {
    let value = trim_ows(value);
    if value.is_empty() {
        return Err(InvalidRequest::MissingToken);
    }
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(space) => value.split_at(space),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok(Credentials::OtherScheme);
    }
    bearer_token(rest, max_len)
}

/// What follows `Bearer` and its first space: more spaces, then the token.
fn bearer_token(rest: &[u8], max_len: usize) -> Result<Credentials<'_>, InvalidRequest> {
    let token = trim_leading_spaces(rest);
    if token.is_empty() {
        return Err(InvalidRequest::MissingToken);
    }
    if token.len() > max_len {
        return Err(InvalidRequest::TokenTooLong);
    }
    Ok(Credentials::Bearer(token))
}

/// `value` after a leading `Bearer ` (scheme in any case, then one space).
#[inline]
fn strip_bearer_sp(value: &[u8]) -> Option<&[u8]> {
    let (head, rest) = value.split_first_chunk::<7>()?;
    let mut word = [0u8; 8];
    word[..7].copy_from_slice(head);
    // Setting bit 0x20 lowers an ASCII capital; of all bytes only `B`/`b` then
    // give `b`, and so on, so this matches the scheme case-insensitively and
    // nothing else. The space (byte 6) must be exact.
    const CASE: u64 = u64::from_le_bytes(*b"\x20\x20\x20\x20\x20\x20\0\0");
    const BEARER_SP: u64 = u64::from_le_bytes(*b"bearer \0");
    (u64::from_le_bytes(word) | CASE == BEARER_SP).then_some(rest)
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    trim_trailing_ows(bytes)
}

fn trim_trailing_ows(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn trim_leading_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
/// (RFC 9110 §11.2).
///
/// The body check runs branch-free over the whole slice (no early exit), so the
/// compiler vectorizes it: every request's token goes through here.
pub(crate) fn is_token68(bytes: &[u8]) -> bool {
    let body_len = bytes.len() - bytes.iter().rev().take_while(|&&b| b == b'=').count();
    let Some(body) = bytes.get(..body_len).filter(|body| !body.is_empty()) else {
        return false;
    };
    body.iter().fold(0u8, |bad, &b| {
        let folded = b | 0x20; // ASCII upper case to lower case
        let letter = folded.wrapping_sub(b'a') < 26;
        let digit = b.wrapping_sub(b'0') < 10;
        // '+' '-' '.' '/' are 0x2B and 0x2D..=0x2F; '_' 0x5F; '~' 0x7E.
        let symbol = b == b'+' || b.wrapping_sub(b'-') < 3 || b == b'_' || b == b'~';
        bad | u8::from(!(letter | digit | symbol))
    }) == 0
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn extract(values: &[&[u8]]) -> Result<Credentials<'static>, InvalidRequest> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        // Leak to keep the test signatures simple; test-only.
        let headers: &'static mut HeaderMap = Box::leak(Box::new(headers));
        bearer(headers, 64)
    }

    #[test]
    fn token68_accepts_exactly_the_rfc_characters() {
        // RFC 7235 §2.1: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/".
        let allowed = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/";
        for b in 0..=u8::MAX {
            let want = allowed.contains(&b);
            let mut long = *b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
            long[20] = b;
            assert_eq!(is_token68(&long), want, "byte {b:#04x} inside a token");
            if b != b'=' {
                assert_eq!(is_token68(&[b]), want, "byte {b:#04x} alone");
            }
        }
        assert!(is_token68(b"abc=="));
        assert!(!is_token68(b"=="));
        assert!(!is_token68(b"a=b"));
    }

    #[test]
    fn the_shortcut_agrees_with_the_general_rule_for_every_byte() {
        // Every byte at each of the first 9 places of a bearer value (so every
        // near miss of `Bearer `), under length caps around the token's, and
        // every pair of whitespace bytes around the space.
        let base = b"Bearer tok";
        let mut checked = 0;
        for at in 0..9 {
            for byte in 0..=255u8 {
                let mut value = base.to_vec();
                value[at] = byte;
                // The length cap just under, at and over the token's length.
                for max_len in [2, 3, 4] {
                    assert_eq!(
                        credentials(&value, max_len),
                        credentials_general(&value, max_len),
                        "{value:?} {max_len}"
                    );
                    checked += 1;
                }
            }
        }
        for a in [b' ', b'\t', b'x'] {
            for b in [b' ', b'\t', b'x'] {
                for value in [
                    [b"Bearer".as_slice(), &[a, b], b"tok"].concat(),
                    [b"bEaReR ".as_slice(), &[a], b"tok", &[b]].concat(),
                    [&[a][..], b"Bearer ", &[b]].concat(),
                ] {
                    assert_eq!(credentials(&value, 64), credentials_general(&value, 64));
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 9 * 256 * 3 + 27);
        // And the shortcut is taken for the common shape.
        assert!(strip_bearer_sp(b"Bearer tok").is_some());
        assert!(strip_bearer_sp(b"BEARER tok").is_some());
        assert!(strip_bearer_sp(b"Bearer\ttok").is_none());
        assert!(strip_bearer_sp(b"Bearez tok").is_none());
        assert!(strip_bearer_sp(b"Bearer").is_none());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR abc"] {
            assert_eq!(
                extract(&[v.as_bytes()]),
                Ok(Credentials::Bearer(b"abc")),
                "{v}"
            );
        }
    }

    #[test]
    fn token_case_is_preserved() {
        assert_eq!(extract(&[b"Bearer AbC"]), Ok(Credentials::Bearer(b"AbC")));
    }

    #[test]
    fn one_or_more_spaces_separate_scheme_and_token() {
        assert_eq!(extract(&[b"Bearer  abc"]), Ok(Credentials::Bearer(b"abc")));
        assert_eq!(
            extract(&[b"Bearer     abc"]),
            Ok(Credentials::Bearer(b"abc"))
        );
    }

    #[test]
    fn trailing_whitespace_is_not_part_of_the_token() {
        assert_eq!(extract(&[b"Bearer abc  "]), Ok(Credentials::Bearer(b"abc")));
        assert_eq!(extract(&[b"Bearer abc\t"]), Ok(Credentials::Bearer(b"abc")));
    }

    #[test]
    fn token68_padding_is_accepted() {
        assert_eq!(
            extract(&[b"Bearer a+b/c=="]),
            Ok(Credentials::Bearer(b"a+b/c=="))
        );
    }

    #[test]
    fn glued_or_other_schemes_are_not_bearer() {
        for v in [
            "BearertokA",
            "Bearer:tokA",
            "Beaver tokA",
            "Basic dXNlcjpwYXNz",
            "Bearer\ttokA",
        ] {
            assert_eq!(
                extract(&[v.as_bytes()]),
                Ok(Credentials::OtherScheme),
                "{v}"
            );
        }
    }

    #[test]
    fn missing_header_is_missing() {
        assert_eq!(extract(&[]), Ok(Credentials::Missing));
        let mut other = HeaderMap::new();
        other.insert("x-other", HeaderValue::from_static("1"));
        assert_eq!(bearer(&mut other, 64), Ok(Credentials::Missing));
    }

    #[test]
    fn every_authorization_value_is_marked_sensitive() {
        let mut headers = HeaderMap::new();
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Basic b"));
        let _ = bearer(&mut headers, 64);
        assert!(
            headers
                .get_all(AUTHORIZATION)
                .iter()
                .all(HeaderValue::is_sensitive)
        );
    }

    #[test]
    fn empty_token_is_invalid_request() {
        for v in ["Bearer", "Bearer ", "bearer   ", ""] {
            assert_eq!(
                extract(&[v.as_bytes()]),
                Err(InvalidRequest::MissingToken),
                "{v:?}"
            );
        }
    }

    #[test]
    fn characters_outside_token68_are_invalid_request() {
        for v in [
            &b"Bearer abc def"[..],
            b"Bearer abc,def",
            b"Bearer \"abc\"",
            b"Bearer =abc",
            b"Bearer ab=c",
            b"Bearer ===",
            b"Bearer abc\xff",
            b"Bearer a\tb",
        ] {
            assert_eq!(extract(&[v]), Err(InvalidRequest::MalformedToken), "{v:?}");
        }
    }

    #[test]
    fn several_authorization_headers_are_invalid_request() {
        assert_eq!(
            extract(&[b"Bearer abc", b"Bearer abc"]),
            Err(InvalidRequest::MultipleAuthorizationHeaders)
        );
        assert_eq!(
            extract(&[b"Basic x", b"Bearer abc"]),
            Err(InvalidRequest::MultipleAuthorizationHeaders)
        );
        assert_eq!(
            extract(&[b"Bearer abc", b"Basic x"]),
            Err(InvalidRequest::MultipleAuthorizationHeaders)
        );
    }

    #[test]
    fn overlong_tokens_are_refused_before_inspection() {
        let long = format!("Bearer {}", "a".repeat(65));
        assert_eq!(
            extract(&[long.as_bytes()]),
            Err(InvalidRequest::TokenTooLong)
        );
        let exact = format!("Bearer {}", "a".repeat(64));
        assert!(matches!(
            extract(&[exact.as_bytes()]),
            Ok(Credentials::Bearer(_))
        ));
    }
}
