//! Operations: Prometheus metrics, the detailed status and `mxisd healthcheck`, backup
//! under load and restore, and store schema upgrades and refusals, through the real
//! listeners and the real binary.

use crate::cli::{mxisd, text, Running};
use crate::common::{base_yaml, TestServer};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const V1_LOOKUP: &str = "/_matrix/identity/api/v1/lookup";

async fn metrics(s: &TestServer) -> String {
    let r = s
        .client
        .get(format!("{}/metrics", s.metrics))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

async fn v1_lookup(s: &TestServer, address: &str) -> Value {
    let r = s
        .get(&format!("{V1_LOOKUP}?medium=email&address={address}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.get("mxid").cloned().unwrap_or(Value::Null)
}

#[tokio::test]
async fn metrics_count_by_route_template_and_status_has_every_part() {
    let dir = tempfile::tempdir().unwrap();
    // One source that works and one that fails (its file is missing).
    let extra = format!(
        "memory:\n  enabled: true\n  identities:\n    - username: mem\n      displayName: Mem\n      threepids:\n        - medium: email\n          address: mem@example.org\nfile:\n  enabled: true\n  path: {}\n  sync:\n    interval: 1h\n",
        dir.path().join("missing.yaml").display()
    );
    let s = TestServer::start_in(dir, &extra).await;
    // Both sources have run once at start, and the index has taken the user in (it is
    // updated just after the run's status is recorded).
    let mut status = Value::Null;
    for _ in 0..200 {
        status = s.admin_get("/_mxisd/admin/v1/status").await.body;
        let ran = status["sync"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["state"] != "never run"));
        if ran && status["index"]["entries"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    // The memory run is over (its status is recorded before the index is updated, and
    // sync runs on an idle-priority thread that a busy machine makes wait).
    let counted = "mxisd_sync_runs_total{source=\"memory\",result=\"ok\"} 1";
    for _ in 0..800 {
        if has_line(&metrics(&s).await, counted) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(has_line(&metrics(&s).await, counted));

    // The detailed status: every part, and the failing source as a problem.
    assert_eq!(status["status"]["health"], "DEGRADED", "{status}");
    assert_eq!(status["store"]["schema_version"], 1);
    assert_eq!(status["index"]["stale"], false);
    assert_eq!(status["index"]["entries"], 1, "{status}");
    assert_eq!(
        status["outbox"],
        json!({"pending": 0, "failed": 0, "oldest_pending_ms": null})
    );
    let sources = status["sync"].as_array().unwrap();
    let by_name = |n: &str| sources.iter().find(|x| x["source"] == n).unwrap().clone();
    assert_eq!(by_name("memory")["state"], "ok");
    assert_eq!(by_name("memory")["bindings"], 1);
    assert_eq!(by_name("file")["state"], "failing");
    let problems = status["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{status}");
    assert!(problems[0]
        .as_str()
        .unwrap()
        .starts_with("sync source file: last run failed"));
    // The same on /status of the admin listener; the public /status stays short.
    let plain = s.admin_get("/status").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body["problems"], status["problems"]);
    let public = s.get("/status").await;
    assert_eq!(public.body["status"]["health"], "OK");
    assert!(public.body.get("problems").is_none() && public.body.get("sync").is_none());

    // Requests: templates, never raw paths; junk shares one label.
    assert_eq!(s.get("/_matrix/identity/v2").await.status, 200);
    assert_eq!(
        s.get("/_matrix/identity/v2/pubkey/ed25519:0").await.status,
        200
    );
    assert_eq!(
        s.get("/_matrix/identity/v2/pubkey/ed25519:nope")
            .await
            .status,
        404
    );
    for junk in ["/wp-login.php", "/_matrix/identity/v2/zz1", "/a/b/c/d"] {
        assert_eq!(s.get(junk).await.status, 404);
    }
    assert_eq!(v1_lookup(&s, "mem@example.org").await, "@mem:example.org");
    assert_eq!(v1_lookup(&s, "nobody@example.org").await, Value::Null);
    let r = s
        .post_json(
            "/_matrix/identity/api/v1/bulk_lookup",
            &json!({"threepids": [["email", "mem@example.org"], ["email", "x@example.org"], ["email", "y@example.org"]]}),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    // The public listener has no /metrics.
    assert_eq!(s.get("/metrics").await.status, 404);

    let text = metrics(&s).await;
    let public = |route: &str, status: &str, n: u32| {
        format!("mxisd_http_requests_total{{listener=\"public\",route=\"{route}\",status=\"{status}\"}} {n}")
    };
    for line in [
        public("/_matrix/identity/v2", "2xx", 1),
        public("/_matrix/identity/v2/pubkey/{keyId}", "2xx", 1),
        public("/_matrix/identity/v2/pubkey/{keyId}", "4xx", 1),
        public("unmatched", "4xx", 3),
        public("/_matrix/identity/api/v1/lookup", "2xx", 2),
        public("/_matrix/identity/api/v1/bulk_lookup", "2xx", 1),
        "mxisd_lookup_entries_total{kind=\"v1\",result=\"hit\"} 2".into(),
        "mxisd_lookup_entries_total{kind=\"v1\",result=\"miss\"} 3".into(),
        "mxisd_lookup_entries_total{kind=\"sha256\",result=\"hit\"} 0".into(),
        "mxisd_sync_runs_total{source=\"memory\",result=\"ok\"} 1".into(),
        "mxisd_sync_runs_total{source=\"file\",result=\"error\"} 1".into(),
        "mxisd_sync_failing{source=\"file\"} 1".into(),
        "mxisd_sync_failing{source=\"memory\"} 0".into(),
        "mxisd_sync_bindings{source=\"memory\"} 1".into(),
        "mxisd_outbox_items{state=\"pending\"} 0".into(),
        "mxisd_outbox_items{state=\"failed\"} 0".into(),
        "mxisd_notifications_total{medium=\"email\",result=\"sent\"} 0".into(),
        "mxisd_store_up 1".into(),
        "mxisd_directory_entries 1".into(),
        "mxisd_directory_index_stale 0".into(),
        format!(
            "mxisd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(has_line(&text, &line), "missing {line}\n{text}");
    }
    assert!(text.contains("mxisd_store_size_bytes "));
    assert!(text.contains(
        "mxisd_http_request_duration_seconds_count{listener=\"public\",route=\"/_matrix/identity/v2/pubkey/{keyId}\"} 2"
    ));
    // Nothing a client sent became a label.
    for raw in ["ed25519", "wp-login", "zz1", "/a/b", "nobody", "mem@"] {
        assert!(!text.contains(raw), "{raw} leaked into the metrics");
    }
    // Every sample line parses as `name{labels} number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample {line}");
    }
    // The scrapes themselves are counted on the admin listener.
    let again = metrics(&s).await;
    assert!(again.contains(
        "mxisd_http_requests_total{listener=\"admin\",route=\"/metrics\",status=\"2xx\"} "
    ));
}

#[test]
fn healthcheck_reports_problems_and_fails_only_when_strict_or_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("c.yaml"),
        "matrix:\n  domain: example.org\nstorage:\n  path: state\nfile:\n  enabled: true\n  path: missing.yaml\n",
    )
    .unwrap();
    let server = Running::start(d, &["run", "-c", "c.yaml"]);
    // The failing source shows up once its first run is over.
    let mut out = String::new();
    for _ in 0..200 {
        let o = server.cli(d, &["healthcheck", "-c", "c.yaml"]);
        assert!(o.status.success(), "{:?}", text(&o));
        out = text(&o).0;
        if out.starts_with("degraded") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(out.starts_with("degraded:"), "{out}");
    assert!(out.contains("sync source file: last run failed"), "{out}");
    let strict = server.cli(d, &["healthcheck", "-c", "c.yaml", "--strict"]);
    assert_eq!(strict.status.code(), Some(1), "{:?}", text(&strict));
    let (status, _) = server.stop_with("-TERM");
    assert!(status.success());
    let down = mxisd(d, &["healthcheck", "-c", "c.yaml", "--timeout", "2"]);
    assert_eq!(down.status.code(), Some(1));
}

/// Backs up while four writers bind addresses as fast as they can, restores the file
/// into a new place, and checks the copy is one moment of the store: everything
/// acknowledged before the backup started, and each binding's record and lookup index
/// agreeing (a batch cut in half would show as one without the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_is_consistent_and_restores() {
    let s = Arc::new(TestServer::start().await);
    let d = s.dir.path().to_owned();
    std::fs::write(d.join("c.yaml"), base_yaml(&d, "")).unwrap();
    for i in 0..200 {
        s.bind(
            "email",
            &format!("seed{i}@example.org"),
            &format!("@seed{i}:example.org"),
        )
        .await;
    }
    let public_key =
        s.get("/_matrix/identity/v2/pubkey/ed25519:0").await.body["public_key"].clone();

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, std::time::Instant)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (s, stop, acked) = (s.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut tried = Vec::new();
            // Bounded: at most 3000 binds per writer.
            for i in 0..3000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let address = format!("w{w}-{i}@example.org");
                tried.push(address.clone());
                let r = s
                    .admin_post(
                        "/_mxisd/admin/v1/bindings",
                        &json!({"medium": "email", "address": address, "mxid": format!("@w{w}x{i}:example.org")}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
                acked.lock().unwrap().push((address, std::time::Instant::now()));
            }
            tried
        }));
    }
    // Let the writers get going, then back up while they write.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let before_backup: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(a, _)| a.clone())
        .collect();
    let backup = tokio::task::spawn_blocking({
        let d = d.clone();
        move || mxisd(&d, &["backup", "-c", "c.yaml", "-o", "b.mxisd-backup"])
    })
    .await
    .unwrap();
    assert!(backup.status.success(), "{:?}", text(&backup));
    assert!(text(&backup).0.contains("(checked)"), "{:?}", text(&backup));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut tried = Vec::new();
    for w in writers {
        tried.extend(w.await.unwrap());
    }
    let during = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, t)| *t > started)
        .count();
    assert!(during > 0, "no write happened while the backup ran");
    assert!(before_backup.len() > 10, "the writers did not get going");
    let meta = std::fs::metadata(d.join("b.mxisd-backup")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    assert!(!d.join("b.mxisd-backup.partial").exists());

    // An existing output is not overwritten.
    let again = mxisd(&d, &["backup", "-c", "c.yaml", "-o", "b.mxisd-backup"]);
    assert!(!again.status.success());
    // Restore refuses while a server holds the target store.
    let busy = mxisd(
        &d,
        &["restore", "-c", "c.yaml", "--force", "b.mxisd-backup"],
    );
    assert!(!busy.status.success());
    assert!(
        text(&busy).1.contains("stop it before restoring"),
        "{:?}",
        text(&busy)
    );

    let s = Arc::into_inner(s).expect("writers still hold the server");
    let old = s.stop().await;

    // Into a new place.
    let new = tempfile::tempdir().unwrap();
    let n = new.path();
    std::fs::write(n.join("c.yaml"), base_yaml(n, "")).unwrap();
    std::fs::copy(old.path().join("b.mxisd-backup"), n.join("b.mxisd-backup")).unwrap();
    // A damaged copy is refused whole and leaves nothing behind.
    let mut damaged = std::fs::read(n.join("b.mxisd-backup")).unwrap();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 1;
    std::fs::write(n.join("damaged"), &damaged).unwrap();
    let bad = mxisd(n, &["restore", "-c", "c.yaml", "damaged"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).1.contains("checksum") || text(&bad).1.contains("backup"),
        "{:?}",
        text(&bad)
    );
    assert!(!n.join("state/store").exists() && !n.join("state/store.restoring").exists());
    damaged.truncate(mid);
    std::fs::write(n.join("cut"), &damaged).unwrap();
    assert!(!mxisd(n, &["restore", "-c", "c.yaml", "cut"])
        .status
        .success());
    assert!(!n.join("state/store").exists());

    let restored = mxisd(n, &["restore", "-c", "c.yaml", "b.mxisd-backup"]);
    assert!(restored.status.success(), "{:?}", text(&restored));
    // A second restore over it needs --force and keeps the replaced store.
    let twice = mxisd(n, &["restore", "-c", "c.yaml", "b.mxisd-backup"]);
    assert!(!twice.status.success());
    assert!(text(&twice).1.contains("--force"));

    let s = TestServer::start_in(new, "").await;
    assert_eq!(
        s.get("/_matrix/identity/v2/pubkey/ed25519:0").await.body["public_key"],
        public_key,
        "the signing key came back"
    );
    for i in 0..200 {
        assert_eq!(
            v1_lookup(&s, &format!("seed{i}@example.org")).await,
            format!("@seed{i}:example.org")
        );
    }
    for address in &before_backup {
        assert!(
            !v1_lookup(&s, address).await.is_null(),
            "{address} was acknowledged before the backup but is missing"
        );
    }
    let mut present = 0;
    for address in &tried {
        let by_lookup = v1_lookup(&s, address).await;
        let q = format!("/_mxisd/admin/v1/bindings?medium=email&address={address}");
        let record = s.admin_get(&q).await;
        assert_eq!(record.status, 200, "{}", record.body);
        let by_record = record.body["effective"]["mxid"].clone();
        assert_eq!(
            by_lookup, by_record,
            "{address}: lookup and record disagree"
        );
        present += usize::from(!by_lookup.is_null());
    }
    assert!(present >= before_backup.len() && present <= tried.len());
    s.stop().await;

    // With the server stopped, the backup reads the store directly.
    let offline = mxisd(
        old.path(),
        &["backup", "-c", "c.yaml", "-o", "offline.mxisd-backup"],
    );
    assert!(offline.status.success(), "{:?}", text(&offline));
    assert!(text(&offline).1.contains("reading the store directly"));
}

