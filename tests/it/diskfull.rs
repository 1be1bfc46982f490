//! A full disk under the store: writes get a clear 503 with Retry-After, reads and the
//! public status go on (200, `READ_ONLY`), writes resume by themselves once space is
//! freed, and a start on a full disk serves read-only instead of exiting. The disk is
//! a small tmpfs mounted for the test (the test runs as root, as `tests/run.sh` does).

use crate::common::TestServer;
use serde_json::{json, Value};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A 16 MiB tmpfs, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount not found: install util-linux (apt-get install mount)");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it and needs root (run tests/run.sh as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Writes a file until the disk is full, twice a moment apart (a server that just
    /// stopped may still free some of its files).
    fn fill(&self) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .unwrap();
        let chunk = vec![7u8; 4096];
        for _ in 0..2 {
            while file.write_all(&chunk).is_ok() {}
            let _ = file.sync_all();
            std::thread::sleep(Duration::from_millis(300));
        }
        while file.write_all(&chunk[..512]).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn binding(name: &str) -> Value {
    json!({"medium": "email", "address": format!("{name}@example.org"), "mxid": format!("@{name}:example.org")})
}

async fn lookup(s: &TestServer, name: &str) -> Option<String> {
    let r = s
        .get(&format!(
            "/_matrix/identity/api/v1/lookup?medium=email&address={name}%40example.org"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["mxid"].as_str().map(str::to_owned)
}

async fn health(s: &TestServer) -> String {
    let r = s.get("/status").await;
    assert_eq!(
        r.status, 200,
        "the public status while reads work: {}",
        r.body
    );
    r.body["status"]["health"].as_str().unwrap().to_owned()
}

/// Imports `count` bindings `{prefix}{i}@example.org`.
async fn import(s: &TestServer, prefix: &str, count: usize) -> crate::common::Resp {
    let tsv: String = (0..count)
        .map(|i| format!("email\t{prefix}{i}@example.org\t@{prefix}{i}:example.org\n"))
        .collect();
    s.send(
        s.admin_request(reqwest::Method::POST, "/_mxisd/admin/v1/bindings/import")
            .header("content-type", "text/tab-separated-values")
            .body(tsv),
    )
    .await
}

/// Every binding of [`import`] answers a v1 bulk lookup, twice over.
async fn assert_all_found(s: &TestServer, prefix: &str, count: usize) {
    let threepids: Vec<Value> = (0..count)
        .map(|i| json!(["email", format!("{prefix}{i}@example.org")]))
        .collect();
    for _ in 0..2 {
        let r = s
            .post_json(
                "/_matrix/identity/api/v1/bulk_lookup",
                &json!({ "threepids": threepids }),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["threepids"].as_array().unwrap().len(), count);
    }
}

/// A write refused for lack of space: 503, Retry-After, a Matrix error saying so.
fn assert_full(r: &crate::common::Resp) {
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["errcode"], "M_UNKNOWN");
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("storage is full"),
        "{}",
        r.body
    );
    assert!(r.headers.get("retry-after").is_some(), "no Retry-After");
}

/// Binds `name` until it works (the store re-checks the disk every 5 s).
async fn bind_when_writable(s: &TestServer, name: &str) {
    for _ in 0..60 {
        let r = s
            .admin_post("/_mxisd/admin/v1/bindings", &binding(name))
            .await;
        if r.status == 200 {
            return;
        }
        assert_full(&r);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("writes did not resume within 30 s of freeing the disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_store_read_only_and_it_recovers_by_itself() {
    let disk = SmallDisk::mount();
    let state = disk.path().join("state");
    let yaml = format!(
        "matrix:\n  domain: example.org\nstorage:\n  path: {}\n",
        state.display()
    );
    let s = TestServer::start_raw(tempfile::tempdir().unwrap(), &yaml).await;
    let r = s
        .admin_post("/_mxisd/admin/v1/bindings", &binding("a1"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(import(&s, "p", 2_000).await.status, 200);

    disk.fill();
    // A bulk import runs out of room; from then on every write is refused clearly.
    assert_full(&import(&s, "u", 30_000).await);
    assert_full(
        &s.admin_post("/_mxisd/admin/v1/bindings", &binding("b1"))
            .await,
    );
    // Reads go on (every one of them: sled's own reads may write, so they are served
    // from a copy), and the public status keeps the node in a load balancer.
    assert_eq!(lookup(&s, "a1").await.as_deref(), Some("@a1:example.org"));
    assert_all_found(&s, "p", 2_000).await;
    assert_eq!(health(&s).await, "READ_ONLY");
    let admin = s.admin_get("/_mxisd/admin/v1/status").await;
    assert!(
        admin.body["problems"].to_string().contains("read-only"),
        "{}",
        admin.body
    );

    // Space returns: writes resume without a restart.
    disk.free();
    bind_when_writable(&s, "d2").await;
    assert_eq!(health(&s).await, "OK");
    assert_eq!(lookup(&s, "d2").await.as_deref(), Some("@d2:example.org"));
    assert_eq!(lookup(&s, "b1").await, None, "a refused write never landed");
    let dir = s.stop().await;

    // A start on a full disk serves what the store holds, read-only.
    disk.fill();
    let s = TestServer::start_raw(dir, &yaml).await;
    assert_eq!(health(&s).await, "READ_ONLY");
    assert_eq!(lookup(&s, "d2").await.as_deref(), Some("@d2:example.org"));
    assert_full(
        &s.admin_post("/_mxisd/admin/v1/bindings", &binding("e1"))
            .await,
    );
    disk.free();
    bind_when_writable(&s, "e2").await;
    assert_eq!(health(&s).await, "OK");
    let dir = s.stop().await;

    // Everything acknowledged is there after a plain restart.
    let s = TestServer::start_raw(dir, &yaml).await;
    for name in ["a1", "d2", "e2"] {
        assert_eq!(
            lookup(&s, name).await,
            Some(format!("@{name}:example.org")),
            "{name}"
        );
    }
    assert_eq!(lookup(&s, "e1").await, None);
    s.stop().await;
}
