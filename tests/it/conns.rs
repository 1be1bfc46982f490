//! Connections no client can hold on to: quiet and stalled connections are closed,
//! the connection caps keep a flood of sockets from starving lookups and the admin
//! socket, and hyper's own answers to unparseable requests carry a Matrix error.

use crate::cli::{http_get, Running};
use crate::common::{raw_unix, TestServer};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt as _;

/// Sends `request` and reads until the server closes the connection or `within` passes:
/// what came back, and whether the connection was closed.
fn send_and_wait(addr: &str, request: &[u8], within: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let closed = stream.read_to_end(&mut out).is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn json_body(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: not a JSON body in {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_and_stalled_connections_are_closed() {
    let s = TestServer::start_with(
        "server:\n  connections:\n    idleTimeout: 1s\n    headerTimeout: 2s\n    bodyTimeout: 1s\n",
    )
    .await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    // Each case in a thread of its own, so they wait together.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("says nothing", Vec::new()),
        (
            "stops in its headers",
            b"GET /_matrix/identity/v2 HTTP/1.1\r\nHo".to_vec(),
        ),
        (
            "stops halfway through its body",
            b"POST /_matrix/identity/v2/account/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"addr".to_vec(),
        ),
        (
            "never ends its chunked body",
            b"POST /_matrix/identity/v2/account/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n".to_vec(),
        ),
        (
            "keeps an idle keep-alive connection",
            b"GET /_matrix/identity/v2 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    let threads: Vec<_> = cases
        .into_iter()
        .map(|(what, request)| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let (answer, closed) = send_and_wait(&addr, &request, Duration::from_secs(8));
                (what, answer, closed)
            })
        })
        .collect();
    for thread in threads {
        let (what, answer, closed) = thread.join().unwrap();
        assert!(
            closed,
            "a client that {what} was not disconnected: {answer:?}"
        );
        match what {
            "stops halfway through its body" | "never ends its chunked body" => {
                assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer:?}");
                let body = json_body(&answer);
                assert_eq!(body["errcode"], "M_UNKNOWN", "{what}: {body}");
                assert!(
                    body["error"].as_str().unwrap().contains("did not arrive"),
                    "{body}"
                );
            }
            "keeps an idle keep-alive connection" => {
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
            }
            _ => assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
                "{what}: {answer:?}"
            ),
        }
    }
    // The server is as it was.
    assert_eq!(s.get("/_matrix/identity/v2").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_from_the_http_layer_are_matrix_errors() {
    let s = TestServer::start().await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let long_uri = format!(
        "GET /_matrix/identity/v2/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let mut many_headers = String::from("GET /_matrix/identity/v2 HTTP/1.1\r\nHost: x\r\n");
    for i in 0..2000 {
        many_headers.push_str(&format!("X-H{i}: v\r\n"));
    }
    many_headers.push_str("\r\n");
    let cases: Vec<(u16, &str, Vec<u8>)> = vec![
        (414, "M_TOO_LARGE", long_uri.into_bytes()),
        (431, "M_TOO_LARGE", many_headers.into_bytes()),
        (
            400,
            "M_UNRECOGNIZED",
            b"GET /_matrix/identity/v2 HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n".to_vec(),
        ),
        (400, "M_UNRECOGNIZED", b"GARBAGE\r\n\r\n".to_vec()),
        (
            400,
            "M_UNRECOGNIZED",
            b"GET /_matrix identity HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    let answers = tokio::task::spawn_blocking(move || {
        cases
            .into_iter()
            .map(|(status, errcode, request)| {
                let (answer, _) = send_and_wait(&addr, &request, Duration::from_secs(10));
                (status, errcode, answer)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (status, errcode, answer) in answers {
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "expected {status}: {answer:?}"
        );
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .to_ascii_lowercase();
        assert!(head.contains("content-type: application/json"), "{head}");
        let body = json_body(&answer);
        assert_eq!(body["errcode"], errcode, "{body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(s.get("/_matrix/identity/v2").await.status, 200);
}

/// Opens `n` connections to `addr` from the loopback address `from` and keeps them.
async fn open_from(from: &str, addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        match tokio::time::timeout(Duration::from_secs(5), socket.connect(addr)).await {
            Ok(Ok(stream)) => out.push(stream),
            other => panic!("connecting from {from}: {other:?}"),
        }
    }
    out
}

/// How many of `streams` the server still holds open (an answer or a close counts as
/// closed: a refused connection gets a 503 and is closed).
async fn still_open(streams: &mut [tokio::net::TcpStream]) -> usize {
    let mut open = 0;
    for stream in streams.iter_mut() {
        let mut buf = [0u8; 512];
        if tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf))
            .await
            .is_err()
        {
            open += 1;
        }
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share() {
    let s = TestServer::start_with(
        "server:\n  connections:\n    perAddress: 8\n    perAddressExempt: []\n",
    )
    .await;
    let addr: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
    let mut flood = open_from("127.0.0.2", addr, 40).await;
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open = still_open(&mut flood).await;
    assert!(open <= 8, "{open} connections from one address stayed open");
    assert!(open >= 1, "the newest connections were kept");
    // Another address is not held back by it.
    let mut others = open_from("127.0.0.3", addr, 8).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(still_open(&mut others).await, 8);
    assert_eq!(s.get("/_matrix/identity/v2").await.status, 200);
}

#[test]
fn a_flood_of_idle_sockets_leaves_lookups_and_the_admin_socket_answering() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mxisd.yaml"),
        "matrix:\n  domain: example.org\nstorage:\n  path: state\n",
    )
    .unwrap();
    // 256 open files: the public listener takes at most 128 connections, the rest is
    // the store's, the index's and the admin socket's.
    let server = Running::start_under(
        &["prlimit", "--nofile=256:256", "--"],
        dir.path(),
        &["run", "-c", "mxisd.yaml"],
    );
    let log = server.log();
    assert!(
        log.contains("max=128"),
        "public connection limits not logged:\n{log}"
    );
    let port = server.port;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // More idle sockets than the server has file descriptors, from other addresses.
    let mut flood = runtime.block_on(async {
        let mut all = open_from("127.0.0.2", addr, 150).await;
        all.extend(open_from("127.0.0.3", addr, 150).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        all
    });
    let started = Instant::now();
    let (status, body) = http_get(
        port,
        "/_matrix/identity/api/v1/lookup?medium=email&address=nobody%40example.org",
    );
    let took = started.elapsed();
    eprintln!("lookup during the flood: {} ms", took.as_millis());
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(2), "the lookup took {took:?}");
    let (status, body) = raw_unix(
        &dir.path().join("state/admin.sock"),
        "GET /_mxisd/admin/v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    let open = runtime.block_on(still_open(&mut flood));
    assert!(open <= 128, "{open} flood connections open past the cap");
    drop(flood);
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    // One rate-limited line for the evictions, none for failed accepts.
    let lines = log
        .matches("refused or closed at the connection limit")
        .count();
    assert!((1..=3).contains(&lines), "{lines} limit lines:\n{log}");
    assert!(!log.contains("accepting a connection failed"), "{log}");
}
