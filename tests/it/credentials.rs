//! Password checks for Synapse (`check_credentials` on the internal listener) against a
//! real slapd and a memory source with argon2 hashes: right and wrong passwords, users
//! that are not there, filter characters, limits, a directory that goes away and comes
//! back, and every kind of bad body.

use crate::common::ldap::{person, Slapd, SYNC_PW};
use crate::common::pg::Postgres;
use crate::common::{assert_error, Resp, TestServer};
use crate::stores::ldap_yaml;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CHECK: &str = "/_matrix-internal/identity/v1/check_credentials";

async fn check(s: &TestServer, id: &str, password: &str) -> Resp {
    raw(
        s,
        json!({"user": {"id": id, "password": password}}).to_string(),
    )
    .await
}

async fn raw(s: &TestServer, body: String) -> Resp {
    s.send(
        s.client
            .post(format!("{}{CHECK}", s.internal))
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

fn success(r: &Resp) -> bool {
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["auth"]["success"].as_bool().unwrap()
}

/// An argon2id hash of `password` (fixed salt: tests only).
fn argon2(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::from_b64("dGVzdHNhbHR0ZXN0c2FsdA").unwrap();
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn with_password(entry: String, password: &str) -> String {
    entry.trim_end().to_owned() + &format!("\nuserPassword: {password}\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_and_memory_passwords_are_checked_live_and_fail_closed() {
    let mut ldif = with_password(
        person(
            "alice",
            "Alice Liddell",
            &["alice@example.org"],
            &["+44 20 7946 0001"],
        ),
        "alice-pw",
    );
    ldif.push_str(&with_password(
        person("bob", "Bob", &["bob@example.org"], &[]),
        "bob-pw",
    ));
    // An entry whose uid holds filter characters.
    ldif.push_str(&with_password(person("star*", "Star", &[], &[]), "star-pw"));
    ldif.push_str(&with_password(person("zed", "Zed", &[], &[]), "zed-pw"));
    let mut slapd = Slapd::start(&ldif);
    let dave = argon2("dave-pw");
    let yaml = format!(
        "{}rateLimit:\n  loginPerUser:\n    burst: 1000\n    interval: 1s\n  loginPerIp:\n    burst: 100000\n    interval: 1ms\nmemory:\n  enabled: true\n  identities:\n    - username: dave\n      displayName: Dave\n      password: '{dave}'\n      threepids: [{{medium: email, address: dave@example.org}}]\n    - username: erin\n      password: plain-text\n",
        // Two base DNs, one inside the other: every user is found twice.
        ldap_yaml(&slapd.url, "", SYNC_PW).replace(
            "baseDNs: ['ou=people,dc=example,dc=org']",
            "baseDNs: ['ou=people,dc=example,dc=org', 'dc=example,dc=org']"
        )
    );
    assert!(yaml.contains("'dc=example,dc=org']"), "{yaml}");
    let s = TestServer::start_with(&yaml).await;
    // Synced: search knows alice by her name.
    let deadline = Instant::now() + Duration::from_secs(20);
    while crate::stores::search(&s, "Liddell", 5).await.0.is_empty() {
        assert!(Instant::now() < deadline, "the LDAP source was not synced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Her name changes in the directory; the next run is an hour away.
    slapd.modify(&format!(
        "dn: uid=alice,{}\nchangetype: modify\nreplace: displayName\ndisplayName: Alice Pleasance\n",
        crate::common::ldap::PEOPLE
    ));
    assert!(crate::stores::search(&s, "Pleasance", 5).await.0.is_empty());

    // The right password: success, with the directory's name and 3PIDs.
    let r = check(&s, "@alice:example.org", "alice-pw").await;
    assert!(success(&r), "{}", r.body);
    let auth = &r.body["auth"];
    assert_eq!(
        auth["id"],
        json!({"type": "mxid", "value": "@alice:example.org"})
    );
    assert_eq!(auth["profile"]["display_name"], "Alice Pleasance");
    assert_eq!(auth["display_name"], "Alice Pleasance");
    // The login brought her new name to search.
    assert_eq!(
        crate::stores::search(&s, "Pleasance", 5).await.0,
        vec!["@alice:example.org".to_owned()]
    );
    assert!(crate::stores::search(&s, "Liddell", 5).await.0.is_empty());
    let pids = auth["profile"]["three_pids"].to_string();
    assert!(pids.contains("alice@example.org"), "{pids}");
    assert!(pids.contains("msisdn"), "{pids}");

    // Wrong, empty, 1 MB, another domain, nobody, filter characters: all "no", 200.
    let big = "x".repeat(1 << 20);
    for (id, password) in [
        ("@alice:example.org", "wrong"),
        ("@alice:example.org", ""),
        ("@alice:other.example", "alice-pw"),
        ("@nobody:example.org", "alice-pw"),
        ("@*:example.org", "alice-pw"),
        ("@alice)(uid=*:example.org", "alice-pw"),
        ("@bob:example.org", "alice-pw"),
        ("alice", "alice-pw"),
        ("@alice\u{0}:example.org", "alice-pw"),
        // A Cyrillic а (U+0430): not alice.
        ("@\u{430}lice:example.org", "alice-pw"),
    ] {
        let r = check(&s, id, password).await;
        assert!(!success(&r), "{id:?} {password:?}: {}", r.body);
        assert_eq!(
            r.body,
            json!({"auth": {"success": false, "profile": {"three_pids": []}}})
        );
    }
    let r = check(&s, "@bob:example.org", &big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    // A deleted user's password no longer opens anything.
    assert!(success(&check(&s, "@zed:example.org", "zed-pw").await));
    slapd.modify(&format!(
        "dn: uid=zed,{}\nchangetype: delete\n\n",
        crate::common::ldap::PEOPLE
    ));
    assert!(!success(&check(&s, "@zed:example.org", "zed-pw").await));
    // The uid with a `*` in it is found by its escaped value, and only with its password.
    assert!(success(&check(&s, "@star*:example.org", "star-pw").await));
    assert!(!success(&check(&s, "@star*:example.org", "*").await));

    // The memory source: an argon2 hash matches; a plain-text password never does.
    let r = check(&s, "@dave:example.org", "dave-pw").await;
    assert!(success(&r), "{}", r.body);
    assert_eq!(r.body["auth"]["profile"]["display_name"], "Dave");
    assert!(!success(&check(&s, "@dave:example.org", "dave-PW").await));
    assert!(!success(
        &check(&s, "@erin:example.org", "plain-text").await
    ));

    // Bad bodies: Matrix errors.
    for (body, code) in [
        ("{", "M_NOT_JSON"),
        ("[]", "M_BAD_JSON"),
        (r#"{"user": {"id": "@a:example.org"}}"#, "M_MISSING_PARAMS"),
        (r#"{"user": {"id": 3, "password": "x"}}"#, "M_BAD_JSON"),
        (r#"{"user": "@a:example.org"}"#, "M_BAD_JSON"),
        ("{}", "M_MISSING_PARAMS"),
    ] {
        let r = raw(&s, body.into()).await;
        assert_error(&r, 400, code);
    }
    // Only the internal listener serves it.
    let r = s
        .post_json(
            CHECK,
            &json!({"user": {"id": "@alice:example.org", "password": "alice-pw"}}),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);

    // The directory goes away: "no" within the timeout, lookups go on; back: "yes".
    slapd.stop();
    let t0 = Instant::now();
    assert!(!success(&check(&s, "@bob:example.org", "bob-pw").await));
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
    let r = s
        .get("/_matrix/identity/api/v1/lookup?medium=email&address=bob%40example.org")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    slapd.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !success(&check(&s, "@bob:example.org", "bob-pw").await) {
        assert!(Instant::now() < deadline, "slapd back, bob still refused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Counted, by backend and result.
    let metrics = s.metrics_text().await;
    for line in [
        "mxisd_auth_attempts_total{backend=\"ldap\",result=\"success\"}",
        "mxisd_auth_attempts_total{backend=\"memory\",result=\"success\"}",
        "mxisd_auth_attempts_total{backend=\"ldap\",result=\"error\"}",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
}

/// Connections are kept between checks, still bound as the last user checked: each
/// check must search again as the configured account (here: anonymous), never as
/// that user. `uid=private…` entries are readable by logged-in directory users only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_connections_search_as_the_configured_account_and_refusals_are_slow() {
    let mut ldif = with_password(person("alice", "Alice", &[], &[]), "alice-pw");
    ldif.push_str(&with_password(
        person("private1", "Hidden", &[], &[]),
        "private-pw",
    ));
    let slapd = Slapd::start(&ldif);
    let anonymous = ldap_yaml(&slapd.url, "", SYNC_PW)
        .lines()
        .filter(|l| !l.contains("bindDn:") && !l.contains("bindPassword:"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let s = TestServer::start_with(&format!(
        "{anonymous}rateLimit:\n  loginPerUser:\n    burst: 1000\n    interval: 1s\n  loginPerIp:\n    burst: 100000\n    interval: 1ms\n"
    ))
    .await;
    for _ in 0..3 {
        // Alice's check leaves a connection bound as alice, who may read private1.
        assert!(success(&check(&s, "@alice:example.org", "alice-pw").await));
        // Anonymous searches do not find private1, so his password opens nothing.
        let t0 = Instant::now();
        assert!(!success(
            &check(&s, "@private1:example.org", "private-pw").await
        ));
        // A refusal takes at least 250 ms, however fast the directory says no.
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
    }
    // With the service account, he is found and let in.
    drop(s);
    let s = TestServer::start_with(&ldap_yaml(&slapd.url, "", SYNC_PW)).await;
    assert!(success(
        &check(&s, "@private1:example.org", "private-pw").await
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_limited_per_user_before_the_directory_is_asked() {
    let ldif = with_password(
        person("carol", "Carol", &["carol@example.org"], &[]),
        "carol-pw",
    );
    let slapd = Slapd::start(&ldif);
    let yaml = format!(
        "{}rateLimit:\n  loginPerUser:\n    burst: 3\n    interval: 1h\n  loginPerIp:\n    burst: 100000\n    interval: 1ms\n",
        ldap_yaml(&slapd.url, "", SYNC_PW)
    );
    let s = TestServer::start_with(&yaml).await;
    let mut answers: Vec<Value> = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..10_000 {
        let r = check(&s, "@carol:example.org", "wrong").await;
        statuses.push(r.status);
        if i < 5 {
            answers.push(r.body);
        }
    }
    assert_eq!(statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(answers[3]["retry_after_ms"].as_u64().unwrap() > 0);
    // Even the right password now waits: the limit is per user, not per failure.
    let r = check(&s, "@CAROL:example.org", "carol-pw").await;
    assert_error(&r, 429, "M_LIMIT_EXCEEDED");
    // Another user is not held up.
    assert!(!success(&check(&s, "@dan:example.org", "x").await));
    // The directory was asked for carol 3 times out of 10,001 (dan once).
    let metrics = s.metrics_text().await;
    for line in [
        "mxisd_auth_attempts_total{backend=\"any\",result=\"failure\"} 4",
        "mxisd_auth_attempts_total{backend=\"none\",result=\"limited\"} 9998",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
}

/// ma1sd's REST auth backend, on loopback: `frank` / `frank-pw` is accepted (with his
/// profile), `grace` is answered for as someone else, `broken` gets garbage, and every
/// request body is recorded.
async fn rest_backend() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use warp::{Filter, Reply};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let route = warp::path!("_ma1sd" / "backend" / "api" / "v1" / "auth" / "login")
        .and(warp::post())
        .and(warp::body::json())
        .map(move |body: Value| {
            record.lock().unwrap().push(body.clone());
            let a = &body["auth"];
            let answer = match (a["localpart"].as_str(), a["password"].as_str()) {
                (Some("frank"), Some("frank-pw")) => json!({"auth": {"success": true,
                    "id": {"type": "localpart", "value": "frank"},
                    "profile": {"display_name": "Frank", "three_pids": [{"medium": "email", "address": "frank@example.org"}]}}}),
                (Some("grace"), _) => json!({"auth": {"success": true,
                    "id": {"type": "mxid", "value": "@mallory:example.org"}}}),
                (Some("broken"), _) => return warp::reply::with_status("<html>".to_owned(), warp::http::StatusCode::OK).into_response(),
                _ => json!({"auth": {"success": false}}),
            };
            warp::reply::json(&answer).into_response()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        warp::serve(route).incoming(listener).run().await;
    });
    (format!("http://127.0.0.1:{port}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_backend_answers_with_ma1sd_contract() {
    let (host, seen) = rest_backend().await;
    let s = TestServer::start_with(&format!(
        "rest:\n  enabled: true\n  host: {host}\n  endpoints:\n    auth: /_ma1sd/backend/api/v1/auth/login\n  sync:\n    url: {host}/users\n    interval: 1h\n    timeout: 2s\n"
    ))
    .await;
    let r = check(&s, "@frank:example.org", "frank-pw").await;
    assert!(success(&r), "{}", r.body);
    assert_eq!(r.body["auth"]["profile"]["display_name"], "Frank");
    assert_eq!(
        r.body["auth"]["profile"]["three_pids"],
        json!([{"medium": "email", "address": "frank@example.org"}])
    );
    assert_eq!(
        seen.lock().unwrap()[0],
        json!({"auth": {"mxid": "@frank:example.org", "localpart": "frank", "domain": "example.org", "password": "frank-pw"}})
    );
    assert!(!success(&check(&s, "@frank:example.org", "nope").await));
    // An answer for another user, and garbage, are refusals.
    assert!(!success(&check(&s, "@grace:example.org", "x").await));
    assert!(!success(&check(&s, "@broken:example.org", "x").await));
    // The empty password never reaches the backend.
    let before = seen.lock().unwrap().len();
    assert!(!success(&check(&s, "@frank:example.org", "").await));
    assert_eq!(seen.lock().unwrap().len(), before);
}

/// A bcrypt hash of `password` (cost 4: tests only), in the `$2b$` or `$2y$` spelling.
fn bcrypt(password: &str, y: bool) -> String {
    let parts = ::bcrypt::hash_with_result(password, 4).unwrap();
    parts.format_for_version(if y {
        ::bcrypt::Version::TwoY
    } else {
        ::bcrypt::Version::TwoB
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_sources_check_bcrypt_argon2_and_synapse_hashes_on_postgresql() {
    let mut pg = Postgres::start();
    pg.sql("postgres", "CREATE DATABASE hr;");
    pg.sql("postgres", "CREATE DATABASE synapse;");
    pg.sql(
        "hr",
        &format!(
            "CREATE TABLE people (uid TEXT, name TEXT, mail TEXT, role TEXT, pw TEXT);
             INSERT INTO people VALUES
               ('alice', 'Alice', 'alice@example.org', 'staff', '{}'),
               ('alice', 'Alice', 'alice@example.org', 'admins', '{}'),
               ('bob', 'Bob', 'bob@example.org', NULL, '{}'),
               ('carol', 'Carol', 'carol@example.org', NULL, '{}'),
               ('dan', 'Dan', 'dan@example.org', NULL, 'dan-pw'),
               ('eve', 'Eve', 'eve@example.org', NULL, NULL);",
            bcrypt("alice-pw", false),
            bcrypt("alice-pw", false),
            bcrypt("bob-pw", true),
            argon2("carol-pw"),
        ),
    );
    // Synapse hashes NFKC-normalised passwords with its pepper appended.
    pg.sql(
        "synapse",
        &format!(
            "CREATE TABLE users (name TEXT, password_hash TEXT, creation_ts BIGINT, admin SMALLINT DEFAULT 0 NOT NULL,
               is_guest SMALLINT DEFAULT 0 NOT NULL, appservice_id TEXT, deactivated SMALLINT DEFAULT 0 NOT NULL, UNIQUE(name));
             CREATE TABLE profiles (user_id TEXT NOT NULL, displayname TEXT, avatar_url TEXT, UNIQUE(user_id));
             CREATE TABLE user_threepids (user_id TEXT NOT NULL, medium TEXT NOT NULL, address TEXT NOT NULL,
               validated_at BIGINT NOT NULL, added_at BIGINT NOT NULL);
             INSERT INTO users (name, password_hash) VALUES ('@frank:example.org', '{}');
             INSERT INTO users (name, password_hash, deactivated) VALUES ('@gone:example.org', '{}', 1);
             INSERT INTO profiles VALUES ('frank', 'Frank', NULL);",
            bcrypt("fish-pwPEPPER", false),
            bcrypt("gone-pwPEPPER", false),
        ),
    );
    let query =
        "SELECT uid, name AS display_name, 'email' AS medium, mail AS address, role FROM people";
    let yaml = format!(
        "rateLimit:\n  loginPerUser:\n    burst: 1000\n    interval: 1ms\n  loginPerIp:\n    burst: 100000\n    interval: 1ms\n\
         sql:\n  enabled: true\n  type: postgresql\n  connection: //127.0.0.1:{port}/hr?user=postgres\n  sync:\n    interval: 1h\n    query: \"{query}\"\n  auth:\n    query: SELECT pw FROM people WHERE uid = $1\n\
         synapseSql:\n  enabled: true\n  type: postgresql\n  connection: //127.0.0.1:{port}/synapse?user=postgres\n  sync:\n    interval: 1h\n  auth:\n    enabled: true\n    pepper: PEPPER\n",
        port = pg.port
    );
    let s = TestServer::start_with(&yaml).await;
    // Wait for both first runs (the answer's profile comes from the synced entries).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = check(&s, "@alice:example.org", "alice-pw").await;
        let f = check(&s, "@frank:example.org", "\u{FB01}sh-pw").await;
        if a.body["auth"]["profile"]["display_name"] == "Alice"
            && f.body["auth"]["profile"]["display_name"] == "Frank"
        {
            break;
        }
        assert!(Instant::now() < deadline, "{} / {}", a.body, f.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = check(&s, "@alice:example.org", "alice-pw").await;
    assert!(success(&r));
    assert_eq!(
        r.body["auth"]["profile"]["three_pids"],
        json!([{"medium": "email", "address": "alice@example.org"}])
    );
    // $2y$ bcrypt, argon2, Synapse's peppered bcrypt (typed with or without the ligature).
    assert!(success(&check(&s, "@bob:example.org", "bob-pw").await));
    assert!(success(&check(&s, "@carol:example.org", "carol-pw").await));
    assert!(success(&check(&s, "@frank:example.org", "fish-pw").await));
    for (id, password) in [
        ("@alice:example.org", "alice-PW"),
        ("@bob:example.org", "alice-pw"),
        ("@carol:example.org", "carol-pw "),
        // A plain-text column is never compared; no hash is no password.
        ("@dan:example.org", "dan-pw"),
        ("@eve:example.org", ""),
        ("@eve:example.org", "x"),
        // The pepper is the server's, not the user's; deactivated users are out.
        ("@frank:example.org", "fish-pwPEPPER"),
        ("@gone:example.org", "gone-pw"),
        ("@nobody:example.org", "x"),
        // SQL's own characters are only data.
        ("@alice' OR '1'='1:example.org", "x"),
    ] {
        let r = check(&s, id, password).await;
        assert!(!success(&r), "{id} {password}: {}", r.body);
    }
    // Roles from the role column, on the internal listener.
    let r = s
        .client
        .get(format!(
            "{}/_matrix-internal/profile/v1/@alice:example.org",
            s.internal
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"roles": ["admins", "staff"]})
    );
    // The database goes away: "no" within the timeout; back: "yes".
    pg.stop();
    let t0 = Instant::now();
    assert!(!success(&check(&s, "@bob:example.org", "bob-pw").await));
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !success(&check(&s, "@bob:example.org", "bob-pw").await) {
        assert!(
            Instant::now() < deadline,
            "the database is back, bob still refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
