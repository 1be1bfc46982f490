//! Lookups: hash details, hashed and plain v2 lookups, v1 signed and bulk lookups,
//! pepper rotation, and bad input.

use crate::common::{
    assert_error, client_hash, federation_override, FakeHomeserver, TestServer, Userinfo,
};
use serde_json::{json, Value};

const LOOKUP: &str = "/_matrix/identity/v2/lookup";

async fn setup(extra: &str) -> (TestServer, FakeHomeserver, String) {
    let hs =
        FakeHomeserver::start(vec![("good", Userinfo::Sub("@alice:example.org".into()))]).await;
    let s = TestServer::start_with(&format!(
        "{}{extra}",
        federation_override("example.org", &hs)
    ))
    .await;
    s.bind("email", "Bob.Smith@Example.ORG", "@bob:example.org")
        .await;
    s.bind("msisdn", "+44 7700 900123", "@carol:example.org")
        .await;
    let token = s.register("example.org", "good").await;
    (s, hs, token)
}

/// Waits until the server's in-memory lookup table holds `n` bindings (it is built in
/// the background at start and after a rotation); lookups are answered from it then.
async fn table_holds(s: &TestServer, n: u64) {
    let mut last = Value::Null;
    for _ in 0..200 {
        let r = s.admin_get("/_mxisd/admin/v1/status").await;
        last = r.body["store"]["lookup_table"].clone();
        if last == json!(n) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the lookup table holds {last}, not {n}");
}

async fn pepper(s: &TestServer, token: &str) -> String {
    let r = s.get_auth("/_matrix/identity/v2/hash_details", token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["lookup_pepper"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_and_plain_lookups() {
    let (s, _hs, token) = setup("").await;
    let r = s
        .get_auth("/_matrix/identity/v2/hash_details", &token)
        .await;
    assert_eq!(r.body["algorithms"], json!(["sha256", "none"]));
    let pepper = r.body["lookup_pepper"].as_str().unwrap().to_owned();
    assert!(pepper.len() >= 32);
    // Synapse sends the token in the query string on this endpoint.
    let r = s
        .get(&format!(
            "/_matrix/identity/v2/hash_details?access_token={token}"
        ))
        .await;
    assert_eq!(r.body["lookup_pepper"], pepper.as_str());

    table_holds(&s, 2).await;
    let bob = client_hash("bob.smith@example.org", "email", &pepper);
    let carol = client_hash("447700900123", "msisdn", &pepper);
    let nobody = client_hash("nobody@example.org", "email", &pepper);
    let r = s
        .post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": pepper,
            "addresses": [bob, carol, nobody, "not-base64!", ""]}),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"mappings": {bob.clone(): "@bob:example.org", carol: "@carol:example.org"}})
    );

    // Plain: normalised for matching, answered under the entry as sent.
    let r = s
        .post_json(LOOKUP, &json!({"algorithm": "none", "pepper": pepper,
            "addresses": ["BOB.smith@example.org email", "447700900123 msisdn", "nobody@example.org email",
                          "447700900123 fax", "x@y email"]}), Some(&token))
        .await;
    assert_eq!(
        r.body,
        json!({"mappings": {"BOB.smith@example.org email": "@bob:example.org", "447700900123 msisdn": "@carol:example.org"}})
    );
    let r = s
        .post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": pepper, "addresses": []}),
            Some(&token),
        )
        .await;
    assert_eq!(r.body, json!({"mappings": {}}));

    // The table follows writes: a removed binding is not found, a new one is.
    let r = s
        .admin_post(
            "/_mxisd/admin/v1/bindings/remove",
            &json!({"medium": "email", "address": "bob.smith@example.org"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.bind("email", "dave@example.org", "@dave:example.org")
        .await;
    let dave = client_hash("dave@example.org", "email", &pepper);
    let r = s
        .post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": pepper, "addresses": [bob, dave]}),
            Some(&token),
        )
        .await;
    assert_eq!(r.body, json!({"mappings": {dave: "@dave:example.org"}}));
    table_holds(&s, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_bad_input() {
    let (s, _hs, token) = setup("").await;
    let pepper = pepper(&s, &token).await;
    let t = Some(token.as_str());
    let r = s
        .post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": "stale", "addresses": []}),
            t,
        )
        .await;
    assert_error(&r, 400, "M_INVALID_PEPPER");
    assert_eq!(r.body["lookup_pepper"], pepper.as_str());
    assert_eq!(r.body["algorithm"], "sha256");
    assert_error(
        &s.post_json(
            LOOKUP,
            &json!({"algorithm": "md5", "pepper": pepper, "addresses": []}),
            t,
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post_json(
            LOOKUP,
            &json!({"algorithm": 5, "pepper": pepper, "addresses": []}),
            t,
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post_json(LOOKUP, &json!({"pepper": pepper, "addresses": []}), t)
            .await,
        400,
        "M_MISSING_PARAMS",
    );
    assert_error(
        &s.post_json(LOOKUP, &json!({"algorithm": "sha256", "addresses": []}), t)
            .await,
        400,
        "M_MISSING_PARAMS",
    );
    assert_error(
        &s.post_json(LOOKUP, &json!({"algorithm": "sha256", "pepper": pepper}), t)
            .await,
        400,
        "M_MISSING_PARAMS",
    );
    assert_error(
        &s.post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": pepper, "addresses": "abc"}),
            t,
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": pepper, "addresses": ["a", 1]}),
            t,
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post_json(
            LOOKUP,
            &json!({"algorithm": "none", "pepper": pepper, "addresses": ["no-medium"]}),
            t,
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    let many: Vec<String> = (0..10_001).map(|i| format!("{i:043}")).collect();
    let r = s
        .post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": pepper, "addresses": many}),
            t,
        )
        .await;
    assert_error(&r, 400, "M_TOO_LARGE");
    // Over the 512 KiB body limit (kept small enough that the client is still
    // writing into socket buffers, not a closed connection, when the 413 comes).
    let huge: Vec<String> = (0..13_000).map(|i| format!("{i:043}")).collect();
    let r = s
        .post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": pepper, "addresses": huge}),
            t,
        )
        .await;
    assert_error(&r, 413, "M_TOO_LARGE");
    let r = s
        .send(
            s.client
                .post(format!("{}{LOOKUP}", s.base))
                .bearer_auth(&token)
                .body("{\"algorithm\":"),
        )
        .await;
    assert_error(&r, 400, "M_NOT_JSON");
    let r = s
        .send(
            s.client
                .post(format!("{}{LOOKUP}", s.base))
                .bearer_auth(&token)
                .body("null"),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    assert_error(
        &s.post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": pepper, "addresses": []}),
            None,
        )
        .await,
        401,
        "M_UNAUTHORIZED",
    );
    assert_error(
        &s.post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": pepper, "addresses": []}),
            Some("wrong"),
        )
        .await,
        401,
        "M_UNAUTHORIZED",
    );
    assert_error(
        &s.get("/_matrix/identity/v2/hash_details").await,
        401,
        "M_UNAUTHORIZED",
    );
    // Chunked bodies (no Content-Length) are capped while read.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..100).map(|_| Ok(vec![b' '; 10 * 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = s
        .send(
            s.client
                .post(format!("{}{LOOKUP}", s.base))
                .bearer_auth(&token)
                .body(body),
        )
        .await;
    assert_error(&r, 413, "M_TOO_LARGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_lookups_can_be_switched_off() {
    let (s, _hs, token) = setup("hashing:\n  algorithms: [sha256]\n").await;
    let r = s
        .get_auth("/_matrix/identity/v2/hash_details", &token)
        .await;
    assert_eq!(r.body["algorithms"], json!(["sha256"]));
    let pepper = r.body["lookup_pepper"].as_str().unwrap();
    let r = s
        .post_json(
            LOOKUP,
            &json!({"algorithm": "none", "pepper": pepper, "addresses": []}),
            Some(&token),
        )
        .await;
    assert_error(&r, 400, "M_INVALID_PARAM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_signed_and_bulk_lookups() {
    let (s, _hs, _token) = setup("").await;
    let r = s
        .get("/_matrix/identity/api/v1/lookup?medium=email&address=bob.smith%40example.org")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mxid"], "@bob:example.org");
    assert_eq!(r.body["address"], "bob.smith@example.org");
    assert_eq!(r.body["medium"], "email");
    for k in ["ts", "not_before", "not_after"] {
        assert!(r.body[k].is_u64(), "{k}: {}", r.body);
    }
    // The signature verifies with the key served at /pubkey/ed25519:0.
    let key = s.get("/_matrix/identity/v2/pubkey/ed25519:0").await.body["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_bytes: [u8; 32] = mxisd::crypto::b64_decode(&key).unwrap().try_into().unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).unwrap();
    mxisd::crypto::sign::verify_json(&r.body, "example.org", "ed25519:0", &vk).unwrap();

    assert_eq!(
        s.get("/_matrix/identity/api/v1/lookup?medium=email&address=nobody%40example.org")
            .await
            .body,
        json!({})
    );
    assert_eq!(
        s.get("/_matrix/identity/api/v1/lookup?medium=email&address=garbage")
            .await
            .body,
        json!({})
    );
    assert_error(
        &s.get("/_matrix/identity/api/v1/lookup?medium=email").await,
        400,
        "M_MISSING_PARAMS",
    );
    assert_error(
        &s.get("/_matrix/identity/api/v1/lookup").await,
        400,
        "M_MISSING_PARAMS",
    );
    assert_error(
        &s.get("/_matrix/identity/api/v1/lookup?medium=fax&address=1")
            .await,
        400,
        "M_INVALID_PARAM",
    );
    // v1-only routes do not exist under v2.
    assert_error(
        &s.get("/_matrix/identity/v2/lookup?medium=email&address=a")
            .await,
        405,
        "M_UNRECOGNIZED",
    );

    let bulk = "/_matrix/identity/api/v1/bulk_lookup";
    let r = s
        .post_json(bulk, &json!({"threepids": [["email", "BOB.SMITH@example.org"], ["msisdn", "447700900123"], ["email", "x@y.z"]]}), None)
        .await;
    assert_eq!(
        r.body,
        json!({"threepids": [["email", "BOB.SMITH@example.org", "@bob:example.org"], ["msisdn", "447700900123", "@carol:example.org"]]})
    );
    assert_error(
        &s.post_json(bulk, &json!({"threepids": "x"}), None).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post_json(bulk, &json!({"threepids": [["email"]]}), None)
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post_json(bulk, &json!({"threepids": [[1, 2]]}), None)
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post_json(bulk, &json!({}), None).await,
        400,
        "M_MISSING_PARAMS",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_off_and_bulk_off() {
    let s = TestServer::start_with("lookup:\n  bulk:\n    enabled: false\n").await;
    s.bind("email", "a@example.org", "@a:example.org").await;
    let r = s
        .post_json(
            "/_matrix/identity/api/v1/bulk_lookup",
            &json!({"threepids": [["email", "a@example.org"]]}),
            None,
        )
        .await;
    assert_eq!(r.body, json!({"threepids": []}));
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "matrix:\n  domain: example.org\n  v1: false\nstorage:\n  path: {}\n",
        dir.path().join("s").display()
    );
    let off = TestServer::start_raw(dir, &yaml).await;
    assert_error(
        &off.get("/_matrix/identity/api/v1/lookup?medium=email&address=a")
            .await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &off.post_json("/_matrix/identity/api/v1/bulk_lookup", &json!({}), None)
            .await,
        404,
        "M_UNRECOGNIZED",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pepper_rotation_and_persistence() {
    let (s, hs, token) = setup("").await;
    let old = pepper(&s, &token).await;
    let r = s
        .admin_post("/_mxisd/admin/v1/hashing/rotate", &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new = pepper(&s, &token).await;
    assert_ne!(old, new);
    // Rebuilt for the new pepper.
    table_holds(&s, 2).await;
    let stale = s
        .post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": old,
            "addresses": [client_hash("bob.smith@example.org", "email", &old)]}),
            Some(&token),
        )
        .await;
    assert_error(&stale, 400, "M_INVALID_PEPPER");
    assert_eq!(stale.body["lookup_pepper"], new.as_str());
    let fresh = |pepper: String| json!({"algorithm": "sha256", "pepper": pepper, "addresses": [client_hash("bob.smith@example.org", "email", &pepper)]});
    let r = s.post_json(LOOKUP, &fresh(new.clone()), Some(&token)).await;
    assert_eq!(
        r.body["mappings"].as_object().unwrap().len(),
        1,
        "{}",
        r.body
    );
    // The old hash does not match under the new pepper either.
    let r = s
        .post_json(
            LOOKUP,
            &json!({"algorithm": "sha256", "pepper": new,
            "addresses": [client_hash("bob.smith@example.org", "email", &old)]}),
            Some(&token),
        )
        .await;
    assert_eq!(r.body, json!({"mappings": {}}));
    // Pepper and index survive a restart.
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, &federation_override("example.org", &hs)).await;
    assert_eq!(pepper(&s, &token).await, new);
    table_holds(&s, 2).await;
    let r = s.post_json(LOOKUP, &fresh(new), Some(&token)).await;
    assert_eq!(
        r.body["mappings"].as_object().map(|m| m.len()),
        Some(1),
        "{}",
        r.body
    );
    let _: Value = r.body;
}
