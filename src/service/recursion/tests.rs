//! The breaker and the trust check of recursive lookups.

use super::*;

#[test]
fn breakers_open_after_failures_and_let_one_trial_through() {
    let r = Recursion::default();
    let remote = r.remote("https://is.example:443");
    for _ in 0..BREAKER_FAILURES {
        assert!(remote.admit());
        remote.outcome(false);
    }
    assert!(!remote.admit());
    assert_eq!(r.status()[0].breaker, "open");
    // Time passes: one trial, the others still wait.
    lock(&remote.state).open_until = Some(Instant::now());
    assert!(remote.admit());
    assert!(!remote.admit());
    assert_eq!(r.status()[0].breaker, "half-open");
    remote.outcome(true);
    assert_eq!(r.status()[0].breaker, "closed");
    assert!(remote.admit());
}

#[test]
fn only_configured_requesters_recurse() {
    let mut c = crate::config::load_str(
        "matrix:\n  domain: example.org\nstorage:\n  path: /tmp/x\nlookup:\n  recursive:\n    enabled: true\n    allowedCidr: [10.0.0.0/8]\n",
        "t",
        std::path::PathBuf::from("."),
        &|_| None,
    )
    .unwrap()
    .lookup
    .recursive;
    assert!(may_recurse(&c, Some("10.1.2.3".parse().unwrap())));
    assert!(!may_recurse(&c, Some("127.0.0.1".parse().unwrap())));
    assert!(!may_recurse(&c, None));
    c.enabled = false;
    assert!(!may_recurse(&c, Some("10.1.2.3".parse().unwrap())));
    assert_eq!(label_of("https://is.example:8443"), "is.example:8443");
}
