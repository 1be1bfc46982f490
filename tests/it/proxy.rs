//! The README's reverse-proxy examples, run for real: the ```caddy block and the nginx
//! block of *Behind a reverse proxy* (read from README.md, so the tests keep it honest)
//! with a real Caddy or nginx in front of a test server and a stand-in homeserver on
//! loopback. Identity, directory-search, profile, login, registration and room-invite
//! paths must reach mxisd; every other Matrix path the homeserver.

use crate::common::{free_port, TestServer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use warp::Filter;

fn binary(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} is not installed: this test runs the README's {name} example. Install it \
         with `apt-get install {name}` (tests/run.sh does this)"
    );
}

/// The one README block that opens with `fence` (its language and first line).
fn readme_block(fence: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert_eq!(readme.matches(fence).count(), 1, "one {fence:?} in README");
    let start = readme.find(fence).unwrap() + fence.find('\n').unwrap() + 1;
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_owned()
}

/// The nginx example inside a whole configuration: its locations, then everything else
/// to the homeserver, in a server on `port`, with every file nginx writes in `dir`.
fn nginx_conf(block: &str, dir: &Path, port: u16, mxisd: u16, homeserver: u16) -> String {
    assert!(
        block.contains("127.0.0.1:8090"),
        "the nginx example has no 127.0.0.1:8090"
    );
    let block = block.replace("127.0.0.1:8090", &format!("127.0.0.1:{mxisd}"));
    let d = dir.display();
    format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n    access_log off;\n    \
         client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    \
         uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n    server {{\n        listen 127.0.0.1:{port};\n\
         {block}\n        location / {{\n            proxy_pass http://127.0.0.1:{homeserver};\n            \
         proxy_set_header Host $http_host;\n        }}\n    }}\n}}\n"
    )
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

/// The proxy, stopped on drop.
struct Proxy(Child);

impl Drop for Proxy {
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
    ask_with(client, method, url, "{\"search_term\": \"alice\"}").await
}

async fn ask_with(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &'static str,
) -> Answer {
    let mut request = client.request(method.clone(), url);
    if method == reqwest::Method::POST {
        request = request
            .header("content-type", "application/json")
            .body(body);
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

#[derive(Clone, Copy, Debug)]
enum Kind {
    Caddy,
    Nginx,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_caddy_example_routes_each_path_to_the_right_server() {
    the_readme_example_routes_each_path_to_the_right_server(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_nginx_example_routes_each_path_to_the_right_server() {
    the_readme_example_routes_each_path_to_the_right_server(Kind::Nginx).await;
}

async fn the_readme_example_routes_each_path_to_the_right_server(kind: Kind) {
    let bin = binary(match kind {
        Kind::Caddy => "caddy",
        Kind::Nginx => "nginx",
    });
    let (hs_port, hs_task) = homeserver().await;
    let s = TestServer::start_with(&format!(
        "memory:\n  enabled: true\n  identities:\n    - username: alice\n      displayName: Alice Liddell\n\
         dns:\n  overwrite:\n    homeserver:\n      client:\n        - name: matrix.example.org\n          value: http://127.0.0.1:{hs_port}\n"
    ))
    .await;
    let mxisd_port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();
    let proxy_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
    let mut command = match kind {
        Kind::Caddy => {
            let config = dir.path().join("Caddyfile");
            let block = readme_block("```caddy\n");
            std::fs::write(&config, caddyfile(&block, proxy_port, mxisd_port, hs_port)).unwrap();
            let mut c = Command::new(bin);
            c.args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&config)
                .env("HOME", dir.path())
                .env("XDG_DATA_HOME", dir.path())
                .env("XDG_CONFIG_HOME", dir.path());
            c
        }
        Kind::Nginx => {
            let config = dir.path().join("nginx.conf");
            let block = readme_block("```nginx\nlocation /_matrix/identity/");
            std::fs::write(
                &config,
                nginx_conf(&block, dir.path(), proxy_port, mxisd_port, hs_port),
            )
            .unwrap();
            let mut c = Command::new(bin);
            c.arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&config)
                .args(["-g", "daemon off;"]);
            c
        }
    };
    let mut proxy = Proxy(
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{proxy_port}");
    let client = s.client.clone();
    let mut up = false;
    for _ in 0..400 {
        if let Some(status) = proxy.0.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default();
            let errors = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            panic!("{kind:?} exited ({status}):\n{log}\n{errors}");
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
    assert!(up, "{kind:?} did not start listening");
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
    // Logins, registrations and room invites: looked at by mxisd (nothing here to
    // rewrite or refuse), then passed to the homeserver.
    for path in [
        "/_matrix/client/v3/login",
        "/_matrix/client/r0/login",
        "/_matrix/client/v3/register",
        "/_matrix/client/unstable/register",
        "/_matrix/client/v3/register/email/requestToken",
        "/_matrix/client/r0/register/msisdn/requestToken",
        "/_matrix/client/unstable/register/email/requestToken",
        "/_matrix/client/v3/rooms/!room:example.org/invite",
        "/_matrix/client/unstable/rooms/!room:example.org/invite",
    ] {
        let r = ask_with(
            &client,
            M::POST,
            &format!("{base}{path}"),
            "{\"user_id\": \"@a:example.org\"}",
        )
        .await;
        assert!(
            r.from_mxisd,
            "{path} went straight to the homeserver: {}",
            r.body
        );
        let passed = r.body["homeserver"]
            .as_str()
            .unwrap_or_default()
            .replace("%21", "!")
            .replace("%3A", ":");
        assert_eq!(passed, path, "{}", r.body);
    }

    // Everything else: the homeserver, with the client's Host.
    for path in [
        "/_matrix/client/v3/sync",
        "/_matrix/client/v3/user_directory/other",
        "/_matrix/client/v1/profile/%40alice%3Aexample.org",
        "/_matrix/client/versions",
        "/_matrix/client/v3/login/sso/redirect",
        "/_matrix/client/v3/register/available",
        "/_matrix/client/v3/rooms/!room:example.org/join",
        "/_matrix/federation/v1/version",
        "/_matrix/key/v2/server",
        "/_synapse/client/pick_idp",
    ] {
        let r = ask(&client, M::GET, &format!("{base}{path}")).await;
        assert!(!r.from_mxisd, "{path} reached mxisd: {}", r.body);
        assert_eq!(r.body["homeserver"], path, "{}", r.body);
        assert_eq!(r.body["host"], format!("127.0.0.1:{proxy_port}"));
    }
    drop(proxy);
    hs_task.abort();
}
