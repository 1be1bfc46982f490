//! 3PID room invites end to end: store-invite → the invitation mail (real SMTP) → the
//! sign link signs with the ephemeral key → the invitee validates and binds the address
//! → the homeserver stand-in receives a verifiable onbind POST; retries, failures kept
//! for operators, the outbound guard, a crash mid-delivery, and bad input.

use crate::common::smtp::{Mail, SmtpSink};
use crate::common::{
    alice_and_bob as homeserver, assert_error, federation_override, FakeHomeserver, Resp,
    TestServer,
};
use serde_json::{json, Value};
use std::time::Duration;

const V2: &str = "/_matrix/identity/v2";

fn config(sink: &SmtpSink, hs: &FakeHomeserver, extra: &str) -> String {
    format!(
        "{}{}invite:\n  delivery:\n    minDelay: 50ms\n    maxDelay: 200ms\n{extra}",
        sink.config(""),
        federation_override("example.org", hs)
    )
}

async fn store_invite(s: &TestServer, token: &str, body: Value) -> Resp {
    s.post_json(&format!("{V2}/store-invite"), &body, Some(token))
        .await
}

fn invite_body(address: &str) -> Value {
    json!({"medium": "email", "address": address, "room_id": "!room:example.org",
        "sender": "@alice:example.org", "room_name": "Project <Apollo>",
        "sender_display_name": "Alice", "room_alias": "#apollo:example.org"})
}

/// A query parameter of a URL found in a mail (after `name=`, up to `&` or a space).
fn url_param(text: &str, name: &str) -> String {
    let start = text.find(&format!("{name}=")).expect(name) + name.len() + 1;
    let raw: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '&' && *c != '"' && *c != '<')
        .collect();
    percent_encoding::percent_decode_str(&raw)
        .decode_utf8_lossy()
        .into_owned()
}

fn verify_with(object: &Value, entity: &str, key_id: &str, public_key_b64: &str) {
    let bytes: [u8; 32] = mxisd::crypto::b64_decode(public_key_b64)
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).unwrap();
    mxisd::crypto::sign::verify_json(object, entity, key_id, &key).unwrap();
}

/// Validates `address` for the holder of `token` and binds it to `mxid`.
async fn validate_and_bind(
    s: &TestServer,
    sink: &SmtpSink,
    token: &str,
    address: &str,
    mxid: &str,
) -> Resp {
    s.validate_and_bind(sink, token, address, mxid).await.1
}

