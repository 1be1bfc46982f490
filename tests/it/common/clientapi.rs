//! A homeserver's client-server API stand-in on 127.0.0.1, for the features the
//! reverse proxy routes to mxisd: `account/whoami` from a token table, a user directory
//! (`user_directory/search` matching a word of a user ID or display name), and profiles
//! (GET whole or `displayname`, PUT `displayname`; a whole profile with neither name
//! nor avatar is Synapse's 404 `M_NOT_FOUND`). Counts what it is asked and can be
//! taken down.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use warp::http::Response;
use warp::Filter;

/// A profile request as it arrived: method, path after `profile/`, authorization, body.
pub type ProfileCall = (String, String, Option<String>, String);

/// Any other request, exactly as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    /// Header names in lowercase.
    pub headers: HashMap<String, String>,
    pub body: bytes::Bytes,
}

#[derive(Default)]
pub struct Seen {
    /// Requests no other route took (login, register, invites...), answered
    /// `{"recorded": n}` with 200, or Synapse's 403 when the body holds `wrong-password`.
    pub recorded: Mutex<Vec<Recorded>>,
    pub whoami: AtomicUsize,
    pub searches: Mutex<Vec<(String, Value)>>,
    /// (method, path, authorization, body) of every profile request.
    pub profiles: Mutex<Vec<ProfileCall>>,
}

pub struct FakeClientApi {
    pub url: String,
    pub seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

fn reply(status: u16, body: Value) -> Response<String> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .unwrap()
}

