//! The optional TLS listener (server.tls), for installs without a reverse proxy.

use crate::common::{base_yaml, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_api_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let yaml = base_yaml(
        dir.path(),
        "server:\n  tls:\n    certificate: cert.pem\n    key: key.pem\n",
    );
    let s = TestServer::start_raw(dir, &yaml).await;
    assert!(s.base.starts_with("https://localhost:"));
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([root])
        .build()
        .unwrap();
    let mut answer = None;
    for _ in 0..200 {
        match client
            .get(format!("{}/_matrix/identity/v2", s.base))
            .send()
            .await
        {
            Ok(r) => {
                answer = Some((
                    r.status().as_u16(),
                    r.json::<serde_json::Value>().await.unwrap(),
                ));
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
        }
    }
    assert_eq!(answer, Some((200, json!({}))));
    // Plain HTTP on the TLS port gets nowhere.
    let plain = s.base.replace("https://", "http://");
    let plain_answer = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{plain}/_matrix/identity/v2"))
        .send()
        .await;
    assert!(!plain_answer.is_ok_and(|r| r.status().is_success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_certificate_stops_start_up_with_a_clear_error() {
    crate::common::init();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let yaml = base_yaml(
        dir.path(),
        "server:\n  tls:\n    certificate: cert.pem\n    key: key.pem\n",
    );
    let config = mxisd::config::load_str(&yaml, "t", dir.path().to_owned(), &|_| None).unwrap();
    let listeners = mxisd::Listeners {
        public: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: None,
        metrics: None,
        internal: None,
    };
    let err = mxisd::run(config, listeners, std::future::pending())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("server.tls.certificate"), "{msg}");
}
