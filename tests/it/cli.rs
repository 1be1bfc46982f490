//! The real `mxisd` binary: run on the embedded default, check-config, keys, healthcheck,
//! status, and start-up failures (each a one-line error, non-zero exit, nothing
//! overwritten). Servers here listen on loopback ports picked by the test.

use crate::common::free_port;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mxisd");

fn mxisd(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A running `mxisd run` child, killed on drop if still alive.
struct Running {
    child: Option<Child>,
    port: u16,
    admin: u16,
}

impl Running {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let port = free_port();
        let admin = free_port();
        let child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("MXISD_SERVER_PORT", port.to_string())
            .env("MXISD_SERVER_ADMIN_PORT", admin.to_string())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let r = Self {
            child: Some(child),
            port,
            admin,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("mxisd did not start listening on {}", self.port);
    }

    /// SIGTERM, then the exit status and everything logged.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                return (status, String::from_utf8_lossy(&out.stderr).into_owned());
            }
            assert!(
                Instant::now() < deadline,
                "mxisd did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn http_get(port: u16, path: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn version_flag() {
    let dir = tempfile::tempdir().unwrap();
    let o = mxisd(dir.path(), &["--version"]);
    assert!(o.status.success());
    assert_eq!(
        text(&o).0.trim(),
        format!("mxisd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn run_on_the_embedded_default_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), &["run"]);
    let (status, body) = http_get(server.port, "/_matrix/identity/v2");
    assert_eq!((status, body), (200, serde_json::json!({})));
    let (_, key) = http_get(server.port, "/_matrix/identity/v2/pubkey/ed25519:0");

    // State and key live under ./mxisd-data, the key file private.
    let key_file = dir.path().join("mxisd-data/keys/regular/ed25519/0");
    assert!(key_file.is_file());
    assert!(dir.path().join("mxisd-data/store").is_dir());
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // CLI verbs against the running server.
    let o = mxisd(
        dir.path(),
        &[
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{}/status", server.port),
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let o = Command::new(BIN)
        .args(["status"])
        .current_dir(dir.path())
        .env("MXISD_SERVER_PORT", server.port.to_string())
        .env("MXISD_SERVER_ADMIN_PORT", server.admin.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("\"key_id\": \"ed25519:0\""),
        "{:?}",
        text(&o)
    );
    let o = Command::new(BIN)
        .args(["healthcheck"])
        .current_dir(dir.path())
        .env("MXISD_SERVER_ADMIN_PORT", server.admin.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    // keys show reads the key file (no store access) while the server runs.
    let o = mxisd(dir.path(), &["keys", "show"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        text(&o).0.trim(),
        format!("ed25519:0 {}", key["public_key"].as_str().unwrap())
    );

    // A second server on the same state directory is refused with a clear message.
    let o = Command::new(BIN)
        .args(["run"])
        .current_dir(dir.path())
        .env("MXISD_SERVER_PORT", free_port().to_string())
        .env("MXISD_SERVER_ADMIN_PORT", free_port().to_string())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("in use by another mxisd process"),
        "{}",
        text(&o).1
    );

    let (status, log) = server.terminate();
    assert!(status.success(), "exit {status:?}\n{log}");
    for expected in [
        "starting mxisd",
        "mxisd-data",
        "signing key generated",
        "identity API listening",
        "SIGTERM received",
        "stopped",
    ] {
        assert!(log.contains(expected), "log lacks {expected:?}:\n{log}");
    }
    // Nothing secret in the log: no private key material.
    let seed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    assert!(!log.contains(seed["key"].as_str().unwrap()));

    // Restart: the same key is loaded, not regenerated.
    let server = Running::start(dir.path(), &["run"]);
    let (_, again) = http_get(server.port, "/_matrix/identity/v2/pubkey/ed25519:0");
    assert_eq!(again, key);
    let (status, log) = server.terminate();
    assert!(status.success());
    assert!(log.contains("signing key loaded"), "{log}");
}

#[test]
fn json_logs_on_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mxisd.yaml"),
        "matrix:\n  domain: example.org\nstorage:\n  path: state\nlogging:\n  format: json\n",
    )
    .unwrap();
    let server = Running::start(dir.path(), &["run", "-c", "mxisd.yaml"]);
    let _ = http_get(
        server.port,
        "/_matrix/identity/v2/pubkey/isvalid?public_key=secret-looking",
    );
    let (status, log) = server.terminate();
    assert!(status.success());
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["message"] == "request" && l["path"] == "/_matrix/identity/v2/pubkey/isvalid"));
    // The query string (where access tokens travel) is never logged.
    assert!(!log.contains("secret-looking"));
}

#[test]
fn check_config_lists_every_problem_or_summarises() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        "matrix:\n  domain: example.org\nstorage:\n  path: /var/lib/mxisd\nserver:\n  publicUrl: https://id.example.org\n",
    )
    .unwrap();
    let o = mxisd(dir.path(), &["check-config", "-c", "good.yaml"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("good.yaml: valid"));
    assert!(
        out.contains("server.publicUrl       https://id.example.org"),
        "{out}"
    );

    std::fs::write(
        dir.path().join("bad.yaml"),
        "matrix:\n  domian: example.org\nstorage:\n  backend: sqlite\nserver:\n  port: http\n",
    )
    .unwrap();
    let o = mxisd(dir.path(), &["check-config", "-c", "bad.yaml"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    for expected in [
        "matrix.domian: unknown key",
        "matrix.domain: required",
        "storage.backend:",
        "storage.path: required",
        "server.port: expected a whole number",
    ] {
        assert!(err.contains(expected), "{expected:?} not in:\n{err}");
    }

    std::fs::write(dir.path().join("broken.yaml"), "matrix: [\n").unwrap();
    let o = mxisd(dir.path(), &["check-config", "-c", "broken.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("not valid YAML"), "{:?}", text(&o));

    let o = mxisd(dir.path(), &["check-config", "-c", "missing.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("cannot read the file"),
        "{:?}",
        text(&o)
    );

    // The shipped example is valid.
    std::fs::write(dir.path().join("example.yaml"), mxisd::config::EXAMPLE).unwrap();
    let o = mxisd(dir.path(), &["check-config", "-c", "example.yaml"]);
    assert!(o.status.success(), "{:?}", text(&o));
}

/// A start-up failure: non-zero exit, one error line naming the cause.
fn assert_start_fails(dir: &Path, yaml: &str, expected: &str) {
    std::fs::write(dir.join("c.yaml"), yaml).unwrap();
    let o = Command::new(BIN)
        .args(["run", "-c", "c.yaml"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = text(&o).1;
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{err}");
    assert!(
        error_lines[0].contains(expected),
        "{expected:?} not in {err}"
    );
}

#[test]
fn start_up_failures_are_clear_and_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    assert_start_fails(
        d,
        &format!("matrix:\n  domain: example.org\nstorage:\n  path: s1\nserver:\n  port: {port}\n  admin:\n    port: {}\n", free_port()),
        &format!("cannot listen on 127.0.0.1:{port}"),
    );

    // Unreadable key file: left exactly as it was.
    std::fs::create_dir_all(d.join("keys/regular/ed25519")).unwrap();
    std::fs::write(
        d.join("keys/current"),
        r#"{"type":"regular","algo":"ed25519","serial":"0"}"#,
    )
    .unwrap();
    std::fs::write(d.join("keys/regular/ed25519/0"), "corrupt").unwrap();
    assert_start_fails(
        d,
        &format!("matrix:\n  domain: example.org\nstorage:\n  path: s2\nkey:\n  path: keys\nserver:\n  port: {}\n  admin:\n    port: {}\n", free_port(), free_port()),
        "is not a valid key file",
    );
    assert_eq!(
        std::fs::read_to_string(d.join("keys/regular/ed25519/0")).unwrap(),
        "corrupt"
    );

    // State directory that cannot be created (a file is in the way).
    std::fs::write(d.join("blocker"), "").unwrap();
    assert_start_fails(
        d,
        &format!("matrix:\n  domain: example.org\nstorage:\n  path: blocker/state\nserver:\n  port: {}\n  admin:\n    port: {}\n", free_port(), free_port()),
        "blocker/state",
    );

    // Invalid config: exit 2, every problem listed.
    std::fs::write(d.join("c.yaml"), "server:\n  port: -1\n").unwrap();
    let o = mxisd(d, &["run", "-c", "c.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o).1;
    assert!(
        err.contains("matrix.domain: required") && err.contains("server.port"),
        "{err}"
    );
}

#[test]
fn healthcheck_fails_when_nothing_answers_and_keys_show_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let o = mxisd(
        dir.path(),
        &[
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{port}/status"),
            "--timeout",
            "2",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("unreachable"), "{:?}", text(&o));
    let o = mxisd(dir.path(), &["keys", "show"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("mxisd run` creates one"),
        "{:?}",
        text(&o)
    );
    let o = mxisd(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
}
