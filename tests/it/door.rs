//! The admin door: the Unix socket and its peer check (other users refused, with the
//! privileges really dropped), the TCP listener's bearer token, and what a web page could
//! make a browser send (refused with 403, changing nothing), through real sockets.

use crate::cli::{mxisd, text, Running};
use crate::common::{raw_tcp, raw_unix, TestServer, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_mxisd");
const LOOKUP: &str = "/_matrix/identity/api/v1/lookup?medium=email&address=ceo%40corp.example";

/// A raw request with `Connection: close`; `headers` are whole header lines.
fn request(method: &str, target: &str, headers: &[&str], body: &str) -> String {
    let mut text = format!("{method} {target} HTTP/1.1\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("Connection: close\r\n\r\n");
    text.push_str(body);
    text
}

async fn ceo_is_unbound(s: &TestServer) {
    let r = s.get(LOOKUP).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({}), "a refused request changed the bindings");
}

fn pepper_generation(socket: &Path) -> Value {
    let (status, body) = raw_unix(
        socket,
        &request("GET", "/_mxisd/admin/v1/status", &["Host: localhost"], ""),
    );
    assert_eq!(status, 200, "{body}");
    body["pepper_generation"].clone()
}

/// The requests of the issue that browsers send without a preflight, and Host tricks:
/// every one gets 403 on the socket and on the TCP listener (with its right token), and
/// nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shaped_requests_get_403_and_change_nothing() {
    let s = TestServer::start().await;
    let socket = s.admin_socket();
    let tcp = s.admin.trim_start_matches("http://").to_owned();
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let generation = pepper_generation(&socket);
    let import_body = "email\tceo@corp.example\t@attacker:evil.example\n";
    let bind_body =
        r#"{"medium":"email","address":"ceo@corp.example","mxid":"@attacker:evil.example"}"#;
    let cases: Vec<(&str, &str, Vec<&str>, &str)> = vec![
        (
            "POST",
            "/_mxisd/admin/v1/bindings/import",
            vec![
                "Host: localhost",
                "Origin: https://evil.example",
                "Sec-Fetch-Site: cross-site",
                "Content-Type: text/plain;charset=UTF-8",
            ],
            import_body,
        ),
        // A declared TSV (or JSON) body is still refused with a browser's headers.
        (
            "POST",
            "/_mxisd/admin/v1/bindings/import",
            vec![
                "Host: localhost",
                "Origin: https://evil.example",
                "Content-Type: text/tab-separated-values",
            ],
            import_body,
        ),
        (
            "POST",
            "/_mxisd/admin/v1/bindings/import",
            vec!["Host: localhost", "Content-Type: text/plain;charset=UTF-8"],
            import_body,
        ),
        (
            "POST",
            "/_mxisd/admin/v1/bindings",
            vec!["Host: localhost"],
            bind_body,
        ),
        (
            "POST",
            "/_mxisd/admin/v1/bindings",
            vec!["Host: localhost", "Content-Type: text/plain"],
            bind_body,
        ),
        (
            "POST",
            "/_mxisd/admin/v1/bindings",
            vec![
                "Host: localhost",
                "Sec-Fetch-Site: same-site",
                "Content-Type: application/json",
            ],
            bind_body,
        ),
        (
            "POST",
            "/_mxisd/admin/v1/hashing/rotate",
            vec!["Host: localhost"],
            "",
        ),
        (
            "POST",
            "/_mxisd/admin/v1/hashing/rotate",
            vec!["Host: localhost", "Origin: null"],
            "",
        ),
        (
            "GET",
            "/_mxisd/admin/v1/backup",
            vec!["Host: localhost", "Origin: https://evil.example"],
            "",
        ),
        (
            "GET",
            "/_mxisd/admin/v1/backup",
            vec!["Host: localhost", "Sec-Fetch-Site: cross-site"],
            "",
        ),
        (
            "GET",
            "/_mxisd/admin/v1/backup",
            vec!["Host: [::1]evil.example"],
            "",
        ),
        (
            "GET",
            "/_mxisd/admin/v1/backup",
            vec!["Host: localhost", "Host: evil.example"],
            "",
        ),
        (
            "GET",
            "http://evil.example/_mxisd/admin/v1/backup",
            vec!["Host: localhost"],
            "",
        ),
        (
            "GET",
            "/_mxisd/admin/v1/backup",
            vec!["Host: evil.example"],
            "",
        ),
        // DNS rebinding: a name that resolves to 127.0.0.1 but is not a loopback name.
        (
            "POST",
            "/_mxisd/admin/v1/bindings",
            vec![
                "Host: rebind.evil.example:8091",
                "Content-Type: application/json",
            ],
            bind_body,
        ),
    ];
    for (method, target, headers, body) in &cases {
        let (status, answer) = raw_unix(&socket, &request(method, target, headers, body));
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "socket: {method} {target} {headers:?}: {answer}"
        );
        let mut with_token = headers.clone();
        with_token.push(&auth);
        let (status, answer) = raw_tcp(&tcp, &request(method, target, &with_token, body));
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "tcp: {method} {target} {headers:?}: {answer}"
        );
    }
    ceo_is_unbound(&s).await;
    assert_eq!(
        pepper_generation(&socket),
        generation,
        "the pepper was rotated"
    );

    // The same requests the way the CLI sends them are served.
    let (status, answer) = raw_unix(
        &socket,
        &request(
            "POST",
            "/_mxisd/admin/v1/bindings/import",
            &["Host: localhost", "Content-Type: text/tab-separated-values"],
            "email\tceo@corp.example\t@ceo:corp.example\n",
        ),
    );
    assert_eq!((status, &answer["imported"]), (200, &json!(1)), "{answer}");
    assert_eq!(s.get(LOOKUP).await.body["mxid"], "@ceo:corp.example");
    let (status, answer) = raw_unix(
        &socket,
        &request(
            "POST",
            "/_mxisd/admin/v1/bindings/import",
            &["Host: localhost:1234", "Content-Type: application/json"],
            r#"[{"medium":"email","address":"cfo@corp.example","mxid":"@cfo:corp.example"},
                {"medium":"fax","address":"1","mxid":"@x:corp.example"}]"#,
        ),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["imported"], &answer["skipped"]),
        (&json!(1), &json!(1))
    );
    assert!(
        answer["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("entry 2:"),
        "{answer}"
    );
    let (status, answer) = raw_unix(
        &socket,
        &request(
            "POST",
            "/_mxisd/admin/v1/hashing/rotate",
            &["Host: [::1]", "Content-Type: application/json"],
            "{}",
        ),
    );
    assert_eq!(status, 200, "{answer}");
    assert_ne!(pepper_generation(&socket), generation);
}

