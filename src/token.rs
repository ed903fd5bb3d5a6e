//! The token format: `<prefix><body><checksum>`, and the secret and hash types.
//!
//! The body is 32 bytes (256 bits) from the operating system's CSPRNG, written as
//! 43 base62 characters; the checksum is the CRC32 of prefix + body in 6 base62
//! characters (GitHub's scheme), so secret scanners can find leaked tokens and a
//! mistyped token is refused offline, before any cache or store is touched.
//!
//! This module owns the only place a token's plaintext lives ([`ApiToken`]) and
//! the only thing derived from it that leaves the request path ([`TokenHash`]). It
//! must never print a token: `Debug` and `Display` of secrets are redacted.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::error::ConfigError;

/// The default token prefix.
pub const DEFAULT_PREFIX: &str = "nch_";
/// Length of the base62 body: the smallest width that holds any 256-bit value.
pub const BODY_LEN: usize = 43;
/// Length of the base62 CRC32 checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Longest accepted prefix.
pub const MAX_PREFIX_LEN: usize = 32;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// How tokens look: their prefix. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFormat {
    prefix: Box<str>,
}

impl Default for TokenFormat {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.into(),
        }
    }
}

/// Why a string is not a token of this format.
///
/// Deliberately carries nothing of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The token does not start with the configured prefix.
    #[error("the token does not have the expected prefix")]
    Prefix,
    /// The token has the wrong length.
    #[error("the token has the wrong length")]
    Length,
    /// The token contains a character outside base62 after its prefix.
    #[error("the token contains characters outside its alphabet")]
    Alphabet,
    /// The checksum does not match: a typo, a truncation, or a forgery.
    #[error("the token checksum does not match")]
    Checksum,
}

impl TokenFormat {
    /// A format with the given prefix: 1 to 32 ASCII letters, digits or `_`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::TokenPrefix`] for an empty, long or oddly spelled prefix.
    pub fn new(prefix: &str) -> Result<Self, ConfigError> {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ConfigError::TokenPrefix);
        }
        Ok(Self {
            prefix: prefix.into(),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The length of every token of this format.
    pub fn token_len(&self) -> usize {
        self.prefix.len() + BODY_LEN + CHECKSUM_LEN
    }

    /// A fresh token with a body from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// [`RandomnessError`] when the operating system cannot supply randomness.
    pub fn generate(&self) -> Result<ApiToken, RandomnessError> {
        let mut body = [0u8; 32];
        getrandom::fill(&mut body).map_err(|_| RandomnessError)?;
        Ok(self.from_body_bytes(&body))
    }

    /// The token whose body encodes `body` (for tokens derived, not drawn, such as
    /// `HMAC(server_key, token_id)`).
    pub fn from_body_bytes(&self, body: &[u8; 32]) -> ApiToken {
        let mut token = String::with_capacity(self.token_len());
        token.push_str(&self.prefix);
        let mut digits = [0u8; BODY_LEN];
        encode_base62(body, &mut digits);
        // The digits are ASCII from ALPHABET.
        token.extend(digits.iter().map(|&d| char::from(d)));
        let crc = crc32fast::hash(token.as_bytes());
        let mut check = [0u8; CHECKSUM_LEN];
        encode_base62(&crc.to_be_bytes(), &mut check);
        token.extend(check.iter().map(|&d| char::from(d)));
        ApiToken(token)
    }

    /// Checks that `candidate` is a token of this format: prefix, length,
    /// alphabet and checksum. Allocates nothing.
    ///
    /// # Errors
    ///
    /// A [`FormatError`] saying which check failed.
    pub fn check(&self, candidate: &str) -> Result<(), FormatError> {
        self.check_bytes(candidate.as_bytes())
    }

    /// [`check`](Self::check) on raw bytes (what the request path has).
    pub(crate) fn check_bytes(&self, bytes: &[u8]) -> Result<(), FormatError> {
        if bytes.len() != self.token_len() {
            return Err(FormatError::Length);
        }
        if !bytes.starts_with(self.prefix.as_bytes()) {
            return Err(FormatError::Prefix);
        }
        let (signed, check) = bytes.split_at(self.prefix.len() + BODY_LEN);
        let body = &signed[self.prefix.len()..];
        if !all_alphanumeric(body) {
            return Err(FormatError::Alphabet);
        }
        // Decoding the 6 digits is cheaper than encoding the CRC to compare text;
        // 62^6 > 2^32, so equal values mean the canonical encoding.
        // Branch-free: an invalid digit decodes to 0x80, which sets `bad`.
        let (sum, bad) = check.iter().fold((0u64, 0u8), |(sum, bad), &digit| {
            let value = DECODE_BASE62[usize::from(digit)];
            (sum * 62 + u64::from(value & 0x7f), bad | value)
        });
        if bad & 0x80 != 0 {
            return Err(FormatError::Alphabet);
        }
        if sum != u64::from(crc32fast::hash(signed)) {
            return Err(FormatError::Checksum);
        }
        Ok(())
    }
}

/// Whether every byte is an ASCII letter or digit. Branch-free over the whole
/// slice (no early exit), so the compiler vectorizes it: the body of every
/// request's token goes through here.
fn all_alphanumeric(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |bad, &b| {
        let folded = b | 0x20; // ASCII upper case to lower case
        let letter = folded.wrapping_sub(b'a') < 26;
        let digit = b.wrapping_sub(b'0') < 10;
        bad | u8::from(!(letter | digit))
    }) == 0
}

