//! Properties over generated inputs: tokens round-trip, any header bytes get an
//! answer the design allows (never a panic), any one-character change is refused.

mod support;

use http::{HeaderValue, StatusCode};
use proptest::prelude::*;
use support::*;
use tower_api_tokens::token::{TokenFormat, TokenHash};

/// A current-thread runtime for driving the layer inside proptest's closures.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_token_from_any_body_passes_its_own_check(body in any::<[u8; 32]>(), prefix in "[a-z]{1,8}_") {
        let format = TokenFormat::new(&prefix).unwrap();
        let token = format.from_body_bytes(&body);
        prop_assert_eq!(format.check(token.expose()), Ok(()));
        prop_assert_eq!(token.expose().len(), format.token_len());
        prop_assert!(token.expose().starts_with(&prefix));
        // Same body, same token, same digest; another body, another token.
        prop_assert_eq!(format.from_body_bytes(&body).hash(), TokenHash::of(token.expose()));
        let mut other = body;
        other[0] ^= 1;
        prop_assert_ne!(format.from_body_bytes(&other), token);
    }

    #[test]
    fn any_single_character_change_is_refused(
        body in any::<[u8; 32]>(),
        position in 0usize..53,
        replacement in "[A-Za-z0-9_.~+/=-]",
    ) {
        let format = TokenFormat::default();
        let token = format.from_body_bytes(&body);
        let mut changed = token.expose().to_owned();
        prop_assume!(&changed[position..position + 1] != replacement.as_str());
        changed.replace_range(position..position + 1, &replacement);
        prop_assert!(format.check(&changed).is_err(), "accepted a change at {}", position);
    }
}

#[test]
fn any_header_bytes_get_200_400_or_401_and_never_a_panic() {
    let rt = runtime();
    let h = rt.block_on(Harness::new());
    let (valid, _) = rt.block_on(h.token(&h.alice));
    let valid_header = format!("Bearer {valid}");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(2000));
    let strategy = prop_oneof![
        // Arbitrary bytes a header value may hold.
        proptest::collection::vec(any::<u8>(), 0..300),
        // Near-misses of a valid credential.
        (0usize..valid_header.len(), any::<u8>()).prop_map({
            let valid_header = valid_header.clone();
            move |(i, b)| {
                let mut v = valid_header.clone().into_bytes();
                v[i] = b;
                v
            }
        }),
        // The valid credential with odd spacing and case.
        ("[ \t]{0,3}", "(?i)bearer", "[ \t]{0,3}", "[ \t]{0,3}").prop_map({
            let valid = valid.clone();
            move |(a, s, b, c)| format!("{a}{s}{b}{valid}{c}").into_bytes()
        }),
    ];
    runner
        .run(&strategy, |bytes| {
            // Values `http` refuses (CR, LF, NUL, DEL …) never reach a service.
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                return Ok(());
            };
            let mut req = request(&[]);
            req.headers_mut().insert("authorization", value);
            let answer = rt.block_on(send(&h.tokens, req));
            prop_assert!(
                matches!(
                    answer.status,
                    StatusCode::OK | StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED
                ),
                "{:?} gave {}",
                bytes,
                answer.status
            );
            if answer.status != StatusCode::OK {
                prop_assert!(answer.headers.contains_key("www-authenticate"));
            }
            Ok(())
        })
        .unwrap();
}
