//! Terms of service: listing, accepting, and the gate on authenticated endpoints.

use crate::common::{assert_error, federation_override, FakeHomeserver, TestServer, Userinfo};
use serde_json::json;

const POLICIES: &str = "policy:\n  policies:\n    terms_of_service:\n      version: 2.0\n      terms:\n        en:\n          name: Terms of Service\n          url: https://example.org/tos-en-2.0.html\n        fr:\n          name: Conditions d'utilisation\n          url: https://example.org/tos-fr-2.0.html\n    privacy_policy:\n      version: '1.2'\n      terms:\n        en:\n          name: Privacy Policy\n          url: https://example.org/privacy-en-1.2.html\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terms_gate_authenticated_endpoints_until_accepted() {
    let hs =
        FakeHomeserver::start(vec![("good", Userinfo::Sub("@alice:example.org".into()))]).await;
    let s = TestServer::start_with(&format!(
        "{}{POLICIES}",
        federation_override("example.org", &hs)
    ))
    .await;

    let r = s.get("/_matrix/identity/v2/terms").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"policies": {
            "terms_of_service": {"version": "2.0",
                "en": {"name": "Terms of Service", "url": "https://example.org/tos-en-2.0.html"},
                "fr": {"name": "Conditions d'utilisation", "url": "https://example.org/tos-fr-2.0.html"}},
            "privacy_policy": {"version": "1.2",
                "en": {"name": "Privacy Policy", "url": "https://example.org/privacy-en-1.2.html"}}}})
    );

    // Registering needs no terms; everything gated answers 403 until accepted.
    let token = s.register("example.org", "good").await;
    assert_error(
        &s.get_auth("/_matrix/identity/v2/account", &token).await,
        403,
        "M_TERMS_NOT_SIGNED",
    );
    assert_error(
        &s.get_auth("/_matrix/identity/v2/hash_details", &token)
            .await,
        403,
        "M_TERMS_NOT_SIGNED",
    );
    let lookup = json!({"algorithm": "sha256", "pepper": "x", "addresses": []});
    assert_error(
        &s.post_json("/_matrix/identity/v2/lookup", &lookup, Some(&token))
            .await,
        403,
        "M_TERMS_NOT_SIGNED",
    );

    // Bad acceptances.
    let terms = "/_matrix/identity/v2/terms";
    assert_error(
        &s.post_json(
            terms,
            &json!({"user_accepts": ["https://example.org/tos-en-2.0.html"]}),
            None,
        )
        .await,
        401,
        "M_UNAUTHORIZED",
    );
    assert_error(
        &s.post_json(
            terms,
            &json!({"user_accepts": ["https://evil.example/x"]}),
            Some(&token),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post_json(terms, &json!({"user_accepts": [1, 2]}), Some(&token))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post_json(terms, &json!({"user_accepts": {"a": 1}}), Some(&token))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post_json(terms, &json!({}), Some(&token)).await,
        400,
        "M_MISSING_PARAMS",
    );
    let r = s
        .send(
            s.client
                .post(format!("{}{terms}", s.base))
                .bearer_auth(&token)
                .body("{not json"),
        )
        .await;
    assert_error(&r, 400, "M_NOT_JSON");

    // One policy (in French) is not enough; both policies are.
    let r = s
        .post_json(
            terms,
            &json!({"user_accepts": ["https://example.org/tos-fr-2.0.html"]}),
            Some(&token),
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    assert_error(
        &s.get_auth("/_matrix/identity/v2/account", &token).await,
        403,
        "M_TERMS_NOT_SIGNED",
    );
    let r = s
        .post_json(
            terms,
            &json!({"user_accepts": "https://example.org/privacy-en-1.2.html"}),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.get_auth("/_matrix/identity/v2/account", &token)
            .await
            .status,
        200
    );
    assert_eq!(
        s.get_auth("/_matrix/identity/v2/hash_details", &token)
            .await
            .status,
        200
    );

    // Acceptance belongs to the user, not the token, and survives logout.
    let r = s
        .send(
            s.client
                .post(format!("{}/_matrix/identity/v2/account/logout", s.base))
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(r.status, 200);
    let again = s.register("example.org", "good").await;
    assert_eq!(
        s.get_auth("/_matrix/identity/v2/account", &again)
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_policy_version_needs_a_new_acceptance() {
    let hs =
        FakeHomeserver::start(vec![("good", Userinfo::Sub("@alice:example.org".into()))]).await;
    let v1 = "policy:\n  policies:\n    tos:\n      version: '1'\n      terms:\n        en:\n          name: ToS\n          url: https://example.org/tos-1.html\n";
    let s =
        TestServer::start_with(&format!("{}{v1}", federation_override("example.org", &hs))).await;
    let token = s.register("example.org", "good").await;
    let r = s
        .post_json(
            "/_matrix/identity/v2/terms",
            &json!({"user_accepts": ["https://example.org/tos-1.html"]}),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        s.get_auth("/_matrix/identity/v2/account", &token)
            .await
            .status,
        200
    );
    let dir = s.stop().await;
    let v2 = v1.replace("'1'", "'2'").replace("tos-1", "tos-2");
    let s = TestServer::start_in(
        dir,
        &format!("{}{v2}", federation_override("example.org", &hs)),
    )
    .await;
    assert_error(
        &s.get_auth("/_matrix/identity/v2/account", &token).await,
        403,
        "M_TERMS_NOT_SIGNED",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_policies_no_gate() {
    let hs =
        FakeHomeserver::start(vec![("good", Userinfo::Sub("@alice:example.org".into()))]).await;
    let s = TestServer::start_with(&federation_override("example.org", &hs)).await;
    let r = s.get("/_matrix/identity/v2/terms").await;
    assert_eq!(r.body, json!({"policies": {}}));
    let token = s.register("example.org", "good").await;
    assert_eq!(
        s.get_auth("/_matrix/identity/v2/account", &token)
            .await
            .status,
        200
    );
    assert_eq!(
        s.get_auth("/_matrix/identity/v2/hash_details", &token)
            .await
            .status,
        200
    );
}
