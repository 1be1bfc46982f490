//! Test harness: starts the real server in-process on 127.0.0.1:0 with its own temp
//! state directory, and stops it on demand. Many servers can run at once.

#![allow(dead_code)]

pub mod clientapi;
pub mod ldap;
pub mod pg;
pub mod smtp;
pub mod twilio;

use mxisd::config;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Once;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

static INIT: Once = Once::new();

/// Process-wide set-up: the rustls provider (as main does) and test logging.
pub fn init() {
    INIT.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// The minimal config every test server starts from; `extra` is appended (YAML).
pub fn base_yaml(dir: &Path, extra: &str) -> String {
    format!(
        "matrix:\n  domain: example.org\nstorage:\n  path: {}\n{extra}",
        dir.join("state").display()
    )
}

/// The bearer token of every test server's TCP admin listener.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct TestServer {
    /// `http://127.0.0.1:PORT` (or https).
    pub base: String,
    /// The TCP admin listener (bearer token [`ADMIN_TOKEN`]).
    pub admin: String,
    /// The metrics listener.
    pub metrics: String,
    /// The homeserver-facing listener (check_credentials).
    pub internal: String,
    pub dir: TempDir,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), mxisd::StartError>>>,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts a server whose config is the base plus `extra` YAML.
    pub async fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra).await
    }

    /// Starts a server on an existing state directory (for restart tests).
    pub async fn start_in(dir: TempDir, extra: &str) -> Self {
        let yaml = base_yaml(dir.path(), extra);
        Self::start_raw(dir, &yaml).await
    }

    /// Starts a server with exactly this config text (paths relative to `dir`).
    pub async fn start_raw(dir: TempDir, yaml: &str) -> Self {
        Self::start_raw_at(dir, yaml, 0).await
    }

    /// [`Self::start_raw`] on a given public port (0: any), to bring a stopped server
    /// back where others know it.
    pub async fn start_raw_at(dir: TempDir, yaml: &str, port: u16) -> Self {
        init();
        let mut config = config::load_str(yaml, "test", dir.path().to_owned(), &|_| None)
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let tls = config.server.tls.is_some();
        let public = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let internal = TcpListener::bind("127.0.0.1:0").await.unwrap();
        if config.server.admin.tcp.is_none() {
            config.server.admin.tcp = Some(config::AdminTcp {
                hostname: "127.0.0.1".into(),
                port: admin.local_addr().unwrap().port(),
                token_file: dir.path().join("admin.token"),
                token: config::reader::Secret::new(ADMIN_TOKEN.into()),
                allow_remote: false,
            });
        }
        let scheme = if tls { "https" } else { "http" };
        let host = if tls { "localhost" } else { "127.0.0.1" };
        let base = format!("{scheme}://{host}:{}", public.local_addr().unwrap().port());
        let admin_url = format!("http://127.0.0.1:{}", admin.local_addr().unwrap().port());
        let metrics_url = format!("http://127.0.0.1:{}", metrics.local_addr().unwrap().port());
        let internal_url = format!("http://127.0.0.1:{}", internal.local_addr().unwrap().port());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(mxisd::run(
            config,
            mxisd::Listeners {
                public,
                admin: Some(admin),
                metrics: Some(metrics),
                internal: Some(internal),
            },
            async move {
                let _ = rx.await;
            },
        ));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let server = Self {
            base,
            admin: admin_url,
            metrics: metrics_url,
            internal: internal_url,
            dir,
            client,
            stop: Some(tx),
            handle: Some(handle),
        };
        if !tls {
            server.wait_ready().await;
        }
        server
    }

    /// Polls `/status` until the server answers (bounded: 800 × 25 ms).
    pub async fn wait_ready(&self) {
        for _ in 0..800 {
            if let Ok(r) = self
                .client
                .get(format!("{}/status", self.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("server at {} did not become ready", self.base);
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    /// The Prometheus text of the metrics listener.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        self.send(self.admin_request(reqwest::Method::GET, path))
            .await
    }

    /// A request to the TCP admin listener, with its token.
    pub fn admin_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// The admin Unix socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.state_dir().join("admin.sock")
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("request failed");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            body,
            headers,
        }
    }

    /// Asks the server to stop without waiting for it.
    pub fn signal_stop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }

    /// Stops the server (graceful shutdown) and returns its state directory.
    pub async fn stop(mut self) -> TempDir {
        let _ = self.stop.take().map(|s| s.send(()));
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(20), handle)
            .await
            .expect("server did not stop within 20 s")
            .unwrap()
            .expect("server returned an error");
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Asserts a Matrix error response.
pub fn assert_error(r: &Resp, status: u16, errcode: &str) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.body["errcode"], errcode, "body: {}", r.body);
    assert!(r.body["error"].is_string(), "no error message: {}", r.body);
}