async fn wait_for<F: Fn() -> bool>(what: &str, ok: F) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn wait_outbox_empty(s: &TestServer) {
    for _ in 0..100 {
        if outbox(s).await == json!({"pending": [], "failed": []}) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the outbox did not empty: {}", outbox(s).await);
}

/// The outbox once something in it has failed for good (waits up to 5 s).
async fn wait_failed(s: &TestServer) -> Value {
    for _ in 0..100 {
        let ob = outbox(s).await;
        if !ob["failed"].as_array().unwrap().is_empty() {
            return ob;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing failed in the outbox: {}", outbox(s).await);
}

async fn outbox(s: &TestServer) -> Value {
    let r = s.admin_get("/_mxisd/admin/v1/outbox").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_mail_sign_link_bind_and_onbind() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = TestServer::start_with(&config(&sink, &hs, "")).await;
    let alice = s.register("example.org", "alice").await;

    let r = store_invite(&s, &alice, invite_body("Bob@Example.org")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 64);
    assert_eq!(r.body["display_name"], "b...@exa...");
    let keys = r.body["public_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let long_term = s.get(&format!("{V2}/pubkey/ed25519:0")).await.body["public_key"].clone();
    assert_eq!(keys[0]["public_key"], long_term);
    assert_eq!(r.body["public_key"], long_term);
    assert_eq!(
        keys[0]["key_validity_url"],
        "https://example.org/_matrix/identity/v2/pubkey/isvalid"
    );
    assert_eq!(
        keys[1]["key_validity_url"],
        "https://example.org/_matrix/identity/v2/pubkey/ephemeral/isvalid"
    );
    let ephemeral = keys[1]["public_key"].as_str().unwrap().to_owned();

    // The mail: to the invitee, names escaped in HTML, with the sign link inside the
    // web client link.
    let mail: Mail = sink.next().await;
    assert_eq!(mail.to, vec!["<bob@example.org>"]);
    assert_eq!(
        mail.header("Subject").unwrap(),
        "Alice invited you to Project <Apollo> on Matrix"
    );
    let text = mail.text();
    assert!(text.contains("Project &lt;Apollo&gt;"), "{text}");
    let sign_url = url_param(&text, "signurl");
    assert!(sign_url.starts_with("https://example.org/_matrix/identity/api/v1/sign-ed25519?token="));
    assert!(
        text.contains(
            "https://app.element.io/#/room/%23apollo%3Aexample%2Eorg?email=bob%40example%2Eorg"
        ),
        "{text}"
    );

    // The ephemeral key is valid (any base64 flavour); a made-up one is not.
    let url_safe = ephemeral.replace('+', "-").replace('/', "_");
    for (key, valid) in [
        (ephemeral.as_str(), true),
        (url_safe.as_str(), true),
        ("AAAA", false),
    ] {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("public_key", key)
            .finish();
        for prefix in [V2, "/_matrix/identity/api/v1"] {
            let r = s
                .get(&format!("{prefix}/pubkey/ephemeral/isvalid?{q}"))
                .await;
            assert_eq!(r.body, json!({"valid": valid}), "{key}");
        }
    }

    // Element POSTs the sign link with mxid appended, no body, no token.
    let local = sign_url.replace("https://example.org", &s.base);
    let r = s
        .send(s.client.post(format!("{local}&mxid=%40bob%3Aexample.org")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mxid"], "@bob:example.org");
    assert_eq!(r.body["sender"], "@alice:example.org");
    assert_eq!(r.body["token"], token.as_str());
    verify_with(&r.body, "example.org", "ed25519:0", &ephemeral);
    // The same through v2 with a JSON body and the caller's token.
    let private_key = url_param(&sign_url, "private_key");
    let r = s
        .post_json(
            &format!("{V2}/sign-ed25519"),
            &json!({"mxid": "@bob:example.org", "token": token, "private_key": private_key}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The invitee binds the address: the answer carries the invite, and the homeserver
    // of bob gets the onbind callback, verifiable with our long-term key.
    let bob = s.register("example.org", "bob").await;
    let r = validate_and_bind(&s, &sink, &bob, "bob@example.org", "@bob:example.org").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["invites"][0]["token"], token.as_str());
    verify_with(
        &r.body,
        "example.org",
        "ed25519:0",
        long_term.as_str().unwrap(),
    );
    let onbinds = hs.onbinds.clone();
    wait_for("the onbind callback", || {
        !onbinds.lock().unwrap().is_empty()
    })
    .await;
    let body = hs.onbinds.lock().unwrap()[0].clone();
    assert_eq!(body["mxid"], "@bob:example.org");
    assert_eq!(body["address"], "bob@example.org");
    assert_eq!(body["medium"], "email");
    verify_with(
        &body,
        "example.org",
        "ed25519:0",
        long_term.as_str().unwrap(),
    );
    let invite = &body["invites"][0];
    assert_eq!(invite["room_id"], "!room:example.org");
    assert_eq!(invite["sender"], "@alice:example.org");
    assert_eq!(invite["mxid"], "@bob:example.org");
    assert_eq!(invite["signed"]["token"], token.as_str());
    verify_with(
        &invite["signed"],
        "example.org",
        "ed25519:0",
        long_term.as_str().unwrap(),
    );
    wait_outbox_empty(&s).await;
    // Delivered invites are gone; the address is bound now.
    let r = s.admin_get("/_mxisd/admin/v1/invites").await;
    assert_eq!(r.body, json!({"invites": []}));
    let r = store_invite(&s, &alice, invite_body("bob@example.org")).await;
    assert_error(&r, 400, "M_THREEPID_IN_USE");
    assert_eq!(r.body["mxid"], "@bob:example.org");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_retry_then_succeed_or_fail_for_good() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = TestServer::start_with(&config(&sink, &hs, "    maxAttempts: 4\n")).await;
    let alice = s.register("example.org", "alice").await;
    let bob = s.register("example.org", "bob").await;

    // Fails twice, then accepts.
    hs.fail_onbinds
        .store(2, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        store_invite(&s, &alice, invite_body("bob@example.org"))
            .await
            .status,
        200
    );
    sink.next().await;
    let r = validate_and_bind(&s, &sink, &bob, "bob@example.org", "@bob:example.org").await;
    assert_eq!(r.status, 200);
    let onbinds = hs.onbinds.clone();
    wait_for("delivery after two failures", || {
        onbinds.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(
        hs.failed_onbinds.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    wait_outbox_empty(&s).await;

    // Fails forever: given up after maxAttempts, kept and reported.
    hs.fail_onbinds
        .store(1_000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        store_invite(&s, &alice, invite_body("bob2@example.org"))
            .await
            .status,
        200
    );
    sink.next().await;
    let r = validate_and_bind(&s, &sink, &bob, "bob2@example.org", "@bob:example.org").await;
    assert_eq!(r.status, 200);
    let failed = wait_failed(&s).await;
    assert_eq!(failed["pending"], json!([]), "{failed}");
    let item = &failed["failed"][0];
    assert_eq!(item["attempts"], 4);
    assert_eq!(item["destination"], "example.org");
    assert!(
        item["last_error"].as_str().unwrap().contains("500"),
        "{item}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        hs.failed_onbinds.load(std::sync::atomic::Ordering::SeqCst),
        2 + 4
    );
    // The operator puts it back in line once the homeserver is fixed.
    hs.fail_onbinds
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let r = s
        .admin_post("/_mxisd/admin/v1/outbox/retry", &json!({}))
        .await;
    assert_eq!(r.body, json!({"retried": 1}));
    let onbinds = hs.onbinds.clone();
    wait_for("the retried delivery", || {
        onbinds.lock().unwrap().len() == 2
    })
    .await;
    wait_outbox_empty(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_homeserver_that_never_answers_times_out() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = TestServer::start_with(&config(
        &sink,
        &hs,
        "    maxAttempts: 2\noutbound:\n  timeout: 300ms\n",
    ))
    .await;
    hs.onbind_delay_ms
        .store(5_000, std::sync::atomic::Ordering::SeqCst);
    let alice = s.register("example.org", "alice").await;
    let r = store_invite(&s, &alice, invite_body("d@example.org")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    sink.next().await;
    // An operator binding delivers pending invites too.
    let r = s
        .admin_post(
            "/_mxisd/admin/v1/bindings",
            &json!({"medium": "email", "address": "d@example.org", "mxid": "@dan:example.org"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let failed = wait_failed(&s).await["failed"][0].clone();
    assert_eq!(failed["mxid"], "@dan:example.org", "{failed}");
    assert!(
        failed["last_error"].as_str().unwrap().contains("in time"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_refused_address_is_not_followed() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    // The redirect names a loopback address the guard does not allow. Followed, the
    // delivery would fail differently (refused or unreachable); it must stop at the 307.
    let decoy = homeserver().await;
    *hs.onbind_redirect.lock().unwrap() = Some(format!(
        "http://127.0.0.2:{}/_matrix/federation/v1/3pid/onbind",
        decoy.port
    ));
    let s = TestServer::start_with(&config(&sink, &hs, "    maxAttempts: 2\n")).await;
    let alice = s.register("example.org", "alice").await;
    let r = store_invite(&s, &alice, invite_body("r@example.org")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    sink.next().await;
    let r = s
        .admin_post(
            "/_mxisd/admin/v1/bindings",
            &json!({"medium": "email", "address": "r@example.org", "mxid": "@r:example.org"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let failed = wait_failed(&s).await["failed"][0].clone();
    assert!(
        failed["last_error"].as_str().unwrap().contains("307"),
        "{failed}"
    );
    assert!(decoy.onbinds.lock().unwrap().is_empty());
    assert_eq!(
        decoy
            .failed_onbinds
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_invites_neither_sign_nor_deliver() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = TestServer::start_with(&config(&sink, &hs, "  expiration:\n    after: 1s\n")).await;
    let alice = s.register("example.org", "alice").await;
    let r = store_invite(&s, &alice, invite_body("e@example.org")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_owned();
    let ephemeral = r.body["public_keys"][1]["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let sign_url = url_param(&sink.next().await.text(), "signurl");
    let private_key = url_param(&sign_url, "private_key");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let r = s
        .post_json(
            &format!("{V2}/sign-ed25519"),
            &json!({"mxid": "@e:example.org", "token": token, "private_key": private_key}),
            None,
        )
        .await;
    assert_error(&r, 404, "M_UNRECOGNIZED");
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("public_key", &ephemeral)
        .finish();
    let r = s.get(&format!("{V2}/pubkey/ephemeral/isvalid?{q}")).await;
    assert_eq!(r.body, json!({"valid": false}));
    let r = s
        .admin_post(
            "/_mxisd/admin/v1/bindings",
            &json!({"medium": "email", "address": "e@example.org", "mxid": "@e:example.org"}),
        )
        .await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hs.onbinds.lock().unwrap().is_empty());
    assert_eq!(outbox(&s).await, json!({"pending": [], "failed": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_to_a_refused_address_is_recorded_not_sent() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    // bob's homeserver is named by a loopback IP the outbound guard does not allow (no
    // override for it): the v1 bind lets us bind such an mxid without an account there.
    let s = TestServer::start_with(&config(
        &sink,
        &hs,
        "    maxAttempts: 2\nsession:\n  policy:\n    bind:\n      v1: true\n",
    ))
    .await;
    let alice = s.register("example.org", "alice").await;
    assert_eq!(
        store_invite(&s, &alice, invite_body("c@example.org"))
            .await
            .status,
        200
    );
    sink.next().await;
    let v1 = "/_matrix/identity/api/v1";
    let r = s
        .post_json(
            &format!("{v1}/validate/email/requestToken"),
            &json!({"client_secret": "s", "email": "c@example.org", "send_attempt": 1}),
            None,
        )
        .await;
    let sid = r.body["sid"].as_str().unwrap().to_owned();
    let code = url_param(&sink.next().await.text(), "token");
    s.post_json(
        &format!("{v1}/validate/email/submitToken"),
        &json!({"sid": sid, "client_secret": "s", "token": code}),
        None,
    )
    .await;
    let r = s
        .post_json(
            &format!("{v1}/3pid/bind"),
            &json!({"sid": sid, "client_secret": "s", "mxid": "@c:127.0.0.2:9"}),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let failed = wait_failed(&s).await["failed"][0].clone();
    assert_eq!(failed["destination"], "127.0.0.2:9");
    let why = failed["last_error"].as_str().unwrap();
    assert!(
        why.contains("loopback") || why.contains("refused") || why.contains("not allowed"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_invite_bad_input_and_operator_commands() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = TestServer::start_with(&config(
        &sink,
        &hs,
        "rateLimit:\n  storeInvitePerSender:\n    burst: 3\n    interval: 1h\n  storeInvitePerIp:\n    burst: 2\n    interval: 1h\n",
    ))
    .await;
    let alice = s.register("example.org", "alice").await;
    let path = format!("{V2}/store-invite");

    assert_error(
        &s.post_json(&path, &invite_body("x@example.org"), None)
            .await,
        401,
        "M_UNAUTHORIZED",
    );
    let mut b = invite_body("not an address");
    assert_error(
        &store_invite(&s, &alice, b.clone()).await,
        400,
        "M_INVALID_EMAIL",
    );
    b = invite_body("x@example.org");
    b["medium"] = json!("msisdn");
    assert_error(&store_invite(&s, &alice, b).await, 400, "M_UNRECOGNIZED");
    b = invite_body("x@example.org");
    b["sender"] = json!("@mallory:example.org");
    assert_error(&store_invite(&s, &alice, b).await, 403, "M_UNAUTHORIZED");
    let r = store_invite(
        &s,
        &alice,
        json!({"medium": "email", "address": "x@example.org"}),
    )
    .await;
    assert_error(&r, 400, "M_MISSING_PARAMS");
    b = invite_body("x@example.org");
    b["room_id"] = json!(42);
    assert_error(&store_invite(&s, &alice, b).await, 400, "M_INVALID_PARAM");

    // The SMTP server refusing: M_EMAIL_SEND_ERROR and nothing stored.
    sink.set_mode(crate::common::smtp::Mode::RejectRecipient);
    assert_error(
        &store_invite(&s, &alice, invite_body("x@example.org")).await,
        400,
        "M_EMAIL_SEND_ERROR",
    );
    sink.set_mode(crate::common::smtp::Mode::Accept);
    assert_eq!(
        s.admin_get("/_mxisd/admin/v1/invites").await.body,
        json!({"invites": []})
    );

    // A sender sending invites in bulk is limited (the refused one above counted too).
    let mut tokens = Vec::new();
    for i in 0..2 {
        let r = store_invite(&s, &alice, invite_body(&format!("p{i}@example.org"))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        tokens.push(r.body["token"].as_str().unwrap().to_owned());
        sink.next().await;
    }
    assert_error(
        &store_invite(&s, &alice, invite_body("p9@example.org")).await,
        429,
        "M_LIMIT_EXCEEDED",
    );

    // sign-ed25519: unknown token, wrong key, missing fields.
    let sign = format!("{V2}/sign-ed25519");
    let r = s
        .post_json(
            &sign,
            &json!({"mxid": "@b:example.org", "token": "nope", "private_key": "AAAA"}),
            None,
        )
        .await;
    assert_error(&r, 404, "M_UNRECOGNIZED");
    let other_key = mxisd::crypto::b64_encode(&[7u8; 32]);
    let r = s
        .post_json(
            &sign,
            &json!({"mxid": "@b:example.org", "token": tokens[0], "private_key": other_key}),
            None,
        )
        .await;
    assert_error(&r, 400, "M_INVALID_PARAM");
    assert_error(
        &s.post_json(&sign, &json!({"token": tokens[0]}), None).await,
        400,
        "M_MISSING_PARAMS",
    );
    assert_error(
        &s.post_json(
            &sign,
            &json!({"mxid": "@b:example.org", "token": tokens[0], "private_key": "x"}),
            Some("bogus"),
        )
        .await,
        401,
        "M_UNAUTHORIZED",
    );

    // Operators see, show and remove invites.
    let list = s.admin_get("/_mxisd/admin/v1/invites").await.body;
    assert_eq!(list["invites"].as_array().unwrap().len(), 2);
    let one = s
        .admin_get(&format!("/_mxisd/admin/v1/invites?token={}", tokens[0]))
        .await;
    assert_eq!(one.body["address"], "p0@example.org");
    assert!(one.body["expires_ms"].as_u64().unwrap() > one.body["created_ms"].as_u64().unwrap());
    let r = s
        .admin_post(
            "/_mxisd/admin/v1/invites/remove",
            &json!({"token": tokens[0]}),
        )
        .await;
    assert_eq!(r.body, json!({"removed": true}));
    let r = s
        .admin_post(
            "/_mxisd/admin/v1/invites/remove",
            &json!({"token": tokens[0]}),
        )
        .await;
    assert_eq!(r.body, json!({"removed": false}));
    let r = s
        .admin_get(&format!("/_mxisd/admin/v1/invites?token={}", tokens[0]))
        .await;
    assert_eq!(r.status, 404);

    // v1 (as Sydent, and Synapse before v2): no token, the same body; the keys are
    // checked on v1; the sender must be a Matrix ID; each client is limited.
    let v1 = "/_matrix/identity/api/v1/store-invite";
    let mut body = invite_body("v1@example.org");
    body["sender"] = json!("@carol:example.org");
    let r = s.post_json(v1, &body, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        r.body["public_keys"][1]["key_validity_url"],
        "https://example.org/_matrix/identity/api/v1/pubkey/ephemeral/isvalid"
    );
    let mail = sink.next().await;
    assert_eq!(mail.to, vec!["<v1@example.org>"]);
    let one = s
        .admin_get(&format!("/_mxisd/admin/v1/invites?token={token}"))
        .await;
    assert_eq!(one.body["sender"], "@carol:example.org", "{}", one.body);
    body["sender"] = json!("carol");
    assert_error(&s.post_json(v1, &body, None).await, 400, "M_INVALID_PARAM");
    body["sender"] = json!("@carol:example.org");
    let r = s.post_json(v1, &body, None).await;
    assert_error(&r, 429, "M_LIMIT_EXCEEDED");
    let header: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(
        header,
        r.body["retry_after_ms"].as_u64().unwrap().div_ceil(1000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_failing_delivery_loses_nothing() {
    use crate::cli::{text, Running};
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    hs.fail_onbinds
        .store(1_000_000, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    std::fs::write(
        d.join("mxisd.yaml"),
        format!(
            "matrix:\n  domain: example.org\nstorage:\n  path: state\n{}",
            config(&sink, &hs, "    maxAttempts: 100\n")
        ),
    )
    .unwrap();
    let server = tokio::task::spawn_blocking({
        let d = d.clone();
        move || Running::start(&d, &["run", "-c", "mxisd.yaml"])
    })
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::new();
    let post = |path: String, body: Value, token: Option<String>| {
        let mut req = client.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let register = |who: &'static str| {
        post(
            format!("{V2}/account/register"),
            json!({"access_token": who, "token_type": "Bearer", "matrix_server_name": "example.org", "expires_in": 3600}),
            None,
        )
    };
    let alice = register("alice").await.1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob = register("bob").await.1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = post(
        format!("{V2}/store-invite"),
        invite_body("bob@example.org"),
        Some(alice),
    )
    .await;
    assert_eq!(status, 200);
    sink.next().await;
    // `mxisd invites list` shows it.
    let (server, listed) = tokio::task::spawn_blocking({
        let d = d.clone();
        move || {
            let o = server.cli(&d, &["invites", "list", "-c", "mxisd.yaml"]);
            (server, o)
        }
    })
    .await
    .unwrap();
    assert!(
        text(&listed).0.contains("bob@example.org"),
        "{:?}",
        text(&listed)
    );
    let (_, r) = post(
        format!("{V2}/validate/email/requestToken"),
        json!({"client_secret": "sec", "email": "bob@example.org", "send_attempt": 1}),
        Some(bob.clone()),
    )
    .await;
    let sid = r["sid"].as_str().unwrap().to_owned();
    let code = url_param(&sink.next().await.text(), "token");
    let (status, _) = post(
        format!("{V2}/validate/email/submitToken"),
        json!({"sid": sid, "client_secret": "sec", "token": code}),
        Some(bob.clone()),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        format!("{V2}/3pid/bind"),
        json!({"sid": sid, "client_secret": "sec", "mxid": "@bob:example.org"}),
        Some(bob),
    )
    .await;
    assert_eq!(status, 200);
    let failed = hs.failed_onbinds.clone();
    wait_for("a failing delivery", || {
        failed.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;

    // Crash (no shutdown at all), then the homeserver recovers and so do we.
    let _ = tokio::task::spawn_blocking(move || server.stop_with("-KILL"))
        .await
        .unwrap();
    hs.fail_onbinds
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let server = tokio::task::spawn_blocking({
        let d = d.clone();
        move || Running::start(&d, &["run", "-c", "mxisd.yaml"])
    })
    .await
    .unwrap();
    let onbinds = hs.onbinds.clone();
    wait_for("delivery after the restart", || {
        onbinds.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(hs.onbinds.lock().unwrap()[0]["mxid"], "@bob:example.org");
    // `mxisd outbox` shows it gone (the item goes right after the 200).
    let listed = tokio::task::spawn_blocking(move || {
        let mut listed = Value::Null;
        for _ in 0..50 {
            let o = server.cli(&d, &["outbox", "--json", "-c", "mxisd.yaml"]);
            assert!(o.status.success(), "{:?}", text(&o));
            listed = serde_json::from_str(&text(&o).0).unwrap();
            if listed["pending"] == json!([]) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(server);
        listed
    })
    .await
    .unwrap();
    assert_eq!(listed, json!({"pending": [], "failed": []}));
}
