//! No token reaches a log line, a `Debug` or an error: captured at TRACE.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "current_thread")]
async fn no_token_appears_in_trace_output_or_debug() {
    let capture = Capture::default();
    let _guard = capture.install();

    let h = Harness::new().await;
    let mut secrets = Vec::new();
    let mut debug = String::new();

    // Used on a miss and on a hit.
    let issued = h.tokens.issue(h.alice.id).await.unwrap();
    debug += &format!("{issued:?} {:?} {}", issued.token, issued.token);
    let tok = issued.token.expose().to_owned();
    secrets.push(tok.clone());
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, 200);
    assert_eq!(send(&h.tokens, bearer(&tok)).await.status, 200);
    // In the query string.
    let req = http::Request::get(format!("/resource?access_token={tok}"))
        .body(Default::default())
        .unwrap();
    assert_eq!(send(&h.tokens, req).await.status, 401);
    // In the path, by a careless client (the span logs the path).
    let req = http::Request::get(format!("/resource/{tok}/x"))
        .body(Default::default())
        .unwrap();
    assert_eq!(send(&h.tokens, req).await.status, 401);

    // Revoked, then rejected.
    h.tokens.revoke(issued.record.id).await.unwrap();
    let a = send(&h.tokens, bearer(&tok)).await;
    debug += &format!("{:?} {}", a.headers, a.body);

    // Unknown, malformed (a typo of a real token), expired.
    let unknown = h.tokens.format().generate().unwrap();
    secrets.push(unknown.expose().to_owned());
    send(&h.tokens, bearer(unknown.expose())).await;
    let (expiring, _) = h.token(&h.alice).await;
    secrets.push(expiring.clone());
    let mut typo = expiring.clone();
    typo.replace_range(10..11, if &typo[10..11] == "x" { "y" } else { "x" });
    secrets.push(typo.clone());
    send(&h.tokens, bearer(&typo)).await;
    h.clock.advance(Duration::from_secs(91 * 86_400));
    let a = send(&h.tokens, bearer(&expiring)).await;
    assert_eq!(a.status, 401);

    // Backend failure.
    let (failing, _) = h.token(&h.admin).await;
    secrets.push(failing.clone());
    h.store.set_failing(true);
    let a = send(&h.tokens, bearer(&failing)).await;
    assert_eq!(a.status, 503);
    debug += &format!("{:?}", h.tokens);

    drop(_guard);
    let log = capture.text();
    // The capture saw the request path: spans with outcomes, refusals.
    assert!(log.contains("authenticate"), "{log}");
    assert!(log.contains("outcome=\"accepted\""), "{log}");
    assert!(log.contains("revoked"), "{log}");
    assert!(log.contains("unavailable"), "{log}");
    assert!(!log.contains("access_token"), "the query string was logged");
    for secret in &secrets {
        // The body alone (without the public prefix) must not appear either.
        let body = &secret[4..secret.len() - 6];
        assert!(!log.contains(body), "a token leaked into the log");
        assert!(!debug.contains(body), "a token leaked into Debug output");
    }
}
