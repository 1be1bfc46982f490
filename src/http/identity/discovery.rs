//! Discovery and health: `/versions`, the v2 and v1 pings, `/version`, `/status`.

use crate::http::reply::{json_response, respond};
use crate::service::health;
use crate::service::Services;
use serde_json::{json, Value};
use std::convert::Infallible;
use warp::http::StatusCode;
use warp::reply::Response;

/// `GET /_matrix/identity/versions`
pub async fn versions() -> Result<Response, Infallible> {
    respond(Ok(versions_body()))
}

/// `GET /_matrix/identity/v2` and `GET /_matrix/identity/api/v1`
pub async fn ping() -> Result<Response, Infallible> {
    respond(Ok(json!({})))
}

/// `GET /version`
pub async fn version() -> Result<Response, Infallible> {
    respond(Ok(version_body()))
}

fn versions_body() -> Value {
    json!({ "versions": health::SPEC_VERSIONS })
}

fn version_body() -> Value {
    json!({"server": {"name": "mxisd", "version": env!("CARGO_PKG_VERSION")}})
}

/// The answers above that never change while the server runs, by exact path (the v1
/// ping only when v1 is served): the listener answers these directly (`fast`), the
/// routes above take the other spellings (a trailing slash, a body).
pub fn constant_answers(v1: bool) -> Vec<(&'static str, Value)> {
    let mut answers = vec![
        ("/_matrix/identity/v2", json!({})),
        ("/_matrix/identity/versions", versions_body()),
        ("/version", version_body()),
    ];
    if v1 {
        answers.push(("/_matrix/identity/api/v1", json!({})));
    }
    answers
}

/// `GET /status`: 200 while the store answers, 503 otherwise. Kept to what a load
/// balancer needs; the admin listener has the detail.
pub async fn status(state: Services) -> Result<Response, Infallible> {
    let report = health::public_status(&state);
    let code = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json_response(code, &report))
}
