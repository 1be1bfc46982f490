//! The README's reverse-proxy example, run for real: the ```caddy block of README.md
//! (read from the file, so the test keeps the README honest) with a real Caddy in front
//! of a test server and a stand-in homeserver on loopback. Identity, directory-search
//! and profile paths must reach mxisd; every other Matrix path the homeserver.

use crate::common::{free_port, TestServer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use warp::Filter;

fn caddy_binary() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join("caddy");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "caddy is not installed: this test runs the README's Caddy example. Install it \
         with `apt-get install caddy` (tests/run.sh does this)"
    );
}

/// The one ```caddy block of README.md.
fn readme_caddy_block() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let fence = "```caddy\n";
    assert_eq!(
        readme.matches(fence).count(),
        1,
        "one Caddy example in README"
    );
    let start = readme.find(fence).unwrap() + fence.len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_owned()
}

/// The example with its names and ports replaced by the test's, behind global options
/// that keep Caddy to itself (no admin endpoint, no certificates, state in `dir`).
fn caddyfile(block: &str, caddy: u16, mxisd: u16, homeserver: u16) -> String {
    let mut text = block.to_owned();
    for (from, to) in [
        (
            "matrix.example.org {",
            format!("http://127.0.0.1:{caddy} {{"),
        ),
        ("127.0.0.1:8090", format!("127.0.0.1:{mxisd}")),
        ("127.0.0.1:8008", format!("127.0.0.1:{homeserver}")),
    ] {
        assert!(
            text.contains(from),
            "the README's Caddy example has no {from:?}"
        );
        text = text.replace(from, &to);
    }
    format!("{{\n    admin off\n    auto_https off\n}}\n{text}")
}

/// Caddy, stopped on drop.
struct Caddy(Child);

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A homeserver stand-in that answers every request with its path and Host.
async fn homeserver() -> (u16, tokio::task::JoinHandle<()>) {
    let route = warp::path::full()
        .and(warp::header::optional::<String>("host"))
        .map(|path: warp::path::FullPath, host: Option<String>| {
            warp::reply::json(&json!({"homeserver": path.as_str(), "host": host}))
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        warp::serve(route).incoming(listener).run().await;
    });
    (port, task)
}

struct Answer {
    status: u16,
    body: Value,
    /// mxisd puts CORS headers on every answer; the stand-in homeserver none.
    from_mxisd: bool,
}

async fn ask(client: &reqwest::Client, method: reqwest::Method, url: &str) -> Answer {
    let mut request = client.request(method.clone(), url);
    if method == reqwest::Method::POST {
        request = request
            .header("content-type", "application/json")
            .body("{\"search_term\": \"alice\"}");
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let from_mxisd = r.headers().contains_key("access-control-allow-origin");
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        body,
        from_mxisd,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_caddy_example_routes_each_path_to_the_right_server() {
    let caddy_bin = caddy_binary();
    let (hs_port, hs_task) = homeserver().await;
    let s = TestServer::start_with(&format!(
        "memory:\n  enabled: true\n  identities:\n    - username: alice\n      displayName: Alice Liddell\n\
         dns:\n  overwrite:\n    homeserver:\n      client:\n        - name: matrix.example.org\n          value: http://127.0.0.1:{hs_port}\n"
    ))
    .await;
    let mxisd_port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();
    let caddy_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("Caddyfile");
    std::fs::write(
        &config,
        caddyfile(&readme_caddy_block(), caddy_port, mxisd_port, hs_port),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("caddy.log")).unwrap();
    let mut caddy = Caddy(
        Command::new(caddy_bin)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&config)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{caddy_port}");
    let client = s.client.clone();
    let mut up = false;
    for _ in 0..400 {
        if let Some(status) = caddy.0.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("caddy.log")).unwrap_or_default();
            panic!("caddy exited ({status}):\n{log}");
        }
        if client
            .get(format!("{base}/_matrix/identity/v2"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(up, "caddy did not start listening");
    use reqwest::Method as M;

    // Identity API: mxisd.
    let r = ask(&client, M::GET, &format!("{base}/_matrix/identity/v2")).await;
    assert!(
        r.from_mxisd && r.status == 200 && r.body == json!({}),
        "{}",
        r.body
    );
    let r = ask(
        &client,
        M::GET,
        &format!("{base}/_matrix/identity/versions"),
    )
    .await;
    assert!(r.from_mxisd && r.body["versions"].is_array(), "{}", r.body);
    // Directory search, both versions: mxisd (no token: its own refusal).
    for version in ["v3", "r0"] {
        let url = format!("{base}/_matrix/client/{version}/user_directory/search");
        let r = ask(&client, M::POST, &url).await;
        assert!(r.from_mxisd, "{version}: {}", r.body);
        assert_eq!(r.body["errcode"], "M_MISSING_TOKEN", "{}", r.body);
    }
    // Profiles: mxisd, which asks the homeserver and fills in the directory's name
    // (polled: the directory is filled right after the start).
    let profile = format!("{base}/_matrix/client/v3/profile/%40alice%3Aexample.org");
    let mut filled = Value::Null;
    for _ in 0..200 {
        let r = ask(&client, M::GET, &profile).await;
        assert!(r.from_mxisd && r.status == 200, "{}", r.body);
        if r.body["displayname"] == "Alice Liddell" {
            filled = r.body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        filled["homeserver"], "/_matrix/client/v3/profile/%40alice%3Aexample.org",
        "{filled}"
    );
    let r = ask(&client, M::GET, &format!("{profile}/displayname")).await;
    assert!(
        r.from_mxisd && r.body["displayname"] == "Alice Liddell",
        "{}",
        r.body
    );
    let r = ask(
        &client,
        M::GET,
        &format!("{base}/_matrix/client/r0/profile/%40alice%3Aexample.org"),
    )
    .await;
    assert!(r.from_mxisd, "{}", r.body);

    // Everything else: the homeserver, with the client's Host.
    for path in [
        "/_matrix/client/v3/sync",
        "/_matrix/client/v3/user_directory/other",
        "/_matrix/client/v1/profile/%40alice%3Aexample.org",
        "/_matrix/client/versions",
        "/_matrix/federation/v1/version",
        "/_matrix/key/v2/server",
        "/_synapse/client/pick_idp",
    ] {
        let r = ask(&client, M::GET, &format!("{base}{path}")).await;
        assert!(!r.from_mxisd, "{path} reached mxisd: {}", r.body);
        assert_eq!(r.body["homeserver"], path, "{}", r.body);
        assert_eq!(r.body["host"], format!("127.0.0.1:{caddy_port}"));
    }
    drop(caddy);
    hs_task.abort();
}
