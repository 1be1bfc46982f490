//! The client-server requests a reverse proxy routes to mxisd to be looked at, against
//! the stand-in client API that records exactly what it received: logins by 3PID
//! (rewritten to the user, everything else passed byte for byte), the registration
//! policy, and the 3PID invite policy with roles from the directory.

use crate::common::clientapi::{FakeClientApi, Recorded};
use crate::common::smtp::SmtpSink;
use crate::common::{alice_and_bob, assert_error, federation_override, Resp, TestServer};
use serde_json::{json, Value};

fn client_override(hs: &FakeClientApi) -> String {
    format!(
        "dns:\n  overwrite:\n    homeserver:\n      client:\n        - name: matrix.example.org\n          value: {}\n",
        hs.url
    )
}

const PEOPLE: &str = "memory:\n  enabled: true\n  identities:\n    - username: alice\n      displayName: Alice\n      roles: [staff]\n      threepids:\n        - {medium: email, address: alice@example.org}\n        - {medium: msisdn, address: '33612345678'}\n    - username: bob\n      threepids: [{medium: email, address: bob@example.org}]\n    - username: '@carol:elsewhere.example'\n      threepids: [{medium: email, address: carol@example.org}]\n    - username: dan\n      roles: ['cn=Staff,ou=groups,dc=example,dc=org']\n";

async fn post_raw(s: &TestServer, path: &str, body: &'static str, token: Option<&str>) -> Resp {
    let mut request = s
        .client
        .post(format!("{}{path}", s.base))
        .header("content-type", "application/json")
        .header("user-agent", "Element/1.11")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    s.send(request).await
}

/// The one request the homeserver got since the last call.
fn only(hs: &FakeClientApi) -> Recorded {
    let mut got = hs.take_recorded();
    assert_eq!(got.len(), 1, "{got:?}");
    got.remove(0)
}

fn body_json(r: &Recorded) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

async fn metrics(s: &TestServer) -> String {
    s.metrics_text().await
}

