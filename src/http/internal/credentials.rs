//! `POST /_matrix-internal/identity/v1/check_credentials` (ma1sd's contract for
//! Synapse's password provider).

use crate::error::Error;
use crate::http::reply::respond;
use crate::service::credentials;
use crate::service::Services;
use serde::Deserialize;
use std::convert::Infallible;
use warp::reply::Response;

/// `{"user": {"id": "@u:domain", "password": "..."}}`
#[derive(Deserialize)]
pub struct CheckCredentials {
    user: Credentials,
}

#[derive(Deserialize)]
struct Credentials {
    id: String,
    password: String,
}

/// Checks the password; 200 with `success` either way, 429 when limited.
pub async fn check(
    body: Result<CheckCredentials, Error>,
    ip: Option<std::net::IpAddr>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = match body {
        Ok(b) => credentials::check(&state, ip, &b.user.id, &b.user.password).await,
        Err(e) => Err(e),
    };
    respond(result)
}