/// A base62 digit's value by its byte, or `0x80` for a byte that is no digit.
const DECODE_BASE62: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Writes the big-endian integer `bytes` in base62 into `out`, most significant
/// digit first, padded with `0`. `out` must be wide enough for the value; the
/// callers use fixed widths that are (43 digits ≥ 2^256, 6 digits ≥ 2^32).
fn encode_base62(bytes: &[u8], out: &mut [u8]) {
    let mut num = [0u8; 32];
    let num = &mut num[..bytes.len()];
    num.copy_from_slice(bytes);
    for slot in out.iter_mut().rev() {
        // One long division of `num` by 62; the remainder is the next digit.
        let mut rem: u32 = 0;
        for byte in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            // acc < 62 * 256, so the quotient fits a byte.
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        *slot = ALPHABET[rem as usize];
    }
}

/// The operating system could not supply randomness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomnessError;

/// A token's plaintext. Only ever handed to its owner; never stored or logged.
///
/// `Debug` and `Display` print `ApiToken(<redacted>)`; use [`ApiToken::expose`]
/// where the plaintext is really wanted (the response to its owner).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// The plaintext, for handing to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 digest that identifies this token in caches and stores.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }

    /// A short, non-secret hint for display: the prefix and the last 4 characters
    /// (which belong to the checksum).
    pub fn hint(&self, format: &TokenFormat) -> String {
        let tail = self.0.len().saturating_sub(4);
        format!("{}…{}", format.prefix(), self.0.get(tail..).unwrap_or(""))
    }
}

impl Drop for ApiToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The SHA-256 digest of a whole token: the cache key (as raw bytes) and the store
/// key (as lower-case hex, see [`TokenHash::to_hex`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The digest of `token`.
    pub fn of(token: &str) -> Self {
        Self::of_bytes(token.as_bytes())
    }

    pub(crate) fn of_bytes(token: &[u8]) -> Self {
        Self(Sha256::digest(token).into())
    }

    /// A digest from its raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The lower-case hex form, written into a stack buffer.
    pub fn to_hex(&self) -> HexDigest {
        let mut out = [0u8; 64];
        // The buffer is exactly twice the input: encoding cannot fail.
        let _ = hex::encode_to_slice(self.0, &mut out);
        HexDigest(out)
    }

    /// Parses the 64-character hex form.
    ///
    /// # Errors
    ///
    /// [`hex::FromHexError`] when `hex` is not 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out)?;
        Ok(Self(out))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The digest is not secret, but a short form keeps logs readable.
        write!(f, "TokenHash({}…)", &self.to_hex().as_str()[..12])
    }
}

/// A SHA-256 digest in lower-case hex, on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexDigest([u8; 64]);

impl HexDigest {
    /// The 64 hex characters.
    pub fn as_str(&self) -> &str {
        // Written by `hex::encode_to_slice`: ASCII only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for HexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphanumeric_check_agrees_with_std_for_every_byte() {
        for b in 0..=u8::MAX {
            assert_eq!(
                all_alphanumeric(&[b]),
                b.is_ascii_alphanumeric(),
                "byte {b:#04x}"
            );
            // One bad byte anywhere in a long body is found.
            let mut body = [b'a'; 43];
            body[17] = b;
            assert_eq!(
                all_alphanumeric(&body),
                b.is_ascii_alphanumeric(),
                "byte {b:#04x}"
            );
        }
    }

    fn format() -> TokenFormat {
        TokenFormat::default()
    }

