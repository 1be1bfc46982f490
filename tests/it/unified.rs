//! The unified view of MSC4004 against a stand-in of LINAGORA's Twake federated
//! identity service (its routes, auth and quirks as Twake has them): B pushes the
//! hashes of its bindings there, A asks it during a recursive lookup and follows its
//! `third_party_mappings` to B. No address reaches the view in clear.

use crate::common::{client_hash, free_port, TestServer};
use crate::recursion::{a_homeserver, federation_of_a, serve, tls_files, v1, yaml};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warp::Filter;

#[derive(Default)]
struct Fis {
    /// Its current and previous peppers (Twake keeps one previous).
    pepper: String,
    old_pepper: String,
    /// (hash, server, pepper) rows pushed by identity servers.
    rows: Vec<(String, String, String)>,
    /// Every request body it was sent.
    bodies: Vec<String>,
    pushes: usize,
    lookups: usize,
    biggest_lookup: usize,
}

const PEPPER: &str = "fispepper2";
const OLD_PEPPER: &str = "fispepper1";
const NEW_PEPPER: &str = "fispepper3";

fn error(status: u16, errcode: &str) -> Refusal {
    warp::reply::with_status(
        warp::reply::json(&json!({"errcode": errcode, "error": errcode})),
        warp::http::StatusCode::from_u16(status).unwrap(),
    )
}

/// Twake's auth: a trusted address needs no token (here: no header at all), else its
/// own token from `/account/register`.
fn authorised(auth: &Option<String>) -> bool {
    auth.as_deref().is_none_or(|a| a == "Bearer fis-token")
}

type Refusal = warp::reply::WithStatus<warp::reply::Json>;

/// A POST with a JSON body and maybe a token.
fn post_json() -> impl Filter<Extract = (Option<String>, Value), Error = warp::Rejection> + Clone {
    warp::post()
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::json())
}

/// Records the body; the service's state if the caller may come in.
fn recorded<'a>(
    state: &'a Mutex<Fis>,
    auth: &Option<String>,
    body: &Value,
) -> Result<std::sync::MutexGuard<'a, Fis>, Refusal> {
    let mut fis = state.lock().unwrap();
    fis.bodies.push(body.to_string());
    if authorised(auth) {
        Ok(fis)
    } else {
        Err(error(401, "M_UNAUTHORIZED"))
    }
}

