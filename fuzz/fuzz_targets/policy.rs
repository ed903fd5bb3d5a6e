//! The policy JSON parser on arbitrary input: no panic; every accepted policy
//! validates and survives a round trip through its JSON form unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_api_tokens::policy::Policy;

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = serde_json::from_slice::<Policy>(data) {
        assert_eq!(policy.validate(), Ok(()));
        let json = serde_json::to_string(&policy).unwrap();
        let again: Policy = serde_json::from_str(&json).unwrap();
        assert_eq!(again, policy);
    }
});
