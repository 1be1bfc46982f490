//! Recursive lookups across three mxisd instances on loopback: A (a.test) asks B
//! (b.test, over TLS, found through an SRV record served by a DNS server of this test)
//! and C (a forward server), each with its own bindings; plus a rude remote that forges
//! signatures and answers what it was not asked. Untrusted requesters, session control,
//! the outbound guard, a remote going down (breaker) and coming back.

use crate::common::TestServer;
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, CNAME, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warp::Filter;

type Zone = Arc<Mutex<HashMap<(String, RecordType), Vec<RData>>>>;

/// A DNS server on a loopback UDP (and TCP, for long answers) port, answering from a
/// table; unknown names are NXDOMAIN.
struct FakeDns {
    addr: SocketAddr,
    zone: Zone,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn answer(zone: &Zone, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let q = request.queries.first()?.clone();
    let name = q.name().to_utf8().to_ascii_lowercase();
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_query(q.clone());
    let zone = zone.lock().unwrap();
    let records = zone
        .get(&(name.clone(), q.query_type()))
        .or_else(|| zone.get(&(name.clone(), RecordType::CNAME)));
    match records {
        Some(records) => {
            for r in records {
                response.add_answer(Record::from_rdata(q.name().clone(), 60, r.clone()));
            }
        }
        None if zone.keys().any(|(n, _)| *n == name) => {}
        None => response.metadata.response_code = ResponseCode::NXDomain,
    }
    let bytes = response.to_vec().ok()?;
    if udp && bytes.len() > 512 {
        // Too long for plain UDP: say so, the resolver asks again over TCP.
        let mut cut = Message::response(request.metadata.id, request.metadata.op_code);
        cut.metadata.truncation = true;
        cut.add_query(q);
        return cut.to_vec().ok();
    }
    Some(bytes)
}

impl FakeDns {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        let zone: Zone = Arc::default();
        let z = zone.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(reply) = answer(&z, &buf[..n], true) {
                    let _ = udp.send_to(&reply, from).await;
                }
            }
        });
        let z = zone.clone();
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else {
                    return;
                };
                let z = z.clone();
                tokio::spawn(async move {
                    let mut len = [0u8; 2];
                    while stream.read_exact(&mut len).await.is_ok() {
                        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                        if stream.read_exact(&mut query).await.is_err() {
                            return;
                        }
                        let Some(reply) = answer(&z, &query, false) else {
                            return;
                        };
                        let mut out = (reply.len() as u16).to_be_bytes().to_vec();
                        out.extend(reply);
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            zone,
            tasks: vec![udp_task, tcp_task],
        }
    }

    fn srv(&self, domain: &str, targets: &[(&str, u16)]) {
        let records = targets
            .iter()
            .map(|(t, port)| RData::SRV(SRV::new(10, 10, *port, Name::from_ascii(t).unwrap())))
            .collect();
        self.zone.lock().unwrap().insert(
            (format!("_matrix-identity._tcp.{domain}."), RecordType::SRV),
            records,
        );
    }

    /// `name` is an alias of `target` (loops welcome).
    fn cname(&self, name: &str, target: &str) {
        self.zone.lock().unwrap().insert(
            (format!("{name}."), RecordType::CNAME),
            vec![RData::CNAME(CNAME(
                Name::from_ascii(format!("{target}.")).unwrap(),
            ))],
        );
    }

    fn a(&self, name: &str, ip: &str) {
        self.zone.lock().unwrap().insert(
            (format!("{name}."), RecordType::A),
            vec![RData::A(A(ip.parse().unwrap()))],
        );
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A's homeserver: its service account's token `svc-token` belongs to
/// `@lookup:a.test`, which gets OpenID tokens that remote servers can check here.
pub(crate) async fn a_homeserver() -> (String, tokio::task::JoinHandle<()>) {
    let whoami = warp::path!("_matrix" / "client" / "v3" / "account" / "whoami")
        .and(warp::header::<String>("authorization"))
        .map(|auth: String| {
            if auth == "Bearer svc-token" {
                warp::reply::with_status(
                    warp::reply::json(&json!({"user_id": "@lookup:a.test"})),
                    warp::http::StatusCode::OK,
                )
            } else {
                warp::reply::with_status(
                    warp::reply::json(&json!({"errcode": "M_UNKNOWN_TOKEN", "error": "no"})),
                    warp::http::StatusCode::UNAUTHORIZED,
                )
            }
        });
    let openid =
        warp::path!("_matrix" / "client" / "v3" / "user" / String / "openid" / "request_token")
            .and(warp::post())
            .map(|user: String| {
                assert_eq!(
                    user.replace("%40", "@").replace("%3A", ":"),
                    "@lookup:a.test"
                );
                warp::reply::json(&json!({"access_token": "oidc-1", "token_type": "Bearer",
                "matrix_server_name": "a.test", "expires_in": 3600}))
            });
    let userinfo = warp::path!("_matrix" / "federation" / "v1" / "openid" / "userinfo")
        .and(warp::query::<HashMap<String, String>>())
        .map(|q: HashMap<String, String>| {
            if q.get("access_token").map(String::as_str) == Some("oidc-1") {
                warp::reply::with_status(
                    warp::reply::json(&json!({"sub": "@lookup:a.test"})),
                    warp::http::StatusCode::OK,
                )
            } else {
                warp::reply::with_status(
                    warp::reply::json(&json!({"errcode": "M_UNKNOWN_TOKEN", "error": "no"})),
                    warp::http::StatusCode::UNAUTHORIZED,
                )
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        warp::serve(whoami.or(openid).or(userinfo))
            .incoming(listener)
            .run()
            .await;
    });
    (format!("http://127.0.0.1:{port}"), task)
}

/// A remote that only speaks v1 and lies: its single answers carry a signature that
/// is not its key's, and its bulk answers add a mapping nobody asked about.
async fn rude_remote() -> (String, tokio::task::JoinHandle<()>) {
    let seed = [7u8; 32];
    let signer =
        mxisd::crypto::sign::Signer::new(ed25519_dalek::SigningKey::from_bytes(&seed), "ed25519:0");
    let public = signer.public_key_b64();
    let forger = mxisd::crypto::sign::Signer::new(
        ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]),
        "ed25519:0",
    );
    let forger = Arc::new(forger);
    let status =
        warp::path!("_matrix" / "identity" / "api" / "v1").map(|| warp::reply::json(&json!({})));
    let pubkey = warp::path!("_matrix" / "identity" / "api" / "v1" / "pubkey" / String)
        .map(move |_id: String| warp::reply::json(&json!({"public_key": public})));
    let lookup = warp::path!("_matrix" / "identity" / "api" / "v1" / "lookup")
        .and(warp::query::<HashMap<String, String>>())
        .map(move |q: HashMap<String, String>| {
            let mut body = json!({"address": q["address"], "medium": q["medium"],
                "mxid": "@mallory:rude.test", "not_before": 0, "not_after": 4_000_000_000_000u64, "ts": 1});
            forger.sign_json("rude.test", &mut body).unwrap();
            warp::reply::json(&body)
        });
    let bulk = warp::path!("_matrix" / "identity" / "api" / "v1" / "bulk_lookup")
        .and(warp::post())
        .map(|| {
            warp::reply::json(&json!({"threepids": [
                ["email", "someone-else@unasked.test", "@mallory:rude.test"],
                ["email", "not a pair"]
            ]}))
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        warp::serve(status.or(pubkey).or(lookup).or(bulk))
            .incoming(listener)
            .run()
            .await;
    });
    (format!("http://127.0.0.1:{port}"), task)
}

/// Config that lets a server check OpenID tokens of A's homeserver (`a.test` at `hs`).
pub(crate) fn federation_of_a(hs: &str) -> String {
    format!("dns:\n  overwrite:\n    homeserver:\n      federation:\n        - name: a.test\n          value: {hs}\n")
}

/// A self-signed certificate for `name` as `cert.pem` and `key.pem` in `dir`.
pub(crate) fn tls_files(dir: &std::path::Path, name: &str) {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
}

pub(crate) fn yaml(dir: &std::path::Path, domain: &str, extra: &str) -> String {
    format!(
        "matrix:\n  domain: {domain}\nstorage:\n  path: {}\naccountConfig:\n  allowOnlyTrustDomains: false\n{extra}",
        dir.join("state").display()
    )
}

pub(crate) async fn v1(s: &TestServer, address: &str, forwarded: Option<&str>) -> Value {
    let mut req = s.client.get(format!(
        "{}/_matrix/identity/api/v1/lookup?medium=email&address={}",
        s.base,
        address.replace('@', "%40")
    ));
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    let r = s.send(req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_recurse_to_dns_and_forward_servers_under_session_control() {
    let dns = FakeDns::start().await;
    let (hs, _hs_task) = a_homeserver().await;
    let (rude, _rude_task) = rude_remote().await;
    let federation_of_a = federation_of_a(&hs);

    // B: over TLS, known through DNS.
    let b_dir = tempfile::tempdir().unwrap();
    tls_files(b_dir.path(), "is.b.test");
    let b_yaml = yaml(
        b_dir.path(),
        "b.test",
        &format!("server:\n  tls:\n    certificate: cert.pem\n    key: key.pem\n{federation_of_a}"),
    );
    let b = TestServer::start_raw(b_dir, &b_yaml).await;
    let b_port: u16 = b.base.rsplit(':').next().unwrap().parse().unwrap();
    b.bind("email", "bob@b.test", "@bob:b.test").await;
    b.bind("email", "carol@b.test", "@carol:b.test").await;

    // C: a forward server, plain HTTP.
    let c_dir = tempfile::tempdir().unwrap();
    let c_yaml = yaml(c_dir.path(), "c.test", &federation_of_a);
    let c = TestServer::start_raw(c_dir, &c_yaml).await;
    c.bind("email", "dan@elsewhere.test", "@dan:c.test").await;
    c.bind("msisdn", "447700900123", "@dan:c.test").await;
    // Addresses session control must keep at A: A's own domain and a blacklisted one.
    c.bind("email", "own@a.test", "@leak:c.test").await;
    c.bind("email", "x@secret.test", "@leak:c.test").await;

    dns.srv("b.test", &[("is.b.test.", b_port)]);
    dns.a("is.b.test", "127.0.0.1");
    // A domain whose server is on a loopback address A's guard does not allow.
    dns.srv("evil.test", &[("is.evil.test.", b_port)]);
    dns.a("is.evil.test", "127.0.0.2");
    // 100 records, none of which answers.
    let many: Vec<(String, u16)> = (0..100).map(|i| (format!("is{i}.many.test."), 1)).collect();
    let many_ref: Vec<(&str, u16)> = many.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    dns.srv("many.test", &many_ref);

    let a_dir = tempfile::tempdir().unwrap();
    let a_yaml = format!(
        "matrix:\n  domain: a.test\n  homeserver:\n    url: {hs}\n  identity:\n    servers:\n      c: ['{c_base}']\n      rude: ['{rude}']\n\
         storage:\n  path: {state}\n\
         {federation_of_a}\
         outbound:\n  allowedCidr: [127.0.0.1/32]\n  nameservers: ['{dns_addr}']\n  tls:\n    verify: false\n\
         rateLimit:\n  trustedProxies: [127.0.0.1/32]\n\
         lookup:\n  recursive:\n    enabled: true\n    allowedCidr: [127.0.0.0/8]\n    v1: true\n    accessToken: svc-token\n    timeout: 2s\n    breaker:\n      open: 3s\n\
         \x20   allow:\n      domains:\n        blacklist: ['*secret.test']\n\
         forward:\n  servers: [c, rude]\n",
        c_base = c.base,
        state = a_dir.path().join("state").display(),
        dns_addr = dns.addr,
    );
    let a = TestServer::start_raw(a_dir, &a_yaml).await;
    a.bind("email", "local@a.test", "@local:a.test").await;

    // v1 single: local first, then B through SRV (its v2, with an account opened by
    // an OpenID token of A's homeserver), signed by A.
    assert_eq!(v1(&a, "local@a.test", None).await["mxid"], "@local:a.test");
    let bob = v1(&a, "bob@b.test", None).await;
    assert_eq!(bob["mxid"], "@bob:b.test", "{bob}");
    assert!(
        bob["signatures"].as_object().is_some_and(|s| !s.is_empty()),
        "{bob}"
    );
    // Through C (forward server).
    assert_eq!(
        v1(&a, "dan@elsewhere.test", None).await["mxid"],
        "@dan:c.test"
    );
    // Session control: A's own domain and a blacklisted domain never leave.
    assert_eq!(v1(&a, "own@a.test", None).await, json!({}));
    assert_eq!(v1(&a, "x@secret.test", None).await, json!({}));
    // The rude remote's forged answer is ignored.
    assert_eq!(v1(&a, "nobody@nowhere.test", None).await, json!({}));
    // An untrusted requester (behind the trusted proxy) gets local answers only.
    assert_eq!(v1(&a, "carol@b.test", Some("192.0.2.7")).await, json!({}));
    assert_eq!(
        v1(&a, "local@a.test", Some("192.0.2.7")).await["mxid"],
        "@local:a.test"
    );

    // Bulk: local, B, C and unknown entries, merged in request order.
    let r = a
        .post_json(
            "/_matrix/identity/api/v1/bulk_lookup",
            &json!({"threepids": [["email", "carol@b.test"], ["email", "local@a.test"],
                ["email", "zed1@nowhere.test"], ["msisdn", "447700900123"], ["email", "bob@b.test"],
                ["email", "zed2@nowhere.test"]]}),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["threepids"],
        json!([
            ["email", "carol@b.test", "@carol:b.test"],
            ["email", "local@a.test", "@local:a.test"],
            ["msisdn", "447700900123", "@dan:c.test"],
            ["email", "bob@b.test", "@bob:b.test"]
        ])
    );

    // v2 `none` recurses too (it needs an account at A; a sha256 lookup cannot).
    let token = a.register("a.test", "oidc-1").await;
    let details = a
        .get_auth("/_matrix/identity/v2/hash_details", &token)
        .await;
    let pepper = details.body["lookup_pepper"].as_str().unwrap().to_owned();
    let r = a
        .post_json(
            "/_matrix/identity/v2/lookup",
            &json!({"algorithm": "none", "pepper": pepper,
                "addresses": ["dan@elsewhere.test email", "bob@b.test email", "zed@nowhere.test email"]}),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["mappings"],
        json!({"dan@elsewhere.test email": "@dan:c.test", "bob@b.test email": "@bob:b.test"})
    );

    // A domain whose SRV target the guard refuses, and one with 100 dead records:
    // nothing found, quickly, and lookups go on.
    let t0 = Instant::now();
    assert_eq!(v1(&a, "eve@evil.test", None).await, json!({}));
    assert_eq!(v1(&a, "m@many.test", None).await, json!({}));
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());

    // B goes down: answers come within the timeout, and after a few failures its
    // breaker opens (shown in the status) and B costs nothing more.
    let b_dir = b.stop().await;
    for i in 0..4 {
        let t0 = Instant::now();
        assert_eq!(v1(&a, &format!("new{i}@b.test"), None).await, json!({}));
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    }
    let status = a.admin_get("/_mxisd/admin/v1/status").await;
    let remotes = status.body["recursion"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let b_remote = remotes
        .iter()
        .find(|r| r["remote"] == format!("https://is.b.test:{b_port}"))
        .unwrap_or_else(|| panic!("{}", status.body));
    assert_eq!(b_remote["breaker"], "open", "{}", status.body);
    // Cached answers still come while B is down.
    assert_eq!(v1(&a, "bob@b.test", None).await["mxid"], "@bob:b.test");

    // B comes back where it was: once the breaker's open time (3 s here) has passed,
    // one trial goes through, succeeds, and the breaker closes.
    let b = TestServer::start_raw_at(b_dir, &b_yaml, b_port).await;
    b.bind("email", "back@b.test", "@back:b.test").await;
    let breaker_of_b = |status: &Value| {
        status["recursion"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|r| r["remote"] == format!("https://is.b.test:{b_port}"))
            })
            .map(|r| r["breaker"].clone())
    };
    let mut found = Value::Null;
    for _ in 0..40 {
        found = v1(&a, "back@b.test", None).await;
        if found != json!({}) {
            break;
        }
        // Bounded: 40 × 250 ms. A call skipped by the open breaker is not cached as
        // "not found", so the same address can be asked again.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = a.admin_get("/_mxisd/admin/v1/status").await;
    assert_eq!(found["mxid"], "@back:b.test", "{found} {}", status.body);
    let status = a.admin_get("/_mxisd/admin/v1/status").await;
    assert_eq!(
        breaker_of_b(&status.body),
        Some(json!("closed")),
        "{}",
        status.body
    );

    // Counted: recursive entries and per-remote outcomes.
    let metrics = a.metrics_text().await;
    for line in [
        "mxisd_lookup_entries_total{kind=\"recursive\",result=\"hit\"}",
        &format!("mxisd_recursive_remote_total{{remote=\"is.b.test:{b_port}\",outcome=\"found\"}}"),
        &format!(
            "mxisd_recursive_remote_total{{remote=\"is.b.test:{b_port}\",outcome=\"skipped\"}}"
        ),
        "outcome=\"refused\"",
        "outcome=\"bad_answer\"",
        "mxisd_recursive_remote_total{remote=\"-\",outcome=\"withheld\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
}

/// Serves `routes` on a loopback port; its base URL.
pub(crate) async fn serve<F>(routes: F) -> (String, tokio::task::JoinHandle<()>)
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        warp::serve(routes).incoming(listener).run().await;
    });
    (format!("http://127.0.0.1:{port}"), task)
}