async fn fake_fis(state: Arc<Mutex<Fis>>) -> (String, tokio::task::JoinHandle<()>) {
    {
        let mut fis = state.lock().unwrap();
        fis.pepper = PEPPER.into();
        fis.old_pepper = OLD_PEPPER.into();
    }
    let status = warp::path!("_matrix" / "identity" / "v2").map(|| warp::reply::json(&json!({})));
    let s = state.clone();
    let register = warp::path!("_matrix" / "identity" / "v2" / "account" / "register")
        .and(warp::post())
        .and(warp::body::json())
        .map(move |body: Value| {
            s.lock().unwrap().bodies.push(body.to_string());
            warp::reply::json(&json!({"token": "fis-token"}))
        });
    let s = state.clone();
    let details = warp::path!("_matrix" / "identity" / "v2" / "hash_details")
        .and(warp::header::optional::<String>("authorization"))
        .map(move |auth: Option<String>| {
            if !authorised(&auth) {
                return error(401, "M_UNAUTHORIZED");
            }
            let fis = s.lock().unwrap();
            warp::reply::with_status(
                warp::reply::json(
                    &json!({"algorithms": ["sha256"], "lookup_pepper": fis.pepper,
                    "alt_lookup_peppers": [fis.old_pepper]}),
                ),
                warp::http::StatusCode::OK,
            )
        });
    let s = state.clone();
    let push = warp::path!("_matrix" / "identity" / "v2" / "lookups")
        .and(post_json())
        .map(move |auth: Option<String>, body: Value| {
            let mut fis = match recorded(&s, &auth, &body) {
                Ok(fis) => fis,
                Err(refused) => return refused,
            };
            fis.pushes += 1;
            let Some(mappings) = body["mappings"].as_object().filter(|m| m.len() == 1) else {
                return error(400, "M_INVALID_PARAM");
            };
            let pepper = body["pepper"].as_str().unwrap_or_default().to_owned();
            // Twake drops the pusher's rows of peppers it no longer has.
            let (current, old) = (fis.pepper.clone(), fis.old_pepper.clone());
            fis.rows.retain(|(_, _, p)| *p == current || *p == old);
            let mut duplicate = false;
            for (server, hashes) in mappings {
                for h in hashes.as_array().into_iter().flatten() {
                    let row = (
                        h.as_str().unwrap().to_owned(),
                        server.clone(),
                        pepper.clone(),
                    );
                    if fis.rows.contains(&row) {
                        duplicate = true;
                    } else {
                        fis.rows.push(row);
                    }
                }
            }
            if duplicate {
                error(500, "M_UNKNOWN")
            } else {
                warp::reply::with_status(
                    warp::reply::json(&json!({})),
                    warp::http::StatusCode::CREATED,
                )
            }
        });
    let s = state.clone();
    let lookup = warp::path!("_matrix" / "identity" / "v2" / "lookup")
        .and(post_json())
        .map(move |auth: Option<String>, body: Value| {
            let mut fis = match recorded(&s, &auth, &body) {
                Ok(fis) => fis,
                Err(refused) => return refused,
            };
            let addresses: Vec<String> = body["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            fis.lookups += 1;
            fis.biggest_lookup = fis.biggest_lookup.max(addresses.len());
            if addresses.len() > 100 {
                return error(400, "M_INVALID_PARAM");
            }
            let mut mappings = serde_json::Map::new();
            let mut elsewhere: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let direct = client_hash("direct@fis.test", "email", &fis.pepper);
            for a in addresses {
                if a == direct {
                    mappings.insert(a, json!("@direct:fis.test"));
                } else if let Some((_, server, _)) = fis.rows.iter().find(|(h, _, _)| *h == a) {
                    elsewhere.entry(server.clone()).or_default().push(a);
                }
            }
            warp::reply::with_status(
                warp::reply::json(
                    &json!({"mappings": mappings, "third_party_mappings": elsewhere}),
                ),
                warp::http::StatusCode::OK,
            )
        });
    serve(status.or(register).or(details).or(push).or(lookup)).await
}

type Row = (String, String, String);

/// The rows B's two allowed 3PIDs make under `peppers`, sorted.
fn rows_of(b_name: &str, peppers: [&str; 2]) -> Vec<Row> {
    let mut rows: Vec<Row> = peppers
        .iter()
        .flat_map(|pepper| {
            [("bob@b.test", "email"), ("447700900123", "msisdn")].map(|(address, medium)| {
                (
                    client_hash(address, medium, pepper),
                    b_name.to_owned(),
                    (*pepper).to_owned(),
                )
            })
        })
        .collect();
    rows.sort();
    rows
}

/// The view's rows once they are `expected` (bounded: 100 × 100 ms), sorted.
async fn rows_when(fis: &Mutex<Fis>, expected: &[Row]) -> Vec<Row> {
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = fis.lock().unwrap().rows.clone();
        rows.sort();
        if rows == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unified_view_gets_our_hashes_and_finds_other_servers_users() {
    let fis_state = Arc::new(Mutex::new(Fis::default()));
    let (fis, _fis_task) = fake_fis(fis_state.clone()).await;
    let (hs, _hs_task) = a_homeserver().await;
    let federation_of_a = federation_of_a(&hs);

    // B: over TLS, pushing to the view from a trusted address (no token), with a
    // blacklisted domain that must not be pushed.
    let b_dir = tempfile::tempdir().unwrap();
    tls_files(b_dir.path(), "127.0.0.1");
    let b_port = free_port();
    let b_name = format!("127.0.0.1:{b_port}");
    let b_yaml = yaml(
        b_dir.path(),
        "b.test",
        &format!(
            "server:\n  tls:\n    certificate: cert.pem\n    key: key.pem\n{federation_of_a}\
             outbound:\n  allowedCidr: [127.0.0.1/32]\n\
             lookup:\n  recursive:\n    allow:\n      domains:\n        blacklist: ['*hidden.test']\n\
             federation:\n  unifiedView:\n    server: {fis}\n    publishAs: '{b_name}'\n    lookup: false\n    push:\n      every: 1s\n"
        ),
    );
    let b = TestServer::start_raw_at(b_dir, &b_yaml, b_port).await;
    b.bind("email", "bob@b.test", "@bob:b.test").await;
    b.bind("msisdn", "447700900123", "@bob:b.test").await;
    b.bind("email", "x@hidden.test", "@x:b.test").await;

    // B's next round pushes both allowed 3PIDs under both of the view's peppers.
    let expected = rows_of(&b_name, [PEPPER, OLD_PEPPER]);
    let rows = rows_when(&fis_state, &expected).await;
    assert_eq!(rows, expected);
    // Only new hashes are sent: later rounds send nothing.
    let pushes = fis_state.lock().unwrap().pushes;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(fis_state.lock().unwrap().pushes, pushes);
    let status = b.admin_get("/_mxisd/admin/v1/status").await;
    let view = &status.body["unified_view"];
    assert_eq!(view["threepids"], 2, "{}", status.body);
    assert_eq!(view["error"], Value::Null, "{}", status.body);

    // The view rotates its pepper (Twake does daily, silently): B's next round reads
    // it and pushes under the new one; the oldest one's rows are gone.
    {
        let mut fis = fis_state.lock().unwrap();
        fis.old_pepper = PEPPER.into();
        fis.pepper = NEW_PEPPER.into();
    }
    let expected = rows_of(&b_name, [NEW_PEPPER, PEPPER]);
    let rows = rows_when(&fis_state, &expected).await;
    assert_eq!(rows, expected);

    // A: asks the view (with an account opened by an OpenID token of its homeserver),
    // then B where the view says, with B's pepper. No DNS, no forward servers.
    let a_dir = tempfile::tempdir().unwrap();
    let a_yaml = format!(
        "matrix:\n  domain: a.test\n  homeserver:\n    url: {hs}\n\
         storage:\n  path: {state}\n\
         outbound:\n  allowedCidr: [127.0.0.1/32]\n  tls:\n    verify: false\n\
         lookup:\n  recursive:\n    enabled: true\n    allowedCidr: [127.0.0.0/8]\n    accessToken: svc-token\n    timeout: 2s\n    dns:\n      enabled: false\n\
         federation:\n  unifiedView:\n    server: {fis}\n    push:\n      enabled: false\n",
        state = a_dir.path().join("state").display(),
    );
    let a = TestServer::start_raw(a_dir, &a_yaml).await;
    assert_eq!(v1(&a, "bob@b.test", None).await["mxid"], "@bob:b.test");
    assert_eq!(
        v1(&a, "direct@fis.test", None).await["mxid"],
        "@direct:fis.test"
    );
    assert_eq!(v1(&a, "x@hidden.test", None).await, json!({}));

    // 150 addresses: the view gets them in chunks of 100 at most (Twake's limit).
    let mut threepids: Vec<Value> = (0..148)
        .map(|i| json!(["email", format!("nobody{i}@nowhere.test")]))
        .collect();
    threepids.insert(70, json!(["msisdn", "447700900123"]));
    threepids.push(json!(["email", "direct@fis.test"]));
    let r = a
        .post_json(
            "/_matrix/identity/api/v1/bulk_lookup",
            &json!({"threepids": threepids}),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["threepids"],
        json!([
            ["msisdn", "447700900123", "@bob:b.test"],
            ["email", "direct@fis.test", "@direct:fis.test"]
        ])
    );
    {
        let fis_seen = fis_state.lock().unwrap();
        assert!(
            fis_seen.biggest_lookup <= 100,
            "{}",
            fis_seen.biggest_lookup
        );
        assert!(fis_seen.lookups >= 5, "{}", fis_seen.lookups);
    }

    // B restarts and pushes everything again: Twake answers 500 to hashes it already
    // has, which counts as taken, not as a failure.
    let b_dir = b.stop().await;
    let pushes = fis_state.lock().unwrap().pushes;
    let b = TestServer::start_raw_at(b_dir, &b_yaml, b_port).await;
    let mut status = Value::Null;
    for _ in 0..100 {
        status = b.admin_get("/_mxisd/admin/v1/status").await.body;
        if status["unified_view"]["threepids"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["unified_view"]["threepids"], 2, "{status}");
    assert_eq!(status["unified_view"]["error"], Value::Null, "{status}");
    assert!(fis_state.lock().unwrap().pushes > pushes);
    assert_eq!(fis_state.lock().unwrap().rows.len(), expected.len());

    // Hashes only: no address ever reached the view.
    for body in &fis_state.lock().unwrap().bodies {
        for clear in [
            "b.test",
            "hidden.test",
            "nowhere.test",
            "fis.test",
            "447700900123",
        ] {
            assert!(!body.contains(clear), "{clear} in {body}");
        }
    }
}
