//! Lookups: `GET /v2/hash_details`, `POST /v2/lookup`, and the legacy v1
//! `GET /api/v1/lookup` and `POST /api/v1/bulk_lookup`.

use super::respond;
use crate::error::Error;
use crate::service::auth::{authenticate, Gate};
use crate::service::lookup;
use crate::state::AppState;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use warp::reply::Response;

/// `GET /_matrix/identity/v2/hash_details`
pub async fn hash_details(token: Option<String>, state: AppState) -> Result<Response, Infallible> {
    respond(authenticate(&state, token, Gate::Terms).map(|_| lookup::hash_details(&state)))
}

/// `POST /_matrix/identity/v2/lookup`
pub async fn lookup(
    token: Option<String>,
    body: Result<Map<String, Value>, Error>,
    state: AppState,
) -> Result<Response, Infallible> {
    respond(
        authenticate(&state, token, Gate::Terms)
            .and(body)
            .and_then(|body| lookup::lookup(&state, &body)),
    )
}

/// `GET /_matrix/identity/api/v1/lookup?medium=&address=`
pub async fn lookup_v1(
    query: HashMap<String, String>,
    state: AppState,
) -> Result<Response, Infallible> {
    respond(lookup::lookup_v1(
        &state,
        query.get("medium").map(String::as_str),
        query.get("address").map(String::as_str),
    ))
}

/// `POST /_matrix/identity/api/v1/bulk_lookup`
pub async fn bulk_lookup_v1(
    body: Result<Map<String, Value>, Error>,
    state: AppState,
) -> Result<Response, Infallible> {
    respond(body.and_then(|body| lookup::bulk_lookup_v1(&state, &body)))
}
