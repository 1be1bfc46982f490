//! 3PID sessions end to end over real HTTP, with real SMTP (a sink on loopback) and a
//! Twilio stand-in: requestToken → the token from the message → submitToken (POST and
//! the clicked GET link) → bind → lookup → unbind (by session and by a homeserver's
//! X-Matrix signature), restarts in between, and every way it can go wrong.

use crate::common::smtp::{Mail, Mode, SmtpSink};
use crate::common::twilio::FakeTwilio;
use crate::common::{
    alice_and_bob as homeserver, assert_error, client_hash, federation_override, FakeHomeserver,
    Resp, TestServer,
};
use serde_json::{json, Value};

const V2: &str = "/_matrix/identity/v2";
const V1: &str = "/_matrix/identity/api/v1";

/// A server mailing through `sink`, with federation to `hs` and `extra` config.
async fn server(sink: &SmtpSink, hs: &FakeHomeserver, extra: &str) -> TestServer {
    TestServer::start_with(&format!(
        "{}{}{extra}",
        sink.config(""),
        federation_override("example.org", hs)
    ))
    .await
}

/// The `token`, `sid` and `client_secret` of the validation link in a mail.
fn link_params(mail: &Mail) -> (String, url::Url) {
    let text = mail.text();
    let start = text.find("http").expect("no link in the mail");
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<')
        .collect();
    let url = url::Url::parse(&link).unwrap();
    let token = url
        .query_pairs()
        .find(|(k, _)| k == "token")
        .unwrap()
        .1
        .into_owned();
    (token, url)
}

async fn request_email(
    s: &TestServer,
    token: &str,
    address: &str,
    secret: &str,
    attempt: u64,
) -> Resp {
    s.post_json(
        &format!("{V2}/validate/email/requestToken"),
        &json!({"client_secret": secret, "email": address, "send_attempt": attempt}),
        Some(token),
    )
    .await
}

