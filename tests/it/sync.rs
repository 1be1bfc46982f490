//! Sync of identity sources into lookups: the `file` source (a YAML list of users) and
//! the `memory` source (users in the config). Initial sync, changes, a broken source
//! keeping the last good state, restarts, conflicts, invites delivered when a synced
//! address appears, and the operator verbs.

use crate::common::smtp::SmtpSink;
use crate::common::{alice_and_bob, federation_override, TestServer};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const V1_LOOKUP: &str = "/_matrix/identity/api/v1/lookup";

async fn lookup(s: &TestServer, medium: &str, address: &str) -> Value {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("medium", medium)
        .append_pair("address", address)
        .finish();
    let r = s.get(&format!("{V1_LOOKUP}?{q}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.get("mxid").cloned().unwrap_or(Value::Null)
}

fn file_config(dir: &Path) -> String {
    format!(
        "file:\n  enabled: true\n  path: {}\n  sync:\n    interval: 1h\n",
        dir.join("users.yaml").display()
    )
}

async fn status(s: &TestServer) -> Value {
    let r = s.admin_get("/_mxisd/admin/v1/sync").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["sources"][0].clone()
}

async fn wait_first_sync(s: &TestServer) -> Value {
    for _ in 0..200 {
        let st = status(s).await;
        if !st["last_attempt_ms"].is_null() {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the first sync did not run: {}",
        s.admin_get("/_mxisd/admin/v1/sync").await.body
    );
}

async fn sync_now(s: &TestServer) -> Value {
    crate::stores::sync_now(s, "file").await
}

const USERS: &str = r#"
- username: alice
  displayName: Alice
  threepids:
    - medium: email
      address: Alice@Example.org
    - medium: msisdn
      address: "+1 202 555 0100"
- username: bob
  threepids:
    - medium: email
      address: bob@example.org
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_follows_changes_and_survives_breakage_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.yaml"), USERS).unwrap();
    let config = file_config(dir.path());
    let s = TestServer::start_in(dir, &config).await;
    let st = wait_first_sync(&s).await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(
        (st["users"].clone(), st["bindings"].clone()),
        (json!(2), json!(3))
    );
    // The next timed run is an hour (file.sync.interval) after this one.
    let next = st["next_run_ms"].as_u64().unwrap();
    assert!(
        next >= st["last_attempt_ms"].as_u64().unwrap() + 3_600_000,
        "{st}"
    );
    assert_eq!(
        lookup(&s, "email", "alice@example.org").await,
        "@alice:example.org"
    );
    assert_eq!(
        lookup(&s, "msisdn", "12025550100").await,
        "@alice:example.org"
    );
    assert_eq!(
        lookup(&s, "email", "bob@example.org").await,
        "@bob:example.org"
    );

    // alice changes address, bob leaves, carol arrives.
    let users = s.dir.path().join("users.yaml");
    std::fs::write(
        &users,
        "- username: alice\n  threepids:\n    - {medium: email, address: alice2@example.org}\n- username: carol\n  threepids:\n    - {medium: email, address: carol@example.org}\n",
    )
    .unwrap();
    let st = sync_now(&s).await;
    assert_eq!(
        (st["added"].clone(), st["removed"].clone()),
        (json!(2), json!(3)),
        "{st}"
    );
    assert_eq!(lookup(&s, "email", "alice@example.org").await, Value::Null);
    assert_eq!(
        lookup(&s, "email", "alice2@example.org").await,
        "@alice:example.org"
    );
    assert_eq!(lookup(&s, "email", "bob@example.org").await, Value::Null);
    assert_eq!(
        lookup(&s, "email", "carol@example.org").await,
        "@carol:example.org"
    );

    // A broken source changes nothing; the status says why.
    std::fs::write(&users, "{{ not yaml").unwrap();
    let st = sync_now(&s).await;
    assert!(
        st["last_error"].as_str().unwrap().contains("users.yaml"),
        "{st}"
    );
    assert!(!st["last_success_ms"].is_null());
    assert_eq!(
        lookup(&s, "email", "carol@example.org").await,
        "@carol:example.org"
    );

    // Restart with the source still broken: lookups answer from the last good state.
    let before = st["last_attempt_ms"].as_u64().unwrap();
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, &config).await;
    for _ in 0..200 {
        if status(&s).await["last_attempt_ms"].as_u64().unwrap() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let st = status(&s).await;
    assert!(
        st["last_attempt_ms"].as_u64().unwrap() > before,
        "no run at start: {st}"
    );
    assert!(!st["last_error"].is_null(), "{st}");
    assert_eq!(
        lookup(&s, "email", "alice2@example.org").await,
        "@alice:example.org"
    );
    // Repaired: in sync again.
    std::fs::write(s.dir.path().join("users.yaml"), USERS).unwrap();
    let st = sync_now(&s).await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(
        lookup(&s, "email", "alice@example.org").await,
        "@alice:example.org"
    );
    assert_eq!(lookup(&s, "email", "carol@example.org").await, Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_bad_entries_and_operator_priority() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.yaml"),
        "- username: zed\n  threepids:\n    - {medium: email, address: shared@example.org}\n- username: amy\n  threepids:\n    - {medium: email, address: Shared@example.org}\n    - {medium: email, address: not-an-address}\n- username: 'no good'\n  threepids: []\n- username: '@ext:other.org'\n  threepids:\n    - {medium: msisdn, address: '+44 7400 123456'}\n",
    )
    .unwrap();
    let config = file_config(dir.path());
    let s = TestServer::start_in(dir, &config).await;
    let st = wait_first_sync(&s).await;
    assert_eq!(st["skipped"], 3, "{st}");
    let problems = st["problems"].to_string();
    assert!(
        problems.contains("claimed by @amy:example.org and @zed:example.org"),
        "{problems}"
    );
    assert!(
        !problems.contains("shared@example.org"),
        "addresses are not shown in full"
    );
    assert_eq!(
        lookup(&s, "email", "shared@example.org").await,
        "@amy:example.org"
    );
    assert_eq!(lookup(&s, "msisdn", "447400123456").await, "@ext:other.org");
    // An operator's binding outranks the source, and the source's comes back after it.
    s.bind("email", "shared@example.org", "@boss:example.org")
        .await;
    sync_now(&s).await;
    assert_eq!(
        lookup(&s, "email", "shared@example.org").await,
        "@boss:example.org"
    );
    let r = s
        .admin_post(
            "/_mxisd/admin/v1/bindings/remove",
            &json!({"medium": "email", "address": "shared@example.org"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        lookup(&s, "email", "shared@example.org").await,
        "@amy:example.org"
    );
    // Unknown source.
    let r = s
        .admin_post("/_mxisd/admin/v1/sync", &json!({"source": "ldap"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_source_and_invites_delivered_when_a_synced_address_appears() {
    let sink = SmtpSink::start(None).await;
    let hs = alice_and_bob().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.yaml"), "[]\n").unwrap();
    let config = format!(
        "{}{}{}memory:\n  enabled: true\n  identities:\n    - username: mem\n      displayName: Mem\n      password: ignored\n      threepids:\n        - medium: email\n          address: mem@example.org\n",
        sink.config(""),
        federation_override("example.org", &hs),
        file_config(dir.path())
    );
    let s = TestServer::start_in(dir, &config).await;
    for _ in 0..200 {
        if lookup(&s, "email", "mem@example.org").await == "@mem:example.org" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        lookup(&s, "email", "mem@example.org").await,
        "@mem:example.org"
    );
    // The hashed v2 lookup finds synced users as well.
    let token = s.register("example.org", "bob").await;
    let pepper = s
        .get_auth("/_matrix/identity/v2/hash_details", &token)
        .await
        .body["lookup_pepper"]
        .as_str()
        .unwrap()
        .to_owned();
    let hash = crate::common::client_hash("mem@example.org", "email", &pepper);
    let r = s
        .post_json(
            "/_matrix/identity/v2/lookup",
            &json!({"algorithm": "sha256", "pepper": pepper, "addresses": [hash]}),
            Some(&token),
        )
        .await;
    assert_eq!(r.body["mappings"][&hash], "@mem:example.org", "{}", r.body);

    // An invite waits for dora, who is not in the directory yet.
    let alice = s.register("example.org", "alice").await;
    let r = s
        .post_json(
            "/_matrix/identity/v2/store-invite",
            &json!({"medium": "email", "address": "dora@example.org", "room_id": "!r:example.org",
                "sender": "@alice:example.org"}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    sink.next().await;
    std::fs::write(
        s.dir.path().join("users.yaml"),
        "- username: dora\n  threepids:\n    - {medium: email, address: dora@example.org}\n",
    )
    .unwrap();
    sync_now(&s).await;
    let onbinds = hs.onbinds.clone();
    for _ in 0..200 {
        if !onbinds.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let body = hs.onbinds.lock().unwrap()[0].clone();
    assert_eq!(body["mxid"], "@dora:example.org");
    assert_eq!(body["invites"][0]["room_id"], "!r:example.org");
}

#[test]
fn sync_verbs_of_the_cli() {
    use crate::cli::{text, Running};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("users.yaml"), USERS).unwrap();
    std::fs::write(
        d.join("mxisd.yaml"),
        format!(
            "matrix:\n  domain: example.org\nstorage:\n  path: state\n{}",
            file_config(d)
        ),
    )
    .unwrap();
    let server = Running::start(d, &["run", "-c", "mxisd.yaml"]);
    let o = server.cli(d, &["sync", "--source", "file", "-c", "mxisd.yaml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o).0.starts_with("file: 2 users, 3 bindings ("),
        "{:?}",
        text(&o)
    );
    // The same source by name, for scripts: the answer as JSON.
    let o = server.cli(d, &["sync", "file", "--json", "-c", "mxisd.yaml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let run: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(run["sources"][0]["bindings"], 3, "{run}");
    let o = server.cli(d, &["sync", "status", "-c", "mxisd.yaml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let out = text(&o).0;
    let table: Vec<&str> = out.lines().collect();
    assert!(table[0].starts_with("SOURCE  STATE  LAST SUCCESS"), "{out}");
    assert!(table[1].starts_with("file    ok     20"), "{out}");
    std::fs::write(d.join("users.yaml"), "nope: [").unwrap();
    let o = server.cli(d, &["sync", "-c", "mxisd.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    // The failure comes first, with its reason; the counts shown are the last good
    // run's, said to be so.
    let err = text(&o).1;
    assert!(err.starts_with("error: sync of file failed: "), "{err}");
    assert!(
        err.contains("nothing changed: file still serves its last good run, of 20"),
        "{err}"
    );
    assert!(!text(&o).0.contains("3 bindings"), "{:?}", text(&o));
    // An empty file fails the run, and the command, saying why.
    std::fs::write(d.join("users.yaml"), "").unwrap();
    let o = server.cli(d, &["sync", "--source", "file", "-c", "mxisd.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("users.yaml is empty"), "{:?}", text(&o));
    let o = server.cli(d, &["sync", "--source", "ldap", "-c", "mxisd.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("No sync source"), "{:?}", text(&o));
    // An unknown name lists the real ones.
    let o = server.cli(d, &["sync", "ldpa", "-c", "mxisd.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(
        text(&o)
            .1
            .contains("No sync source is named \"ldpa\"; the sources are: file"),
        "{:?}",
        text(&o)
    );

    // A directory that shrinks below half is refused until --force confirms it.
    let many: String = (0..120)
        .map(|i| {
            format!(
                "- username: u{i}\n  threepids: [{{medium: email, address: u{i}@example.org}}]\n"
            )
        })
        .collect();
    std::fs::write(d.join("users.yaml"), many).unwrap();
    let o = server.cli(d, &["sync", "--source", "file", "-c", "mxisd.yaml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::write(d.join("users.yaml"), USERS).unwrap();
    let o = server.cli(d, &["sync", "--source", "file", "-c", "mxisd.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    // Refused says so first, with the new reason; the 120 are the last good run's.
    let (out, err) = text(&o);
    assert!(
        err.starts_with(
            "error: sync of file refused: the source now gives 3 bindings instead of 120"
        ),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(err.contains("(120 users, 120 bindings)"), "{err}");
    assert!(out.is_empty(), "{out}");
    let o = server.cli(
        d,
        &["sync", "--source", "file", "--force", "-c", "mxisd.yaml"],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o)
            .0
            .starts_with("file: 2 users, 3 bindings (3 added, 0 changed, 120 removed) in "),
        "{:?}",
        text(&o)
    );
}

/// A web service listing users in two pages, behind a bearer token; it can also answer
/// garbage, an endless body, or nothing in time.
struct FakeDirectory {
    url: String,
    /// 0 ok, 1 garbage, 2 huge, 3 slow.
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDirectory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One answer of the fake directory: `mode` 0 ok, 1 garbage, 2 huge, 3 slow, 4 a
/// `next` link to another host, 5 a `next` link back to the first page.
async fn directory_page(
    mode: u8,
    second_page: bool,
    authorized: bool,
) -> warp::http::Response<Vec<u8>> {
    let reply = |status: u16, body: Vec<u8>| {
        warp::http::Response::builder()
            .status(status)
            .body(body)
            .unwrap()
    };
    if !authorized {
        return reply(401, b"{}".to_vec());
    }
    let body = match (mode, second_page) {
        (1, _) => b"<html>".to_vec(),
        (2, _) => vec![b' '; 3 << 20],
        (3, _) => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            b"{}".to_vec()
        }
        (4, _) => json!({"users": [], "next": "http://127.0.0.2:9/users?page=2"})
            .to_string()
            .into_bytes(),
        (5, _) => json!({"users": [], "next": "/users"})
            .to_string()
            .into_bytes(),
        (_, false) => json!({"users": [{"username": "rita", "display_name": "Rita", "dept": "ops",
            "threepids": [{"medium": "email", "address": "rita@example.org"}]}],
            "next": "/users?page=2"})
        .to_string()
        .into_bytes(),
        (_, true) => json!({"users": [{"username": "sam", "roles": ["ops", "staff"],
            "threepids": [{"medium": "email", "address": "sam@example.org"}]}],
            "next": null})
        .to_string()
        .into_bytes(),
    };
    reply(200, body)
}

async fn fake_directory() -> FakeDirectory {
    use warp::Filter;
    let mode = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let m = mode.clone();
    let route = warp::path!("users")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .then(
            move |auth: Option<String>, q: std::collections::HashMap<String, String>| {
                let code = m.load(std::sync::atomic::Ordering::SeqCst);
                directory_page(
                    code,
                    q.contains_key("page"),
                    auth.as_deref() == Some("Bearer dir-token"),
                )
            },
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        warp::serve(route).incoming(listener).run().await;
    });
    FakeDirectory {
        url: format!("http://127.0.0.1:{port}/users"),
        mode,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_source_pages_and_failures() {
    let directory = fake_directory().await;
    let s = TestServer::start_with(&format!(
        "rest:\n  enabled: true\n  sync:\n    url: {}\n    token: dir-token\n    interval: 1h\n    timeout: 500ms\n    maxPageSize: 1MiB\n",
        directory.url
    ))
    .await;
    let st = wait_first_sync(&s).await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(
        lookup(&s, "email", "rita@example.org").await,
        "@rita:example.org"
    );
    assert_eq!(
        lookup(&s, "email", "sam@example.org").await,
        "@sam:example.org"
    );
    // Roles listed with the user (for invite.policy), served internally.
    let roles: Value = s
        .client
        .get(format!(
            "{}/_matrix-internal/profile/v1/@sam:example.org",
            s.internal
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(roles, json!({"roles": ["ops", "staff"]}));
    for (mode, expected) in [
        (1, "did not answer a page of users"),
        (2, "larger than rest.sync.maxPageSize"),
        (3, "did not answer in time"),
        (4, "leaves 127.0.0.1"),
        (5, "already read"),
    ] {
        directory
            .mode
            .store(mode, std::sync::atomic::Ordering::SeqCst);
        let r = s
            .admin_post("/_mxisd/admin/v1/sync", &json!({"source": "rest"}))
            .await;
        let err = r.body["sources"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(err.contains(expected), "{mode}: {}", r.body);
        // Nothing half-applied: the last good state answers.
        assert_eq!(
            lookup(&s, "email", "sam@example.org").await,
            "@sam:example.org"
        );
    }
}

/// The admin status's entry for the file source, and its problems.
async fn health(s: &TestServer) -> (Value, Vec<String>) {
    let r = s.admin_get("/_mxisd/admin/v1/status").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let problems = r.body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    (r.body["sync"][0].clone(), problems)
}

/// A small source (40 users, below the half-shrink guard's 100) whose file comes back
/// empty, then lists nobody: neither is believed, and an operator's `force` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_suddenly_lists_nobody_is_not_believed_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let users: String = (0..40)
        .map(|i| format!("- username: u{i}\n  threepids:\n    - {{medium: email, address: u{i}@example.org}}\n"))
        .collect();
    std::fs::write(dir.path().join("users.yaml"), &users).unwrap();
    let config = file_config(dir.path());
    let s = TestServer::start_in(dir, &config).await;
    assert_eq!(wait_first_sync(&s).await["bindings"], 40);
    assert_eq!(health(&s).await.0["state"], "ok");
    let file = s.dir.path().join("users.yaml");

    // A 0-byte or blank file is an error, answered with 502: nothing removed.
    for empty in ["", " \n\n  \n"] {
        std::fs::write(&file, empty).unwrap();
        let r = s
            .admin_post("/_mxisd/admin/v1/sync", &json!({"source": "file"}))
            .await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.body["errcode"], "M_UNKNOWN", "{}", r.body);
        assert!(
            r.body["error"].as_str().unwrap().contains("is empty"),
            "{}",
            r.body
        );
        let st = &r.body["sources"][0];
        assert!(
            st["last_error"].as_str().unwrap().contains("is empty"),
            "{st}"
        );
        assert_eq!(st["bindings"], 40, "{st}");
        assert_eq!(
            lookup(&s, "email", "u7@example.org").await,
            "@u7:example.org"
        );
        let (source, problems) = health(&s).await;
        assert_eq!(source["state"], "failing", "{source}");
        assert!(
            problems.iter().any(|p| p.contains("is empty")),
            "{problems:?}"
        );
    }

    // An explicit empty list would remove every binding: refused (409) at any size.
    std::fs::write(&file, "[]\n").unwrap();
    let r = s
        .admin_post("/_mxisd/admin/v1/sync", &json!({"source": "file"}))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("--force"),
        "{}",
        r.body
    );
    let st = &r.body["sources"][0];
    assert!(
        st["last_error"].as_str().unwrap().contains("refused"),
        "{st}"
    );
    assert_eq!(
        lookup(&s, "email", "u7@example.org").await,
        "@u7:example.org"
    );

    // Forced: applied, and then the source stands out as listing nobody.
    let r = s
        .admin_post(
            "/_mxisd/admin/v1/sync",
            &json!({"source": "file", "force": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let st = &r.body["sources"][0];
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(st["removed"], 40);
    assert_eq!(lookup(&s, "email", "u7@example.org").await, Value::Null);
    let (source, problems) = health(&s).await;
    assert_eq!(source["state"], "degraded", "{source}");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("sync source file: its last run listed no users")),
        "{problems:?}"
    );

    // More skipped than kept is DEGRADED too; back to normal when the users return.
    std::fs::write(
        &file,
        "- username: ok\n- username: 'not valid'\n- username: 'no good'\n",
    )
    .unwrap();
    let st = sync_now(&s).await;
    assert_eq!(
        (st["users"].clone(), st["skipped"].clone()),
        (json!(1), json!(2)),
        "{st}"
    );
    let (source, problems) = health(&s).await;
    assert_eq!(source["state"], "degraded", "{source}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("skipped 2") && p.contains("not a valid localpart")),
        "{problems:?}"
    );
    std::fs::write(&file, &users).unwrap();
    assert!(sync_now(&s).await["last_error"].is_null());
    let (source, problems) = health(&s).await;
    assert_eq!(source["state"], "ok", "{source}");
    assert!(problems.is_empty(), "{problems:?}");
}

/// A source asked to sync while another's run is applying waits for its turn (runs
/// take turns on the sync thread, so that a run waiting for the bindings lock is never
/// behind another run's pause): it starts once the first has applied its changes,
/// and both are complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_two_sources_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let users: String = (0..3000)
        .map(|i| format!("- username: f{i}\n  threepids:\n    - {{medium: email, address: f{i}@example.org}}\n"))
        .collect();
    std::fs::write(dir.path().join("users.yaml"), &users).unwrap();
    let memory: String = (0..3000)
        .map(|i| format!("    - username: m{i}\n      threepids:\n        - {{medium: email, address: m{i}@example.org}}\n"))
        .collect();
    let config = format!(
        "{}memory:\n  enabled: true\n  identities:\n{memory}",
        file_config(dir.path())
    );
    let s = TestServer::start_in(dir, &config).await;
    wait_first_sync(&s).await;
    // Until both first runs are over (their index updates too).
    let idle = || async {
        let sync = s.admin_get("/_mxisd/admin/v1/sync").await.body;
        let jobs = s.admin_get("/_mxisd/admin/v1/progress").await.body;
        sync["sources"]
            .as_array()
            .is_some_and(|all| all.iter().all(|st| !st["last_success_ms"].is_null()))
            && jobs["jobs"].as_array().is_some_and(Vec::is_empty)
    };
    for _ in 0..400 {
        if idle().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(idle().await, "the first runs did not end");
    // The file's run has 6,000 changes to apply; the memory source is asked while
    // that run applies them (its own run is unchanged and short: were the two run
    // together, it would start and end within the file's).
    let users = users.replace("@example.org", "@example.net");
    std::fs::write(s.dir.path().join("users.yaml"), users).unwrap();
    let (file_body, memory_body) = (json!({"source": "file"}), json!({"source": "memory"}));
    let memory_run = async {
        let mut applying = false;
        for _ in 0..2000 {
            let p = s.admin_get("/_mxisd/admin/v1/progress").await;
            applying = p.body["jobs"].as_array().is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| j["what"] == "sync of file" && j["phase"] == "applying")
            });
            if applying {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(applying, "the file's run was never seen applying");
        s.admin_post("/_mxisd/admin/v1/sync", &memory_body).await
    };
    let (a, b) = tokio::join!(
        s.admin_post("/_mxisd/admin/v1/sync", &file_body),
        memory_run
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(b.status, 200, "{}", b.body);
    let r = s.admin_get("/_mxisd/admin/v1/sync").await;
    let sources = r.body["sources"].as_array().unwrap();
    let span = |name: &str| {
        let st = sources.iter().find(|st| st["source"] == name).unwrap();
        let start = st["last_attempt_ms"].as_u64().unwrap();
        (
            start,
            start + st["duration_ms"].as_u64().unwrap(),
            st.clone(),
        )
    };
    let (file, memory) = (span("file"), span("memory"));
    assert_eq!(file.2["added"], 3000, "{}", file.2);
    let (first, second) = if file.0 <= memory.0 {
        (&file, &memory)
    } else {
        (&memory, &file)
    };
    assert!(
        second.0 >= first.1,
        "the runs overlapped: {} and {}",
        first.2,
        second.2
    );
    assert_eq!(
        lookup(&s, "email", "f7@example.net").await,
        "@f7:example.org"
    );
    assert_eq!(
        lookup(&s, "email", "m7@example.org").await,
        "@m7:example.org"
    );
}
