//! Accounts: `POST /v2/account/register`, `GET /v2/account`, `POST /v2/account/logout`.

use super::respond;
use crate::error::Error;
use crate::service::account::{self, OpenIdToken};
use crate::service::auth::{authenticate, Gate};
use crate::state::AppState;
use serde_json::json;
use std::convert::Infallible;
use warp::reply::Response;

/// `POST /_matrix/identity/v2/account/register`
pub async fn register(
    body: Result<OpenIdToken, Error>,
    state: AppState,
) -> Result<Response, Infallible> {
    let result = match body {
        Ok(openid) => account::register(&state, openid).await,
        Err(e) => Err(e),
    };
    respond(result)
}

/// `GET /_matrix/identity/v2/account`
pub async fn whoami(token: Option<String>, state: AppState) -> Result<Response, Infallible> {
    respond(authenticate(&state, token, Gate::Terms).map(|c| json!({ "user_id": c.user_id() })))
}

/// `POST /_matrix/identity/v2/account/logout` (no terms gate, body ignored)
pub async fn logout(token: Option<String>, state: AppState) -> Result<Response, Infallible> {
    respond(account::logout(&state, token).await)
}