/// Runs a command of a test harness; its output if it succeeded, else a panic with it.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free loopback port (bound then released; fine for tests of the binary).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A homeserver stand-in on 127.0.0.1: serves `GET /_matrix/federation/v1/openid/userinfo`
/// from a table of tokens, counts the requests it gets, and can be slow or rude.
pub struct FakeHomeserver {
    pub url: String,
    pub port: u16,
    /// The server name it signs as (`/_matrix/key/v2/server`, X-Matrix).
    pub name: String,
    pub signer: std::sync::Arc<mxisd::crypto::sign::Signer>,
    /// Bodies of the onbind callbacks it accepted.
    pub onbinds: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    /// Onbind callbacks it answers with 500 before accepting (and counts them).
    pub fail_onbinds: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub failed_onbinds: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Answer onbinds with a redirect to this URL instead (a homeserver pointing us at an
    /// address we must not reach).
    pub onbind_redirect: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// How long it waits before answering an onbind (a homeserver that hangs).
    pub onbind_delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

/// What the fake answers for one OpenID token.
#[derive(Clone)]
pub enum Userinfo {
    Sub(String),
    Status(u16, String),
    Raw(String),
    Slow(u64),
    /// This status, and a body cut off mid-way (the connection drops).
    Truncated(u16),
}

impl FakeHomeserver {
    pub async fn start(table: Vec<(&str, Userinfo)>) -> Self {
        Self::start_named("example.org", table).await
    }

    /// A fake homeserver for `name` (its signing key answers as that server).
    pub async fn start_named(name: &str, table: Vec<(&str, Userinfo)>) -> Self {
        use warp::Filter;
        let seed: [u8; 32] = rand_seed();
        let signer = std::sync::Arc::new(mxisd::crypto::sign::Signer::new(
            ed25519_dalek::SigningKey::from_bytes(&seed),
            "ed25519:hs1",
        ));
        let key_signer = signer.clone();
        let key_name = name.to_owned();
        let onbinds = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let fail_onbinds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed_onbinds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let onbind_delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = onbind_delay_ms.clone();
        let onbind_redirect = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let redirect = onbind_redirect.clone();
        let (ob, fo, fd) = (
            onbinds.clone(),
            fail_onbinds.clone(),
            failed_onbinds.clone(),
        );
        let onbind = warp::path!("_matrix" / "federation" / "v1" / "3pid" / "onbind")
            .and(warp::post())
            .and(warp::body::json::<Value>())
            .and_then(move |body: Value| {
                let delay = delay.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                    Ok::<_, std::convert::Infallible>(body)
                }
            })
            .map(move |body: Value| {
                use std::sync::atomic::Ordering;
                if let Some(to) = redirect.lock().unwrap().clone() {
                    fd.fetch_add(1, Ordering::SeqCst);
                    return warp::http::Response::builder()
                        .status(307)
                        .header("location", to)
                        .body("{}".to_owned())
                        .unwrap();
                }
                let failing = fo
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    fd.fetch_add(1, Ordering::SeqCst);
                    return warp::http::Response::builder()
                        .status(500)
                        .body("{}".to_owned())
                        .unwrap();
                }
                ob.lock().unwrap().push(body);
                warp::http::Response::builder()
                    .status(200)
                    .body("{}".to_owned())
                    .unwrap()
            });
        let keys = warp::path!("_matrix" / "key" / "v2" / "server")
            .and(warp::get())
            .map(move || {
                let mut body = serde_json::json!({
                    "server_name": key_name,
                    "verify_keys": {"ed25519:hs1": {"key": key_signer.public_key_b64()}},
                    "old_verify_keys": {},
                    "valid_until_ts": now_ms() + 3_600_000,
                });
                key_signer.sign_json(&key_name, &mut body).unwrap();
                warp::reply::json(&body)
            });
        let table: std::collections::HashMap<String, Userinfo> =
            table.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let table = std::sync::Arc::new(table);
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let route = warp::path!("_matrix" / "federation" / "v1" / "openid" / "userinfo")
            .and(warp::get())
            .and(warp::query::<std::collections::HashMap<String, String>>())
            .then(move |q: std::collections::HashMap<String, String>| {
                let table = table.clone();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    use warp::http::Response;
                    use warp::Reply;
                    let token = q.get("access_token").cloned().unwrap_or_default();
                    let text = |status: u16, body: String, ct: &str| {
                        Response::builder()
                            .status(status)
                            .header("content-type", ct)
                            .body(body)
                            .unwrap()
                            .into_response()
                    };
                    match table.get(&token).cloned() {
                        // Deliberately not application/json: the server must parse anyway.
                        Some(Userinfo::Sub(sub)) => text(
                            200,
                            serde_json::json!({"sub": sub}).to_string(),
                            "text/plain",
                        ),
                        Some(Userinfo::Status(code, body)) => text(code, body, "application/json"),
                        Some(Userinfo::Raw(body)) => text(200, body, "application/json"),
                        Some(Userinfo::Slow(ms)) => {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            text(
                                200,
                                r#"{"sub":"@slow:example.org"}"#.into(),
                                "application/json",
                            )
                        }
                        Some(Userinfo::Truncated(status)) => {
                            use futures_util::StreamExt;
                            // The head and the first part go out; then the connection
                            // breaks (a pause lets hyper flush before it does).
                            let head = futures_util::stream::iter([Ok::<_, std::io::Error>(
                                r#"{"errcode":"M_UNKNOWN_TO"#,
                            )]);
                            let cut = futures_util::stream::once(async {
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                                Err(std::io::Error::other("cut off"))
                            });
                            let mut r = warp::reply::stream(head.chain(cut)).into_response();
                            *r.status_mut() = warp::http::StatusCode::from_u16(status).unwrap();
                            r
                        }
                        None => text(
                            401,
                            r#"{"errcode":"M_UNKNOWN_TOKEN","error":"nope"}"#.into(),
                            "application/json",
                        ),
                    }
                }
            });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            warp::serve(route.or(keys).or(onbind))
                .incoming(listener)
                .run()
                .await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            name: name.to_owned(),
            signer,
            onbinds,
            fail_onbinds,
            failed_onbinds,
            onbind_delay_ms,
            onbind_redirect,
            hits,
            task,
        }
    }

    /// The `Authorization` header this homeserver would send to `destination`.
    pub fn x_matrix(&self, destination: &str, method: &str, uri: &str, content: &Value) -> String {
        let mut signed = serde_json::json!({
            "method": method, "uri": uri, "origin": self.name,
            "destination_is": destination, "content": content,
        });
        self.signer.sign_json(&self.name, &mut signed).unwrap();
        let sig = signed["signatures"][&self.name]["ed25519:hs1"]
            .as_str()
            .unwrap()
            .to_owned();
        format!(
            "X-Matrix origin=\"{}\",key=\"ed25519:hs1\",sig=\"{sig}\",destination=\"{destination}\"",
            self.name
        )
    }

    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FakeHomeserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A homeserver for `example.org` whose OpenID tokens `alice` and `bob` belong to