/// Waits until the memory source's users are in the store (alice's e-mail bound).
async fn synced(s: &TestServer) {
    for _ in 0..200 {
        let r = s
            .get("/_matrix/identity/api/v1/lookup?medium=email&address=alice%40example.org")
            .await;
        if r.body["mxid"] == "@alice:example.org" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the memory source was not synced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_by_3pid_become_the_users_and_the_rest_passes_byte_for_byte() {
    let hs = FakeClientApi::start(&[], vec![], vec![]).await;
    let yaml = format!(
        "{}{PEOPLE}auth:\n  rewrite:\n    user:\n      rules:\n        - regex: '[0-9]{{8,15}}'\n          medium: msisdn\nserver:\n  maxBodySize: 64KiB\n",
        client_override(&hs)
    );
    let s = TestServer::start_with(&yaml).await;
    synced(&s).await;
    let alice = json!({"type": "m.id.user", "user": "@alice:example.org"});

    // By e-mail (any case), by phone, by a rule, by the deprecated fields: alice.
    for (version, body) in [
        (
            "v3",
            r#"{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"email","address":"Alice@Example.org"},"password":"pw","initial_device_display_name":"Phone"}"#,
        ),
        (
            "r0",
            r#"{"type":"m.login.password","identifier":{"type":"m.id.phone","country":"FR","phone":"06 12 34 56 78"},"password":"pw","initial_device_display_name":"Phone"}"#,
        ),
        (
            "v3",
            r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"33612345678"},"password":"pw","initial_device_display_name":"Phone"}"#,
        ),
        (
            "v3",
            r#"{"type":"m.login.password","medium":"email","address":"alice@example.org","password":"pw","initial_device_display_name":"Phone"}"#,
        ),
    ] {
        let r = post_raw(&s, &format!("/_matrix/client/{version}/login"), body, None).await;
        assert_eq!(r.status, 200, "{body}: {}", r.body);
        let got = only(&hs);
        assert_eq!(
            got.path_and_query,
            format!("/_matrix/client/{version}/login")
        );
        let sent = body_json(&got);
        assert_eq!(sent["identifier"], alice, "{body}");
        assert_eq!(sent["password"], "pw");
        assert_eq!(sent["initial_device_display_name"], "Phone");
        assert!(
            sent.get("medium").is_none() && sent.get("address").is_none(),
            "{sent}"
        );
        // The client's address and agent go along (the homeserver limits by address).
        assert_eq!(
            got.headers.get("x-forwarded-for").map(String::as_str),
            Some("127.0.0.1")
        );
        assert_eq!(
            got.headers.get("user-agent").map(String::as_str),
            Some("Element/1.11")
        );
    }

    // Not ours to rewrite: passed exactly as sent, the homeserver's answer relayed.
    for body in [
        // Nobody's address; a Cyrillic look-alike of alice's; another server's user.
        "{\"type\": \"m.login.password\",  \"identifier\": {\"type\": \"m.id.thirdparty\", \"medium\": \"email\", \"address\": \"nobody@example.org\"}, \"password\": \"pw\"}",
        r#"{"identifier":{"type":"m.id.thirdparty","medium":"email","address":"alice@ex\u0430mple.org"},"password":"pw","type":"m.login.password"}"#,
        r#"{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"email","address":"carol@example.org"},"password":"pw"}"#,
        // A plain user, a name no rule takes, an unknown identifier type, a token login.
        r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"pw"}"#,
        r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"1234"},"password":"pw"}"#,
        r#"{"type":"m.login.password","identifier":{"type":"org.example.badge","badge":"33612345678"},"password":"pw"}"#,
        r#"{"type":"m.login.token","token":"abc"}"#,
        // Wrong types and broken JSON: the homeserver says what is wrong.
        r#"{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"email","address":5}}"#,
        r#"{"type":"m.login.password","identifier":"#,
        "[1, 2]",
    ] {
        let r = post_raw(&s, "/_matrix/client/v3/login", body, None).await;
        assert_eq!(r.status, 200, "{body}: {}", r.body);
        assert_eq!(r.body["recorded"].as_u64(), Some(1), "{}", r.body);
        let got = only(&hs);
        assert_eq!(got.body.as_ref(), body.as_bytes(), "{body}");
        assert_eq!(
            got.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
    }
    // The homeserver's refusal, as it gave it; a rewritten login gets it too.
    let r = post_raw(
        &s,
        "/_matrix/client/v3/login",
        r#"{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"email","address":"alice@example.org"},"password":"wrong-password"}"#,
        None,
    )
    .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    assert_eq!(body_json(&only(&hs))["identifier"], alice);
    // GET (the login flows), with its query, passes.
    let r = s.get("/_matrix/client/v3/login?x=1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = only(&hs);
    assert_eq!(
        (got.method.as_str(), got.path_and_query.as_str()),
        ("GET", "/_matrix/client/v3/login?x=1")
    );
    // Too large: refused here, nothing sent.
    let big: &'static str =
        Box::leak(format!("{{\"password\": \"{}\"}}", "x".repeat(70_000)).into_boxed_str());
    let r = post_raw(&s, "/_matrix/client/v3/login", big, None).await;
    assert_error(&r, 413, "M_TOO_LARGE");
    assert!(hs.take_recorded().is_empty());

    // Without a register section, registration passes unchecked.
    let r = post_raw(
        &s,
        "/_matrix/client/v3/register/email/requestToken",
        r#"{"email":"anyone@anywhere.example","client_secret":"s","send_attempt":1}"#,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        only(&hs).path_and_query,
        "/_matrix/client/v3/register/email/requestToken"
    );
    // And so do 3PID invites without invite.policy.
    let r = post_raw(
        &s,
        "/_matrix/client/v3/rooms/!r:example.org/invite",
        r#"{"medium":"email","address":"x@example.org","id_server":"is.example.org","id_access_token":"t"}"#,
        Some("anyone"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        only(&hs).path_and_query,
        "/_matrix/client/v3/rooms/%21r%3Aexample.org/invite"
    );

    let m = metrics(&s).await;
    for line in [
        "mxisd_login_rewrites_total{kind=\"thirdparty\"} 3",
        "mxisd_login_rewrites_total{kind=\"phone\"} 1",
        "mxisd_login_rewrites_total{kind=\"rule\"} 1",
        "mxisd_policy_refusals_total{kind=\"register\"} 0",
    ] {
        assert!(m.contains(line), "{line} not in:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registration_policy_refuses_or_passes_each_address() {
    let sink = SmtpSink::start(None).await;
    let ids = alice_and_bob().await;
    let hs = FakeClientApi::start(&[], vec![], vec![]).await;
    let yaml = format!(
        "{}{}{}register:\n  policy:\n    allowed: false\n    invite: true\n    threepid:\n      email:\n        domain:\n          whitelist: ['*example.org']\n          blacklist: ['.guests.example.org']\n        pattern:\n          blacklist: ['root@.*']\n      msisdn:\n        pattern:\n          whitelist: ['33[0-9]+']\n",
        sink.config(""),
        // Both overrides in one `dns` section.
        federation_override("example.org", &ids),
        client_override(&hs).replace("dns:\n  overwrite:\n    homeserver:\n", "")
    );
    let s = TestServer::start_with(&yaml).await;
    let token = |path: &str| format!("/_matrix/client/{path}/requestToken");

    for (path, body) in [
        (
            "v3/register/email",
            r#"{"email":"a@example.org","client_secret":"s","send_attempt":1}"#,
        ),
        (
            "r0/register/email",
            r#"{"email":"A@IT.Example.org","client_secret":"s","send_attempt":1}"#,
        ),
        (
            "unstable/register/email",
            r#"{"email":"a@example.org","client_secret":"s","send_attempt":1}"#,
        ),
        (
            "v3/register/msisdn",
            r#"{"country":"FR","phone_number":"06 12 34 56 78","client_secret":"s","send_attempt":1}"#,
        ),
    ] {
        let r = post_raw(&s, &token(path), body, None).await;
        assert_eq!(r.status, 200, "{path} {body}: {}", r.body);
        let got = only(&hs);
        assert_eq!(got.path_and_query, token(path));
        assert_eq!(got.body.as_ref(), body.as_bytes());
    }
    for (path, body) in [
        (
            "v3/register/email",
            r#"{"email":"root@example.org","client_secret":"s","send_attempt":1}"#,
        ),
        (
            "v3/register/email",
            r#"{"email":"a@x.guests.example.org","client_secret":"s","send_attempt":1}"#,
        ),
        (
            "v3/register/email",
            r#"{"email":"a@elsewhere.example","client_secret":"s","send_attempt":1}"#,
        ),
        (
            "unstable/register/email",
            r#"{"email":"a@notexample.org","client_secret":"s","send_attempt":1}"#,
        ),
        (
            "r0/register/msisdn",
            r#"{"country":"GB","phone_number":"07400 123456","client_secret":"s","send_attempt":1}"#,
        ),
    ] {
        let r = post_raw(&s, &token(path), body, None).await;
        assert_error(&r, 403, "M_FORBIDDEN");
        assert!(r.body["error"]
            .as_str()
            .unwrap()
            .contains("cannot be used to register"));
        assert!(
            hs.take_recorded().is_empty(),
            "{body} reached the homeserver"
        );
    }
    // Bodies it cannot read are refused, never passed on unchecked.
    for (body, status, code) in [
        ("{", 400, "M_NOT_JSON"),
        ("[]", 400, "M_NOT_JSON"),
        (r#"{"client_secret":"s"}"#, 400, "M_MISSING_PARAM"),
        (r#"{"email":["a@example.org"]}"#, 400, "M_INVALID_PARAM"),
        (r#"{"email":"not an address"}"#, 400, "M_INVALID_EMAIL"),
    ] {
        let r = post_raw(&s, &token("v3/register/email"), body, None).await;
        assert_error(&r, status, code);
    }
    let r = post_raw(
        &s,
        &token("v3/register/msisdn"),
        r#"{"country":"FR"}"#,
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(hs.take_recorded().is_empty());

    let alice = s.register("example.org", "alice").await;
    // `/register` passes unchanged unless a stage proves a 3PID with our own session.
    let body =
        r#"{"username":"zoe","password":"pw","auth":{"type":"m.login.dummy","session":"x"}}"#;
    let r = post_raw(&s, "/_matrix/client/v3/register", body, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(only(&hs).body.as_ref(), body.as_bytes());
    let body = r#"{"auth":{"type":"m.login.email.identity","threepid_creds":{"sid":"theirs","client_secret":"s"},"session":"x"}}"#;
    let r = post_raw(&s, "/_matrix/client/v3/register?kind=user", body, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        only(&hs).path_and_query,
        "/_matrix/client/v3/register?kind=user"
    );
    // Our own validated session for a refused address: refused.
    let sid = s
        .validated_session(&sink, &alice, "a@elsewhere.example")
        .await;
    let secret = "sec";
    let body: &'static str = Box::leak(
        json!({"auth": {"type": "m.login.email.identity", "threepid_creds": {"sid": sid, "client_secret": secret}, "session": "x"}})
            .to_string()
            .into_boxed_str(),
    );
    let r = post_raw(&s, "/_matrix/client/v3/register", body, None).await;
    assert_error(&r, 403, "M_FORBIDDEN");
    assert!(hs.take_recorded().is_empty());

    // A pending 3PID invite opens the door for its address (even a blacklisted one).
    let r = s
        .post_json(
            "/_matrix/identity/v2/store-invite",
            &json!({"medium": "email", "address": "root@example.org", "room_id": "!room:example.org", "sender": "@alice:example.org"}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r#"{"email":"root@example.org","client_secret":"s","send_attempt":1}"#;
    let r = post_raw(&s, &token("v3/register/email"), body, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    only(&hs);

    let m = metrics(&s).await;
    assert!(
        m.contains("mxisd_policy_refusals_total{kind=\"register\"} 6"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threepid_invites_need_a_role_and_roles_are_served_internally() {
    let hs = FakeClientApi::start(
        &[
            ("alice-token", "@alice:example.org"),
            ("bob-token", "@bob:example.org"),
            ("dan-token", "@dan:example.org"),
        ],
        vec![],
        vec![],
    )
    .await;
    let yaml = format!(
        "{}{PEOPLE}invite:\n  policy:\n    ifSender:\n      hasRole: [staff]\n",
        client_override(&hs)
    );
    let s = TestServer::start_with(&yaml).await;
    synced(&s).await;
    let path = "/_matrix/client/v3/rooms/!room:example.org/invite";
    let by_email = r#"{"medium":"email","address":"x@example.org","id_server":"is.example.org","id_access_token":"t"}"#;

    // alice holds staff, dan a group whose DN says staff: passed byte for byte.
    for token in ["alice-token", "dan-token"] {
        let r = post_raw(&s, path, by_email, Some(token)).await;
        assert_eq!(r.status, 200, "{token}: {}", r.body);
        let got = only(&hs);
        assert_eq!(got.body.as_ref(), by_email.as_bytes());
        assert_eq!(
            got.headers.get("authorization").cloned(),
            Some(format!("Bearer {token}"))
        );
    }
    // bob holds no role: refused, nothing sent.
    let r = post_raw(&s, path, by_email, Some("bob-token")).await;
    assert_error(&r, 403, "M_FORBIDDEN");
    assert!(hs.take_recorded().is_empty());
    // Inviting a Matrix user needs no role, and nobody asks who the sender is.
    let whoami = hs.whoami_calls();
    let by_id = r#"{"user_id":"@alice:example.org"}"#;
    let r = post_raw(&s, path, by_id, Some("bob-token")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(only(&hs).body.as_ref(), by_id.as_bytes());
    assert_eq!(hs.whoami_calls(), whoami);
    // No token, a token the homeserver does not know: its refusal.
    let r = post_raw(&s, path, by_email, None).await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
    let r = post_raw(&s, path, by_email, Some("stolen")).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    assert!(hs.take_recorded().is_empty());
    // Room IDs are passed encoded, whatever the client sent.
    let r = post_raw(
        &s,
        "/_matrix/client/r0/rooms/%21a%2Fb%3Aexample.org/invite",
        by_id,
        Some("bob-token"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        only(&hs).path_and_query,
        "/_matrix/client/r0/rooms/%21a%2Fb%3Aexample.org/invite"
    );
    let r = post_raw(
        &s,
        "/_matrix/client/r0/rooms/%00/invite",
        by_id,
        Some("bob-token"),
    )
    .await;
    assert_error(&r, 404, "M_UNRECOGNIZED");
    assert!(hs.take_recorded().is_empty());

    // Roles, on the internal listener only.
    let roles = |user: &str| {
        let url = format!("{}/_matrix-internal/profile/v1/{user}", s.internal);
        let client = s.client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(
        roles("@alice:example.org").await,
        (200, json!({"roles": ["staff"]}))
    );
    assert_eq!(
        roles("%40alice%3Aexample.org").await,
        (200, json!({"roles": ["staff"]}))
    );
    assert_eq!(
        roles("@nobody:example.org").await,
        (200, json!({"roles": []}))
    );
    let (status, body) = roles("alice").await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM"))
    );
    let r = s
        .get("/_matrix-internal/profile/v1/@alice:example.org")
        .await;
    assert_eq!(r.status, 404, "{}", r.body);

    let m = metrics(&s).await;
    assert!(
        m.contains("mxisd_policy_refusals_total{kind=\"invite\"} 1"),
        "{m}"
    );
}