/// A v1 server whose answers are 10 MB long.
async fn huge_remote() -> (String, tokio::task::JoinHandle<()>) {
    let status =
        warp::path!("_matrix" / "identity" / "api" / "v1").map(|| warp::reply::json(&json!({})));
    let big = || {
        let mut body = String::from("{\"threepids\": [");
        while body.len() < 10 << 20 {
            body.push_str("[\"email\", \"padding@huge.test\", \"@pad:huge.test\"],");
        }
        body.push_str("[]]}");
        warp::http::Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    };
    let lookup = warp::path!("_matrix" / "identity" / "api" / "v1" / "lookup").map(big);
    let bulk = warp::path!("_matrix" / "identity" / "api" / "v1" / "bulk_lookup").map(big);
    serve(status.or(lookup).or(bulk)).await
}

/// A server that sends its headers, then one body byte every 300 ms (slowloris).
async fn slow_remote() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                // Bounded: 200 bytes at most, then the connection ends.
                for _ in 0..200 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if stream.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://127.0.0.1:{port}"), task)
}

/// A v2 server that changes its pepper at every `hash_details` and refuses every
/// lookup's pepper; it counts both.
async fn pepper_remote(
    counts: Arc<Mutex<(usize, usize)>>,
) -> (String, tokio::task::JoinHandle<()>) {
    let status = warp::path!("_matrix" / "identity" / "v2").map(|| warp::reply::json(&json!({})));
    let register = warp::path!("_matrix" / "identity" / "v2" / "account" / "register")
        .and(warp::post())
        .map(|| warp::reply::json(&json!({"token": "pepper-token"})));
    let c = counts.clone();
    let details = warp::path!("_matrix" / "identity" / "v2" / "hash_details").map(move || {
        let mut c = c.lock().unwrap();
        c.0 += 1;
        warp::reply::json(
            &json!({"algorithms": ["sha256"], "lookup_pepper": format!("pepper{}", c.0)}),
        )
    });
    let lookup = warp::path!("_matrix" / "identity" / "v2" / "lookup")
        .and(warp::post())
        .map(move || {
            counts.lock().unwrap().1 += 1;
            warp::reply::with_status(
                warp::reply::json(
                    &json!({"errcode": "M_INVALID_PEPPER", "error": "new pepper", "algorithm": "sha256", "lookup_pepper": "again"}),
                ),
                warp::http::StatusCode::BAD_REQUEST,
            )
        });
    serve(status.or(register).or(details).or(lookup)).await
}