/// The TCP admin listener answers only with the token; /metrics has a listener of its
/// own that needs none and serves nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_admin_listener_needs_its_token() {
    let s = TestServer::start().await;
    let tcp = s.admin.trim_start_matches("http://").to_owned();
    let bind_body =
        r#"{"medium":"email","address":"ceo@corp.example","mxid":"@attacker:evil.example"}"#;
    for (auth, errcode) in [
        (None, "M_MISSING_TOKEN"),
        (
            Some("Authorization: Bearer wrong-token-0123456789".to_owned()),
            "M_UNKNOWN_TOKEN",
        ),
        (
            Some(format!("Authorization: Bearer {ADMIN_TOKEN}x")),
            "M_UNKNOWN_TOKEN",
        ),
        (
            Some(format!("Authorization: Basic {ADMIN_TOKEN}")),
            "M_UNKNOWN_TOKEN",
        ),
    ] {
        let mut headers = vec!["Host: 127.0.0.1", "Content-Type: application/json"];
        if let Some(a) = &auth {
            headers.push(a);
        }
        for (method, target, body) in [
            ("POST", "/_mxisd/admin/v1/bindings", bind_body),
            ("GET", "/_mxisd/admin/v1/backup", ""),
            ("GET", "/_mxisd/admin/v1/status", ""),
            ("GET", "/metrics", ""),
        ] {
            let (status, answer) = raw_tcp(&tcp, &request(method, target, &headers, body));
            assert_eq!(
                (status, answer["errcode"].as_str()),
                (401, Some(errcode)),
                "{method} {target} with {auth:?}: {answer}"
            );
        }
    }
    ceo_is_unbound(&s).await;
    let r = s
        .admin_post(
            "/_mxisd/admin/v1/bindings",
            &json!({"medium": "email", "address": "ceo@corp.example", "mxid": "@ceo:corp.example"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let metrics = s
        .client
        .get(format!("{}/metrics", s.metrics))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let r = s
        .send(
            s.client
                .get(format!("{}/_mxisd/admin/v1/status", s.metrics)),
        )
        .await;
    assert_eq!(r.status, 404, "the metrics listener serves only /metrics");
}

/// A TCP admin listener without a private token file is refused at start.
#[test]
fn a_tcp_admin_listener_without_a_good_token_file_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let yaml = |admin: &str| {
        format!(
            "matrix:\n  domain: example.org\nstorage:\n  path: state\nserver:\n  port: 0\n  metrics:\n    port: 0\n  admin:\n{admin}"
        )
    };
    let check = |admin: &str| {
        std::fs::write(d.join("c.yaml"), yaml(admin)).unwrap();
        mxisd(d, &["run", "-c", "c.yaml"])
    };
    let o = check("    port: 0\n");
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(
        text(&o).1.contains("server.admin.tokenFile"),
        "{:?}",
        text(&o)
    );

    std::fs::write(d.join("token"), "0123456789abcdef0123\n").unwrap();
    std::fs::set_permissions(d.join("token"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = check("    port: 0\n    tokenFile: token\n");
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("chmod 600"), "{:?}", text(&o));

    std::fs::set_permissions(d.join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(d.join("token"), "short\n").unwrap();
    let o = check("    port: 0\n    tokenFile: token\n");
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(
        text(&o).1.contains("at least 16 characters"),
        "{:?}",
        text(&o)
    );
    // The token itself is never printed.
    assert!(!text(&o).1.contains("short"), "{:?}", text(&o));

    let o = check("    hostname: 0.0.0.0\n    port: 0\n");
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));

    std::fs::write(d.join("token"), "0123456789abcdef0123\n").unwrap();
    std::fs::write(
        d.join("c.yaml"),
        yaml("    port: 0\n    tokenFile: token\n"),
    )
    .unwrap();
    let o = mxisd(d, &["check-config", "-c", "c.yaml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        !text(&o).0.contains("0123456789abcdef0123"),
        "the token was printed"
    );
}

/// Runs the binary as another user: `setpriv` drops to uid/gid 65534 (nobody) with the
/// given supplementary groups.
fn as_nobody(dir: &Path, groups: &[u32], args: &[&str]) -> Output {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("setpriv is missing: install util-linux (tests/run.sh does)");
    let mut cmd = Command::new(setpriv);
    cmd.args(["--reuid=65534", "--regid=65534"]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg("--")
        .arg(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Every admin verb, as the CLI runs it; `out` is a directory anyone may write to.
fn verbs(out: &Path) -> Vec<Vec<String>> {
    let backup = out.join("x.mxisd-backup").display().to_string();
    let import = out.join("import.tsv").display().to_string();
    [
        vec!["status"],
        vec![
            "bindings",
            "add",
            "email",
            "ceo@corp.example",
            "@attacker:evil.example",
        ],
        vec!["bindings", "show", "email", "ceo@corp.example"],
        vec!["bindings", "remove", "email", "alice@corp.example"],
        vec!["bindings", "import", &import],
        vec!["invites", "list"],
        vec!["outbox"],
        vec!["sync"],
        vec!["search", "alice"],
        vec!["reindex"],
        vec!["hashing", "rotate"],
        vec!["backup", "-o", &backup],
    ]
    .into_iter()
    .map(|v| {
        let mut v: Vec<String> = v.into_iter().map(str::to_owned).collect();
        v.extend(["-c".into(), "c.yaml".into()]);
        v
    })
    .collect()
}

fn run_all(dir: &Path, groups: &[u32], out: &Path) -> Vec<(Vec<String>, Output)> {
    verbs(out)
        .into_iter()
        .map(|v| {
            let args: Vec<&str> = v.iter().map(String::as_str).collect();
            let o = as_nobody(dir, groups, &args);
            (v, o)
        })
        .collect()
}

/// The tests run as root: another user is refused by every admin verb, by the socket's
/// mode first and by the peer check when the mode is opened up; a member of
/// `server.admin.group` and root are served.
#[test]
fn other_users_are_refused_every_admin_verb() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(
        out.path().join("import.tsv"),
        "email\tceo@corp.example\t@attacker:evil.example\n",
    )
    .unwrap();
    std::fs::write(
        d.join("c.yaml"),
        "matrix:\n  domain: corp.example\nstorage:\n  path: state\nserver:\n  admin:\n    group: daemon\n\
         memory:\n  enabled: true\n  identities:\n    - username: alice\n      threepids:\n        - {medium: email, address: alice@corp.example}\n",
    )
    .unwrap();
    let server = Running::start(d, &["run", "-c", "c.yaml"]);
    let socket = d.join("state/admin.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&meta),
        1,
        "not group daemon"
    );
    std::fs::set_permissions(d.join("state"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let refused = |results: Vec<(Vec<String>, Output)>, why: &str| {
        for (verb, o) in results {
            let (stdout, stderr) = text(&o);
            assert!(
                !o.status.success(),
                "{verb:?} as nobody succeeded: {stdout}"
            );
            assert!(
                stderr.contains(why),
                "{verb:?} as nobody: expected {why:?} in {stderr:?}"
            );
        }
        assert!(
            !out.path().join("x.mxisd-backup").exists(),
            "nobody got a backup"
        );
        assert!(!out.path().join("x.mxisd-backup.partial").exists());
    };
    // The socket's mode (0660, group daemon) keeps nobody out.
    refused(run_all(d, &[], out.path()), "permission denied");
    // Opened up, the peer check still refuses uid 65534.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    refused(
        run_all(d, &[], out.path()),
        "uid 65534 may not use the admin socket",
    );
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();

    // Nothing changed: root sees no binding for the CEO and alice's is there.
    let o = server.cli(
        d,
        &[
            "bindings",
            "show",
            "email",
            "ceo@corp.example",
            "--json",
            "-c",
            "c.yaml",
        ],
    );
    // Not bound: the command says so and exits 1; the document has no entry.
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).0.contains("\"entries\": []"), "{:?}", text(&o));
    let o = server.cli(d, &["sync", "-c", "c.yaml"]);
    assert!(o.status.success(), "root: {:?}", text(&o));
    let o = server.cli(
        d,
        &[
            "bindings",
            "show",
            "email",
            "alice@corp.example",
            "-c",
            "c.yaml",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));

    // A member of server.admin.group (a supplementary group) is served.
    let o = as_nobody(d, &[1], &["status", "-c", "c.yaml"]);
    assert!(o.status.success(), "group daemon: {:?}", text(&o));
    let backup = out.path().join("member.mxisd-backup").display().to_string();
    let o = as_nobody(d, &[1], &["backup", "-o", &backup, "-c", "c.yaml"]);
    assert!(o.status.success(), "group daemon: {:?}", text(&o));
    let (status, log) = server.stop_with("-TERM");
    assert!(status.success(), "{log}");
    assert!(log.contains("admin socket: refused a connection"), "{log}");
    assert!(!socket.exists(), "the socket was left behind");
}