/// `@alice:example.org` and `@bob:example.org`.
pub async fn alice_and_bob() -> FakeHomeserver {
    FakeHomeserver::start(vec![
        ("alice", Userinfo::Sub("@alice:example.org".into())),
        ("bob", Userinfo::Sub("@bob:example.org".into())),
    ])
    .await
}

/// Config lines that send federation for `name` to the fake homeserver.
pub fn federation_override(name: &str, hs: &FakeHomeserver) -> String {
    format!(
        "dns:\n  overwrite:\n    homeserver:\n      federation:\n        - name: {name}\n          value: {}\n",
        hs.url
    )
}

impl TestServer {
    pub async fn post_json(&self, path: &str, body: &Value, token: Option<&str>) -> Resp {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Resp {
        self.send(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Resp {
        self.send(self.admin_request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// Registers through the fake homeserver with `openid_token`; returns our token.
    pub async fn register(&self, server_name: &str, openid_token: &str) -> String {
        let r = self
            .post_json(
                "/_matrix/identity/v2/account/register",
                &serde_json::json!({"access_token": openid_token, "token_type": "Bearer",
                    "matrix_server_name": server_name, "expires_in": 3600}),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "register failed: {}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    }

    /// Validates `address` by e-mail (the token read from the mail `sink` receives) for
    /// the holder of `token`, then binds it to `mxid`. Returns the session id and the
    /// bind answer.
    pub async fn validate_and_bind(
        &self,
        sink: &smtp::SmtpSink,
        token: &str,
        address: &str,
        mxid: &str,
    ) -> (String, Resp) {
        let v2 = "/_matrix/identity/v2";
        let sid = self.validated_session(sink, token, address).await;
        let r = self
            .post_json(
                &format!("{v2}/3pid/bind"),
                &serde_json::json!({"sid": sid, "client_secret": "sec", "mxid": mxid}),
                Some(token),
            )
            .await;
        (sid, r)
    }

    /// Validates `address` (its mail read from `sink`) for the holder of `token`; the
    /// session's ID (its client secret is `sec`).
    pub async fn validated_session(
        &self,
        sink: &smtp::SmtpSink,
        token: &str,
        address: &str,
    ) -> String {
        let v2 = "/_matrix/identity/v2";
        let r = self
            .post_json(
                &format!("{v2}/validate/email/requestToken"),
                &serde_json::json!({"client_secret": "sec", "email": address, "send_attempt": 1}),
                Some(token),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let sid = r.body["sid"].as_str().unwrap().to_owned();
        let code = sink.next().await.link_param("token");
        let r = self
            .post_json(
                &format!("{v2}/validate/email/submitToken"),
                &serde_json::json!({"sid": sid, "client_secret": "sec", "token": code}),
                Some(token),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        sid
    }

    /// Adds an operator binding through the admin API.
    pub async fn bind(&self, medium: &str, address: &str, mxid: &str) {
        let r = self
            .admin_post(
                "/_mxisd/admin/v1/bindings",
                &serde_json::json!({"medium": medium, "address": address, "mxid": mxid}),
            )
            .await;
        assert_eq!(r.status, 200, "bind failed: {}", r.body);
    }
}

/// The spec's lookup hash, computed the way a client does.
pub fn client_hash(address: &str, medium: &str, pepper: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{address} {medium} {pepper}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    seed
}

/// Sends raw HTTP/1.1 `request` text (it should say `Connection: close`) to the Unix
/// socket at `path`: the status and the body as JSON (or a string).
pub fn raw_unix(path: &Path, request: &str) -> (u16, Value) {
    let stream = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()));
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    raw_exchange(stream, request)
}

/// [`raw_unix`] over TCP to `addr` (`host:port`).
pub fn raw_tcp(addr: &str, request: &str) -> (u16, Value) {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    raw_exchange(stream, request)
}

fn raw_exchange(mut stream: impl std::io::Read + std::io::Write, request: &str) -> (u16, Value) {
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, value)
}