#[tokio::test]
async fn newer_store_schema_is_refused_and_older_is_migrated() {
    let s = TestServer::start().await;
    s.bind("email", "keep@example.org", "@keep:example.org")
        .await;
    let dir = s.stop().await;
    let d = dir.path();
    std::fs::write(
        d.join("c.yaml"),
        base_yaml(d, "server:\n  port: 0\n  metrics:\n    port: 0\n"),
    )
    .unwrap();
    let store = d.join("state/store");
    let current = mxisd::store::migrations::CURRENT;

    // Written by a newer mxisd: this one refuses to start and to touch it.
    mxisd::store::Store::stamp_schema_version(&store, current + 1).unwrap();
    let o = mxisd(d, &["run", "-c", "c.yaml"]);
    assert!(!o.status.success());
    let err = text(&o).1;
    assert!(
        err.contains(&format!(
            "schema version {}, newer than this mxisd supports ({current})",
            current + 1
        )),
        "{err}"
    );
    // Its backup cannot be restored by this mxisd either.
    let b = mxisd(
        d,
        &[
            "backup",
            "--offline",
            "-c",
            "c.yaml",
            "-o",
            "newer.mxisd-backup",
        ],
    );
    assert!(b.status.success(), "{:?}", text(&b));
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("c.yaml"), base_yaml(other.path(), "")).unwrap();
    let r = mxisd(
        other.path(),
        &[
            "restore",
            "-c",
            "c.yaml",
            d.join("newer.mxisd-backup").to_str().unwrap(),
        ],
    );
    assert!(!r.status.success());
    assert!(
        text(&r).1.contains("newer than this mxisd supports"),
        "{:?}",
        text(&r)
    );
    assert!(!other.path().join("state/store").exists());

    // Written by an older mxisd (before the first layout step): migrated at start,
    // its data intact.
    mxisd::store::Store::stamp_schema_version(&store, 0).unwrap();
    let s = TestServer::start_in(dir, "").await;
    let status = s.admin_get("/_mxisd/admin/v1/status").await.body;
    assert_eq!(status["store"]["schema_version"], current);
    assert_eq!(v1_lookup(&s, "keep@example.org").await, "@keep:example.org");
}
