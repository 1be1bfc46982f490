//! The breaker and the trust check of recursive lookups.

use super::*;

fn config(extra: &str) -> RecursionConfig {
    crate::config::load_str(
        &format!("matrix:\n  domain: example.org\nstorage:\n  path: /tmp/x\n{extra}"),
        "t",
        std::path::PathBuf::from("."),
        &|_| None,
    )
    .unwrap()
    .lookup
    .recursive
    .as_ref()
    .clone()
}

#[test]
fn breakers_open_after_failures_and_let_one_trial_through() {
    let c = config("lookup:\n  recursive:\n    breaker:\n      failures: 2\n");
    assert_eq!(
        (c.breaker_failures, c.breaker_open),
        (2, Duration::from_secs(30))
    );
    let r = Recursion::default();
    let remote = r.remote("https://is.example:443");
    for _ in 0..2 {
        assert!(remote.admit());
        remote.outcome(&c, false);
    }
    assert!(!remote.admit());
    assert_eq!(r.status()[0].breaker, "open");
    // Time passes: one trial, the others still wait.
    lock(&remote.state).open_until = Some(Instant::now());
    assert!(remote.admit());
    assert!(!remote.admit());
    assert_eq!(r.status()[0].breaker, "half-open");
    // A trial without an outcome (the guard refused it, or the lookup was dropped)
    // lets the next call try.
    remote.end_trial();
    assert!(remote.admit());
    assert!(!remote.admit());
    remote.outcome(&c, true);
    assert_eq!(r.status()[0].breaker, "closed");
    assert!(remote.admit());
}

#[test]
fn only_configured_requesters_recurse() {
    let mut c = config("lookup:\n  recursive:\n    enabled: true\n    allowedCidr: [10.0.0.0/8]\n");
    assert!(may_recurse(&c, Some("10.1.2.3".parse().unwrap())));
    assert!(!may_recurse(&c, Some("127.0.0.1".parse().unwrap())));
    assert!(!may_recurse(&c, None));
    c.enabled = false;
    assert!(!may_recurse(&c, Some("10.1.2.3".parse().unwrap())));
    assert_eq!(label_of("https://is.example:8443"), "is.example:8443");
}
