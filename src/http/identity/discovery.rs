//! Discovery and health: `/versions`, the v2 and v1 pings, `/version`, `/status`.

use crate::http::reply::{json_response, respond};
use crate::service::health;
use crate::service::Services;
use serde_json::json;
use std::convert::Infallible;
use warp::http::StatusCode;
use warp::reply::Response;

/// `GET /_matrix/identity/versions`
pub async fn versions() -> Result<Response, Infallible> {
    respond(Ok(json!({ "versions": health::SPEC_VERSIONS })))
}

/// `GET /_matrix/identity/v2` and `GET /_matrix/identity/api/v1`
pub async fn ping() -> Result<Response, Infallible> {
    respond::<serde_json::Value>(Ok(json!({})))
}

/// `GET /version`
pub async fn version() -> Result<Response, Infallible> {
    respond::<serde_json::Value>(Ok(json!({
        "server": {"name": "mxisd", "version": env!("CARGO_PKG_VERSION")}
    })))
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