    #[test]
    fn generated_tokens_have_the_documented_shape() {
        let token = format().generate().unwrap();
        let s = token.expose();
        assert_eq!(s.len(), 4 + 43 + 6);
        assert!(s.starts_with("nch_"));
        assert!(s[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(format().check(s), Ok(()));
    }

    #[test]
    fn base62_digits_decode_for_every_byte() {
        for byte in 0..=255u8 {
            let expected = match byte {
                b'0'..=b'9' => byte - b'0',
                b'A'..=b'Z' => byte - b'A' + 10,
                b'a'..=b'z' => byte - b'a' + 36,
                _ => 0x80,
            };
            assert_eq!(DECODE_BASE62[usize::from(byte)], expected, "{byte:#04x}");
        }
    }

    #[test]
    fn base62_of_known_values() {
        // 0 and the largest values pad and fill the widths exactly.
        let mut out = [0u8; 6];
        encode_base62(&0u32.to_be_bytes(), &mut out);
        assert_eq!(&out, b"000000");
        encode_base62(&61u32.to_be_bytes(), &mut out);
        assert_eq!(&out, b"00000z");
        encode_base62(&62u32.to_be_bytes(), &mut out);
        assert_eq!(&out, b"000010");
        // u32::MAX in base62, computed independently (Python: repeated divmod by 62).
        encode_base62(&u32::MAX.to_be_bytes(), &mut out);
        assert_eq!(&out, b"4gfFC3");
        let mut body = [0u8; 43];
        encode_base62(&[0xff; 32], &mut body);
        // 2^256 - 1 needs all 43 digits, and its first digit is not 0.
        assert_ne!(body[0], b'0');
    }

    #[test]
    fn checksum_is_crc32_of_prefix_and_body() {
        let token = format().from_body_bytes(&[7; 32]);
        let s = token.expose();
        let crc = crc32fast::hash(&s.as_bytes()[..4 + 43]);
        // Decode the 6 trailing base62 digits by hand.
        let decoded = s[47..].bytes().fold(0u64, |acc, c| {
            acc * 62 + ALPHABET.iter().position(|&a| a == c).unwrap() as u64
        });
        assert_eq!(decoded, u64::from(crc));
    }

    #[test]
    fn derived_tokens_are_deterministic() {
        assert_eq!(
            format().from_body_bytes(&[1; 32]),
            format().from_body_bytes(&[1; 32])
        );
        assert_ne!(
            format().from_body_bytes(&[1; 32]),
            format().from_body_bytes(&[2; 32])
        );
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let token = format().generate().unwrap();
        let s = token.expose().as_bytes().to_vec();
        for i in 0..s.len() {
            for replacement in [b'a', b'Z', b'0', b'_'] {
                if s[i] == replacement {
                    continue;
                }
                let mut changed = s.clone();
                changed[i] = replacement;
                let changed = String::from_utf8(changed).unwrap();
                assert!(format().check(&changed).is_err(), "accepted {i}");
            }
        }
    }

    #[test]
    fn check_names_the_failure() {
        let token = format().generate().unwrap();
        let s = token.expose();
        assert_eq!(format().check(&s[..s.len() - 1]), Err(FormatError::Length));
        let other = TokenFormat::new("xyz_").unwrap();
        assert_eq!(other.check(s), Err(FormatError::Prefix));
        let mut bad = s.to_string();
        bad.replace_range(10..11, "-");
        assert_eq!(format().check(&bad), Err(FormatError::Alphabet));
        assert_eq!(format().check(&s.to_uppercase()), Err(FormatError::Prefix));
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(TokenFormat::new("").is_err());
        assert!(TokenFormat::new("has space").is_err());
        assert!(TokenFormat::new(&"a".repeat(33)).is_err());
        assert!(TokenFormat::new("ghp_").is_ok());
    }

    #[test]
    fn secrets_are_redacted() {
        let token = format().generate().unwrap();
        assert_eq!(format!("{token:?}"), "ApiToken(<redacted>)");
        assert_eq!(format!("{token}"), "<redacted>");
    }

    #[test]
    fn hash_is_sha256_and_hex_round_trips() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        let h = TokenHash::of("abc");
        assert_eq!(
            h.to_hex().as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(TokenHash::from_hex(h.to_hex().as_str()).unwrap(), h);
        assert!(TokenHash::from_hex("zz").is_err());
    }

    #[test]
    fn hint_is_prefix_and_last_four() {
        let token = format().from_body_bytes(&[3; 32]);
        let s = token.expose();
        assert_eq!(token.hint(&format()), format!("nch_…{}", &s[s.len() - 4..]));
    }
}
