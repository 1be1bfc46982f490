//! The client-server endpoints a reverse proxy routes to mxisd: user directory search
//! (answered from the index of synced users, merged with the homeserver's results) and
//! profiles (passed to the homeserver, display names filled from the directory).

use crate::common::clientapi::FakeClientApi;
use crate::common::ldap::{person, Slapd, PEOPLE, SYNC_PW};
use crate::common::{assert_error, Resp, TestServer};
use crate::stores::{first_run, ldap_yaml, sync_now};
use serde_json::{json, Value};
use std::time::Duration;

const SEARCH: &str = "/_matrix/client/v3/user_directory/search";

fn client_override(hs: &FakeClientApi) -> String {
    format!(
        "dns:\n  overwrite:\n    homeserver:\n      client:\n        - name: matrix.example.org\n          value: {}\n",
        hs.url
    )
}

async fn search_as(s: &TestServer, token: &str, body: Value) -> Resp {
    s.post_json(SEARCH, &body, Some(token)).await
}

/// The user IDs of a search, and `limited`.
async fn found(s: &TestServer, term: &str, limit: u64) -> (Vec<String>, bool) {
    let r = search_as(s, "tok-alice", json!({"search_term": term, "limit": limit})).await;
    assert_eq!(r.status, 200, "{term}: {}", r.body);
    let ids = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["user_id"].as_str().unwrap().to_owned())
        .collect();
    (ids, r.body["limited"].as_bool().unwrap())
}

