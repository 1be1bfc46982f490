//! Accounts via OpenID against a fake homeserver on loopback: register, account,
//! logout, bearer and query-string tokens, and every way registration can go wrong.

use crate::common::{
    assert_error, federation_override, FakeHomeserver, Resp, TestServer, Userinfo,
};
use serde_json::json;

const REGISTER: &str = "/_matrix/identity/v2/account/register";

async fn setup(extra: &str) -> (TestServer, FakeHomeserver) {
    let hs = FakeHomeserver::start(vec![
        ("good", Userinfo::Sub("@alice:example.org".into())),
        ("bob", Userinfo::Sub("@bob:example.org".into())),
        ("a b&c=d/é", Userinfo::Sub("@weird:example.org".into())),
        ("other", Userinfo::Sub("@mallory:evil.example".into())),
        ("nosub", Userinfo::Raw("{}".into())),
        ("badsub", Userinfo::Raw(r#"{"sub":"not an mxid"}"#.into())),
        ("garbage", Userinfo::Raw("<html>oops".into())),
        (
            "huge",
            Userinfo::Raw(format!(
                r#"{{"sub":"@a:example.org","pad":"{}"}}"#,
                "x".repeat(1 << 20)
            )),
        ),
        ("teapot", Userinfo::Status(418, "{}".into())),
        // Refusals whose bodies are broken: the status is what counts.
        (
            "cut401",
            Userinfo::Status(401, r#"{"errcode":"M_UNKNOWN_TOK"#.into()),
        ),
        ("html403", Userinfo::Status(403, "<html>Forbidden".into())),
        ("dropped401", Userinfo::Truncated(401)),
        ("slow", Userinfo::Slow(5_000)),
    ])
    .await;
    let server = TestServer::start_with(&format!(
        "{}outbound:\n  timeout: 1s\n{extra}",
        federation_override("example.org", &hs)
    ))
    .await;
    (server, hs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_account_logout() {
    let (s, hs) = setup("").await;
    let r = s
        .post_json(
            REGISTER,
            &json!({"access_token": "good", "token_type": "Bearer",
            "matrix_server_name": "example.org", "expires_in": 3600}),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(r.body["access_token"], token.as_str());
    assert!(token.len() >= 64 && token.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(hs.hits(), 1);

    // Bearer header and the query parameter both authenticate.
    let r = s.get_auth("/_matrix/identity/v2/account", &token).await;
    assert_eq!(
        (r.status, r.body.clone()),
        (200, json!({"user_id": "@alice:example.org"}))
    );
    let r = s
        .get(&format!(
            "/_matrix/identity/v2/account?access_token={token}"
        ))
        .await;
    assert_eq!(r.body["user_id"], "@alice:example.org");

    // A second token for the same user; logout revokes only the one used.
    let second = s.register("example.org", "good").await;
    assert_ne!(second, token);
    let r = s
        .send(
            s.client
                .post(format!("{}/_matrix/identity/v2/account/logout", s.base))
                .bearer_auth(&token),
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    assert_error(
        &s.get_auth("/_matrix/identity/v2/account", &token).await,
        401,
        "M_UNAUTHORIZED",
    );
    assert_eq!(
        s.get_auth("/_matrix/identity/v2/account", &second)
            .await
            .status,
        200
    );
    // Logging out twice: the token is gone.
    let r = s
        .send(
            s.client
                .post(format!("{}/_matrix/identity/v2/account/logout", s.base))
                .bearer_auth(&token),
        )
        .await;
    assert_error(&r, 401, "M_UNAUTHORIZED");

    // The OpenID token is percent-encoded on its way to the homeserver.
    assert!(!s.register("example.org", "a b&c=d/é").await.is_empty());
    // Without token_type and expires_in (Sydent does not need them either).
    let r = s
        .post_json(
            REGISTER,
            &json!({"access_token": "bob", "matrix_server_name": "Example.ORG"}),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_restart() {
    let (s, hs) = setup("").await;
    let token = s.register("example.org", "good").await;
    let dir = s.stop().await;
    let s = TestServer::start_in(
        dir,
        &format!(
            "{}outbound:\n  timeout: 1s\n",
            federation_override("example.org", &hs)
        ),
    )
    .await;
    assert_eq!(
        s.get_auth("/_matrix/identity/v2/account", &token)
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_tokens() {
    let (s, _hs) = setup("").await;
    assert_error(
        &s.get("/_matrix/identity/v2/account").await,
        401,
        "M_UNAUTHORIZED",
    );
    assert_error(
        &s.get_auth("/_matrix/identity/v2/account", "nope").await,
        401,
        "M_UNAUTHORIZED",
    );
    let r = s
        .send(
            s.client
                .get(format!("{}/_matrix/identity/v2/account", s.base))
                .header("Authorization", "Basic YTpi"),
        )
        .await;
    assert_error(&r, 401, "M_UNAUTHORIZED");
    let r = s
        .send(
            s.client
                .post(format!("{}/_matrix/identity/v2/account/logout", s.base)),
        )
        .await;
    assert_error(&r, 401, "M_UNAUTHORIZED");
    // Wrong methods.
    assert_error(
        &s.get("/_matrix/identity/v2/account/logout").await,
        405,
        "M_UNRECOGNIZED",
    );
    assert_error(&s.get(REGISTER).await, 405, "M_UNRECOGNIZED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_refuses_bad_input() {
    let (s, hs) = setup("").await;
    let raw = |body: &'static str, ct: &'static str| {
        s.client
            .post(format!("{}{REGISTER}", s.base))
            .header("content-type", ct)
            .body(body)
    };
    assert_error(
        &s.send(raw("{oops", "application/json")).await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &s.send(raw("", "application/json")).await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &s.send(raw("[1]", "application/json")).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &s.send(raw(
            r#"{"access_token":"good","matrix_server_name":"example.org"}"#,
            "text/plain",
        ))
        .await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &s.post_json(REGISTER, &json!({"access_token": "good"}), None)
            .await,
        400,
        "M_MISSING_PARAMS",
    );
    assert_error(
        &s.post_json(
            REGISTER,
            &json!({"matrix_server_name": "example.org"}),
            None,
        )
        .await,
        400,
        "M_MISSING_PARAMS",
    );
    assert_error(
        &s.post_json(
            REGISTER,
            &json!({"access_token": 5, "matrix_server_name": "example.org"}),
            None,
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &s.post_json(
            REGISTER,
            &json!({"access_token": "good", "matrix_server_name": ["example.org"]}),
            None,
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &s.post_json(
            REGISTER,
            &json!({"access_token": "good", "matrix_server_name": "exa mple.org"}),
            None,
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post_json(
            REGISTER,
            &json!({"access_token": "", "matrix_server_name": "example.org"}),
            None,
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&s.post_json(REGISTER, &json!({"access_token": "good", "token_type": "MAC", "matrix_server_name": "example.org"}), None).await, 400, "M_INVALID_PARAM");
    let big = json!({"access_token": "x".repeat(600 * 1024), "matrix_server_name": "example.org"});
    assert_error(&s.post_json(REGISTER, &big, None).await, 413, "M_TOO_LARGE");
    assert_eq!(hs.hits(), 0, "bad requests never reach the homeserver");

    let reg = |token: &'static str| {
        let body = json!({"access_token": token, "matrix_server_name": "example.org"});
        let s = &s;
        async move { s.post_json(REGISTER, &body, None).await }
    };
    assert_error(&reg("unknown-token").await, 401, "M_UNAUTHORIZED");
    for refused in ["cut401", "html403", "dropped401"] {
        let r = reg(refused).await;
        assert_error(&r, 401, "M_UNAUTHORIZED");
        let message = r.body["error"].as_str().unwrap();
        assert!(
            message.contains("refused the OpenID token"),
            "{refused}: {message}"
        );
    }
    assert_error(&reg("other").await, 401, "M_UNAUTHORIZED");
    assert_error(&reg("nosub").await, 502, "M_UNKNOWN");
    assert_error(&reg("badsub").await, 502, "M_UNKNOWN");
    assert_error(&reg("garbage").await, 502, "M_UNKNOWN");
    assert_error(&reg("huge").await, 502, "M_UNKNOWN");
    assert_error(&reg("teapot").await, 502, "M_UNKNOWN");
    let started = std::time::Instant::now();
    assert_error(&reg("slow").await, 502, "M_UNKNOWN");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "outbound.timeout (1s) not applied"
    );
}

/// `account/register` with the token the stand-in homeserver accepts.
async fn register_as(s: &TestServer, server_name: &str) -> Resp {
    s.post_json(
        REGISTER,
        &json!({"access_token": "good", "matrix_server_name": server_name}),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_local_users_by_default_and_registration_limited_per_client() {
    let (s, hs) = setup("rateLimit:\n  registerPerIp:\n    burst: 3\n    interval: 1h\n").await;
    let r = register_as(&s, "elsewhere.example").await;
    assert_error(&r, 403, "M_FORBIDDEN");
    assert_eq!(hs.hits(), 0, "refused before any outbound call");

    // Three registrations at once, then 429 with a Retry-After, and no more userinfo
    // calls however many follow.
    let mut answers = Vec::new();
    for _ in 0..12 {
        answers.push(register_as(&s, "example.org").await);
    }
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses[..3], [200, 200, 200], "{statuses:?}");
    for r in &answers[3..] {
        assert_error(r, 429, "M_LIMIT_EXCEEDED");
        let ms = r.body["retry_after_ms"].as_u64().unwrap();
        let header: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(
            header >= 1 && header == ms.div_ceil(1000),
            "{header} s vs {ms} ms"
        );
    }
    assert_eq!(hs.hits(), 3, "refused registrations make no outbound call");
    // Refusals before any outbound call are not counted: still 403, not 429.
    let r = register_as(&s, "elsewhere.example").await;
    assert_error(&r, 403, "M_FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_forbidden_homeservers() {
    let hs = FakeHomeserver::start(vec![("good", Userinfo::Sub("@alice:127.0.0.1".into()))]).await;
    let closed = crate::common::free_port();
    let s = TestServer::start_with(&format!(
        "accountConfig:\n  allowOnlyTrustDomains: false\noutbound:\n  timeout: 2s\n\
         dns:\n  overwrite:\n    homeserver:\n      federation:\n        - name: down.test\n          value: http://127.0.0.1:{closed}\n"
    ))
    .await;
    // Down: a clear 502, quickly.
    let r = s
        .post_json(
            REGISTER,
            &json!({"access_token": "good", "matrix_server_name": "down.test"}),
            None,
        )
        .await;
    assert_error(&r, 502, "M_UNKNOWN");
    // A server name that is a loopback address, not allowed by config and not an
    // override: the outbound guard refuses before connecting.
    for name in [
        format!("127.0.0.1:{}", hs.port),
        format!("[::1]:{}", hs.port),
        "127.0.0.1".to_owned(),
    ] {
        let r = s
            .post_json(
                REGISTER,
                &json!({"access_token": "good", "matrix_server_name": name}),
                None,
            )
            .await;
        assert_error(&r, 403, "M_FORBIDDEN");
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .contains("may not contact"),
            "{}",
            r.body
        );
    }
    assert_eq!(hs.hits(), 0);
}
