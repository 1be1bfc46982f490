//! Operator bindings through the admin listener: add, show, remove, import; the admin
//! listener's own protections.

use crate::common::{assert_error, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_show_remove() {
    let s = TestServer::start().await;
    let r = s
        .admin_post("/_mxisd/admin/v1/bindings", &json!({"medium": "email", "address": " Alice@Example.org", "mxid": "@alice:example.org"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["address"], "alice@example.org");
    assert_eq!(
        r.body["effective"],
        json!({"mxid": "@alice:example.org", "origin": "admin"})
    );

    let r = s
        .admin_get("/_mxisd/admin/v1/bindings?medium=email&address=ALICE%40example.org")
        .await;
    assert_eq!(r.body["entries"][0]["mxid"], "@alice:example.org");
    assert_eq!(
        s.get("/_matrix/identity/api/v1/lookup?medium=email&address=alice%40example.org")
            .await
            .body["mxid"],
        "@alice:example.org"
    );

    // Re-binding replaces.
    s.bind("email", "alice@example.org", "@alice2:example.org")
        .await;
    assert_eq!(
        s.get("/_matrix/identity/api/v1/lookup?medium=email&address=alice%40example.org")
            .await
            .body["mxid"],
        "@alice2:example.org"
    );

    let r = s
        .admin_post(
            "/_mxisd/admin/v1/bindings/remove",
            &json!({"medium": "email", "address": "alice@example.org"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["effective"], json!(null));
    assert_eq!(
        s.get("/_matrix/identity/api/v1/lookup?medium=email&address=alice%40example.org")
            .await
            .body,
        json!({})
    );
    // Removing what is not there is fine.
    let r = s
        .admin_post(
            "/_mxisd/admin/v1/bindings/remove",
            &json!({"medium": "email", "address": "alice@example.org"}),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bad_input_and_protections() {
    let s = TestServer::start().await;
    let add = "/_mxisd/admin/v1/bindings";
    assert_error(
        &s.admin_post(
            add,
            &json!({"medium": "fax", "address": "1", "mxid": "@a:b"}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.admin_post(
            add,
            &json!({"medium": "email", "address": "nope", "mxid": "@a:b"}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.admin_post(
            add,
            &json!({"medium": "email", "address": "a@b.c", "mxid": "alice"}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.admin_post(add, &json!({"medium": "email", "address": "a@b.c"}))
            .await,
        400,
        "M_MISSING_PARAMS",
    );
    assert_error(
        &s.admin_post(
            add,
            &json!({"medium": 1, "address": "a@b.c", "mxid": "@a:b"}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    let r = s
        .send(
            s.admin_request(reqwest::Method::POST, add)
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
    assert_error(&r, 400, "M_NOT_JSON");
    assert_error(
        &s.admin_get("/_mxisd/admin/v1/bindings?medium=email").await,
        400,
        "M_MISSING_PARAMS",
    );
    assert_error(
        &s.admin_get("/_mxisd/admin/v1/nope").await,
        404,
        "M_UNRECOGNIZED",
    );

    // No CORS on the admin listener, and only local Host names.
    let r = s.admin_get("/_mxisd/admin/v1/status").await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let r = s
        .send(
            s.admin_request(reqwest::Method::GET, "/_mxisd/admin/v1/status")
                .header("Host", "evil.example:8091"),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let r = s
        .send(
            s.admin_request(reqwest::Method::GET, "/_mxisd/admin/v1/status")
                .header("Host", "localhost:8091"),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_over_http_reports_bad_lines() {
    let s = TestServer::start().await;
    let mut body = String::from("# medium\taddress\tmxid\n\n");
    for i in 0..2_500 {
        body.push_str(&format!(
            "email\tuser{i}@example.org\t@user{i}:example.org\n"
        ));
    }
    body.push_str("email\tbroken\t@x:example.org\n");
    body.push_str("fax\t123\t@x:example.org\n");
    body.push_str("email\tonly-two-fields@example.org\n");
    body.push_str("msisdn\t+1 555 0100\t@phone:example.org"); // no final newline
    let r = s
        .send(
            s.admin_request(reqwest::Method::POST, "/_mxisd/admin/v1/bindings/import")
                .header("content-type", "text/tab-separated-values")
                .body(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["imported"], 2_501);
    assert_eq!(r.body["skipped"], 3);
    let errors: Vec<String> = serde_json::from_value(r.body["errors"].clone()).unwrap();
    assert!(errors[0].starts_with("line 2503:"), "{errors:?}");
    assert!(
        errors[2].contains("expected 3 tab-separated fields"),
        "{errors:?}"
    );
    assert_eq!(
        s.get("/_matrix/identity/api/v1/lookup?medium=email&address=user2499%40example.org")
            .await
            .body["mxid"],
        "@user2499:example.org"
    );
    assert_eq!(
        s.get("/_matrix/identity/api/v1/lookup?medium=msisdn&address=15550100")
            .await
            .body["mxid"],
        "@phone:example.org"
    );
}
