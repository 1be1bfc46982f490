//! Reload without a restart: the real binary, its config file rewritten, then SIGHUP or
//! `mxisd reload`. What is reloadable takes effect (checked over HTTP), what is not is
//! logged as needing a restart, and a broken file changes nothing.

use crate::cli::{http_get, text, Running};
use std::path::Path;

const LOOKUP: &str = "/_matrix/identity/api/v1/lookup?medium=email&address=";

fn users(name: &str) -> String {
    format!(
        "- username: {name}\n  threepids:\n    - {{medium: email, address: {name}@example.org}}\n"
    )
}

/// A config with a file source reading `source`, and `extra` appended.
fn config(source: &str, extra: &str) -> String {
    format!(
        "matrix:\n  domain: localhost\nserver:\n  hostname: 127.0.0.1\n  publicUrl: http://127.0.0.1\nstorage:\n  path: data\nkey:\n  path: data/keys\nfile:\n  enabled: true\n  path: {source}\n{extra}"
    )
}

const POLICY: &str = "policy:\n  policies:\n    tos:\n      version: '2'\n      terms:\n        en:\n          name: Terms\n          url: https://example.org/tos-2.html\n";

fn mxid_of(server: &Running, name: &str) -> serde_json::Value {
    http_get(server.port, &format!("{LOOKUP}{name}%40example.org")).1["mxid"].clone()
}

/// Polls the public lookup until `name` resolves (a sync run follows a reload).
fn wait_bound(server: &Running, name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while mxid_of(server, name) != format!("@{name}:localhost") {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never bound:\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

#[test]
fn sighup_and_mxisd_reload_apply_what_can_change_and_keep_a_bad_file_out() {
    let dir = tempfile::tempdir().unwrap();
    let d: &Path = dir.path();
    std::fs::write(d.join("a.yaml"), users("alice")).unwrap();
    std::fs::write(d.join("b.yaml"), users("bob")).unwrap();
    std::fs::write(d.join("mxisd.yaml"), config("a.yaml", "")).unwrap();
    let server = Running::start(d, &["run", "-c", "mxisd.yaml"]);
    wait_bound(&server, "alice");
    let (_, terms) = http_get(server.port, "/_matrix/identity/v2/terms");
    assert_eq!(terms["policies"], serde_json::json!({}), "{terms}");

    // SIGHUP: another source file, a terms policy, debug logs, and a listener change.
    std::fs::write(
        d.join("mxisd.yaml"),
        config(
            "b.yaml",
            &format!("{POLICY}logging:\n  app: debug\nserver:\n  maxBodySize: 64KiB\n"),
        )
        .replace(
            "server:\n  hostname: 127.0.0.1\n  publicUrl: http://127.0.0.1\n",
            "",
        ),
    )
    .unwrap();
    let config_text = std::fs::read_to_string(d.join("mxisd.yaml")).unwrap();
    assert!(config_text.contains("maxBodySize"), "{config_text}");
    server.signal("-HUP");
    let log = server.wait_log("configuration reloaded", 1);
    wait_bound(&server, "bob");
    assert!(
        mxid_of(&server, "alice").is_null(),
        "the old source file still counts"
    );
    let (_, terms) = http_get(server.port, "/_matrix/identity/v2/terms");
    assert_eq!(terms["policies"]["tos"]["version"], "2", "{terms}");
    assert!(log.contains("SIGHUP received"), "{log}");
    assert!(log.contains("identity sources redefined: file"), "{log}");
    assert!(log.contains("policy (terms)"), "{log}");
    assert!(
        log.contains("logging.root info, logging.app debug"),
        "{log}"
    );
    assert!(
        log.contains("reload: server changed; it needs a restart"),
        "{log}"
    );
    // Debug lines of mxisd itself now show (the sync of the new file logs one).
    let before = log.split("SIGHUP received").next().unwrap_or_default();
    assert!(!before.contains("DEBUG"), "{log}");
    server.wait_log(" DEBUG mxisd", 1);

    // A broken file: every problem logged, nothing changed, still serving.
    std::fs::write(
        d.join("mxisd.yaml"),
        config("a.yaml", "logging:\n  root: loud\nfile2: {}\n"),
    )
    .unwrap();
    server.signal("-HUP");
    let log = server.wait_log("reload refused", 1);
    assert!(
        log.contains("reload: logging.root: \"loud\" is not one of"),
        "{log}"
    );
    assert!(log.contains("reload: file2: unknown key"), "{log}");
    assert_eq!(mxid_of(&server, "bob"), "@bob:localhost");
    let (_, terms) = http_get(server.port, "/_matrix/identity/v2/terms");
    assert_eq!(terms["policies"]["tos"]["version"], "2", "{terms}");

    // `mxisd reload`: the server says what it did.
    std::fs::write(d.join("mxisd.yaml"), config("b.yaml", "")).unwrap();
    let o = server.cli(d, &["reload", "-c", "mxisd.yaml"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("now in force:"), "{out}");
    assert!(out.contains("  - policy (terms)"), "{out}");
    let (_, terms) = http_get(server.port, "/_matrix/identity/v2/terms");
    assert_eq!(terms["policies"], serde_json::json!({}), "{terms}");

    // A file the CLI can read but the server cannot use (a template without a
    // body): refused with the reason, exit 1, the old config goes on.
    std::fs::write(d.join("broken-invite.eml"), "Subject: no body\n").unwrap();
    std::fs::write(
        d.join("mxisd.yaml"),
        config(
            "a.yaml",
            "threepid:\n  medium:\n    email:\n      generators:\n        template:\n          invite: broken-invite.eml\n",
        ),
    )
    .unwrap();
    let o = server.cli(d, &["reload", "-c", "mxisd.yaml"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("e-mail invite template is unusable"), "{err}");
    assert!(
        err.contains("goes on with its running configuration"),
        "{err}"
    );
    let o = server.cli(d, &["reload", "--json", "-c", "mxisd.yaml"]);
    let answer: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(answer["errcode"], "M_UNKNOWN", "{answer}");
    assert!(answer["problems"][0]
        .as_str()
        .unwrap()
        .contains("e-mail invite template is unusable"));
    assert_eq!(mxid_of(&server, "bob"), "@bob:localhost");

    // A changed password alone is a change too (and is not shown).
    let smtp = |password: &str| {
        config(
            "b.yaml",
            &format!("threepid:\n  medium:\n    email:\n      identity:\n        from: id@example.org\n      connectors:\n        smtp:\n          host: 127.0.0.1\n          port: 2525\n          login: mxisd\n          password: {password}\n"),
        )
    };
    std::fs::write(d.join("mxisd.yaml"), smtp("first-pass")).unwrap();
    let o = server.cli(d, &["reload", "-c", "mxisd.yaml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::write(d.join("mxisd.yaml"), smtp("second-pass")).unwrap();
    let o = server.cli(d, &["reload", "--json", "-c", "mxisd.yaml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let answer: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert!(
        answer["changed"].to_string().contains("threepid"),
        "{answer}"
    );
    assert!(!text(&o).0.contains("-pass"), "{answer}");

    let (status, log) = server.terminate();
    assert!(
        !log.contains("first-pass") && !log.contains("second-pass"),
        "{log}"
    );
    assert!(status.success());
}
