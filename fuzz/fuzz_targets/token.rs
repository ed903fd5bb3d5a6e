//! The token parser on arbitrary input: no panic; whatever it accepts has the
//! format's exact length and prefix, and is what the format would generate from
//! some body (so the check cannot be fooled into accepting a foreign shape).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_api_tokens::token::TokenFormat;

fuzz_target!(|data: &[u8]| {
    let format = TokenFormat::default();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if format.check(text).is_ok() {
        assert_eq!(text.len(), format.token_len());
        assert!(text.starts_with(format.prefix()));
        assert!(text[format.prefix().len()..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }
    // Any 32 bytes make a token that passes its own check.
    if let Some(body) = data.first_chunk::<32>() {
        let token = format.from_body_bytes(body);
        assert_eq!(format.check(token.expose()), Ok(()));
    }
});
