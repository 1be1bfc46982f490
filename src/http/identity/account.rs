//! Accounts: `POST /v2/account/register`, `GET /v2/account`, `POST /v2/account/logout`.

use crate::error::Error;
use crate::http::reply::respond;
use crate::service::account::{self, OpenIdToken};
use crate::service::auth::{authenticate, Gate};
use crate::service::Services;
use serde_json::json;
use std::convert::Infallible;
use warp::reply::Response;

/// `POST /_matrix/identity/v2/account/register`
pub async fn register(
    body: Result<OpenIdToken, Error>,
    ip: Option<std::net::IpAddr>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = match body {
        Ok(openid) => account::register(&state, openid, ip).await,
        Err(e) => Err(e),
    };
    respond(result)
}

/// `GET /_matrix/identity/v2/account`
pub async fn whoami(token: Option<String>, state: Services) -> Result<Response, Infallible> {
    respond(authenticate(&state, token, Gate::Terms).map(|c| json!({ "user_id": c.user_id() })))
}

/// `POST /_matrix/identity/v2/account/logout` (no terms gate, body ignored)
pub async fn logout(token: Option<String>, state: Services) -> Result<Response, Infallible> {
    respond(account::logout(&state, token).await.map(|()| json!({})))
}
