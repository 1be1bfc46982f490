//! The real `mxisd` binary: run on the embedded default, check-config, keys, healthcheck,
//! status, and start-up failures (each a one-line error, non-zero exit, nothing
//! overwritten). Servers here listen on loopback ports picked by the test.

use crate::common::free_port;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mxisd");

pub(crate) fn mxisd(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

pub(crate) fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A running `mxisd run` child on ports it picked itself (port 0), read back from its
/// start-up log; killed on drop if still alive.
pub(crate) struct Running {
    child: Option<Child>,
    pub(crate) port: u16,
    pub(crate) metrics: u16,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Pulls the port of `addr=127.0.0.1:PORT` (text) or `"addr":"127.0.0.1:PORT"` (JSON)
/// out of a log line.
fn logged_port(line: &str) -> Option<u16> {
    let start = line
        .find("addr=")
        .map(|i| i + 5)
        .or_else(|| line.find("\"addr\":\"").map(|i| i + 8))?;
    let addr: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    addr.rsplit_once(':')?.1.parse().ok()
}

impl Running {
    pub(crate) fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_env(dir, args, &[])
    }

    fn start_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_command(Command::new(BIN), dir, args, env)
    }

    /// Runs the binary under `wrapper` (a command taking the program and its arguments
    /// after it, like `prlimit --nofile=256:256 --`).
    pub(crate) fn start_under(wrapper: &[&str], dir: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(wrapper[0]);
        command.args(&wrapper[1..]).arg(BIN);
        Self::start_command(command, dir, args, &[])
    }

    fn start_command(
        mut command: Command,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = command
            .args(args)
            .current_dir(dir)
            .env("MXISD_SERVER_PORT", "0")
            .env("MXISD_SERVER_METRICS_PORT", "0")
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<(bool, u16)>();
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(port) = logged_port(&line) {
                    let _ = tx.send((line.contains("metrics listener"), port));
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut r = Self {
            child: Some(child),
            port: 0,
            metrics: 0,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while r.port == 0 || r.metrics == 0 {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((true, p)) => r.metrics = p,
                Ok((false, p)) => r.port = p,
                Err(_) => {
                    if let Some(status) = r.child.as_mut().unwrap().try_wait().unwrap() {
                        panic!("mxisd exited early ({status}):\n{}", r.log.lock().unwrap());
                    }
                    assert!(
                        Instant::now() < deadline,
                        "mxisd did not report its ports:\n{}",
                        r.log.lock().unwrap()
                    );
                }
            }
        }
        r
    }

    /// Sends `signal`, then returns the exit status and everything logged.
    pub(crate) fn stop_with(mut self, signal: &str) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader thread drain what is left.
                std::thread::sleep(Duration::from_millis(100));
                let log = self.log.lock().unwrap().clone();
                return (status, log);
            }
            assert!(
                Instant::now() < deadline,
                "mxisd did not exit after {signal}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Everything logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends `signal` to the running server (which goes on running).
    pub(crate) fn signal(&self, signal: &str) {
        let id = self.child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill").args([signal, &id]).status().unwrap();
        assert!(ok.success());
    }

    /// Waits until the log holds `needle` `times` times (or fails after 30 s).
    pub(crate) fn wait_log(&self, needle: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.matches(needle).count() >= times {
                return log;
            }
            assert!(Instant::now() < deadline, "{needle:?} never logged:\n{log}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub(crate) fn terminate(self) -> (std::process::ExitStatus, String) {
        self.stop_with("-TERM")
    }

    /// CLI verbs pointed at this server (its public port; the admin socket is found
    /// from the config).
    pub(crate) fn cli(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("MXISD_SERVER_PORT", self.port.to_string())
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
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

pub(crate) fn http_get(port: u16, path: &str) -> (u16, serde_json::Value) {
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
    // The example directory answers lookups out of the box (synced at start).
    let mut found = serde_json::Value::Null;
    for _ in 0..200 {
        found = http_get(
            server.port,
            "/_matrix/identity/api/v1/lookup?medium=email&address=alice@example.org",
        )
        .1;
        if !found["mxid"].is_null() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert_eq!(found["mxid"], "@alice:localhost", "{found}");

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
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o)
            .0
            .lines()
            .any(|l| l.starts_with("signing key") && l.ends_with("ed25519:0")),
        "{:?}",
        text(&o)
    );
    let o = Command::new(BIN)
        .args(["healthcheck"])
        .current_dir(dir.path())
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
        .env("MXISD_SERVER_PORT", "0")
        .env("MXISD_SERVER_METRICS_PORT", "0")
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
    let request = lines
        .iter()
        .find(|l| l["message"] == "request" && l["path"] == "/_matrix/identity/v2/pubkey/isvalid")
        .unwrap_or_else(|| panic!("no request line: {log}"));
    let keys: Vec<&str> = request
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "timestamp",
        "level",
        "message",
        "listener",
        "method",
        "path",
        "status",
        "ms",
        "target",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected, "{request}");
    assert_eq!(
        (&request["level"], &request["listener"], &request["method"]),
        (&"INFO".into(), &"public".into(), &"GET".into())
    );
    assert_eq!(
        (&request["status"], &request["target"]),
        (&200.into(), &"mxisd::http".into())
    );
    assert!(request["ms"].as_f64().is_some(), "{request}");
    // The query string (where access tokens travel) is never logged.
    assert!(!log.contains("secret-looking"));
}

#[test]
fn text_request_lines_follow_the_levels_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let config = |app: &str| {
        format!("matrix:\n  domain: example.org\nstorage:\n  path: state\nlogging:\n  app: {app}\n")
    };
    std::fs::write(dir.path().join("mxisd.yaml"), config("info")).unwrap();
    let server = Running::start(dir.path(), &["run", "-c", "mxisd.yaml"]);
    let (code, _) = http_get(server.port, "/_matrix/identity/versions");
    assert_eq!(code, 200);
    let log = server.wait_log("path=\"/_matrix/identity/versions\"", 1);
    let line = log
        .lines()
        .find(|l| l.contains("/_matrix/identity/versions"))
        .unwrap();
    // `2026-12-07T03:50:54.892395Z  INFO mxisd::http: request listener="public" ...`
    let (time, rest) = line.split_once("  ").unwrap();
    assert_eq!(
        (time.len(), time.as_bytes()[10], time.ends_with('Z')),
        (27, b'T', true),
        "{line}"
    );
    let (fields, ms) = rest.rsplit_once(" ms=").unwrap();
    assert_eq!(
        fields,
        "INFO mxisd::http: request listener=\"public\" method=\"GET\" path=\"/_matrix/identity/versions\" status=200"
    );
    assert!(ms.parse::<f64>().is_ok(), "{line}");

    // Request lines are INFO: with mxisd's level at warn they stop, without a restart.
    // (The changed body limit only makes the reload say something at warn.)
    let quieter = config("warn") + "server:\n  maxBodySize: 2MiB\n";
    std::fs::write(dir.path().join("mxisd.yaml"), quieter).unwrap();
    server.signal("-HUP");
    server.wait_log("it needs a restart", 1);
    let _ = http_get(server.port, "/_matrix/identity/v2/pubkey/ed25519:0");
    let _ = http_get(server.port, "/_matrix/identity/v2");
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    assert!(!log.contains("pubkey/ed25519:0"), "{log}");
    assert!(!log.contains("path=\"/_matrix/identity/v2\""), "{log}");
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
        &format!("matrix:\n  domain: example.org\nstorage:\n  path: s1\nserver:\n  port: {port}\n  metrics:\n    port: 0\n"),
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
        "matrix:\n  domain: example.org\nstorage:\n  path: s2\nkey:\n  path: keys\nserver:\n  port: 0\n  metrics:\n    port: 0\n",
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
        "matrix:\n  domain: example.org\nstorage:\n  path: blocker/state\nserver:\n  port: 0\n  metrics:\n    port: 0\n",
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
    // Without a configuration anywhere, verbs say where they looked (only `run` falls
    // back to the embedded default).
    if !Path::new("/etc/mxisd/mxisd.yaml").exists() {
        let o = mxisd(dir.path(), &["keys", "show"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            text(&o)
                .1
                .contains("no configuration: give one with -c FILE, set MXISD_CONFIG"),
            "{:?}",
            text(&o)
        );
    }
    std::fs::write(
        dir.path().join("c.yaml"),
        "matrix:\n  domain: example.org\nstorage:\n  path: state\n",
    )
    .unwrap();
    let o = mxisd(dir.path(), &["keys", "show", "-c", "c.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("mxisd run` creates one"),
        "{:?}",
        text(&o)
    );
    let o = mxisd(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn bindings_verbs_and_import_then_crash_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Running::start(d, &["run"]);

    let o = server.cli(
        d,
        &[
            "bindings",
            "add",
            "email",
            "Dana@Example.org",
            "@dana:localhost",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let o = server.cli(d, &["bindings", "show", "email", "dana@example.org"]);
    assert!(
        text(&o)
            .0
            .starts_with("lookups of email dana@example.org answer @dana:localhost (origin admin)"),
        "{:?}",
        text(&o)
    );
    let o = server.cli(
        d,
        &[
            "bindings",
            "add",
            "email",
            "not-an-address",
            "@dana:localhost",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("M_INVALID_PARAM"), "{:?}", text(&o));

    let mut file = String::new();
    for i in 0..1_000 {
        file.push_str(&format!("msisdn\t+1 202 555 {i:04}\t@phone{i}:localhost\n"));
    }
    std::fs::write(d.join("bindings.tsv"), &file).unwrap();
    let o = server.cli(d, &["bindings", "import", "bindings.tsv"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o)
            .0
            .starts_with("imported 1000 bindings from bindings.tsv"),
        "{:?}",
        text(&o)
    );
    std::fs::write(
        d.join("bad.tsv"),
        "email\tx@y.z\t@x:localhost\nbogus line\n",
    )
    .unwrap();
    let o = server.cli(d, &["bindings", "import", "bad.tsv"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("line 2:"), "{:?}", text(&o));
    let o = server.cli(d, &["bindings", "import", "missing.tsv"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("cannot read missing.tsv"),
        "{:?}",
        text(&o)
    );

    let o = server.cli(d, &["bindings", "remove", "email", "x@y.z"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = server.cli(d, &["hashing", "rotate"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("now generation 2"), "{:?}", text(&o));

    // Everything acknowledged survives a crash (SIGKILL: no shutdown, no final flush).
    let (status, _) = server.stop_with("-KILL");
    assert!(!status.success());
    let server = Running::start(d, &["run"]);
    let (_, body) = http_get(
        server.port,
        "/_matrix/identity/api/v1/lookup?medium=email&address=dana%40example.org",
    );
    assert_eq!(body["mxid"], "@dana:localhost");
    let (_, body) = http_get(
        server.port,
        "/_matrix/identity/api/v1/lookup?medium=msisdn&address=12025550999",
    );
    assert_eq!(body["mxid"], "@phone999:localhost");
    let (_, body) = http_get(
        server.port,
        "/_matrix/identity/api/v1/lookup?medium=email&address=x%40y.z",
    );
    assert_eq!(body, serde_json::json!({}));
    let (status, _) = server.terminate();
    assert!(status.success());

    // Verbs without a running server say what to do.
    let o = mxisd(d, &["bindings", "show", "email", "a@b.c"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("is mxisd running"), "{:?}", text(&o));
}

/// True when `text` holds a run of 13 digits: a Unix time in milliseconds.
fn has_epoch_ms(text: &str) -> bool {
    let mut run = 0;
    for c in text.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 13 {
            return true;
        }
    }
    false
}

/// A CLI verb run like `Running::cli`, with more environment and standard input.
fn cli_with(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("MXISD_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_cli_speaks_to_people_and_to_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Progress lines every millisecond, so that even a short import logs some.
    let server = Running::start_env(d, &["run"], &[("MXISD_PROGRESS_INTERVAL_MS", "1")]);

    // -h and -V are --help and --version.
    let o = mxisd(d, &["-V"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        text(&o).0.trim(),
        format!("mxisd {}", env!("CARGO_PKG_VERSION"))
    );
    let o = mxisd(d, &["-h"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("Usage: mxisd"), "{:?}", text(&o));
    let o = mxisd(d, &["status", "-h"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("--json"), "{:?}", text(&o));

    // status: a headline, then aligned fields and tables; no Rust, no epoch ms.
    let o = server.cli(d, &["status"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.lines().next().unwrap().starts_with(&format!(
            "mxisd {} serving localhost: ",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    assert!(out.contains("\nstore          ok: schema "), "{out}");
    // The sources' table: its columns start where their headings do.
    let lines: Vec<&str> = out.lines().collect();
    let header = lines.iter().position(|l| l.starts_with("SOURCE")).unwrap();
    assert_eq!(
        lines[header].split_whitespace().collect::<Vec<_>>(),
        ["SOURCE", "STATE", "LAST", "SUCCESS", "USERS", "BINDINGS", "TOOK"],
        "{out}"
    );
    let users_at = lines[header].find("USERS").unwrap();
    assert!(lines[header + 1].starts_with("memory "), "{out}");
    assert!(lines[header + 1][..users_at].ends_with("  "), "{out}");
    assert!(
        lines[header + 1][users_at..].starts_with(|c: char| c.is_ascii_digit()),
        "{out}"
    );
    let rust_words = ["Ok", "Err", "Some", "None"];
    assert!(
        !out.split(|c: char| !c.is_alphanumeric())
            .any(|w| rust_words.contains(&w)),
        "{out}"
    );
    assert!(!has_epoch_ms(&out), "{out}");
    // --json for scripts, in the server's shape.
    let o = server.cli(d, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(status["store"]["ok"], true, "{status}");
    assert_eq!(status["key_id"], "ed25519:0");

    // `mxisd status | head -1`: the reader goes away; mxisd exits quietly.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(BIN)
        .args(["status"])
        .current_dir(d)
        .env_remove("RUST_LOG")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(!text(&o).1.contains("panicked"), "{}", text(&o).1);

    // The configuration through $MXISD_CONFIG, from a directory with none of its own.
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let conf = d.join("via-env.yaml");
    std::fs::write(
        &conf,
        format!(
            "matrix:\n  domain: localhost\nstorage:\n  path: {}\n",
            d.join("mxisd-data").display()
        ),
    )
    .unwrap();
    let conf = conf.display().to_string();
    let o = cli_with(
        &elsewhere,
        &["sync", "status"],
        &[("MXISD_CONFIG", &conf)],
        "",
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("memory  ok"), "{:?}", text(&o));
    if !Path::new("/etc/mxisd/mxisd.yaml").exists() {
        let o = cli_with(&elsewhere, &["sync", "status"], &[], "");
        assert_eq!(o.status.code(), Some(1));
        assert!(text(&o).1.contains("set MXISD_CONFIG"), "{:?}", text(&o));
    }

    // bindings import - reads standard input; counts agree with their number; nothing
    // animated when not on a terminal, only the summary.
    let o = cli_with(
        d,
        &["bindings", "import", "-"],
        &[],
        "email\tone@example.org\t@one:localhost\n",
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.starts_with("imported 1 binding from standard input in "),
        "{out}"
    );
    assert!(out.ends_with(" (1 line, 0 skipped)\n"), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        !out.contains('\r') && !err.contains('\r'),
        "{out:?} {err:?}"
    );
    let many: String = (0..20_000)
        .map(|i| format!("email\tp{i}@example.org\t@p{i}:localhost\n"))
        .collect();
    let o = cli_with(d, &["bindings", "import", "-"], &[], &many);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.starts_with("imported 20000 bindings from standard input in "),
        "{out}"
    );
    assert!(
        !out.contains('\r') && !err.contains('\r'),
        "{out:?} {err:?}"
    );
    let o = server.cli(d, &["bindings", "import", "-", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(report["lines"], 0, "{report}");

    // Long work reports in one line when done.
    let o = server.cli(d, &["hashing", "rotate"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o).0.starts_with("rotated the lookup pepper in "),
        "{:?}",
        text(&o)
    );
    let o = server.cli(d, &["reindex"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o).0.starts_with("rebuilt the directory index: "),
        "{:?}",
        text(&o)
    );
    let o = server.cli(d, &["sync"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.starts_with("memory: "), "{out}");
    assert!(!has_epoch_ms(&out) && !out.contains('\r'), "{out}");
    let o = server.cli(d, &["sync", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("the sources are: memory"),
        "{:?}",
        text(&o)
    );

    // A backup named by a readable UTC time.
    let o = server.cli(d, &["backup"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mxisd-backup"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let stamp = names[0]
        .strip_prefix("mxisd-")
        .and_then(|n| n.strip_suffix("Z.mxisd-backup"))
        .unwrap_or_else(|| panic!("{names:?}"));
    // 2026-12-04T140311
    let b = stamp.as_bytes();
    assert_eq!(b.len(), 17, "{stamp}");
    assert!(b[4] == b'-' && b[7] == b'-' && b[10] == b'T', "{stamp}");

    // The server logged where the import was while it ran.
    let (status, log) = server.terminate();
    assert!(status.success());
    assert!(log.contains("bindings import: importing "), "{log}");
}

#[test]
fn check_config_shows_each_source_and_files_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sources.yaml"),
        "matrix:\n  domain: example.org\nstorage:\n  path: data\n\
         file:\n  enabled: true\n  path: users-missing.yaml\n  sync:\n    interval: 15m\n\
         ldap:\n  enabled: true\n  connection:\n    host: ldap.example.org\n    port: 389\n    baseDNs: ['ou=people,dc=example,dc=org']\n  attribute:\n    uid:\n      type: uid\n      value: uid\n\
         sql:\n  enabled: true\n  type: postgresql\n  connection: //db.example.org/users\n  sync:\n    query: SELECT mxid, medium, address FROM people\n\
         rest:\n  enabled: true\n  sync:\n    url: https://users.example.org/list\n\
         threepid:\n  medium:\n    email:\n      identity:\n        from: id@example.org\n      connectors:\n        smtp:\n          host: smtp.example.org\n          port: 465\n          tls: 3\n",
    )
    .unwrap();
    let o = mxisd(dir.path(), &["check-config", "-c", "sources.yaml"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    for expected in [
        "1 file(s) it names cannot be read",
        "file.path: ",
        "users-missing.yaml: No such file",
        "file.sync              at start, then every 15m",
        "ldap.connection        ldap://ldap.example.org:389",
        "ldap.baseDNs           ou=people,dc=example,dc=org",
        "ldap.filter",
        "ldap.attribute.uid     uid (as a localpart)",
        "sql.driver             PostgreSQL",
        "sql.query              SELECT mxid, medium, address FROM people",
        "rest.url               https://users.example.org/list",
        "smtp smtp.example.org:465 (TLS), from id@example.org",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    assert!(!out.contains("Implicit"), "{out}");
    std::fs::write(dir.path().join("users-missing.yaml"), "[]\n").unwrap();
    let o = mxisd(dir.path(), &["check-config", "-c", "sources.yaml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("sources.yaml: valid\n"),
        "{:?}",
        text(&o)
    );
}

/// A lost index is rebuilt at start from the store while lookups are served; the log
/// says so, what searches answer meanwhile, and how long the rebuild took. A first
/// start, with nobody listed yet, says nothing of a rebuild.
#[test]
fn a_lost_index_is_rebuilt_at_start_and_the_log_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("users.yaml"),
        "- username: alice\n  displayName: Alice Liddell\n  threepids:\n    - {medium: email, address: alice@example.org}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("mxisd.yaml"),
        "matrix:\n  domain: example.org\nstorage:\n  path: state\nfile:\n  enabled: true\n  path: users.yaml\ndirectory:\n  exclude:\n    homeserver: true\n",
    )
    .unwrap();
    let args = ["run", "-c", "mxisd.yaml"];
    let lookup = "/_matrix/identity/api/v1/lookup?medium=email&address=alice%40example.org";
    let until_found = |server: &Running| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = server.cli(d, &["search", "alice", "--json", "-c", "mxisd.yaml"]);
            if text(&o).0.contains("@alice:example.org") {
                return;
            }
            assert!(Instant::now() < deadline, "never found: {:?}", text(&o));
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let server = Running::start(d, &args);
    until_found(&server);
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    assert!(!log.contains("rebuilding"), "{log}");

    std::fs::remove_dir_all(d.join("state/index")).unwrap();
    let server = Running::start(d, &args);
    let (code, body) = http_get(server.port, lookup);
    assert_eq!(
        (code, &body["mxid"]),
        (200, &serde_json::json!("@alice:example.org"))
    );
    let log = server.wait_log("directory index built", 1);
    assert!(
        log.contains("directory index missing or unreadable: rebuilding it from the store; lookups are served meanwhile, searches find nobody until it is built"),
        "{log}"
    );
    let built = log
        .lines()
        .find(|l| l.contains("directory index built"))
        .unwrap();
    assert!(
        built.contains("entries=1") && built.contains("took_ms="),
        "{built}"
    );
    until_found(&server);
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
}