/// A server whose every answer is malformed JSON (the v2 probe succeeds).
async fn garbage_remote() -> (String, tokio::task::JoinHandle<()>) {
    let garbage = warp::any().map(|| {
        warp::http::Response::builder()
            .header("content-type", "application/json")
            .body("{\"threepids\": [[\"email\", ")
            .unwrap()
    });
    serve(garbage).await
}

/// A v1 server that rate-limits every lookup.
async fn limiting_remote() -> (String, tokio::task::JoinHandle<()>) {
    let status =
        warp::path!("_matrix" / "identity" / "api" / "v1").map(|| warp::reply::json(&json!({})));
    let limited = warp::any().map(|| {
        warp::reply::with_status(
            warp::reply::json(&json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 1000})),
            warp::http::StatusCode::TOO_MANY_REQUESTS,
        )
    });
    serve(status.or(limited)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_remotes_and_dns_loops_cost_a_timeout_at_most() {
    let dns = FakeDns::start().await;
    let (hs, _hs_task) = a_homeserver().await;
    let (huge, _t1) = huge_remote().await;
    let (slow, _t2) = slow_remote().await;
    let counts = Arc::new(Mutex::new((0, 0)));
    let (pepper, _t3) = pepper_remote(counts.clone()).await;
    let (garbage, _t4) = garbage_remote().await;
    let (limiting, _t5) = limiting_remote().await;
    // SRV names that alias each other, and an SRV target whose name aliases itself.
    dns.cname(
        "_matrix-identity._tcp.loop.test",
        "_matrix-identity._tcp.loop2.test",
    );
    dns.cname(
        "_matrix-identity._tcp.loop2.test",
        "_matrix-identity._tcp.loop.test",
    );
    dns.srv("selfloop.test", &[("is.selfloop.test.", 443)]);
    dns.cname("is.selfloop.test", "is.selfloop.test");

    let a_dir = tempfile::tempdir().unwrap();
    let a_yaml = format!(
        "matrix:\n  domain: a.test\n  homeserver:\n    url: {hs}\n  identity:\n    servers:\n      hostile: ['{huge}', '{slow}', '{pepper}', '{garbage}', '{limiting}']\n\
         storage:\n  path: {state}\n\
         outbound:\n  allowedCidr: [127.0.0.1/32]\n  nameservers: ['{dns_addr}']\n\
         lookup:\n  recursive:\n    enabled: true\n    allowedCidr: [127.0.0.0/8]\n    v1: true\n    accessToken: svc-token\n    timeout: 1s\n    breaker:\n      failures: 100\n\
         forward:\n  servers: [hostile]\n",
        state = a_dir.path().join("state").display(),
        dns_addr = dns.addr,
    );
    let a = TestServer::start_raw(a_dir, &a_yaml).await;
    a.bind("email", "local@a.test", "@local:a.test").await;

    // Each lookup asks all five (in order) and gets nothing from any: at most one
    // timeout each (only the slow one takes it), so well under 5 × 1 s plus the DNS.
    for address in ["x@loop.test", "y@selfloop.test", "z@nowhere.test"] {
        let t0 = Instant::now();
        assert_eq!(v1(&a, address, None).await, json!({}));
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "{address}: {:?}",
            t0.elapsed()
        );
    }
    let t0 = Instant::now();
    let r = a
        .post_json(
            "/_matrix/identity/api/v1/bulk_lookup",
            &json!({"threepids": [["email", "p@nowhere.test"], ["email", "local@a.test"], ["email", "q@nowhere.test"]]}),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["threepids"],
        json!([["email", "local@a.test", "@local:a.test"]])
    );
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());

    // A pepper that changes at every call is fetched again once per lookup, never in
    // a loop: 4 lookups, at most 2 hash_details and 2 lookups each.
    let (details, lookups) = *counts.lock().unwrap();
    assert!((1..=8).contains(&details), "{details} hash_details calls");
    assert!((1..=8).contains(&lookups), "{lookups} lookups");

    // Local answers are unaffected.
    let t0 = Instant::now();
    assert_eq!(v1(&a, "local@a.test", None).await["mxid"], "@local:a.test");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());

    let metrics = a.metrics_text().await;
    let port = |base: &str| base.rsplit(':').next().unwrap().to_owned();
    for (base, outcomes) in [
        (&huge, &["bad_answer", "error"][..]),
        (&slow, &["error"][..]),
        (&pepper, &["error", "bad_answer"][..]),
        (&garbage, &["bad_answer", "error"][..]),
        (&limiting, &["limited"][..]),
    ] {
        let label = format!("remote=\"127.0.0.1:{}\"", port(base));
        assert!(
            outcomes
                .iter()
                .any(|o| metrics.contains(&format!("{label},outcome=\"{o}\""))),
            "{label} {outcomes:?} not in:\n{metrics}"
        );
        assert!(
            !metrics.contains(&format!("{label},outcome=\"found\"")),
            "{metrics}"
        );
    }
}