impl FakeClientApi {
    /// `tokens`: access token → user ID. `users`: its user directory, as
    /// `{user_id, display_name?, avatar_url?}`. `profiles`: user ID → profile.
    pub async fn start(
        tokens: &[(&str, &str)],
        users: Vec<Value>,
        profiles: Vec<(&str, Value)>,
    ) -> Self {
        let tokens: Arc<HashMap<String, String>> = Arc::new(
            tokens
                .iter()
                .map(|(t, u)| ((*t).to_owned(), (*u).to_owned()))
                .collect(),
        );
        let profiles: Arc<Mutex<HashMap<String, Value>>> = Arc::new(Mutex::new(
            profiles
                .into_iter()
                .map(|(u, p)| (u.to_owned(), p))
                .collect(),
        ));
        let users = Arc::new(users);
        let seen = Arc::new(Seen::default());
        let auth = {
            let tokens = tokens.clone();
            move |header: Option<String>| -> Option<String> {
                let token = header?.strip_prefix("Bearer ")?.to_owned();
                tokens.get(&token).cloned()
            }
        };
        let unknown = || {
            reply(
                401,
                json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown token"}),
            )
        };

        let (s, a) = (seen.clone(), auth.clone());
        let whoami = warp::path!("_matrix" / "client" / String / "account" / "whoami")
            .and(warp::get())
            .and(warp::header::optional::<String>("authorization"))
            .map(move |_v: String, header: Option<String>| {
                s.whoami.fetch_add(1, Ordering::SeqCst);
                let token = header.as_deref().and_then(|h| h.strip_prefix("Bearer "));
                // Two kinds of token every fake knows: a guest's, and an expired
                // one the client may refresh.
                match token {
                    Some("guest-token") => {
                        return reply(200, json!({"user_id": "@123:example.org", "is_guest": true}))
                    }
                    Some("soft-expired") => {
                        return reply(
                            401,
                            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Token expired", "soft_logout": true}),
                        )
                    }
                    _ => {}
                }
                match a(header) {
                    Some(user) => reply(200, json!({"user_id": user, "is_guest": false})),
                    None => unknown(),
                }
            });
        let (s, a) = (seen.clone(), auth.clone());
        let search = warp::path!("_matrix" / "client" / String / "user_directory" / "search")
            .and(warp::post())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::json::<Value>())
            .map(
                move |version: String, header: Option<String>, body: Value| {
                    s.searches.lock().unwrap().push((version, body.clone()));
                    if a(header).is_none() {
                        return unknown();
                    }
                    let term = body["search_term"]
                        .as_str()
                        .unwrap_or_default()
                        .to_lowercase();
                    let limit = body["limit"].as_u64().unwrap_or(10) as usize;
                    let matching: Vec<&Value> = users
                        .iter()
                        .filter(|u| {
                            let text = format!(
                                "{} {}",
                                u["user_id"].as_str().unwrap_or_default(),
                                u["display_name"].as_str().unwrap_or_default()
                            )
                            .to_lowercase();
                            !term.is_empty() && text.contains(&term)
                        })
                        .collect();
                    let limited = matching.len() > limit;
                    let results: Vec<&Value> = matching.into_iter().take(limit).collect();
                    reply(200, json!({"limited": limited, "results": results}))
                },
            );
        let s = seen.clone();
        let profile = warp::path!("_matrix" / "client" / String / "profile" / ..)
            .and(warp::path::tail())
            .and(warp::method())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::bytes())
            .map(
                move |_v: String,
                      tail: warp::path::Tail,
                      method: warp::http::Method,
                      header: Option<String>,
                      body: bytes::Bytes| {
                    let raw = tail.as_str().to_owned();
                    let body = String::from_utf8_lossy(&body).into_owned();
                    s.profiles
                        .lock()
                        .unwrap()
                        .push((method.to_string(), raw.clone(), header, body.clone()));
                    let parts: Vec<String> = raw
                        .split('/')
                        .map(|p| {
                            percent_encoding::percent_decode_str(p)
                                .decode_utf8_lossy()
                                .into_owned()
                        })
                        .collect();
                    let mut profiles = profiles.lock().unwrap();
                    match (method.as_str(), parts.as_slice()) {
                        // As Synapse: a user with neither display name nor avatar
                        // has no profile to show.
                        ("GET", [user]) => match profiles.get(user) {
                            Some(p) if p.get("displayname").is_some() || p.get("avatar_url").is_some() => reply(200, p.clone()),
                            _ => reply(404, json!({"errcode": "M_NOT_FOUND", "error": "Profile was not found"})),
                        },
                        ("GET", [user, field]) => match profiles.get(user) {
                            Some(p) => reply(200, json!({ field.as_str(): p.get(field).cloned().unwrap_or(Value::Null) })),
                            None => reply(404, json!({"errcode": "M_NOT_FOUND", "error": "Profile was not found"})),
                        },
                        ("PUT", [user, field]) => {
                            let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                            let entry = profiles.entry(user.clone()).or_insert_with(|| json!({}));
                            entry[field.as_str()] = value[field.as_str()].clone();
                            reply(200, json!({}))
                        }
                        _ => reply(400, json!({"errcode": "M_UNRECOGNIZED", "error": "?"})),
                    }
                },
            );
        let s = seen.clone();
        let recorder = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |method: warp::http::Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: warp::http::HeaderMap,
                      body: bytes::Bytes| {
                    let wrong = String::from_utf8_lossy(&body).contains("wrong-password");
                    let mut recorded = s.recorded.lock().unwrap();
                    recorded.push(Recorded {
                        method: method.to_string(),
                        path_and_query: if query.is_empty() {
                            path.as_str().to_owned()
                        } else {
                            format!("{}?{query}", path.as_str())
                        },
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                            .collect(),
                        body,
                    });
                    if wrong {
                        return reply(403, json!({"errcode": "M_FORBIDDEN", "error": "Invalid username or password"}));
                    }
                    Response::builder()
                        .status(200)
                        .header("content-type", "application/json; charset=utf-8")
                        .body(json!({"recorded": recorded.len()}).to_string())
                        .unwrap()
                },
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Graceful: a stop closes the idle keep-alive connections too, so the
            // server under test really finds nobody there.
            warp::serve(whoami.or(search).or(profile).or(recorder))
                .incoming(listener)
                .graceful(async move {
                    let _ = stopped.await;
                })
                .run()
                .await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            seen,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Takes it down: connections to its port are refused from now on.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .is_err()
            {
                panic!("the fake homeserver did not stop");
            }
        }
    }

    pub fn whoami_calls(&self) -> usize {
        self.seen.whoami.load(Ordering::SeqCst)
    }

    /// What the recorder took, and forgets it.
    pub fn take_recorded(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.seen.recorded.lock().unwrap())
    }

    pub fn searches(&self) -> usize {
        self.seen.searches.lock().unwrap().len()
    }
}

impl Drop for FakeClientApi {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
