//! The HTTP surface of the foundation: discovery, public keys, status, error rendering,
//! CORS, the admin listener, and bad requests at the HTTP level.

use crate::common::{assert_error, TestServer};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_pings() {
    let s = TestServer::start().await;
    let r = s.get("/_matrix/identity/versions").await;
    assert_eq!(r.status, 200);
    let versions: Vec<String> = serde_json::from_value(r.body["versions"].clone()).unwrap();
    for v in ["v1.1", "v1.6", "v1.19", "r0.3.0"] {
        assert!(
            versions.contains(&v.to_string()),
            "{v} missing from {versions:?}"
        );
    }
    assert!(!versions.contains(&"v1.20".to_string()));
    assert_eq!(r.headers["content-type"], "application/json");

    let r = s.get("/_matrix/identity/v2").await;
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    let r = s.get("/_matrix/identity/api/v1").await;
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    let r = s.get("/version").await;
    assert_eq!(r.body["server"]["name"], "mxisd");
    assert_eq!(r.body["server"]["version"], env!("CARGO_PKG_VERSION"));

    // The listener answers these without the route table; what it sends must not
    // differ from what the routes send for the spellings it leaves to them (here a
    // GET with a body), and HEAD has no body.
    for path in [
        "/_matrix/identity/versions",
        "/_matrix/identity/v2",
        "/_matrix/identity/api/v1",
        "/version",
    ] {
        let direct = s.get(path).await;
        let routed = s
            .send(s.client.get(format!("{}{path}", s.base)).body("{}"))
            .await;
        assert_eq!((direct.status, &direct.body), (200, &routed.body), "{path}");
        for name in [
            "content-type",
            "access-control-allow-origin",
            "access-control-allow-methods",
            "access-control-allow-headers",
        ] {
            assert_eq!(
                direct.headers.get(name),
                routed.headers.get(name),
                "{path} {name}"
            );
        }
        let head = s.send(s.client.head(format!("{}{path}", s.base))).await;
        assert_eq!((head.status, head.body), (200, Value::Null), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_can_be_switched_off() {
    let s = TestServer::start_with("").await;
    let off = TestServer::start_with_matrix_v1_off().await;
    assert_eq!(
        s.get("/_matrix/identity/api/v1/pubkey/ed25519:0")
            .await
            .status,
        200
    );
    let r = off.get("/_matrix/identity/api/v1").await;
    assert_error(&r, 404, "M_UNRECOGNIZED");
    let r = off.get("/_matrix/identity/api/v1/pubkey/ed25519:0").await;
    assert_error(&r, 404, "M_UNRECOGNIZED");
    assert_eq!(
        off.get("/_matrix/identity/v2/pubkey/ed25519:0")
            .await
            .status,
        200
    );
}

impl TestServer {
    async fn start_with_matrix_v1_off() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "matrix:\n  domain: example.org\n  v1: false\nstorage:\n  path: {}\n",
            dir.path().join("state").display()
        );
        Self::start_raw(dir, &yaml).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_endpoints_under_v2_and_v1() {
    let s = TestServer::start().await;
    for prefix in ["/_matrix/identity/v2", "/_matrix/identity/api/v1"] {
        let r = s.get(&format!("{prefix}/pubkey/ed25519:0")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let key = r.body["public_key"].as_str().unwrap().to_owned();
        assert_eq!(key.len(), 43, "unpadded base64 of 32 bytes: {key}");

        let r = s
            .get(&format!(
                "{prefix}/pubkey/isvalid?public_key={}",
                urlencode(&key)
            ))
            .await;
        assert_eq!(r.body, json!({"valid": true}));
        let url_safe = key.replace('+', "-").replace('/', "_");
        let r = s
            .get(&format!(
                "{prefix}/pubkey/isvalid?public_key={}",
                urlencode(&url_safe)
            ))
            .await;
        assert_eq!(r.body, json!({"valid": true}));
        let r = s
            .get(&format!(
                "{prefix}/pubkey/isvalid?public_key=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            ))
            .await;
        assert_eq!(r.body, json!({"valid": false}));
        let r = s
            .get(&format!("{prefix}/pubkey/isvalid?public_key=%%%"))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, json!({"valid": false}));
        let r = s.get(&format!("{prefix}/pubkey/isvalid")).await;
        assert_error(&r, 400, "M_MISSING_PARAMS");

        let r = s.get(&format!("{prefix}/pubkey/ed25519:1")).await;
        assert_error(&r, 404, "M_NOT_FOUND");
        let r = s.get(&format!("{prefix}/pubkey/%00%ff")).await;
        assert_error(&r, 404, "M_NOT_FOUND");
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_are_matrix_errors() {
    let s = TestServer::start().await;
    for path in [
        "/",
        "/nope",
        "/_matrix/identity/v3",
        "/_matrix/identity/v2/nope",
        "/_matrix/identity/v2/pubkey",
    ] {
        let r = s.get(path).await;
        assert_error(&r, 404, "M_UNRECOGNIZED");
        assert_eq!(r.headers["access-control-allow-origin"], "*", "{path}");
    }
    let r = s
        .send(
            s.client
                .post(format!("{}/_matrix/identity/v2", s.base))
                .body("{}"),
        )
        .await;
    assert_error(&r, 405, "M_UNRECOGNIZED");
    let r = s
        .send(
            s.client
                .delete(format!("{}/_matrix/identity/versions", s.base)),
        )
        .await;
    assert_error(&r, 405, "M_UNRECOGNIZED");
    let r = s
        .send(
            s.client
                .put(format!("{}/_matrix/identity/v2/pubkey/ed25519:0", s.base))
                .body("x"),
        )
        .await;
    assert_error(&r, 405, "M_UNRECOGNIZED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_before_routing() {
    let s = TestServer::start_with("server:\n  maxBodySize: 4KiB\n").await;
    for path in [
        "/_matrix/identity/v2",
        "/_matrix/identity/v2/pubkey/isvalid",
        "/_matrix/identity/v2/lookup",
        "/nope",
    ] {
        let r = s
            .send(
                s.client
                    .post(format!("{}{path}", s.base))
                    .body(vec![b'{'; 5000]),
            )
            .await;
        assert_error(&r, 413, "M_TOO_LARGE");
        assert_eq!(r.headers["access-control-allow-origin"], "*");
    }
    // At the limit it is routed as usual.
    let r = s
        .send(
            s.client
                .post(format!("{}/_matrix/identity/v2", s.base))
                .body(vec![b' '; 4096]),
        )
        .await;
    assert_error(&r, 405, "M_UNRECOGNIZED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_on_every_response_and_preflight() {
    let s = TestServer::start().await;
    let r = s
        .send(
            s.client
                .request(
                    reqwest::Method::OPTIONS,
                    format!("{}/_matrix/identity/v2/lookup", s.base),
                )
                .header("Origin", "https://app.element.io")
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
        )
        .await;
    assert_eq!(r.status, 200);
    for (h, v) in [
        ("access-control-allow-origin", "*"),
        (
            "access-control-allow-methods",
            "GET, POST, PUT, DELETE, OPTIONS",
        ),
        (
            "access-control-allow-headers",
            "Origin, X-Requested-With, Content-Type, Accept, Authorization",
        ),
    ] {
        assert_eq!(r.headers[h], v);
    }
    let r = s.get("/_matrix/identity/v2").await;
    assert_eq!(r.headers["access-control-allow-origin"], "*");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_public_and_admin() {
    let s = TestServer::start().await;
    let r = s.get("/status").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"]["health"], "OK");
    assert_eq!(r.body["store"], "ok");
    assert!(r.body["uptime_seconds"].is_u64());

    let r = s.admin_get("/_mxisd/admin/v1/status").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"]["health"], "OK");
    assert_eq!(r.body["key_id"], "ed25519:0");
    assert_eq!(r.body["server_name"], "example.org");
    assert_eq!(r.body["store"]["schema_version"], 1);
    // No Rust internals in the wire shape: `ok`, not `Ok`.
    assert_eq!(r.body["store"]["ok"], true, "{}", r.body);
    assert!(!r.body.to_string().contains("\"Ok\""), "{}", r.body);

    // Each listener serves only its own routes.
    assert_error(
        &s.get("/_mxisd/admin/v1/status").await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &s.admin_get("/_matrix/identity/v2").await,
        404,
        "M_UNRECOGNIZED",
    );
}

/// Raw bytes over TCP: malformed HTTP must not take the server down.
fn raw_exchange(base: &str, request: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_is_refused_and_the_server_lives_on() {
    let s = TestServer::start().await;
    let base = s.base.clone();
    let answers = tokio::task::spawn_blocking(move || {
        vec![
            raw_exchange(&base, b"GARBAGE\r\n\r\n"),
            raw_exchange(
                &base,
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
            ),
            raw_exchange(&base, &[0xff, 0xfe, 0x00, b'\r', b'\n', b'\r', b'\n']),
            raw_exchange(
                &base,
                b"GET /_matrix/identity/v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ),
        ]
    })
    .await
    .unwrap();
    assert!(answers[0].starts_with("HTTP/1.1 400"), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.1 400"), "{}", answers[1]);
    assert!(answers[3].starts_with("HTTP/1.1 200"), "{}", answers[3]);
    assert_eq!(s.get("/_matrix/identity/v2").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_key_and_the_store() {
    let s = TestServer::start().await;
    let key = s.get("/_matrix/identity/v2/pubkey/ed25519:0").await.body["public_key"].clone();
    let created =
        s.admin_get("/_mxisd/admin/v1/status").await.body["store"]["created_at_ms"].clone();
    let dir = s.stop().await;
    // Shutdown released the store: a new server opens the same directory.
    let s = TestServer::start_in(dir, "").await;
    assert_eq!(
        s.get("/_matrix/identity/v2/pubkey/ed25519:0").await.body["public_key"],
        key
    );
    assert_eq!(
        s.admin_get("/_mxisd/admin/v1/status").await.body["store"]["created_at_ms"],
        created
    );
}

/// Starts a POST whose body arrives in two parts; returns the socket after the first.
fn half_sent_request(base: &str) -> std::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = br#"{"algorithm":"sha256","pepper":"p","addresses":[]}"#;
    write!(
        stream,
        "POST /_matrix/identity/v2/lookup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..10]).unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let mut s = TestServer::start_with("server:\n  shutdownTimeout: 10s\n").await;
    let base = s.base.clone();
    let mut stream = tokio::task::spawn_blocking(move || half_sent_request(&base))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.signal_stop();
    // New connections are refused once shutdown began...
    let addr = s.base.trim_start_matches("http://").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting after the stop signal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...but the request in flight completes with a full answer.
    let answer = tokio::task::spawn_blocking(move || {
        let body = br#"{"algorithm":"sha256","pepper":"p","addresses":[]}"#;
        stream.write_all(&body[10..]).unwrap();
        let mut out = String::new();
        let _ = stream.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("M_UNAUTHORIZED"), "{answer}");
    let started = std::time::Instant::now();
    drop(s.stop().await);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_forever_for_a_stuck_client() {
    let mut s = TestServer::start_with("server:\n  shutdownTimeout: 1s\n").await;
    let base = s.base.clone();
    let _stuck = tokio::task::spawn_blocking(move || half_sent_request(&base))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    s.signal_stop();
    // The client never finishes its body: shutdown gives up after the timeout and the
    // store is still closed cleanly (stop() asserts run returned Ok).
    drop(s.stop().await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}