async fn lookup(s: &TestServer, token: &str, address: &str) -> Value {
    let pepper = s.get_auth(&format!("{V2}/hash_details"), token).await.body["lookup_pepper"]
        .as_str()
        .unwrap()
        .to_owned();
    let hash = client_hash(address, "email", &pepper);
    let r = s
        .post_json(
            &format!("{V2}/lookup"),
            &json!({"algorithm": "sha256", "pepper": pepper, "addresses": [hash]}),
            Some(token),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["mappings"][&hash].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_validation_bind_lookup_unbind_across_restarts() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = server(&sink, &hs, "").await;
    let alice = s.register("example.org", "alice").await;

    let r = request_email(&s, &alice, "Alice@Example.ORG", "secret-1", 1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sid = r.body["sid"].as_str().unwrap().to_owned();
    let mail = sink.next().await;
    assert_eq!(mail.to, vec!["<alice@example.org>"]);
    assert_eq!(mail.from, "<id@example.org>");
    assert_eq!(
        mail.header("From").unwrap(),
        "\"Example ID\" <id@example.org>"
    );
    assert_eq!(mail.header("To").unwrap(), "alice@example.org");
    assert_eq!(
        mail.header("Subject").unwrap(),
        "Your Example.org validation code"
    );
    assert!(mail
        .header("Message-ID")
        .unwrap()
        .ends_with("@example.org>"));
    let (token, link) = link_params(&mail);
    assert!(token.len() >= 32 && token.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(mail.text().contains(&token));
    assert!(link
        .as_str()
        .starts_with("https://example.org/_matrix/identity/v2/validate/email/submitToken?"));
    assert!(link
        .query_pairs()
        .any(|(k, v)| k == "sid" && v == sid.as_str()));

    // Not validated yet: bind and getValidated3pid refuse; lookup knows nothing.
    let r = s
        .get_auth(
            &format!("{V2}/3pid/getValidated3pid?sid={sid}&client_secret=secret-1"),
            &alice,
        )
        .await;
    assert_error(&r, 400, "M_SESSION_NOT_VALIDATED");
    let bind_body = json!({"sid": sid, "client_secret": "secret-1", "mxid": "@alice:example.org"});
    let r = s
        .post_json(&format!("{V2}/3pid/bind"), &bind_body, Some(&alice))
        .await;
    assert_error(&r, 400, "M_SESSION_NOT_VALIDATED");

    // A wrong token: 400 with success false; then the right one.
    let submit = |t: &str| json!({"sid": sid, "client_secret": "secret-1", "token": t});
    let r = s
        .post_json(
            &format!("{V2}/validate/email/submitToken"),
            &submit("nope"),
            Some(&alice),
        )
        .await;
    assert_error(&r, 400, "M_TOKEN_INCORRECT");
    assert_eq!(r.body["success"], false);
    let r = s
        .post_json(
            &format!("{V2}/validate/email/submitToken"),
            &submit(&token),
            Some(&alice),
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!({"success": true})));

    // Restart: the validated session survives.
    let dir = s.stop().await;
    let s = TestServer::start_in(
        dir,
        &format!(
            "{}{}",
            sink.config(""),
            federation_override("example.org", &hs)
        ),
    )
    .await;
    let r = s
        .get_auth(
            &format!("{V2}/3pid/getValidated3pid?sid={sid}&client_secret=secret-1"),
            &alice,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["medium"], "email");
    assert_eq!(r.body["address"], "alice@example.org");
    assert!(r.body["validated_at"].as_u64().unwrap() > 1_600_000_000_000);

    // Binding someone else's Matrix ID is refused; our own is signed and published.
    let bob = s.register("example.org", "bob").await;
    let r = s
        .post_json(&format!("{V2}/3pid/bind"), &bind_body, Some(&bob))
        .await;
    assert_error(&r, 403, "M_UNAUTHORIZED");
    let r = s
        .post_json(&format!("{V2}/3pid/bind"), &bind_body, Some(&alice))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["address"], "alice@example.org");
    assert_eq!(r.body["medium"], "email");
    assert_eq!(r.body["mxid"], "@alice:example.org");
    let ts = r.body["ts"].as_u64().unwrap();
    assert_eq!(r.body["not_before"].as_u64().unwrap(), ts);
    assert!(r.body["not_after"].as_u64().unwrap() > ts + 50 * 365 * 86_400_000);
    let public_key = s.get(&format!("{V2}/pubkey/ed25519:0")).await.body["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_bytes: [u8; 32] = mxisd::crypto::b64_decode(&public_key)
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).unwrap();
    mxisd::crypto::sign::verify_json(&r.body, "example.org", "ed25519:0", &key).unwrap();
    assert_eq!(
        lookup(&s, &alice, "alice@example.org").await,
        "@alice:example.org"
    );

    // Restart again: the binding survives.
    let dir = s.stop().await;
    let s = TestServer::start_in(
        dir,
        &format!(
            "{}{}",
            sink.config(""),
            federation_override("example.org", &hs)
        ),
    )
    .await;
    assert_eq!(
        lookup(&s, &alice, "alice@example.org").await,
        "@alice:example.org"
    );

    // Unbind by session: gone, and the address is told.
    let unbind = json!({"sid": sid, "client_secret": "secret-1", "mxid": "@alice:example.org",
        "threepid": {"medium": "email", "address": "alice@example.org"}});
    let r = s
        .post_json(&format!("{V2}/3pid/unbind"), &unbind, None)
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    assert_eq!(lookup(&s, &alice, "alice@example.org").await, Value::Null);
    let notice = sink.next().await;
    assert_eq!(notice.to, vec!["<alice@example.org>"]);
    assert!(notice.text().contains("@alice:example.org"));
    // Again: still fine (idempotent), and nothing more is sent.
    let r = s
        .post_json(&format!("{V2}/3pid/unbind"), &unbind, None)
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(sink.try_next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_attempt_decides_whether_to_send_again() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = server(&sink, &hs, "").await;
    let alice = s.register("example.org", "alice").await;
    let first = request_email(&s, &alice, "a@example.org", "s1", 1).await;
    let (token, _) = link_params(&sink.next().await);
    let again = request_email(&s, &alice, "a@example.org", "s1", 1).await;
    assert_eq!(first.body["sid"], again.body["sid"]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        sink.try_next().await.is_none(),
        "same send_attempt must not resend"
    );
    let higher = request_email(&s, &alice, "a@example.org", "s1", 2).await;
    assert_eq!(first.body["sid"], higher.body["sid"]);
    let (resent, _) = link_params(&sink.next().await);
    assert_eq!(token, resent, "a resend carries the same token");
    // Another client secret is another session.
    let other = request_email(&s, &alice, "a@example.org", "s2", 1).await;
    assert_ne!(first.body["sid"], other.body["sid"]);
    sink.next().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicked_links_validate_without_a_token_and_redirect_or_show_a_page() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = server(&sink, &hs, "").await;
    let alice = s.register("example.org", "alice").await;
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let open = |url: url::Url| {
        // The link names the public URL; send it to this test server instead.
        let local = format!(
            "{}{}?{}",
            s.base,
            url.path(),
            url.query().unwrap_or_default()
        );
        no_redirect.get(local).send()
    };

    // Without next_link: the success page.
    request_email(&s, &alice, "a@example.org", "s1", 1).await;
    let (_, link) = link_params(&sink.next().await);
    let r = open(link.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("verified"));
    // Clicking twice is fine.
    assert_eq!(open(link.clone()).await.unwrap().status(), 200);

    // A tampered token: the failure page, with an error status.
    let mut bad = link.clone();
    let pairs: Vec<(String, String)> = link
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "token" {
                "x".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    bad.query_pairs_mut().clear().extend_pairs(pairs);
    let r = open(bad).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("did not work"));

    // With next_link: a redirect there.
    let r = s
        .post_json(
            &format!("{V2}/validate/email/requestToken"),
            &json!({"client_secret": "s9", "email": "b@example.org", "send_attempt": 1,
                "next_link": "https://app.example.org/done?x=1"}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, link) = link_params(&sink.next().await);
    let r = open(link).await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://app.example.org/done?x=1");

    // next_link must be http(s).
    let r = s
        .post_json(
            &format!("{V2}/validate/email/requestToken"),
            &json!({"client_secret": "s8", "email": "c@example.org", "send_attempt": 1,
                "next_link": "javascript:alert(1)"}),
            Some(&alice),
        )
        .await;
    assert_error(&r, 400, "M_INVALID_PARAM");
}

fn sms_config(sink: &SmtpSink, twilio: &FakeTwilio, extra: &str) -> String {
    format!("{}{}{extra}", sink.config(""), twilio.config())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msisdn_over_v1_as_synapse_delegates_it() {
    let sink = SmtpSink::start(None).await;
    let twilio = FakeTwilio::start().await;
    let s = TestServer::start_with(&sms_config(&sink, &twilio, "")).await;
    let r = s
        .post_json(
            &format!("{V1}/validate/msisdn/requestToken"),
            &json!({"client_secret": "c1", "country": "gb", "phone_number": "07400 123456",
                "send_attempt": 1}),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["msisdn"], "447400123456");
    assert_eq!(r.body["intl_fmt"], "+44 7400 123456");
    let sid = r.body["sid"].as_str().unwrap().to_owned();
    let sent = twilio.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "+447400123456");
    assert_eq!(sent[0].from, "+15550001111");
    let code: String = sent[0].body.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(code.len(), 6, "{}", sent[0].body);
    let r = s
        .post_json(
            &format!("{V1}/validate/msisdn/submitToken"),
            &json!({"sid": sid, "client_secret": "c1", "token": format!(" {code} ")}),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s
        .get(&format!(
            "{V1}/3pid/getValidated3pid?sid={sid}&client_secret=c1"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["medium"], "msisdn");
    assert_eq!(r.body["address"], "447400123456");

    // Unknown numbers and countries.
    for (country, number) in [("GB", "12"), ("ZZ", "07700900123"), ("GB", "not a number")] {
        let r = s
            .post_json(
                &format!("{V1}/validate/msisdn/requestToken"),
                &json!({"client_secret": "c2", "country": country, "phone_number": number,
                    "send_attempt": 1}),
                None,
            )
            .await;
        assert_error(&r, 400, "M_INVALID_ADDRESS");
    }
    // The gateway failing: M_SEND_ERROR, and the attempt can be retried.
    twilio.fail(true);
    let body = json!({"client_secret": "c3", "country": "US", "phone_number": "2015550123",
        "send_attempt": 1});
    let r = s
        .post_json(&format!("{V1}/validate/msisdn/requestToken"), &body, None)
        .await;
    assert_error(&r, 400, "M_SEND_ERROR");
    twilio.fail(false);
    let r = s
        .post_json(&format!("{V1}/validate/msisdn/requestToken"), &body, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(twilio.sent().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_are_capped_then_the_session_is_dead() {
    let sink = SmtpSink::start(None).await;
    let twilio = FakeTwilio::start().await;
    let s = TestServer::start_with(&sms_config(
        &sink,
        &twilio,
        "rateLimit:\n  enabled: false\nsession:\n  policy:\n    validation:\n      maxAttempts: 5\n",
    ))
    .await;
    let r = s
        .post_json(
            &format!("{V1}/validate/msisdn/requestToken"),
            &json!({"client_secret": "c1", "country": "US", "phone_number": "2015550123",
                "send_attempt": 1}),
            None,
        )
        .await;
    let sid = r.body["sid"].as_str().unwrap().to_owned();
    let code: String = twilio.sent()[0]
        .body
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let submit = |t: &str| json!({"sid": sid, "client_secret": "c1", "token": t});
    // A brute force of many codes: the first five are "incorrect", the rest find no
    // session at all, and the right code no longer works either.
    for i in 0..40 {
        let r = s
            .post_json(
                &format!("{V1}/validate/msisdn/submitToken"),
                &submit(wrong),
                None,
            )
            .await;
        if i < 5 {
            assert_error(&r, 400, "M_TOKEN_INCORRECT");
        } else {
            assert_error(&r, 404, "M_NO_VALID_SESSION");
        }
    }
    let r = s
        .post_json(
            &format!("{V1}/validate/msisdn/submitToken"),
            &submit(&code),
            None,
        )
        .await;
    assert_error(&r, 404, "M_NO_VALID_SESSION");
    // A new requestToken starts a fresh session.
    let r = s
        .post_json(
            &format!("{V1}/validate/msisdn/requestToken"),
            &json!({"client_secret": "c1", "country": "US", "phone_number": "2015550123",
                "send_attempt": 1}),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_ne!(r.body["sid"], sid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_failures_are_m_email_send_error_and_nothing_is_recorded() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = server(&sink, &hs, "").await;
    let alice = s.register("example.org", "alice").await;
    sink.set_mode(Mode::RejectRecipient);
    let r = request_email(&s, &alice, "a@example.org", "s1", 1).await;
    assert_error(&r, 400, "M_EMAIL_SEND_ERROR");
    sink.set_mode(Mode::RejectData);
    let r = request_email(&s, &alice, "a@example.org", "s1", 1).await;
    assert_error(&r, 400, "M_EMAIL_SEND_ERROR");
    // A server that accepts and never greets: the send gives up after its timeout (5 s
    // in the sink's config) instead of holding the request.
    sink.set_mode(Mode::Silent);
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        request_email(&s, &alice, "a@example.org", "s1", 1),
    )
    .await
    .expect("an SMTP server that never greets held the request past its timeout");
    assert_error(&r, 400, "M_EMAIL_SEND_ERROR");
    // The same attempt once the server accepts mail: it is sent (nothing was recorded).
    sink.set_mode(Mode::Accept);
    let r = request_email(&s, &alice, "a@example.org", "s1", 1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    sink.next().await;

    // No SMTP server at all, and STARTTLS required from a server that has none.
    let port = crate::common::free_port();
    let down = TestServer::start_with(&format!(
        "threepid:\n  medium:\n    email:\n      connectors:\n        smtp:\n          host: 127.0.0.1\n          port: {port}\n          tls: 0\n          timeout: 2s\n{}",
        federation_override("example.org", &hs)
    ))
    .await;
    let token = down.register("example.org", "alice").await;
    assert_error(
        &request_email(&down, &token, "a@example.org", "s1", 1).await,
        400,
        "M_EMAIL_SEND_ERROR",
    );
    let strict = TestServer::start_with(&format!(
        "{}          tls: 2\n{}",
        sink.config("").replace("          tls: 0\n", ""),
        federation_override("example.org", &hs)
    ))
    .await;
    let token = strict.register("example.org", "alice").await;
    assert_error(
        &request_email(&strict, &token, "a@example.org", "s1", 1).await,
        400,
        "M_EMAIL_SEND_ERROR",
    );
    assert!(sink.try_next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_login_is_used_when_configured() {
    let sink = SmtpSink::start(Some(("mailer", "pw"))).await;
    let hs = homeserver().await;
    let s = server(&sink, &hs, "").await;
    let alice = s.register("example.org", "alice").await;
    // Without credentials the sink refuses.
    assert_error(
        &request_email(&s, &alice, "a@example.org", "s1", 1).await,
        400,
        "M_EMAIL_SEND_ERROR",
    );
    let s2 = TestServer::start_with(&format!(
        "{}{}",
        sink.config("          login: mailer\n          password: pw\n"),
        federation_override("example.org", &hs)
    ))
    .await;
    let alice = s2.register("example.org", "alice").await;
    let r = request_email(&s2, &alice, "a@example.org", "s1", 1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sink.next().await.login.as_deref(), Some("mailer"));
}

/// Validates `address` for alice and binds it; returns the session id.
async fn validate_and_bind(s: &TestServer, sink: &SmtpSink, token: &str, address: &str) -> String {
    let (sid, r) = s
        .validate_and_bind(sink, token, address, "@alice:example.org")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    sid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeservers_unbind_with_x_matrix_signatures() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let evil = FakeHomeserver::start_named("evil.example", vec![]).await;
    let s = server(
        &sink,
        &hs,
        &format!(
            "        - name: evil.example\n          value: {}\nserver:\n  name: id.example.org\nsession:\n  policy:\n    unbind:\n      notifications: false\n",
            evil.url
        ),
    )
    .await;
    let alice = s.register("example.org", "alice").await;
    validate_and_bind(&s, &sink, &alice, "a@example.org").await;
    let path = format!("{V2}/3pid/unbind");
    let body = json!({"mxid": "@alice:example.org",
        "threepid": {"medium": "email", "address": "a@example.org"}});
    let post = |auth: Option<String>, body: &Value| {
        let mut req = s.client.post(format!("{}{path}", s.base)).json(body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        s.send(req)
    };

    // No authorisation, a bearer token, a forged signature, another origin, another
    // destination: all refused, and the binding stays.
    assert_error(&post(None, &body).await, 403, "M_FORBIDDEN");
    assert_error(
        &post(Some(format!("Bearer {alice}")), &body).await,
        403,
        "M_FORBIDDEN",
    );
    let tampered = json!({"mxid": "@alice:example.org",
        "threepid": {"medium": "email", "address": "b@example.org"}});
    let forged = hs.x_matrix("id.example.org", "POST", &path, &tampered);
    assert_error(&post(Some(forged), &body).await, 403, "M_FORBIDDEN");
    let other_origin = evil.x_matrix("id.example.org", "POST", &path, &body);
    assert_error(&post(Some(other_origin), &body).await, 403, "M_FORBIDDEN");
    let wrong_dest = hs.x_matrix("elsewhere.example", "POST", &path, &body);
    assert_error(&post(Some(wrong_dest), &body).await, 401, "M_UNAUTHORIZED");
    let wrong_uri = hs.x_matrix(
        "id.example.org",
        "POST",
        "/_matrix/identity/v2/3pid/bind",
        &body,
    );
    assert_error(&post(Some(wrong_uri), &body).await, 403, "M_FORBIDDEN");
    assert_eq!(
        lookup(&s, &alice, "a@example.org").await,
        "@alice:example.org"
    );

    // The real thing.
    let good = hs.x_matrix("id.example.org", "POST", &path, &body);
    let r = post(Some(good.clone()), &body).await;
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    assert_eq!(lookup(&s, &alice, "a@example.org").await, Value::Null);
    // Unbinding what is not bound is fine too.
    let r = post(Some(good), &body).await;
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbind_by_session_needs_the_same_3pid_and_a_validated_session() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = server(&sink, &hs, "").await;
    let alice = s.register("example.org", "alice").await;
    let sid = validate_and_bind(&s, &sink, &alice, "a@example.org").await;
    let unbind = |address: &str, secret: &str| {
        json!({"sid": sid, "client_secret": secret, "mxid": "@alice:example.org",
            "threepid": {"medium": "email", "address": address}})
    };
    let path = format!("{V1}/3pid/unbind");
    assert_error(
        &s.post_json(&path, &unbind("other@example.org", "sec"), None)
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.post_json(&path, &unbind("a@example.org", "wrong"), None)
            .await,
        404,
        "M_NO_VALID_SESSION",
    );
    let r = s
        .post_json(
            &path,
            &json!({"sid": sid, "mxid": "@alice:example.org",
            "threepid": {"medium": "email", "address": "a@example.org"}}),
            None,
        )
        .await;
    assert_error(&r, 400, "M_MISSING_PARAMS");
    for bad in [
        json!({"mxid": "@alice:example.org"}),
        json!({"mxid": "nope", "threepid": {"medium": "email", "address": "a@example.org"}}),
        json!({"mxid": "@alice:example.org", "threepid": "a@example.org"}),
        json!({"mxid": "@alice:example.org", "threepid": {"medium": "fax", "address": "1"}}),
    ] {
        let r = s.post_json(&path, &bad, None).await;
        assert!(r.status == 400, "{bad}: {} {}", r.status, r.body);
    }
    assert_eq!(
        lookup(&s, &alice, "a@example.org").await,
        "@alice:example.org"
    );
    let r = s
        .post_json(&path, &unbind("A@example.org", "sec"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(lookup(&s, &alice, "a@example.org").await, Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_matrix_errors() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = server(&sink, &hs, "server:\n  maxBodySize: 4KiB\n").await;
    let alice = s.register("example.org", "alice").await;
    let rt = format!("{V2}/validate/email/requestToken");

    // Wrong or missing auth on v2.
    let body = json!({"client_secret": "s", "email": "a@example.org", "send_attempt": 1});
    assert_error(&s.post_json(&rt, &body, None).await, 401, "M_UNAUTHORIZED");
    assert_error(
        &s.post_json(&rt, &body, Some("bogus")).await,
        401,
        "M_UNAUTHORIZED",
    );
    for path in [
        format!("{V2}/validate/email/submitToken"),
        format!("{V2}/3pid/bind"),
    ] {
        assert_error(
            &s.post_json(&path, &json!({}), None).await,
            401,
            "M_UNAUTHORIZED",
        );
    }
    let r = s
        .get(&format!("{V2}/3pid/getValidated3pid?sid=a&client_secret=b"))
        .await;
    assert_error(&r, 401, "M_UNAUTHORIZED");

    // Malformed JSON, not an object, wrong types, missing fields, bad values.
    let raw = |text: &'static str| {
        s.send(
            s.client
                .post(format!("{}{rt}", s.base))
                .bearer_auth(&alice)
                .header("content-type", "application/json")
                .body(text),
        )
    };
    assert_error(&raw("{not json").await, 400, "M_NOT_JSON");
    assert_error(&raw("[1,2]").await, 400, "M_BAD_JSON");
    let r = s
        .post_json(&rt, &json!({"email": "a@example.org"}), Some(&alice))
        .await;
    assert_error(&r, 400, "M_MISSING_PARAMS");
    assert!(r.body["error"].as_str().unwrap().contains("client_secret"));
    assert!(r.body["error"].as_str().unwrap().contains("send_attempt"));
    for (field, value, code) in [
        ("send_attempt", json!("x"), "M_INVALID_PARAM"),
        ("send_attempt", json!(-1), "M_INVALID_PARAM"),
        ("send_attempt", json!([1]), "M_INVALID_PARAM"),
        ("client_secret", json!("has space"), "M_INVALID_PARAM"),
        ("client_secret", json!(5), "M_INVALID_PARAM"),
        ("email", json!("not-an-address"), "M_INVALID_EMAIL"),
        ("email", json!("a@b@c.example"), "M_INVALID_EMAIL"),
        ("email", json!({"a": 1}), "M_INVALID_PARAM"),
    ] {
        let mut b = body.clone();
        b[field] = value.clone();
        let r = s.post_json(&rt, &b, Some(&alice)).await;
        assert_error(&r, 400, code);
        let _ = (field, value);
    }
    // Oversized.
    let mut big = body.clone();
    big["pad"] = json!("x".repeat(8 * 1024));
    assert_error(
        &s.post_json(&rt, &big, Some(&alice)).await,
        413,
        "M_TOO_LARGE",
    );
    // Unknown medium.
    let r = s
        .post_json(
            &format!("{V2}/validate/fax/requestToken"),
            &body,
            Some(&alice),
        )
        .await;
    assert_error(&r, 404, "M_UNRECOGNIZED");

    // Unknown sid and wrong secret look the same.
    let r = request_email(&s, &alice, "a@example.org", "right", 1).await;
    let sid = r.body["sid"].as_str().unwrap().to_owned();
    sink.next().await;
    for (sid, secret) in [("nope", "right"), (sid.as_str(), "wrong")] {
        let r = s
            .post_json(
                &format!("{V2}/validate/email/submitToken"),
                &json!({"sid": sid, "client_secret": secret, "token": "t"}),
                Some(&alice),
            )
            .await;
        assert_error(&r, 404, "M_NO_VALID_SESSION");
        assert_eq!(
            r.body["error"],
            "No valid session was found matching that sid and client secret"
        );
        let r = s
            .get_auth(
                &format!("{V2}/3pid/getValidated3pid?sid={sid}&client_secret={secret}"),
                &alice,
            )
            .await;
        assert_error(&r, 404, "M_NO_VALID_SESSION");
    }
    // The session of one medium is not the other's.
    let r = s
        .post_json(
            &format!("{V2}/validate/msisdn/submitToken"),
            &json!({"sid": sid, "client_secret": "right", "token": "t"}),
            Some(&alice),
        )
        .await;
    assert_error(&r, 404, "M_NO_VALID_SESSION");
    // A bind of a malformed Matrix ID.
    let r = s
        .post_json(
            &format!("{V2}/3pid/bind"),
            &json!({"sid": sid, "client_secret": "right", "mxid": "alice"}),
            Some(&alice),
        )
        .await;
    assert_error(&r, 400, "M_INVALID_PARAM");
    // The legacy form encoding works for requestToken.
    let r = s
        .send(
            s.client
                .post(format!("{}{rt}", s.base))
                .bearer_auth(&alice)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("client_secret=form1&email=f%40example.org&send_attempt=1"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sink.next().await.to, vec!["<f@example.org>"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_after_their_lifetime() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = server(
        &sink,
        &hs,
        "session:\n  policy:\n    validation:\n      lifetime: 1s\n",
    )
    .await;
    let alice = s.register("example.org", "alice").await;
    let r = request_email(&s, &alice, "a@example.org", "s1", 1).await;
    let sid = r.body["sid"].as_str().unwrap().to_owned();
    let (token, _) = link_params(&sink.next().await);
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let r = s
        .post_json(
            &format!("{V2}/validate/email/submitToken"),
            &json!({"sid": sid, "client_secret": "s1", "token": token}),
            Some(&alice),
        )
        .await;
    assert_error(&r, 400, "M_SESSION_EXPIRED");
    // Asking again starts a new session, with a new token.
    let r = request_email(&s, &alice, "a@example.org", "s1", 1).await;
    assert_ne!(r.body["sid"], sid.as_str());
    let (fresh, _) = link_params(&sink.next().await);
    assert_ne!(fresh, token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = server(
        &sink,
        &hs,
        "rateLimit:\n  requestTokenPerAddress:\n    burst: 2\n    interval: 1h\n  lookupPerToken:\n    burst: 3\n    interval: 1h\n",
    )
    .await;
    let alice = s.register("example.org", "alice").await;
    for attempt in 1..=2 {
        let r = request_email(&s, &alice, "a@example.org", "s1", attempt).await;
        assert_eq!(r.status, 200, "{}", r.body);
        sink.next().await;
    }
    let r = request_email(&s, &alice, "a@example.org", "s1", 3).await;
    assert_error(&r, 429, "M_LIMIT_EXCEEDED");
    assert!(r.body["retry_after_ms"].as_u64().unwrap() > 60_000);
    // Another destination is not limited by this one.
    assert_eq!(
        request_email(&s, &alice, "b@example.org", "s1", 1)
            .await
            .status,
        200
    );

    let body = json!({"algorithm": "sha256", "pepper": "x", "addresses": []});
    for _ in 0..3 {
        let r = s
            .post_json(&format!("{V2}/lookup"), &body, Some(&alice))
            .await;
        assert_ne!(r.status, 429);
    }
    let r = s
        .post_json(&format!("{V2}/lookup"), &body, Some(&alice))
        .await;
    assert_error(&r, 429, "M_LIMIT_EXCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_endpoint_refuses_malformed_bodies() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = server(&sink, &hs, "server:\n  maxBodySize: 4KiB\n").await;
    let alice = s.register("example.org", "alice").await;
    let endpoints = [
        "validate/email/requestToken",
        "validate/msisdn/requestToken",
        "validate/email/submitToken",
        "validate/msisdn/submitToken",
        "3pid/bind",
        "3pid/unbind",
        "sign-ed25519",
        "store-invite",
        "lookup",
    ];
    for prefix in [V2, V1] {
        for endpoint in endpoints {
            if prefix == V1 && endpoint == "lookup" {
                continue; // v2 only (v1 lookup is a GET)
            }
            let url = format!("{}{prefix}/{endpoint}", s.base);
            let send = |body: String| {
                s.send(
                    s.client
                        .post(&url)
                        .bearer_auth(&alice)
                        .header("content-type", "application/json")
                        .body(body),
                )
            };
            let r = send("{\"unterminated\": ".into()).await;
            assert_error(&r, 400, "M_NOT_JSON");
            let r = send("\"a string\"".into()).await;
            assert_error(&r, 400, "M_BAD_JSON");
            let r = send("{}".into()).await;
            assert_error(&r, 400, "M_MISSING_PARAMS");
            let r = send(format!("{{\"pad\": \"{}\"}}", "x".repeat(5000))).await;
            assert_error(&r, 413, "M_TOO_LARGE");
            let r = s
                .send(
                    s.client
                        .post(&url)
                        .bearer_auth(&alice)
                        .header("content-type", "text/plain")
                        .body("{}"),
                )
                .await;
            assert_error(&r, 400, "M_NOT_JSON");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_takes_the_token_from_the_query_too() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let s = server(&sink, &hs, "").await;
    let alice = s.register("example.org", "alice").await;
    let pepper = s.get_auth(&format!("{V2}/hash_details"), &alice).await.body["lookup_pepper"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"algorithm": "sha256", "pepper": pepper, "addresses": []});
    let r = s
        .send(
            s.client
                .post(format!("{}{V2}/lookup?access_token={alice}", s.base))
                .json(&body),
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!({"mappings": {}})));
    let r = s
        .send(
            s.client
                .post(format!("{}{V2}/lookup?access_token=wrong", s.base))
                .json(&body),
        )
        .await;
    assert_error(&r, 401, "M_UNAUTHORIZED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_templates_terms_gate_and_v2_links_without_v1() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.eml"),
        "Subject: Código para %RECIPIENT_ADDRESS%\nContent-Type: text/plain; charset=UTF-8\n\nToken: %VALIDATION_TOKEN%\nLink: %VALIDATION_LINK%\n",
    )
    .unwrap();
    // An invitation with a text, an HTML and a JSON part: each escapes for its type.
    std::fs::write(
        dir.path().join("invite.eml"),
        "Subject: Invite\nContent-Type: multipart/mixed; boundary=\"p\"\n\n--p\nContent-Type: text/plain\n\nRoom: %ROOM_NAME%\n--p\nContent-Type: text/html\n\n<b>%ROOM_NAME%</b>\n--p\nContent-Type: application/json\n\n{\"room\": \"%ROOM_NAME%\", \"by\": \"%SENDER_NAME%\"}\n--p--\n",
    )
    .unwrap();
    let yaml = format!(
        "matrix:\n  domain: example.org\n  v1: false\nstorage:\n  path: {}\n{}{}policy:\n  policies:\n    tos:\n      version: \"1\"\n      terms:\n        en:\n          name: Terms\n          url: https://example.org/tos\n",
        dir.path().join("state").display(),
        sink.config("      generators:\n        template:\n          session:\n            validation: mine.eml\n          invite: invite.eml\n"),
        federation_override("example.org", &hs)
    );
    let s = TestServer::start_raw(dir, &yaml).await;
    let alice = s.register("example.org", "alice").await;
    // Terms not accepted yet: requestToken is gated.
    let r = request_email(&s, &alice, "a@example.org", "s1", 1).await;
    assert_error(&r, 403, "M_TERMS_NOT_SIGNED");
    let r = s
        .post_json(
            &format!("{V2}/terms"),
            &json!({"user_accepts": ["https://example.org/tos"]}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request_email(&s, &alice, "a@example.org", "s1", 1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mail = sink.next().await;
    assert!(mail.header("Subject").unwrap().starts_with("=?UTF-8?B?"));
    let (token, link) = link_params(&mail);
    assert!(mail.text().contains(&format!("Token: {token}")));

    let room = r#"The "A" <team> & \ co"#;
    let r = s
        .post_json(
            &format!("{V2}/store-invite"),
            &json!({"medium": "email", "address": "inv@example.org", "room_id": "!r:example.org",
                "sender": "@alice:example.org", "room_name": room, "sender_display_name": "Al \"x\""}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let invitation = sink.next().await;
    let parts: Vec<String> = invitation
        .data
        .split("--p\r\n")
        .skip(1)
        .map(|p| {
            let body = p.split_once("\r\n\r\n").unwrap().1;
            body.split("\r\n--p--")
                .next()
                .unwrap()
                .trim_end()
                .to_owned()
        })
        .collect();
    assert_eq!(parts[0], format!("Room: {room}"));
    assert_eq!(
        parts[1],
        "<b>The &quot;A&quot; &lt;team&gt; &amp; \\ co</b>"
    );
    let json: serde_json::Value =
        serde_json::from_str(&parts[2]).unwrap_or_else(|e| panic!("{e}: {:?}", invitation.data));
    assert_eq!(json, json!({"room": room, "by": "Al \"x\""}));
    // v1 is off: its routes are gone, the v2 link still works without a token.
    let r = s
        .post_json(
            &format!("{V1}/validate/email/requestToken"),
            &json!({"client_secret": "s", "email": "a@example.org", "send_attempt": 1}),
            None,
        )
        .await;
    assert_error(&r, 404, "M_UNRECOGNIZED");
    let r = s
        .client
        .get(format!(
            "{}{}?{}",
            s.base,
            link.path(),
            link.query().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_bind_is_off_unless_configured() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    for (extra, expected) in [
        ("", 403),
        ("session:\n  policy:\n    bind:\n      v1: true\n", 200),
    ] {
        let s = server(&sink, &hs, extra).await;
        let r = s
            .post_json(
                &format!("{V1}/validate/email/requestToken"),
                &json!({"client_secret": "s1", "email": "a@example.org", "send_attempt": 1}),
                None,
            )
            .await;
        let sid = r.body["sid"].as_str().unwrap().to_owned();
        let (token, _) = link_params(&sink.next().await);
        let r = s
            .post_json(
                &format!("{V1}/validate/email/submitToken"),
                &json!({"sid": sid, "client_secret": "s1", "token": token}),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = s
            .post_json(
                &format!("{V1}/3pid/bind"),
                &json!({"sid": sid, "client_secret": "s1", "mxid": "@anyone:example.org"}),
                None,
            )
            .await;
        assert_eq!(r.status, expected, "{extra}: {}", r.body);
        if expected == 403 {
            assert_eq!(r.body["errcode"], "M_FORBIDDEN");
        } else {
            assert_eq!(r.body["mxid"], "@anyone:example.org");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_matrix_from_an_impostor_key_or_to_our_public_host() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    // Claims to be example.org, but signs with a key example.org never published.
    let impostor = FakeHomeserver::start_named("example.org", vec![]).await;
    let s = server(
        &sink,
        &hs,
        "server:\n  name: id.example.org\n  publicUrl: https://matrix-id.example.org\nsession:\n  policy:\n    unbind:\n      notifications: false\nrateLimit:\n  unbindPerIp:\n    burst: 4\n    interval: 1h\n",
    )
    .await;
    let alice = s.register("example.org", "alice").await;
    validate_and_bind(&s, &sink, &alice, "a@example.org").await;
    let path = format!("{V2}/3pid/unbind");
    let body = json!({"mxid": "@alice:example.org",
        "threepid": {"medium": "email", "address": "a@example.org"}});
    let post = |auth: String| {
        s.send(
            s.client
                .post(format!("{}{path}", s.base))
                .header("authorization", auth)
                .json(&body),
        )
    };
    let forged = impostor.x_matrix("id.example.org", "POST", &path, &body);
    assert_error(&post(forged).await, 403, "M_FORBIDDEN");
    assert_eq!(
        lookup(&s, &alice, "a@example.org").await,
        "@alice:example.org"
    );
    // Homeservers may name us by the public URL's host.
    let by_host = hs.x_matrix("matrix-id.example.org", "POST", &path, &body);
    let r = post(by_host.clone()).await;
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    assert_eq!(lookup(&s, &alice, "a@example.org").await, Value::Null);
    // Unbind requests are limited per client address.
    // (Four so far, counting the forged one: the burst.)
    assert_eq!(post(by_host.clone()).await.status, 200);
    assert_eq!(post(by_host.clone()).await.status, 200);
    assert_error(&post(by_host).await, 429, "M_LIMIT_EXCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_over_starttls_and_implicit_tls_with_a_private_ca() {
    use crate::common::smtp::Tls;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("smtp.pem"), dir.path().join("smtp.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let acceptor = mxisd::http::listen::tls_acceptor(&cert_path, &key_path).unwrap();
    let hs = homeserver().await;
    for (tls, mode) in [
        (Tls::Starttls(acceptor.clone()), 2),
        (Tls::Implicit(acceptor.clone()), 3),
        (Tls::Starttls(acceptor.clone()), 1),
    ] {
        let sink = SmtpSink::start_tls(Some(("mailer", "pw")), tls).await;
        let smtp = sink.config("").replace(
            "          tls: 0\n",
            &format!(
                "          tls: {mode}\n          caFile: {}\n          login: mailer\n          password: pw\n",
                cert_path.display()
            ),
        );
        let s = TestServer::start_with(&format!(
            "{smtp}{}",
            federation_override("example.org", &hs)
        ))
        .await;
        let alice = s.register("example.org", "alice").await;
        let r = request_email(&s, &alice, "a@example.org", "s1", 1).await;
        assert_eq!(r.status, 200, "tls {mode}: {}", r.body);
        let mail = sink.next().await;
        assert!(mail.tls, "tls {mode}: the message came in clear");
        assert_eq!(mail.login.as_deref(), Some("mailer"));
    }
    // Without the CA the server's certificate is not trusted: nothing is sent.
    let sink = SmtpSink::start_tls(None, Tls::Implicit(acceptor)).await;
    let smtp = sink
        .config("")
        .replace("          tls: 0\n", "          tls: 3\n");
    let s = TestServer::start_with(&format!(
        "{smtp}{}",
        federation_override("example.org", &hs)
    ))
    .await;
    let alice = s.register("example.org", "alice").await;
    assert_error(
        &request_email(&s, &alice, "a@example.org", "s1", 1).await,
        400,
        "M_EMAIL_SEND_ERROR",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_policy_refuses_local_or_remote_3pids_by_class() {
    let sink = SmtpSink::start(None).await;
    let hs = homeserver().await;
    // Only the organisation's own addresses (mxisd's forRemote.enabled: false).
    let s = server(
        &sink,
        &hs,
        "session:\n  policy:\n    validation:\n      forRemote:\n        enabled: false\n",
    )
    .await;
    let alice = s.register("example.org", "alice").await;
    let r = request_email(&s, &alice, "alice@example.org", "s1", 1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    sink.next().await;
    let r = request_email(&s, &alice, "alice@EXAMPLE.ORG", "s2", 1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    sink.next().await;
    for address in ["alice@gmail.example", "alice@sub.example.org"] {
        let r = request_email(&s, &alice, address, "s3", 1).await;
        assert_error(&r, 403, "M_FORBIDDEN");
        assert!(
            r.body["error"].as_str().unwrap().contains("outside"),
            "{}",
            r.body
        );
    }
    // Phone numbers are never local.
    let r = s
        .post_json(
            &format!("{V1}/validate/msisdn/requestToken"),
            &json!({"client_secret": "s4", "country": "GB", "phone_number": "07400 123456", "send_attempt": 1}),
            None,
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    assert!(sink.try_next().await.is_none());

    // The other way round: everyone but the organisation's own users (toLocal off and no
    // remote server to hand them to is mxisd's "refused" too; toRemote was on by default).
    let sink = SmtpSink::start(None).await;
    let s = server(
        &sink,
        &hs,
        "session:\n  policy:\n    validation:\n      forLocal:\n        toLocal: false\n        toRemote:\n          enabled: false\n",
    )
    .await;
    let alice = s.register("example.org", "alice").await;
    let r = request_email(&s, &alice, "alice@example.org", "s1", 1).await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let r = request_email(&s, &alice, "alice@gmail.example", "s1", 1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sink.next().await.to, vec!["<alice@gmail.example>"]);
}