/// Waits until `term` finds `user` (the index is rebuilt right after a run).
async fn until_found(s: &TestServer, term: &str, user: &str, present: bool) {
    for _ in 0..400 {
        if found(s, term, 50).await.0.iter().any(|u| u == user) == present {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{term}: {user} never became present={present}");
}

fn people() -> String {
    let mut ldif = person("alice", "Alice Liddell", &["alice@example.org"], &[]);
    ldif.push_str(&person("bob", "Bob Cratchit", &["bob@example.org"], &[]));
    ldif.push_str(&person(
        "carol",
        "Carol Danvers",
        &["carol.danvers@example.org"],
        &[],
    ));
    for i in 0..20 {
        ldif.push_str(&person(
            &format!("filler{i}"),
            "Filler Person",
            &[&format!("filler{i}@example.org")],
            &[],
        ));
    }
    ldif
}

fn homeserver_users() -> Vec<Value> {
    vec![
        json!({"user_id": "@alice:example.org", "display_name": "Alice (Matrix)", "avatar_url": "mxc://example.org/alice"}),
        json!({"user_id": "@zed:elsewhere.org", "display_name": "Zed Alison"}),
        json!({"user_id": "@carol:example.org"}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_answers_from_the_ldap_directory_merged_with_the_homeserver() {
    let mut slapd = Slapd::start(&people());
    let mut hs = FakeClientApi::start(
        &[
            ("tok-alice", "@alice:example.org"),
            ("tok-bob", "@bob:example.org"),
        ],
        homeserver_users(),
        vec![],
    )
    .await;
    let yaml = format!(
        "{}{}",
        client_override(&hs),
        ldap_yaml(&slapd.url, "", SYNC_PW)
    );
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::common::now_ms();
    let s = TestServer::start_in(dir, &yaml).await;
    let st = first_run(&s, "ldap", t0).await;
    assert!(st["last_error"].is_null(), "{st}");
    // (Not "alice": the homeserver knows her too.)
    until_found(&s, "liddell", "@alice:example.org", true).await;

    // First name, last name, partial name, a typo, an e-mail prefix, a full Matrix ID.
    for (term, wanted) in [
        ("alice", "@alice:example.org"),
        ("Liddell", "@alice:example.org"),
        ("Lid", "@alice:example.org"),
        ("Lidell", "@alice:example.org"),
        ("alice liddell", "@alice:example.org"),
        ("crat", "@bob:example.org"),
        ("Cratchet", "@bob:example.org"),
        ("carol.danv", "@carol:example.org"),
        ("@bob:example.org", "@bob:example.org"),
    ] {
        let (ids, _) = found(&s, term, 10).await;
        assert_eq!(
            ids.first().map(String::as_str),
            Some(wanted),
            "{term}: {ids:?}"
        );
    }
    // The same search went to the homeserver, with the client's body and path version.
    let searches = hs.seen.searches.lock().unwrap().clone();
    assert!(searches.iter().all(|(v, _)| v == "v3"));
    assert!(searches.iter().any(|(_, b)| b["search_term"] == "Lidell"));

    // Merged: alice once, with the homeserver's name and avatar; zed (only the
    // homeserver knows) listed too; carol's missing name filled from the directory.
    let r = search_as(&s, "tok-alice", json!({"search_term": "ali"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.body["results"].as_array().unwrap();
    let alice: Vec<&Value> = results
        .iter()
        .filter(|x| x["user_id"] == "@alice:example.org")
        .collect();
    assert_eq!(alice.len(), 1, "{}", r.body);
    assert_eq!(alice[0]["display_name"], "Alice (Matrix)");
    assert_eq!(alice[0]["avatar_url"], "mxc://example.org/alice");
    assert!(
        results.iter().any(|x| x["user_id"] == "@zed:elsewhere.org"),
        "{}",
        r.body
    );
    let r = search_as(&s, "tok-alice", json!({"search_term": "carol"})).await;
    let carol = &r.body["results"][0];
    assert_eq!(carol["user_id"], "@carol:example.org", "{}", r.body);
    assert_eq!(carol["display_name"], "Carol Danvers", "{}", r.body);
    assert!(
        !r.body.to_string().contains("carol.danvers@"),
        "no 3PIDs: {}",
        r.body
    );

    // Limit and limited.
    let (ids, limited) = found(&s, "filler", 5).await;
    assert_eq!((ids.len(), limited), (5, true));
    let (ids, limited) = found(&s, "filler", 50).await;
    assert_eq!((ids.len(), limited), (20, false));
    let r = search_as(&s, "tok-alice", json!({"search_term": "filler"})).await;
    assert_eq!(
        r.body["results"].as_array().unwrap().len(),
        10,
        "default limit"
    );

    // LDAP down: the same searches answer.
    slapd.stop();
    let st = sync_now(&s, "ldap").await;
    assert!(st["last_error"].as_str().is_some(), "{st}");
    assert_eq!(found(&s, "Lidell", 10).await.0[0], "@alice:example.org");
    assert_eq!(found(&s, "crat", 10).await.0[0], "@bob:example.org");

    // Back, and bob leaves: gone from results after the next run.
    slapd.restart();
    slapd.modify(&format!("dn: uid=bob,{PEOPLE}\nchangetype: delete\n\n"));
    let st = sync_now(&s, "ldap").await;
    assert!(st["last_error"].is_null(), "{st}");
    until_found(&s, "crat", "@bob:example.org", false).await;

    // A reindex from scratch gives identical answers.
    let mut before = Vec::new();
    for term in ["filler 1", "ali", "carol", "person"] {
        before.push(found(&s, term, 50).await);
    }
    let r = s.admin_post("/_mxisd/admin/v1/reindex", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut after = Vec::new();
    for term in ["filler 1", "ali", "carol", "person"] {
        after.push(found(&s, term, 50).await);
    }
    assert_eq!(before, after);

    // The homeserver goes down: a token it accepted a moment ago still searches the
    // directory (the log says the homeserver's results are missing); a token it never
    // saw cannot be checked.
    hs.stop().await;
    let (ids, _) = found(&s, "alice", 10).await;
    assert_eq!(ids, vec!["@alice:example.org"]);
    let r = search_as(&s, "tok-bob", json!({"search_term": "alice"})).await;
    assert_error(&r, 502, "M_UNKNOWN");
}

fn memory_users() -> &'static str {
    "memory:\n  enabled: true\n  identities:\n\
     \x20   - username: alice\n      displayName: Alice Liddell\n      threepids:\n        - {medium: email, address: alice@example.org}\n\
     \x20   - username: bob\n      displayName: Bob Cratchit\n      threepids:\n        - {medium: email, address: bob@example.org}\n\
     \x20   - username: carol\n      displayName: Carol\n      threepids:\n        - {medium: email, address: carol@example.org}\n"
}

async fn memory_server(hs: &FakeClientApi, extra: &str) -> TestServer {
    let s =
        TestServer::start_with(&format!("{}{}{extra}", client_override(hs), memory_users())).await;
    until_found(&s, "bob", "@bob:example.org", true).await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_refuses_bad_input_and_bad_tokens() {
    let hs = FakeClientApi::start(&[("tok-alice", "@alice:example.org")], vec![], vec![]).await;
    let s = memory_server(&hs, "server:\n  maxBodySize: 64KiB\n").await;

    // Tokens: none, unknown (the homeserver says so), then a good one checked once.
    let r = s
        .post_json(SEARCH, &json!({"search_term": "bob"}), None)
        .await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
    let r = s
        .send(
            s.client
                .post(format!("{}{SEARCH}", s.base))
                .body("{not json"),
        )
        .await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
    let r = search_as(&s, "nope", json!({"search_term": "bob"})).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    // The homeserver's refusal is passed on (a soft logout keeps the client's keys);
    // guests may not search.
    let r = search_as(&s, "soft-expired", json!({"search_term": "bob"})).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(r.body["soft_logout"], true, "{}", r.body);
    let r = search_as(&s, "guest-token", json!({"search_term": "bob"})).await;
    assert_error(&r, 403, "M_GUEST_ACCESS_FORBIDDEN");
    assert!(r.body.get("results").is_none());
    let calls = hs.whoami_calls();
    for _ in 0..3 {
        assert_eq!(found(&s, "bob", 10).await.0, vec!["@bob:example.org"]);
    }
    assert!(hs.whoami_calls() <= calls + 1, "whoami is cached");
    // The r0 path too.
    let r = s
        .post_json(
            "/_matrix/client/r0/user_directory/search",
            &json!({"search_term": "bob"}),
            Some("tok-alice"),
        )
        .await;
    assert_eq!(
        r.body["results"][0]["user_id"], "@bob:example.org",
        "{}",
        r.body
    );
    assert!(hs
        .seen
        .searches
        .lock()
        .unwrap()
        .iter()
        .any(|(v, _)| v == "r0"));

    // Bodies.
    let raw = |body: &'static str, ct: &'static str| {
        s.client
            .post(format!("{}{SEARCH}", s.base))
            .bearer_auth("tok-alice")
            .header("content-type", ct)
            .body(body)
    };
    assert_error(
        &s.send(raw("{not json", "application/json")).await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &s.send(raw("[1]", "application/json")).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &s.send(raw("search_term=bob", "application/x-www-form-urlencoded"))
            .await,
        400,
        "M_NOT_JSON",
    );
    for (body, code) in [
        (json!({}), "M_MISSING_PARAM"),
        (json!({"search_term": null}), "M_MISSING_PARAM"),
        (json!({"search_term": 42}), "M_INVALID_PARAM"),
        (json!({"search_term": ["bob"]}), "M_INVALID_PARAM"),
        (
            json!({"search_term": "bob", "limit": "5"}),
            "M_INVALID_PARAM",
        ),
        (
            json!({"search_term": "bob", "limit": 2.5}),
            "M_INVALID_PARAM",
        ),
    ] {
        assert_error(&search_as(&s, "tok-alice", body.clone()).await, 400, code);
    }
    let big = json!({"search_term": "b".repeat(70 * 1024)});
    assert_error(&search_as(&s, "tok-alice", big).await, 413, "M_TOO_LARGE");
    let r = s.get(SEARCH).await;
    assert_error(&r, 405, "M_UNRECOGNIZED");

    // Terms and limits that are odd but fine.
    for term in [
        "", "   ", "*", "\"bob\"", "bob*", "bob:", "(bob)", "-bob", "name:bob",
    ] {
        let r = search_as(&s, "tok-alice", json!({"search_term": term})).await;
        assert_eq!(r.status, 200, "{term}: {}", r.body);
        let ids: Vec<&str> = r.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["user_id"].as_str().unwrap())
            .collect();
        let wanted: &[&str] = match term {
            "" | "   " | "*" | "name:bob" => &[],
            _ => &["@bob:example.org"],
        };
        assert_eq!(ids, wanted, "{term}");
    }
    let r = search_as(
        &s,
        "tok-alice",
        json!({"search_term": "x".repeat(10 * 1024)}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["results"], json!([]));
    let r = search_as(
        &s,
        "tok-alice",
        json!({"search_term": "example", "limit": -3}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["results"].clone()),
        (200, json!([])),
        "{}",
        r.body
    );
    let r = search_as(
        &s,
        "tok-alice",
        json!({"search_term": "example", "limit": 1_000_000_000_000u64}),
    )
    .await;
    assert_eq!(r.body["results"].as_array().unwrap().len(), 3, "{}", r.body);
    // 3PIDs match, unless excluded (below).
    assert_eq!(
        found(&s, "carol@example.org", 10).await.0,
        vec!["@carol:example.org"]
    );

    // The homeserver is down: a fresh token still works; its results are just missing.
    let mut hs = hs;
    hs.stop().await;
    assert_eq!(found(&s, "bob", 10).await.0, vec!["@bob:example.org"]);
    let r = search_as(&s, "never-seen", json!({"search_term": "bob"})).await;
    assert_error(&r, 502, "M_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_can_leave_out_the_homeserver_and_threepids() {
    let hs = FakeClientApi::start(
        &[("tok-alice", "@alice:example.org")],
        homeserver_users(),
        vec![],
    )
    .await;
    let s = memory_server(
        &hs,
        "directory:\n  exclude:\n    homeserver: true\n    threepid: true\n",
    )
    .await;
    let (ids, _) = found(&s, "ali", 10).await;
    assert_eq!(
        ids,
        vec!["@alice:example.org"],
        "zed is only on the homeserver"
    );
    assert_eq!(hs.searches(), 0, "the homeserver is not asked");
    assert!(hs.whoami_calls() >= 1, "but the token is checked");
    assert!(found(&s, "carol@example.org", 10).await.0.is_empty());
    assert_eq!(found(&s, "carol", 10).await.0, vec!["@carol:example.org"]);
}

/// A GET with the path sent exactly as given: status and body.
async fn raw_get(s: &TestServer, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

fn profile_path(version: &str, user: &str, field: &str) -> String {
    let user: String =
        percent_encoding::utf8_percent_encode(user, percent_encoding::NON_ALPHANUMERIC).collect();
    format!("/_matrix/client/{version}/profile/{user}{field}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_proxied_with_the_directory_name_filled_in() {
    let tokens = [
        ("tok-alice", "@alice:example.org"),
        ("tok-zed", "@zed:elsewhere.org"),
    ];
    let profiles = vec![
        (
            "@alice:example.org",
            json!({"displayname": "", "avatar_url": "mxc://example.org/alice"}),
        ),
        ("@bob:example.org", json!({"displayname": "Bobby"})),
        // Neither name nor avatar: Synapse answers the whole profile with 404.
        ("@carol:example.org", json!({})),
    ];
    let mut hs = FakeClientApi::start(&tokens, vec![], profiles.clone()).await;
    let s = memory_server(&hs, "").await;

    // No display name on the homeserver: the directory's, with the rest kept.
    for version in ["v3", "r0"] {
        let r = s
            .get(&profile_path(version, "@alice:example.org", ""))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.body,
            json!({"displayname": "Alice Liddell", "avatar_url": "mxc://example.org/alice"})
        );
    }
    let r = s
        .get(&profile_path("v3", "@alice:example.org", "/displayname"))
        .await;
    assert_eq!(
        r.body,
        json!({"displayname": "Alice Liddell"}),
        "an empty name counts as none"
    );
    // Synapse's 404 for a local user without a profile: the directory's name.
    let r = s.get(&profile_path("v3", "@carol:example.org", "")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"displayname": "Carol"}));
    let r = s
        .get(&profile_path("v3", "@carol:example.org", "/displayname"))
        .await;
    assert_eq!(r.body, json!({"displayname": "Carol"}));
    // A 404 for a remote user is passed on, directory or not.
    let r = s.get(&profile_path("v3", "@carol:elsewhere.org", "")).await;
    assert_error(&r, 404, "M_NOT_FOUND");
    // A name of their own is kept; unknown users stay unknown; nothing leaks 3PIDs.
    let r = s.get(&profile_path("v3", "@bob:example.org", "")).await;
    assert_eq!(r.body, json!({"displayname": "Bobby"}));
    let r = s.get(&profile_path("v3", "@nobody:example.org", "")).await;
    assert_error(&r, 404, "M_NOT_FOUND");
    let r = s
        .get_auth(&profile_path("v3", "@alice:example.org", ""), "tok-alice")
        .await;
    assert!(r.body.get("threepids").is_none(), "{}", r.body);

    // Other requests pass through with their token and body.
    let r = s
        .send(
            s.client
                .put(format!(
                    "{}{}",
                    s.base,
                    profile_path("v3", "@alice:example.org", "/displayname")
                ))
                .bearer_auth("tok-alice")
                .json(&json!({"displayname": "Alice L."})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let put = hs.seen.profiles.lock().unwrap().last().cloned().unwrap();
    assert_eq!(put.0, "PUT");
    assert_eq!(put.2.as_deref(), Some("Bearer tok-alice"));
    assert!(put.3.contains("Alice L."), "{put:?}");
    let r = s
        .get(&profile_path("v3", "@alice:example.org", "/displayname"))
        .await;
    assert_eq!(r.body, json!({"displayname": "Alice L."}));

    // The path passed on is rebuilt from its checked segments: `..` and backslashes
    // lead nowhere else on the homeserver (sent raw: HTTP clients would tidy them).
    let before = hs.seen.profiles.lock().unwrap().len();
    for path in [
        "/_matrix/client/v3/profile/..\\..\\..\\_synapse/admin",
        "/_matrix/client/v3/profile/../../../_synapse/admin/v2/users",
        "/_matrix/client/v3/profile/%2E%2E/%2E%2E/x",
        "/_matrix/client/v3/profile/@alice:example.org/a/b",
    ] {
        let (status, body) = raw_get(&s, path).await;
        let passed = hs.seen.profiles.lock().unwrap().clone();
        assert!(
            passed[before..]
                .iter()
                .all(|p| !p.1.contains("..") || p.1.contains("%5C")),
            "{path}: {passed:?}"
        );
        assert!(
            status == 404 || passed.len() > before,
            "{path}: {status} {body}"
        );
    }
    let passed = hs.seen.profiles.lock().unwrap().clone();
    for p in &passed[before..] {
        assert!(!p.1.contains('/') || p.1.matches('/').count() == 1, "{p:?}");
        assert!(!p.1.contains('\\'), "{p:?}");
    }

    // Homeserver down: a clear error.
    hs.stop().await;
    let r = s.get(&profile_path("v3", "@alice:example.org", "")).await;
    assert_error(&r, 502, "M_UNKNOWN");
    drop(s);

    // With directory.profile.threepids: only for an authenticated local user.
    let hs = FakeClientApi::start(&tokens, vec![], profiles).await;
    let s = memory_server(&hs, "directory:\n  profile:\n    threepids: true\n").await;
    let path = profile_path("v3", "@alice:example.org", "");
    assert!(s.get(&path).await.body.get("threepids").is_none());
    assert!(s
        .get_auth(&path, "tok-zed")
        .await
        .body
        .get("threepids")
        .is_none());
    assert!(s
        .get_auth(&path, "bad-token")
        .await
        .body
        .get("threepids")
        .is_none());
    // A guest (whose ID looks local) gets none either.
    let r = s.get_auth(&path, "guest-token").await;
    assert!(r.body.get("threepids").is_none(), "{}", r.body);
    let r = s.get_auth(&path, "tok-alice").await;
    assert_eq!(
        r.body["threepids"],
        json!([{"medium": "email", "address": "alice@example.org"}]),
        "{}",
        r.body
    );
    assert_eq!(r.body["displayname"], "Alice Liddell");
    let r = s
        .get_auth(
            &profile_path("v3", "@alice:example.org", "/displayname"),
            "tok-alice",
        )
        .await;
    assert!(r.body.get("threepids").is_none(), "{}", r.body);
}
